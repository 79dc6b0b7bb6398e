"""No file refrestore writes may land on an input, a reference or another file of the run
(issue 15, item 1): the real CLI in a subprocess, on real image files, refuses before any work."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def _cli(args: list[str], home: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, REFRESTORE_HOME=str(home), OMP_NUM_THREADS="1", REFRESTORE_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "refrestore", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def _photo(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def album(tmp_path: Path) -> dict[str, Path]:
    return {
        "a": _photo(tmp_path / "album" / "a.png", 1),
        "b": _photo(tmp_path / "album" / "b.png", 2),
        "a_match": _photo(tmp_path / "album" / "a_match.png", 3),
        "ref": _photo(tmp_path / "gallery" / "ann" / "r.png", 4),
    }


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            and "home" not in p.relative_to(root).parts}


def _refused(proc: subprocess.CompletedProcess, *names: Path) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    for n in names:
        assert str(n) in lines[0].replace("\n", ""), (n, lines[0])


FIX = ["fix", "--model", "resample", "--detector", "dlib"]


@pytest.mark.parametrize("case", ["json_on_input", "html_on_input", "json_on_output", "json_on_reference",
                                  "json_is_html", "json_in_faces", "json_on_compare_sheet",
                                  "output_on_reference", "input_in_html_files"])
def test_fix_refuses_to_write_over_what_the_user_owns(tmp_path: Path, album: dict[str, Path], case: str) -> None:
    out = tmp_path / "out"
    args = [*FIX, str(album["a"].parent), "-o", str(out)]
    if case == "json_on_input":
        args += ["--json", str(album["b"])]
        names = [album["b"]]
    elif case == "html_on_input":
        args += ["--html", str(album["a"])]
        names = [album["a"]]
    elif case == "json_on_output":
        args += ["--json", str(out / "b_restored.png")]
        names = [out / "b_restored.png", album["b"]]
    elif case == "json_on_reference":
        args += ["--refs", str(tmp_path / "gallery"), "--json", str(album["ref"])]
        names = [album["ref"]]
    elif case == "json_is_html":
        args += ["--json", str(tmp_path / "r.html"), "--html", str(tmp_path / "r.html")]
        names = [tmp_path / "r.html"]
    elif case == "json_in_faces":
        args += ["--save-faces", "--json", str(out / "a_restored_faces" / "face00_input.png")]
        names = [out / "a_restored_faces" / "face00_input.png", out / "a_restored_faces"]
    elif case == "json_on_compare_sheet":
        args += ["--compare", "--json", str(out / "a_restored_compare_face01.jpg")]
        names = [out / "a_restored_compare_face01.jpg"]
    elif case == "output_on_reference":
        # the single input's output file is a gallery photo
        args = [*FIX, str(album["a"]), "-o", str(album["ref"]), "--refs", str(tmp_path / "gallery")]
        names = [album["ref"], album["a"]]
    else:  # the HTML report's image folder is replaced wholesale: it may not hold an input
        args = [*FIX, str(tmp_path / "album"), "-o", str(out), "--html", str(tmp_path / "album.html")]
        (tmp_path / "album_files").mkdir()
        _photo(tmp_path / "album_files" / "c.png", 5)
        args = [*FIX, str(tmp_path / "album_files"), "-o", str(out), "--html", str(tmp_path / "album.html")]
        names = [tmp_path / "album_files", tmp_path / "album_files" / "c.png"]
    before = _snapshot(tmp_path)
    proc = _cli(args, tmp_path / "home")
    _refused(proc, *names)
    assert _snapshot(tmp_path) == before
    assert not out.exists()


@pytest.mark.parametrize("case", ["json_on_input", "html_on_reference", "sheet_on_input", "json_on_sheet"])
def test_match_refuses_to_write_over_what_the_user_owns(tmp_path: Path, album: dict[str, Path], case: str) -> None:
    args = ["match", str(album["a"]), str(album["a_match"]), "--refs", str(tmp_path / "gallery")]
    if case == "json_on_input":
        args += ["--json", str(album["a"])]
        names = [album["a"]]
    elif case == "html_on_reference":
        args += ["--html", str(album["ref"])]
        names = [album["ref"]]
    elif case == "sheet_on_input":  # a.png's sheet would be album/a_match.png, itself an input
        args += ["--compare", str(album["a"].parent)]
        names = [album["a_match"]]
    else:
        args += ["--compare", str(tmp_path / "sheets"), "--json", str(tmp_path / "sheets" / "a_match.png")]
        names = [tmp_path / "sheets" / "a_match.png"]
    before = _snapshot(tmp_path)
    proc = _cli(args, tmp_path / "home")
    _refused(proc, *names)
    assert _snapshot(tmp_path) == before


def test_a_report_beside_the_outputs_is_fine(tmp_path: Path, album: dict[str, Path]) -> None:
    out = tmp_path / "out"
    proc = _cli([*FIX, str(album["a"].parent), "-o", str(out), "--json", str(out / "report.json"),
                 "--save-faces", "--compare"], tmp_path / "home")
    assert proc.returncode == 0, proc.stderr
    assert (out / "report.json").is_file() and (out / "a_restored.png").is_file()
