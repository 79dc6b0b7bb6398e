"""How refrestore writes a file in the user's folders, and how it knows its own files again.

Every file written where the user points refrestore (outputs, face crops, reports, contact
sheets, exports) goes through :func:`write_atomic`:

- a stream (``-``, ``/dev/stdout``, ``/dev/fd/N``, a character device, a FIFO) is written
  through, never replaced by a regular file;
- a symbolic link is followed and its target replaced atomically (the link stays);
- anything else is written to a hidden temporary file in the destination folder, fsynced
  and renamed into place, with mode ``0666 & ~umask`` narrowed to the source's bits when the
  source is more private.

Each regular file written gets a *record* in the hidden ``.refrestore/`` folder beside it:
its size and modification time as written and, for an output made from a photo, that
photo's path, size and modification time. That is what makes refrestore's own files
recognisable: a rerun may replace them, skips an output only when it came from this same
input, and never takes them for inputs or references; a file without a record is the
user's, and is never replaced. Only the standard library is imported here.
"""
from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

# Temporary files start with this (hidden, with the writer's pid: a rerun removes those of dead processes).
TEMP_PREFIX = ".refrestore-tmp-"
RECORDS = ".refrestore"  # the hidden folder of records beside the files refrestore wrote
_RECORD_MAX_BYTES = 64 << 10
_FD_PATH = re.compile(r"/(?:dev/fd|proc/self/fd)/(\d+)")
_STD_STREAMS = {"-": 1, "/dev/stdout": 1, "/dev/stderr": 2}


def read_regular_bytes(path: Path, max_bytes: int) -> bytes:
    """A regular file's bytes, never blocking: opened non-blocking so a FIFO or device in its
    place is refused (OSError) instead of hanging, and refused above ``max_bytes``.

    Every file refrestore reads back (manifests, weights side files, the gallery cache, the
    records of its own files) goes through here: damage must cost a warning, never a hang or
    a huge read."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        if st.st_size > max_bytes:
            raise OSError(errno.EFBIG, f"larger than {max_bytes} bytes")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > max_bytes:  # it grew while being read
        raise OSError(errno.EFBIG, f"larger than {max_bytes} bytes")
    return data


# ---- streams ----------------------------------------------------------------------------------

def stream_fd(path: str | os.PathLike[str]) -> int | None:
    """The descriptor a path names as a stream (``-`` and ``/dev/stdout`` are 1, ``/dev/fd/N``
    and ``/proc/self/fd/N`` are N), or None for any other path."""
    text = os.fspath(path)
    if text in _STD_STREAMS:
        return _STD_STREAMS[text]
    m = _FD_PATH.fullmatch(text)
    return int(m.group(1)) if m else None


def is_stream_path(path: str | os.PathLike[str]) -> bool:
    """True when writing ``path`` writes through: a stream name, a device or a FIFO (or a link to one)."""
    if stream_fd(path) is not None:
        return True
    try:
        return is_special(os.stat(path))
    except OSError:
        return False


def is_special(st: os.stat_result) -> bool:
    """A character device or a FIFO: written through, never replaced."""
    return stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode)


def final_target(path: Path) -> Path:
    """Where writing ``path`` lands: a symbolic link's target (followed to the end, even when
    it does not exist yet), else ``path`` itself (absolute)."""
    path = Path(os.path.abspath(path))
    try:
        linked = stat.S_ISLNK(os.lstat(path).st_mode)
    except (OSError, ValueError):  # absent, or a name the file system cannot hold
        linked = False
    return Path(os.path.realpath(path)) if linked else path


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _write_through(path: Path, fd: int | None, write: Callable[[IO[bytes]], None]) -> None:
    """Encode in memory first (a failing encoder writes nothing), then write the bytes through."""
    buf = io.BytesIO()
    write(buf)
    if fd is not None:
        import sys

        for stream in (sys.stdout, sys.stderr):  # what the CLI printed goes first
            try:
                if stream is not None and stream.fileno() == fd:
                    stream.flush()
            except (OSError, ValueError, AttributeError):
                pass
        _write_all(fd, buf.getvalue())
        return
    own = os.open(path, os.O_WRONLY | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        _write_all(own, buf.getvalue())
    finally:
        os.close(own)


# ---- modes --------------------------------------------------------------------------------------

def current_umask() -> int:
    """The process umask, read without changing it where /proc allows."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no /proc: the classic read-and-restore
    os.umask(mask)
    return mask


