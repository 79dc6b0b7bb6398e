"""Real detection on real photos: RetinaFace (shared weights) and the dlib fallback, and
alignment that gives the same crop of a face whichever detector found it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from refrestore.align import FFHQ_SIZE, TEMPLATE_RETINAFACE, align_face, alignment_matrix, detect_aligned_crop, invert_affine, is_aligned_crop
from refrestore.detection import DetectorError, init_detector

torch.set_num_threads(2)

# Faces per photo in shared/data/real_lq/whole, counted by eye.
EXPECTED_FACES = {
    "codeformer_00.jpg": 4,
    "codeformer_01.jpg": 4,
    "codeformer_02.png": 4,
    "codeformer_03.jpg": 1,
    "codeformer_04.jpg": 1,
    "codeformer_05.jpg": 1,
    "codeformer_06.png": 2,
    "gfpgan_00.jpg": 2,
    "gfpgan_10045.png": 3,
    "gfpgan_Blake_Lively.jpg": 2,
}


def _rgb(path: Path) -> np.ndarray:
    return np.array(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def retina(retinaface_store):
    return init_detector("retinaface", retinaface_store, torch.device("cpu"))


@pytest.fixture(scope="module")
def dlib_detector():
    return init_detector("dlib")


def _check_sane(faces, img):
    h, w = img.shape[:2]
    for f in faces:
        x1, y1, x2, y2 = f.box
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
        assert 0.0 < f.score <= 1.0
        assert f.landmarks.shape == (5, 2)
        # Every landmark lies inside the box grown by a quarter of its size.
        m = 0.25 * max(x2 - x1, y2 - y1)
        assert np.all(f.landmarks[:, 0] > x1 - m) and np.all(f.landmarks[:, 0] < x2 + m)
        assert np.all(f.landmarks[:, 1] > y1 - m) and np.all(f.landmarks[:, 1] < y2 + m)


@pytest.mark.parametrize("name", sorted(EXPECTED_FACES))
def test_retinaface_finds_every_face(retina, whole_photos, name):
    path = next(p for p in whole_photos if p.name == name)
    img = _rgb(path)
    faces = retina.detect(img)
    assert len(faces) == EXPECTED_FACES[name]
    assert retina.name == "retinaface_mobile0.25"
    _check_sane(faces, img)
    # RetinaFace: eyes above nose above mouth.
    for f in faces:
        lm = f.landmarks
        assert lm[2, 1] > min(lm[0, 1], lm[1, 1]) and max(lm[3, 1], lm[4, 1]) > lm[2, 1]


@pytest.mark.parametrize("name", sorted(EXPECTED_FACES))
def test_dlib_fallback_finds_every_face(dlib_detector, whole_photos, name):
    path = next(p for p in whole_photos if p.name == name)
    img = _rgb(path)
    faces = dlib_detector.detect(img)
    assert len(faces) == EXPECTED_FACES[name]
    _check_sane(faces, img)


def _pair_faces(a, b):
    pairs = []
    for fa in a:
        fb = min(b, key=lambda f: np.hypot(f.center[0] - fa.center[0], f.center[1] - fa.center[1]))
        pairs.append((fa, fb))
    return pairs


def test_both_detectors_give_the_same_crop(retina, dlib_detector, whole_photos):
    """Map the template's eye centres and mouth back into the photo through both
    alignments: they must land within a few percent of the face's eye distance."""
    errors = []
    for path in whole_photos:
        img = _rgb(path)
        for fr, fd in _pair_faces(retina.detect(img), dlib_detector.detect(img)):
            inv_r = invert_affine(alignment_matrix(fr))
            inv_d = invert_affine(alignment_matrix(fd))
            pts = np.hstack([TEMPLATE_RETINAFACE, np.ones((5, 1))])
            pr, pd = pts @ inv_r.T, pts @ inv_d.T
            eye_dist = np.linalg.norm(pr[0] - pr[1])
            errors.append(float(np.mean(np.linalg.norm(pr - pd, axis=1)) / eye_dist))
    assert len(errors) == sum(EXPECTED_FACES.values())
    assert np.median(errors) < 0.06, errors
    assert max(errors) < 0.15, errors


def test_aligned_crop_is_recognised_and_detected(dlib_detector, shared_dir):
    crop = _rgb(shared_dir / "data" / "refbench" / "hq" / "00005" / "0.png")
    face = detect_aligned_crop(crop, dlib_detector)
    assert face is not None
    assert is_aligned_crop(crop, face)
    aligned = align_face(crop, face)
    assert aligned.image.shape == (FFHQ_SIZE, FFHQ_SIZE, 3)
    # Re-aligning an aligned crop is close to the identity: the template's eyes, nose and
    # mouth move by a few pixels (5.6 for this face, whose dlib points sit 4-6 px from the
    # mean template), not by the 18-20 px of landmarks unpadded wrongly or swapped.
    pts = np.hstack([TEMPLATE_RETINAFACE, np.ones((5, 1))])
    moved = float(np.linalg.norm(pts @ aligned.affine.T - TEMPLATE_RETINAFACE, axis=1).mean())
    assert moved < 10.0, moved
    diff = np.abs(aligned.image.astype(int) - crop.astype(int)).mean()
    assert diff < 20, diff  # 17.6: a 5 px shift of textured hair and skin


