"""Where each pixel of the restored face is in a reference photo of the same person.

Three steps, each finer than the last:

1. a least-squares affine between the two faces' 68 landmarks (dlib's shape predictor, the
   one ``gallery.pose`` uses; fitted on the restored face, which is sharp enough for it, and
   on the reference);
2. optionally (off by default: it did not help, see ``stage.DetailOptions.spline``) a
   smoothed thin-plate spline through the landmarks' residuals;
3. a dense optical flow (OpenCV's DIS, ``net.warp.local_flow``) between the restored face and
   the warped reference, both blurred to the level the restored face still carries
   and contrast-normalised, which corrects what landmarks cannot see (eyelid lines, nostrils,
   hairline).

The maps are composed, so the reference is resampled once (bicubic: fine detail survives).
A visibility map says where the reference can be trusted geometrically: where the warp
squeezes or stretches it (a side of the face turned away in the reference) and where it
samples outside the photo. (Distrusting large flow corrections was tried and lost detail
that was in place: expressions move eyelids and lips by more than landmarks follow.)

Measured on held-out people, the whole stage with its gains refitted for each (hf_corr /
identity distance on faces 256 and refbench 512, ``benchmarks/ablate_detail.py``): no
correspondence 0.222 / 0.301 and 0.212 / 0.284; affine only 0.225 / 0.296, 0.205 / 0.281;
affine + spline 0.224 / 0.304, 0.203 / 0.298; DIS alone 0.239 / 0.286, 0.216 / 0.275; affine +
DIS (shipped) 0.238 / 0.287, 0.215 / 0.272; affine + spline + DIS 0.238 / 0.292, 0.216 / 0.279.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from ..net.warp import FLOW_SIZE, local_flow

# 68-point landmarks are fitted on this side (the identity model's fixed box on the template).
LANDMARK_SIDE = 512
# Flow refinement, in pixels at 512: blur both faces by FLOW_SIGMA and normalise contrast over
# FLOW_WINDOW (chosen on training people: finer or coarser settings matched less detail).
FLOW_SIGMA = 1.5
FLOW_WINDOW = 8.0
# Spline smoothing, relative to the kernel's scale on the crop: landmarks on a restored face
# are a few pixels off, and an interpolating spline would fold the warp between close points.
TPS_SMOOTH = 0.02
TPS_GRID = 48
STRETCH_TRUST = 0.35  # log of the warp's local area change at which trust falls to 0.6  # the spline is evaluated on this grid, then interpolated (it is smooth)


class Landmarker(Protocol):
    """Anything that gives 68 landmarks, (68, 2) in pixels of a 512 aligned crop."""

    def landmarks68(self, aligned: np.ndarray) -> np.ndarray: ...


def dlib_landmarker() -> Landmarker:
    """dlib's 68-point shape predictor on aligned crops (loads a 100 MB model once)."""
    from ..gallery.pose import FaceAnalyzer

    return FaceAnalyzer()


def landmarks_at(landmarker: Landmarker, face: np.ndarray) -> np.ndarray:
    """68 landmarks of an aligned RGB crop, in that crop's own pixels."""
    return np.asarray(landmarker.landmarks68(face), np.float64) * (face.shape[0] / LANDMARK_SIDE)


@dataclass
class Correspondence:
    """One reference brought onto the restored face."""

    grey: np.ndarray  # (S, S) float32: the reference's luminance, warped onto the face
    mapping: np.ndarray  # (S, S, 2) float32: where each face pixel sits in the reference
    visibility: np.ndarray  # (S, S) float32, 0..1


def _affine(dst: np.ndarray, src: np.ndarray) -> np.ndarray:
    """(3, 2) least-squares affine taking homogeneous ``dst`` points onto ``src`` points."""
    a = np.hstack([dst, np.ones((len(dst), 1))])
    return np.linalg.lstsq(a, src, rcond=None)[0]


def _tps_kernel(r2: np.ndarray) -> np.ndarray:
    return np.where(r2 > 0, 0.5 * r2 * np.log(np.maximum(r2, 1e-12)), 0.0)


