"""The right restorer for each face, and a good face left as it was.

A downloaded blind restorer is a spandrel checkpoint of the published GFPGAN architecture
with random weights, written by the test under a test manifest (as in test_restorers).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import store_for
from refrestore.api import build_pipeline
from refrestore.batch import BatchOptions, plan_outputs, run_batch, side_by_side, write_report
from refrestore.discover import find_inputs
from refrestore.imageio import read_image
from refrestore.pipeline import FacePipeline, FixOptions
from refrestore.restorers.choose import restorer_for
from refrestore.restorers.registry import get_spec
from refrestore.restorers.resample import RESAMPLE_INFO, ResampleRestorer
from test_restorers import _random_checkpoint

torch.set_num_threads(1)


def _old(img: np.ndarray, seed: int) -> np.ndarray:
    """Small, noisy and JPEG-ish: a face that needs restoring."""
    h, w = img.shape[:2]
    small = cv2.resize(img, (w // 4, h // 4), interpolation=cv2.INTER_AREA).astype(np.float32)
    small += np.random.default_rng(seed).normal(0, 6, small.shape)
    ok, buf = cv2.imencode(".jpg", np.clip(small, 0, 255).astype(np.uint8)[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 60])
    return cv2.resize(cv2.imdecode(buf, 1)[:, :, ::-1], (w, h), interpolation=cv2.INTER_CUBIC)


def _two_people(ids: Path, out: Path) -> None:
    """One photo: Angelina Jolie (in the gallery, not this photo) beside a stranger."""
    a = read_image(ids / "angelina_jolie" / "deepface_img1.jpg").rgb
    b = read_image(ids / "carell" / "openface_carell.jpg").rgb
    h = 600
    a = cv2.resize(a, (int(a.shape[1] * h / a.shape[0]), h), interpolation=cv2.INTER_AREA)
    b = cv2.resize(b, (int(b.shape[1] * h / b.shape[0]), h), interpolation=cv2.INTER_AREA)
    Image.fromarray(_old(np.concatenate([a, b], axis=1), seed=1)).save(out)


def _label_strip(sheet: np.ndarray, panel: int) -> np.ndarray:
    x0 = panel * (512 + 8)
    return sheet[:34, x0:x0 + 512].astype(np.float32)


def _closest_label(sheet: np.ndarray, panels: list[np.ndarray], panel: int, candidates: list[str]) -> str:
    """Which of the candidate labels the written sheet carries on ``panel`` (JPEG, so by distance)."""
    def err(label: str) -> float:
        labels = [""] * len(panels)
        labels[panel] = label
        return float(np.abs(_label_strip(side_by_side(panels, labels=labels), panel) - _label_strip(sheet, panel)).mean())

    return min(candidates, key=err)


def test_matched_face_goes_to_refnet_and_stranger_to_the_blind_restorer(tmp_path, shared_dir):
    ids = shared_dir / "data" / "identities"
    gallery = tmp_path / "family"
    for person in ("angelina_jolie", "obama", "biden"):
        shutil.copytree(ids / person, gallery / person)
    (gallery / "angelina_jolie" / "deepface_img1.jpg").unlink()  # the photo being restored is not a reference
    album = tmp_path / "album"
    album.mkdir()
    _two_people(ids, album / "two.png")

    weights = tmp_path / "weights"
    weights.mkdir()
    _random_checkpoint("gfpgan", weights / "GFPGANv1.4.pth")
    store = store_for(weights, "GFPGANv1.4.pth", "restorer", "gfpgan-v1.4")
    built = build_pipeline(refs=[gallery], model="auto", detector="dlib", device="cpu", store=store, top_k=2)
    built_names: list[str] = []
    original_build = built.pipeline.router._build
    built.pipeline.router._build = lambda spec: (built_names.append(spec.info.name), original_build(spec))[1]

    inputs, _ = find_inputs([album], recursive=False)
    out = tmp_path / "out"
    summary = run_batch(plan_outputs(inputs, out, single_file=False), built.pipeline, BatchOptions(compare=True, save_faces=True, jobs=1, prefetch=0))
    report = tmp_path / "r.json"
    write_report(report, summary, {"restorer": built.pipeline.restorer.info.name})
    faces = json.loads(report.read_text())["images"][0]["faces"]
    assert len(faces) == 2
    by_match = {f["reference"] is not None: f for f in faces}
    assert set(by_match) == {True, False}, faces
    matched, stranger = by_match[True], by_match[False]
    assert "/angelina_jolie/" in matched["reference"]["path"]
    assert matched["restorer"] == "refnet-small" and matched["restored"] and not matched["left_as_is"]
    assert stranger["restorer"] == "gfpgan-v1.4" and stranger["restored"] and not stranger["left_as_is"]
    assert sorted(built_names) == ["gfpgan-v1.4"], "refnet-small was built for the report name; each restorer once"

    # The compare sheets name each face's restorer, and "no reference" for the stranger.
    result_faces = {f["index"]: f for f in faces}
    for idx, f in result_faces.items():
        sheet = np.asarray(Image.open(out / f"two_restored_compare_face{idx:02d}.jpg").convert("RGB"))
        crops = out / "two_restored_faces"
        panels = [np.asarray(Image.open(crops / f"face{idx:02d}_{t}.png").convert("RGB")) for t in ("input", "restored")]
        ref_file = crops / f"face{idx:02d}_reference.png"
        panels.append(np.asarray(Image.open(ref_file).convert("RGB")) if ref_file.is_file() else np.full((512, 512, 3), 128, np.uint8))
        said = _closest_label(sheet, panels, 1, ["restored: refnet-small", "restored: gfpgan-v1.4", "left as it was"])
        assert said == f"restored: {f['restorer']}"
        ref_label = _closest_label(sheet, panels, 2, ["reference", "no reference"])
        assert ref_label == ("reference" if f["reference"] else "no reference")

    # A second photo does not build anything again.
    more = tmp_path / "album2"
    more.mkdir()
    shutil.copyfile(album / "two.png", more / "again.png")
    inputs, _ = find_inputs([more], recursive=False)
    run_batch(plan_outputs(inputs, tmp_path / "out2", single_file=False), built.pipeline, BatchOptions(jobs=1, prefetch=0))
    assert sorted(built_names) == ["gfpgan-v1.4"]


def test_auto_and_named_choices():
    gfpgan, refnet, resample = get_spec("gfpgan-v1.4"), get_spec("refnet-small"), get_spec("resample")
    assert restorer_for(True, [gfpgan, refnet, resample]) is refnet
    assert restorer_for(False, [gfpgan, refnet, resample]) is gfpgan
    assert restorer_for(False, [refnet, resample]) is refnet  # no blind model downloaded: refnet without references
    assert restorer_for(True, [resample]) is resample
    assert restorer_for(True, [gfpgan, refnet], named=gfpgan) is gfpgan  # a named model takes every face
    assert restorer_for(False, [gfpgan, refnet], named=refnet) is refnet


def test_a_clean_face_is_left_as_it_was(shared_dir):
    photo = read_image(shared_dir / "data" / "identities" / "clapton" / "openface_clapton-1.jpg").rgb
    built = build_pipeline(model="auto", detector="dlib", device="cpu")
    result = built.pipeline.run(photo)
    assert len(result.faces) == 1
    face = result.faces[0].report()
    assert face["left_as_is"] and face["restorer"] is None and face["restored"] is False and face["error"] is None
    assert face["degradation"]["severity"] < 0.15 and face["degradation"]["face_px"] > 200
    assert np.array_equal(result.image, photo)
    # The same face made old is restored.
    old = built.pipeline.run(_old(photo, seed=2))
    assert not old.faces[0].left_as_is and old.faces[0].report()["restorer"] == "refnet-small"
    assert old.faces[0].degradation.severity > 0.5


class FidelityResample(ResampleRestorer):
    """The real resampling restorer, declaring fidelity: it blends back toward the input by it."""

    info = RESAMPLE_INFO.__class__(**{**RESAMPLE_INFO.__dict__, "name": "resample-fidelity", "supports_fidelity": True})

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[float | None] = []

    def restore(self, faces, references=None, strength=1.0, fidelity=None):  # type: ignore[no-untyped-def]
        self.seen.append(fidelity)
        s = strength * (1.0 - (fidelity if fidelity is not None else 0.0))
        return super().restore(faces, references, s)


def test_fidelity_reaches_only_restorers_that_support_it(whole_photos):
    photo = read_image(next(p for p in whole_photos if p.name == "codeformer_02.png")).rgb
    from refrestore.detection import init_detector

    det = init_detector("dlib")
    # resample takes no fidelity argument: passing one would raise, and the faces would fail.
    plain = FacePipeline(det, ResampleRestorer(), options=FixOptions(fidelity=0.3)).run(photo)
    assert all(f.error is None and f.restored is not None for f in plain.faces)
    fid = FidelityResample()
    outs = {}
    for value in (0.0, 1.0):
        fid.seen.clear()
        r = FacePipeline(det, fid, options=FixOptions(fidelity=value, adaptive=False)).run(photo)
        assert fid.seen and set(fid.seen) == {value}
        outs[value] = r
    # fidelity 1 means the input: the face crops come back as they were.
    for f in outs[1.0].faces:
        assert np.abs(f.restored.astype(int) - f.aligned.astype(int)).max() <= 1
    assert all((f.restored != f.aligned).mean() > 0.3 for f in outs[0.0].faces)


# Damaged real faces that still move less than issue 23's acceptance level (2 grey levels in
# the restored photo), with the floor each must keep: none since the paste-back adds grain of
# the photo's kind rather than the face's own noise in place, and a soft but clean face's own
# finest detail is raised by how blurred it is (they moved 1.6-1.96 before). Blake Lively's
# halftone child (1.15 then) is checked by test_told. A face that falls short goes here with
# its floor, and must leave the list when it reaches the level.
SHORT_OF_ACCEPTANCE: dict[tuple[str, int], float] = {("gfpgan_Blake_Lively.jpg", 0): 1.15}


def test_every_damaged_real_face_changes_visibly(whole_photos):
    """The faces of real old photos come back visibly restored: the centre of every damaged
    face moves by more than 2 grey levels on average in the output photo (as
    ../shared/checks/real-photos-change measures it, before the photo is written; before issue
    23, 22 of the 24 moved 2 or less), but for SHORT_OF_ACCEPTANCE's, which keep a floor; the photo away
    from the faces does not move; the one sharp adult face among them (Blake Lively's, right
    half of its photo) is not made worse."""
    built = build_pipeline(model="auto", detector="dlib", device="cpu")
    n = changed = 0
    for path in whole_photos:
        photo = read_image(path).rgb
        result = built.pipeline.run(photo)
        far = np.ones(photo.shape[:2], bool)
        for f in result.faces:
            n += 1
            assert f.error is None and f.degradation is not None
            x1, y1, x2, y2 = (int(v) for v in f.face.box)
            w, h = x2 - x1, y2 - y1
            far[max(0, y1 - h):y2 + h, max(0, x1 - w):x2 + w] = False
            centre = (slice(y1 + h // 4, y2 - h // 4), slice(x1 + w // 4, x2 - w // 4))
            moved = float(np.abs(result.image[centre].astype(int) - photo[centre].astype(int)).mean())
            if path.name == "gfpgan_Blake_Lively.jpg" and f.face.box[0] > photo.shape[1] / 2:
                # hardly damaged: never less detail than it had
                before = f.aligned[160:400, 150:362].astype(np.float32).mean(axis=2)
                after = (f.restored if f.restored is not None else f.aligned)[160:400, 150:362].astype(np.float32).mean(axis=2)
                assert cv2.Laplacian(after, cv2.CV_32F).var() >= 0.95 * cv2.Laplacian(before, cv2.CV_32F).var()
                continue
            level = SHORT_OF_ACCEPTANCE.get((path.name, f.index), 2.0)
            assert not f.left_as_is and moved > level, (path.name, f.index, round(moved, 2), f.degradation)
            assert level == 2.0 or moved <= 2.0, f"{path.name} face {f.index} now moves {moved:.2f}: drop it from SHORT_OF_ACCEPTANCE"
            changed += 1
        if far.any():
            assert np.abs(result.image.astype(int) - photo.astype(int))[far].mean() < 1.0, path.name
    assert n >= 24 and changed == n - 1


def test_fix_cli_routes_each_face_with_model_auto(tmp_path, shared_dir):
    """The command line, not only the library: `fix --refs` with a downloaded blind restorer
    sends the gallery person to refnet-small and the stranger to gfpgan-v1.4 in one photo."""
    import os
    import subprocess
    import sys

    ids = shared_dir / "data" / "identities"
    gallery = tmp_path / "family"
    for person in ("angelina_jolie", "obama", "biden"):
        shutil.copytree(ids / person, gallery / person)
    (gallery / "angelina_jolie" / "deepface_img1.jpg").unlink()
    photo = tmp_path / "two.png"
    _two_people(ids, photo)
    weights = tmp_path / "weights"
    weights.mkdir()
    _random_checkpoint("gfpgan", weights / "GFPGANv1.4.pth")
    store_for(weights, "GFPGANv1.4.pth", "restorer", "gfpgan-v1.4")
    report = tmp_path / "r.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-m", "refrestore", "fix", str(photo), "-o", str(tmp_path / "out.png"),
                          "--refs", str(gallery), "--detector", "dlib", "--device", "cpu", "--top-k", "2",
                          "--weights-dir", str(weights), "--manifest", str(weights / "test-manifest.toml"),
                          "--json", str(report)], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    faces = json.loads(report.read_text())["images"][0]["faces"]
    by_match = {f["reference"] is not None: f["restorer"] for f in faces}
    assert by_match == {True: "refnet-small", False: "gfpgan-v1.4"}, faces


def test_the_sharp_adult_face_comes_back_as_good_through_fix(tmp_path, shared_dir):
    """Issue 11's own example, as a user meets it (JPEG in, JPEG out): the adult face keeps
    its detail in the output photo (its Laplacian variance fell from 238 to 83 before), and
    the halftone-printed child's face beside it is found noisy and restored."""
    from refrestore.align import align_face
    from refrestore.degradation import photo_window
    from refrestore.faces import DetectedFace

    album = tmp_path / "album"
    album.mkdir()
    shutil.copyfile(shared_dir / "data" / "real_lq" / "whole" / "gfpgan_Blake_Lively.jpg", album / "b.jpg")
    built = build_pipeline(model="auto", detector="dlib", device="cpu")
    inputs, _ = find_inputs([album], recursive=False)
    rep = run_batch(plan_outputs(inputs, tmp_path / "out", single_file=False), built.pipeline, BatchOptions(jobs=1, prefetch=0)).images[0]
    assert rep.status == "ok" and len(rep.faces) == 2, rep
    src, out = read_image(album / "b.jpg").rgb, read_image(Path(rep.output)).rgb
    lap = lambda x: float(cv2.Laplacian(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).astype(np.float32), cv2.CV_32F).var())  # noqa: E731
    adult, child = sorted(rep.faces, key=lambda f: -f["box"][0])
    for f in (adult, child):
        face = DetectedFace(tuple(f["box"]), np.asarray(f["landmarks"], np.float32), f["detector_score"], f["landmark_kind"], f["detector"])
        f["affine"] = align_face(src, face).affine
    window = lambda img, f: photo_window(img, f["affine"])  # noqa: E731
    assert lap(window(src, adult)) > 200
    assert lap(window(out, adult)) >= 0.9 * lap(window(src, adult)), (lap(window(out, adult)), lap(window(src, adult)))
    assert adult["degradation"]["scores"]["noise"] == 0.0
    assert child["degradation"]["cause"] == "noise" and child["degradation"]["noise"] > 12 and child["restored"]
    assert np.abs(window(out, child).astype(int) - window(src, child).astype(int)).mean() > 3