def test_edge_face_is_padded_not_cropped(retina, whole_photos):
    import cv2

    img = _rgb(next(p for p in whole_photos if p.name == "gfpgan_Blake_Lively.jpg"))
    face = retina.detect(img)[0]
    x1 = int(face.box[0] + face.width * 0.3)
    cut = np.ascontiguousarray(img[:, x1:])  # a third of the face now lies off the left edge
    shifted = retina.detect(cut)
    assert shifted, "a face cut by the photo edge must still be found"
    aligned = align_face(cut, shifted[0])
    assert aligned.image.shape == (FFHQ_SIZE, FFHQ_SIZE, 3)
    # Where the crop reaches past the photo's edge it shows the photo mirrored across that
    # edge: the same warp of a copy padded by reflection (numpy's, the edge pixel not
    # repeated) agrees there, and a flat, black or repeated-edge fill does not.
    m = aligned.affine
    pad = 400
    padded = np.pad(cut, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    shift = m.copy()
    shift[:, 2] -= m[:, :2] @ np.array([pad, pad], dtype=np.float64)
    expected = cv2.warpAffine(padded, shift, (FFHQ_SIZE, FFHQ_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    ys, xs = np.mgrid[0:FFHQ_SIZE, 0:FFHQ_SIZE]
    src = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)], axis=1) @ invert_affine(m).T
    outside = (src[:, 0] < -2).reshape(FFHQ_SIZE, FFHQ_SIZE)
    assert outside.mean() > 0.1, outside.mean()  # a good part of the crop is off the photo
    diff = np.abs(aligned.image.astype(int) - expected.astype(int))[outside].mean()
    assert diff < 2.0, diff
    inside = (src[:, 0] > 2).reshape(FFHQ_SIZE, FFHQ_SIZE)
    assert np.abs(aligned.image.astype(int) - expected.astype(int))[inside].mean() < 1.0


def test_unknown_or_missing_detector_is_a_clear_error(tmp_path):
    from refrestore.weights import WeightStore

    with pytest.raises(DetectorError, match="unknown detector"):
        init_detector("yolo")
    with pytest.raises(DetectorError, match="download-weights"):
        init_detector("retinaface", WeightStore(tmp_path))
    assert init_detector("auto", WeightStore(tmp_path)).name == "dlib"


def test_dlib_finds_no_face_in_the_hair(dlib_detector, shared_dir):
    """On 00089_10.png dlib's HOG also fires on a 22 px patch of hair above the forehead (score
    0.57); a one-face photo must give one face, not a second 'no match' face."""
    folder = shared_dir / "data" / "refbench" / "real_lq_no_gt"
    for path in sorted(folder.glob("*.png")):
        faces = dlib_detector.detect(_rgb(path))
        assert len(faces) == 1, (path.name, [f.box for f in faces])
        assert faces[0].width > 250
    # galleries indexed by the detector that kept such patches are indexed again, not reused
    from refrestore.gallery.index import detector_key

    assert "version=2" in detector_key(dlib_detector)


def _box_face(x1: float, y1: float, x2: float, y2: float):
    from refrestore.faces import LANDMARKS_DLIB5, DetectedFace

    return DetectedFace((x1, y1, x2, y2), np.zeros((5, 2), np.float32), 0.9, LANDMARKS_DLIB5, "dlib")


def test_only_small_detections_within_a_larger_head_are_dropped():
    from refrestore.detection.base import drop_faces_in_heads

    big = _box_face(100, 140, 400, 440)  # 300 px: its head reaches 150 px above, 50 px beside
    kept = {
        "a face beside the head": _box_face(460, 150, 520, 210),
        "a face across the head's edge": _box_face(430, 200, 490, 260),
        "a face below the chin": _box_face(220, 450, 300, 530),
        "a face above the hair": _box_face(220, -20, 260, -5),
        "a face wider than a third of it": _box_face(200, 60, 310, 170),
    }
    dropped = {
        "a patch of hair": _box_face(208, 68, 230, 89),
        "a patch of the cheek": _box_face(300, 300, 340, 340),
        "a patch beside the temple": _box_face(60, 150, 90, 180),
    }
    for name, f in {**kept, **dropped}.items():
        out = drop_faces_in_heads([big, f])
        assert big in out, name
        assert (f in out) == (name in kept), name
    # Two faces of a size never drop each other, even overlapping.
    other = _box_face(300, 150, 560, 410)
    assert drop_faces_in_heads([big, other]) == [big, other]
