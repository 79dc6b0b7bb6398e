"""README promises of the library, each on real photos (issue 16, "Promised in the README,
tested nowhere"): CUDA-to-CPU fallback at load time and per face, paste-back's Lab colour
match and feathered mask, ``restore_photo(refs=...)``, and the gallery cache rebuilt when
the identity model changes.

CUDA cannot run on this machine, so its out-of-memory error is raised where a GPU would raise
it (as ``test_faults.OutOfMemoryAbove`` does); everything else is the real code on real faces.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from refrestore.align import align_face
from refrestore.detection import init_detector
from refrestore.pasteback import PasteJob, paste_faces
from refrestore.pipeline import FacePipeline, FixOptions, restore_batch
from refrestore.restorers.base import RestorerSpec
from refrestore.restorers.refnet import REFNET_SPEC, RefNetRestorer, embedded_weights_path
from refrestore.restorers.registry import build_restorer
from refrestore.restorers.resample import RESAMPLE_INFO, ResampleRestorer
from refrestore.weights import WeightStore

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def dlib_detector():  # type: ignore[no-untyped-def]
    return init_detector("dlib")


def _photo(whole_photos: list[Path], name: str) -> np.ndarray:
    return np.asarray(Image.open(next(p for p in whole_photos if p.name == name)).convert("RGB"))


# --- CUDA to CPU, at load time --------------------------------------------------------------

@pytest.mark.skipif(torch.cuda.is_available(), reason="a real GPU is here: refnet-small loads on it")
def test_refnet_that_cannot_load_on_cuda_is_built_on_the_cpu(tmp_path, caplog):
    """No NVIDIA driver here, so the real refnet-small factory fails on cuda with torch's own
    RuntimeError: build_restorer says so once and returns a working CPU restorer."""
    with caplog.at_level(logging.WARNING, logger="refrestore.restorers.registry"):
        restorer = build_restorer(REFNET_SPEC, WeightStore(tmp_path), torch.device("cuda"))
    assert restorer.device.type == "cpu"
    assert next(restorer.model.parameters()).device.type == "cpu"
    assert restorer.half is False
    warned = [r.getMessage() for r in caplog.records]
    assert any("could not load refnet-small on cuda" in m and "using the CPU" in m for m in warned), warned
    out = restorer.restore([np.full((512, 512, 3), 120, np.uint8)])
    assert out[0].shape == (512, 512, 3)


def test_out_of_memory_while_loading_falls_back_to_the_cpu(tmp_path, caplog):
    """A model too large for the GPU's free memory is built on the CPU instead, in fp32."""
    asked: list[tuple[str, bool]] = []

    def factory(weights_dir: Path, device: torch.device, half: bool) -> ResampleRestorer:
        asked.append((device.type, half))
        if device.type == "cuda":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (pretend GPU)")
        return ResampleRestorer(device)

    spec = RestorerSpec(info=RESAMPLE_INFO, factory=factory)
    with caplog.at_level(logging.WARNING, logger="refrestore.restorers.registry"):
        restorer = build_restorer(spec, WeightStore(tmp_path), torch.device("cuda"), half=True)
    assert asked == [("cuda", True), ("cpu", False)]
    assert restorer.device.type == "cpu"
    assert any("out of memory" in r.getMessage() for r in caplog.records)
    # On the CPU the same failure is not hidden: there is nowhere else to go.
    with pytest.raises(torch.cuda.OutOfMemoryError):
        build_restorer(RestorerSpec(info=RESAMPLE_INFO, factory=lambda d, dev, h: (_ for _ in ()).throw(
            torch.cuda.OutOfMemoryError("no room"))), WeightStore(tmp_path), torch.device("cpu"))


# --- CUDA to CPU, per face --------------------------------------------------------------------

