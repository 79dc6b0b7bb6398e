"""Decoding: anything a user may point us at becomes an upright 8-bit RGB ``LoadedImage``, or
an ``ImageReadError`` with one line that says what is wrong."""
from __future__ import annotations

import errno
import logging
import os
import re
import stat
from pathlib import Path
from struct import error as struct_error
from typing import IO

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from refrestore.discover import sniff_bytes
from refrestore.imagemeta import read_metadata

from .colour import _is_16bit_source, _near_grey, _to_array, _to_rgb, _to_rgb_array
from .formats import _READ_FORMATS
from .limits import (
    _check_geometry,
    _exif_warned,
    _limit_text,
    _mp,
    _pil_pixel_limit,
    check_output_size,
    max_pixels_from_env,
)
from .loaded import ImageReadError, LoadedImage, SourceStamp
from .metadata import _TRANSPOSE, _clean_dpi, _jpeg_encoding, _read_exif

log = logging.getLogger(__name__)


def _describe_non_image(head: bytes) -> str:
    """A guess at what a file that is not an image is, for the error message."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in text:
        return "not an image (looks like HTML)"
    if text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in text):
        return "not a supported image (SVG vector graphics)"
    if text.startswith(b"<?xml"):
        return "not an image (looks like XML)"
    if head.startswith(b"%PDF"):
        return "not an image (looks like a PDF)"
    if head.startswith(b"PK\x03\x04"):
        return "not an image (looks like a ZIP archive)"
    if text.startswith((b"{", b"[")):
        return "not an image (looks like JSON)"
    try:
        decoded = head.decode("utf-8")
    except UnicodeDecodeError:
        decoded = None
    if decoded is not None and all(c.isprintable() or c in "\r\n\t" for c in decoded):
        return "not an image (looks like text)"
    return "not an image (unrecognised data)"


def _oserror_text(err: OSError) -> str:
    if err.errno == errno.EACCES or isinstance(err, PermissionError):
        return "permission denied"
    if err.errno == errno.EISDIR:
        return "is a folder, not a file"
    if err.errno == errno.ENOENT:
        return "no such file"
    return (err.strerror or str(err)).lower()


def image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the header alone, or None when it cannot be read (reading the
    image will say why)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        with open(path, "rb") as f:
            if sniff_bytes(f.read(32)) is None:
                return None
            f.seek(0)
            im, _ = _open(f, 2**62)
            with im:
                return im.size
    except Exception:  # noqa: BLE001 - any unreadable header is read_image's to report
        return None


def _open(f: IO[bytes], limit: int) -> tuple[Image.Image, bool]:
    """(image with only its header read, whether Pillow found its EXIF corrupt)."""
    Image.init()  # registers every plugin once; Image.open(formats=...) needs them loaded
    formats = [name for name in _READ_FORMATS if name in Image.OPEN]
    with _pil_pixel_limit(limit) as caught:
        im = Image.open(f, formats=formats)
    return im, _exif_warned(caught)


def read_image(path: Path, max_pixels: int | None = None, upscale: int = 1) -> LoadedImage:
    """Decode ``path`` into an upright 8-bit RGB ``LoadedImage``.

    Raises ``ImageReadError`` (one line) for anything unusable: missing, empty, truncated or
    non-image files, images under ``MIN_SIDE`` or beyond ``MAX_ASPECT_RATIO``, and images over
    ``max_pixels`` (default: ``REFRESTORE_MAX_PIXELS`` or ``DEFAULT_MAX_PIXELS``), which are
    refused from their header before any pixel is decoded. Recoverable oddities (animation,
    16 bits, CMYK, bad EXIF) become ``warnings`` on the result. With ``upscale``, an image
    whose output would pass the same limit is refused from its header too.
    """
    path = Path(path)
    limit = max_pixels if max_pixels is not None else max_pixels_from_env()
    kind: str | None = None
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise ImageReadError("is a folder, not a file")
        if not stat.S_ISREG(st.st_mode):  # a FIFO would block the read forever
            raise ImageReadError("not a regular file")
        with open(path, "rb") as f:
            head = f.read(512)
            if not head:
                raise ImageReadError("empty file (0 bytes)")
            kind = sniff_bytes(head[:32])
            if kind is None:
                raise ImageReadError(_describe_non_image(head))
            if kind == "HEIC":
                raise ImageReadError("HEIC/HEIF images are not supported (no HEIF decoder installed)")
            if kind == "AVIF" and "AVIF" not in _READ_FORMATS:
                raise ImageReadError("AVIF images are not supported by this Pillow build")
            f.seek(0)
            return _decode(path, f, limit, upscale)
    except ImageReadError:
        raise
    except Image.DecompressionBombError as err:
        # Pillow's own check (in open, or on a later GIF frame): same wording as ours
        found = re.search(r"\((\d+) pixels\)", str(err))
        size = _mp(int(found.group(1))) if found else "image"
        raise ImageReadError(
            f"image too large: {size} exceeds the {_limit_text(limit)} limit (raise it with --max-pixels)"
        ) from err
    except UnidentifiedImageError as err:
        raise ImageReadError("not a readable image (unknown or corrupt header)") from err
    except MemoryError as err:
        raise ImageReadError("not enough memory to decode this image") from err
    except OSError as err:
        msg = str(err)
        if "truncated" in msg or "broken data stream" in msg or "premature end" in msg.lower():
            raise ImageReadError(f"truncated {kind} file (incomplete data)") from err
        if err.errno is not None:
            raise ImageReadError(_oserror_text(err)) from err
        raise ImageReadError(f"corrupt {kind or 'image'} data: {msg}".splitlines()[0]) from err
    except (ValueError, SyntaxError, EOFError, IndexError, TypeError, KeyError, struct_error) as err:
        # Pillow plugins signal malformed headers with a zoo of exception types.
        raise ImageReadError(f"corrupt {kind or 'image'} data: {err}".splitlines()[0]) from err


def _decode(path: Path, f: IO[bytes], limit: int, upscale: int = 1) -> LoadedImage:
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Some other code in this process asked Pillow to pad truncated files silently;
        # we cannot undo that per call, so at least say so.
        log.warning("Pillow's LOAD_TRUNCATED_IMAGES is on: truncated files may not be detected")
    warn: list[str] = []
    stamp = SourceStamp.of(os.fstat(f.fileno()))  # now: some plugins close the file once decoded
    im, exif_corrupt = _open(f, limit)
    with im:
        fmt = im.format or "unknown"
        width, height = im.size
        _check_geometry(width, height, limit)
        check_output_size(width, height, upscale, limit)
        if fmt in ("JPEG", "MPO"):
            _check_jpeg_size(f, width, height)
        n_frames = getattr(im, "n_frames", 1) if fmt != "MPO" else 1  # MPO: 2nd is a preview
        if n_frames > 1:
            what = "animated GIF" if fmt == "GIF" else f"multi-page {fmt}" if fmt == "TIFF" else fmt
            warn.append(f"{what}: using the first of {n_frames} frames")
            im.seek(0)
        src_mode = im.mode
        deep = _is_16bit_source(im)
        icc = im.info.get("icc_profile") or None
        dpi = im.info.get("dpi")
        orientation, exif = _read_exif(im, limit, warn, exif_corrupt)
        jpeg = _jpeg_encoding(im) if fmt in ("JPEG", "MPO") else None
        im.load()
        meta = read_metadata(im)
        if fmt in ("JPEG", "MPO"):
            _warn_truncated_jpeg(im, f, warn)
        rgb, alpha, grey_source = _to_rgb(im, src_mode, icc, warn)
        grey = grey_source or _near_grey(rgb)
        if grey and not grey_source:
            warn.append("no real colour found: treated as a greyscale photo (written grey)")
        if orientation != 1:
            # Transposed copies now, arrays after the source is closed: at most two
            # full-size copies alive at once (a rotated 50 MP JPEG peaks near 450 MB).
            upright = rgb.transpose(_TRANSPOSE[orientation])
            upright_alpha = alpha.transpose(_TRANSPOSE[orientation]) if alpha is not None else None
        else:
            upright, upright_alpha = rgb, alpha
        del rgb, alpha
        if orientation == 1:  # ``upright`` may be ``im`` itself: copy out before it closes
            rgb_arr = _to_rgb_array(upright)
            alpha_arr = _to_array(upright_alpha) if upright_alpha is not None else None
            del upright, upright_alpha
    im.close()  # leaving ``with`` only closes the file; this frees the decoded pixels
    del im
    if orientation != 1:
        rgb_arr = _to_rgb_array(upright)
        alpha_arr = _to_array(upright_alpha) if upright_alpha is not None else None
        del upright, upright_alpha
    if alpha_arr is not None and alpha_arr.min() == 255:
        alpha_arr = None  # fully opaque: nothing to keep
    if deep:
        bits = "32" if src_mode in ("I", "F") else "16"
        warn.append(f"{bits}-bit image processed and written as 8-bit")
    if icc is not None and src_mode == "CMYK":
        icc = None  # the pixels are sRGB now; a CMYK profile would describe them wrongly
    dpi_t = _clean_dpi(dpi, swap=orientation in (5, 6, 7, 8))
    for w in warn:
        log.info("%s: %s", path, w)
    return LoadedImage(
        path=path, rgb=rgb_arr, alpha=alpha_arr, grayscale=grey, bit_depth=16 if deep else 8,
        format=fmt, mode=src_mode, icc_profile=icc, exif=exif, warnings=warn, dpi=dpi_t,
        orientation=orientation, jpeg=jpeg, source=stamp, meta=meta,
    )


def _check_jpeg_size(f: IO[bytes], width: int, height: int) -> None:
    """A 12 KB file whose header claims 14000x14000 is forged or broken: refused unread."""
    from refrestore.jpegscan import implausibly_small

    size = os.fstat(f.fileno()).st_size
    if implausibly_small(size, width, height):
        raise ImageReadError(f"corrupt JPEG: {size} bytes cannot hold the {width}x{height} pixels its header declares")


def _warn_truncated_jpeg(im: Image.Image, f: IO[bytes], warn: list[str]) -> None:
    """Pillow decodes a cut JPEG silently (grey or blurred where data is missing): say so."""
    from refrestore.jpegscan import grey_rows_at_bottom, progressive_scans_missing

    if im.info.get("progressive") or im.info.get("progression"):
        f.seek(0)
        if progressive_scans_missing(f.read()):
            warn.append("truncated JPEG: its last scans are missing (decoded blurred)")
        return
    if im.mode not in ("RGB", "L"):
        return
    w, h = im.size
    # Cheap test first (the bottom 16 rows); the whole band is measured only for broken files.
    if not np.all(np.asarray(im.crop((0, max(0, h - 16), w, h))) == 128):
        return
    rows = grey_rows_at_bottom(np.asarray(im))
    if rows >= 8:
        warn.append(f"truncated JPEG: the bottom {100 * rows // h}% is missing (decoded as grey)")
