"""How good a face is as a reference: resolution, sharpness, noise, exposure, landmark fit.

Every measure is mapped to 0..1 (1 = good) and combined into one quality score. Measures that
look at pixels use the inner face region of the aligned 512 crop, so background never counts.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from refrestore.align import FFHQ_SIZE, similarity_transform, template_for
from refrestore.faces import DetectedFace

# Inner face on the FFHQ 512 template: brows to chin, cheek to cheek.
_FACE_REGION = (170, 440, 150, 362)  # y0, y1, x0, x1


@dataclass(frozen=True)
class Quality:
    face_width: float  # px, in the source photo
    resolution: float
    sharpness: float
    noise: float
    exposure: float
    landmark_fit: float  # occlusion / odd geometry proxy: how well 5 points fit the template
    total: float
    # raw measurements behind the scores, for reports and tuning
    laplacian_var: float = 0.0
    noise_sigma: float = 0.0
    mean_luma: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {k: round(float(v), 4) for k, v in asdict(self).items()}


def _clip01(x: float) -> float:
    return float(min(1.0, max(0.0, x)))


def _luma(aligned: np.ndarray) -> np.ndarray:
    y0, y1, x0, x1 = _FACE_REGION
    return cv2.cvtColor(aligned[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY).astype(np.float64)


def laplacian_variance(gray: np.ndarray) -> float:
    """Variance of the Laplacian at half resolution: high for crisp detail, low for blur."""
    small = cv2.resize(gray, (gray.shape[1] // 2, gray.shape[0] // 2), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(small, cv2.CV_64F, ksize=3).var())


def noise_sigma(gray: np.ndarray) -> float:
    """Immerkaer's fast noise estimate (sigma on the 0..255 scale)."""
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64)
    conv = cv2.filter2D(gray, cv2.CV_64F, kernel)
    h, w = gray.shape
    return float(math.sqrt(math.pi / 2.0) * np.abs(conv[1:-1, 1:-1]).sum() / (6.0 * (w - 2) * (h - 2)))


def landmark_residual(face: DetectedFace) -> float:
    """RMS distance of the 5 landmarks from the template after the best similarity fit,
    as a fraction of the template's eye distance (about 0.02 for a clear frontal face)."""
    tmpl = template_for(face.landmark_kind, FFHQ_SIZE)
    m = similarity_transform(face.landmarks, tmpl)
    pts = np.asarray(face.landmarks, dtype=np.float64) @ m[:, :2].T + m[:, 2]
    rms = float(np.sqrt(((pts - tmpl) ** 2).sum(1).mean()))
    eye_dist = float(np.hypot(*(tmpl[0] - tmpl[1]))) if face.landmark_kind != "dlib5" else 126.0
    return rms / max(eye_dist, 1e-6)


def assess(aligned: np.ndarray, face: DetectedFace | None, face_width: float) -> Quality:
    """Quality of an aligned crop whose face was ``face_width`` px wide in its photo."""
    gray = _luma(aligned)
    lap = laplacian_variance(gray)
    sigma = noise_sigma(gray)
    mean = float(gray.mean()) / 255.0
    clipped = float(((gray <= 3) | (gray >= 252)).mean())

    # 32 px -> 0, 256 px and up -> 1, on a log scale (each doubling counts the same)
    resolution = _clip01(math.log2(max(face_width, 1.0) / 32.0) / 3.0)
    # Laplacian variance (half-resolution inner face) of crisp faces is ~1000-10000, of
    # blurred upscales of small faces ~5-20 (measured on data/identities).
    sharpness = _clip01(math.log10(max(lap, 1e-3) / 10.0) / 2.0)
    noise = _clip01(1.0 - max(0.0, sigma - 2.0) / 14.0)
    exposure = _clip01(1.0 - max(0.0, abs(mean - 0.5) - 0.2) / 0.3 - 2.0 * clipped)
    fit = _clip01(1.0 - max(0.0, landmark_residual(face) - 0.03) / 0.15) if face is not None else 1.0

    weights = {"resolution": 0.35, "sharpness": 0.3, "noise": 0.15, "exposure": 0.1, "fit": 0.1}
    parts = {"resolution": resolution, "sharpness": sharpness, "noise": noise,
             "exposure": exposure, "fit": fit}
    # weighted geometric mean with a floor: one bad measure pulls the total down hard,
    # but never to exactly zero, so ranking still works among poor faces
    total = math.exp(sum(w * math.log(0.05 + 0.95 * parts[k]) for k, w in weights.items()))
    return Quality(face_width=float(face_width), resolution=resolution, sharpness=sharpness,
                   noise=noise, exposure=exposure, landmark_fit=fit, total=_clip01(total),
                   laplacian_var=lap, noise_sigma=sigma, mean_luma=mean)
