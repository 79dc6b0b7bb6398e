"""Which formats are read and written, and which output format and extension a path or an
input gets."""
from __future__ import annotations

from pathlib import Path

from PIL import features

from refrestore.fileio import stream_fd

from .loaded import ImageWriteError, LoadedImage

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
