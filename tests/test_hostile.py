"""A hostile-input corpus through the real CLI (issues 15 and 22): cases beyond the ones the
issues name, one or more per class. Every case asserts: no traceback, a one-line message (usage
errors) or a one-line error or warning per image (album cases), the right exit status, every
input byte-identical afterwards, no temporary file left, no raw control character printed, and
no hang (a timeout per case)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

FIX = ["fix", "--model", "resample", "--detector", "dlib"]


def _noise(path: Path, h: int = 40, w: int = 60, seed: int = 0, **save: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path, **save)
    return path


@dataclass(frozen=True)
class Case:
    klass: str
    build: Callable[[Path], list[str]]  # makes the files, returns the arguments
    status: int
    says: str  # in the one-line message (usage errors) or in the bad image's report error (warning at status 0)
    bad: str | None = None  # the input whose report entry must hold ``says`` (album cases)


def _album(t: Path) -> Path:
    _noise(t / "album" / "good.png", seed=1)
    return t / "album"


def _cut(t: Path, name: str, fmt: str, fraction: float, tail: bytes = b"") -> Path:
    src = _noise(t / "tmp" / f"whole.{fmt}", 200, 300, 2, format=fmt.upper())
    data = src.read_bytes()
    src.unlink()
    (t / "tmp").rmdir()
    out = t / "album" / name
    out.write_bytes(data[: int(len(data) * fraction)] + tail)
    return out


def _data(t: Path) -> Path:
    for i in range(2):
        _noise(t / "data" / "p1" / f"{i}.png", seed=10 + i)
    return t / "data"


def _deep(t: Path, levels: int) -> list[str]:
    album = _album(t)
    deep = album.joinpath(*["d"] * levels)
    _noise(deep / "bottom.png", seed=2)
    return [*FIX, str(album), "-r", "-o", str(t / "out"), "--json", str(t / "r.json")]


def _clashing_names(t: Path) -> list[str]:
    album = _album(t)
    _noise(album / "a.jpg", seed=3)
    _noise(album / "a.JPG", seed=4)
    return [*FIX, str(album), "-o", str(t / "out"), "--json", str(t / "r.json")]


def _cmyk_tiff(t: Path) -> list[str]:
    album = _album(t)
    Image.open(_noise(t / "rgb.png", seed=5)).convert("CMYK").save(album / "cmyk.tif")
    (t / "rgb.png").unlink()
    return [*FIX, str(album), "-o", str(t / "out"), "--json", str(t / "r.json")]


def _lying_png(t: Path) -> list[str]:
    # a valid PNG signature and IHDR claiming 20000x9000 in a 1 KB file: refused unread
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", 20000, 9000, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    _album(t)
    (t / "album" / "liar.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk + b"\x00" * 900)
    return [*FIX, str(t / "album"), "-o", str(t / "out"), "--json", str(t / "r.json")]


CASES: dict[str, Case] = {
    # clobbering: other formats and other writers than the issue's
    "html_over_webp_input": Case("clobber", lambda t: [*FIX, str(_noise(t / "a.webp")), "-o", str(t / "o.webp"),
                                                       "--html", str(t / "a.webp")], 2, "would overwrite the input"),
    "json_over_nested_reference": Case("clobber", lambda t: [*FIX, str(_noise(t / "a.png")), "-o", str(t / "o.png"),
                                                             "--refs", str(_noise(t / "g" / "p" / "q" / "r.jpg").parents[2]),
                                                             "--json", str(t / "g" / "p" / "q" / "r.jpg")], 2,
                                       "would overwrite the reference"),
    "html_files_folder_is_the_output": Case("clobber", lambda t: [*FIX, str(_album(t)), "-o", str(t / "rep_files"),
                                                                  "--html", str(t / "rep.html")], 2, "would hold"),
    # odd paths
    "fifo_in_the_album": Case("paths", lambda t: (_album(t), os.mkfifo(t / "album" / "pipe.png"),
                                                  [*FIX, str(t / "album" / "good.png"), str(t / "album" / "pipe.png"),
                                                   "-o", str(t / "out"), "--json", str(t / "r.json")])[-1], 1,
                              "not a regular file",
                              bad="pipe.png"),
    "output_file_exists_for_an_album": Case("paths", lambda t: (_album(t), _noise(t / "o.png"),
                                                                [*FIX, str(t / "album"), "-o", str(t / "o.png")])[-1],
                                            2, "exists and is not a folder"),
    "json_is_a_folder": Case("paths", lambda t: ((t / "rep").mkdir(), [*FIX, str(_noise(t / "a.png")), "-o",
                                                                       str(t / "o.png"), "--json", str(t / "rep")])[-1],
                             2, "is a folder"),
    # malformed images
    "png_cut_short": Case("images", lambda t: (_album(t), _cut(t, "cut.png", "png", 0.5),
                                               [*FIX, str(t / "album"), "-o", str(t / "out"),
                                                "--json", str(t / "r.json")])[-1], 1, "truncated", bad="cut.png"),
    "webp_cut_short": Case("images", lambda t: (_album(t), _cut(t, "cut.webp", "webp", 0.5),
                                                [*FIX, str(t / "album"), "-o", str(t / "out"),
                                                 "--json", str(t / "r.json")])[-1], 1, "", bad="cut.webp"),
    "png_header_lies_about_its_size": Case("images", _lying_png, 1, "", bad="liar.png"),
    "empty_file_named_jpg": Case("images", lambda t: (_album(t), (t / "album" / "z.jpg").write_bytes(b""),
                                                      [*FIX, str(t / "album"), "-o", str(t / "out"),
                                                       "--json", str(t / "r.json")])[-1], 1, "empty file",
                                 bad="z.jpg"),
    # limits
    "upscale_past_the_limit_tall_photo": Case("limits", lambda t: [*FIX, str(_noise(t / "tall.png", 1000, 200)),
                                                                   "-o", str(t / "o.png"), "--upscale", "6",
                                                                   "--max-pixels", "4000000"], 2,
                                              "--upscale 4 is the largest that fits"),
    "pixel_limit_not_a_number": Case("limits", lambda t: [*FIX, str(_noise(t / "a.png")), "-o", str(t / "o.png"),
                                                          "--max-pixels", "12"], 2, "too small"),
    # files read back
    "manifest_is_a_folder": Case("read-back", lambda t: ((t / "m").mkdir(), [*FIX, str(_noise(t / "a.png")), "-o",
                                                                            str(t / "o.png"), "--manifest",
                                                                            str(t / "m")])[-1], 2, "manifest"),
    "manifest_nested_too_deeply": Case("read-back", lambda t: ((t / "m.toml").write_text("schema = " + "[" * 100_000),
                                                              [*FIX, str(_noise(t / "a.png")), "-o", str(t / "o.png"),
                                                               "--manifest", str(t / "m.toml")])[-1], 2,
                                       "nested too deeply"),
    "manifest_is_a_device": Case("read-back", lambda t: [*FIX, str(_noise(t / "a.png")), "-o", str(t / "o.png"),
                                                         "--manifest", "/dev/zero"], 2, "not a regular file"),
    # issue 22 -- one gate for every command
    "match_json_over_a_photo_not_matched": Case("gate", lambda t: ["match", str(_noise(t / "a.png")), "--refs",
                                                                   str(_noise(t / "g" / "p" / "r.png").parents[1]),
                                                                   "--json", str(_noise(t / "b.jpg", seed=3))],
                                                2, "which refrestore did not write"),
    "train_export_over_a_photo": Case("gate", lambda t: ["train", "--data", str(_data(t)), "--out", str(t / "run"),
                                                         "--export", str(_noise(t / "grandma.jpg"))], 2,
                                      "which refrestore did not write"),
    "eval_json_in_the_data": Case("gate", lambda t: ["eval", "--data", str(_data(t)), "--json",
                                                     str(t / "data" / "p1" / "0.png")], 2, "which this run reads"),
    # special files
    "json_to_a_fifo_nobody_reads": Case("special", lambda t: (os.mkfifo(t / "fifo"),
                                                              [*FIX, str(_noise(t / "a.png")), "-o", str(t / "o.png"),
                                                               "--json", str(t / "fifo")])[-1], 2, "nobody reads"),
    "html_images_folder_is_a_link": Case("special", lambda t: ((t / "elsewhere").mkdir(),
                                                               (t / "r_files").symlink_to(t / "elsewhere"),
                                                               [*FIX, str(_noise(t / "a.png")), "-o", str(t / "o.png"),
                                                                "--html", str(t / "r.html")])[-1], 2,
                                         "symbolic link"),
    # outputs that are what they say
    "cmyk_tiff_in_the_album": Case("modes", _cmyk_tiff, 0, "CMYK converted", bad="cmyk.tif"),
    # name clashes
    "same_name_but_the_extensions_case": Case("names", _clashing_names, 0, "same output name", bad="a.JPG"),
    # the terminal
    "escape_sequence_in_a_file_name": Case("terminal", lambda t: (_album(t), (t / "album" / "e\x1b[2J\nvil.jpg").write_bytes(b""),
                                                                  [*FIX, str(t / "album"), "-o", str(t / "out"),
                                                                   "--json", str(t / "r.json")])[-1], 1, "empty file",
                                           bad="e\x1b[2J\nvil.jpg"),
    # the same command twice, and what is decided before any work
    "output_in_a_format_not_written": Case("reruns", lambda t: [*FIX, str(_noise(t / "a.png")), "-o", str(t / "o.gif")],
                                           2, "cannot write .gif"),
    "remote_input_offline": Case("reruns", lambda t: [*FIX, "s3://bucket/a.jpg", "--engine", "ray", "--offline",
                                                      "-o", str(t / "out")], 2, "offline"),
    # the machine's limits
    "folder_tree_too_deep": Case("machine", lambda t: _deep(t, 260), 1, "folders deep", bad="d"),
}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.is_symlink() and "home" not in p.relative_to(root).parts}


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_input(tmp_path: Path, name: str) -> None:
    case = CASES[name]
    args = case.build(tmp_path)
    inputs = _files(tmp_path)
    env = dict(os.environ, OMP_NUM_THREADS="1", REFRESTORE_HOME=str(tmp_path / "home"), REFRESTORE_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "refrestore", *args], capture_output=True, text=True,
                          errors="backslashreplace", env=env, timeout=120)
    assert proc.returncode == case.status, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "\x1b" not in proc.stderr + proc.stdout  # names are printed escaped
    if case.bad is None:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and case.says in lines[0], proc.stderr
    else:
        images = {Path(i["input"]).name: i for i in json.loads((tmp_path / "r.json").read_text())["images"]}
        bad = images[case.bad]
        if case.status == 0:  # done, with a warning that says what was changed
            assert bad["status"] in ("ok", "no_faces") and any(case.says in w for w in bad["warnings"])
            with Image.open(bad["output"]) as im:  # and the output is what it says
                im.load()
        else:
            assert bad["status"] == "error" and bad["error"] and "\n" not in bad["error"]
            assert case.says in bad["error"], bad["error"]
        assert images["good.png"]["status"] == "no_faces"  # the album went on
    after = _files(tmp_path)
    assert {k: v for k, v in after.items() if k in inputs} == inputs  # every input byte-identical
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".refrestore-")]


def test_the_corpus_covers_every_class() -> None:
    assert {c.klass for c in CASES.values()} == {"clobber", "paths", "images", "limits", "read-back", "gate",
                                                 "special", "modes", "names", "terminal", "reruns", "machine"}


def test_a_jpeg_cut_short_is_marked_in_the_report_and_the_album_goes_on(tmp_path: Path) -> None:
    """A JPEG cut at 60% with an end-of-image marker appended decodes without a word from
    Pillow; `fix` must say so in that image's report entry and still do the rest (issue 15, item 6)."""
    import io

    album = _album(tmp_path)
    whole = Image.fromarray(np.random.default_rng(3).integers(0, 255, (300, 400, 3), dtype=np.uint8))
    for name, progressive in (("cut_baseline.jpg", False), ("cut_progressive.jpg", True)):
        buf = io.BytesIO()
        whole.save(buf, "JPEG", quality=90, progressive=progressive)
        data = buf.getvalue()
        (album / name).write_bytes(data[: int(len(data) * 0.6)] + b"\xff\xd9")
    inputs = _files(album)
    env = dict(os.environ, OMP_NUM_THREADS="1", REFRESTORE_HOME=str(tmp_path / "home"), REFRESTORE_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "refrestore", *FIX, str(album), "-o", str(tmp_path / "out"),
                           "--json", str(tmp_path / "r.json")], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    images = {Path(i["input"]).name: i for i in json.loads((tmp_path / "r.json").read_text())["images"]}
    assert set(images) == {"good.png", "cut_baseline.jpg", "cut_progressive.jpg"}
    assert [w for w in images["cut_baseline.jpg"]["warnings"] if w.startswith("truncated JPEG: the bottom")]
    assert [w for w in images["cut_progressive.jpg"]["warnings"] if w.startswith("truncated JPEG: its last scans")]
    assert images["good.png"]["warnings"] == []
    assert all(Path(i["output"]).is_file() for i in images.values())  # the album went on
    assert _files(album) == inputs
