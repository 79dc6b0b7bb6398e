"""Nothing lost, second pass (issue 22): the real command on real files, real pipes and real
signals. Items 1 and 3 (one gate for every command) are in test_clobber.py; the hostile-input
corpus (test_hostile.py) has a case of each class."""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from test_clobber import FIX, _photo, _refused
from refrestore.discover import find_inputs
from refrestore.fileio import RECORDS
from refrestore.imageio import read_image, save_output


def _env(tmp_path: Path) -> dict[str, str]:
    return dict(os.environ, REFRESTORE_HOME=str(tmp_path / "home"), OMP_NUM_THREADS="1", REFRESTORE_OFFLINE="1")


def _run(args: list[str], tmp_path: Path, **kw: object) -> subprocess.CompletedProcess:
    kw.setdefault("capture_output", True)
    return subprocess.run([sys.executable, "-m", "refrestore", *args], text=True, errors="backslashreplace",
                          env=_env(tmp_path), timeout=120, **kw)  # type: ignore[call-overload]


def _album(folder: Path, n: int) -> list[Path]:
    return [_photo(folder / f"p{i}.png", 20 + i) for i in range(n)]


# ---- item 2: a colour print on a white page ----------------------------------------------------

def test_a_colour_print_scanned_on_a_white_page_stays_colour_and_its_faces_are_found(shared_dir: Path,
                                                                                     tmp_path: Path) -> None:
    from refrestore.detection import DlibDetector
    from refrestore.detection.content import detect_faces

    photo = Image.open(shared_dir / "data" / "real_lq" / "whole" / "codeformer_00.jpg").convert("RGB")
    page = Image.new("RGB", (2480, 3508), (250, 250, 248))
    page.paste(photo.resize((620, 391)), (300, 400))
    page.save(tmp_path / "scan.jpg", quality=92)
    loaded = read_image(tmp_path / "scan.jpg")
    assert not loaded.grayscale and loaded.warnings == []
    detector = DlibDetector()
    faces = detect_faces(detector, loaded.rgb)
    assert len(faces) == len(detector.detect(np.asarray(photo.resize((620, 391))))) >= 3
    for f in faces:  # mapped back onto the page, inside the print
        assert 300 <= f.box[0] < f.box[2] <= 920 and 400 <= f.box[1] < f.box[3] <= 791
        assert np.all((f.landmarks[:, 0] > 300) & (f.landmarks[:, 0] < 920))
    grey = page.convert("L").convert("RGB")  # a grey print on the same page stays grey
    grey.save(tmp_path / "grey.jpg", quality=92)
    assert read_image(tmp_path / "grey.jpg").grayscale


# ---- item 4: special files are written through, never replaced -------------------------------