class _PretendCuda(torch.nn.Module):
    """The real network, standing on a pretend GPU: ``.to("cuda")`` only changes its dtype
    (there is no GPU to move to), ``.to("cpu")`` really moves it. The moves are recorded."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.moves: list[tuple[str, torch.dtype | None]] = []

    @property
    def cfg(self):  # type: ignore[no-untyped-def]
        return self.inner.cfg

    def to(self, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        device, dtype, _, _ = torch._C._nn._parse_to(*args, **kwargs)
        self.moves.append((device.type if device is not None else "", dtype))
        if dtype is not None:
            self.inner.to(dtype=dtype)
        return self

    def forward(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return self.inner(*args, **kwargs)


class RefNetOnPretendGPU(RefNetRestorer):
    """refnet-small as it runs on a GPU in fp16, where every face runs out of memory."""

    def __init__(self) -> None:
        super().__init__(RefNetRestorer.from_file(embedded_weights_path(), torch.device("cpu")).model,
                         torch.device("cpu"))
        self.model = _PretendCuda(self.model.half())
        self.half = True
        self.device = torch.device("cuda")
        self.calls: list[tuple[str, int]] = []

    def restore(self, faces, references=None, strength=1.0, fidelity=None):  # type: ignore[no-untyped-def]
        self.calls.append((self.device.type, len(faces)))
        if self.device.type == "cuda":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (pretend GPU)")
        return super().restore(faces, references, strength, fidelity=fidelity)


def test_a_face_out_of_cuda_memory_is_restored_on_the_cpu_and_the_gpu_model_is_left_as_it_was(whole_photos,
                                                                                            dlib_detector):
    photo = _photo(whole_photos, "codeformer_02.png")  # four faces
    crops = [align_face(photo, f).image for f in dlib_detector.detect(photo)]
    assert len(crops) == 4
    gpu = RefNetOnPretendGPU()
    warnings: list[str] = []
    out = restore_batch(gpu, crops, [[]] * 4, 1.0, batch_size=4, on_warning=warnings.append)
    errors = [o for o in out if isinstance(o, Exception)]
    assert not errors, errors
    expected = RefNetRestorer.from_file(embedded_weights_path(), torch.device("cpu")).restore(crops)
    assert all(np.array_equal(a, b) for a, b in zip(out, expected)), "the CPU run is the real fp32 network"
    assert gpu.calls[:3] == [("cuda", 4), ("cuda", 2), ("cuda", 1)]  # halved to one face, then the CPU
    assert ("cpu", 1) in gpu.calls
    assert sum("restoring it on the CPU" in w for w in warnings) == 4
    # Back on the GPU exactly as it was: the device, fp16 flag and fp16 weights.
    assert gpu.device.type == "cuda" and gpu.half is True
    assert next(gpu.model.parameters()).dtype == torch.float16
    assert gpu.model.moves[-1] == ("cuda", torch.float16)


def test_pipeline_restores_every_face_of_a_photo_through_the_cpu_fallback(whole_photos, dlib_detector):
    """Through FacePipeline.run: the faces are restored (not left unrestored with an error)."""
    photo = _photo(whole_photos, "codeformer_02.png")
    result = FacePipeline(dlib_detector, RefNetOnPretendGPU(), options=FixOptions(adaptive=False)).run(photo)
    assert len(result.faces) == 4
    assert [f.error for f in result.faces] == [None] * 4
    assert all(f.report()["restored"] for f in result.faces)
    assert any("on the CPU" in w for w in result.warnings)
    assert not np.array_equal(result.image, photo)


# --- paste-back: Lab colour match and feathered mask --------------------------------------------

def _face_job(whole_photos: list[Path], dlib_detector) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple]:  # type: ignore[no-untyped-def]
    photo = _photo(whole_photos, "gfpgan_Blake_Lively.jpg")
    faces = dlib_detector.detect(photo)
    face = max(faces, key=lambda f: f.width)
    aligned = align_face(photo, face)
    return photo, aligned.image, aligned.affine, tuple(int(v) for v in face.box)


def _lab_mean(img: np.ndarray, box: tuple) -> np.ndarray:
    x1, y1, x2, y2 = box
    cx, cy, w, h = (x1 + x2) // 2, (y1 + y2) // 2, (x2 - x1) // 4, (y2 - y1) // 4
    inner = img[cy - h:cy + h, cx - w:cx + w]  # the middle of the face: under the mask's plateau
    return cv2.cvtColor(inner, cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float64).mean(0)


def test_paste_back_matches_a_colour_cast_face_to_the_photo_in_lab(whole_photos, dlib_detector):
    """A restorer that drifts (warmer and brighter) is pasted back at the photo's own colour."""
    photo, crop, affine, box = _face_job(whole_photos, dlib_detector)
    lab = cv2.cvtColor(crop, cv2.COLOR_RGB2LAB).astype(np.float32)
    lab += np.array([18.0, 10.0, 16.0], np.float32)  # L, a, b drift of a restorer
    cast = cv2.cvtColor(np.clip(lab, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)
    out = paste_faces(photo, [PasteJob(restored=cast, original=crop, affine=affine)])
    before, after = _lab_mean(photo, box), _lab_mean(out, box)
    assert np.abs(after - before).max() < 2.5, (before, after)
    # The cast itself is far from the photo: without the match the face would be this far off.
    unmatched = _lab_mean(paste_faces(photo, [PasteJob(restored=cast, original=cast, affine=affine)]), box)
    assert np.abs(unmatched - before).max() > 10, (before, unmatched)


def test_paste_back_blends_through_a_soft_edge_and_touches_only_the_face(whole_photos, dlib_detector):
    """A zero-mean texture added to the restored face shows how much of it reaches each pixel
    of the photo: all of it in the middle of the face, none far away, and a ramp between
    (a wide band of partial blending), never a hard cut."""
    photo, crop, affine, box = _face_job(whole_photos, dlib_detector)
    yy, xx = np.mgrid[0:512, 0:512]
    pattern = np.where(((yy // 4) + (xx // 4)) % 2 == 0, 30.0, -30.0).astype(np.float32)[..., None]
    textured = np.clip(crop.astype(np.float32) + pattern, 0, 255).astype(np.uint8)
    out = paste_faces(photo, [PasteJob(restored=textured, original=crop, affine=affine)])
    base = paste_faces(photo, [PasteJob(restored=crop, original=crop, affine=affine)])
    diff = np.abs(out.astype(np.float32) - base.astype(np.float32)).mean(axis=2)
    # Local amplitude of the texture, as a fraction of its full amplitude in the face's middle.
    amp = cv2.dilate(diff, np.ones((9, 9), np.uint8))
    amp = cv2.blur(amp, (5, 5))
    x1, y1, x2, y2 = box
    centre = amp[(y1 + y2) // 2 - 10:(y1 + y2) // 2 + 10, (x1 + x2) // 2 - 10:(x1 + x2) // 2 + 10]
    full = float(np.median(centre))
    assert full > 15, full
    alpha = amp / full
    # Far from the face (beyond twice its size) nothing changed at all.
    w, h = x2 - x1, y2 - y1
    far = np.ones(diff.shape, bool)
    far[max(0, y1 - h):y2 + h, max(0, x1 - w):x2 + w] = False
    assert diff[far].max() == 0
    # Along rays from the face centre outwards, the blend falls from 1 to 0 over many pixels.
    cy, cx = (y1 + y2) / 2.0, (x1 + x2) / 2.0
    widths = []
    for angle in np.linspace(0, 2 * np.pi, 16, endpoint=False):
        r = np.arange(0, 1.6 * max(w, h))
        ys = np.clip((cy + r * np.sin(angle)).astype(int), 0, photo.shape[0] - 1)
        xs = np.clip((cx + r * np.cos(angle)).astype(int), 0, photo.shape[1] - 1)
        a = alpha[ys, xs]
        widths.append(int(((a > 0.15) & (a < 0.85)).sum()))
    assert np.median(widths) >= 0.08 * w, (widths, w)  # a hard paste has a band of 2-4 pixels


# --- restore_photo(refs=...) --------------------------------------------------------------------

def _old(img: np.ndarray) -> np.ndarray:
    """600 px high, then small, noisy and JPEG-ish (as test_routing's): a face that needs restoring."""
    h, w = 600, int(img.shape[1] * 600 / img.shape[0])
    img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    small = cv2.resize(img, (w // 4, h // 4), interpolation=cv2.INTER_AREA).astype(np.float32)
    small += np.random.default_rng(0).normal(0, 6, small.shape)
    ok, buf = cv2.imencode(".jpg", np.clip(small, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 60])
    return cv2.resize(cv2.imdecode(buf, cv2.IMREAD_UNCHANGED), (w, h), interpolation=cv2.INTER_CUBIC)


def _small_copies(src: Path, dst: Path, side: int = 500, first: int = 99) -> None:
    """The person's first photos, at most ``side`` pixels a side (indexing a 2500 px photo is slow)."""
    dst.mkdir(parents=True)
    for f in sorted(src.glob("*.jpg"))[:first]:
        im = Image.open(f).convert("RGB")
        im.thumbnail((side, side), Image.LANCZOS)
        im.save(dst / f.name, quality=95)


def test_restore_photo_with_refs_picks_the_persons_references_and_uses_them(tmp_path, shared_dir):
    from refrestore import restore_photo

    ids = shared_dir / "data" / "identities"
    gallery = tmp_path / "family"
    _small_copies(ids / "angelina_jolie", gallery / "angelina_jolie")
    _small_copies(ids / "obama", gallery / "obama", first=2)
    held_out = tmp_path / "angelina_old.png"
    img = np.asarray(Image.open(ids / "angelina_jolie" / "deepface_img1.jpg").convert("RGB"))
    (gallery / "angelina_jolie" / "deepface_img1.jpg").unlink()  # the photo restored is no reference
    Image.fromarray(_old(img)).save(held_out)

    result = restore_photo(held_out, refs=[gallery], detector="dlib", device="cpu", top_k=2)
    assert len(result.faces) == 1
    face = result.faces[0]
    assert face.error is None and not face.left_as_is
    assert 1 <= len(face.references) <= 2
    assert all("/angelina_jolie/" in r.path for r in face.references), [r.path for r in face.references]
    report = face.report()
    assert report["restorer"] == "refnet-small" and "/angelina_jolie/" in report["reference"]["path"]
    # The references reached the network: without them the same face comes out differently.
    alone = restore_photo(held_out, detector="dlib", device="cpu")
    assert alone.faces[0].references == [] and alone.faces[0].report()["reference"] is None
    x1, y1, x2, y2 = (int(v) for v in face.face.box)
    with_refs = result.image[y1:y2, x1:x2].astype(np.float32)
    without = alone.image[y1:y2, x1:x2].astype(np.float32)
    assert np.abs(with_refs - without).mean() > 0.5


# --- the gallery cache and the identity model ---------------------------------------------------

def test_gallery_cache_is_rebuilt_when_the_identity_model_changes(tmp_path, shared_dir, dlib_detector, caplog):
    from refrestore.gallery import Gallery
    from refrestore.identity import DlibIdentity
    from refrestore.identity.fused import FusedIdentity

    ids = shared_dir / "data" / "identities"
    gallery = tmp_path / "g"
    _small_copies(ids / "obama", gallery / "obama", side=400, first=2)
    _small_copies(ids / "biden", gallery / "biden", side=400, first=1)
    n_photos = sum(1 for _ in gallery.rglob("*.jpg"))
    cache = tmp_path / "cache"

    class CountingDlib(DlibIdentity):
        def __init__(self, version: str | None = None) -> None:
            super().__init__()
            if version is not None:
                self.version = version
            self.calls = 0

        def embed(self, aligned):  # type: ignore[no-untyped-def]
            self.calls += len(aligned)
            return super().embed(aligned)

    first_model = CountingDlib()
    first = Gallery.build([gallery], dlib_detector, first_model, cache_dir=cache)
    assert first.stats.indexed == n_photos and first_model.calls >= len(first.faces)
    again_model = CountingDlib()
    again = Gallery.build([gallery], dlib_detector, again_model, cache_dir=cache)
    assert again.stats.from_cache == n_photos and again_model.calls == 0  # the same model: from the cache

    # A new version of the same model (same dimension): embeddings recomputed, not read back.
    upgraded = CountingDlib(version=first_model.version + "-next")
    with caplog.at_level(logging.WARNING):
        rebuilt = Gallery.build([gallery], dlib_detector, upgraded, cache_dir=cache)
        assert rebuilt.stats.indexed == n_photos and rebuilt.stats.from_cache == 0
        assert upgraded.calls >= len(rebuilt.faces)
        # Another identity model: every photo is embedded again, with that model's dimension.
        own = FusedIdentity(device=torch.device("cpu"))
        other = Gallery.build([gallery], dlib_detector, own, cache_dir=cache)
    assert other.stats.indexed == n_photos and other.stats.from_cache == 0
    assert other.identity_name == own.name != first.identity_name
    assert other.embeddings.shape == (len(other.faces), own.dim) and own.dim != first.embeddings.shape[1]
    # A cache of its own per model, not one model's entries found damaged by the next.
    assert not [r.getMessage() for r in caplog.records if "cache" in r.getMessage()]
    # The first model's entries are still there: going back reads them.
    back = Gallery.build([gallery], dlib_detector, CountingDlib(), cache_dir=cache)
    assert back.stats.from_cache == n_photos


def test_colour_match_keeps_a_face_of_the_right_colour_at_that_colour(whole_photos, dlib_detector):
    """A restored face whose colour is already the original's (here: the crop blurred, its mean
    unchanged) must come back at the photo's colour to a fraction of a level: the Lab shift is
    fractional, and truncating it to whole levels moved every face's colour (red -1.5 to -2.9
    levels on real photos) before the match rounded."""
    photo, crop, affine, box = _face_job(whole_photos, dlib_detector)
    soft = cv2.GaussianBlur(crop, (0, 0), 2.0)
    out = paste_faces(photo, [PasteJob(restored=soft, original=crop, affine=affine)])
    x1, y1, x2, y2 = box
    cx, cy, w, h = (x1 + x2) // 2, (y1 + y2) // 2, (x2 - x1) // 4, (y2 - y1) // 4
    rgb_before = photo[cy - h:cy + h, cx - w:cx + w].reshape(-1, 3).astype(np.float64).mean(0)
    rgb_after = out[cy - h:cy + h, cx - w:cx + w].reshape(-1, 3).astype(np.float64).mean(0)
    assert np.abs(rgb_after - rgb_before).max() < 0.6, (rgb_before, rgb_after)
