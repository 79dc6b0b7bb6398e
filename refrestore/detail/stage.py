"""The reference detail stage: after any restorer, before paste-back.

A restorer (our RefNet, or a downloaded GFPGAN/RestoreFormer) returns the face's structure;
the fine detail a badly damaged face lost is in the person's own photos. For a face with
references this stage brings each reference onto the restored face (``correspond``), judges
pixel by pixel how far to trust it (``confidence``), and adds the references' fused detail
where they agree (``fuse``). A face that already has the detail (a sharp one, or a restorer
that put it there) gets nothing: the amount follows how much each band lacks.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .confidence import REGIONS, agreement, regions_from_labels, regions_from_landmarks
from .correspond import Landmarker, correspond, dlib_landmarker, grey_of, landmarks_at
from .fuse import ALPHA, BETA, contrast_gain, deficiency, fuse, split_bands

DEFAULT_FIDELITY = 0.5  # fix's default: between the fitted (1) and the most detail (0)


@dataclass(frozen=True)
class DetailOptions:
    """What the stage does; every switch exists for the ablation (all on is the shipped stage)."""

    landmarks: bool = True  # the least-squares affine between the two faces' 68 landmarks
    # A thin-plate spline through the landmarks' residuals, on top of the affine: off, since it
    # did not help (held-out faces 256 / refbench 512, gains refitted for each: with it hf_ratio
    # 0.376 / 0.375, hf_corr 0.238 / 0.216, identity 0.292 / 0.279; without it 0.387 / 0.376,
    # 0.238 / 0.215, 0.287 / 0.272; landmarks on a restored face are a few pixels off and the
    # spline bends the warp to them, which the flow then has to undo).
    spline: bool = False
    flow: bool = True  # optical-flow refinement
    agreement: bool = True  # confidence from the other references
    face_agreement: bool = True  # confidence from the restored face at the next coarser band
    visibility: bool = True  # confidence from the warp's geometry
    regions: bool = True  # per-region gains (else one gain for the whole crop)
    weighted: bool = True  # confidence-weighted fusion (else the plain mean)
    alpha: np.ndarray = field(default_factory=lambda: ALPHA.copy(), compare=False)
    beta: np.ndarray = field(default_factory=lambda: BETA.copy(), compare=False)


@dataclass
class DetailResult:
    """One face after the stage."""

    image: np.ndarray  # (S, S, 3) uint8 RGB
    confidence: np.ndarray  # (S, S) float32 0..1: where the references were trusted
    shares: list[float]  # per reference, its part of the added detail (sum 1; all 0: nothing added)
    lacking: tuple[float, ...]  # per band, how much of it the face lacked (0 = had it all)
    change: float  # RMS change of the face's luminance inside the face, grey levels

    @property
    def added(self) -> bool:
        return self.change >= 0.05

    def report(self, references: Sequence[object] = ()) -> dict:
        """JSON-friendly: how much was added and which references gave it."""
        refs = []
        for i, share in enumerate(self.shares):
            r = references[i] if i < len(references) else None
            refs.append({"path": getattr(r, "path", None), "face_index": getattr(r, "face_index", None),
                         "share": round(float(share), 4)})
        return {"added": self.added, "change": round(float(self.change), 3),
                "lacking": [round(float(v), 3) for v in self.lacking], "references": refs}


@dataclass
class Prepared:
    """Everything the fusion needs for one face (the fitting script uses it too)."""

    face_grey: np.ndarray
    face_bands: list[np.ndarray]
    ref_bands: list[list[np.ndarray]]
    conf: np.ndarray  # (K, B, S, S)
    regions: np.ndarray  # (3, S, S)
    lacking: np.ndarray  # (B,)


class DetailStage:
    """Adds reference detail to restored faces; holds the landmark model (loaded when first needed)."""

    def __init__(self, options: DetailOptions | None = None, landmarker: Landmarker | None = None) -> None:
        self.options = options or DetailOptions()
        self._landmarker = landmarker

    @property
    def landmarker(self) -> Landmarker:
        if self._landmarker is None:
            self._landmarker = dlib_landmarker()
        return self._landmarker

    def prepare(self, restored: np.ndarray, references: Sequence[np.ndarray],
                labels: np.ndarray | None = None) -> Prepared:
        opts = self.options
        size = restored.shape[0]
        face_grey = grey_of(restored)
        need_points = opts.landmarks or (opts.regions and labels is None)
        face_pts = landmarks_at(self.landmarker, restored) if need_points else None
        ref_pts = [landmarks_at(self.landmarker, r) if opts.landmarks else None for r in references]
        found = [correspond(face_grey, face_pts, r, p, landmarks=opts.landmarks, flow=opts.flow,
                             spline=opts.spline)
                 for r, p in zip(references, ref_pts)]
        if not opts.regions:
            regions = np.zeros((len(REGIONS), size, size), np.float32)
            regions[0] = 1.0
        elif labels is not None:
            regions = regions_from_labels(labels, size)
        else:
            assert face_pts is not None
            regions = regions_from_landmarks(face_pts, size)
        face_weight = regions[0] + regions[1]
        face_bands = split_bands(face_grey)
        ref_bands = []
        for c in found:
            gain = contrast_gain(face_grey, c.grey, face_weight)
            ref_bands.append([b * gain for b in split_bands(c.grey)])
        conf = agreement(ref_bands, face_bands, between_refs=opts.agreement, with_face=opts.face_agreement)
        if opts.visibility:
            conf *= np.stack([c.visibility for c in found])[:, None]
        lacking = deficiency(face_bands, ref_bands, face_weight)
        return Prepared(face_grey, face_bands, ref_bands, conf, regions, lacking)

    def __getstate__(self) -> dict:
        # The landmark model is loaded again where the stage is unpickled (a Ray worker).
        return {"options": self.options, "_landmarker": None}

    def add(self, restored: np.ndarray, references: Sequence[np.ndarray], fidelity: float | None = None,
            labels: np.ndarray | None = None, amount: float = 1.0) -> DetailResult:
        """``restored`` (S x S x 3 uint8) with the detail of ``references`` (aligned RGB crops of
        the same person, any size) added where they agree. ``fidelity`` 0..1 (None: the
        default): 1 adds what brings the face closest to the truth on average, 0 the most.
        ``labels``: the face parser's label map of the restored face, when there is one.
        ``amount`` (0..1) scales the change: the pipeline passes how much of a restorer's fine
        detail the face takes (``--strength`` and how damaged it is)."""
        if restored.ndim != 3 or restored.shape[2] != 3 or restored.dtype != np.uint8:
            raise ValueError(f"expected an S x S x 3 uint8 face, got {restored.shape} {restored.dtype}")
        size = restored.shape[0]
        amount = float(np.clip(amount, 0.0, 1.0))
        if not references or amount <= 0.0:
            return DetailResult(restored, np.zeros((size, size), np.float32), [], (0.0,) * 3, 0.0)
        f = DEFAULT_FIDELITY if fidelity is None else float(fidelity)
        if not 0.0 <= f <= 1.0:
            raise ValueError(f"fidelity must be in [0, 1], got {fidelity}")
        p = self.prepare(restored, references, labels)
        fused = fuse(p.face_bands, p.ref_bands, p.conf, p.regions, p.lacking, f, self.options.weighted,
                     self.options.alpha, self.options.beta)
        luma = fused.luma * amount
        out = np.clip(restored.astype(np.float32) + luma[..., None] + 0.5, 0, 255).astype(np.uint8)
        inside = p.regions[0] + p.regions[1]
        change = float(np.sqrt((luma ** 2 * inside).sum() / max(float(inside.sum()), 1e-6)))
        return DetailResult(out, fused.confidence, fused.shares, tuple(float(v) for v in p.lacking), change)