def spline_map(face_pts: np.ndarray, ref_pts: np.ndarray, size: int, smooth: float = TPS_SMOOTH,
               spline: bool = True) -> np.ndarray:
    """(S, S, 2) float32: an affine plus a smoothed thin-plate spline taking each face pixel to
    the reference pixel that shows the same point of the face (landmarks face_pts -> ref_pts);
    ``spline`` False keeps the affine alone (for the ablation)."""
    # Pixel centres in the unit square, so the smoothing does not depend on the crop's size.
    p = (np.asarray(face_pts, np.float64) + 0.5) / size
    q = (np.asarray(ref_pts, np.float64) + 0.5) / size
    aff = _affine(p, q)
    resid = q - np.hstack([p, np.ones((len(p), 1))]) @ aff
    n = len(p)
    k = _tps_kernel(((p[:, None] - p[None]) ** 2).sum(-1)) + smooth * np.eye(n)
    ph = np.hstack([np.ones((n, 1)), p])
    a = np.zeros((n + 3, n + 3))
    a[:n, :n], a[:n, n:], a[n:, :n] = k, ph, ph.T
    rhs = np.zeros((n + 3, 2))
    rhs[:n] = resid
    coef = np.linalg.lstsq(a, rhs, rcond=None)[0] if spline else np.zeros((n + 3, 2))
    g = (np.arange(TPS_GRID) + 0.5) / TPS_GRID
    gx, gy = np.meshgrid(g, g)
    grid = np.stack([gx.ravel(), gy.ravel()], 1)
    gh = np.hstack([grid, np.ones((len(grid), 1))])
    warp = gh @ aff + _tps_kernel(((grid[:, None] - p[None]) ** 2).sum(-1)) @ coef[:n] + gh @ coef[n:]
    warp = (warp * size - 0.5).reshape(TPS_GRID, TPS_GRID, 2).astype(np.float32)
    # The grid sits at cell centres, as resize assumes: each value lands on its pixel centre.
    return cv2.resize(warp, (size, size), interpolation=cv2.INTER_LINEAR)


def identity_map(size: int) -> np.ndarray:
    xs, ys = np.meshgrid(np.arange(size, dtype=np.float32), np.arange(size, dtype=np.float32))
    return np.stack([xs, ys], -1)


def compose(mapping: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``mapping`` sampled at each pixel plus ``flow``: first the flow, then the mapping."""
    size = mapping.shape[0]
    base = identity_map(size) + flow
    return cv2.remap(mapping, base[..., 0], base[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def grey_of(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)


def _reduce(img: np.ndarray, side: int) -> np.ndarray:
    return img if img.shape[0] == side else cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA)


def _reduce_map(mapping: np.ndarray, side: int) -> np.ndarray:
    """A mapping (in pixels of an S crop) as one for ``side`` crops: area-averaged, rescaled."""
    size = mapping.shape[0]
    if side == size:
        return mapping
    f = side / size
    return (cv2.resize(mapping, (side, side), interpolation=cv2.INTER_AREA) + 0.5) * f - 0.5


def _visibility(mapping: np.ndarray, size: int) -> np.ndarray:
    """Computed at 1/4 of the side (everything in it is smooth), returned at S."""
    side = max(16, size // 4)
    m = _reduce_map(mapping, side)
    # Local area change of the warp: 1 where the reference is seen as the face is, falling
    # where it is squeezed or stretched by more than about a third (foreshortening).
    gxx, gxy = np.gradient(m[..., 0], axis=1), np.gradient(m[..., 0], axis=0)
    gyx, gyy = np.gradient(m[..., 1], axis=1), np.gradient(m[..., 1], axis=0)
    det = cv2.GaussianBlur(np.abs(gxx * gyy - gxy * gyx).astype(np.float32), (0, 0), 1.0)
    vis = np.exp(-(np.log(np.maximum(det, 1e-3)) ** 2) / (2 * STRETCH_TRUST ** 2))
    inside = ((m[..., 0] >= 0) & (m[..., 0] <= side - 1) & (m[..., 1] >= 0) & (m[..., 1] <= side - 1))
    vis *= cv2.GaussianBlur(inside.astype(np.float32), (0, 0), 1.0)
    return cv2.resize(vis.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)


def correspond(face_grey: np.ndarray, face_pts: np.ndarray | None, ref: np.ndarray, ref_pts: np.ndarray | None,
               landmarks: bool = True, flow: bool = True, spline: bool = True) -> Correspondence:
    """Bring ``ref`` (RGB, aligned like the face) onto the restored face (grey float32 S x S).

    ``landmarks``, ``spline`` and ``flow`` switch the steps (for the ablation); with neither
    landmarks nor flow, the template alignment both crops already have is used as it is."""
    size = face_grey.shape[0]
    if ref.shape[0] != size:
        ref = cv2.resize(ref, (size, size), interpolation=cv2.INTER_AREA if ref.shape[0] > size else cv2.INTER_CUBIC)
    ref_grey = grey_of(ref)
    if landmarks and face_pts is not None and ref_pts is not None:
        mapping = spline_map(face_pts, ref_pts, size, spline=spline)
    else:
        mapping = identity_map(size)
    if flow:
        # The flow is found at FLOW_SIZE at most: the first warp is made there too.
        side = min(size, FLOW_SIZE)
        small = _reduce_map(mapping, side)
        first = cv2.remap(_reduce(ref_grey, side), small[..., 0], small[..., 1], cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT)
        s = side / 512.0
        moved = local_flow(_reduce(face_grey, side), first, FLOW_SIGMA * s, FLOW_WINDOW * s)
        if side != size:
            moved = cv2.resize(moved, (size, size), interpolation=cv2.INTER_LINEAR) * (size / side)
        mapping = compose(mapping, moved)
    warped = cv2.remap(ref_grey, mapping[..., 0], mapping[..., 1], cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    return Correspondence(grey=warped, mapping=mapping, visibility=_visibility(mapping, size))
