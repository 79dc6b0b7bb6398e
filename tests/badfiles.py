"""Builds a folder of deliberately broken and odd image files, for batch tests (issue 6).

Every file is generated here at test time from real photos passed in by the caller (nothing
is stored in the repository). ``make_bad_corpus`` returns, for each file that must become an
input of a batch, the status a correct run reports for it. Files it writes that are absent
from the mapping (a hidden photo, a stale temporary file, notes.txt) must NOT be inputs.
"""
from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

# A region of ../shared/data/real_lq/whole/gfpgan_00.jpg with legs, a bench and grass but
# no face: a real photo for the "no_faces" status.
GFPGAN_00_NO_FACE_BOX = (0, 1150, 1297, 1920)

BOMB_SIDE = 20_000  # 400 MP declared, twice the default limit; the file is ~50 KB


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png_bomb(path: Path, side: int = BOMB_SIDE) -> None:
    """A valid 1-bit PNG of side x side black pixels: tiny on disk, huge once decoded."""
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(9)
    block = row * 256
    parts = []
    for _ in range(side // 256):
        parts.append(comp.compress(block))
    parts.append(comp.compress(row * (side % 256)))
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", b"".join(parts))
        + _png_chunk(b"IEND", b"")
    )


def _jpeg_bytes(im: Image.Image, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90, **kw)
    return buf.getvalue()


def _with_app1(jpeg: bytes, payload: bytes) -> bytes:
    """Insert an APP1 segment with ``payload`` right after SOI."""
    seg = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return jpeg[:2] + seg + jpeg[2:]


