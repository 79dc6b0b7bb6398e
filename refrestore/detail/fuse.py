"""The references' detail, fused and added to the restored face where they agree.

Everything is done on luminance: the references' colour (another day, another light) never
reaches the face, so the face keeps the input's colour. Each face and warped reference is
split into three bands (Gaussian differences at 2, 4 and 8 pixels at 512, scaled to the
crop). For band b, with c_k the confidence of reference k (agreement x visibility x its
selection weight) and x_k its band, scaled to the face's contrast:

    R_b = sum_k c_k^2 x_k / sum_k c_k        C_b = sum_k c_k^2 / sum_k c_k

(a confidence-weighted mean of the references, times their confidence), and the face's luma
changes by

    sum_b d_b sum_r P_r (alpha_br(F) R_b - beta_br C_b O_b)

where O_b is the restored face's own band, P_r the region weights (features, skin, rest),
and d_b how much of band b the face lacks: 1 - (its energy / the references' energy) over
the face, 0 for a face that already has the detail (a sharp face gets nothing). beta takes
out the restorer's own band where the references are sure of something else (a restorer's
finest band on a badly damaged face is mostly its own artefacts). alpha and beta were fitted
by least squares on training people only (severe and moderate, ``benchmarks/fit_detail.py``):
at fidelity 1 the change is the fitted one (closest to the truth in the mean-square sense);
lower fidelities scale the references' part up, by FIDELITY_BOOST at 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

BAND_SIGMAS = (2.0, 4.0, 8.0, 16.0)  # band b lies between sigma b and b + 1 (pixels at 512; 0 for b = 0)
N_BANDS = 3
CONTRAST_SIGMA = 8.0  # the face's shading, for matching a reference's contrast to the face's
CONTRAST_LIMITS = (0.5, 2.0)

# Fitted gains [band][region] (regions: features, skin, rest); see the module notes.
ALPHA = np.array([[0.855, 0.228, 0.865], [4.51, 4.437, 2.178], [0.0, 0.693, 0.0]], np.float32)
BETA = np.array([[2.445, 2.057, 2.746], [3.537, 6.611, 1.122], [0.0, 0.25, 0.0]], np.float32)
WEIGHT_POWER = 2.0  # (K, S, S) weights c_k^p / sum c_k^(p-1)
FIDELITY_BOOST = 3.0  # the references' part at fidelity 0, relative to fidelity 1


def split_bands(grey: np.ndarray, n: int = N_BANDS) -> list[np.ndarray]:
    """``n`` detail bands of a grey float32 crop, finest first. Each level is blurred from the
    last (variances add); from 4 pixels at 512 on, at half size (it holds nothing finer)."""
    size = grey.shape[0]
    s = size / 512.0
    levels, prev, half = [grey], 0.0, None
    for sig in BAND_SIGMAS[:n]:
        step = float(np.sqrt(max(sig * sig - prev * prev, 0.0))) * s
        if sig >= 8.0 and size >= 64:
            if half is None:
                half = cv2.resize(levels[-1], (size // 2, size // 2), interpolation=cv2.INTER_AREA)
            half = cv2.GaussianBlur(half, (0, 0), step / 2.0)
            levels.append(cv2.resize(half, (size, size), interpolation=cv2.INTER_LINEAR))
        else:
            levels.append(cv2.GaussianBlur(levels[-1], (0, 0), step))
        prev = sig
    return [levels[b] - levels[b + 1] for b in range(n)]


def _shading(grey: np.ndarray) -> np.ndarray:
    """The face's shading (blurred by CONTRAST_SIGMA), at a quarter of its side."""
    side = max(16, grey.shape[0] // 4)
    small = cv2.resize(grey, (side, side), interpolation=cv2.INTER_AREA)
    return cv2.GaussianBlur(small, (0, 0), CONTRAST_SIGMA * side / 512.0)


def contrast_gain(face_grey: np.ndarray, ref_grey: np.ndarray, weight: np.ndarray) -> float:
    """How much to scale a reference's detail so its contrast is the face's: the ratio of the
    two faces' shading deviations over ``weight`` (the face region), within CONTRAST_LIMITS."""
    side = max(16, weight.shape[0] // 4)
    w = cv2.resize(weight, (side, side), interpolation=cv2.INTER_AREA)
    w = w / max(float(w.sum()), 1e-6)

    def dev(x: np.ndarray) -> float:
        m = float((x * w).sum())
        return float(np.sqrt(max(float(((x - m) ** 2 * w).sum()), 1e-6)))

    return float(np.clip(dev(_shading(face_grey)) / dev(_shading(ref_grey)), *CONTRAST_LIMITS))


def deficiency(face_bands: Sequence[np.ndarray], ref_bands: Sequence[Sequence[np.ndarray]],
               weight: np.ndarray) -> np.ndarray:
    """(B,) how much of each band the face lacks against the (contrast-matched) references,
    over ``weight``: 0 when it has as much detail as they have, 1 when it has none."""
    w = (weight / max(float(weight.sum()), 1e-6)).ravel()

    def energy(band: np.ndarray) -> float:  # sum of w x band^2, as one product and a BLAS dot
        flat = band.ravel()
        return max(float(np.dot(flat * w, flat)), 0.0)

    out = np.zeros(len(face_bands), np.float32)
    for b, fb in enumerate(face_bands):
        face = np.sqrt(energy(fb))
        refs = float(np.mean([np.sqrt(energy(rb[b])) for rb in ref_bands]))
        out[b] = float(np.clip(1.0 - face / max(refs, 1e-6), 0.0, 1.0))
    return out


def fidelity_gain(fidelity: float) -> float:
    """The references' share at ``fidelity`` (1: as fitted; 0: FIDELITY_BOOST times that)."""
    f = float(np.clip(fidelity, 0.0, 1.0))
    return 1.0 + (FIDELITY_BOOST - 1.0) * (1.0 - f)


@dataclass
class Fused:
    luma: np.ndarray  # (S, S) float32: what is added to the face's luminance
    confidence: np.ndarray  # (S, S) float32 0..1: the references' confidence where detail was added
    shares: list[float]  # per reference: its part of the added detail (sum 1, or all 0)


def _weights(conf: np.ndarray, weighted: bool) -> np.ndarray:
    """(K, S, S): c_k^2 / sum c (a confidence-weighted mean, times its confidence), or the
    mean confidence split evenly (``weighted`` off, for the ablation)."""
    if weighted:
        # (a float power of a (K, S, S) array is a twentieth of the stage's time: skip it at 2)
        c = conf if WEIGHT_POWER == 2.0 else conf ** (WEIGHT_POWER - 1)
        return c * conf / np.maximum(c.sum(0), 1e-6)
    return np.repeat(conf.mean(0, keepdims=True), len(conf), 0) / len(conf)


def terms(face_bands: Sequence[np.ndarray], ref_bands: Sequence[Sequence[np.ndarray]], conf: np.ndarray,
          regions: np.ndarray, lacking: np.ndarray, weighted: bool = True
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The two kinds of term, (B, 3, S, S) each: d_b P_r R_b and d_b P_r C_b O_b; the
    per-reference parts of R, (K, B, S, S); and C, (B, S, S). ``conf`` is (K, B, S, S); ``regions`` (3, S, S);
    ``lacking`` (B,) from :func:`deficiency`. ``weighted`` False takes the plain mean of the
    references (their confidences still scale it), for the ablation."""
    k_refs, n_bands = len(ref_bands), len(face_bands)
    size = face_bands[0].shape[0]
    add = np.zeros((n_bands, len(regions), size, size), np.float32)
    take = np.zeros_like(add)
    parts = np.zeros((k_refs, n_bands, size, size), np.float32)
    sure_all = np.zeros((n_bands, size, size), np.float32)
    for b, fb in enumerate(face_bands):
        if lacking[b] <= 0.0:
            continue
        wk = _weights(conf[:, b], weighted)
        for k in range(k_refs):
            parts[k, b] = wk[k] * ref_bands[k][b]
        refs = parts[:, b].sum(0)
        sure = sure_all[b] = wk.sum(0)
        add[b] = lacking[b] * regions * refs
        take[b] = lacking[b] * regions * (sure * fb)
    return add, take, parts, sure_all


def fuse(face_bands: Sequence[np.ndarray], ref_bands: Sequence[Sequence[np.ndarray]], conf: np.ndarray,
         regions: np.ndarray, lacking: np.ndarray, fidelity: float, weighted: bool = True,
         alpha: np.ndarray = ALPHA, beta: np.ndarray = BETA) -> Fused:
    """The luma change of the module notes, its confidence map and each reference's share."""
    size = face_bands[0].shape[0]
    a = alpha * fidelity_gain(fidelity)
    # Shown to the user: the references' confidence, weighted by how much each band and region
    # takes from them (1 where the band the features take most from is fully trusted).
    norm = max(float(alpha.sum(0).max()), 1e-6)
    luma = np.zeros((size, size), np.float32)
    conf_map = np.zeros((size, size), np.float32)
    per_ref = np.zeros(len(ref_bands))
    for b, fb in enumerate(face_bands):
        if lacking[b] <= 0.0:
            continue
        wk = _weights(conf[:, b], weighted)
        ga = np.tensordot(a[b], regions, 1)
        gb = np.tensordot(beta[b], regions, 1)
        sure = wk.sum(0)
        refs = sum(wk[k] * ref_bands[k][b] for k in range(len(ref_bands)))
        luma += lacking[b] * (ga * refs - gb * sure * fb)
        shown = np.tensordot(alpha[b], regions, 1) / norm
        conf_map += shown * sure
        for k in range(len(ref_bands)):
            per_ref[k] += float(np.abs(shown * wk[k] * ref_bands[k][b]).sum())
    total = float(per_ref.sum())
    shares = [float(p / total) if total > 0 else 0.0 for p in per_ref]
    return Fused(luma=luma, confidence=np.clip(conf_map, 0.0, 1.0), shares=shares)
