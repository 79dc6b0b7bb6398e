"""Reading photos safely and writing results atomically (``refrestore.imageio``).

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

The package's modules, one job each (lower first; none imports a higher one):

- ``loaded``: ``LoadedImage``, ``SourceStamp``, ``JpegEncoding`` and the two errors;
- ``limits``: the pixel, side and aspect limits, checked from the header;
- ``colour``: Pillow modes and bit depths to 8-bit RGB or grey, the near-grey test;
- ``metadata``: EXIF orientation, DPI, a JPEG's own tables;
- ``formats``: the formats read and written, an output's format and extension;
- ``read``: ``read_image`` and ``image_size``;
- ``encode``: the Pillow image and save parameters of an output;
- ``atomic``: the atomic write and its one-line errors;
- ``write``: ``save_image``, ``copy_unchanged``, ``save_output``.

Everything the rest of refrestore uses is imported from here.
"""
from __future__ import annotations

from .colour import GREY_MAX_MEAN_CHROMA, GREY_MAX_P99_CHROMA, GREY_PROBE_SIDE, MIN_CONTENT_PIXELS
from .formats import output_ext_for_path, output_format, output_suffix_ext
from .limits import (
    DEFAULT_MAX_PIXELS,
    ENV_MAX_PIXELS,
    MAX_ASPECT_RATIO,
    MIN_SIDE,
    check_output_size,
    largest_upscale,
    max_pixels_from_env,
)
from .loaded import ImageReadError, ImageWriteError, JpegEncoding, LoadedImage, SourceStamp
from .read import image_size, read_image
from .write import can_copy_unchanged, copy_unchanged, save_image, save_output

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ENV_MAX_PIXELS",
    "GREY_MAX_MEAN_CHROMA",
    "GREY_MAX_P99_CHROMA",
    "GREY_PROBE_SIDE",
    "MAX_ASPECT_RATIO",
    "MIN_CONTENT_PIXELS",
    "MIN_SIDE",
    "ImageReadError",
    "ImageWriteError",
    "JpegEncoding",
    "LoadedImage",
    "SourceStamp",
    "can_copy_unchanged",
    "check_output_size",
    "copy_unchanged",
    "image_size",
    "largest_upscale",
    "max_pixels_from_env",
    "output_ext_for_path",
    "output_format",
    "output_suffix_ext",
    "read_image",
    "save_image",
    "save_output",
]
