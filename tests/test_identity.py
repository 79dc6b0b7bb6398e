"""Identity models on real aligned faces (refbench: FFHQ-aligned 512 crops of 6 people)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from refrestore.paths import weights_dir
from refrestore.identity import (
    ARCFACE_WEIGHTS,
    DLIB_ALIGNED_RECT,
    ArcFaceIdentity,
    DlibIdentity,
    IdentityModel,
    cosine,
    init_identity_model,
)

torch.set_num_threads(1)

# Where ArcFace's weights may be (they are not shipped, and the autouse fixture points
# REFRESTORE_HOME at an empty folder): an explicit file, the user's own weights folder as
# it was before the fixture ran (download-weights puts the file there), or shared/weights.
ARCFACE_ENV = "REFRESTORE_ARCFACE_WEIGHTS"
_USER_WEIGHTS = weights_dir()


def _arcface_weights(shared: Path | None) -> tuple[Path | None, list[str]]:
    """The ArcFace file to test with (None when there is none) and the places looked in."""
    explicit = os.environ.get(ARCFACE_ENV)
    if explicit:
        path = Path(explicit)
        assert path.is_file(), f"{ARCFACE_ENV}={explicit}: no such file"
        return path, [explicit]
    from refrestore.weights import WeightStore

    looked = [str(_USER_WEIGHTS / ARCFACE_WEIGHTS)]
    found = WeightStore(_USER_WEIGHTS).find(ARCFACE_WEIGHTS)  # verified against the manifest
    if found is not None:
        return found, looked
    if shared is not None:
        for sub in ("weights/arcface", "weights/recognition", "weights"):
            candidate = shared / sub / ARCFACE_WEIGHTS
            looked.append(str(candidate))
            if candidate.is_file():
                return candidate, looked
    return None, looked


def _load(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def refbench_faces(shared_dir: Path) -> dict[str, list[np.ndarray]]:
    root = shared_dir / "data" / "refbench" / "hq"
    people = sorted(p for p in root.iterdir() if p.is_dir())[:3]
    return {p.name: [_load(f) for f in sorted(p.glob("*.png"))[:3]] for p in people}


@pytest.fixture(scope="module")
def dlib_model() -> DlibIdentity:
    return DlibIdentity()


def test_dlib_embeddings_are_unit_and_separate_people(dlib_model: DlibIdentity,
                                                       refbench_faces: dict[str, list[np.ndarray]]) -> None:
    assert isinstance(dlib_model, IdentityModel)
    labels, crops = zip(*[(name, img) for name, imgs in refbench_faces.items() for img in imgs])
    emb = dlib_model.embed(list(crops))
    assert emb.shape == (len(crops), 128) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    sims = cosine(emb, emb)
    lab = np.array(labels)
    same = (lab[:, None] == lab[None]) & ~np.eye(len(lab), dtype=bool)
    diff = lab[:, None] != lab[None]
    # every face is closer to each photo of its own person than to any photo of another
    assert sims[same].min() > sims[diff].max(), (sims[same].min(), sims[diff].max())
    # deterministic
    np.testing.assert_array_equal(dlib_model.embed([crops[0]]), emb[:1])


def test_dlib_rect_is_where_dlib_detects_faces_on_aligned_crops(refbench_faces: dict[str, list[np.ndarray]]) -> None:
    """The fixed box the shape predictor gets must match what dlib's own detector finds."""
    import dlib

    detector = dlib.get_frontal_face_detector()
    x1, y1, x2, y2 = DLIB_ALIGNED_RECT
    ious = []
    for imgs in refbench_faces.values():
        for img in imgs:
            padded = np.pad(img, ((128, 128), (128, 128), (0, 0)))
            found = detector(padded, 0)
            assert len(found) == 1
            r = found[0]
            bx1, by1, bx2, by2 = r.left() - 128, r.top() - 128, r.right() - 128, r.bottom() - 128
            inter = max(0, min(x2, bx2) - max(x1, bx1)) * max(0, min(y2, by2) - max(y1, by1))
            union = (x2 - x1) * (y2 - y1) + (bx2 - bx1) * (by2 - by1) - inter
            ious.append(inter / union)
    assert np.mean(ious) > 0.8, ious


def test_dlib_rejects_bad_input_and_takes_empty_batches(dlib_model: DlibIdentity) -> None:
    assert dlib_model.embed([]).shape == (0, 128)
    with pytest.raises(ValueError, match="uint8 RGB"):
        dlib_model.embed([np.zeros((512, 512), np.uint8)])
    with pytest.raises(ValueError, match="uint8 RGB"):
        dlib_model.embed([np.zeros((512, 512, 3), np.float32)])


