"""The degradation module: determinism, shapes, and that the presets are ordered by severity."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from refrestore.net.degrade import (
    PRESETS,
    DegradeParams,
    degrade,
    degrade_to_face_width,
    face_width_rule,
    preset,
    random_params,
)
from refrestore.training.metrics import psnr, ssim


@pytest.fixture(scope="module")
def face(shared_dir: Path) -> np.ndarray:
    path = shared_dir / "data" / "refbench" / "hq" / "00005" / "0.png"
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, path
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def test_same_seed_same_result_and_different_seed_differs(face: np.ndarray) -> None:
    a = degrade(face, PRESETS["severe"], seed=3)
    b = degrade(face, PRESETS["severe"], seed=3)
    c = degrade(face, PRESETS["severe"], seed=4)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_shapes_and_dtype(face: np.ndarray) -> None:
    for name, p in PRESETS.items():
        out = degrade(face, p, seed=0)
        assert out.shape == (512, 512, 3) and out.dtype == np.uint8, name
    small = degrade(face, DegradeParams(1.0, 2.0, 3.0, 80, out_size=None), seed=0)
    assert small.shape == face.shape
    rect = np.ascontiguousarray(face[:300, :200])
    assert degrade(rect, DegradeParams(1.0, 4.0, 3.0, 80, out_size=None), seed=0).shape == (300, 200, 3)
    assert degrade(rect, DegradeParams(1.0, 4.0, 3.0, 80, out_size=128), seed=0).shape == (128, 128, 3)


def test_presets_are_ordered_by_quality(face: np.ndarray) -> None:
    scores = {n: psnr(degrade(face, p, seed=1), face) for n, p in PRESETS.items()}
    sims = {n: ssim(degrade(face, p, seed=1), face) for n, p in PRESETS.items()}
    assert scores["moderate"] > scores["severe"] > scores["extreme"], scores
    assert sims["moderate"] > sims["severe"] > sims["extreme"], sims
    # Even moderate damage is visible: well below a near-lossless 40 dB.
    assert scores["moderate"] < 35.0


def test_random_params_cover_the_range_and_old_photo_effects(face: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    drawn = [random_params(rng, old_photo_prob=0.5) for _ in range(300)]
    scales = [p.scale for p in drawn]
    assert min(scales) < 4.0 < 8.0 < max(scales)
    assert any(p.grey for p in drawn) and any(p.scratches for p in drawn) and any(p.fade > 0 for p in drawn)
    assert not any(p.grey for p in (random_params(rng, old_photo_prob=0.0) for _ in range(50)))
    grey = degrade(face, DegradeParams(1.0, 2.0, 0.0, 100, grey=True, fade=0.2, scratches=3), seed=0)
    assert grey.shape == (512, 512, 3)
    plain = degrade(face, DegradeParams(1.0, 2.0, 0.0, 100, grey=True), seed=0)
    assert np.array_equal(plain[:, :, 0], plain[:, :, 1]) and np.array_equal(plain[:, :, 1], plain[:, :, 2])
    assert not np.array_equal(grey, plain)


def test_degrade_to_face_width(face: np.ndarray) -> None:
    factor, sigma = face_width_rule(320, 48)
    assert factor == pytest.approx(320 / 48) and sigma == pytest.approx(0.5 * 320 / 48)
    assert face_width_rule(40, 48) == (1.0, 0.0)
    a = degrade_to_face_width(face, 320, seed=5)
    assert a.shape == face.shape
    assert np.array_equal(a, degrade_to_face_width(face, 320, seed=5))
    assert psnr(degrade_to_face_width(face, 320, target_width=24, seed=5), face) < psnr(a, face)


def test_bad_input_is_rejected() -> None:
    with pytest.raises(ValueError):
        degrade(np.zeros((8, 8), np.uint8), PRESETS["moderate"], 0)
    with pytest.raises(ValueError):
        DegradeParams(1.0, 0.5, 0.0, 50)
    with pytest.raises(ValueError, match="unknown preset"):
        preset("mild")
