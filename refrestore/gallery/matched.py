"""Quality-matched gallery embeddings: compare a degraded query with gallery faces degraded alike.

dlib puts a 24-px face about as close to every stranger's clean photo as to its own person's,
so a degraded query is also scored against copies of the candidate people's gallery faces
degraded to the query's estimated face width (:func:`degrade_to_width`). The recipe is fixed
and deterministic (area downscale with a matched blur, JPEG, no noise) and deliberately not
the benchmark's query degradation (Gaussian blur, noise 10, JPEG 40), so figures measured with
it are not tuned to one kind of damage.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import stat
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from refrestore.identity import IdentityModel
from refrestore.identity.levels import RECIPE, degrade_to_width
from refrestore.imageio import ImageReadError

from .index import Gallery, GalleryFace

logger = logging.getLogger(__name__)

# Width levels (px, the face's width in its photo) at which gallery faces are degraded; a
# query takes the nearest level (in log width), none when it is wider than CLEAN_WIDTH.
LEVELS: tuple[int, ...] = (24, 48)
CLEAN_WIDTH = 96.0


def level_for(detail: float, face_width: float | None, details: tuple[float, ...],
              widths: tuple[float, ...] = (24.0, 48.0, 96.0)) -> int | None:
    """The matched level of a query, or None when it is clean enough for the clean gallery.

    The face's width is read off its detail (sharpness) between the anchors of the rule (the
    median detail of 24 px, 48 px and clean queries, ``details``) and, when the photo says how
    wide the face is, the narrower of the two is taken (an upscaled small face is still small).
    """
    width = float(np.interp(detail, details, widths))
    if face_width is not None and face_width > 0:
        width = min(width, float(face_width))
    if width >= 0.75 * CLEAN_WIDTH:
        return None
    logs = np.log(np.asarray(LEVELS, dtype=np.float64))
    return int(LEVELS[int(np.argmin(np.abs(logs - math.log(max(width, 1.0)))))])


def _face_key(face: GalleryFace) -> str:
    # content hash + face index: a moved photo is still a hit, an edited one a miss
    return f"{face.sha256 or face.path}#{face.face_index}"


class MatchedCache:
    """Matched-quality embeddings on disk: one ``.npz`` per level under
    ``<cache root>/matched/<identity>-<digest>/`` (face keys, a float32 matrix and the meta it
    was made with), never pickled, written to a temporary file and renamed. A file that does
    not read back as written (wrong meta, shape, non-finite or non-unit rows, too big) is
    ignored with a warning and rewritten."""

    MAX_BYTES = 256 << 20

    def __init__(self, root: Path, identity_name: str, identity_version: str, dim: int) -> None:
        digest = hashlib.sha256(f"{RECIPE}|{identity_name}|{identity_version}".encode()).hexdigest()[:12]
        slug = "".join(c if c.isalnum() or c in "._-" else "_" for c in identity_name)[:40] or "x"
        self.dir = Path(root) / "matched" / f"{slug}-{digest}"
        self.dim = int(dim)
        self.meta = json.dumps({"recipe": RECIPE, "identity": identity_name, "version": identity_version,
                                "dim": self.dim}, sort_keys=True)

    def path(self, level: int) -> Path:
        return self.dir / f"L{int(level)}.npz"

    def load(self, level: int) -> dict[str, np.ndarray]:
        path = self.path(level)
        try:
            st = path.lstat()
        except OSError:
            return {}
        try:
            if not stat.S_ISREG(st.st_mode) or st.st_size > self.MAX_BYTES:
                raise ValueError("not a regular file under the size cap")
            with np.load(path, allow_pickle=False) as z:
                meta, keys, emb = str(z["meta"]), z["keys"], z["emb"]
            if meta != self.meta:
                raise ValueError("made with another recipe or identity model")
            if keys.ndim != 1 or keys.dtype.kind != "U" or emb.dtype != np.float32 \
                    or emb.shape != (len(keys), self.dim):
                raise ValueError(f"keys {keys.shape} {keys.dtype} and matrix {emb.shape} {emb.dtype} do not fit")
            if not np.isfinite(emb).all() or (len(emb) and np.abs(np.linalg.norm(emb, axis=1) - 1).max() > 1e-3):
                raise ValueError("rows are not finite unit vectors")
        except Exception as exc:  # damaged: rebuilt from the gallery, never trusted
            logger.warning("matched-quality cache %s ignored (%s); it will be rebuilt", path, exc)
            return {}
        return {str(k): e for k, e in zip(keys.tolist(), emb)}

    def save(self, level: int, table: dict[str, np.ndarray]) -> None:
        path = self.path(level)
        path.parent.mkdir(parents=True, exist_ok=True)
        keys = np.array(sorted(table), dtype=str) if table else np.zeros(0, dtype="<U1")
        emb = (np.stack([table[k] for k in keys.tolist()]).astype(np.float32) if table
               else np.zeros((0, self.dim), dtype=np.float32))
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, meta=np.array(self.meta), keys=keys, emb=emb)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


class MatchedGallery:
    """Matched-quality embeddings of a gallery's faces, made on demand for the faces asked for
    (the top candidate people of one query), kept in memory and in a :class:`MatchedCache`."""

    def __init__(self, gallery: Gallery, identity: IdentityModel, cache: MatchedCache | None) -> None:
        self.gallery = gallery
        self.identity = identity
        self.cache = cache
        self._tables: dict[int, dict[str, np.ndarray]] = {}
        self.embedded = 0  # faces embedded by this object (the rest came from the cache)

    def _table(self, level: int) -> dict[str, np.ndarray]:
        if level not in self._tables:
            self._tables[level] = self.cache.load(level) if self.cache is not None else {}
        return self._tables[level]

    def embeddings(self, indices: Sequence[int], level: int) -> np.ndarray:
        """(len(indices), dim) unit embeddings of those gallery faces at ``level`` px."""
        table = self._table(level)
        faces = [self.gallery.faces[i] for i in indices]
        missing = [f for f in faces if _face_key(f) not in table]
        stand_in: dict[str, np.ndarray] = {}
        for f in missing:
            try:
                crop = self.gallery.aligned_image(f)
            except (ImageReadError, OSError, ValueError) as exc:
                # a photo changed or gone since indexing: its clean embedding stands in, uncached
                logger.warning("matched-quality embedding of %s skipped: %s", f.label, exc)
                stand_in[_face_key(f)] = np.asarray(f.embedding, dtype=np.float32)
                continue
            # one view, as the index embeds the clean gallery faces
            table[_face_key(f)] = self.identity.embed([degrade_to_width(crop, level)])[0].astype(np.float32)
            self.embedded += 1
        if len(stand_in) < len(missing) and self.cache is not None:
            try:
                self.cache.save(level, table)
            except OSError as exc:  # a read-only cache only costs the next run the embeddings
                logger.warning("matched-quality cache not written: %s", exc)
        if not faces:
            return np.zeros((0, self.identity.dim), dtype=np.float32)
        return np.stack([stand_in.get(_face_key(f), table.get(_face_key(f))) for f in faces])
