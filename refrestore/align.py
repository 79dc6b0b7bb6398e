"""5-point similarity alignment to the FFHQ 512 template, and its inverse.

RetinaFace and dlib put their five points in different places, so each convention has
its own template; both templates live in the same FFHQ frame, so the two detectors give
the same crop of the same face.
"""
from __future__ import annotations

import cv2
import numpy as np

from .faces import LANDMARKS_DLIB5, LANDMARKS_RETINAFACE, AlignedFace, DetectedFace

FFHQ_SIZE = 512

# Eye centres, nose tip, mouth corners on the FFHQ 512 crop (the template GFPGAN and
# CodeFormer use).
TEMPLATE_RETINAFACE = np.array(
    [[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935], [201.26117, 371.41043], [313.08905, 371.15118]],
    dtype=np.float64,
)
# dlib's points (outer and inner corner of the image-right eye, outer and inner corner of
# the image-left eye, base of the nose), measured in the same frame: the mean position of
# dlib's landmarks over the 85 FFHQ-aligned faces of refbench, each mapped by the
# similarity that aligns RetinaFace's points to the template above (spread 4-6 px).
TEMPLATE_DLIB5 = np.array(
    [[337.07, 241.68], [288.91, 244.27], [168.06, 244.18], [216.72, 245.29], [256.38, 338.48]],
    dtype=np.float64,
)

TEMPLATES = {LANDMARKS_RETINAFACE: TEMPLATE_RETINAFACE, LANDMARKS_DLIB5: TEMPLATE_DLIB5}


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src to dst (Umeyama)."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    fix = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        fix[1, 1] = -1.0
    rot = u @ fix @ vt
    var = (s**2).sum() / len(src)
    scale = float(np.trace(np.diag(sig) @ fix) / var) if var > 0 else 1.0
    t = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, t[:, None]])


def invert_affine(m: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(np.asarray(m, dtype=np.float64))


def affine_scale(m: np.ndarray) -> float:
    """The uniform scale of a similarity transform."""
    return float(np.sqrt(abs(np.linalg.det(np.asarray(m)[:, :2]))))


def template_for(kind: str, size: int = FFHQ_SIZE) -> np.ndarray:
    if kind not in TEMPLATES:
        raise ValueError(f"unknown landmark convention {kind!r}")
    return TEMPLATES[kind] * (size / FFHQ_SIZE)


def alignment_matrix(face: DetectedFace, size: int = FFHQ_SIZE) -> np.ndarray:
    """2x3 matrix from photo coordinates to the aligned crop."""
    return similarity_transform(face.landmarks, template_for(face.landmark_kind, size))


def warp_to_template(image_rgb: np.ndarray, matrix: np.ndarray, size: int = FFHQ_SIZE) -> np.ndarray:
    """Warp a photo region onto a size x size crop, without aliasing and without cropping at edges.

    A face much larger than the crop is first reduced with area averaging, from a window
    just around it, so a 50-megapixel photo is never resampled as a whole. Outside the photo
    the crop is filled by reflection, which keeps edge faces whole for the restorer; the
    paste-back only uses pixels that came from the photo.
    """
    m = np.asarray(matrix, dtype=np.float64)
    scale = affine_scale(m)
    if scale < 0.5:
        inv = invert_affine(m)
        corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], dtype=np.float64)
        src = corners @ inv.T
        h, w = image_rgb.shape[:2]
        margin = 4.0 / scale
        x0 = int(max(0, np.floor(src[:, 0].min() - margin)))
        y0 = int(max(0, np.floor(src[:, 1].min() - margin)))
        x1 = int(min(w, np.ceil(src[:, 0].max() + margin)))
        y1 = int(min(h, np.ceil(src[:, 1].max() + margin)))
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            window = image_rgb[y0:y1, x0:x1]
            factor = min(1.0, scale * 2.0)  # leave the final 2x to the warp's interpolation
            small = cv2.resize(
                window,
                (max(1, round((x1 - x0) * factor)), max(1, round((y1 - y0) * factor))),
                interpolation=cv2.INTER_AREA,
            )
            fx = small.shape[1] / float(x1 - x0)
            fy = small.shape[0] / float(y1 - y0)
            # photo -> window -> small: compose with the alignment
            to_small = np.array([[fx, 0, -x0 * fx], [0, fy, -y0 * fy], [0, 0, 1]], dtype=np.float64)
            m = (np.vstack([m, [0, 0, 1]]) @ np.linalg.inv(to_small))[:2]
            image_rgb = small
    return cv2.warpAffine(
        image_rgb, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
    )


def align_face(image_rgb: np.ndarray, face: DetectedFace, size: int = FFHQ_SIZE) -> AlignedFace:
    """Warp one detected face onto the FFHQ template."""
    matrix = alignment_matrix(face, size)
    crop = warp_to_template(image_rgb, matrix, size)
    return AlignedFace(image=crop, affine=matrix, face=face)


# Side at which a tight crop is searched for its face: the face is then about 130 px wide, well
# above every detector's smallest face, and a detector's work on the padded copy stays small.
ALIGNED_SEARCH_SIDE = 256


def detect_aligned_crop(image_rgb: np.ndarray, detector: object, pad_fraction: float = 0.5) -> DetectedFace | None:
    """Find the face in a tight (already aligned) crop.

    Detectors miss faces that fill the whole frame, so the crop is padded with a neutral
    border first; the result is mapped back to the crop's own coordinates. The face fills about
    half of such a crop, so a large crop is searched at ALIGNED_SEARCH_SIDE, for faces of at
    least a third of its width.
    """
    h, w = image_rgb.shape[:2]
    factor = min(1.0, ALIGNED_SEARCH_SIDE / float(max(h, w)))
    small = image_rgb if factor == 1.0 else cv2.resize(
        image_rgb, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA)
    pad = int(round(max(small.shape[:2]) * pad_fraction))
    padded = cv2.copyMakeBorder(small, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(127, 127, 127))
    faces = detector.detect(padded, min_face=max(small.shape[:2]) / 3.0)  # type: ignore[attr-defined]
    if not faces:
        return None
    best = faces[0]
    box = tuple(float((v - pad) / factor) for v in best.box)
    return DetectedFace(
        box=(max(0.0, box[0]), max(0.0, box[1]), min(float(w), box[2]), min(float(h), box[3])),
        landmarks=((best.landmarks - pad) / factor).astype(np.float32),
        score=best.score,
        landmark_kind=best.landmark_kind,
        detector=best.detector,
    )


def is_aligned_crop(image_rgb: np.ndarray, face: DetectedFace, tolerance: float = 0.08) -> bool:
    """True when a square crop already sits on the FFHQ template (no re-warp needed).

    Judged by the similarity that would align it: near-unit scale, near-zero rotation and
    a shift small against the crop size.
    """
    h, w = image_rgb.shape[:2]
    if h != w:
        return False
    m = similarity_transform(face.landmarks, template_for(face.landmark_kind, w))
    scale = affine_scale(m)
    angle = abs(np.degrees(np.arctan2(m[1, 0], m[0, 0])))
    shift = float(np.hypot(m[0, 2] - (1 - scale) * 0, m[1, 2])) / w
    return abs(scale - 1.0) < tolerance and angle < 5.0 and shift < tolerance
