"""One-person galleries (a flat folder, ``--person DIR``): the references are used unless a face is
clearly someone else; the report says which rule decided. Real faces of refbench, real commands."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest


@pytest.fixture()
def mfn_home(shared_dir: Path) -> Path:
    """This test's REFRESTORE_HOME with the published MobileFaceNet file added, as a user who ran
    ``download-weights`` has it."""
    src = shared_dir / "weights" / "mobilefacenet" / "mobilefacenet.pt"
    if not src.is_file():
        pytest.skip(f"shared MobileFaceNet weights not found at {src}")
    from refrestore.weights import WeightStore
    from refrestore.userweights import add_user_file

    add_user_file(WeightStore(), None, src)
    return Path(os.environ["REFRESTORE_HOME"])


def _folder(tmp: Path, shared: Path, person: str, leave_out: str | None = None) -> Path:
    """A flat folder of links to one refbench person's photos (one left out)."""
    out = tmp / f"refs-{person}"
    out.mkdir()
    for f in sorted((shared / "data" / "refbench" / "hq" / person).glob("*.png")):
        if f.name != leave_out:
            (out / f.name).symlink_to(f)
    return out


def _degraded(src: Path, width: float, dst: Path, seed: int = 0) -> Path:
    """The aligned 512 crop as a face ``width`` px wide: blurred, noisy, JPEG, enlarged back."""
    rng = np.random.default_rng(seed)
    img = cv2.imread(str(src))
    s = width / 256.0
    x = cv2.resize(cv2.GaussianBlur(img, (0, 0), 0.6 / s), None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    x = np.clip(x + rng.normal(0, 6, x.shape), 0, 255).astype(np.uint8)
    x = cv2.imdecode(cv2.imencode(".jpg", x, [cv2.IMWRITE_JPEG_QUALITY, 50])[1], cv2.IMREAD_COLOR)
    cv2.imwrite(str(dst), cv2.resize(x, (512, 512), interpolation=cv2.INTER_CUBIC))
    return dst


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "refrestore", *args], capture_output=True, text=True,
                          env=env, timeout=600)


def _faces(report: Path) -> list[dict]:
    return [f for im in json.loads(report.read_text())["images"] for f in im["faces"]]


def test_a_one_person_folder_declares_who_it_is_unless_clearly_someone_else(tmp_path: Path, shared_dir: Path,
                                                                            mfn_home: Path) -> None:
    hq = shared_dir / "data" / "refbench" / "hq"
    refs = _folder(tmp_path, shared_dir, "00005", leave_out="0.png")
    own = _degraded(hq / "00005" / "0.png", 40, tmp_path / "own.png")
    tiny = _degraded(hq / "00005" / "0.png", 7, tmp_path / "tiny.png")
    other = tmp_path / "other.png"
    other.symlink_to(hq / "00086" / "0.png")  # another person, clean: positive evidence
    report = tmp_path / "r.json"
    # --threshold above any cosine: nothing is identified, so a used reference is the folder's word
    run = _run("match", str(own), str(tiny), str(other), "--refs", str(refs), "--threshold", "0.999",
               "--json", str(report))
    assert run.returncode == 0, run.stderr
    faces = {Path(im["input"]).name: im["faces"][0] for im in json.loads(report.read_text())["images"]}
    declared, unverifiable, stranger = faces["own.png"], faces["tiny.png"], faces["other.png"]
    assert declared["reference_rule"] == "declared", declared["selection"]["decision"]
    assert declared["reference"]["person"] == "refs-00005"
    assert unverifiable["reference_rule"] == "unverifiable-declared", unverifiable["selection"]["decision"]
    assert not unverifiable["selection"]["decision"]["verifiable"]
    assert stranger["reference"] is None and stranger["reference_rule"] is None
    assert stranger["selection"]["decision"]["reason"].startswith("clearly someone else"), stranger
    # the warnings say which rule decided and the face's size
    assert "declared" in run.stderr and "clearly someone else" in run.stderr
    # dlib gave its second opinion on both verifiable faces: the stranger test is on the sum
    # (score + weight * (dlib's cosine - centre)), and the reason shows both figures
    import re

    from refrestore.gallery.rules import RULES

    second = RULES[json.loads(report.read_text())["identity_model"].split(" ")[0]].second
    for face in (declared, stranger):
        reason = face["selection"]["decision"]["reason"]
        fused, own, dlib = map(float, re.search(r"(-?[\d.]+) \((-?[\d.]+) with dlib (-?[\d.]+)\)", reason).groups())
        assert abs(fused - second.fused(own, dlib)) < 2e-3, reason
    assert fused < stranger["selection"]["decision"]["stranger_threshold"]  # the last one: the stranger


def test_fix_person_gives_the_references_to_the_face_that_is_that_person(tmp_path: Path, shared_dir: Path,
                                                                       mfn_home: Path) -> None:
    """A photo of two people and ``--person`` one of them: only that face gets the references."""
    hq = shared_dir / "data" / "refbench" / "hq"
    refs = _folder(tmp_path, shared_dir, "00022", leave_out="0.png")
    a = cv2.resize(cv2.imread(str(hq / "00022" / "0.png")), (320, 320), interpolation=cv2.INTER_AREA)
    b = cv2.resize(cv2.imread(str(hq / "00086" / "2.png")), (320, 320), interpolation=cv2.INTER_AREA)
    photo = tmp_path / "two.png"
    cv2.imwrite(str(photo), np.hstack([b, np.full((320, 40, 3), 200, np.uint8), a]))
    report = tmp_path / "r.json"
    run = _run("fix", str(photo), "--person", str(refs), "-o", str(tmp_path / "out.png"), "--json", str(report),
               "--detector", "dlib")
    assert run.returncode == 0, run.stderr
    faces = sorted(_faces(report), key=lambda f: f["box"][0])
    assert len(faces) == 2, faces
    left, right = faces
    assert right["reference"] is not None and right["reference_rule"] in ("matched", "declared")
    assert Path(right["reference"]["path"]).parent == refs
    assert left["reference"] is None, left["decision"]
    # --person is the whole gallery: with --refs it is a usage error, before any work
    run = _run("fix", str(photo), "--person", str(refs), "--refs", str(refs), "-o", str(tmp_path / "o2.png"))
    assert run.returncode == 2 and "--person" in run.stderr and not (tmp_path / "o2.png").exists()