def test_reports_go_through_pipes_stdout_and_links_and_never_replace_them(tmp_path: Path) -> None:
    a = _photo(tmp_path / "a.png", 1)
    target = tmp_path / "real" / "report.html"
    target.parent.mkdir()
    (tmp_path / "link.html").symlink_to(target)
    read_end, write_end = os.pipe()  # what `--json >(gzip > r.gz)` hands the command
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(os.fdopen(read_end, "rb").read()))
    reader.start()
    proc = subprocess.run([sys.executable, "-m", "refrestore", *FIX, str(a), "-o", str(tmp_path / "o.png"),
                           "--json", f"/dev/fd/{write_end}", "--html", str(tmp_path / "link.html")],
                          capture_output=True, text=True, env=_env(tmp_path), timeout=120, pass_fds=(write_end,))
    os.close(write_end)
    reader.join(30)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(got[0])["images"][0]["status"] == "no_faces"
    assert (tmp_path / "link.html").is_symlink() and "<html" in target.read_text().lower()
    assert (tmp_path / "real" / "report_files").is_dir()  # the images beside the page, not beside the link
    proc = _run([*FIX, str(a), "-o", str(tmp_path / "o2.png"), "--json", "-"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["images"][0]["output"].endswith("o2.png")  # stdout is the report alone
    assert not (tmp_path / "-").exists()


def test_a_fifo_nobody_reads_and_a_linked_images_folder_fail_before_any_work(tmp_path: Path) -> None:
    a = _photo(tmp_path / "a.png", 1)
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "r_files").symlink_to(tmp_path / "elsewhere")
    for flag, path, says in (("--json", tmp_path / "fifo", "nobody reads"),
                             ("--html", tmp_path / "r.html", "symbolic link")):
        proc = _run([*FIX, str(a), "-o", str(tmp_path / "o.png"), flag, str(path)], tmp_path)
        _refused(proc, path if flag == "--json" else tmp_path / "r_files")
        assert says in proc.stderr
        assert not (tmp_path / "o.png").exists()
    assert stat.S_ISFIFO(os.lstat(tmp_path / "fifo").st_mode)


def test_a_device_stays_a_device(tmp_path: Path) -> None:
    """`--json /dev/full`, as root, replaced the system's device. A private copy of /dev/null
    (mknod) takes the report and the photo, and is still a device afterwards."""
    null = tmp_path / "null"
    try:
        os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("mknod needs root here")
    a = _photo(tmp_path / "a.png", 1)
    proc = _run([*FIX, str(a), "-o", str(null), "--json", str(tmp_path / "r.json")], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_ISCHR(os.lstat(null).st_mode)
    assert json.loads((tmp_path / "r.json").read_text())["images"][0]["output"] == str(null)


# ---- item 5: outputs are what they say ---------------------------------------------------------

_RGB = np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8)
_ALPHA = np.random.default_rng(1).integers(0, 255, (24, 32), dtype=np.uint8)


def _source(mode: str) -> Image.Image:
    return {
        "CMYK": lambda: Image.fromarray(_RGB).convert("CMYK"),
        "float": lambda: Image.fromarray(_RGB[..., 0].astype(np.float32) / 255, "F"),
        "palette": lambda: Image.fromarray(_RGB).quantize(16),
        "alpha": lambda: Image.fromarray(np.dstack([_RGB, _ALPHA]), "RGBA"),
        "grey+alpha": lambda: Image.fromarray(np.dstack([_RGB[..., 0], _ALPHA]), "LA"),
    }[mode]()


@pytest.mark.parametrize("fmt,mode", [("TIFF", "CMYK"), ("JPEG", "CMYK"), ("TIFF", "float"), ("TIFF", "16-bit"),
                                      ("PNG", "16-bit"), ("PNG", "palette"), ("TIFF", "palette"), ("PNG", "alpha"),
                                      ("WEBP", "alpha"), ("TIFF", "alpha"), ("PNG", "grey+alpha"),
                                      ("TIFF", "grey+alpha")])
def test_every_output_mode_reads_back(tmp_path: Path, fmt: str, mode: str) -> None:
    """A CMYK or float TIFF came out as files neither Pillow nor OpenCV could open (the source's
    layout tags carried in its EXIF), reported ok. Each output reads back in both, holds the
    pixels, and a mode it could not keep is a warning."""
    ext = {"TIFF": "tif", "PNG": "png", "WEBP": "webp", "JPEG": "jpg"}[fmt]
    src = tmp_path / f"in.{ext}"
    if mode == "16-bit":
        cv2.imwrite(str(src), _RGB.astype(np.uint16) * 257)
    else:
        _source(mode).save(src, fmt)
    loaded = read_image(src)
    out = tmp_path / f"out.{ext}"
    save_output(out, loaded.rgb, loaded)
    with Image.open(out) as im:
        im.load()
        back = np.asarray(im.convert("RGB")).astype(int)
        kept = im.mode
    assert cv2.imread(str(out), cv2.IMREAD_UNCHANGED) is not None
    tolerance = 12 if fmt in ("JPEG", "WEBP") else 1
    flat = np.asarray(Image.fromarray(loaded.rgb).convert("L" if loaded.grayscale else "RGB").convert("RGB")).astype(int)
    assert np.abs(back - flat).mean() <= tolerance  # the pixels, not a relabelled buffer
    source_mode = Image.open(src).mode
    if kept != source_mode:
        assert loaded.warnings, (source_mode, kept)  # converted, and said so


def _with_metadata(path: Path, fmt: str) -> dict[str, object]:
    from refrestore.imagemeta import _app13

    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-'
           b'ns#"><rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>grandma 1952</dc:title>'
           b'</rdf:Description></rdf:RDF></x:xmpmeta>')
    iptc = b"\x1c\x02\x00\x00\x02\x00\x04\x1c\x02\x78\x00\x0cGrandma 1952"
    im = Image.fromarray(_RGB)
    if fmt == "JPEG":
        im.save(path, "JPEG", xmp=xmp, comment=b"scanned by Ann", extra=_app13(iptc), quality=90)
        return {"xmp": xmp, "comment": b"scanned by Ann", "iptc": iptc}
    if fmt == "PNG":
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        info.add_text("Title", "Grandma 1952")
        info.add_itxt("Description", "Großmutter, Sommer")
        info.add_itxt("XML:com.adobe.xmp", xmp.decode())
        im.save(path, "PNG", pnginfo=info)
        return {"xmp": xmp, "text": {"Title": "Grandma 1952", "Description": "Großmutter, Sommer"}}
    if fmt == "WEBP":
        im.save(path, "WEBP", xmp=xmp)
        return {"xmp": xmp}
    from PIL.TiffImagePlugin import ImageFileDirectory_v2

    ifd = ImageFileDirectory_v2()
    ifd[700], ifd.tagtype[700] = xmp, 1
    ifd[33723], ifd.tagtype[33723] = iptc, 7
    im.save(path, "TIFF", tiffinfo=ifd)
    return {"xmp": xmp, "iptc": iptc}


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
def test_xmp_iptc_comments_and_png_text_are_kept(tmp_path: Path, fmt: str) -> None:
    from refrestore.imagemeta import read_metadata

    ext = {"TIFF": "tif", "PNG": "png", "WEBP": "webp", "JPEG": "jpg"}[fmt]
    want = _with_metadata(tmp_path / f"in.{ext}", fmt)
    loaded = read_image(tmp_path / f"in.{ext}")
    changed = loaded.rgb.copy()
    changed[0, 0] ^= 1  # a restored photo: encoded, not copied
    save_output(tmp_path / f"out.{ext}", changed, loaded)
    with Image.open(tmp_path / f"out.{ext}") as im:
        im.load()
        meta = read_metadata(im)
        text = dict(getattr(im, "text", {}))
    assert meta.xmp == want["xmp"]
    assert meta.iptc == want.get("iptc") and meta.comment == want.get("comment")
    for key, value in dict(want.get("text", {})).items():  # type: ignore[call-overload]
        assert text[key] == value


