"""The gallery index on real photos: every face, aligned crops, problems, and the disk cache."""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from refrestore.detection import init_detector
from refrestore.gallery import Gallery
from refrestore.gallery.index import load_rgb
from refrestore.gallery.pose import FaceAnalyzer, expression_cues, head_pose
from refrestore.gallery.quality import assess
from refrestore.identity import DlibIdentity

torch.set_num_threads(1)


class CountingDlib(DlibIdentity):
    """The real dlib model, counting the faces it embeds."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def embed(self, aligned):  # type: ignore[no-untyped-def]
        self.calls += len(aligned)
        return super().embed(aligned)


def side_by_side(a: np.ndarray, b: np.ndarray, height: int = 600) -> np.ndarray:
    def fit(x: np.ndarray) -> np.ndarray:
        return cv2.resize(x, (round(x.shape[1] * height / x.shape[0]), height), interpolation=cv2.INTER_AREA)

    return np.concatenate([fit(a), fit(b)], axis=1)


@pytest.fixture(scope="module")
def detector():  # type: ignore[no-untyped-def]
    return init_detector("dlib")


@pytest.fixture(scope="module")
def identity() -> CountingDlib:
    return CountingDlib()


@pytest.fixture()
def gallery_dir(shared_dir: Path, tmp_path: Path) -> Path:
    """A small gallery: two people, a group photo of both, an aligned crop, and two bad files."""
    ids = shared_dir / "data" / "identities"
    root = tmp_path / "gallery"
    (root / "family").mkdir(parents=True)
    shutil.copy(ids / "obama" / "face_recognition_obama.jpg", root / "family" / "obama1.jpg")
    shutil.copy(ids / "obama" / "face_recognition_obama1.jpg", root / "family" / "obama2.jpg")
    shutil.copy(ids / "biden" / "face_recognition_biden.jpg", root / "biden.jpg")
    group = side_by_side(load_rgb(ids / "lennon" / "openface_lennon-1.jpg"),
                         load_rgb(ids / "clapton" / "openface_clapton-1.jpg"))
    Image.fromarray(group).save(root / "family" / "group.jpg", quality=95)
    shutil.copy(shared_dir / "data" / "refbench" / "hq" / "00005" / "0.png", root / "aligned.png")
    (root / "notes.jpg").write_text("not a photo")
    (root / ".hidden.jpg").write_bytes(b"")  # hidden files are not gallery photos
    return root


def by_name(gallery: Gallery) -> dict[str, list]:
    out: dict[str, list] = {}
    for f in gallery.faces:
        out.setdefault(f.path.name, []).append(f)
    return out


def test_build_indexes_every_face_and_reports_problems(gallery_dir: Path, tmp_path: Path, detector, identity) -> None:  # type: ignore[no-untyped-def]
    progress: list[tuple[int, int, str]] = []
    g = Gallery.build([gallery_dir], detector, identity, cache_dir=tmp_path / "cache",
                      progress=lambda i, n, p: progress.append((i, n, p)))
    faces = by_name(g)
    assert set(faces) == {"obama1.jpg", "obama2.jpg", "biden.jpg", "group.jpg", "aligned.png"}
    # the group photo gives both of its faces, separately, and they are different people
    group = faces["group.jpg"]
    assert [f.face_index for f in group] == [0, 1]
    assert float(group[0].embedding @ group[1].embedding) < 0.9
    # the tight aligned crop is recognised and used as it is
    (crop_face,) = faces["aligned.png"]
    assert crop_face.aligned_crop
    np.testing.assert_array_equal(g.aligned_image(crop_face), load_rgb(gallery_dir / "aligned.png"))
    # a photo is warped onto the template
    o1 = faces["obama1.jpg"][0]
    assert not o1.aligned_crop and g.aligned_image(o1).shape == (512, 512, 3)
    # same person closer than other people
    o2 = faces["obama2.jpg"][0]
    b = faces["biden.jpg"][0]
    assert float(o1.embedding @ o2.embedding) > float(o1.embedding @ b.embedding)
    # the bad file is a problem with a one-line reason; the hidden file is not looked at
    problems = {p.path.name: p.reason for p in g.problems}
    assert set(problems) == {"notes.jpg"} and "\n" not in problems["notes.jpg"]
    assert progress and progress[-1][0] == progress[-1][1] == 6  # 5 photos + notes.jpg seen
    for f in g.faces:
        assert f.embedding.shape == (128,) and 0.0 <= f.quality.total <= 1.0
        assert -90 <= f.yaw <= 90 and -90 <= f.pitch <= 90
        assert 0.0 <= f.eye_open < 1.0 and 0.0 <= f.mouth_open < 1.5


def test_finding_the_next_photos_faces_while_embedding_keeps_file_order(gallery_dir: Path, tmp_path: Path, detector, identity) -> None:  # type: ignore[no-untyped-def]
    """Gallery.build finds one photo's faces in a second thread while it embeds the one before:
    faces, problems (an unreadable file, a photo with no face, a duplicate) and progress come out
    as the one-thread path gives them, in file order."""
    from refrestore.gallery.index import IndexCache, _Builder, detector_key, walk_sources
    from refrestore.identity import gallery_dim

    Image.fromarray(np.full((300, 400, 3), 90, np.uint8)).save(gallery_dir / "family" / "wall.jpg")  # no face
    shutil.copy(gallery_dir / "biden.jpg", gallery_dir / "family" / "biden-copy.jpg")  # same content
    progress: list[tuple[int, int, str]] = []
    g = Gallery.build([gallery_dir], detector, identity, cache_dir=tmp_path / "cache",
                      progress=lambda i, n, p: progress.append((i, n, p)))
    files, problems = walk_sources([gallery_dir])
    one = _Builder(IndexCache(tmp_path / "cache1", detector_key(detector), identity.name, identity.version,
                              gallery_dim(identity)), detector, identity)
    one.problems.extend(problems)
    for path in files:
        one.add(path)
    assert [p for _, _, p in progress] == [str(f) for f in files]
    assert [i for i, _, _ in progress] == list(range(1, len(files) + 1))
    assert [(f.path, f.face_index) for f in g.faces] == [(f.path, f.face_index) for f in one.faces]
    for a, b in zip(g.faces, one.faces):
        np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-5)
    assert [(p.path.name, p.reason) for p in g.problems] == [(p.path.name, p.reason) for p in one.problems]
    assert {p.path.name for p in g.problems} == {"notes.jpg", "wall.jpg"}
    assert g.stats.indexed == one.stats.indexed == 6 and len(files) == 8
    # cached photos and a new one between them: still in file order
    Image.open(gallery_dir / "family" / "obama2.jpg").rotate(3).save(gallery_dir / "family" / "a-new.jpg", quality=92)
    again = Gallery.build([gallery_dir], detector, identity, cache_dir=tmp_path / "cache")
    order = {str(f): i for i, f in enumerate(walk_sources([gallery_dir])[0])}
    keys = [(order[str(f.path)], f.face_index) for f in again.faces]
    assert keys == sorted(keys) and again.stats.indexed == 1 and again.stats.from_cache == 6


def test_group_faces_match_their_own_photos(shared_dir: Path, gallery_dir: Path, tmp_path: Path, detector, identity) -> None:  # type: ignore[no-untyped-def]
    ids = shared_dir / "data" / "identities"
    g = Gallery.build([gallery_dir / "family" / "group.jpg", ids / "lennon" / "openface_lennon-1.jpg",
                       ids / "clapton" / "openface_clapton-1.jpg"], detector, identity, cache_dir=tmp_path / "c")
    faces = by_name(g)
    group = faces["group.jpg"]
    lennon, clapton = faces["openface_lennon-1.jpg"][0], faces["openface_clapton-1.jpg"][0]
    sims = [[float(f.embedding @ p.embedding) for p in (lennon, clapton)] for f in group]
    # left face is Lennon, right face is Clapton (face_index orders by size; check by position)
    left, right = sorted(group, key=lambda f: f.face.box[0])
    assert float(left.embedding @ lennon.embedding) > 0.97, sims
    assert float(right.embedding @ clapton.embedding) > 0.97, sims


def test_second_build_reads_the_cache(gallery_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, detector) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("REFRESTORE_HOME", str(tmp_path / "home"))
    model = CountingDlib()
    first = Gallery.build([gallery_dir], detector, model)  # default cache: REFRESTORE_HOME/cache
    assert model.calls == len(first.faces) and first.stats.indexed == 5
    assert any((tmp_path / "home" / "cache" / "gallery").rglob("*.npy"))
    model.calls = 0
    second = Gallery.build([gallery_dir], detector, model)
    assert model.calls == 0
    assert second.stats.from_cache == 5 and second.stats.indexed == 0
    assert [(f.path, f.face_index) for f in second.faces] == [(f.path, f.face_index) for f in first.faces]
    np.testing.assert_array_equal(second.embeddings, first.embeddings)
    assert [f.quality for f in second.faces] == [f.quality for f in first.faces]
    # every cached array loads without pickle
    for npy in (tmp_path / "home" / "cache").rglob("*.npy"):
        np.load(npy, allow_pickle=False)


def test_changed_and_deleted_files_are_noticed(gallery_dir: Path, tmp_path: Path, shared_dir: Path, detector) -> None:  # type: ignore[no-untyped-def]
    cache = tmp_path / "cache"
    model = CountingDlib()
    first = Gallery.build([gallery_dir], detector, model, cache_dir=cache)
    before = {f.path.name: f for f in first.faces}
    # replace one photo by a photo of someone else, delete another
    changed = gallery_dir / "biden.jpg"
    shutil.copy(shared_dir / "data" / "identities" / "lennon" / "openface_lennon-2.jpg", changed)
    (gallery_dir / "family" / "obama2.jpg").unlink()
    model.calls = 0
    second = Gallery.build([gallery_dir], detector, model, cache_dir=cache)
    after = {f.path.name: f for f in second.faces}
    assert model.calls == 1 and second.stats.indexed == 1
    assert second.stats.changed == [str(changed.resolve())]
    assert second.stats.removed == [str((gallery_dir / "family" / "obama2.jpg").resolve())]
    assert "obama2.jpg" not in after
    assert float(after["biden.jpg"].embedding @ before["biden.jpg"].embedding) < 0.95
    # the stale entries are gone from the cache: only live contents remain
    files = json.loads(next(cache.rglob("files.json")).read_text())
    stored = {p.stem for p in cache.rglob("*.json") if p.name != "files.json"}
    assert stored <= set(files.values())
    assert before["biden.jpg"].sha256 not in stored and before["obama2.jpg"].sha256 not in stored
    assert after["biden.jpg"].sha256 in stored and len(stored) == 4


def test_corrupt_cache_is_rebuilt_with_a_warning(gallery_dir: Path, tmp_path: Path, detector, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    cache = tmp_path / "cache"
    model = CountingDlib()
    first = Gallery.build([gallery_dir], detector, model, cache_dir=cache)
    for snap in cache.rglob("snapshot.*"):  # the fast path would not read the entries at all
        snap.unlink()
    entries = sorted(p for p in cache.rglob("*.json") if p.name != "files.json")
    entries[0].write_text("{ this is not json")
    npys = sorted(cache.rglob("*.npy"))
    npys[-1].write_bytes(npys[-1].read_bytes()[:40])  # truncated array
    next(cache.rglob("files.json")).write_text("[1, 2")
    model.calls = 0
    with caplog.at_level(logging.WARNING, logger="refrestore"):
        second = Gallery.build([gallery_dir], detector, model, cache_dir=cache)
    assert second.stats.indexed == 2 and model.calls >= 2
    assert sum("damaged" in r.getMessage() for r in caplog.records) >= 3
    np.testing.assert_allclose(second.embeddings, first.embeddings, atol=1e-6)
    model.calls = 0
    third = Gallery.build([gallery_dir], detector, model, cache_dir=cache)
    assert model.calls == 0 and third.stats.from_cache == 5


def test_pickled_cache_entry_is_not_loaded(gallery_dir: Path, tmp_path: Path, detector) -> None:  # type: ignore[no-untyped-def]
    cache = tmp_path / "cache"
    model = CountingDlib()
    Gallery.build([gallery_dir / "biden.jpg"], detector, model, cache_dir=cache)
    (npy,) = cache.rglob("*.npy")
    np.save(npy, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    (snap,) = cache.rglob("snapshot.matrix")
    with open(snap, "wb") as fh:
        np.save(fh, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    model.calls = 0
    g = Gallery.build([gallery_dir / "biden.jpg"], detector, model, cache_dir=cache)
    assert model.calls == 1 and len(g.faces) == 1


def test_snapshot_loads_without_hashing_and_survives_damage(gallery_dir: Path, tmp_path: Path, detector,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    from refrestore.gallery import index as index_mod

    cache = tmp_path / "cache"
    model = CountingDlib()
    first = Gallery.build([gallery_dir], detector, model, cache_dir=cache)
    hashed: list[Path] = []
    real_hash = index_mod.file_sha256
    monkeypatch.setattr(index_mod, "file_sha256", lambda p: hashed.append(Path(p)) or real_hash(p))
    second = Gallery.build([gallery_dir], detector, model, cache_dir=cache)
    assert hashed == [] and second.stats.from_cache == 5  # one stat per photo, nothing opened
    np.testing.assert_array_equal(second.embeddings, first.embeddings)
    # an edited photo (new mtime) is hashed again; its content is unchanged, so still a hit
    import os

    target = gallery_dir / "biden.jpg"
    os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 10**9))
    third = Gallery.build([gallery_dir], detector, model, cache_dir=cache)
    assert hashed == [target.resolve()] and third.stats.indexed == 0
    # a damaged snapshot is reported and the per-photo entries serve instead
    (snap,) = cache.rglob("snapshot.matrix")
    snap.write_bytes(snap.read_bytes()[:-8] + b"\0" * 8)
    model.calls = 0
    with caplog.at_level(logging.WARNING, logger="refrestore"):
        fourth = Gallery.build([gallery_dir], detector, model, cache_dir=cache)
    assert model.calls == 0 and fourth.stats.from_cache == 5
    assert any("snapshot" in r.getMessage() and "damaged" in r.getMessage() for r in caplog.records)


def test_adding_photos_indexes_only_the_new_ones(gallery_dir: Path, tmp_path: Path, shared_dir: Path, detector) -> None:  # type: ignore[no-untyped-def]
    cache = tmp_path / "cache"
    model = CountingDlib()
    first = Gallery.build([gallery_dir], detector, model, cache_dir=cache)
    ids = shared_dir / "data" / "identities"
    new = [ids / "lennon" / "openface_lennon-2.jpg", ids / "clapton" / "openface_clapton-2.jpg"]
    for src in new:
        shutil.copy(src, gallery_dir / "family" / src.name)
    model.calls = 0
    second = Gallery.build([gallery_dir], detector, model, cache_dir=cache)
    assert second.stats.indexed == len(new) and second.stats.from_cache == first.stats.indexed
    assert model.calls == len(new)  # one face each: only the new photos were embedded
    assert len(second.faces) == len(first.faces) + len(new)


def test_missing_source_is_a_problem(tmp_path: Path, detector, identity) -> None:  # type: ignore[no-untyped-def]
    g = Gallery.build([tmp_path / "nope"], detector, identity, cache_dir=tmp_path / "c")
    assert g.faces == [] and len(g.problems) == 1
    path, reason = g.problems[0]  # unpacks like (path, reason)
    assert path.name == "nope" and reason


def test_pose_and_expression_follow_the_face(shared_dir: Path) -> None:
    analyzer = FaceAnalyzer()
    img = load_rgb(shared_dir / "data" / "refbench" / "hq" / "00005" / "11.png")  # head turned ~40 deg
    geo = analyzer.analyze(img)
    mirrored = analyzer.analyze(np.ascontiguousarray(img[:, ::-1]))
    assert abs(geo.yaw) > 20 and np.sign(geo.yaw) == -np.sign(mirrored.yaw)
    assert abs(geo.yaw + mirrored.yaw) < 5 and abs(geo.pitch - mirrored.pitch) < 5
    assert geo.eye_open > 0.18  # eyes open
    frontal = analyzer.analyze(load_rgb(shared_dir / "data" / "refbench" / "hq" / "00005" / "16.png"))
    assert abs(frontal.yaw) < 10
    # pitch ignores the mouth and chin (an open mouth is not a nod) but follows the nose tip
    lm = frontal.landmarks68.copy()
    opened = lm.copy()
    opened[57:60, 1] += 25
    opened[65:68, 1] += 25
    opened[5:12, 1] += 25
    assert head_pose(opened)[1] == pytest.approx(head_pose(lm)[1], abs=0.5)
    lowered = lm.copy()
    lowered[30, 1] += 12
    assert head_pose(lowered)[1] > head_pose(lm)[1] + 5
    assert expression_cues(opened)[1] > expression_cues(lm)[1] + 0.2


def test_quality_drops_with_degradation(shared_dir: Path) -> None:
    from refrestore.net.degrade import degrade_to_face_width

    img = load_rgb(shared_dir / "data" / "refbench" / "hq" / "00005" / "0.png")
    clean = assess(img, None, 300.0)
    low = degrade_to_face_width(img, 300.0, target_width=48, noise_sigma=10, jpeg_quality=40, seed=1)
    bad = assess(low, None, 48.0)
    assert clean.total > 0.9 and bad.total < 0.6
    assert bad.sharpness < clean.sharpness and bad.resolution < clean.resolution
    dark = assess((img * 0.15).astype(np.uint8), None, 300.0)
    assert dark.exposure < clean.exposure


def test_retinaface_gallery_matches_dlib_gallery(shared_dir: Path, tmp_path: Path, retinaface_store, detector, identity) -> None:  # type: ignore[no-untyped-def]
    """A real 4-face photo and an aligned crop, indexed with RetinaFace and with dlib: the same
    faces, the crop recognised by both, and embeddings that agree (one alignment template)."""
    sources = [shared_dir / "data" / "real_lq" / "whole" / "codeformer_02.png",
               shared_dir / "data" / "refbench" / "hq" / "00022" / "0.png"]
    retina = Gallery.build(sources, init_detector("retinaface", retinaface_store), identity,
                           cache_dir=tmp_path / "c")
    hog = Gallery.build(sources, detector, identity, cache_dir=tmp_path / "c")
    for g in (retina, hog):
        faces = by_name(g)
        assert [f.face_index for f in faces["codeformer_02.png"]] == [0, 1, 2, 3]
        assert [f.aligned_crop for f in faces["0.png"]] == [True]
    # separate cache entries per detector, and the same people found by both
    assert retina.stats.indexed == 2 and hog.stats.indexed == 2
    for r in retina.faces:
        nearest = min(hog.faces, key=lambda h, r=r: float(np.hypot(*np.subtract(h.face.center, r.face.center))))
        assert float(r.embedding @ nearest.embedding) > 0.95


# --- a damaged cache through the real CLI (issue 15, item 3) ---------------------------------
# Each case damages the cache the way a crash, a full disk, a stray tool or a hostile user
# could, then runs `fix --refs` in a subprocess with a timeout (a hang fails the case): the run
# must succeed with a warning, pick the same reference as with a clean cache, and leave the
# cache healthy again.

def _cache_folder(home: Path) -> Path:
    (folder,) = (home / "cache" / "gallery").iterdir()
    return folder


def _fix_with_refs(root: Path, home: Path, out: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", REFRESTORE_HOME=str(home), REFRESTORE_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "refrestore", "fix", str(root / "in.jpg"), "--refs",
                           str(root / "g"), "--model", "resample", "--detector", "dlib", "-o", str(root / out),
                           "--json", str(root / f"{out}.json")],
                          capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture(scope="module")
def clean_cache(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(folder with gallery g/, input in.jpg and a clean cache home/, the reference it picks)."""
    ids = shared_dir / "data" / "identities"
    root = tmp_path_factory.mktemp("damaged_cache")
    for person, names in {"obama": ["face_recognition_obama.jpg", "face_recognition_obama1.jpg"],
                          "biden": ["face_recognition_biden.jpg", "face_recognition_biden2.jpg"]}.items():
        (root / "g" / person).mkdir(parents=True)
        for name in names:
            shutil.copy(ids / person / name, root / "g" / person / name)
    shutil.copy(ids / "obama" / "face_recognition_obama2.jpg", root / "in.jpg")
    proc = _fix_with_refs(root, root / "home", "clean.png")
    assert proc.returncode == 0, proc.stderr
    ref = json.loads((root / "clean.png.json").read_text())["images"][0]["faces"][0]["reference"]["path"]
    assert Path(ref).name == "face_recognition_obama.jpg"
    return root, ref


