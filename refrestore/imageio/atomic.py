"""Writing a file atomically through refrestore's one writer (``fileio.write_atomic``), and the
one-line ``ImageWriteError`` for each way the disk or the folder can refuse."""
from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO

from refrestore.fileio import Source, write_atomic

from .loaded import ImageWriteError, LoadedImage


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


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError as err:  # a file sits where the folder should be
        raise ImageWriteError(f"output folder is not a folder: {path.parent}") from err
    except OSError as err:
        raise _write_error(err, path) from err


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
