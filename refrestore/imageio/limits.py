"""The limits on what is decoded: pixels (``DEFAULT_MAX_PIXELS``, ``REFRESTORE_MAX_PIXELS``),
the smallest side and the narrowest strip, checked from the header before any pixel is decoded,
and Pillow's own bomb check pointed at the same limit."""
from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from PIL import Image

from .loaded import ImageReadError

DEFAULT_MAX_PIXELS = 200_000_000
ENV_MAX_PIXELS = "REFRESTORE_MAX_PIXELS"
MIN_SIDE = 16
MAX_ASPECT_RATIO = 100

# Pillow's own bomb check reads the module-global Image.MAX_IMAGE_PIXELS inside
# Image.open; we point it at our limit for the (header-only) open and serialise that.
_PIL_LIMIT_LOCK = threading.Lock()


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