def _entry(cache: Path, photo: str, suffix: str) -> Path:
    sha = next(v for k, v in json.loads((cache / "files.json").read_text()).items() if k.endswith(photo))
    return cache / "entries" / sha[:2] / f"{sha}{suffix}"


def _edit_entry(cache: Path, edit: Callable[[dict], None]) -> None:
    for snap in cache.glob("snapshot.*"):  # else the snapshot serves and the entries are never read
        snap.unlink()
    path = _entry(cache, "face_recognition_obama.jpg", ".json")
    record = json.loads(path.read_text())
    edit(record)
    path.write_text(json.dumps(record))


def _replace_entry(cache: Path, suffix: str, write: Callable[[Path], None]) -> None:
    for snap in cache.glob("snapshot.*"):
        snap.unlink()
    path = _entry(cache, "face_recognition_obama.jpg", suffix)
    path.unlink()
    write(path)


def _npy_claiming(rows: int, dim: int = 128) -> bytes:
    header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dim}), }}".ljust(117) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + b"\0" * 512


def _edit_snapshot(cache: Path, edit: Callable[[dict], None]) -> None:
    path = cache / "snapshot.index"
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def _snapshot_records(doc: dict) -> list[dict]:
    return [face for _, record in doc["entries"].values() for face in record["faces"]]


