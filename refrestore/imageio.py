"""Reading photos safely and writing results atomically.

``read_image`` turns anything a user may point us at into an upright 8-bit RGB array plus
what is needed to write a faithful output (alpha, greyscale-ness, ICC profile, EXIF), or
raises ``ImageReadError`` with one line that says what is wrong. ``save_image`` writes through
a temporary file in the destination folder and renames it into place, so an output is
either complete or absent.

Limits (documented for users in the README):

- ``DEFAULT_MAX_PIXELS`` (200 MP): larger images are refused before anything is decoded,
  which is what stops decompression bombs. Override with ``REFRESTORE_MAX_PIXELS`` or the
  ``max_pixels`` argument (the CLI's ``--max-pixels``).
- ``MIN_SIDE`` (16 px): nothing smaller can hold a face worth restoring.
- ``MAX_ASPECT_RATIO`` (100:1): narrower strips are not photos (and break tiling maths).
"""
from __future__ import annotations

import errno
import io
import logging
import os
import re
import shutil
import stat
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from struct import error as struct_error
from typing import IO, Any

import numpy as np
from PIL import Image, ImageCms, ImageFile, UnidentifiedImageError, features

from refrestore.discover import sniff_bytes
from refrestore.imagemeta import LAYOUT_TAGS, METADATA_PARAMS, Metadata, metadata_params, read_metadata
from refrestore.paper import content_mask
from refrestore.fileio import Source, stream_fd, write_atomic

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 200_000_000
ENV_MAX_PIXELS = "REFRESTORE_MAX_PIXELS"
MIN_SIDE = 16
MAX_ASPECT_RATIO = 100

# Near-grey test, on a copy at most GREY_PROBE_SIDE px wide, with per-pixel chroma
# max(R,G,B) - min(R,G,B). Measured on ../shared/data/real_lq: true greyscale scans have
# mean 0-0.05; a grey print with a faint scanner cast (gray_faces John Lennon) mean 5.7,
# p99 13; a grey photo with a real colour strip at its edge (Zac Efron) mean 7.9, p99 44;
# hand-tinted/sepia and colour photos have mean >= 20. The p99 bound keeps any genuinely
# coloured region from being thrown away.
GREY_PROBE_SIDE = 256
GREY_MAX_MEAN_CHROMA = 8.0
GREY_MAX_P99_CHROMA = 24.0
# Paper and a scanner's lid are not content (``paper.content_mask``).
# Content this many probe pixels or more is judged alone, however much paper is around it: a
# 620x391 print on an A4 scan at 300 dpi is 2% of the page (about 900 probe pixels).
MIN_CONTENT_PIXELS = 64

# Formats Pillow may open for us; restricting the plugins keeps odd decoders (EPS runs
# Ghostscript) out of reach of a file that merely claims to be something else.
_READ_FORMATS = ["JPEG", "MPO", "PNG", "GIF", "WEBP", "TIFF", "BMP", "DIB", "JPEG2000"]
if features.check("avif"):
    _READ_FORMATS.append("AVIF")

_WRITE_FORMATS: dict[str, str] = {
    ".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG", ".jfif": "JPEG",
    ".png": "PNG", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP",
}
if features.check("avif"):
    _WRITE_FORMATS[".avif"] = "AVIF"
_ALPHA_FORMATS = {"PNG", "WEBP", "TIFF", "AVIF"}
_META_FORMATS = {"JPEG", "PNG", "WEBP", "TIFF", "AVIF"}  # those that carry ICC and EXIF
_OUTPUT_EXT = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "WEBP": ".webp", "TIFF": ".tif",
               "BMP": ".bmp", "DIB": ".bmp", "AVIF": ".avif"}