def file_mode(source_mode: int | None = None) -> int:
    """``0666 & ~umask``, like any file the user makes, narrowed to ``source_mode``'s group and
    other bits: a private (0600) photo's outputs stay private. The owner keeps read and write."""
    mode = 0o666 & ~current_umask()
    if source_mode is not None:
        mode &= (source_mode & 0o077) | 0o600
    return mode


# ---- records ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Source:
    """The input a file was made from, as it was when it was read."""

    path: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: str | os.PathLike[str]) -> "Source | None":
        try:
            st = os.stat(path)
        except OSError:
            return None
        return cls(os.path.realpath(path), st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class Record:
    """What refrestore wrote at a path: the file's size and mtime then, and its source."""

    name: str
    size: int
    mtime_ns: int
    source: Source | None = None
    folder: bool = False  # a folder refrestore made (an HTML report's images, face crops)
    inode: int = 0  # folders: the folder's inode when it was made

    def matches(self, st: os.stat_result) -> bool:
        """True while the file (or folder) is still the one refrestore wrote."""
        if self.folder:
            return stat.S_ISDIR(st.st_mode) and st.st_ino == self.inode
        return stat.S_ISREG(st.st_mode) and st.st_size == self.size and st.st_mtime_ns == self.mtime_ns


def _record_path(path: Path) -> Path:
    # A digest of the name: any file name (long, odd bytes) has a short record name.
    key = hashlib.sha1(os.fsencode(path.name)).hexdigest()[:20]
    return path.parent / RECORDS / f"{key}.json"


def read_record(path: Path) -> Record | None:
    """The record of ``path`` (a final target, not a link), or None when there is none or it is
    damaged (a damaged record only means the file is not known to be refrestore's)."""
    try:
        doc = json.loads(read_regular_bytes(_record_path(path), _RECORD_MAX_BYTES))
        if not isinstance(doc, dict) or doc.get("name") != os.fsencode(path.name).decode("latin-1"):
            return None
        src = doc.get("source")
        source = Source(str(src["path"]), int(src["size"]), int(src["mtime_ns"])) if isinstance(src, dict) else None
        return Record(path.name, int(doc["size"]), int(doc["mtime_ns"]), source, bool(doc.get("folder", False)),
                      int(doc.get("inode", 0)))
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None


def written_by_refrestore(path: Path) -> Record | None:
    """The record of ``path`` when the file (or folder) there is still what refrestore wrote."""
    path = final_target(path)
    try:
        st = os.lstat(path)
    except OSError:
        return None
    record = read_record(path)
    return record if record is not None and record.matches(st) else None


def _write_record(path: Path, st: os.stat_result, source: Source | None, folder: bool = False) -> None:
    """Record ``path`` as written by refrestore, with ``st`` taken of the file about to be
    renamed into place (a rename keeps size, mtime and inode): the record exists before the
    file does, so a run killed in between never leaves an output that is not recognised."""
    doc = {"name": os.fsencode(path.name).decode("latin-1"), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
           "folder": folder, "inode": st.st_ino if folder else 0,
           "source": None if source is None else {"path": source.path, "size": source.size,
                                                  "mtime_ns": source.mtime_ns}}
    target = _record_path(path)
    try:
        target.parent.mkdir(exist_ok=True)
        replace_file(target, lambda f: f.write(json.dumps(doc).encode("utf-8")), 0o666 & ~current_umask())
    except OSError:
        # A folder that takes no record (read-only records folder, a file in its place): the
        # output is still written; only a rerun will not know it as refrestore's.
        pass


def record_folder(folder: Path, made: os.stat_result | None = None) -> None:
    """Record ``folder`` (about to be renamed into place when ``made`` is given) as refrestore's."""
    try:
        st = made if made is not None else os.lstat(folder)
    except OSError:
        return
    _write_record(final_target(folder), st, None, folder=True)


def lock_for_writing(path: Path) -> IO[str] | None:
    """An exclusive lock on writing ``path`` (a report), held while the returned file stays
    open; None when another process holds it. Two runs writing one report at once would mix
    (or delete) each other's files: the second is refused up front instead. The lock file is
    in the records folder, which is created (with the report's folder) for it."""
    import fcntl

    lock = _record_path(final_target(path)).with_suffix(".lock")
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock, "a")
    except OSError:
        return open(os.devnull, "a")  # no lock can be had here; the gate found the folder writable
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