def _snapshot_matrix_claiming_1e12_rows(cache: Path) -> None:
    import hashlib

    raw = _npy_claiming(10**12)
    (cache / "snapshot.matrix").write_bytes(raw)
    # the index names the lying matrix, so the hash check alone cannot catch it
    _edit_snapshot(cache, lambda d: d.update(matrix_sha256=hashlib.sha256(raw).hexdigest()))


def _set_all(key: str, value: object) -> Callable[[dict], None]:
    return lambda record: [f.update({key: value}) for f in record["faces"]]


DAMAGE: dict[str, Callable[[Path], None]] = {
    "entry_nested_too_deeply": lambda c: _replace_entry(
        c, ".json", lambda p: p.write_text('{"faces": ' + "[" * 100_000 + "]" * 100_000 + "}")),
    "entry_quality_is_a_list": lambda c: _edit_entry(c, _set_all("quality", [])),
    "entry_landmarks_1e30": lambda c: _edit_entry(c, _set_all("landmarks", [[1e30, 1e30]] * 5)),  # warpAffine hung
    "entry_landmarks_one_point": lambda c: _edit_entry(c, _set_all("landmarks", [[120.5, 80.5]] * 5)),
    "entry_affine_is_infinite": lambda c: _edit_entry(c, _set_all("affine", [[float("inf")] * 3] * 2)),
    "entry_box_is_nan": lambda c: _edit_entry(c, _set_all("box", [0, 0, float("nan"), 5])),
    "entry_npy_claims_1e12_rows": lambda c: _replace_entry(c, ".npy", lambda p: p.write_bytes(_npy_claiming(10**12))),
    "entry_is_a_fifo": lambda c: _replace_entry(c, ".json", os.mkfifo),
    "embeddings_are_a_fifo": lambda c: _replace_entry(c, ".npy", os.mkfifo),
    "snapshot_landmarks_1e30": lambda c: _edit_snapshot(
        c, lambda d: [f.update(landmarks=[[1e30, 1e30]] * 5) for f in _snapshot_records(d)]),
    "snapshot_quality_missing_a_field": lambda c: _edit_snapshot(
        c, lambda d: [f["quality"].pop("total") for f in _snapshot_records(d)]),
    "snapshot_matrix_claims_1e12_rows": _snapshot_matrix_claiming_1e12_rows,
    "snapshot_index_is_a_fifo": lambda c: ((c / "snapshot.index").unlink(), os.mkfifo(c / "snapshot.index")),
    "file_list_is_a_fifo": lambda c: ((c / "files.json").unlink(), os.mkfifo(c / "files.json")),
}


