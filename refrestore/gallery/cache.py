"""On-disk cache of the gallery index: one entry per photo content, never pickled.

Layout under ``<cache root>/gallery/<key>/``, where ``key`` names the index format, the detector
and the identity model with its version (changing any of them starts a fresh, separate cache):

- ``entries/<sha[:2]>/<sha256>.json``: the photo's face records (boxes, landmarks, pose,
  expression, quality), written last, so its presence marks a complete entry;
- ``entries/<sha[:2]>/<sha256>.npy``: the (faces, dim) float32 embeddings, read with
  ``allow_pickle=False``;
- ``files.json``: path -> content hash of the photos seen in earlier builds, used to notice
  changed and deleted photos and to drop their stale entries;
- ``snapshot.index`` (JSON) + ``snapshot.matrix`` (``.npy`` format): the whole last build in
  two files (each path's size, mtime and content hash, every entry's face records, one
  embedding matrix), so that a gallery whose photos did not change loads with one JSON parse,
  one array read and a ``stat`` per photo, without hashing or opening any photo (5,000 faces
  in 0.79 s, ``benchmarks/bench_gallery_scale.py``).
  A photo whose size or mtime changed is hashed and looked up as before.

Entries are keyed by content, so a photo that was moved or copied is still a cache hit and an
edited photo is a miss. Every write goes to a temporary file in the same folder and is then
renamed over the target, so a crash never leaves a half-written entry; a damaged entry is
reported by :class:`CacheCorrupt` and the caller rebuilds it.

Everything read back is distrusted: only regular files are opened (non-blocking, so a FIFO in
place of an entry is refused rather than waited on), each file is capped in size, JSON nested
too deeply is damage rather than a crash, and an ``.npy`` header is checked (dtype, shape, and
its byte count against the file's) before any array is made, so a header declaring 10^12 rows
costs nothing. The face records' fields are checked by :mod:`refrestore.gallery.index`.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from refrestore.fileio import read_regular_bytes, replace_file

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: pitch from the nose drop
# Size caps on what is read back: a photo's entry holds a few KB per face; the snapshot and the
# file list grow with the gallery (5,000 faces: about 4 MB of JSON, 2.5 MB of embeddings).
MAX_ENTRY_BYTES = 16 << 20
MAX_SNAPSHOT_BYTES = 2 << 30
_SHA = re.compile(r"^[0-9a-f]{64}$")


class CacheCorrupt(Exception):
    """A cache entry exists but cannot be read back as written."""


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:40] or "x"


def cache_key(detector_key: str, identity_name: str, identity_version: str) -> str:
    digest = hashlib.sha256(f"{FORMAT_VERSION}|{detector_key}|{identity_name}|{identity_version}"
                            .encode()).hexdigest()[:12]
    return f"v{FORMAT_VERSION}-{_slug(detector_key)}-{_slug(identity_name)}-{digest}"


def _atomic_write_bytes(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # Private like the gallery it describes; rebuilt when lost, so not fsynced.
    replace_file(target, lambda fh: fh.write(data), 0o600, durable=False)


def _read(path: Path, max_bytes: int) -> bytes | None:
    """A cache file's bytes; None when absent; CacheCorrupt when it is not a readable regular file."""
    try:
        return read_regular_bytes(path, max_bytes)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CacheCorrupt(f"{path.name}: {exc.strerror or exc}") from None


def _json(raw: bytes, what: str) -> Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise CacheCorrupt(f"{what} is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise CacheCorrupt(f"{what} is not JSON ({exc})") from None


def parse_npy(raw: bytes, dim: int, rows: int | None = None) -> np.ndarray:
    """A (rows, dim) float32 array from ``.npy`` bytes, checked before it is made: dtype, shape
    and the data's byte count must match the header (never a pickle, never a huge allocation)."""
    f = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise CacheCorrupt(f"npy format version {version}")
    except CacheCorrupt:
        raise
    except (ValueError, SyntaxError, TypeError, EOFError, RecursionError) as exc:
        raise CacheCorrupt(f"npy header unreadable ({exc})") from None
    # float32 of either byte order (np.save writes the machine's own)
    if dtype not in (np.dtype("<f4"), np.dtype(">f4")) or fortran or len(shape) != 2 or shape[1] != dim:
        raise CacheCorrupt(f"array {dtype} {shape}{' fortran' if fortran else ''}, expected float32 (n, {dim})")
    if rows is not None and shape[0] != rows:
        raise CacheCorrupt(f"array has {shape[0]} rows, expected {rows}")
    data = len(raw) - f.tell()
    if shape[0] * dim * 4 != data:  # the header's claim against the bytes that are there
        raise CacheCorrupt(f"array header says {shape[0]}x{dim} but the file holds {data} bytes of data")
    array = np.frombuffer(raw, dtype=dtype, count=shape[0] * dim, offset=f.tell()).reshape(shape[0], dim)
    if not np.isfinite(array).all():
        raise CacheCorrupt("embeddings are not finite")
    return array.astype(np.float32)  # a writable, native copy


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)
    return buf.getvalue()


