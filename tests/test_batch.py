"""Albums: a folder of real and deliberately broken files, and a run killed part-way."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from badfiles import GFPGAN_00_NO_FACE_BOX, make_bad_corpus, make_symlink_loop
from refrestore.fileio import RECORDS  # the records of what refrestore wrote, beside its files

FAST = ["--model", "resample", "--detector", "dlib"]


def _env(home: Path) -> dict:
    return dict(os.environ, REFRESTORE_HOME=str(home), OMP_NUM_THREADS="2", PYTHONUNBUFFERED="1")


def _cli(args: list[str], home: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "refrestore", *args], capture_output=True, text=True, env=_env(home), timeout=timeout)


def _album(tmp: Path, whole_photos: list[Path]) -> dict[str, str]:
    album = tmp / "album"
    expected = make_bad_corpus(
        album,
        [p for p in whole_photos if p.name in {"codeformer_03.jpg", "codeformer_06.png", "gfpgan_Blake_Lively.jpg", "codeformer_04.jpg", "gfpgan_10045.png"}],
        no_face_crop=(next(p for p in whole_photos if p.name == "gfpgan_00.jpg"), GFPGAN_00_NO_FACE_BOX),
    )
    for p in whole_photos:
        shutil.copyfile(p, album / p.name)
        expected[p.name] = "ok"
    # Re-scanned copies in a sub-folder (mirrored under the output with --recursive).
    (album / "scans 1990").mkdir()
    for p in whole_photos[:4]:
        Image.open(p).convert("RGB").save(album / "scans 1990" / (p.stem + "_rescan.jpg"), quality=85)
        expected[f"scans 1990/{p.stem}_rescan.jpg"] = "ok"
    make_symlink_loop(album)
    expected["loop/back"] = "error"  # reported as a symlink loop, never followed forever
    return expected


def test_album_of_real_and_broken_files(tmp_path, whole_photos):
    expected = _album(tmp_path, whole_photos)
    assert len(expected) >= 40
    out, report = tmp_path / "restored", tmp_path / "report.json"
    proc = _cli(["fix", str(tmp_path / "album"), "-o", str(out), "--recursive", "--json", str(report), *FAST], tmp_path / "home")
    assert proc.returncode == 1, proc.stderr  # some inputs failed, the rest were processed
    assert "Traceback" not in proc.stderr + proc.stdout
    entries = json.loads(report.read_text())["images"]
    by_rel = {Path(e["input"]).relative_to(tmp_path / "album").as_posix(): e for e in entries}
    assert set(by_rel) == set(expected), set(by_rel) ^ set(expected)
    for rel, status in expected.items():
        e = by_rel[rel]
        assert e["status"] == status, (rel, e)
        if status == "error":
            assert e["error"] and "\n" not in e["error"] and e["output"] is None
        else:
            assert e["error"] is None
            # exactly one complete output per good input, decodable, of the input's size (upscale
            # 1, EXIF orientation applied), where --recursive mirrors the input's folder
            produced = Path(e["output"])
            assert produced.is_file()
            with Image.open(produced) as im:
                im.load()
                size = im.size
            with Image.open(tmp_path / "album" / rel) as src:
                want = ImageOps.exif_transpose(src).size
            assert size == want, (rel, size, want)
            assert produced.relative_to(out).parent == Path(rel).parent, (rel, produced)
            assert produced.stem == Path(rel).stem + "_restored", (rel, produced)
        if status == "ok":
            assert e["faces"], rel
    outputs = [p for p in out.rglob("*") if p.is_file() and RECORDS not in p.parts]
    assert len(outputs) == sum(1 for s in expected.values() if s != "error")
    assert not [p for p in out.rglob(".*") if p.name != RECORDS and RECORDS not in p.parts], "no temporary files left"
    assert by_rel["animated.gif"]["warnings"] and by_rel["multipage.tif"]["warnings"]
    assert "limit" in by_rel["bomb.png"]["error"] or "large" in by_rel["bomb.png"]["error"]

    # A rerun skips every finished output and says so.
    proc = _cli(["fix", str(tmp_path / "album"), "-o", str(out), "--recursive", "--json", str(report), *FAST], tmp_path / "home")
    again = {Path(e["input"]).relative_to(tmp_path / "album").as_posix(): e for e in json.loads(report.read_text())["images"]}
    for rel, status in expected.items():
        assert again[rel]["status"] == ("skipped" if status != "error" else "error"), rel


def _photos_album(tmp: Path, whole_photos: list[Path], shared_dir: Path) -> Path:
    album = tmp / "album"
    album.mkdir()
    for p in whole_photos:
        shutil.copyfile(p, album / p.name)
    for p in sorted((shared_dir / "data" / "real_lq" / "gray_faces").glob("*.png"))[:4]:
        shutil.copyfile(p, album / p.name)
    return album


def test_killed_run_resumes_to_identical_outputs(tmp_path, whole_photos, shared_dir, request):
    album = _photos_album(tmp_path, whole_photos, shared_dir)
    n = len(list(album.iterdir()))
    # The uninterrupted run goes on beside the interrupted one and its rerun (each its own
    # process, on a machine with two cores): the outputs are compared once all three are done.
    reference_out = tmp_path / "uninterrupted"
    reference_log = tmp_path / "uninterrupted.log"  # a file, not a pipe that nobody reads until the end
    with open(reference_log, "wb") as log:
        reference = subprocess.Popen([sys.executable, "-m", "refrestore", "fix", str(album), "-o", str(reference_out), *FAST],
                                     stdout=log, stderr=subprocess.STDOUT, env=_env(tmp_path / "home2"))
    request.addfinalizer(reference.kill)  # a failed assert below leaves no run behind

    out = tmp_path / "restored"
    child = subprocess.Popen(
        [sys.executable, "-m", "refrestore", "fix", str(album), "-o", str(out), "--json", str(tmp_path / "r1.json"), *FAST],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(tmp_path / "home"),
    )
    deadline = time.time() + 600
    while time.time() < deadline:
        done = [p for p in out.glob("*") if not p.name.startswith(".")] if out.exists() else []
        if len(done) >= 3:
            break
        if child.poll() is not None:
            break
        time.sleep(0.05)
    assert child.poll() is None, "the run finished before it could be interrupted"
    child.send_signal(signal.SIGTERM)
    child.wait(timeout=120)
    assert child.returncode == 130, child.stderr.read().decode()
    partial = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert 3 <= len(partial) < n
    assert not [p for p in out.iterdir() if p.name.startswith(".") and p.name != RECORDS], "no temporary files left"
    first = json.loads((tmp_path / "r1.json").read_text())
    assert first["interrupted"] is True

    proc = _cli(["fix", str(album), "-o", str(out), "--json", str(tmp_path / "r2.json"), *FAST], tmp_path / "home")
    assert proc.returncode == 0, proc.stderr
    rerun = json.loads((tmp_path / "r2.json").read_text())["images"]
    skipped = sorted(Path(e["output"]).name for e in rerun if e["status"] == "skipped")
    assert skipped == partial
    assert reference.wait(timeout=900) == 0, reference_log.read_text()
    final = sorted(p.name for p in out.iterdir() if p.name != RECORDS)
    assert final == sorted(p.name for p in reference_out.iterdir() if p.name != RECORDS)
    for name in final:
        a = np.asarray(Image.open(out / name))
        b = np.asarray(Image.open(reference_out / name))
        assert np.array_equal(a, b), name