def test_a_private_photos_outputs_crops_and_reports_stay_private(shared_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "private.jpg"
    src.write_bytes((shared_dir / "data" / "real_lq" / "whole" / "codeformer_00.jpg").read_bytes())
    src.chmod(0o600)
    old = os.umask(0o022)
    try:
        proc = _run([*FIX, str(src), "-o", str(tmp_path / "out" / "p.jpg"), "--save-faces", "--compare",
                     "--json", str(tmp_path / "out" / "r.json"), "--html", str(tmp_path / "out" / "r.html")], tmp_path)
    finally:
        os.umask(old)
    assert proc.returncode == 0, proc.stderr
    written = [p for p in (tmp_path / "out").rglob("*") if p.is_file() and RECORDS not in p.parts]
    assert len([p for p in written if p.parent.name == "p_faces"]) >= 3
    assert any("_compare_face" in p.name for p in written)
    for p in written:  # 0644 before; the report's images are inside a folder only the owner can open
        assert stat.S_IMODE(p.stat().st_mode) & 0o077 == 0 or p.parent.name == "r_files", p
    assert stat.S_IMODE((tmp_path / "out" / "r_files").stat().st_mode) & 0o077 == 0


# ---- item 6: name clashes, and "done" only for the same input ---------------------------------

def test_name_clashes_get_distinct_stable_names_and_done_means_from_this_input(tmp_path: Path) -> None:
    album, other = tmp_path / "album", tmp_path / "other"
    _photo(album / "a.jpg", 1)
    _photo(album / "b.gif", 2)
    _photo(other / "a.jpg", 3)
    kept = (album / "a.jpg").read_bytes()
    (album / "a.JPG").write_bytes(_photo(tmp_path / "tmp" / "x.jpg", 4).read_bytes())
    out = tmp_path / "out"
    proc = _run([*FIX, str(album), str(other), "-o", str(out), "--json", str(tmp_path / "r.json")], tmp_path)
    assert proc.returncode == 0, proc.stderr
    images = {i["input"]: i for i in json.loads((tmp_path / "r.json").read_text())["images"]}
    outputs = {i["output"] for i in images.values()}
    assert len(outputs) == len(images) == 4
    assert images[str(album / "a.JPG")]["output"] == str(out / "album" / "a_JPG_restored.jpg")
    assert images[str(album / "a.jpg")]["output"] == str(out / "album" / "a_restored.jpg")
    assert images[str(other / "a.jpg")]["output"] == str(out / "other" / "a_restored.jpg")
    assert images[str(album / "b.gif")]["output"] == str(out / "album" / "b_restored.png")
    assert any("same output name" in w for w in images[str(album / "a.JPG")]["warnings"])
    assert (album / "a.jpg").read_bytes() == kept
    # now a b.png arrives: b_restored.png came from b.gif, which is no reason to skip b.png;
    # b.gif moves to a name of its own
    _photo(album / "b.png", 5)
    proc = _run([*FIX, str(album), "-o", str(out / "album"), "--json", str(tmp_path / "r2.json")], tmp_path)
    assert proc.returncode == 0, proc.stderr
    images = {Path(i["input"]).name: i for i in json.loads((tmp_path / "r2.json").read_text())["images"]}
    assert images["b.png"]["status"] != "skipped" and images["b.gif"]["status"] != "skipped"
    assert (out / "album" / "b_restored.png").read_bytes() == (album / "b.png").read_bytes()  # b.png's own bytes
    assert images["b.gif"]["output"] == str(out / "album" / "b_gif_restored.png")
    proc = _run([*FIX, str(album), "-o", str(out / "album"), "--json", str(tmp_path / "r3.json")], tmp_path)
    assert {i["status"] for i in json.loads((tmp_path / "r3.json").read_text())["images"]} == {"skipped"}


# ---- item 7: the terminal is not a data channel ------------------------------------------------

def _album_run(tmp_path: Path, tag: str) -> list[str]:
    return [sys.executable, "-m", "refrestore", *FIX, str(tmp_path / "album"), "-o", str(tmp_path / f"out_{tag}"),
            "--json", str(tmp_path / f"r_{tag}.json")]


def _all_done(tmp_path: Path, tag: str) -> None:
    images = json.loads((tmp_path / f"r_{tag}.json").read_text())["images"]
    assert len(images) == 5 and all(Path(i["output"]).is_file() for i in images), tag


def test_a_broken_or_full_stdout_or_a_closed_stderr_stops_the_messages_not_the_work(tmp_path: Path) -> None:
    _album(tmp_path / "album", 5)
    env = _env(tmp_path)
    head = subprocess.Popen(["head", "-1"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    proc = subprocess.run(_album_run(tmp_path, "head"), stdout=head.stdin, stderr=subprocess.PIPE, env=env,
                          timeout=120)
    head.stdin.close()
    head.wait()
    assert proc.returncode == 0 and b"Traceback" not in proc.stderr, proc.stderr
    _all_done(tmp_path, "head")
    with open("/dev/full", "w") as full:
        proc = subprocess.run(_album_run(tmp_path, "full"), stdout=full, stderr=subprocess.PIPE, env=env, timeout=120)
    assert proc.returncode == 0 and b"Traceback" not in proc.stderr, proc.stderr
    _all_done(tmp_path, "full")
    proc = subprocess.run(["sh", "-c", 'exec "$@" 2>&-', "sh", *_album_run(tmp_path, "closed")],
                          stdout=subprocess.PIPE, env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout
    _all_done(tmp_path, "closed")


def test_names_are_printed_escaped(tmp_path: Path) -> None:
    album = tmp_path / "album"
    _photo(album / "ok.png", 1)
    (album / "evil\x1b[2J\nname.jpg").write_bytes(b"")  # an empty file: its error names it
    proc = _run([*FIX, str(album), "-o", str(tmp_path / "out")], tmp_path)
    assert proc.returncode == 1
    said = proc.stdout + proc.stderr
    assert "\x1b" not in said and "evil\\x1b[2J\\nname.jpg" in said
    assert not [ln for ln in said.splitlines() if ln.startswith("name.jpg")]  # no line begun by the name


# ---- item 8: the same command twice works twice ----------------------------------------------

def test_rerunning_with_reports_and_outputs_inside_the_album_works(tmp_path: Path) -> None:
    album = tmp_path / "album"
    _album(album, 2)
    args = [*FIX, str(album), "-r", "-o", str(album / "restored"), "--json", str(album / "report.json"),
            "--html", str(album / "report.html")]
    first = _run(args, tmp_path)
    assert first.returncode == 0, first.stderr
    assert (album / "report_files").is_dir()
    second = _run(args, tmp_path)
    assert second.returncode == 0, second.stderr
    images = json.loads((album / "report.json").read_text())["images"]
    assert sorted(Path(i["input"]).name for i in images) == ["p0.png", "p1.png"]
    assert {i["status"] for i in images} == {"skipped"}
    # an output written beside its input is never an input of a later run either
    assert _run([*FIX, str(album / "p0.png")], tmp_path).returncode == 0
    assert (album / "p0_restored.png").is_file()
    found, _ = find_inputs([album], recursive=True)
    assert sorted(f.path.name for f in found) == ["p0.png", "p1.png"]


def test_an_output_format_we_do_not_write_is_a_usage_error_before_any_work(tmp_path: Path) -> None:
    a = _photo(tmp_path / "a.png", 1)
    proc = _run([*FIX, str(a), "-o", str(tmp_path / "out.gif")], tmp_path)
    _refused(proc, tmp_path / "out.gif")
    assert "cannot write .gif" in proc.stderr and not (tmp_path / "out.gif").exists()


def test_offline_refuses_a_remote_input_without_touching_the_network(tmp_path: Path) -> None:
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    listener.settimeout(0.2)
    env = dict(_env(tmp_path), AWS_ENDPOINT_URL=f"http://127.0.0.1:{listener.getsockname()[1]}",
               AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x", AWS_EC2_METADATA_DISABLED="true")
    proc = subprocess.run([sys.executable, "-m", "refrestore", *FIX, "s3://bucket/album/a.jpg", "--engine", "ray",
                           "--offline", "-o", str(tmp_path / "out")], capture_output=True, text=True, env=env,
                          timeout=120)
    try:
        conn, _ = listener.accept()
        conn.close()
        touched = True
    except socket.timeout:
        touched = False
    listener.close()
    _refused(proc, "s3://bucket/album/a.jpg")
    assert "offline" in proc.stderr and not touched


def test_a_sigterm_just_after_the_album_finished_never_kills_it_silently(tmp_path: Path, watch) -> None:
    """Python restores the default SIGTERM while it tears down: a SIGTERM then was exit 143
    with no word. It finishes cleanly now (0), or says it was interrupted (130)."""
    a = _photo(tmp_path / "a.png", 1)
    proc = subprocess.Popen([sys.executable, "-m", "refrestore", *FIX, str(a), "-o", str(tmp_path / "o.png"),
                             "--json", str(tmp_path / "r.json")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_env(tmp_path))
    lines = watch(proc.stdout, "stdout")
    lines.wait_for("done 0, skipped 0, no faces 1", timeout=120)  # the summary: the album has finished
    while proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.005)
    err = proc.stderr.read()
    assert proc.returncode in (0, 130), (proc.returncode, err)
    assert proc.returncode == 0 or "interrupted" in err
    assert json.loads((tmp_path / "r.json").read_text())["images"][0]["status"] == "no_faces"


# ---- item 9: the machine's limits are one line -------------------------------------------------

def test_a_folder_tree_600_levels_deep_is_walked_and_its_depths_reported(tmp_path: Path) -> None:
    album = tmp_path / "album"
    _photo(album / "top.png", 1)
    deep = album
    for _ in range(600):
        deep = deep / "d"
    deep.mkdir(parents=True)
    _photo(deep / "bottom.png", 2)
    proc = _run([*FIX, str(album), "-r", "-o", str(tmp_path / "out"), "--json", str(tmp_path / "r.json")], tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    images = json.loads((tmp_path / "r.json").read_text())["images"]
    assert [i["status"] for i in images if i["input"].endswith("top.png")] == ["no_faces"]
    errors = [i["error"] for i in images if i["status"] == "error"]
    assert len(errors) == 1 and "folders deep" in errors[0]


def test_a_memory_limit_on_the_torch_import_is_one_line(tmp_path: Path) -> None:
    a = _photo(tmp_path / "a.png", 1)
    proc = subprocess.run(["sh", "-c", 'ulimit -v 1500000 && exec "$@"', "sh", sys.executable, "-m", "refrestore",
                           *FIX, str(a), "-o", str(tmp_path / "o.png")], capture_output=True, text=True,
                          env=_env(tmp_path), timeout=120)
    if proc.returncode == 0:
        pytest.skip("torch imports under a 1.5 GB address-space limit here")
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 1 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "memory" in lines[0]


def test_a_second_run_writing_the_same_html_page_is_refused_up_front(tmp_path: Path, watch) -> None:
    _album(tmp_path / "album", 3)
    page = tmp_path / "r.html"
    first = subprocess.Popen([sys.executable, "-m", "refrestore", *FIX, str(tmp_path / "album"), "-o",
                              str(tmp_path / "o1"), "--html", str(page)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=_env(tmp_path))
    watch(first.stdout, "first").wait_for("p0.png", timeout=120)
    first.send_signal(signal.SIGSTOP)  # the first run holds the page, mid-album
    try:
        second = _run([*FIX, str(tmp_path / "album"), "-o", str(tmp_path / "o2"), "--html", str(page)], tmp_path)
    finally:
        first.send_signal(signal.SIGCONT)
    _refused(second, page)
    assert "another refrestore run" in second.stderr and not (tmp_path / "o2").exists()
    assert first.wait(120) == 0, first.stderr.read()
    assert "p2.png" in page.read_text()