def test_dlib_other_sizes_are_resized(dlib_model: DlibIdentity, refbench_faces: dict[str, list[np.ndarray]]) -> None:
    import cv2

    img = next(iter(refbench_faces.values()))[0]
    big = cv2.resize(img, (1024, 1024), interpolation=cv2.INTER_CUBIC)
    a, b = dlib_model.embed([img, big])
    assert float(a @ b) > 0.99


def test_version_names_what_changes_embeddings() -> None:
    assert DlibIdentity().version != DlibIdentity(num_jitters=2).version


def test_init_identity_model_auto_and_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFRESTORE_HOME", str(tmp_path))
    assert init_identity_model("auto").name == "mobilefacenet-lr"  # embedded: nothing to download
    assert init_identity_model("dlib").name == "dlib"
    with pytest.raises(FileNotFoundError, match=ARCFACE_WEIGHTS):
        init_identity_model("arcface")
    with pytest.raises(ValueError, match="unknown identity model"):
        init_identity_model("facenet")


def test_arcface_plumbing_with_random_weights(tmp_path: Path, refbench_faces: dict[str, list[np.ndarray]]) -> None:
    """Loads a state dict through refrestore.weights and embeds (random weights: shapes only)."""
    from facexlib.recognition.arcface_arch import Backbone

    torch.manual_seed(0)
    path = tmp_path / ARCFACE_WEIGHTS
    torch.save(Backbone(num_layers=50, drop_ratio=0.6, mode="ir_se").state_dict(), path)
    model = ArcFaceIdentity(path, device=torch.device("cpu"))
    assert isinstance(model, IdentityModel)
    crops = [imgs[0] for imgs in refbench_faces.values()]
    emb = model.embed(crops)
    assert emb.shape == (len(crops), 512) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_arcface_real_weights_separate_people(shared_dir: Path, refbench_faces: dict[str, list[np.ndarray]]) -> None:
    found, looked = _arcface_weights(shared_dir)
    if found is None:
        pytest.skip(f"{ARCFACE_WEIGHTS} not found (looked in {', '.join(looked)}; set {ARCFACE_ENV}=FILE, "
                    f"or 'refrestore download-weights {ARCFACE_WEIGHTS}' fetches it)")
    model = ArcFaceIdentity(found)
    labels, crops = zip(*[(name, img) for name, imgs in refbench_faces.items() for img in imgs])
    emb = model.embed(list(crops))
    assert emb.shape == (len(crops), 512)
    sims = cosine(emb, emb)
    lab = np.array(labels)
    same = (lab[:, None] == lab[None]) & ~np.eye(len(lab), dtype=bool)
    # Every photo is closer to each photo of its own person than to any other person's.
    assert sims[same].min() > sims[lab[:, None] != lab[None]].max(), (sims[same].min(), sims[lab[:, None] != lab[None]].max())


def test_own_and_fused_models_on_real_faces(refbench_faces: dict[str, list[np.ndarray]]) -> None:
    """faceid-small behind IdentityModel, and the fused score is exactly the weighted cosine mix."""
    from refrestore.identity.fused import FusedIdentity
    from refrestore.identity.own import OwnIdentity

    own = init_identity_model("faceid")
    assert isinstance(own, OwnIdentity) and own.version.startswith("faceid-small-")
    labels, crops = zip(*[(name, img) for name, imgs in refbench_faces.items() for img in imgs[:3]])
    e = own.embed(list(crops))
    assert e.shape == (len(crops), own.dim) and np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    assert own.embed([]).shape == (0, own.dim)
    fused = FusedIdentity(dlib_weight=0.9, own=own)
    f = fused.embed(list(crops[:4]))
    d, o = fused.dlib.embed(list(crops[:4])), e[:4]
    np.testing.assert_allclose(f @ f.T, 0.9 * (d @ d.T) + 0.1 * (o @ o.T), atol=1e-5)
    dl, ow = fused.split_scores(f[0], f)
    np.testing.assert_allclose(dl, d @ d[0], atol=1e-5)
    np.testing.assert_allclose(ow, o @ o[0], atol=1e-5)
    assert init_identity_model("fused").name == "fused"
    with pytest.raises(ValueError):
        FusedIdentity(dlib_weight=1.5, own=own)
