"""Reference selection (RefSel) on real photos of 29 people (../shared/data/identities).

Issue 4's acceptance figures were leave-one-out >= 98% clean and >= 90% at 48 px with the
threshold fitted on these photos; issue 14 calibrates on shared/data/faces instead and puts
rejecting strangers first, so these photos are now an independent in-the-wild check.
The gallery and the query descriptions are computed once per session by collect() in a
process of its own, started when the tests are collected (about 90 s of dlib detection of 99
photos and 4 embeddings per query; see tests/calibration_data.py).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from refrestore.align import align_face
from refrestore.detection import init_detector
from refrestore.gallery import forced_reference, select_references
from conftest import calibration_data
from refrestore.gallery.calibrate import CalibrationData, evaluate, person_of
from refrestore.gallery.index import load_rgb
from refrestore.gallery.select import region_compatibility, select_from_query
from refrestore.identity import DlibIdentity

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def detector():  # type: ignore[no-untyped-def]
    return init_detector("dlib")


@pytest.fixture(scope="session")
def identity() -> DlibIdentity:
    return DlibIdentity()


@pytest.fixture(scope="session")
def identities(shared_dir: Path) -> Path:
    return shared_dir / "data" / "identities"


@pytest.fixture(scope="session")
def data(identities: Path, request: pytest.FixtureRequest) -> CalibrationData:
    # collect()'s result, computed by a process that conftest started at collection (see
    # tests/calibration_data.py): about 90 s of dlib work, done beside the earlier tests.
    return calibration_data(request.config)


def test_clean_leave_one_out(data: CalibrationData) -> None:
    ev = evaluate(data, "clean")
    assert ev.loo_total == 93
    # The person-level rule is calibrated on shared/data/faces (issue 14) to reject strangers
    # first: measured 0.882 here (it was 1.0 with the threshold fitted on these very photos),
    # with every stranger rejected (test_people_not_in_gallery_get_no_match).
    assert ev.loo_correct >= 0.85, ev.failures


def test_degraded_leave_one_out(data: CalibrationData) -> None:
    ev = evaluate(data, "degraded")
    # measured 0.462 (was 0.925 with hubness-corrected thresholds fitted here, which let 3% of
    # strangers through); see README "References (RefSel)"
    assert ev.loo_correct >= 0.40, ev.failures


@pytest.mark.parametrize("kind", ["clean", "degraded"])
def test_people_not_in_gallery_get_no_match(data: CalibrationData, kind: str) -> None:
    ev = evaluate(data, kind)
    assert ev.no_match_total == 99
    assert ev.no_match >= 0.95, ev.failures


def test_single_photo_people_match_nobody(data: CalibrationData) -> None:
    singles = [q for q in data.queries if q.person not in data.people_with_others()]
    assert len(singles) == 6
    for q in singles:
        sub = data.gallery.subset(lambda f, p=q.path: f.path != p)
        assert not select_from_query(sub, q.clean, with_images=False).matched, q.path


def test_top_k_references_of_one_person_with_report(data: CalibrationData) -> None:
    q = next(q for q in data.queries if q.person == "scarlett_johansson")
    sub = data.gallery.subset(lambda f: f.path != q.path)
    sel = select_from_query(sub, q.degraded, top_k=3)
    assert sel.matched and len(sel.references) == 3
    assert all(person_of(c.face) == q.person for c in sel.candidates)
    scores = [c.total for c in sel.candidates]
    assert scores == sorted(scores, reverse=True)
    for ref in sel.references:
        assert ref.image.shape == (512, 512, 3) and ref.image.dtype == np.uint8
        assert set(ref.regions) == {"eyes", "nose", "mouth", "outline"}
        assert all(0.0 <= v <= 1.0 for v in ref.regions.values())
        assert {"identity", "pose", "expression", "quality", "total"} <= set(ref.components)
    rep = sel.report()
    assert rep is not None
    assert rep["path"] == sel.references[0].path and rep["face_index"] == sel.references[0].face_index
    assert rep["score"] == pytest.approx(sel.references[0].score, abs=1e-4)
    assert len(rep["alternatives"]) == 2 and rep["identity_model"] == "dlib"
    # top_k=1 gives the same first reference
    one = select_from_query(sub, q.degraded, top_k=1, with_images=False)
    assert one.references[0].path == sel.references[0].path


def test_no_match_gives_no_references(data: CalibrationData) -> None:
    q = next(q for q in data.queries if q.person == "obama")
    sub = data.gallery.subset(lambda f: person_of(f) != "obama")
    sel = select_from_query(sub, q.clean)
    assert not sel.matched and sel.references == [] and sel.report() is None
    assert sel.best_identity < sel.threshold


def test_ranking_weighs_pose_and_expression(data: CalibrationData) -> None:
    q = next(q for q in data.queries if q.person == "yangmi_woman")
    sub = data.gallery.subset(lambda f: f.path != q.path)
    base = select_from_query(sub, q.clean, with_images=False)
    ref = base.candidates[0].face
    same_pose = dataclasses.replace(q.clean, yaw=ref.yaw, pitch=ref.pitch,
                                    eye_open=ref.eye_open, mouth_open=ref.mouth_open)
    turned = dataclasses.replace(same_pose, yaw=ref.yaw + 40.0)
    smiling = dataclasses.replace(same_pose, mouth_open=ref.mouth_open + 0.4)
    r_same, r_turned, r_smile = (region_compatibility(x, ref) for x in (same_pose, turned, smiling))
    assert all(v == pytest.approx(1.0) for v in r_same.values())
    assert r_turned["outline"] < 0.1 and r_turned["outline"] < r_turned["eyes"]
    assert r_smile["mouth"] < 0.1 and r_smile["nose"] == pytest.approx(1.0)
    # a candidate whose pose matches the query gains over the others
    picked = select_from_query(sub, same_pose, with_images=False).candidates
    assert picked[0].pose == pytest.approx(1.0)


def test_faces_of_one_photo_pick_different_people(data: CalibrationData, identities: Path, detector, identity, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import cv2

    left_path = identities / "lennon" / "openface_lennon-2.jpg"
    right_path = identities / "obama" / "face_recognition_obama2.jpg"

    def fit(x: np.ndarray) -> np.ndarray:
        return cv2.resize(x, (round(x.shape[1] * 600 / x.shape[0]), 600), interpolation=cv2.INTER_AREA)

    group = np.concatenate([fit(load_rgb(left_path)), fit(load_rgb(right_path))], axis=1)
    sub = data.gallery.subset(lambda f: f.path not in (left_path.resolve(), right_path.resolve()))
    faces = sorted(detector.detect(group), key=lambda f: f.box[0])
    assert len(faces) == 2
    picked = []
    for face in faces:
        aligned = align_face(group, face)
        # what is tested is that each face picks its own person; the threshold is loosened (the
        # upscaled 600 px half-photos score just below the calibrated 0.96)
        sel = select_references(sub, aligned.image, face, identity, affine=aligned.affine, threshold=0.94)
        assert sel.matched
        picked.append(Path(sel.references[0].path).parent.name)
    assert picked == ["lennon", "obama"]


def test_forced_reference(identities: Path, detector, identity, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ref = forced_reference(identities / "biden" / "face_recognition_biden.jpg", detector, identity)
    assert ref.image.shape == (512, 512, 3) and ref.score == 1.0 and ref.components["forced"] == 1.0
    flat = tmp_path / "flat.png"
    Image.fromarray(np.full((300, 300, 3), 120, np.uint8)).save(flat)
    with pytest.raises(ValueError, match="no face found"):
        forced_reference(flat, detector, identity)
    junk = tmp_path / "junk.jpg"
    junk.write_text("hello")
    with pytest.raises(ValueError, match="junk.jpg"):
        forced_reference(junk, detector, identity)


def test_gallery_of_another_model_is_refused(data: CalibrationData) -> None:
    class Other(DlibIdentity):
        name = "other"

    with pytest.raises(ValueError, match="indexed with dlib"):
        select_references(data.gallery, np.zeros((512, 512, 3), np.uint8), None, Other())