@pytest.fixture(scope="module")
def damaged_runs(clean_cache: tuple[Path, str]) -> dict[str, tuple[Path, subprocess.CompletedProcess | BaseException]]:
    """Every kind of damage in its own copy of the clean cache, each through a real ``fix --refs``
    subprocess (one torch thread each), two at a time: the suite otherwise leaves the second
    core idle, and these 14 runs were a minute and a half of it. A hang is a TimeoutExpired."""
    from concurrent.futures import ThreadPoolExecutor

    root, _ = clean_cache
    homes = {}
    for damage in sorted(DAMAGE):
        home = root / f"home-{damage}"
        shutil.copytree(root / "home", home)
        DAMAGE[damage](_cache_folder(home))
        homes[damage] = home

    def run(damage: str) -> subprocess.CompletedProcess | BaseException:
        try:
            return _fix_with_refs(root, homes[damage], f"{damage}.png")
        except subprocess.TimeoutExpired as exc:
            return exc

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip(homes, pool.map(run, homes)))
    return {d: (homes[d], results[d]) for d in homes}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_gallery_cache_never_breaks_a_run(clean_cache: tuple[Path, str], damaged_runs, damage: str) -> None:
    root, clean_ref = clean_cache
    home, proc = damaged_runs[damage]
    cache = _cache_folder(home)
    if isinstance(proc, BaseException):
        raise proc  # it hung
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "damaged" in proc.stderr, proc.stderr
    face = json.loads((root / f"{damage}.png.json").read_text())["images"][0]["faces"][0]
    assert face["reference"]["path"] == clean_ref  # the damaged record was rebuilt, not used
    # and the cache is healthy again: the snapshot and every entry read back without a warning
    meta = json.loads((cache / "snapshot.index").read_text())
    from refrestore.gallery.cache import IndexCache
    from refrestore.gallery.index import _faces_from_record

    from refrestore.identity.levels import LEVELS

    # a MobileFaceNet row holds the clean embedding and one per gallery level
    dim = 128 * (1 + len(LEVELS)) if meta["identity"].startswith("mobilefacenet") else 128
    store = IndexCache(home / "cache", meta["detector"], meta["identity"], meta["identity_version"], dim)
    assert store.dir == cache
    files, entries = store.load_snapshot()
    assert len(files) == 4 and len(entries) == 4
    for sha, record in entries.items():
        _faces_from_record(Path("x.jpg"), sha, *record)
        _faces_from_record(Path("x.jpg"), sha, *store.load(sha))  # type: ignore[misc]
    assert store.load_files() and not [p for p in cache.rglob("*") if not (p.is_dir() or p.is_file())]


