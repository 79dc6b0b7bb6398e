"""Finding the input images of a run: files given by the user and the images in folders.

A folder's inputs are the files that look like images by content (magic bytes) or by
extension. Content catches photos saved without an extension; the extension catches broken
files (a web page saved as ``photo.jpg``), which then fail with a clear error in the report
instead of vanishing silently. Hidden files, our own temporary files and anything that is
not a regular file (FIFOs would block a read forever) are skipped, and so is what refrestore
itself wrote (outputs, face crops, report folders: ``fileio`` records them), so a rerun never
takes its own files for inputs or references. Symlinked folders are followed once; a link back
to one of its own ancestors is reported as a loop. The walk keeps its own stack (no recursion),
and a folder more than ``MAX_DEPTH`` levels below its root is reported, not entered.
"""
from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# Lower-case extensions that we treat as images even when their content is not recognised.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".webp", ".tif", ".tiff",
        ".bmp", ".dib", ".avif", ".heic", ".heif", ".jp2", ".j2k",
    }
)

from .fileio import RECORDS, TEMP_PREFIX, written_by_refrestore

__all__ = ["IMAGE_EXTENSIONS", "MAX_DEPTH", "TEMP_PREFIX", "InputFile", "find_inputs", "sniff_bytes", "sniff_image"]

MAX_DEPTH = 256  # folders below a root; deeper ones are that folder's error

_SNIFF_BYTES = 32


