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


# ---- issue 22: one gate for every command (items 1 and 3) ------------------------------------

def _weights_name() -> str:
    from refrestore.weights import load_manifest

    return next(e.name for e in load_manifest().default_entries() if not e.embedded)


@pytest.mark.parametrize("case", ["match_json_on_a_photo", "match_html_on_a_photo", "gallery_json_on_its_photo",
                                  "eval_json_in_the_data", "train_export_on_a_photo",
                                  "fix_html_folder_of_the_users", "download_weights_dir_on_a_users_file"])
def test_every_command_refuses_to_write_over_what_the_user_owns(tmp_path: Path, album: dict[str, Path],
                                                                case: str) -> None:
    """`match --json in/b.jpg` (b.jpg not an input) overwrote the user's photo, exit 0; so did
    `eval --json data/p/0.png` and `train --export grandma.jpg`; `fix --html index.html` deleted
    the user's own `index_files/`. Each is now exit 2 before any work, one line naming the file."""
    gallery = tmp_path / "gallery"
    data = tmp_path / "data"
    for i in range(2):
        _photo(data / "p1" / f"{i}.png", 10 + i)
    if case.startswith("match"):
        flag = "--json" if "json" in case else "--html"
        args, names = ["match", str(album["a"]), "--refs", str(gallery), flag, str(album["b"])], [album["b"]]
    elif case == "gallery_json_on_its_photo":
        args, names = ["gallery", str(gallery), "--json", str(album["ref"])], [album["ref"]]
    elif case == "eval_json_in_the_data":
        args, names = ["eval", "--data", str(data), "--json", str(data / "p1" / "0.png")], [data / "p1" / "0.png", data]
    elif case == "train_export_on_a_photo":
        args = ["train", "--data", str(data), "--out", str(tmp_path / "run"), "--steps", "1", "--export", str(album["b"])]
        names = [album["b"]]
    elif case == "fix_html_folder_of_the_users":
        (tmp_path / "index_files").mkdir()
        (tmp_path / "index_files" / "thesis-notes.txt").write_text("chapter 1\n")
        _photo(tmp_path / "index_files" / "family.jpg", 7)
        args = [*FIX, str(album["a"]), "-o", str(tmp_path / "o.png"), "--html", str(tmp_path / "index.html")]
        names = [tmp_path / "index_files"]
    else:
        (tmp_path / "w").mkdir()
        (tmp_path / "w" / _weights_name()).write_text("my own notes, not weights\n")
        args = ["download-weights", _weights_name(), "--dir", str(tmp_path / "w")]
        names = [tmp_path / "w" / _weights_name()]
    before = _snapshot(tmp_path)
    proc = _cli(args, tmp_path / "home")
    _refused(proc, *names)
    assert _snapshot(tmp_path) == before
    assert not (tmp_path / "run").exists() and not (tmp_path / "o.png").exists()


def test_a_contact_sheet_in_the_gallery_is_never_taken_for_a_photo_of_it(tmp_path: Path, album: dict[str, Path]) -> None:
    """`match --compare gallery/ann` wrote `r_match.png` there, and the next run counted it as
    one of ann's photos (issue 22, item 3): what refrestore writes is recorded and never walked."""
    from refrestore.cli.match_cmd import _write_png
    from refrestore.gallery.index import walk_sources

    sheet = album["ref"].with_name("r_match.png")
    _write_png(sheet, np.zeros((40, 60, 3), np.uint8))
    assert sheet.is_file()
    files, problems = walk_sources([tmp_path / "gallery"])
    assert [Path(f).name for f in files] == ["r.png"] and problems == []
