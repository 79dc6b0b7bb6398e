"""The whole-photo pipeline: detect, align, select references, restore, paste back.

Works on pixels (numpy RGB uint8); reading and writing files is the caller's job
(``refrestore.batch`` for the CLI), so a notebook can use it directly.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import cv2
import numpy as np
import torch

from .align import FFHQ_SIZE, align_face, detect_aligned_crop
from .degradation import Degradation, Thresholds, estimate, ramp
from .detail import DetailResult, DetailStage
from .detection import Detector
from .detection.content import detect_faces
from .faces import AlignedFace, DetectedFace, Reference
from .pasteback import PasteJob, detail_sigma, paste_faces, temper, upscale_photo
from .references import FaceToMatch, ReferenceChoice
from .restorers.base import Restorer
from .restorers.choose import Router

log = logging.getLogger(__name__)

# Face widths (photo pixels) under which a face is restored only partly: nothing under 12 px,
# all of what it needs from 32 px (the smallest face identified against a gallery).
SMALLEST_FACE_PX = 12.0
FULL_FACE_PX = 32.0
# How much a fully blurred, clean face's own finest detail is raised (1: doubled at most).
SHARPEN_GAIN = 1.0


class ReferenceSource(Protocol):
    """Chooses references for the faces of one photo, deciding them together."""

    def select_photo(self, faces: Sequence[FaceToMatch]) -> list[ReferenceChoice]: ...


@dataclass(frozen=True)
class FixOptions:
    upscale: int = 1
    strength: float = 1.0
    only_center_face: bool = False
    aligned: bool = False  # the input is already an aligned face crop
    batch_size: int = 4
    fidelity: float | None = None  # 0 = most detail .. 1 = closest to the input; None: the model's default
    adaptive: bool = True  # restore each face only as much as its degradation needs (False: fully)
    thresholds: Thresholds = Thresholds()
    reference_detail: bool = True  # add the references' own detail where they agree (refrestore.detail)


@dataclass
class FaceOutcome:
    """One face of one photo: where it was, what guided it, and whether it was restored."""

    index: int
    face: DetectedFace | None
    aligned: np.ndarray
    restored: np.ndarray | None = None
    references: list[Reference] = field(default_factory=list)
    reference_report: dict | None = None
    decision: dict | None = None  # every number behind the reference decision (also for "no match")
    reason: str | None = None  # why it got its references or none, one line with the figures
    reason_code: str | None = None  # what decided it: refrestore.gallery.people.REASON_CODES, "forced", "no-gallery"
    restorer: str = ""
    error: str | None = None
    degradation: Degradation | None = None
    amount: float = 1.0  # how much of the restored structure (low frequencies) was applied, after --strength
    detail_amount: float = 1.0  # how much of the restorer's fine detail could replace the face's own
    keep_detail: float = 0.0  # how much of the face's own fine detail was kept
    finer_detail: float = 0.0  # how much of the photo's detail finer than the 512 crop was kept
    sharpen: float = 0.0  # how much the face's own kept detail was raised (a blurred, clean face)
    left_as_is: bool = False  # it needed nothing: not restored, pasted as it was
    detail: DetailResult | None = None  # what the reference detail stage added (faces with references)

    @property
    def needs_restoration(self) -> bool:
        return not self.left_as_is

    def report(self) -> dict:
        f = self.face
        return {
            "index": self.index,
            "box": [round(float(v), 2) for v in f.box] if f else None,
            "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in f.landmarks] if f else None,
            "landmark_kind": f.landmark_kind if f else None,
            "detector": f.detector if f else None,
            "detector_score": round(float(f.score), 4) if f else None,
            "reference": self.reference_report,
            "reference_rule": (self.reference_report or {}).get("reference_rule"),
            "decision": self.decision,
            "reason": self.reason,
            "reason_code": self.reason_code,
            "restorer": None if self.left_as_is else self.restorer,
            "restored": self.restored is not None and self.error is None and not self.left_as_is,
            "left_as_is": self.left_as_is,
            "strength": round(float(self.amount), 4),
            "detail_strength": round(float(self.detail_amount), 4),
            "kept_detail": round(float(self.keep_detail), 4),
            "sharpened": round(float(self.sharpen), 4),
            "degradation": self.degradation.report() if self.degradation is not None else None,
            "detail": self.detail.report(self.references) if self.detail is not None else None,
            "error": self.error,
        }


@dataclass
class PhotoResult:
    image: np.ndarray  # the output photo, RGB uint8
    faces: list[FaceOutcome]
    warnings: list[str] = field(default_factory=list)


def center_face(faces: list[DetectedFace], shape: tuple[int, ...]) -> list[DetectedFace]:
    """The one face nearest the photo centre (ties broken by size)."""
    if not faces:
        return faces
    cy, cx = shape[0] / 2.0, shape[1] / 2.0
    return [min(faces, key=lambda f: (f.center[0] - cx) ** 2 + (f.center[1] - cy) ** 2 - f.width)]


def restore_batch(
    restorer: Restorer,
    crops: Sequence[np.ndarray],
    refs: Sequence[Sequence[Reference]],
    strength: float,
    batch_size: int,
    on_warning: Callable[[str], None] = lambda m: None,
    fidelity: float | None = None,
) -> list[np.ndarray | Exception]:
    """Restore faces in batches; a failing batch is retried smaller, then face by face.

    ``fidelity`` reaches only restorers that declare ``supports_fidelity``.

    Out of CUDA memory, the batch shrinks; a single face that still fails is tried once on
    the CPU. A face that fails everywhere comes back as its exception, so the caller can
    paste it back unrestored and say so.
    """
    results: list[np.ndarray | Exception] = [RuntimeError("not restored")] * len(crops)
    extra = {"fidelity": fidelity} if restorer.info.supports_fidelity else {}

    def call(r: Restorer, c: list[np.ndarray], f: list[list[Reference]]) -> list[np.ndarray]:
        return r.restore(c, f, strength, **extra)

    size = max(1, batch_size)
    start = 0
    while start < len(crops):
        stop = min(len(crops), start + size)
        try:
            out = call(restorer, list(crops[start:stop]), [list(r) for r in refs[start:stop]])
            results[start:stop] = out
            start = stop
            continue
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            if size > 1:
                size = max(1, size // 2)
                on_warning(f"CUDA out of memory: retrying with batches of {size}")
                continue
            results[start] = _restore_on_cpu(restorer, crops[start], refs[start], call, on_warning)
        except Exception as exc:  # noqa: BLE001 - one bad face must not stop the photo
            if stop - start > 1:
                for i in range(start, stop):
                    try:
                        results[i] = call(restorer, [crops[i]], [list(refs[i])])[0]
                    except Exception as single:  # noqa: BLE001
                        results[i] = single
            else:
                results[start] = exc
        start = stop
    return results


def _restore_on_cpu(restorer: Restorer, crop: np.ndarray, refs: Sequence[Reference],
                    call: Callable[[Restorer, list[np.ndarray], list[list[Reference]]], list[np.ndarray]],
                    on_warning: Callable[[str], None]) -> np.ndarray | Exception:
    model = getattr(restorer, "model", None)
    if model is None or restorer.device.type == "cpu":
        return RuntimeError("out of memory")
    on_warning("CUDA out of memory for one face: restoring it on the CPU")
    original = restorer.device
    # The restorer goes back exactly as it was (fp16 stays fp16), or every later face on the
    # GPU would run in fp32 (twice the memory that just ran out) or with mismatched dtypes.
    param = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
    model_dtype = param.dtype if param is not None else None
    saved = {a: getattr(restorer, a) for a in ("dtype", "half") if hasattr(restorer, a)}
    try:
        model.to("cpu", dtype=torch.float32)
        restorer.device = torch.device("cpu")
        if "dtype" in saved:
            restorer.dtype = torch.float32  # type: ignore[attr-defined]
        if "half" in saved:
            restorer.half = False  # type: ignore[attr-defined]  # RefNetRestorer picks its input dtype by this
        return call(restorer, [crop], [list(refs)])[0]
    except Exception as exc:  # noqa: BLE001
        return exc
    finally:
        if model_dtype is not None:
            model.to(original, dtype=model_dtype)
        else:
            model.to(original)
        restorer.device = original
        for a, v in saved.items():
            setattr(restorer, a, v)


class FacePipeline:
    """detect -> align -> select references -> restore -> paste back, on one photo.

    ``restorer`` restores every face; a ``router`` instead picks one per face (``--model
    auto``: matched faces to the reference-guided network, strangers to the best blind one),
    building each restorer once, when a face first needs it.
    """

    def __init__(
        self,
        detector: Detector | None,
        restorer: Restorer | None = None,
        references: ReferenceSource | None = None,
        options: FixOptions | None = None,
        parser: object | None = None,
        router: Router | None = None,
        detail: DetailStage | None = None,
    ) -> None:
        if router is None:
            if restorer is None:
                raise ValueError("a restorer or a router is needed")
            router = Router.fixed(restorer)
        self.detector = detector
        self.router = router
        self.references = references
        self.options = options or FixOptions()
        self.parser = parser  # refrestore.parsing.FaceParser, for paste-back masks
        self.detail = detail  # the reference detail stage, for faces with references (None: off)

    @property
    def restorer(self) -> Restorer:
        """The restorer a face of this run gets by default (the report's top-level name):
        with a gallery, what a matched face gets; without, what every face gets."""
        return self.router.get(self.router.spec_for(self.references is not None))

    def find_faces(self, rgb: np.ndarray) -> list[AlignedFace]:
        if self.options.aligned:
            crop = rgb
            if crop.shape[0] != FFHQ_SIZE or crop.shape[1] != FFHQ_SIZE:
                crop = cv2.resize(crop, (FFHQ_SIZE, FFHQ_SIZE), interpolation=cv2.INTER_CUBIC if crop.shape[0] < FFHQ_SIZE else cv2.INTER_AREA)
            face = detect_aligned_crop(crop, self.detector) if self.detector is not None else None
            return [AlignedFace(image=np.ascontiguousarray(crop), affine=np.array([[FFHQ_SIZE / rgb.shape[1], 0, 0], [0, FFHQ_SIZE / rgb.shape[0], 0]]), face=face)]
        if self.detector is None:
            raise ValueError("a detector is needed unless the input is an aligned crop")
        faces = detect_faces(self.detector, rgb)  # a mostly-paper scan: on its content
        if self.options.only_center_face:
            faces = center_face(faces, rgb.shape)
        return [align_face(rgb, f) for f in faces]

    def _plan(self, o: FaceOutcome, rgb: np.ndarray, affine: np.ndarray) -> None:
        """How much this face needs: left as it was, or restored by how much."""
        opts = self.options
        o.restorer = self.router.spec_for(bool(o.references)).info.name
        if not opts.adaptive:
            o.amount = o.detail_amount = opts.strength
            o.keep_detail = o.finer_detail = 0.0
            return
        t = opts.thresholds
        d = estimate(o.aligned, affine, rgb, upscale=1 if opts.aligned else opts.upscale, thresholds=t)
        o.degradation = d
        need = min(1.0, max(0.0, (d.severity - t.leave_below) / max(t.full_above - t.leave_below, 1e-6)))
        # The damage decides, not how little the restorer may do: a clearly damaged face gets
        # the restored face in full, structure and detail; a doubtfully damaged one (a soft
        # but clean portrait) part of it, in proportion.
        o.amount = o.detail_amount = opts.strength * need
        # The face's own fine detail (above the crop's structure) is worth keeping unless it is
        # noise, JPEG blocks or a pattern of lines or dots, or the face is tiny (under about 64
        # pixels what looks like detail is mostly pixel noise and compression). Where it is
        # kept, each neighbourhood takes the richer of the two (``temper``), so a sharp face is
        # never smoothed. The photo's detail finer than the crop (a face larger than 512 pixels)
        # was never seen by the restorer: it is kept by the same discount, without the size.
        o.finer_detail = 1.0 - max(d.scores["noise"], d.scores["blockiness"], d.scores["pattern"])
        o.keep_detail = o.finer_detail * (1.0 - ramp(d.face_px, t.tiny_ok, t.tiny_bad))
        # A blurred face whose own detail is clean (no noise, blocks or pattern) gets that
        # detail raised by how blurred it is: the restorer works on a coarser grid than a large
        # face's crop, so the finest band of a soft portrait is the photo's own, and left as it
        # was the face comes back as soft as it came. Squared: a slightly soft face (a sharp
        # portrait scores up to about 0.45) is hardly touched, a clearly blurred one much more.
        # Not with references: their detail (the restorer's and the detail stage's) is the
        # person's own, and a raised copy of the blurred face's would win over it.
        o.sharpen = 0.0 if o.references else SHARPEN_GAIN * opts.strength * d.scores["sharpness"] ** 2 * o.keep_detail
        # A face too small to identify (a 22-px face in a crowd behind) is restored only partly:
        # at that size the restorer invents a face rather than restore one.
        px = d.face_px / (1 if opts.aligned else max(opts.upscale, 1))
        small = min(1.0, max(0.0, (px - SMALLEST_FACE_PX) / (FULL_FACE_PX - SMALLEST_FACE_PX)))
        o.amount *= small
        o.detail_amount *= small
        o.left_as_is = d.severity < t.leave_below or o.detail_amount < 0.02

    def prepare(self, rgb: np.ndarray, grayscale: bool = False) -> "PreparedPhoto":
        """Detect, align, choose references and measure each face: everything before the network."""
        aligned = self.find_faces(rgb)
        outcomes = [FaceOutcome(index=i, face=a.face, aligned=a.image) for i, a in enumerate(aligned)]
        warnings: list[str] = []
        if self.references is not None and outcomes:
            # The faces of a photo are decided together: a person is given to one face of it.
            choices = self.references.select_photo(
                [FaceToMatch(a.image, a.face, None if self.options.aligned else a.affine) for a in aligned])
            for o, c in zip(outcomes, choices):
                o.references, o.reference_report, o.decision = c.references, c.report, c.decision
                o.reason, o.reason_code = c.reason, c.reason_code
                if c.warning:
                    warnings.append(c.warning)
        elif self.references is None:
            for o in outcomes:
                o.reason, o.reason_code = "no gallery given (--refs, --person or --ref)", "no-gallery"
        for o, a in zip(outcomes, aligned):
            self._plan(o, rgb, a.affine)
        return PreparedPhoto(rgb=rgb, grayscale=grayscale, aligned=aligned, outcomes=outcomes, warnings=warnings)

    def restore_faces(self, photos: Sequence["PreparedPhoto"], on_face: Callable[[int, int], None] | None = None) -> None:
        """Run each face's restorer over the faces of several photos at once (one batch per
        restorer on a GPU); faces that need nothing are left as they were."""
        owners = [(p, o, a) for p in photos for o, a in zip(p.outcomes, p.aligned)]
        if not owners:
            return
        by_restorer: dict[str, list[tuple["PreparedPhoto", FaceOutcome, AlignedFace]]] = {}
        for p, o, a in owners:
            if o.left_as_is:
                o.restored = o.aligned
            else:
                by_restorer.setdefault(o.restorer, []).append((p, o, a))
        sink: list[str] = []
        specs = {s.info.name: s for s in self.router.available + ([self.router.named] if self.router.named else [])}
        for name, members in by_restorer.items():
            try:
                restorer = self.router.get(specs[name])
            except Exception as exc:  # noqa: BLE001 - the faces are reported, the photo goes on
                results: list[np.ndarray | Exception] = [exc] * len(members)
            else:
                crops = [o.aligned for _, o, _ in members]
                refs = [o.references if restorer.info.uses_references else [] for _, o, _ in members]
                # Adaptive faces are restored fully, then tempered here by what each needs.
                strength = 1.0 if self.options.adaptive else self.options.strength
                results = restore_batch(restorer, crops, refs, strength, self.options.batch_size, sink.append,
                                        fidelity=self.options.fidelity)
            for (p, o, a), res in zip(members, results):
                if isinstance(res, Exception):
                    o.error = f"restoration failed: {res}".splitlines()[0]
                    o.restored = None
                    p.warnings.append(f"face {o.index}: {o.error}; pasted back unrestored")
                elif self.options.adaptive:
                    native = o.degradation.native_px if o.degradation is not None else float(FFHQ_SIZE)
                    o.restored = temper(o.aligned, res, o.amount, o.keep_detail, detail_sigma(native, o.aligned.shape[0]),
                                        detail_amount=o.detail_amount, sharpen=o.sharpen)
                else:
                    o.restored = res
        for p, o, _ in owners:
            self._add_detail(p, o)
        for p in photos:
            p.warnings.extend(sink)
        if on_face is not None:
            for p in photos:
                for o in p.outcomes:
                    on_face(o.index, len(p.outcomes))

    def _add_detail(self, photo: "PreparedPhoto", o: FaceOutcome) -> None:
        """The references' own detail, added where they agree (``refrestore.detail``), to a
        restored face that has references, whichever restorer made it."""
        if self.detail is None or not o.references or o.restored is None or o.error or o.left_as_is:
            return
        try:
            labels = None
            if self.parser is not None:
                labels = self.parser.labels([o.restored])[0]  # type: ignore[attr-defined]
            # As much as the face takes of a restorer's fine detail (--strength and its need).
            o.detail = self.detail.add(o.restored, [r.image for r in o.references], fidelity=self.options.fidelity,
                                       labels=labels, amount=o.detail_amount)
            o.restored = o.detail.image
        except Exception as exc:  # noqa: BLE001 - the restored face is still good without it
            photo.warnings.append(f"face {o.index}: reference detail not added ({exc})".splitlines()[0])

    def finish(self, photo: "PreparedPhoto") -> PhotoResult:
        """Paste the restored faces back (or, for aligned input, return the restored crop)."""
        outcomes, warnings = photo.outcomes, photo.warnings
        if not outcomes:
            return PhotoResult(image=upscale_photo(photo.rgb, self.options.upscale), faces=[], warnings=warnings)
        if self.options.aligned:
            out = outcomes[0].restored if outcomes[0].restored is not None else outcomes[0].aligned
            if photo.grayscale:
                out = cv2.cvtColor(cv2.cvtColor(out, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
            size = FFHQ_SIZE * self.options.upscale
            if out.shape[0] != size:
                out = cv2.resize(out, (size, size), interpolation=cv2.INTER_CUBIC)
            return PhotoResult(image=out, faces=outcomes, warnings=warnings)
        # A face left as it was is not pasted at all: its pixels stay the photo's own.
        done = [(o, a) for o, a in zip(outcomes, photo.aligned) if o.restored is not None and not o.left_as_is]
        masks: list[np.ndarray | None] = [None] * len(done)
        if self.parser is not None and done:
            try:
                masks = list(self.parser.masks([o.restored for o, _ in done]))  # type: ignore[attr-defined]
            except Exception as exc:  # noqa: BLE001 - the ellipse mask still works
                warnings.append(f"face parsing failed ({exc}); using the default mask".splitlines()[0])
        jobs = [PasteJob(restored=o.restored, original=o.aligned, affine=a.affine, mask=m, detail=o.finer_detail,
                         amount=o.amount)
                for (o, a), m in zip(done, masks)]
        image = paste_faces(photo.rgb, jobs, upscale=self.options.upscale, grayscale=photo.grayscale)
        return PhotoResult(image=image, faces=outcomes, warnings=warnings)

    def run(self, rgb: np.ndarray, grayscale: bool = False, on_face: Callable[[int, int], None] | None = None) -> PhotoResult:
        """The whole pipeline on one photo."""
        prepared = self.prepare(rgb, grayscale)
        self.restore_faces([prepared], on_face)
        return self.finish(prepared)


@dataclass
class PreparedPhoto:
    """A photo between detection and paste-back."""

    rgb: np.ndarray
    grayscale: bool
    aligned: list[AlignedFace]
    outcomes: list[FaceOutcome]
    warnings: list[str] = field(default_factory=list)
