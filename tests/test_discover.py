"""Input discovery on a real folder tree: content sniffing, hidden and temporary files,
symlink loops, unreadable folders, FIFOs, odd names."""
from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import threading
import textwrap
from pathlib import Path

import pytest
from PIL import Image, features

from refrestore.discover import IMAGE_EXTENSIONS, TEMP_PREFIX, InputFile, find_inputs, sniff_bytes, sniff_image

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def photo(shared_dir: Path) -> Path:
    return shared_dir / "data" / "real_lq" / "whole" / "codeformer_04.jpg"


@pytest.fixture()
def tree(tmp_path: Path, photo: Path) -> Path:
    """album/ with images, non-images, hidden files, a sub-folder, and a loop."""
    root = tmp_path / "album"
    (root / "sub" / "deeper").mkdir(parents=True)
    shutil.copyfile(photo, root / "a.jpg")
    shutil.copyfile(photo, root / "b c é.JPG")
    shutil.copyfile(photo, root / "scan_0001")  # no extension: found by content
    Image.open(photo).save(root / "家族.png")
    (root / "readme.jpg").write_text("not a photo")  # an input that will fail clearly
    (root / "notes.txt").write_text("scanned 1962")
    (root / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0" + bytes(60))
    shutil.copyfile(photo, root / ".hidden.jpg")
    shutil.copyfile(photo, root / f"{TEMP_PREFIX}123-abcd.jpg")
    shutil.copyfile(photo, root / "sub" / "d.jpg")
    Image.open(photo).save(root / "sub" / "deeper" / "e.webp")
    os.symlink("../..", root / "sub" / "deeper" / "up")  # loop: points back at album/
    os.symlink("missing.jpg", root / "dangling.jpg")
    os.symlink("self", root / "self")  # a link to itself (ELOOP)
    os.mkfifo(root / "pipe.jpg")  # opening it for reading would block forever
    os.mkfifo(root / "pipe")  # no extension: only sniffing could admit it, and must not try
    return root


def _rels(inputs: list[InputFile]) -> list[str]:
    return [f.rel.as_posix() for f in inputs]


def _find(paths: list[Path], recursive: bool, **kw: object) -> tuple[list[InputFile], list[tuple[Path, str]]]:
    """find_inputs in a thread with a deadline, so a hang fails the test instead of CI."""
    result: list[tuple[list[InputFile], list[tuple[Path, str]]]] = []
    worker = threading.Thread(target=lambda: result.append(find_inputs(paths, recursive, **kw)), daemon=True)
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), "find_inputs hung"
    return result[0]


def test_flat_folder(tree: Path) -> None:
    inputs, problems = _find([tree], recursive=False)
    assert _rels(inputs) == ["a.jpg", "b c é.JPG", "readme.jpg", "scan_0001", "家族.png"]
    assert all(f.path == tree / f.rel for f in inputs)
    assert sorted((p.name, why) for p, why in problems) == [("dangling.jpg", "broken symlink"), ("self", "symlink loop")]


def test_recursive_with_loop(tree: Path) -> None:
    inputs, problems = _find([tree], recursive=True)
    assert _rels(inputs) == [
        "a.jpg", "b c é.JPG", "readme.jpg", "scan_0001", "sub/d.jpg", "sub/deeper/e.webp", "家族.png",
    ]
    reasons = {p.relative_to(tree).as_posix(): why for p, why in problems}
    assert reasons == {
        "dangling.jpg": "broken symlink",
        "self": "symlink loop",
        "sub/deeper/up": f"symlink loop: leads back to {os.path.realpath(tree)}",
    }
    assert all("\n" not in why for why in reasons.values())
    assert _find([tree], recursive=True) == (inputs, problems)  # deterministic


def test_linked_folder_is_followed_once(tmp_path: Path, photo: Path) -> None:
    root = tmp_path / "root"
    (root / "real").mkdir(parents=True)
    shutil.copyfile(photo, root / "real" / "x.jpg")
    os.symlink("real", root / "alias")  # same folder twice: not a loop, listed once
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copyfile(photo, outside / "y.jpg")
    os.symlink(outside, root / "linked")  # a link out of the tree is followed
    inputs, problems = _find([root], recursive=True)
    assert _rels(inputs) == ["alias/x.jpg", "linked/y.jpg"]
    assert problems == []


def test_explicit_paths(tree: Path, tmp_path: Path) -> None:
    inputs, problems = _find(
        [tree / "notes.txt", tree / "sub" / "d.jpg", tmp_path / "gone.jpg", tree / "sub" / "d.jpg", tree / "pipe.jpg"],
        recursive=False,
    )
    # a file named by the user is an input even when it is not an image; listed once
    assert [(f.path, f.rel.as_posix()) for f in inputs] == [(tree / "notes.txt", "notes.txt"), (tree / "sub" / "d.jpg", "d.jpg")]
    assert problems == [(tmp_path / "gone.jpg", "no such file or folder"), (tree / "pipe.jpg", "not a regular file or folder")]


def test_output_folder_inside_input_is_excluded(tree: Path, photo: Path) -> None:
    out = tree / "restored"
    out.mkdir()
    shutil.copyfile(photo, out / "a.jpg")
    inputs, _ = _find([tree], recursive=True, exclude=[out])
    assert not any(f.rel.parts[0] == "restored" for f in inputs)
    inputs, _ = _find([tree], recursive=True)
    assert "restored/a.jpg" in _rels(inputs)


def test_unreadable_folder(tree: Path) -> None:
    locked = tree / "locked"
    locked.mkdir()
    (locked / "x.jpg").write_bytes(b"")
    locked.chmod(0)
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from refrestore.discover import find_inputs
        inputs, problems = find_inputs([Path({str(tree)!r})], True)
        for p, why in problems:
            print(p.name, "|", why)
        """
    )
    prefix: list[str] = []
    if os.geteuid() == 0:  # root ignores permission bits unless it drops these capabilities
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv")
        prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]
    try:
        res = subprocess.run(prefix + [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=REPO)
    finally:
        locked.chmod(0o755)
    assert res.returncode == 0, res.stderr
    assert "locked | cannot read folder: permission denied" in res.stdout.splitlines()


def test_sniff_real_formats(tmp_path: Path, photo: Path) -> None:
    im = Image.open(photo).convert("RGB")
    formats = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp", "TIFF": ".tif", "BMP": ".bmp", "JPEG2000": ".jp2"}
    if features.check("avif"):
        formats["AVIF"] = ".avif"
    for fmt, ext in formats.items():
        buf = io.BytesIO()
        im.save(buf, fmt)
        target = tmp_path / f"x{ext}.bin"  # the name says nothing: content decides
        target.write_bytes(buf.getvalue())
        assert sniff_image(target) == fmt
        assert ext in IMAGE_EXTENSIONS
    assert sniff_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic") == "HEIC"
    (tmp_path / "t.txt").write_text("hello")
    assert sniff_image(tmp_path / "t.txt") is None
    assert sniff_image(tmp_path / "missing") is None
    (tmp_path / "empty").write_bytes(b"")
    assert sniff_image(tmp_path / "empty") is None
    assert sniff_bytes(b"BM and then some words that are not a bitmap") is None
