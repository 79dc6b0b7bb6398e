"""The gallery index: every face in every reference photo, with what selection needs to know.

``Gallery.build`` walks the ``--refs`` folders and files, detects every face in every photo
(a group photo gives several gallery faces), aligns each to the FFHQ 512 template (a photo that
already is an aligned crop is recognised and used as it is), and records per face an identity
embedding, head pose, expression cues and quality. Results are cached on disk per photo content
(see :mod:`refrestore.gallery.cache`), so a second build over the same photos only hashes them.
"""
from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np

from refrestore.align import FFHQ_SIZE, align_face, detect_aligned_crop, is_aligned_crop
from refrestore.faces import DetectedFace
from refrestore.identity import IdentityModel, embed_gallery, gallery_dim, gallery_levels
from refrestore.imageio import ImageReadError

from .cache import CacheCorrupt, IndexCache, file_sha256
from .records import MAX_FACES, MAX_SIDE, _check_alignment, _face_from_json, _face_to_json, _integer, _number, _points
from .pose import FaceAnalyzer
from .quality import Quality, assess

logger = logging.getLogger(__name__)

# Faces narrower than this in their photo carry too little detail to guide a restoration
# (and are mostly background faces and false detections).
MIN_FACE_WIDTH = 24.0

Progress = Callable[[int, int, str], None]
CROP_CACHE = 32  # aligned reference crops kept per gallery (768 KB each)


@dataclass
class GalleryFace:
    """One face of one gallery photo."""

    path: Path
    face_index: int  # order in the photo, largest face first
    face: DetectedFace  # in the photo's pixel coordinates
    affine: np.ndarray  # (2, 3) photo -> aligned 512 crop
    aligned_crop: bool  # the photo itself is an aligned crop (used without re-warping)
    embedding: np.ndarray  # (dim,) float32, unit
    yaw: float
    pitch: float
    roll: float
    eye_open: float
    mouth_open: float
    quality: Quality
    image_size: tuple[int, int]  # (width, height) of the photo
    sha256: str = ""
    person: str = ""  # who this is: the photo's folder, or a cluster of top-level photos
    labelled: bool = False  # the person comes from a folder name (not from clustering)
    # (levels, dim) unit embeddings of the face degraded to the identity model's gallery levels
    # (refrestore.identity.levels), None for models without levels
    levels: np.ndarray | None = None

    @property
    def label(self) -> str:
        return f"{self.path.name}#{self.face_index}"


class GalleryProblem(NamedTuple):
    """A gallery file that gave no faces, and why (one line)."""

    path: Path
    reason: str


@dataclass
class BuildStats:
    files: int = 0
    faces: int = 0
    from_cache: int = 0
    indexed: int = 0
    failed: int = 0
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    seconds: float = 0.0


def load_rgb(path: Path) -> np.ndarray:
    """A photo as HxWx3 RGB uint8, upright (EXIF orientation applied).

    Raises ``refrestore.imageio.ImageReadError`` with a one-line reason."""
    from refrestore.imageio import read_image

    return read_image(Path(path)).rgb


def walk_sources(sources: Iterable[Path]) -> tuple[list[Path], list[GalleryProblem]]:
    """Image files under the given folders (recursive) and files, in a stable order."""
    from refrestore.discover import find_inputs

    found, problems = find_inputs([Path(s).expanduser().resolve() for s in sources], recursive=True)
    files: list[Path] = []
    seen: set[Path] = set()
    for item in found:
        # under resolved roots an absolute path is enough (no per-file resolve: 5,000 photos);
        # a photo reached twice through a link is still indexed once, by its content hash
        key = Path(os.path.abspath(item.path))
        if key not in seen:
            seen.add(key)
            files.append(key)
    return files, [GalleryProblem(Path(p), reason) for p, reason in problems]


def _under(path: str, roots: Sequence[Path]) -> bool:
    p = Path(path)
    return any(p == r or r in p.parents for r in roots)


def detector_key(detector: Any) -> str:
    """What identifies a detector's output for caching: its name and settings."""
    parts = [str(getattr(detector, "name", type(detector).__name__))]
    for attr in ("version", "threshold", "network"):
        value = getattr(detector, attr, None)
        if value is not None:
            parts.append(f"{attr}={value}")
    return ",".join(parts)


