"""Writing a result: ``save_image`` encodes through a temporary file renamed into place (an
output is complete or absent), ``copy_unchanged`` copies the input's own bytes when nothing in
it changed, and ``save_output`` picks between them for a restored photo."""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from struct import error as struct_error
from typing import IO, Any

import numpy as np
from PIL import Image

from refrestore.imagemeta import METADATA_PARAMS

from .atomic import _atomic_write_with, _make_parent, _same_file
from .encode import _prepare
from .formats import _WRITE_FORMATS, _format_for
from .loaded import ImageWriteError, LoadedImage, SourceStamp

log = logging.getLogger(__name__)

# What Pillow's encoders raise for data they cannot store (OSError is handled apart).
_ENCODER_ERRORS = (ValueError, RuntimeError, TypeError, KeyError, struct_error)


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


def _atomic_write(path: Path, im: Image.Image, fmt: str, params: dict[str, Any], like: LoadedImage) -> None:
    _atomic_write_with(path, lambda f: im.save(f, format=fmt, **params), like)
