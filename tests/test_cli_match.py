"""`refrestore match` end to end, as a real subprocess on real photos."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image


def run(args: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REFRESTORE_HOME": str(home), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "refrestore", "match", *args], check=False,
                          capture_output=True,
                          text=True, env=env, timeout=600)


@pytest.fixture()
def setup(shared_dir: Path, tmp_path: Path) -> dict[str, Path]:
    ids = shared_dir / "data" / "identities"
    gallery = tmp_path / "family"
    gallery.mkdir()
    for src in ("obama/face_recognition_obama.jpg", "obama/face_recognition_obama1.jpg",
                "biden/face_recognition_biden.jpg", "biden/face_recognition_biden2.jpg"):
        shutil.copy(ids / src, gallery / src.replace("/", "_"))
    inputs = tmp_path / "old"
    inputs.mkdir()
    shutil.copy(ids / "obama" / "face_recognition_obama2.jpg", inputs / "a_obama.jpg")
    shutil.copy(ids / "lennon" / "openface_lennon-2.jpg", inputs / "b_stranger.jpg")
    (inputs / "c_broken.jpg").write_text("not an image")
    shutil.copy(shared_dir / "data" / "refbench" / "hq" / "00005" / "0.png", inputs / "d_crop.png")
    return {"gallery": gallery, "inputs": inputs, "home": tmp_path / "home", "tmp": tmp_path}


def test_match_report_table_and_contact_sheets(setup: dict[str, Path]) -> None:
    report = setup["tmp"] / "report.json"
    sheets = setup["tmp"] / "sheets"
    res = run([str(setup["inputs"]), "--refs", str(setup["gallery"]), "--json", str(report),
               "--compare", str(sheets), "--detector", "dlib", "--top-k", "2"], setup["home"])
    assert res.returncode == 1, res.stderr  # the broken input is an error
    assert "c_broken.jpg" in res.stderr and "Traceback" not in res.stderr
    assert "no match" in res.stdout and "face_recognition_obama" in res.stdout
    data = json.loads(report.read_text())
    assert data["identity_model"].startswith("mobilefacenet-lr") and data["detector"] == "dlib"  # auto: the embedded one
    images = {Path(i["input"]).name: i for i in data["images"]}
    assert set(images) == {"a_obama.jpg", "b_stranger.jpg", "c_broken.jpg", "d_crop.png"}
    # a tight aligned crop is found too (detected on a padded copy)
    assert images["d_crop.png"]["status"] == "ok" and len(images["d_crop.png"]["faces"]) == 1
    assert images["c_broken.jpg"]["status"] == "error" and images["c_broken.jpg"]["error"]
    obama = images["a_obama.jpg"]
    assert obama["status"] == "ok" and obama["output"] is None
    (face,) = obama["faces"]
    assert len(face["box"]) == 4 and len(face["landmarks"]) == 5 and face["restorer"] is None
    ref = face["reference"]
    assert Path(ref["path"]).name.startswith("obama_") and ref["face_index"] == 0
    assert {"score", "identity", "pose", "expression", "quality", "regions"} <= set(ref)
    assert len(ref["alternatives"]) == 1 and Path(ref["alternatives"][0]["path"]).name.startswith("obama_")
    # the gallery's photos are all at its top level: obama's two photos are clustered into one
    # person, named in the report with every number of the decision
    assert ref["person"] and ref["person"].startswith("person-")
    dec = ref["decision"]
    assert dec["matched"] and dec["person"] == ref["person"] and dec["margin"] >= 0
    assert dec["second_person"] and dec["second_person"] != ref["person"]
    assert dec["best_score"] - dec["second_score"] >= dec["required_gap"]
    assert f"person {ref['person']}" in res.stdout
    (stranger,) = images["b_stranger.jpg"]["faces"]
    assert stranger["reference"] is None
    assert stranger["selection"]["best_identity"] < stranger["selection"]["threshold"]
    assert stranger["selection"]["person"] is None and not stranger["selection"]["decision"]["matched"]
    # The contact sheets: one row per face, the face then its references in the report's
    # order (tiles of 256 with 6 px gaps and a caption strip), or a grey "no match" tile.
    import numpy as np

    from refrestore.align import align_face
    from refrestore.detection import init_detector

    detector = init_detector("dlib")

    def aligned_tile(path: Path) -> np.ndarray:
        import cv2

        rgb = np.asarray(Image.open(path).convert("RGB"))
        crop = align_face(rgb, detector.detect(rgb)[0]).image
        return cv2.resize(crop, (256, 256), interpolation=cv2.INTER_AREA).astype(int)

    def tile(sheet: np.ndarray, col: int) -> np.ndarray:
        return sheet[6:262, 6 + col * 262:262 + col * 262].astype(int)

    sheet = np.asarray(Image.open(sheets / "a_obama_match.png").convert("RGB"))
    assert sheet.shape == (310, 3 * 262 + 6, 3)
    ref_paths = [ref["path"]] + [alt["path"] for alt in ref["alternatives"]]
    for col, path in enumerate([str(setup["inputs"] / "a_obama.jpg")] + ref_paths):
        want = aligned_tile(Path(path))
        others = [aligned_tile(Path(p)) for p in ref_paths if p != path]
        err = np.abs(tile(sheet, col) - want).mean()
        assert err < 4.0, (col, path, err)
        assert all(err < np.abs(tile(sheet, col) - o).mean() for o in others), (col, path)
    sheet = np.asarray(Image.open(sheets / "b_stranger_match.png").convert("RGB"))
    assert sheet.shape == (310, 2 * 262 + 6, 3)
    assert np.abs(tile(sheet, 0) - aligned_tile(setup["inputs"] / "b_stranger.jpg")).mean() < 4.0
    assert (tile(sheet, 1) == 200).all(axis=2).mean() > 0.9  # the "no match" tile
    # the gallery index was cached under REFRESTORE_HOME
    assert any((setup["home"] / "cache" / "gallery").rglob("*.npy"))


def test_match_usage_errors(setup: dict[str, Path]) -> None:
    photo = str(setup["inputs"] / "a_obama.jpg")
    res = run([photo, "--detector", "dlib"], setup["home"])
    assert res.returncode == 2 and "--refs" in res.stderr and "Traceback" not in res.stderr
    res = run([photo, "--refs", str(setup["tmp"] / "missing"), "--detector", "dlib"], setup["home"])
    assert res.returncode == 2 and "missing" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_match_forced_reference(setup: dict[str, Path], shared_dir: Path) -> None:
    report = setup["tmp"] / "forced.json"
    ref = setup["gallery"] / "biden_face_recognition_biden.jpg"
    res = run([str(setup["inputs"] / "a_obama.jpg"), "--ref", str(ref), "--json", str(report),
               "--detector", "dlib"], setup["home"])
    assert res.returncode == 0, res.stderr
    (img,) = json.loads(report.read_text())["images"]
    assert img["faces"][0]["reference"]["forced"] is True
    assert img["faces"][0]["reference"]["path"] == str(ref)