def make_bad_corpus(
    folder: Path,
    real_photos: list[Path],
    *,
    no_face_crop: tuple[Path, tuple[int, int, int, int]] | None = None,
    subfolders: bool = True,
) -> dict[str, str]:
    """Write the odd files into ``folder``; return {relative posix path: expected status}.

    ``real_photos``: whole photos with clearly detectable faces (at least one; they are
    reused in turn), e.g. ../shared/data/real_lq/whole/*. Statuses are "ok", "no_faces" or
    "error". ``no_face_crop`` (photo, box) adds a real crop without faces ("no_faces"), e.g.
    (whole/gfpgan_00.jpg, GFPGAN_00_NO_FACE_BOX). ``subfolders`` puts two files in a
    sub-folder whose name has spaces and accents (inputs only with --recursive).
    """
    if not real_photos:
        raise ValueError("make_bad_corpus needs at least one real photo")
    folder.mkdir(parents=True, exist_ok=True)
    photos = [Image.open(p) for p in real_photos]
    for p in photos:
        p.load()
    rgb = [p.convert("RGB") for p in photos]

    def photo(i: int) -> Image.Image:
        return rgb[i % len(rgb)]

    def src_bytes(i: int) -> bytes:
        return Path(real_photos[i % len(real_photos)]).read_bytes()

    expected: dict[str, str] = {}

    def put(name: str, data: bytes, status: str) -> None:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
        expected[name] = status

    # --- errors -------------------------------------------------------------------------
    put("empty.jpg", b"", "error")
    jpeg = _jpeg_bytes(photo(0))
    put("truncated.jpg", jpeg[: len(jpeg) // 2], "error")
    png = io.BytesIO()
    photo(1).save(png, "PNG")
    put("truncated.png", png.getvalue()[: len(png.getvalue()) * 2 // 3], "error")
    put("readme.jpg", b"These are the photos from grandma's album.\nAsk Tom for the rest.\n", "error")
    put(
        "download.jpg",
        b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>"
        b"<body><h1>Not Found</h1></body></html>\n",
        "error",
    )
    tiny = io.BytesIO()
    Image.new("RGB", (1, 1), (128, 100, 90)).save(tiny, "PNG")
    put("pixel_1x1.png", tiny.getvalue(), "error")
    strip = io.BytesIO()
    Image.new("L", (100_000, 10), 200).save(strip, "PNG")
    put("strip_100000x10.png", strip.getvalue(), "error")
    write_png_bomb(folder / "bomb.png")
    expected["bomb.png"] = "error"

    # --- odd but usable -----------------------------------------------------------------
    base = photo(0)
    frames = [base] + [photo(i).resize(base.size) for i in (1, 2)]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=500, loop=0)
    put("animated.gif", gif.getvalue(), "ok")

    tif = io.BytesIO()
    pages = [photo(1), photo(2).resize(photo(1).size)]
    pages[0].save(tif, "TIFF", save_all=True, append_images=pages[1:], compression="tiff_lzw")
    put("multipage.tif", tif.getvalue(), "ok")

    put("cmyk.jpg", _jpeg_bytes(photo(2).convert("CMYK")), "ok")

    ok16, png16 = cv2.imencode(".png", np.asarray(photo(3))[:, :, ::-1].astype(np.uint16) * 257)
    assert ok16
    put("sixteen_bit.png", png16.tobytes(), "ok")

    # Stored sideways with Orientation 6: upright only once EXIF orientation is applied.
    exif = Image.Exif()
    exif[0x0112] = 6
    put("rotated_exif6.jpg", _jpeg_bytes(photo(0).transpose(Image.Transpose.ROTATE_90), exif=exif.tobytes()), "ok")
    bad_orient = Image.Exif()
    bad_orient[0x0112] = 9  # no such orientation
    put("orientation_9.jpg", _jpeg_bytes(photo(1), exif=bad_orient.tobytes()), "ok")
    rng = np.random.default_rng(7)
    junk = b"Exif\x00\x00MM\x00*" + rng.integers(0, 256, 300, dtype=np.uint8).tobytes()
    put("garbage_exif.jpg", _with_app1(_jpeg_bytes(photo(2)), junk), "ok")

    grey = io.BytesIO()
    photo(3).convert("L").save(grey, "JPEG", quality=90)
    put("grey.jpg", grey.getvalue(), "ok")
    pal = io.BytesIO()
    photo(0).convert("P", palette=Image.Palette.ADAPTIVE).save(pal, "PNG")
    put("palette.png", pal.getvalue(), "ok")
    rgba = photo(1).convert("RGBA")
    alpha = Image.new("L", rgba.size, 255)
    alpha.paste(0, (0, 0, rgba.size[0] // 8, rgba.size[1] // 8))  # a transparent corner
    rgba.putalpha(alpha)
    rgba_buf = io.BytesIO()
    rgba.save(rgba_buf, "PNG")
    put("transparent_corner.png", rgba_buf.getvalue(), "ok")
    webp = io.BytesIO()
    photo(2).save(webp, "WEBP", quality=90)
    put("photo.webp", webp.getvalue(), "ok")
    bmp = io.BytesIO()
    photo(3).save(bmp, "BMP")
    put("photo.bmp", bmp.getvalue(), "ok")
    put("UPPER CASE.JPG", src_bytes(0), "ok")
    put("scan_0001", src_bytes(1), "ok")  # no extension: found by its content
    put("Grand-mère été 1962 (copie).jpg", _jpeg_bytes(photo(2)), "ok")
    put("家族写真.jpg", _jpeg_bytes(photo(3)), "ok")
    png_as_jpg = io.BytesIO()
    photo(4).save(png_as_jpg, "PNG")
    put("really_a_png.jpg", png_as_jpg.getvalue(), "ok")  # wrong extension: content decides

    if no_face_crop is not None:
        src, box = no_face_crop
        with Image.open(src) as im:
            crop = im.convert("RGB").crop(box)
        put("no_face_crop.jpg", _jpeg_bytes(crop), "no_faces")

    if subfolders:
        put("été 2019/Photo de classe.jpg", src_bytes(1), "ok")
        put("été 2019/broken.png", png.getvalue()[:200], "error")

    # --- never inputs -------------------------------------------------------------------
    (folder / ".hidden.jpg").write_bytes(src_bytes(0))
    (folder / ".refrestore-tmp-999999-deadbeef.jpg").write_bytes(jpeg[:1000])  # a stale temp file
    (folder / "notes.txt").write_text("scanned at 600 dpi\n", encoding="utf-8")
    (folder / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0" + bytes(60))
    return expected


def make_symlink_loop(folder: Path) -> Path:
    """Add ``folder/loop/back`` pointing at ``folder`` (a real loop for --recursive walks)."""
    (folder / "loop").mkdir(exist_ok=True)
    link = folder / "loop" / "back"
    os.symlink(os.path.relpath(folder, link.parent), link, target_is_directory=True)
    return link
