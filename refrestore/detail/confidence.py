"""How far to trust each warped reference, pixel by pixel and band by band.

A reference photo is another day, another light and often another expression: some of its
detail is this person's (the shape of an eyelid, the line of the lips, a nostril, the brows)
and some belongs to that photo only (pores under that light, a strand of hair, a reflection).
Three signals separate them:

- **agreement**: local normalised correlation of the reference's band with each other
  reference's same band (several photos showing the same line at the same place after each
  was warped onto the face: it is the person's, and it is in place), times its correlation
  with the restored face at the next coarser band (the finest scale the restored face still
  carries);
- **visibility**: from the correspondence (a squeezed or stretched warp, a large flow
  correction, samples outside the photo);
- **region**: eyes, brows, nose and lips hold detail that survives from photo to photo, skin
  less, hair and background almost none; from the 68 landmarks of the restored face, or from
  the face parser's labels when its weights are present.

Local moments are computed on products taken at full size, area-reduced, and blurred at a
quarter of the size: the same numbers as full-size Gaussian windows to within a few
percent, at a sixteenth of the cost.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

REGIONS = ("features", "skin", "rest")  # eyes/brows/nose/lips, the rest of the face, hair and background
AGREEMENT_WINDOW = 10.0  # Gaussian window of the local correlation, pixels at 512
MOMENT_REDUCTION = 4  # local moments are blurred at 1/4 of the crop's side
# A reference with no other to vote gets the agreement references of the same person
# usually have with each other, per band (mean over the face of 8 training refbench faces
# with 3 references each; 1 instead gave a lone reference 11x the finest band's usual
# confidence, and its detail moved the face away from the person: dlib distance +0.010 on
# test_fix_refs's one-reference face).
LONE_AGREEMENT = (0.09, 0.35, 0.56)
# CelebAMask-HQ labels of ParseNet (refrestore.parsing): brows 2-3, eyes 4-5, nose 10,
# mouth 11, lips 12-13 are features; skin 1 and ears 7-8 are skin; glasses 6 (a reference
# wearing none would put bare eyes on them), hair, neck, cloth, hat and background are the rest.
_PARSE_REGION = np.array([2, 1, 0, 0, 0, 0, 2, 1, 1, 2, 0, 0, 0, 0, 2, 2, 2, 2, 2], np.int64)


def _soft(mask: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigma)


def regions_from_landmarks(pts: np.ndarray, size: int) -> np.ndarray:
    """(3, S, S) float32 soft region weights (features, skin, rest; they sum to 1) from the
    68 landmarks of the face, in its own pixels."""
    s = size / 512.0
    pts = np.asarray(pts, np.float64)

    def hull(idx: Sequence[int], grow: float) -> np.ndarray:
        m = np.zeros((size, size), np.uint8)
        cv2.fillConvexPoly(m, cv2.convexHull(np.round(pts[list(idx)]).astype(np.int32)), 1)
        k = max(1, int(round(grow * s)))
        return cv2.dilate(m, np.ones((2 * k + 1, 2 * k + 1), np.uint8)) if grow > 0 else m

    features = (hull(range(36, 42), 12) | hull(range(42, 48), 12) | hull(range(17, 22), 10)
                | hull(range(22, 27), 10) | hull(range(27, 36), 7) | hull(range(48, 60), 10))
    # The face: the jaw line and the brows raised by about a forehead's height.
    outline = np.vstack([pts[0:17], pts[26:16:-1] - [0.0, 40.0 * s]])
    face = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(face, cv2.convexHull(np.round(outline).astype(np.int32)), 1)
    skin = face & (1 - features)
    return _normalised(np.stack([_soft(features, 4 * s), _soft(skin, 4 * s), _soft(1 - (face | features), 4 * s)]))


def regions_from_labels(labels: np.ndarray, size: int) -> np.ndarray:
    """(3, S, S) soft region weights from a parser label map (CelebAMask-HQ classes)."""
    lab = np.asarray(labels, np.int64)
    if lab.shape[0] != size:
        lab = cv2.resize(lab.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST).astype(np.int64)
    cls = _PARSE_REGION[np.clip(lab, 0, len(_PARSE_REGION) - 1)]
    s = size / 512.0
    return _normalised(np.stack([_soft(cls == r, 4 * s) for r in range(3)]))


def _normalised(w: np.ndarray) -> np.ndarray:
    return (w / np.maximum(w.sum(0, keepdims=True), 1e-6)).astype(np.float32)


class Moments:
    """Local second moments of band images at a reduced size (see the module notes)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.small = max(16, size // MOMENT_REDUCTION)
        self.sigma = AGREEMENT_WINDOW * (size / 512.0) * self.small / size

    def local(self, product: np.ndarray) -> np.ndarray:
        small = cv2.resize(product, (self.small, self.small), interpolation=cv2.INTER_AREA)
        return cv2.GaussianBlur(small, (0, 0), self.sigma)

    def correlation(self, a: np.ndarray, b: np.ndarray, ea: np.ndarray, eb: np.ndarray) -> np.ndarray:
        """Local correlation of two zero-mean bands (their energies ``ea``/``eb`` from
        :meth:`local`), clipped to 0..1: opposite detail is no support."""
        return np.clip(self.local(a * b) / np.sqrt(np.maximum(ea * eb, 1e-6)), 0.0, 1.0)

    def full(self, small: np.ndarray) -> np.ndarray:
        return cv2.resize(small, (self.size, self.size), interpolation=cv2.INTER_LINEAR)


def agreement(ref_bands: Sequence[Sequence[np.ndarray]], face_bands: Sequence[np.ndarray],
              between_refs: bool = True, with_face: bool = True) -> np.ndarray:
    """(K, B, S, S) float32: for reference k and band b, the mean local correlation of its band
    with every other reference's same band, times its local correlation with the face at band
    b + 1 (the last band: itself). A product, not a mean: three photos of someone else agree
    with each other as well as three of the person, and only the face can tell them apart
    (measured: a stranger's references get half the confidence of the person's with the
    product, two thirds with a mean). A lone reference gets LONE_AGREEMENT for the first factor."""
    k_refs, n_bands = len(ref_bands), len(face_bands)
    size = face_bands[0].shape[0]
    m = Moments(size)
    e_ref = [[m.local(b * b) for b in bands] for bands in ref_bands]
    e_face = [m.local(b * b) for b in face_bands]
    out = np.ones((k_refs, n_bands, size, size), np.float32)
    for b in range(n_bands):
        c = min(b + 1, n_bands - 1)  # the face's own detail at this band is what it lacks
        for k in range(k_refs):
            conf = np.ones_like(e_face[0])
            others = [j for j in range(k_refs) if j != k]
            if between_refs and others:
                conf = conf * np.mean([m.correlation(ref_bands[k][b], ref_bands[j][b], e_ref[k][b], e_ref[j][b])
                                       for j in others], axis=0)
            elif between_refs:
                conf = conf * LONE_AGREEMENT[min(b, len(LONE_AGREEMENT) - 1)]
            if with_face:
                conf = conf * m.correlation(ref_bands[k][c], face_bands[c], e_ref[k][c], e_face[c])
            out[k, b] = m.full(conf)
    return out
