"""Putting restored faces back into the whole photo.

Each face is warped back with the inverse of its alignment and blended through a soft,
feathered face-shaped mask, touching only the pixels around that face, so a 50-megapixel
photo is never copied to float.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .align import FFHQ_SIZE, invert_affine


@dataclass(frozen=True)
class PasteJob:
    restored: np.ndarray  # aligned crop, RGB uint8 (S x S)
    original: np.ndarray  # the aligned input crop it replaces, for colour matching
    affine: np.ndarray  # 2x3: photo (before upscale) -> aligned crop
    mask: np.ndarray | None = None  # optional S x S float32 0..1 (face parsing), else the default


def face_mask(size: int = FFHQ_SIZE) -> np.ndarray:
    """A feathered ellipse over forehead, cheeks and chin on the FFHQ template, 0..1 float32."""
    s = size / FFHQ_SIZE
    mask = np.zeros((size, size), dtype=np.float32)
    cv2.ellipse(mask, (int(256 * s), int(276 * s)), (int(168 * s), int(212 * s)), 0, 0, 360, 1.0, -1)
    # Feather inwards: erode, then blur, so the mask reaches 0 before the ellipse edge.
    k = max(3, int(40 * s) | 1)
    mask = cv2.erode(mask, np.ones((k, k), np.uint8))
    return cv2.GaussianBlur(mask, (0, 0), 16.0 * s)


def match_colour(restored: np.ndarray, original: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Shift the restored face's mean colour (in Lab) to the original's, inside the mask.

    Restorers drift in white balance and brightness; the face must sit in its photo.
    """
    weight = mask > 0.5
    if weight.sum() < 16:
        return restored
    lab_r = cv2.cvtColor(restored, cv2.COLOR_RGB2LAB).astype(np.float32)
    lab_o = cv2.cvtColor(original, cv2.COLOR_RGB2LAB).astype(np.float32)
    shift = lab_o[weight].mean(0) - lab_r[weight].mean(0)
    lab_r += shift
    return cv2.cvtColor(np.clip(lab_r, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def upscale_photo(photo: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return photo.copy()
    h, w = photo.shape[:2]
    return cv2.resize(photo, (w * factor, h * factor), interpolation=cv2.INTER_CUBIC)


def paste_faces(photo: np.ndarray, jobs: list[PasteJob], upscale: int = 1, grayscale: bool = False) -> np.ndarray:
    """The photo (upscaled by ``upscale``) with every restored face blended in."""
    out = upscale_photo(photo, upscale)
    h, w = out.shape[:2]
    for job in jobs:
        size = job.restored.shape[0]
        mask = job.mask if job.mask is not None else face_mask(size)
        face = match_colour(job.restored, job.original, mask)
        if grayscale:
            grey = cv2.cvtColor(face, cv2.COLOR_RGB2GRAY)
            face = cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)
        # aligned -> upscaled photo
        to_photo = invert_affine(job.affine)
        to_photo[:, :] *= upscale
        corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], dtype=np.float64) @ to_photo.T
        x0 = int(max(0, np.floor(corners[:, 0].min()) - 2))
        y0 = int(max(0, np.floor(corners[:, 1].min()) - 2))
        x1 = int(min(w, np.ceil(corners[:, 0].max()) + 2))
        y1 = int(min(h, np.ceil(corners[:, 1].max()) + 2))
        if x1 <= x0 or y1 <= y0:
            continue
        local = to_photo.copy()
        local[:, 2] -= (x0, y0)
        roi_size = (x1 - x0, y1 - y0)
        # A face pasted into a small photo shrinks: area-average the crop first (warpAffine
        # has no area filter) so the warp only does the last factor of two and does not alias.
        scale_back = float(np.sqrt(abs(np.linalg.det(local[:, :2]))))
        if scale_back < 0.5:
            small = max(8, int(round(size * scale_back * 2.0)))
            face = cv2.resize(face, (small, small), interpolation=cv2.INTER_AREA)
            mask = cv2.resize(mask, (small, small), interpolation=cv2.INTER_AREA)
            local = local.copy()
            local[:, :2] *= size / float(small)
        warped = cv2.warpAffine(face, local, roi_size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        alpha = cv2.warpAffine(mask, local, roi_size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        alpha = np.clip(alpha, 0.0, 1.0)[..., None]
        roi = out[y0:y1, x0:x1].astype(np.float32)
        blended = roi + (warped.astype(np.float32) - roi) * alpha
        out[y0:y1, x0:x1] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
    return out