_ORIENTATION_TAG = 0x0112
_ORIENTATIONS = range(1, 9)  # EXIF 1 (upright) to 8
_TRANSPOSE = {  # what a viewer does to show each EXIF orientation upright
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

# Pillow's own bomb check reads the module-global Image.MAX_IMAGE_PIXELS inside
# Image.open; we point it at our limit for the (header-only) open and serialise that.
_PIL_LIMIT_LOCK = threading.Lock()


class ImageReadError(Exception):
    """An input cannot be used; the message is one line for the user."""


class ImageWriteError(Exception):
    """An output cannot be written; the message is one line for the user.

    ``stops_run``: the disk is full or the output folder cannot be written, so every later
    image would fail too; anything else (a folder where the file goes, a name too long, an
    image the format cannot hold) is that image's error only.
    """

    def __init__(self, message: str, stops_run: bool = False) -> None:
        super().__init__(message)
        self.stops_run = stops_run


@dataclass(frozen=True)
class JpegEncoding:
    """How a JPEG source was encoded, so its output can be encoded the same way.

    Re-encoding decoded pixels with the source's own quantisation tables and chroma
    subsampling puts nearly every coefficient of an untouched block back where it was; a
    different quality (even a higher one) re-quantises every block of the photo.
    """

    qtables: tuple[tuple[int, ...], ...]  # 64 values each, in Pillow's (zigzag) order
    subsampling: int  # Pillow's code: 0 = 4:4:4, 1 = 4:2:2, 2 = 4:2:0


@dataclass(frozen=True)
class SourceStamp:
    """The input file as it was when it was decoded: a copy of it is only made while it still is."""

    size: int
    mtime_ns: int
    inode: int
    device: int
    mode: int = 0o644  # its permission bits: outputs are no more readable by others

    @classmethod
    def of(cls, st: os.stat_result) -> "SourceStamp":
        return cls(st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev, stat.S_IMODE(st.st_mode))


@dataclass
class LoadedImage:
    """A decoded input: the pixels to work on and what is needed to write it back faithfully."""

    path: Path
    rgb: np.ndarray  # HxWx3 uint8 RGB, EXIF orientation applied
    alpha: np.ndarray | None  # HxW uint8, None when absent or fully opaque
    grayscale: bool  # grey source, or a colour file whose pixels are (nearly) all neutral
    bit_depth: int  # 8, or 16 for anything deeper (reduced to 8 bits for processing)
    format: str  # Pillow's format name: JPEG, PNG, WEBP, TIFF, BMP, GIF, ...
    mode: str  # Pillow's mode of the source: RGB, L, P, CMYK, I;16, ...
    icc_profile: bytes | None
    exif: bytes | None  # with Orientation reset to 1, since the pixels are upright now
    warnings: list[str] = field(default_factory=list)
    dpi: tuple[float, float] | None = None
    orientation: int = 1  # the source's EXIF orientation (its pixels are stored turned by it)
    jpeg: JpegEncoding | None = None  # for a JPEG source: how to encode its output alike
    source: SourceStamp | None = None  # the file's identity when it was decoded
    meta: Metadata | None = None  # XMP, IPTC, comments, PNG text (``imagemeta``)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of ``rgb``."""
        return int(self.rgb.shape[1]), int(self.rgb.shape[0])


def max_pixels_from_env() -> int:
    """The pixel limit: ``REFRESTORE_MAX_PIXELS`` when set, else ``DEFAULT_MAX_PIXELS``."""
    raw = os.environ.get(ENV_MAX_PIXELS, "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(float(raw)) if any(c in raw for c in ".eE") else int(raw.replace("_", ""))
    except (ValueError, OverflowError):  # OverflowError: 1e400 is inf
        value = 0
    if value <= 0:
        raise ValueError(f"{ENV_MAX_PIXELS} must be a positive number of pixels, got {raw!r}")
    return value


def _mp(pixels: int) -> str:
    return f"{pixels / 1e6:.1f} MP"


def _limit_text(limit: int) -> str:
    mp = limit / 1e6
    return f"{mp:g} MP" if mp >= 1 else f"{limit} pixel"


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


@contextmanager
def _pil_pixel_limit(limit: int) -> Iterator[list[warnings.WarningMessage]]:
    """Pillow's bomb limit set to ``limit`` and its warnings recorded, for one header read."""
    with _PIL_LIMIT_LOCK:
        old = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = limit
        try:
            # Recorded, not shown: Pillow reports corrupt EXIF with warnings.warn, and over
            # the limit we refuse the image ourselves a moment later. The lock also keeps
            # catch_warnings from racing another reader thread.
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                yield caught
        finally:
            Image.MAX_IMAGE_PIXELS = old


def _exif_warned(caught: list[warnings.WarningMessage]) -> bool:
    return any("exif" in str(w.message).lower() for w in caught)


def _check_geometry(width: int, height: int, limit: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageReadError(f"invalid image size {width}x{height}")
    pixels = width * height
    if pixels > limit:
        raise ImageReadError(
            f"image too large: {_mp(pixels)} exceeds the {_limit_text(limit)} limit "
            "(raise it with --max-pixels)"
        )
    ratio = max(width, height) / min(width, height)
    if ratio > MAX_ASPECT_RATIO:
        raise ImageReadError(
            f"unsupported {width}x{height}: aspect ratio {round(ratio)}:1 (at most {MAX_ASPECT_RATIO}:1)"
        )
    if min(width, height) < MIN_SIDE:
        raise ImageReadError(f"image too small ({width}x{height}); at least {MIN_SIDE}x{MIN_SIDE} needed")


def largest_upscale(width: int, height: int, limit: int) -> int:
    """The largest whole upscale whose output stays within ``limit`` pixels (0: none)."""
    k = 0
    while width * height * (k + 1) ** 2 <= limit:
        k += 1
    return k


def check_output_size(width: int, height: int, upscale: int, limit: int) -> None:
    """Refuse, from the header, an image whose upscaled output would pass the pixel limit."""
    pixels = width * height * upscale * upscale
    if upscale > 1 and pixels > limit:
        fits = largest_upscale(width, height, limit)
        hint = f"--upscale {fits} is the largest that fits" if fits > 1 else "use no --upscale"
        raise ImageReadError(
            f"output too large: {width}x{height} at --upscale {upscale} is {_mp(pixels)}, over the "
            f"{_limit_text(limit)} limit; {hint} (or raise --max-pixels)"
        )


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


def _is_16bit_source(im: Image.Image) -> bool:
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        return True
    for tile in im.tile:
        args = tile.args
        rawmode = args[0] if isinstance(args, tuple) and args else args
        if isinstance(rawmode, str) and ";16" in rawmode:
            return True  # 16-bit RGB(A) that Pillow decodes straight to 8 bits
    return False


def _deep_to_8bit(im: Image.Image) -> np.ndarray:
    """HxW uint8 from a 16/32-bit integer or float greyscale image, scaled by its range."""
    arr = np.asarray(im)
    if im.mode.startswith("I;16"):
        return (arr.astype(np.uint16, copy=False) >> 8).astype(np.uint8)
    if im.mode == "F":
        arr32 = arr.astype(np.float32, copy=False)
        finite_max = float(np.nanmax(arr32)) if arr32.size else 0.0
        scale = 255.0 if finite_max <= 1.0 + 1e-6 else (1.0 if finite_max <= 255.0 else 255.0 / 65535.0)
        out = np.nan_to_num(arr32 * np.float32(scale), nan=0.0)
        return np.clip(out, 0, 255).astype(np.uint8)
    top = int(arr.max()) if arr.size else 0
    if top <= 255:
        return np.clip(arr, 0, 255).astype(np.uint8)
    if top <= 65535:
        return (np.clip(arr, 0, 65535) >> 8).astype(np.uint8)
    return (np.clip(arr, 0, None) // (top // 255 + 1)).astype(np.uint8)


def _icc_space(icc: bytes | None) -> str | None:
    """Colour space of an ICC profile ('RGB', 'GRAY', 'CMYK', ...) from its header."""
    if not icc or len(icc) < 20:
        return None
    return icc[16:20].decode("ascii", "replace").strip()


def _cmyk_to_rgb(im: Image.Image, icc: bytes | None, warn: list[str]) -> Image.Image:
    if icc and _icc_space(icc) == "CMYK":
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            dst = ImageCms.createProfile("sRGB")
            out = ImageCms.profileToProfile(im, src, dst, outputMode="RGB")
            if out is not None:
                warn.append("CMYK converted to sRGB with its ICC profile")
                return out
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass
    warn.append("CMYK converted to RGB")
    return im.convert("RGB")


def _read_exif(im: Image.Image, limit: int, warn: list[str], corrupt: bool) -> tuple[int, bytes | None]:
    """(orientation 1-8, EXIF bytes with Orientation reset to 1 or None); never raises.

    ``corrupt``: Pillow already complained about this EXIF while opening the file.
    """
    try:
        with _pil_pixel_limit(limit) as caught:
            exif = im.getexif()
            for tag in LAYOUT_TAGS & set(exif):  # a TIFF's layout, not the photo's (imagemeta)
                del exif[tag]
            count = len(exif)
            orientation = exif.get(_ORIENTATION_TAG)
            data = b""
            if count:
                if orientation is not None:
                    exif[_ORIENTATION_TAG] = 1
                data = exif.tobytes()
        if corrupt or _exif_warned(caught):
            warn.append("invalid EXIF ignored")
            return 1, None
        if not count:
            return 1, None  # none, or an empty EXIF block: nothing to carry
        if orientation is not None:
            raw = orientation
            try:
                orientation = int(orientation)
            except (TypeError, ValueError):
                orientation = -1
            if orientation not in _ORIENTATIONS:
                warn.append(f"invalid EXIF orientation {raw!r} ignored")
                orientation = 1
        return (orientation or 1), data
    except Exception:  # noqa: BLE001 - any malformed EXIF must not cost the photo
        warn.append("invalid EXIF ignored")
        return 1, None


def _near_grey(im: Image.Image) -> bool:
    """True when (almost) every pixel of an RGB image is neutral, on a small copy."""
    probe = im
    w, h = im.size
    factor = max(1, max(w, h) // GREY_PROBE_SIDE)
    if factor > 1:
        probe = im.reduce(factor)  # box average: cheap, and it averages out JPEG chroma noise
    arr = np.asarray(probe.convert("RGB"), dtype=np.uint8)
    chroma = arr.max(axis=2).astype(np.int16) - arr.min(axis=2)
    # Judge where the content is: a small colour print scanned on a white A4 page (or on a
    # black scanner lid) is mostly neutral paper, which would outvote the photo's colours.
    content = content_mask(arr)
    if int(content.sum()) >= MIN_CONTENT_PIXELS:
        chroma = chroma[content]
    return bool(chroma.mean() <= GREY_MAX_MEAN_CHROMA and np.percentile(chroma, 99) <= GREY_MAX_P99_CHROMA)


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


def _jpeg_encoding(im: Image.Image) -> JpegEncoding | None:
    """The quantisation tables and chroma subsampling of a decoded JPEG, or None when Pillow
    cannot reproduce them (more than four tables, or a sampling it cannot write)."""
    from PIL import JpegImagePlugin

    tables = getattr(im, "quantization", None)
    if not tables or not 0 < len(tables) < 5 or any(len(t) != 64 for t in tables.values()):
        return None
    sampling = JpegImagePlugin.get_sampling(im) if im.mode != "L" else 0
    if sampling not in (0, 1, 2):
        return None
    return JpegEncoding(qtables=tuple(tuple(int(v) for v in tables[k]) for k in sorted(tables)), subsampling=sampling)


def _check_jpeg_size(f: IO[bytes], width: int, height: int) -> None:
    """A 12 KB file whose header claims 14000x14000 is forged or broken: refused unread."""
    from .jpegscan import implausibly_small

    size = os.fstat(f.fileno()).st_size
    if implausibly_small(size, width, height):
        raise ImageReadError(f"corrupt JPEG: {size} bytes cannot hold the {width}x{height} pixels its header declares")


def _warn_truncated_jpeg(im: Image.Image, f: IO[bytes], warn: list[str]) -> None:
    """Pillow decodes a cut JPEG silently (grey or blurred where data is missing): say so."""
    from .jpegscan import grey_rows_at_bottom, progressive_scans_missing

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


def _clean_dpi(dpi: object, swap: bool) -> tuple[float, float] | None:
    """(x, y) dpi as floats, or None; swapped when the photo was turned a quarter."""
    if not isinstance(dpi, tuple) or len(dpi) != 2:
        return None
    try:
        x, y = (float(d) for d in dpi)
    except (TypeError, ValueError):
        return None
    if not (x > 0 and y > 0):
        return None
    # PNG stores pixels per metre, so 144 dpi reads back as 143.9926: snap to whole dpi
    x, y = (float(round(d)) if abs(d - round(d)) < 0.05 else d for d in (x, y))
    return (y, x) if swap else (x, y)


def _to_array(im: Image.Image) -> np.ndarray:
    """A writable HxWxC uint8 copy of ``im``, made in bands of rows.

    ``np.array(im)`` goes through ``tobytes()``, a third full-size copy; bands keep the peak
    at Pillow's image plus the result (about 350 MB for a 50 MP photo instead of 500).
    """
    w, h = im.size
    channels = len(im.getbands())
    out = np.empty((h, w, channels) if channels > 1 else (h, w), dtype=np.uint8)
    step = max(1, (8 << 20) // max(1, w * channels))
    for y in range(0, h, step):
        out[y:y + step] = np.asarray(im.crop((0, y, w, min(h, y + step))))
    return out


def _to_rgb_array(im: Image.Image) -> np.ndarray:
    """HxWx3 uint8 from an RGB or L image (grey is spread to three channels by numpy,
    which skips Pillow's 4-byte-per-pixel RGB copy)."""
    if im.mode == "RGB":
        return _to_array(im)
    grey = _to_array(im)
    out = np.empty(grey.shape + (3,), dtype=np.uint8)
    out[...] = grey[..., None]
    return out


def _to_rgb(
    im: Image.Image, mode: str, icc: bytes | None, warn: list[str]
) -> tuple[Image.Image, Image.Image | None, bool]:
    """(RGB image, or L for grey sources; alpha as L or None; source is greyscale)."""
    alpha: Image.Image | None = None
    if mode == "P" or mode == "PA":
        im = im.convert("RGBA")  # palette transparency becomes real alpha
        mode = "RGBA"
        warn.append("palette image written in full colour")
    elif mode in ("L", "RGB") and "transparency" in im.info:
        im = im.convert("LA" if mode == "L" else "RGBA")
        mode = im.mode
    if mode in ("RGBA", "RGBa", "LA", "La"):
        if mode in ("RGBa", "La"):  # premultiplied: undo it before splitting
            im = im.convert("RGBA" if mode == "RGBa" else "LA")
            mode = im.mode
        alpha = im.getchannel("A")
        if mode == "LA":
            return im.getchannel("L"), alpha, True
        return im.convert("RGB"), alpha, False
    if mode == "L":
        return im, None, True
    if mode == "1":
        return im.convert("L"), None, True
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_deep_to_8bit(im), mode="L"), None, True
    if mode == "RGB":
        return im, None, False
    if mode == "CMYK":
        return _cmyk_to_rgb(im, icc, warn), None, False
    if mode == "RGBX":
        return im.convert("RGB"), None, False
    try:
        out = im.convert("RGB")
    except ValueError as err:
        raise ImageReadError(f"unsupported colour mode {mode}") from err
    warn.append(f"{mode} converted to RGB")
    return out, None, False


def output_suffix_ext(like: LoadedImage) -> str:
    """Extension for an output made from ``like``: its own format where we can write it, else .png."""
    ext = _OUTPUT_EXT.get(like.format, ".png")
    return ext if ext in _WRITE_FORMATS else ".png"


def output_ext_for_path(path: Path) -> str:
    """Extension for an output of the file at ``path``, before it is decoded: its own where we
    can write it, else .png (no extension, GIF, JPEG 2000, ...)."""
    ext = Path(path).suffix.lower()
    return ext if ext in _WRITE_FORMATS else ".png"


def output_format(path: Path) -> str:
    """Pillow format for an output path, from its extension; ImageWriteError when unsupported."""
    ext = Path(path).suffix.lower()
    fmt = _WRITE_FORMATS.get(ext)
    if fmt is None:
        known = ", ".join(sorted({e for e in _WRITE_FORMATS if e not in (".jpe", ".jfif", ".jpeg", ".tiff")}))
        raise ImageWriteError(f"cannot write {ext or 'files without an extension'}: use one of {known}")
    return fmt


def _format_for(path: Path, like: LoadedImage) -> str:
    """The format an output path's extension names; a stream or device written through
    (``/dev/null``, a pipe), which has none, gets the input's own."""
    if not Path(path).suffix and (stream_fd(path) is not None or not Path(path).is_file() and Path(path).exists()):
        return output_format(Path("output" + output_suffix_ext(like)))
    return output_format(path)


def _flatten_on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Alpha-composite over white in integer maths, a band of rows at a time (no big temporaries)."""
    out = np.empty_like(rgb)
    step = max(1, (1 << 22) // max(1, rgb.shape[1]))
    for y in range(0, rgb.shape[0], step):
        c = rgb[y:y + step].astype(np.uint16)
        a = alpha[y:y + step, :, None].astype(np.uint16)
        out[y:y + step] = ((c * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)
    return out


def _luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma (Pillow's RGB->L weights) in bands of rows, without an RGB image copy."""
    out = np.empty(rgb.shape[:2], dtype=np.uint8)
    step = max(1, (1 << 22) // max(1, rgb.shape[1]))
    for y in range(0, rgb.shape[0], step):
        band = rgb[y:y + step]
        # 0.299, 0.587, 0.114 in 1/65536, as Pillow does it
        acc = band[..., 0] * np.uint32(19595)
        acc += band[..., 1] * np.uint32(38470)
        acc += band[..., 2] * np.uint32(7471)
        acc += np.uint32(32768)
        out[y:y + step] = acc >> 16
    return out


def _same_picture(shape: tuple[int, ...], source: tuple[int, ...]) -> bool:
    """True when an array of ``shape`` is the source's picture at a whole-number scale."""
    h, w, sh, sw = shape[0], shape[1], source[0], source[1]
    return sh > 0 and sw > 0 and h % sh == 0 and w % sw == 0 and h // sh == w // sw


def _prepare(rgb: np.ndarray, like: LoadedImage, fmt: str) -> tuple[Image.Image, dict[str, Any]]:
    h, w = rgb.shape[:2]
    alpha = like.alpha
    if alpha is not None and alpha.shape != (h, w):
        alpha = np.asarray(Image.fromarray(alpha, mode="L").resize((w, h), Image.Resampling.LANCZOS))
    if alpha is not None and fmt not in _ALPHA_FORMATS:
        log.warning("%s cannot hold transparency: flattening onto white", fmt)
        rgb = _flatten_on_white(rgb, alpha)
        alpha = None
    if like.grayscale:
        im = Image.fromarray(_luma(rgb), mode="L")
        out_space = "GRAY"
    else:
        im = Image.fromarray(np.ascontiguousarray(rgb), mode="RGB")
        out_space = "RGB"
    if alpha is not None:
        im.putalpha(Image.fromarray(np.ascontiguousarray(alpha), mode="L"))
    params: dict[str, Any] = {}
    if fmt in _META_FORMATS:
        if like.icc_profile and _icc_space(like.icc_profile) == out_space:
            params["icc_profile"] = like.icc_profile
        elif like.icc_profile:
            log.info("not carrying a %s ICC profile into a %s output", _icc_space(like.icc_profile), out_space)
        if like.exif:
            params["exif"] = like.exif
    params.update(metadata_params(like.meta, fmt))
    if like.dpi:
        sx = w / like.size[0] if like.size[0] else 1.0
        sy = h / like.size[1] if like.size[1] else 1.0
        params["dpi"] = (like.dpi[0] * sx, like.dpi[1] * sy)  # same print size after upscaling
    if fmt == "JPEG" and like.jpeg is not None and _same_picture(rgb.shape, like.rgb.shape):
        # The source's own tables and sampling (no quality: Pillow would rescale the tables).
        # Only for the photo itself (or its upscale): face crops and sheets get quality 95.
        params.update(qtables=[list(t) for t in like.jpeg.qtables], subsampling=like.jpeg.subsampling)
    elif fmt == "JPEG":
        params.update(quality=95, subsampling=0)
    elif fmt == "WEBP":
        params.update(quality=95, method=4)
    elif fmt == "AVIF":
        params.update(quality=90, subsampling="4:4:4")
    elif fmt == "PNG":
        # level 4: 2.7x faster than Pillow's default 6 on a 12 MP photo, files 5% larger
        params.update(compress_level=4)
    elif fmt == "TIFF":
        # Uncompressed: Pillow's own TIFF writer keeps the EXIF sub-IFDs (capture date,
        # camera settings); the libtiff path that LZW needs rejects them.
        params.update(compression=None)
    return im, params


def _write_error(err: OSError, path: Path) -> ImageWriteError:
    folder = path.parent
    code = err.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        what = "no space left on device" if code == errno.ENOSPC else "disk quota exceeded"
        return ImageWriteError(f"{what} while writing {path}", stops_run=True)
    if code == errno.EROFS:
        return ImageWriteError(f"output folder is read-only: {folder}", stops_run=True)
    if code in (errno.EACCES, errno.EPERM):
        return ImageWriteError(f"output folder is not writable (permission denied): {folder}", stops_run=True)
    if code == errno.ENOTDIR:
        return ImageWriteError(f"output folder is not a folder: {folder}")
    if code == errno.EISDIR:
        return ImageWriteError(f"output path is a folder: {path}")
    if code == errno.EFBIG:
        return ImageWriteError(f"file too large for this file system while writing {path}")
    if code == errno.ENAMETOOLONG:
        return ImageWriteError(f"output file name too long: {path}")
    return ImageWriteError(f"cannot write {path}: {(err.strerror or str(err)).lower()}")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def save_image(path: Path, rgb: np.ndarray, like: LoadedImage, *, quality: int | None = None) -> None:
    """Write ``rgb`` (HxWx3 uint8) to ``path`` atomically, in the format its extension names.

    Keeps what ``like`` says about the source: greyscale stays single-channel, alpha is
    kept (resized when ``rgb`` is larger), ICC profile, EXIF and DPI are carried where the
    format allows. A JPEG made from a JPEG is encoded with the source's quantisation tables
    and chroma subsampling, so what was not changed survives with almost no loss; other
    JPEG and WebP outputs get ``quality`` (95 when None; an explicit quality also overrides
    the source's tables). The file appears complete or not at all: it is written to a hidden
    temporary file in the same folder, fsynced, then renamed over ``path``. Missing parent
    folders are created. Never writes over ``like.path``. Raises ``ImageWriteError`` (one
    line) on any failure, after removing the temporary file.
    """
    path = Path(path)
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"save_image expects an HxWx3 uint8 array, got {getattr(rgb, 'shape', type(rgb))}")
    if _same_file(path, like.path):
        raise ImageWriteError(f"refusing to overwrite the input file: {path}")
    fmt = _format_for(path, like)
    im, params = _prepare(rgb, like, fmt)
    if quality is not None and fmt in ("JPEG", "WEBP"):
        params.pop("qtables", None)
        params["quality"] = quality
        if fmt == "JPEG":
            params["subsampling"] = 0
    _make_parent(path)
    # Metadata must never cost the photo: when an encoder rejects the EXIF (JPEG's 64 KB
    # segment cap, odd tags) or the ICC profile, write again without it and say so.
    attempts = [dict(params)]
    if METADATA_PARAMS & set(params):
        attempts.append({k: v for k, v in params.items() if k not in METADATA_PARAMS})
    if "exif" in params:
        attempts.append({k: v for k, v in attempts[-1].items() if k != "exif"})
    if "icc_profile" in params:
        attempts.append({k: v for k, v in attempts[-1].items() if k != "icc_profile"})
    for i, attempt in enumerate(attempts):
        try:
            _atomic_write(path, im, fmt, attempt, like)
        except _ENCODER_ERRORS as err:
            if i + 1 < len(attempts):
                dropped = sorted(set(attempt) - set(attempts[i + 1]))
                log.warning("%s: %s not written (%s)", path, " and ".join(dropped), err)
                continue
            raise ImageWriteError(f"cannot write {path}: {err}".splitlines()[0]) from err
        return


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError as err:  # a file sits where the folder should be
        raise ImageWriteError(f"output folder is not a folder: {path.parent}") from err
    except OSError as err:
        raise _write_error(err, path) from err


class _SourceChanged(Exception):
    """The input changed on disk after it was decoded: it is not what was looked at."""


def can_copy_unchanged(path: Path, rgb: np.ndarray, like: LoadedImage) -> bool:
    """True when writing ``rgb`` to ``path`` would only re-encode the input as it is, so the
    input's own bytes are the most faithful output: the same format, pixels identical to the
    decoded ones, and nothing the reader converted (orientation, depth, mode, alpha, frames,
    a colour file written grey, anything it warned about)."""
    fmt = _WRITE_FORMATS.get(Path(path).suffix.lower())
    if fmt is None or fmt != like.format or like.source is None:
        return False
    if like.warnings or like.orientation != 1 or like.bit_depth != 8 or like.alpha is not None:
        return False
    if like.mode != ("L" if like.grayscale else "RGB"):
        return False
    return rgb.shape == like.rgb.shape and bool(np.array_equal(rgb, like.rgb))


def copy_unchanged(path: Path, like: LoadedImage) -> bool:
    """Copy the input file to ``path`` byte for byte, atomically (temporary file, fsync,
    rename), if it is still the file that was decoded; False (nothing written) when it
    changed since. Never writes over ``like.path``; ``ImageWriteError`` on a write failure."""
    path = Path(path)
    if _same_file(path, like.path):
        raise ImageWriteError(f"refusing to overwrite the input file: {path}")
    stamp = like.source
    if stamp is None:
        return False
    _make_parent(path)

    def write(out: IO[bytes]) -> None:
        try:
            src = open(like.path, "rb")
        except OSError as err:
            raise _SourceChanged() from err
        with src:
            if SourceStamp.of(os.fstat(src.fileno())) != stamp:
                raise _SourceChanged()
            shutil.copyfileobj(src, out, 1 << 20)
            if SourceStamp.of(os.fstat(src.fileno())) != stamp:  # written to while we copied
                raise _SourceChanged()

    try:
        _atomic_write_with(path, write, like)
    except _SourceChanged:
        log.info("%s changed since it was read: encoding the output instead of copying it", like.path)
        return False
    return True


def save_output(path: Path, rgb: np.ndarray, like: LoadedImage) -> bool:
    """Write a restored photo: the input's own bytes when nothing in it changed
    (``can_copy_unchanged``), else ``save_image``. True when it was copied."""
    if can_copy_unchanged(path, rgb, like) and copy_unchanged(path, like):
        return True
    save_image(path, rgb, like)
    return False


# What Pillow's encoders raise for data they cannot store (OSError is handled apart).
_ENCODER_ERRORS = (ValueError, RuntimeError, TypeError, KeyError, struct_error)


def _atomic_write(path: Path, im: Image.Image, fmt: str, params: dict[str, Any], like: LoadedImage) -> None:
    _atomic_write_with(path, lambda f: im.save(f, format=fmt, **params), like)


def _atomic_write_with(path: Path, write: Callable[[IO[bytes]], None], like: LoadedImage | None = None) -> None:
    """Through the one writer (``fileio.write_atomic``): atomic, a device or pipe written
    through, a link's target replaced, recorded as made from ``like``'s file, and no more
    readable by others than that file."""
    stamp = like.source if like is not None else None
    source = Source(os.path.realpath(like.path), stamp.size, stamp.mtime_ns) if like is not None and stamp else None
    try:
        write_atomic(path, write, source=source, source_mode=stamp.mode if stamp else None)
    except OSError as err:
        raise _write_error(err, path) from err