class IndexCache:
    """Reads and writes gallery entries for one (detector, identity model) combination."""

    def __init__(self, root: Path, detector_key: str, identity_name: str, identity_version: str,
                 dim: int) -> None:
        self.dir = Path(root) / "gallery" / cache_key(detector_key, identity_name, identity_version)
        self.dim = dim
        self.meta = {"format": FORMAT_VERSION, "detector": detector_key,
                     "identity": identity_name, "identity_version": identity_version}

    def _paths(self, sha: str) -> tuple[Path, Path]:
        folder = self.dir / "entries" / sha[:2]
        return folder / f"{sha}.json", folder / f"{sha}.npy"

    def load(self, sha: str) -> tuple[dict[str, Any], np.ndarray] | None:
        """The entry for a content hash, None when absent; CacheCorrupt when unreadable.

        Only the file level is checked here (see the module docstring); the face records'
        fields are checked where they are used (``index._faces_from_record``)."""
        jpath, npath = self._paths(sha)
        raw = _read(jpath, MAX_ENTRY_BYTES)
        if raw is None:
            return None
        record = _json(raw, "entry")
        if not isinstance(record, dict) or not isinstance(record.get("faces"), list):
            raise CacheCorrupt("entry is not a face list")
        for key, value in self.meta.items():
            if record.get(key) != value:
                raise CacheCorrupt(f"entry has {key}={record.get(key)!r:.40}, expected {value!r}")
        if record.get("sha256") != sha:
            raise CacheCorrupt("entry hash does not match its name")
        raw_emb = _read(npath, MAX_ENTRY_BYTES)
        if raw_emb is None:
            raise CacheCorrupt("embeddings file missing")
        return record, parse_npy(raw_emb, self.dim, rows=len(record["faces"]))

    def store(self, sha: str, record: dict[str, Any], embeddings: np.ndarray) -> None:
        jpath, npath = self._paths(sha)
        full = {**record, **self.meta, "sha256": sha}
        try:
            _atomic_write_bytes(npath, _npy_bytes(embeddings.reshape(-1, self.dim)))
            # the JSON goes last: it is the marker of a complete entry
            _atomic_write_bytes(jpath, json.dumps(full, separators=(",", ":")).encode("utf-8"))
        except OSError as exc:  # a read-only or full cache only costs speed
            logger.warning("could not write gallery cache entry %s: %s", jpath, exc)

    def drop(self, sha: str) -> None:
        for p in self._paths(sha):
            try:
                p.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                logger.debug("could not remove %s: %s", p, exc)

    # --- the whole last build in two files ----------------------------------------------------

    def _snapshot_paths(self) -> tuple[Path, Path]:
        # Own suffixes: *.json / *.npy stay the per-photo entries (and files.json) only.
        return self.dir / "snapshot.index", self.dir / "snapshot.matrix"

    def drop_snapshot(self) -> None:
        for p in self._snapshot_paths():
            try:
                p.unlink()
            except FileNotFoundError:
                pass

    def load_snapshot(self) -> tuple[dict[str, tuple[int, int, str]], dict[str, tuple[dict[str, Any], np.ndarray]]]:
        """(path -> (size, mtime_ns, sha), sha -> (record, embeddings)); empty when absent or damaged.

        The records' own fields are checked where each is used, as for the per-photo entries."""
        jpath, npath = self._snapshot_paths()
        try:
            raw_doc = _read(jpath, MAX_SNAPSHOT_BYTES)
            raw = _read(npath, MAX_SNAPSHOT_BYTES)
            if raw_doc is None or raw is None:
                return {}, {}
            doc = _json(raw_doc, "snapshot.index")
            if not isinstance(doc, dict):
                raise CacheCorrupt("snapshot.index is not an object")
            for key, value in self.meta.items():
                if doc.get(key) != value:
                    raise CacheCorrupt(f"snapshot has {key}={doc.get(key)!r:.40}")
            # the JSON names the exact array it was written with: a crash between the two
            # writes, or a stray copy, can never pair records with another build's embeddings
            if hashlib.sha256(raw).hexdigest() != doc.get("matrix_sha256"):
                raise CacheCorrupt("snapshot.matrix is not the array snapshot.index was written with")
            matrix = parse_npy(raw, self.dim)
            files_doc, entries_doc = doc.get("files"), doc.get("entries")
            if not isinstance(files_doc, dict) or not isinstance(entries_doc, dict):
                raise CacheCorrupt("snapshot has no files or entries map")
            files: dict[str, tuple[int, int, str]] = {}
            for k, v in files_doc.items():
                if not (isinstance(v, list) and len(v) == 3 and _is_count(v[0]) and _is_int(v[1])
                        and isinstance(v[2], str) and _SHA.match(v[2])):
                    raise CacheCorrupt("snapshot file record is not [size, mtime_ns, sha256]")
                files[k] = (v[0], v[1], v[2])
            entries: dict[str, tuple[dict[str, Any], np.ndarray]] = {}
            for sha, value in entries_doc.items():
                if not (_SHA.match(sha) and isinstance(value, list) and len(value) == 2
                        and _is_count(value[0]) and isinstance(value[1], dict)
                        and isinstance(value[1].get("faces"), list)):
                    raise CacheCorrupt("snapshot entry is not [row, record]")
                row, record = value
                n = len(record["faces"])
                if row + n > len(matrix):
                    raise CacheCorrupt("snapshot row out of range")
                entries[sha] = (record, matrix[row:row + n])
            return files, entries
        except CacheCorrupt as exc:
            logger.warning("gallery snapshot %s is damaged (%s); using the per-photo entries", jpath, exc)
            return {}, {}

    def save_snapshot(self, files: dict[str, tuple[int, int, str]],
                      entries: dict[str, tuple[dict[str, Any], np.ndarray]]) -> None:
        rows, blocks, doc_entries = 0, [], {}
        for sha, (record, emb) in entries.items():
            emb = np.asarray(emb, dtype=np.float32).reshape(-1, self.dim)
            doc_entries[sha] = [rows, record]
            blocks.append(emb)
            rows += len(emb)
        matrix = np.concatenate(blocks) if blocks else np.zeros((0, self.dim), dtype=np.float32)
        raw = _npy_bytes(matrix)
        doc = {**self.meta, "files": {k: list(v) for k, v in files.items()}, "entries": doc_entries,
               "matrix_sha256": hashlib.sha256(raw).hexdigest()}
        try:
            npath, jpath = self._snapshot_paths()[::-1]
            _atomic_write_bytes(npath, raw)
            _atomic_write_bytes(jpath, json.dumps(doc, separators=(",", ":")).encode("utf-8"))
        except OSError as exc:
            logger.warning("could not write the gallery snapshot: %s", exc)

    # --- which path had which content last time -------------------------------------------

    def _files_path(self) -> Path:
        return self.dir / "files.json"

    def load_files(self) -> dict[str, str]:
        path = self._files_path()
        try:
            raw = _read(path, MAX_SNAPSHOT_BYTES)
            if raw is None:
                return {}
            data = _json(raw, "files.json")
            if not isinstance(data, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) and _SHA.match(v) for k, v in data.items()):
                raise CacheCorrupt("not a path -> hash map")
            return data
        except CacheCorrupt as exc:
            logger.warning("gallery cache file list %s is damaged (%s); starting it afresh", path, exc)
            return {}

    def save_files(self, files: dict[str, str]) -> None:
        try:
            _atomic_write_bytes(self._files_path(),
                                json.dumps(files, indent=0, sort_keys=True).encode("utf-8"))
        except OSError as exc:
            logger.warning("could not write gallery cache file list: %s", exc)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_count(value: Any) -> bool:
    """A non-negative int read from JSON (bool is an int subclass: not a count)."""
    return _is_int(value) and value >= 0
