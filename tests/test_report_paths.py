"""Report paths: an unusable ``--json``/``--html`` path is refused before any photo is restored,
and the library's JSON report is written with the mode of any file the user makes."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from refrestore.engines.reports import BatchSummary, ImageReport, write_report
from refrestore.fileio import RECORDS


def _photo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize("flag", ["--json", "--html"])
def test_report_under_a_regular_file_is_refused_before_any_work(tmp_path: Path, flag: str) -> None:
    album = tmp_path / "album"
    for i in range(3):
        _photo(album / f"{i}.png")
    blocker = tmp_path / "notes.txt"
    blocker.write_text("the user's file\n")
    out = tmp_path / "out"
    env = {**os.environ, "REFRESTORE_HOME": str(tmp_path / "home")}
    proc = subprocess.run([sys.executable, "-m", "refrestore", "fix", "--model", "resample", "--detector", "dlib",
                           str(album), "-o", str(out), flag, str(blocker / "sub" / "report.x")],
                          capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and flag in lines[0] and "is not a folder" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    # refused up front: no photo was restored, the user's file is untouched
    assert not out.exists()
    assert blocker.read_text() == "the user's file\n"


def test_report_in_a_folder_still_to_be_made_is_accepted(tmp_path: Path) -> None:
    from refrestore.engines.clash import report_path_problem

    assert report_path_problem(tmp_path / "a" / "b" / "r.json") is None
    (tmp_path / "f").write_text("x")
    assert "is not a folder" in (report_path_problem(tmp_path / "f" / "r.json") or "")
    (tmp_path / "d").mkdir()
    assert "is a folder" in (report_path_problem(tmp_path / "d") or "")
    os.symlink(tmp_path / "missing", tmp_path / "dangling")
    assert "broken symbolic link" in (report_path_problem(tmp_path / "dangling" / "r.json") or "")


def test_library_report_has_the_users_file_mode(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = tmp_path / "reports" / "r.json"
        write_report(path, BatchSummary(images=[ImageReport(input=str(tmp_path / "a.png"), output=None,
                                                            status="skipped")]))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert '"images"' in path.read_text()
    assert [p.name for p in path.parent.iterdir() if p.name != RECORDS] == ["r.json"]  # no temporary file left


def test_html_images_folder_taken_by_a_file_is_refused_before_any_work(tmp_path: Path) -> None:
    photo = _photo(tmp_path / "album" / "a.png")
    (tmp_path / "rep_files").write_text("the user's file\n")
    env = {**os.environ, "REFRESTORE_HOME": str(tmp_path / "home")}
    proc = subprocess.run([sys.executable, "-m", "refrestore", "fix", "--model", "resample", "--detector", "dlib",
                           str(photo), "-o", str(tmp_path / "o.png"), "--html", str(tmp_path / "rep.html")],
                          capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == (f"error: --html {tmp_path / 'rep.html'}: its images folder "
                                   f"{tmp_path / 'rep_files'} exists and is not a folder"), proc.stderr
    assert not (tmp_path / "o.png").exists()
    assert (tmp_path / "rep_files").read_text() == "the user's file\n"
