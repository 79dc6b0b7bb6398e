"""What a decoded photo carries besides its pixels: EXIF (orientation read and reset), DPI,
and a JPEG's own quantisation tables and chroma subsampling."""
from __future__ import annotations

from PIL import Image

from refrestore.imagemeta import LAYOUT_TAGS

from .limits import _exif_warned, _pil_pixel_limit
from .loaded import JpegEncoding

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
