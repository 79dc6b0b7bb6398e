"""A detected face as the gallery cache records it, and read back distrusted: every number
checked against the photo's size, and the alignment it gives checked for sanity, before a crop
is re-made from it."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from refrestore.align import FFHQ_SIZE
from refrestore.faces import DetectedFace

from .cache import CacheCorrupt


def _face_to_json(face: DetectedFace) -> dict[str, Any]:
    return {"box": [round(float(v), 3) for v in face.box],
            "landmarks": np.asarray(face.landmarks, dtype=np.float64).round(3).tolist(),
            "score": float(face.score), "landmark_kind": face.landmark_kind,
            "detector": face.detector}


# Bounds on what a cache record may say (it is read back, so it is distrusted): a side far
# beyond any photo the pixel limit admits, points at most one photo-size outside the photo,
# and an alignment scale between a 10,000-px face and a 1-px one on the 512 template.
MAX_SIDE = 1 << 17
MAX_FACES = 10_000
ALIGN_SCALE = (1e-3, 512.0)


def _number(value: Any, lo: float, hi: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CacheCorrupt(f"{what} is not a number")
    x = float(value)
    if not lo <= x <= hi:  # NaN fails too
        raise CacheCorrupt(f"{what} {x:.3g} is out of range")
    return x


def _integer(value: Any, lo: int, hi: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise CacheCorrupt(f"{what} is not an integer in {lo}..{hi}")
    return value


def _points(value: Any, rows: int, cols: int, lo: tuple[float, ...], hi: tuple[float, ...],
            what: str) -> np.ndarray:
    if not isinstance(value, list) or len(value) != rows or not all(
            isinstance(r, list) and len(r) == cols for r in value):
        raise CacheCorrupt(f"{what} is not {rows}x{cols}")
    return np.array([[_number(v, lo[j], hi[j], what) for j, v in enumerate(r)] for r in value],
                    dtype=np.float64)


def _face_from_json(d: dict[str, Any], width: int = MAX_SIDE, height: int = MAX_SIDE) -> DetectedFace:
    """A cached face, every field checked against the photo's size: coordinates far outside the
    photo (1e30 landmarks) would make ``cv2.warpAffine`` spin for hours, deaf to SIGTERM."""
    from refrestore.align import TEMPLATES

    m = float(max(width, height))
    x_lo, x_hi, y_lo, y_hi = -m, width + m, -m, height + m
    box = _points([d.get("box")], 1, 4, (x_lo, y_lo, x_lo, y_lo), (x_hi, y_hi, x_hi, y_hi), "box")[0]
    if not (box[2] > box[0] and box[3] > box[1]):
        raise CacheCorrupt("box is empty")
    lms = _points(d.get("landmarks"), 5, 2, (x_lo, y_lo), (x_hi, y_hi), "landmarks")
    kind, detector = d.get("landmark_kind"), d.get("detector")
    if kind not in TEMPLATES or not isinstance(detector, str):
        raise CacheCorrupt(f"landmark kind {kind!r:.40} or detector {detector!r:.40} unknown")
    return DetectedFace(box=tuple(float(v) for v in box), landmarks=lms.astype(np.float32),  # type: ignore[arg-type]
                        score=_number(d.get("score"), -1e6, 1e6, "score"), landmark_kind=kind,
                        detector=detector)


def _check_alignment(face: DetectedFace, width: int, height: int) -> None:
    """The warp that re-makes this face's crop must be a sane one (finite, a face-sized scale,
    the crop's centre within a photo-size of the photo).

    The least-squares similarity of five 2-D points in complex numbers, in plain Python: the same
    transform as ``align.alignment_matrix`` (a rotation and a uniform scale), at a tenth of the
    cost of numpy's SVD on 2x2 arrays, which made loading a 5,000-face cache miss its second."""
    from refrestore.align import template_for

    src = [complex(x, y) for x, y in face.landmarks.tolist()]
    dst = [complex(x, y) for x, y in template_for(face.landmark_kind, FFHQ_SIZE).tolist()]
    if max(v.real for v in src) - min(v.real for v in src) < 2.0 and \
            max(v.imag for v in src) - min(v.imag for v in src) < 2.0:
        raise CacheCorrupt("landmarks are all one point")  # no face, and no rotation or scale
    ms, md = sum(src) / len(src), sum(dst) / len(dst)
    zs, zd = [v - ms for v in src], [v - md for v in dst]
    var = sum(abs(v) ** 2 for v in zs)
    c = sum(a.conjugate() * b for a, b in zip(zs, zd)) / var if var > 0 else complex("nan")
    scale = abs(c)
    ok = math.isfinite(scale) and ALIGN_SCALE[0] <= scale <= ALIGN_SCALE[1]
    if ok:
        centre = ms + (complex(FFHQ_SIZE / 2, FFHQ_SIZE / 2) - md) / c  # the crop's centre in the photo
        m = max(width, height)
        ok = -m <= centre.real <= width + m and -m <= centre.imag <= height + m
    if not ok:
        raise CacheCorrupt("landmarks give no usable alignment")
