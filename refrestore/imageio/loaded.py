"""What reading a photo produces (``LoadedImage``, with its ``SourceStamp`` and ``JpegEncoding``)
and the two errors of image I/O, each a one-line message for the user."""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from refrestore.imagemeta import Metadata


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