def test_npy_bytes_are_checked_before_any_array_is_made() -> None:
    """parse_npy takes float32 (n, dim) of either byte order and refuses everything else from
    the header alone, before allocating (a header may declare 10^12 rows over 512 bytes)."""
    import io

    from refrestore.gallery.cache import CacheCorrupt, parse_npy

    def npy(a: np.ndarray) -> bytes:
        buf = io.BytesIO()
        np.save(buf, a, allow_pickle=True)
        return buf.getvalue()

    good = np.random.default_rng(0).random((3, 128)).astype(np.float32)
    assert np.array_equal(parse_npy(npy(good), 128, rows=3), good)
    assert np.array_equal(parse_npy(npy(good.astype(">f4")), 128), good)
    bad = [npy(good.astype(np.float64)), npy(good[:, :64]), npy(good[0]), npy(np.array([{"x": 1}], dtype=object)),
           npy(np.asfortranarray(good)), npy(good)[:-4], npy(good) + b"\0" * 4, npy(good)[:6], b"garbage!" * 9,
           _npy_claiming(10**12), _npy_claiming(-1),
           npy(np.full((3, 128), np.nan, np.float32))]
    for raw in bad:
        with pytest.raises(CacheCorrupt):
            parse_npy(raw, 128)
    with pytest.raises(CacheCorrupt):
        parse_npy(npy(good), 128, rows=2)
