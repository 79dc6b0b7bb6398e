"""The fine-tune's training views (refrestore.training.distill_identity): a damaged face is seen as
``fix`` embeds a query (restored blind when its detail is low), a sharp one as it is."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def face(shared_dir: Path) -> np.ndarray:
    folder = shared_dir / "data" / "faces"
    if not folder.is_dir():
        pytest.skip(f"shared faces not found at {folder}")
    first = next(p for p in sorted(folder.iterdir()) if p.is_dir())
    return np.asarray(Image.open(sorted(first.glob("*.jpg"))[0]).convert("RGB"))


def test_a_damaged_sample_is_seen_restored_as_fix_embeds_it_and_a_sharp_one_as_it_is(face: np.ndarray) -> None:
    from refrestore.gallery.quality import assess
    from refrestore.identity.restored_queries import embedded_restorer_queries
    from refrestore.identity.crops import ALIGNED_SIZE
    from refrestore.training.distill_identity import DistillConfig, query_view

    cfg = DistillConfig(restored_prob=1.0)
    restored = embedded_restorer_queries()
    small = cv2.resize(cv2.resize(cv2.GaussianBlur(face, (0, 0), 4.0), (28, 28), interpolation=cv2.INTER_AREA),
                       face.shape[1::-1], interpolation=cv2.INTER_CUBIC)
    big = cv2.resize(small, (ALIGNED_SIZE, ALIGNED_SIZE), interpolation=cv2.INTER_CUBIC)
    detail = assess(big, None, float(ALIGNED_SIZE)).sharpness
    assert detail < restored.below, "the damaged sample must be one fix restores"
    view = query_view(small, restored, np.random.default_rng(0), cfg)
    # exactly what the identity model embeds for that 512 query (identity.restored_queries)
    assert np.array_equal(view, restored.prepare(big, detail))
    assert view.shape == (ALIGNED_SIZE, ALIGNED_SIZE, 3) and np.abs(view.astype(int) - big.astype(int)).mean() > 1.0

    # a sharp face is embedded as it is by fix, so the sample stays itself
    assert assess(cv2.resize(face, (ALIGNED_SIZE, ALIGNED_SIZE), interpolation=cv2.INTER_CUBIC), None,
                  float(ALIGNED_SIZE)).sharpness >= restored.below
    assert query_view(face, restored, np.random.default_rng(0), cfg) is face
    # restored_prob 0 (the first training) and no restorer leave every sample as it is
    assert query_view(small, restored, np.random.default_rng(0), DistillConfig(restored_prob=0.0)) is small
    assert query_view(small, None, np.random.default_rng(0), cfg) is small