# ---- writing ------------------------------------------------------------------------------------

def temp_name(folder: Path, suffix: str = "") -> Path:
    """A fresh temporary file name in ``folder``, named so a rerun can clean it up."""
    return folder / f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}{suffix}"


def replace_file(path: Path, write: Callable[[IO[bytes]], None], mode: int,
                 before_rename: Callable[[os.stat_result], None] | None = None, *, durable: bool = True) -> None:
    """Write a regular file at ``path`` through a temporary file beside it and a rename (no
    links followed, no record: :func:`write_atomic` is for the user's folders). ``durable``:
    fsync the file and its folder (a cache that is rebuilt when lost can skip it)."""
    tmp = temp_name(path.parent, path.suffix)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fchmod(f.fileno(), mode)
            if durable:
                os.fsync(f.fileno())
        if before_rename is not None:
            before_rename(os.stat(tmp))
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if durable:
        fsync_dir(path.parent)


def write_atomic(path: Path, write: Callable[[IO[bytes]], None], *, source: Source | None = None,
                 source_mode: int | None = None, record: bool = True) -> None:
    """Write a file where the user asked, by the rules in this module's docstring.

    ``write`` gets a binary file object. ``source`` is the input the file is made from (kept
    in the record, so a rerun knows whether this output is still that input's);
    ``source_mode`` narrows the file's permission bits. Raises OSError; a temporary file is
    never left behind."""
    fd = stream_fd(path)
    if fd is not None:
        _write_through(Path(path), fd, write)
        return
    try:
        followed = os.stat(path)
    except OSError:
        followed = None
    if followed is not None and is_special(followed):  # a device or a FIFO, or a link to one
        _write_through(Path(path), None, write)
        return
    target = final_target(Path(path))
    try:
        st = os.stat(target)
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise OSError(errno.EISDIR if stat.S_ISDIR(st.st_mode) else errno.EINVAL,
                      "is a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file", str(target))
    hook = (lambda made: _write_record(target, made, source)) if record else None
    replace_file(target, write, file_mode(source_mode), hook)


def write_text(path: Path, text: str, **kwargs: object) -> None:
    """:func:`write_atomic` of UTF-8 text."""
    data = text.encode("utf-8")
    write_atomic(path, lambda f: f.write(data), **kwargs)  # type: ignore[arg-type]


def fsync_dir(folder: Path) -> None:
    """Make a rename durable; not possible everywhere (Windows), so best effort."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete temporary files left in ``folder`` (and its records folder) by a refrestore
    process that no longer runs. Files of live processes are left alone."""
    removed: list[Path] = []
    for where in (Path(folder), Path(folder) / RECORDS):
        try:
            names = os.listdir(where)
        except OSError:
            continue
        for name in names:
            if not name.startswith(TEMP_PREFIX):
                continue
            pid_text = name[len(TEMP_PREFIX):].split("-", 1)[0]
            if pid_text.isdigit() and _pid_alive(int(pid_text)):
                continue
            try:
                os.unlink(where / name)
                removed.append(where / name)
            except OSError:
                pass
    return removed


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