def sniff_bytes(head: bytes) -> str | None:
    """The image format named by the first bytes of a file (PIL's format names), or None.

    HEIC is recognised so that it can be reported clearly, although this Pillow build
    cannot decode it.
    """
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if head[:2] == b"BM" and len(head) >= 18:
        # the DIB header size pins BMP down better than the two letters alone
        dib = int.from_bytes(head[14:18], "little")
        if dib in (12, 40, 52, 56, 64, 108, 124):
            return "BMP"
        return None
    if head[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n" or head[:4] == b"\xffO\xffQ":
        return "JPEG2000"
    if head[4:8] == b"ftyp":
        brands = head[8:_SNIFF_BYTES]
        if b"avif" in brands or b"avis" in brands:
            return "AVIF"
        if any(b in brands for b in (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1")):
            return "HEIC"
    return None


def sniff_image(path: Path) -> str | None:
    """Format of ``path`` from its magic bytes, or None when it is not a known image or unreadable."""
    try:
        with open(path, "rb") as f:
            return sniff_bytes(f.read(_SNIFF_BYTES))
    except OSError:
        return None


@dataclass(frozen=True)
class InputFile:
    """One input image; ``rel`` is its path relative to the input root, for mirroring."""

    path: Path
    rel: Path


def _is_skipped_name(name: str) -> bool:
    # Hidden files include our own temporary files (TEMP_PREFIX starts with a dot).
    return name.startswith(".")


def _describe_oserror(err: OSError) -> str:
    return err.strerror.lower() if err.strerror else str(err)


def _looks_like_input(path: Path, name: str) -> bool:
    if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
        return True
    return sniff_image(path) is not None


class _Walker:
    """One walk over the roots of a run; remembers the real folders it has entered."""

    def __init__(self, recursive: bool, exclude: Sequence[Path]) -> None:
        self.recursive = recursive
        self.inputs: list[InputFile] = []
        self.problems: list[tuple[Path, str]] = []
        self.visited: dict[tuple[int, int], Path] = {}
        self.seen_files: set[tuple[int, int]] = set()
        self.exclude: set[tuple[int, int]] = set()
        for ex in exclude:
            try:
                st = os.stat(ex)
            except OSError:
                continue
            self.exclude.add((st.st_dev, st.st_ino))

    def add_file(self, path: Path, rel: Path, st: os.stat_result) -> None:
        key = (st.st_dev, st.st_ino)
        if key in self.seen_files:  # the same file reached twice (given twice, or via a link)
            log.debug("skipping %s: already an input", path)
            return
        self.seen_files.add(key)
        self.inputs.append(InputFile(path=path, rel=rel))

    def walk(self, folder: Path, root: Path, ancestors: tuple[tuple[int, int], ...]) -> None:
        """Every folder under ``folder``, depth first in name order, on an explicit stack: a
        tree 600 levels deep must not exhaust Python's recursion limit."""
        stack: list[tuple[Path, tuple[tuple[int, int], ...]]] = [(folder, ancestors)]
        while stack:
            here, above = stack.pop()
            entered = []
            for path, st in self._scan(here, root):  # decided in name order, walked in it too
                key = self._may_enter(path, st, above)
                if key is not None:
                    entered.append((path, above + (key,)))
            stack.extend(reversed(entered))

    def _scan(self, folder: Path, root: Path) -> list[tuple[Path, os.stat_result]]:
        """Add the images directly in ``folder``; return its sub-folders (when recursive)."""
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as err:
            self.problems.append((folder, f"cannot read folder: {_describe_oserror(err)}"))
            return []
        own = any(e.name == RECORDS for e in entries)  # refrestore wrote something here
        subdirs: list[tuple[Path, os.stat_result]] = []
        for entry in entries:
            if _is_skipped_name(entry.name):
                continue
            path = Path(entry.path)
            try:
                st = os.stat(path)  # follows symlinks
            except OSError as err:
                if entry.is_symlink():
                    if err.errno == errno.ELOOP:  # a link that points at itself
                        self.problems.append((path, "symlink loop"))
                    else:
                        self.problems.append((path, "broken symlink"))
                else:
                    self.problems.append((path, f"cannot read: {_describe_oserror(err)}"))
                continue
            if own and written_by_refrestore(path) is not None:
                log.debug("skipping %s: written by refrestore", path)
                continue
            if stat.S_ISDIR(st.st_mode):
                if self.recursive:
                    subdirs.append((path, st))
            elif stat.S_ISREG(st.st_mode):
                if _looks_like_input(path, entry.name):
                    self.add_file(path, path.relative_to(root), st)
            # FIFOs, sockets and devices are never images; reading a FIFO would block.
        return subdirs

    def _may_enter(self, folder: Path, st: os.stat_result,
                   ancestors: tuple[tuple[int, int], ...]) -> tuple[int, int] | None:
        """The folder's key when it is to be walked; None (reported or logged) when not."""
        key = (st.st_dev, st.st_ino)
        if key in self.exclude:
            log.debug("skipping excluded folder %s", folder)
            return None
        if key in ancestors:
            target = os.path.realpath(folder)
            self.problems.append((folder, f"symlink loop: leads back to {target}"))
            return None
        if key in self.visited:
            # Reached again through another link: its images are already inputs.
            log.debug("skipping %s: same folder as %s", folder, self.visited[key])
            return None
        if len(ancestors) > MAX_DEPTH:
            self.problems.append((folder, f"more than {MAX_DEPTH} folders deep: not entered"))
            return None
        self.visited[key] = folder
        return key

    def enter(self, folder: Path, root: Path, st: os.stat_result) -> None:
        """Walk a root folder."""
        key = self._may_enter(folder, st, ())
        if key is not None:
            self.walk(folder, root, (key,))


def find_inputs(
    paths: list[Path], recursive: bool, *, exclude: Sequence[Path] = ()
) -> tuple[list[InputFile], list[tuple[Path, str]]]:
    """The input images named by ``paths``, and the problems met finding them.

    A file is an input even when it is not an image (reading it will say why). A folder
    contributes the images directly inside it, and with ``recursive`` those in sub-folders,
    with ``rel`` relative to that folder. ``exclude`` names folders never to enter (the
    output folder when it lies inside an input folder). Problems are (path, one-line reason):
    missing paths, broken links, unreadable folders, symlink loops. Order is deterministic:
    the roots in the order given, each sorted by relative path; a file reached twice is
    listed once.
    """
    walker = _Walker(recursive, exclude)
    for raw in paths:
        path = Path(raw)
        try:
            st = os.stat(path)
        except OSError as err:
            if os.path.islink(path):
                reason = "symlink loop" if err.errno == errno.ELOOP else "broken symlink"
            elif err.errno == errno.ENOENT:
                reason = "no such file or folder"
            else:
                reason = f"cannot read: {_describe_oserror(err)}"
            walker.problems.append((path, reason))
            continue
        if stat.S_ISDIR(st.st_mode):
            start = len(walker.inputs)
            walker.enter(path, path, st)
            walker.inputs[start:] = sorted(walker.inputs[start:], key=lambda f: f.rel.parts)
        elif stat.S_ISREG(st.st_mode):
            walker.add_file(path, Path(path.name), st)
        else:
            walker.problems.append((path, "not a regular file or folder"))
    return walker.inputs, walker.problems
