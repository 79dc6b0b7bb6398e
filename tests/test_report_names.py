"""A file name that is not UTF-8 never costs the report (issue 15, item 7)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from refrestore.report.document import printable_name


def test_printable_name_escapes_only_undecodable_bytes() -> None:
    assert printable_name("Zoë.jpg") == "Zoë.jpg"
    assert printable_name(os.fsdecode(b"caf\xe9.jpg")) == "caf\\xe9.jpg"


def test_a_latin1_name_in_the_album_keeps_both_reports(tmp_path: Path) -> None:
    album = tmp_path / "album"
    album.mkdir()
    rng = np.random.default_rng(0)
    latin1 = os.fsdecode(os.fsencode(str(album)) + b"/caf\xe9.png")
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(latin1)
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(album / "plain.png")
    env = dict(os.environ, OMP_NUM_THREADS="1", REFRESTORE_HOME=str(tmp_path / "home"))
    proc = subprocess.run([sys.executable, "-m", "refrestore", "fix", str(album), "-o", str(tmp_path / "out"),
                           "--model", "resample", "--detector", "dlib", "--json", str(tmp_path / "r.json"),
                           "--html", str(tmp_path / "r.html")], capture_output=True, text=True, errors="backslashreplace", env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "r.json").read_bytes().decode("utf-8"))
    inputs = sorted(Path(i["input"]).name for i in data["images"])
    assert inputs == ["caf\\xe9.png", "plain.png"]
    assert all(i["status"] == "no_faces" for i in data["images"])
    page = (tmp_path / "r.html").read_bytes().decode("utf-8")
    assert "caf\\xe9.png" in page
    assert len(list((tmp_path / "r_files").iterdir())) >= 2  # both photos' pictures, the odd name too
