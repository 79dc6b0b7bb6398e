"""Gallery faces as a degraded query would show them: quality levels for like-with-like scores.

A pretrained embedder puts a blurred, noisy 24-px face far from the same person's clean photo
(its features shift with the damage), so each gallery face is also embedded as it would look at
a few face widths (:data:`LEVELS`), and a degraded query is compared with the level its own
detail says it is at. The recipe is fixed and deterministic (a matched blur, area downscale,
JPEG, no noise) and deliberately not the benchmark queries' degradation (Gaussian blur, noise 10,
JPEG 40), so figures measured with it are not tuned to one kind of damage.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

# Face widths (px, the face's width in its photo) of the gallery's degraded copies.
LEVELS: tuple[int, ...] = (48, 32, 24, 16)
RECIPE = "area+blur0.35f+jpeg60-v1"  # in every cache key: changing the recipe starts afresh
_JPEG_QUALITY = 60
_BLUR_PER_FACTOR = 0.35
# Face (detector box) width on the aligned crop: half the crop (refrestore.gallery.faceset).
FACE_FRACTION = 0.5


def degrade_to_width(aligned: np.ndarray, width: float) -> np.ndarray:
    """The aligned crop (RGB uint8, any size) as if its face had been ``width`` px wide."""
    if aligned.dtype != np.uint8 or aligned.ndim != 3 or aligned.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got {aligned.dtype} {aligned.shape}")
    size = aligned.shape[0]
    factor = FACE_FRACTION * size / float(width)
    if factor <= 1.0:
        return aligned
    sigma = _BLUR_PER_FACTOR * factor
    k = 2 * int(math.ceil(3 * sigma)) + 1
    x = cv2.GaussianBlur(aligned, (k, k), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
    low = max(4, round(size / factor))
    x = cv2.resize(x, (low, low), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(x, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    x = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(cv2.resize(x, (size, size), interpolation=cv2.INTER_CUBIC))
