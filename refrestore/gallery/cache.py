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
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: pitch from the nose drop


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
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

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
        """The entry for a content hash, None when absent; CacheCorrupt when unreadable."""
        jpath, npath = self._paths(sha)
        if not jpath.exists():
            return None
        try:
            record = json.loads(jpath.read_text(encoding="utf-8"))
            if not isinstance(record, dict) or not isinstance(record.get("faces"), list):
                raise CacheCorrupt("entry is not a face list")
            for key, value in self.meta.items():
                if record.get(key) != value:
                    raise CacheCorrupt(f"entry has {key}={record.get(key)!r}, expected {value!r}")
            if record.get("sha256") != sha:
                raise CacheCorrupt("entry hash does not match its name")
            emb = np.load(npath, allow_pickle=False)
            n = len(record["faces"])
            if emb.dtype != np.float32 or emb.shape != (n, self.dim) or not np.isfinite(emb).all():
                raise CacheCorrupt(f"embeddings {emb.dtype} {emb.shape}, expected float32 ({n}, {self.dim})")
        except CacheCorrupt:
            raise
        except (OSError, ValueError, UnicodeDecodeError, EOFError) as exc:
            raise CacheCorrupt(str(exc) or type(exc).__name__) from exc
        return record, emb

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
        """(path -> (size, mtime_ns, sha), sha -> (record, embeddings)); empty when absent or damaged."""
        jpath, npath = self._snapshot_paths()
        if not jpath.exists() or not npath.exists():
            return {}, {}
        try:
            doc = json.loads(jpath.read_text(encoding="utf-8"))
            for key, value in self.meta.items():
                if doc.get(key) != value:
                    raise ValueError(f"snapshot has {key}={doc.get(key)!r}")
            raw = npath.read_bytes()
            # the JSON names the exact array it was written with: a crash between the two
            # writes, or a stray copy, can never pair records with another build's embeddings
            if hashlib.sha256(raw).hexdigest() != doc.get("matrix_sha256"):
                raise ValueError("snapshot.matrix is not the array snapshot.index was written with")
            import io

            matrix = np.load(io.BytesIO(raw), allow_pickle=False)
            if matrix.dtype != np.float32 or matrix.ndim != 2 or matrix.shape[1] != self.dim:
                raise ValueError(f"snapshot matrix {matrix.dtype} {matrix.shape}")
            files = {str(k): (int(v[0]), int(v[1]), str(v[2])) for k, v in doc["files"].items()}
            entries = {}
            for sha, (row, record) in doc["entries"].items():
                n = len(record["faces"])
                if row < 0 or row + n > len(matrix):
                    raise ValueError("snapshot row out of range")
                entries[str(sha)] = (record, matrix[row:row + n])
            if not np.isfinite(matrix).all():
                raise ValueError("snapshot embeddings are not finite")
            return files, entries
        except (OSError, ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError) as exc:
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
        if not path.exists():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
                raise ValueError("not a path -> hash map")
            return data
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            logger.warning("gallery cache file list %s is damaged (%s); starting it afresh", path, exc)
            return {}

    def save_files(self, files: dict[str, str]) -> None:
        try:
            _atomic_write_bytes(self._files_path(),
                                json.dumps(files, indent=0, sort_keys=True).encode("utf-8"))
        except OSError as exc:
            logger.warning("could not write gallery cache file list: %s", exc)