def find_faces(image: np.ndarray, detector: Any) -> list[tuple[DetectedFace, bool]]:
    """Faces of a photo, each with whether the photo is itself an aligned crop of it."""
    h, w = image.shape[:2]
    if abs(h - w) <= 1:
        # A square photo may be a tight aligned crop (portrait galleries are full of them): its
        # one face is found on a small padded copy, far cheaper than searching the whole photo
        # for small faces.
        found = detect_aligned_crop(image, detector)
        if found is not None and is_aligned_crop(image, found):
            return [(found, True)]
    faces = list(detector.detect(image))
    if not faces and abs(h - w) <= 1:
        # a tight aligned crop defeats detectors unless padded first
        found = detect_aligned_crop(image, detector)
        faces = [found] if found is not None else []
    out = []
    for face in faces:
        aligned = len(faces) == 1 and abs(h - w) <= 1 and is_aligned_crop(image, face)
        out.append((face, aligned))
    return out


def aligned_crop_of(image: np.ndarray, face: DetectedFace, already_aligned: bool) -> tuple[np.ndarray, np.ndarray]:
    """(512 aligned crop, photo->crop affine)."""
    if already_aligned:
        s = FFHQ_SIZE / float(image.shape[1])
        crop = image if image.shape[0] == FFHQ_SIZE else cv2.resize(
            image, (FFHQ_SIZE, FFHQ_SIZE), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
        return np.ascontiguousarray(crop), np.array([[s, 0, 0], [0, s, 0]], dtype=np.float64)
    aligned = align_face(image, face, FFHQ_SIZE)
    return aligned.image, aligned.affine


def describe_photo(image: np.ndarray, detector: Any, analyzer: FaceAnalyzer) -> tuple[dict[str, Any], list[np.ndarray]]:
    """The photo's record (JSON-safe: its size and a record per face) and its faces' aligned crops:
    everything :func:`index_photo` does but the embedding."""
    records: list[dict[str, Any]] = []
    crops: list[np.ndarray] = []
    for face, already in find_faces(image, detector):
        if face.width < MIN_FACE_WIDTH:
            continue
        crop, affine = aligned_crop_of(image, face, already)
        geo = analyzer.analyze(crop, affine)
        quality = assess(crop, face, face.width)
        records.append({
            "face_index": len(records), **_face_to_json(face),
            "affine": affine.tolist(), "aligned_crop": bool(already),
            "yaw": round(geo.yaw, 3), "pitch": round(geo.pitch, 3), "roll": round(geo.roll, 3),
            "eye_open": round(geo.eye_open, 4), "mouth_open": round(geo.mouth_open, 4),
            "quality": quality.as_dict(),
        })
        crops.append(crop)
    return {"image_size": [int(image.shape[1]), int(image.shape[0])], "faces": records}, crops


def embed_crops(identity: IdentityModel, crops: list[np.ndarray]) -> np.ndarray:
    """(faces, gallery_dim) rows of a photo's aligned crops."""
    return embed_gallery(identity, crops) if crops else np.zeros((0, gallery_dim(identity)), dtype=np.float32)


def index_photo(image: np.ndarray, detector: Any, identity: IdentityModel,
                analyzer: FaceAnalyzer) -> tuple[dict[str, Any], np.ndarray]:
    """Face records (JSON-safe) and (faces, dim) embeddings of one photo."""
    record, crops = describe_photo(image, detector, analyzer)
    return record, embed_crops(identity, crops)


def _faces_from_record(path: Path, sha: str, record: dict[str, Any], emb: np.ndarray,
                       dim: int | None = None) -> list[GalleryFace]:
    """The gallery faces of a cache record; CacheCorrupt when any field is not what
    :func:`index_photo` writes (types, shapes, finite ranges), so damage is rebuilt, never used.

    ``dim`` is the identity model's own width: wider rows hold the face's level embeddings after
    its clean one (see :func:`refrestore.identity.embed_gallery`)."""
    if not isinstance(record, dict):
        raise CacheCorrupt("record is not an object")
    size, faces = record.get("image_size"), record.get("faces")
    if not isinstance(size, list) or len(size) != 2:
        raise CacheCorrupt("image_size is not [width, height]")
    width, height = (_integer(v, 1, MAX_SIDE, "image_size") for v in size)
    if not isinstance(faces, list) or len(faces) > MAX_FACES:
        raise CacheCorrupt("faces is not a list of face records")
    if emb.ndim != 2 or len(emb) != len(faces):
        raise CacheCorrupt(f"{len(faces)} face records but {len(emb)} embeddings")
    dim = emb.shape[1] if dim is None else dim
    if dim < 1 or emb.shape[1] % dim:
        raise CacheCorrupt(f"rows of {emb.shape[1]} values are not whole embeddings of {dim}")
    if not np.isfinite(emb).all():
        raise CacheCorrupt("embeddings are not finite")
    fields = set(Quality.__dataclass_fields__)
    out = []
    for i, f in enumerate(faces):
        if not isinstance(f, dict):
            raise CacheCorrupt("face record is not an object")
        q = f.get("quality")
        if not isinstance(q, dict) or set(q) != fields:
            raise CacheCorrupt("quality is not the quality record")
        aligned = f.get("aligned_crop")
        if not isinstance(aligned, bool):
            raise CacheCorrupt("aligned_crop is not true or false")
        face = _face_from_json(f, width, height)
        if not aligned:
            _check_alignment(face, width, height)
        out.append(GalleryFace(
            path=path, face_index=_integer(f.get("face_index"), 0, len(faces) - 1, "face_index"), face=face,
            affine=_points(f.get("affine"), 2, 3, (-1e6,) * 3, (1e6,) * 3, "affine"),
            aligned_crop=aligned, embedding=emb[i, :dim],
            levels=emb[i, dim:].reshape(-1, dim) if emb.shape[1] > dim else None,
            yaw=_number(f.get("yaw"), -360, 360, "yaw"), pitch=_number(f.get("pitch"), -360, 360, "pitch"),
            roll=_number(f.get("roll"), -360, 360, "roll"),
            eye_open=_number(f.get("eye_open"), -1e3, 1e3, "eye_open"),
            mouth_open=_number(f.get("mouth_open"), -1e3, 1e3, "mouth_open"),
            quality=Quality(**{k: _number(v, -1e9, 1e9, f"quality {k}") for k, v in q.items()}),
            image_size=(width, height), sha256=sha,
        ))
    return out


class Gallery:
    """The indexed reference faces. Build with :meth:`Gallery.build`."""

    def __init__(self, faces: list[GalleryFace], problems: list[GalleryProblem] | None = None,
                 identity_name: str = "", identity_version: str = "",
                 stats: BuildStats | None = None, levels: tuple[int, ...] = ()) -> None:
        self.faces = faces
        self.problems = problems or []
        self.identity_name = identity_name
        self.identity_version = identity_version
        self.levels = tuple(levels)  # face widths of every face's level embeddings
        # The one person a one-person gallery holds (a flat folder, --person DIR); None when the
        # gallery is of several people (see refrestore.gallery.decide).
        self.declared: str | None = None
        self.stats = stats or BuildStats(faces=len(faces))
        self._analyzer: FaceAnalyzer | None = None
        self._matrix: np.ndarray | None = None
        self._derived: dict[Any, Any] = {}

    def __len__(self) -> int:
        return len(self.faces)

    @property
    def embeddings(self) -> np.ndarray:
        """(faces, dim) float32."""
        if self._matrix is None or len(self._matrix) != len(self.faces):
            dim = self.faces[0].embedding.shape[0] if self.faces else 0
            self._matrix = (np.stack([f.embedding for f in self.faces]).astype(np.float32)
                            if self.faces else np.zeros((0, dim), dtype=np.float32))
        return self._matrix

    def level_embeddings(self, level: int) -> np.ndarray:
        """(faces, dim) float32: every face as seen at ``level`` px (one of :attr:`levels`)."""
        k = self.levels.index(level)

        def stack() -> np.ndarray:
            return np.stack([f.levels[k] for f in self.faces]).astype(np.float32)  # type: ignore[index]

        return self.derived(("level", level, len(self.faces)), stack)

    @property
    def persons(self) -> list[str]:
        """The person of every face (a face without one counts as a person of its own)."""
        return [f.person or f"{f.path}#{f.face_index}" for f in self.faces]

    def assign_people(self, roots: Sequence[Path], person_roots: Sequence[Path] = ()) -> None:
        """Name the person of every face: folder labels, clusters for the top-level photos; every
        photo of a one-person root (``person_roots``) is that root's person. A gallery of one such
        root is a one-person gallery (:attr:`declared`)."""
        from .people import UNLABELLED, assign_people, folder_label
        from .rules import rule_for, same_person_threshold

        rule = rule_for(self.identity_name)
        same = same_person_threshold(self.identity_name)
        labels = assign_people([f.path for f in self.faces], [f.face_index for f in self.faces],
                               self.embeddings, roots, same, person_roots)
        for f, person in zip(self.faces, labels):
            f.person = person
            f.labelled = folder_label(f.path, roots, person_roots) == person != UNLABELLED
        self.declared = None
        if len(roots) == 1 and list(person_roots) == list(roots) and rule is not None and rule.strangers is not None:
            name = person_roots[0].name
            if any(f.person == name and f.labelled for f in self.faces):
                self.declared = name
        self._derived.clear()

    def people(self) -> list[Any]:
        """One :class:`~.people.PersonSummary` per person, largest first, with suspected label errors."""
        from .people import PersonSummary, label_problems
        from .rules import same_person_threshold

        same = same_person_threshold(self.identity_name)
        persons = self.persons
        problems = label_problems([f.path for f in self.faces], [f.face_index for f in self.faces],
                                  self.embeddings, persons, [f.labelled for f in self.faces], same)
        out = []
        for name in sorted(set(persons)):
            faces = [f for f, p in zip(self.faces, persons) if p == name]
            q = [f.quality.total for f in faces]
            out.append(PersonSummary(name=name, labelled=any(f.labelled for f in faces), faces=len(faces),
                                     photos=len({f.path for f in faces}), quality_mean=float(np.mean(q)),
                                     quality_best=float(np.max(q)),
                                     suspects=[p for p in problems if p.person == name]))
        out.sort(key=lambda s: (-s.faces, s.name))
        return out

    def derived(self, key: Any, compute: Callable[[], Any]) -> Any:
        """A value computed from this gallery's faces, computed once and kept with it."""
        if key not in self._derived:
            self._derived[key] = compute()
        return self._derived[key]

    def analyzer(self) -> FaceAnalyzer:
        """The 68-point landmark fitter, created on first use and kept with this gallery."""
        if self._analyzer is None:
            self._analyzer = FaceAnalyzer()
        return self._analyzer

    def subset(self, keep: Callable[[GalleryFace], bool]) -> Gallery:
        """A gallery of the faces ``keep`` accepts (shares this one's analyzer)."""
        sub = Gallery([f for f in self.faces if keep(f)], list(self.problems),
                      self.identity_name, self.identity_version, levels=self.levels)
        sub.declared = self.declared
        sub._analyzer = self._analyzer
        return sub

    def aligned_image(self, face: GalleryFace) -> np.ndarray:
        """The 512 aligned crop of a gallery face, re-made from its photo (the last
        ``CROP_CACHE`` crops are kept, since the same references serve many faces)."""
        key = (str(face.path), face.face_index, face.sha256)
        crops: OrderedDict[tuple[str, int, str], np.ndarray] = self.derived("crops", OrderedDict)
        if key in crops:
            crops.move_to_end(key)
            return crops[key].copy()
        image = load_rgb(face.path)
        if (image.shape[1], image.shape[0]) != face.image_size:
            # the face's coordinates were checked against the size it was indexed at
            raise ImageReadError(f"{face.path}: is {image.shape[1]}x{image.shape[0]} but was indexed at "
                                 f"{face.image_size[0]}x{face.image_size[1]}; it changed during the run")
        crop, _ = aligned_crop_of(image, face.face, face.aligned_crop)
        crops[key] = crop
        while len(crops) > CROP_CACHE:
            crops.popitem(last=False)
        return crop.copy()

    @classmethod
    def build(cls, sources: list[Path], detector: Any, identity: IdentityModel,
              cache_dir: Path | None = None, progress: Progress | None = None,
              people: Sequence[Path] = ()) -> Gallery:
        """Index every face in the photos under ``sources`` (folders and files).

        ``cache_dir`` is the cache root (default ``paths.cache_dir()``). Photos that cannot be
        read, or hold no usable face, are listed in ``problems`` with a one-line reason;
        ``progress(done, total, path)`` is called after each file. ``people`` are folders (among
        ``sources``) that each hold one person (``--person DIR``); a folder with photos only at its
        top level counts as one too.
        """
        from refrestore import paths

        start = time.perf_counter()
        root = Path(cache_dir) if cache_dir is not None else paths.cache_dir()
        builder = _Builder(IndexCache(root, detector_key(detector), identity.name, identity.version,
                                      gallery_dim(identity)), detector, identity)
        files, problems = walk_sources(sources)
        builder.problems.extend(problems)
        builder.stats.files = len(files)

        def report(done: int, path: Path) -> None:
            if progress is not None:
                progress(done, len(files), str(path))

        # One photo ahead: while the identity model embeds a photo's faces, a second thread
        # decodes the next photo and finds its faces (dlib and OpenCV release the GIL), so a
        # cold gallery uses both cores. Faces, progress and the problems of photos that cannot be
        # decoded or hold no face stay in file order.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="gallery-find") as pool:
            pending: tuple[int, Path, str, Future[_Prepared]] | None = None
            for done, path in enumerate(files, start=1):
                step = builder.begin(path)
                ahead = None
                if isinstance(step, str):
                    builder.ready()
                    ahead = (done, path, step, pool.submit(builder.prepare, path))
                if pending is not None:
                    builder.finish(pending[1], pending[2], pending[3].result())
                    report(pending[0], pending[1])
                pending = ahead
                if ahead is None:
                    if step is not None:
                        builder.keep(path, step)
                    report(done, path)
            if pending is not None:
                builder.finish(pending[1], pending[2], pending[3].result())
                report(pending[0], pending[1])
        builder.forget_missing([Path(s).expanduser().resolve() for s in sources])
        builder.stats.faces = len(builder.faces)
        builder.stats.seconds = time.perf_counter() - start
        gallery = cls(builder.faces, builder.problems, identity.name, identity.version, builder.stats,
                      levels=gallery_levels(identity))
        gallery._analyzer = builder.analyzer
        roots = [Path(s).expanduser().resolve() for s in sources]
        named = {Path(p).expanduser().resolve() for p in people}
        gallery.assign_people(roots, [r for r in roots if r in named or _flat_folder(r, files)])
        return gallery


def _flat_folder(root: Path, files: Sequence[Path]) -> bool:
    """A folder whose photos all lie at its top level (none in sub-folders)."""
    if not root.is_dir():
        return False
    prefix = str(root).rstrip(os.sep) + os.sep
    under = [str(f) for f in files if str(f).startswith(prefix)]
    return bool(under) and all(os.sep not in u[len(prefix):] for u in under)


# What :meth:`_Builder.prepare` hands over: the photo's record and aligned crops, or why it could not be read.
_Prepared = tuple[dict[str, Any], list[np.ndarray]] | ImageReadError


class _Builder:
    """One build: photos are taken from the cache when their content is known, else indexed."""

    def __init__(self, cache: IndexCache, detector: Any, identity: IdentityModel) -> None:
        self.cache = cache
        self.detector = detector
        self.identity = identity
        self.previous = cache.load_files()  # path -> content hash, from earlier builds
        self.current: dict[str, str] = {}
        self.seen: dict[str, Path] = {}  # content hash -> first path with it
        self.faces: list[GalleryFace] = []
        self.problems: list[GalleryProblem] = []
        self.stats = BuildStats()
        self.analyzer: FaceAnalyzer | None = None  # made before the first prepare(), which alone uses it
        # The last build in two files (see cache.py): unchanged photos skip hashing and entries.
        self.snap_files, self.snap_entries = cache.load_snapshot()
        self.new_files: dict[str, tuple[int, int, str]] = {}
        self.new_entries: dict[str, tuple[dict[str, Any], np.ndarray]] = {}
        self.snapshot_dirty = False  # a snapshot record was damaged: write the snapshot again

    def _fail(self, path: Path, reason: str) -> None:
        self.problems.append(GalleryProblem(path, reason))
        self.stats.failed += 1

    def add(self, path: Path) -> None:
        """Index one photo (or take it from the cache), all in this thread."""
        step = self.begin(path)
        if isinstance(step, str):
            self.ready()
            self.finish(path, step, self.prepare(path))
        elif step is not None:
            self.keep(path, step)

    def begin(self, path: Path) -> str | list[GalleryFace] | None:
        """In file order: the photo's faces when the cache has them, its content hash when it must
        be indexed (:meth:`prepare`, then :meth:`finish`), None when there is nothing to add (it
        cannot be read, or its content was already seen)."""
        key = str(path)
        try:
            st = os.stat(path)
            known = self.snap_files.get(key)
            if known is not None and known[:2] == (st.st_size, st.st_mtime_ns):
                sha = known[2]
            else:
                sha = file_sha256(path)
        except OSError as exc:
            self._fail(path, f"cannot read: {exc.strerror or exc}")
            return None
        self.current[key] = sha
        self.new_files[key] = (int(st.st_size), int(st.st_mtime_ns), sha)
        if sha in self.seen:
            logger.info("%s has the same content as %s; indexed once", path, self.seen[sha])
            return None
        self.seen[sha] = path
        if self.previous.get(key) not in (None, sha):
            self.stats.changed.append(key)
            logger.info("%s changed since the last index; re-indexing it", path)
        faces = self._cached(path, sha)
        return sha if faces is None else faces

    def ready(self) -> None:
        """Make the landmark fitter before the first photo is prepared (not at all when every
        photo comes from the cache: loading it takes a while)."""
        if self.analyzer is None:
            self.analyzer = FaceAnalyzer()

    def prepare(self, path: Path) -> _Prepared:
        """Decode the photo and describe its faces (no embedding): safe to run in another thread
        while this one embeds, as it touches only the detector and the landmark fitter."""
        try:
            image = load_rgb(path)
        except ImageReadError as exc:
            return exc
        assert self.analyzer is not None, "ready() first"
        return describe_photo(image, self.detector, self.analyzer)

    def finish(self, path: Path, sha: str, prepared: _Prepared) -> None:
        """Embed a prepared photo's faces, check and cache its record, and add its faces."""
        if isinstance(prepared, ImageReadError):
            self._fail(path, str(prepared))
            return
        record, crops = prepared
        emb = np.asarray(embed_crops(self.identity, crops), dtype=np.float32)
        try:
            faces = _faces_from_record(path, sha, record, emb, self.identity.dim)
        except CacheCorrupt as exc:  # the same checks as on reading back: never cache what fails them
            self._fail(path, f"indexing gave an unusable face record ({exc})")
            return
        self.cache.store(sha, record, emb)
        self.new_entries[sha] = (record, emb)
        self.stats.indexed += 1
        self.keep(path, faces)

    def keep(self, path: Path, faces: list[GalleryFace]) -> None:
        if not faces:
            self.problems.append(GalleryProblem(path, "no face found"))
        self.faces.extend(faces)

    def _cached(self, path: Path, sha: str) -> list[GalleryFace] | None:
        """The photo's faces from the snapshot, else from its own entry; None to index it anew.

        A damaged record is warned about and dropped (the snapshot is then rewritten), so it
        costs one re-index, never a failed run."""
        entry = self.snap_entries.get(sha)
        if entry is not None:
            try:
                faces = _faces_from_record(path, sha, *entry, self.identity.dim)
            except CacheCorrupt as exc:
                logger.warning("gallery snapshot record for %s is damaged (%s); not using it", path, exc)
                self.snapshot_dirty = True
            else:
                self.new_entries[sha] = entry
                self.stats.from_cache += 1
                return faces
        try:
            entry = self.cache.load(sha)
            if entry is None:
                return None
            faces = _faces_from_record(path, sha, *entry, self.identity.dim)
        except CacheCorrupt as exc:
            logger.warning("gallery cache entry for %s is damaged (%s); rebuilding it", path, exc)
            self.cache.drop(sha)
            return None
        self.new_entries[sha] = entry
        self.stats.from_cache += 1
        return faces

    def forget_missing(self, roots: list[Path]) -> None:
        """Note photos gone from the walked folders; drop contents no path refers to any more."""
        removed = [p for p in self.previous if p not in self.current and _under(p, roots)]
        self.stats.removed = removed
        for p in removed:
            logger.info("%s is no longer in the gallery; dropping it from the index", p)
        merged = {k: v for k, v in self.previous.items() if k not in removed}
        merged.update(self.current)
        live = set(merged.values())
        for p in removed + self.stats.changed:
            old = self.previous.get(p)
            if old is not None and old not in live:
                self.cache.drop(old)
        if merged != self.previous:
            self.cache.save_files(merged)
        if (self.snapshot_dirty or self.new_files != self.snap_files
                or set(self.new_entries) != set(self.snap_entries)):
            self.cache.save_snapshot(self.new_files, self.new_entries)
