"""The local weights folder: where each file lives, and whether the copy there can be trusted.

A file counts as present only when its size matches the manifest and its sha256 matches the
manifest (or, where the manifest does not know the hash, the hash recorded on first use). Hashing
a 350 MB file takes seconds, so the result is cached in ``.verified.json`` keyed by the file's
size, mtime, ctime and inode: any rewrite of the file changes ctime, so a tampered file is always
hashed again.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Iterator

from .. import paths
from .errors import WeightsError
from .manifest import Manifest, ManifestEntry, check_file_name, load_manifest

try:  # POSIX only; elsewhere downloads still work but are not guarded against a second process
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

VERIFIED_CACHE = ".verified.json"
MAX_SIDECAR_BYTES = 16 << 20  # thousands of entries fit in far less
RECORDED_HASHES = "recorded_hashes.json"
USER_ADDED = "user_added.json"  # files the user added as a named model (--from-file)
_SIDECAR_LOCK = ".sidecars.lock"
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class FileStatus:
    """What the store knows about one manifest entry, without raising."""

    entry: ManifestEntry
    path: Path
    state: str  # "present" | "missing" | "corrupt"
    size_on_disk: int | None
    problem: str = ""
    user_added: bool = False  # the user's own file, checked against its recorded size and hash

    @property
    def present(self) -> bool:
        return self.state == "present"


class WeightStore:
    """A weights folder plus the manifest that says what belongs in it."""

    def __init__(self, directory: Path | None = None, manifest: Manifest | None = None) -> None:
        self.directory: Path = Path(directory).expanduser() if directory else paths.weights_dir()
        self.manifest: Manifest = manifest if manifest is not None else load_manifest()

    # ---- locations ----------------------------------------------------------------------
    def path(self, name: str) -> Path:
        """Where a file is (or would be). Embedded files live beside the manifest."""
        entry = self.manifest.get(name)
        if entry is not None and entry.embedded:
            return self.manifest.embedded_path(entry)
        check_file_name(name)
        path = self.directory / name
        if path.parent != self.directory:  # belt and braces: never leave the folder
            raise WeightsError(f"invalid weights file name {name!r}")
        return path

    def download_command(self, name: str, *, force: bool = False) -> str:
        """The exact command that (re)fetches ``name`` into this store."""
        entry = self.manifest.get(name)
        target = entry.models[0] if entry is not None and len(entry.models) == 1 else name
        if force:
            target = name
        parts = ["refrestore", "download-weights"]
        if force:
            parts.append("--force")
        parts.append(target)
        if _resolved(self.directory) != _resolved(paths.weights_dir()):
            parts += ["--dir", _quote(str(self.directory))]
        if self.manifest.user_supplied:
            parts += ["--manifest", _quote(str(self.manifest.source))]
        return " ".join(parts)

    # ---- verification -------------------------------------------------------------------
    def find(self, name: str) -> Path | None:
        """The verified file, None when absent; WeightsError when a copy fails its check."""
        entry = self.manifest.entry(name)
        path = self.path(name)
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise WeightsError(f"cannot read {path}: {exc.strerror or exc}") from None
        if not path.is_file():
            raise WeightsError(f"{path} is not a file")
        hint = self._fix_hint(entry)
        user = self.user_added(entry.name)
        if user is not None:
            # The user's own file: its recorded size and hash stand in for the manifest's.
            if stat.st_size != user["size"] or self._hash_cached(path, stat) != user["sha256"]:
                raise WeightsError(
                    f"{path} is not the file added with --from-file (sha256 {user['sha256'][:12]}...): "
                    f"it was changed or replaced; {hint}"
                )
            return path
        if entry.size is not None and stat.st_size != entry.size:
            raise WeightsError(
                f"{path} has {stat.st_size} bytes but the manifest says {entry.size} "
                f"(incomplete or wrong file); {hint}"
            )
        expected = entry.sha256 or self.recorded_hash(entry)
        if expected is None and entry.embedded:
            return path  # nothing known to check against; it ships with the package
        actual = self._hash_cached(path, stat)
        if expected is None:
            # First sight of a file whose hash nobody published: pin it (trust on first use).
            try:
                self.record_hash(entry, actual, source=str(path))
            except OSError as exc:  # a read-only folder: the file is still usable
                log.debug("cannot record the hash of %s: %s", path, exc)
            return path
        if actual != expected:
            raise WeightsError(
                f"{path} does not match its sha256 (expected {expected[:12]}..., "
                f"found {actual[:12]}...): the file is corrupt or was replaced; {hint}"
            )
        return path

    def require(self, name: str) -> Path:
        """The verified file; WeightsError saying what to run when it is missing."""
        path = self.find(name)
        if path is not None:
            return path
        entry = self.manifest.entry(name)
        if entry.embedded:
            raise WeightsError(
                f"embedded weights {name} are missing from the installed package ({self.path(name)}); "
                "reinstall refrestore"
            )
        needed = ", ".join(entry.models)
        raise WeightsError(
            f"{entry.name} (needed by {needed}) is not in {self.directory}; "
            f"run `{self.download_command(entry.name)}`"
        )

    def has_model(self, model_name: str) -> bool:
        """True when every file of the model is present and verified.

        A copy that fails its check raises WeightsError rather than reading as missing.
        """
        entries = self.manifest.for_model(model_name)
        return bool(entries) and all(self.find(e.name) is not None for e in entries)

    def status(self, name: str) -> FileStatus:
        """Present, missing or corrupt, never raising (for listings)."""
        entry = self.manifest.entry(name)
        path = self.path(name)
        size = path.stat().st_size if path.is_file() else None
        user = self.user_added(name) is not None
        try:
            found = self.find(name)
        except WeightsError as exc:
            return FileStatus(entry, path, "corrupt", size, str(exc), user)
        return FileStatus(entry, path, "present" if found else "missing", size, user_added=user and found is not None)

    def _fix_hint(self, entry: ManifestEntry) -> str:
        if entry.embedded:
            return "reinstall refrestore"
        own = self.download_command(entry.name)
        return (f"run `{self.download_command(entry.name, force=True)}`, or to use a file of your own "
                f"of the same architecture, `{own} --from-file FILE`")

    # ---- files the user added (--from-file) ---------------------------------------------
    def user_added(self, name: str) -> dict[str, Any] | None:
        """The record of a file the user added as ``name``, or None."""
        record = self._read_json(self.directory / USER_ADDED).get(name)
        if not isinstance(record, dict):
            return None
        sha, size = record.get("sha256"), record.get("size")
        if not (_is_sha256(sha) and isinstance(size, int) and not isinstance(size, bool) and size > 0):
            log.warning("ignoring the damaged record of %s in %s", name, self.directory / USER_ADDED)
            return None
        return record

    def record_user_added(self, entry: ManifestEntry, sha256: str, size: int, **facts: str) -> None:
        log.info("recording %s as user-added (sha256 %s)", entry.name, sha256)
        with self._update_json(USER_ADDED) as data:
            data[entry.name] = {"sha256": sha256, "size": size, **facts}

    def forget_user_added(self, name: str) -> None:
        if self.user_added(name) is None:
            return
        with self._update_json(USER_ADDED) as data:
            data.pop(name, None)

    # ---- recorded hashes (trust on first use) ------------------------------------------
    def recorded_hash(self, entry: ManifestEntry) -> str | None:
        """The hash recorded at the first verified download of a file with no published hash."""
        record = self._read_json(self.directory / RECORDED_HASHES).get(entry.name)
        if not isinstance(record, dict):
            return None
        # A record made for a different size belongs to another file: ignore it.
        if entry.size is not None and record.get("size") != entry.size:
            return None
        sha = record.get("sha256")
        return sha if _is_sha256(sha) else None

    def record_hash(self, entry: ManifestEntry, sha256: str, *, source: str = "") -> None:
        """Pin ``sha256`` for an entry whose hash the manifest does not know."""
        if entry.sha256 is not None:
            return
        log.info("recording sha256 %s for %s (no published hash)", sha256, entry.name)
        with self._update_json(RECORDED_HASHES) as data:
            data[entry.name] = {"sha256": sha256, "size": entry.size, "source": source}

    def forget_recorded_hash(self, name: str) -> None:
        with self._update_json(RECORDED_HASHES) as data:
            data.pop(name, None)

    # ---- verification cache ---------------------------------------------------------------
    def remember_verified(self, path: Path, sha256: str) -> None:
        """Cache the hash of a file just written, so the next find() need not re-hash it."""
        with contextlib.suppress(OSError):
            self._store_cache(path, path.stat(), sha256)

    def _hash_cached(self, path: Path, stat: os.stat_result) -> str:
        key = _stat_key(stat)
        cached = self._read_json(self.directory / VERIFIED_CACHE).get(str(path.absolute()))
        if isinstance(cached, dict) and cached.get("stat") == key:
            sha = cached.get("sha256")
            if _is_sha256(sha):
                return sha
        try:
            sha = sha256_file(path)
        except OSError as exc:
            raise WeightsError(f"cannot read {path}: {exc.strerror or exc}") from None
        self._store_cache(path, stat, sha)
        return sha

    def _store_cache(self, path: Path, stat: os.stat_result, sha256: str) -> None:
        if not self.directory.is_dir():
            return  # never create folders just to cache a hash
        try:
            with self._update_json(VERIFIED_CACHE) as data:
                data[str(path.absolute())] = {"stat": _stat_key(stat), "sha256": sha256}
        except OSError as exc:  # a read-only folder only costs re-hashing next time
            log.debug("cannot write verification cache: %s", exc)

    # ---- small JSON sidecars ----------------------------------------------------------------
    @staticmethod
    def _read_json(path: Path) -> dict[str, Any]:
        from .manifest import read_regular_text

        try:
            # Regular files only (a FIFO would hang the read), capped in size; deep nesting
            # raises RecursionError in the parser: each is a sidecar to ignore and rewrite.
            data = json.loads(read_regular_text(path, MAX_SIDECAR_BYTES))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, RecursionError) as exc:
            log.warning("ignoring unreadable %s: %s", path, exc)
            return {}
        return data if isinstance(data, dict) else {}

    @contextlib.contextmanager
    def _update_json(self, file_name: str) -> Iterator[dict[str, Any]]:
        """Read-modify-write a sidecar under a lock, replacing it atomically."""
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.directory / file_name
        with file_lock(self.directory / _SIDECAR_LOCK):
            data = self._read_json(target)
            yield data
            fd, tmp = tempfile.mkstemp(prefix=f".{file_name}.", suffix=".tmp", dir=self.directory)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    json.dump(data, handle, indent=1, sort_keys=True)
                os.chmod(tmp, 0o644)  # mkstemp makes it private; others sharing the folder may read it
                os.replace(tmp, target)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise


@contextlib.contextmanager
def file_lock(path: Path, on_wait: Any = None) -> Iterator[bool]:
    """Hold an exclusive flock on ``path``; yields True when it had to wait for another holder.

    The holder deletes the lock file before releasing it, so no empty ``*.lock`` files are
    left behind. A waiter that then gets the lock on the deleted file sees that the path no
    longer names its file and starts over on a fresh one, so two processes never both hold
    "the" lock.
    """
    waited = False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is None:
            break
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not waited and on_wait is not None:
                on_wait()
            waited = True
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous holder removed it: lock the file now at the path
    try:
        yield waited
    finally:
        if fcntl is not None:
            with contextlib.suppress(OSError):
                os.unlink(path)  # while still holding it: see above
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _is_sha256(value: Any) -> bool:
    """64 lower-case hex digits, as this store writes them (a side file is read back distrusted)."""
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _stat_key(stat: os.stat_result) -> list[int]:
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]


def _resolved(path: Path) -> Path:
    try:
        return path.expanduser().resolve()
    except OSError:
        return path.absolute()


def _quote(text: str) -> str:
    return shlex.quote(text)
