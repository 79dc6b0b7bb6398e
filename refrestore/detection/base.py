"""The detector interface and helpers shared by all detectors."""
from __future__ import annotations

from typing import Protocol

import cv2
import numpy as np

from ..faces import DetectedFace


class DetectorError(RuntimeError):
    """A detector could not be built (missing or broken weights)."""


class Detector(Protocol):
    name: str

    def detect(self, image_rgb: np.ndarray, min_face: float = 0.0) -> list[DetectedFace]:
        """Faces in a photo, largest first, in that photo's pixel coordinates.

        ``min_face``: faces narrower than this many pixels are of no interest, so a detector may
        skip the work of looking for them (it may still return them)."""
        ...


def downscale_for_detection(image_rgb: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """A copy no larger than ``max_side`` and the factor that maps it back to the original.

    Big photos are detected on a small copy: detection cost grows with pixels, and the
    faces that matter stay large enough to be found.
    """
    h, w = image_rgb.shape[:2]
    longest = max(h, w)
    if longest <= max_side:
        return image_rgb, 1.0
    factor = max_side / float(longest)
    small = cv2.resize(image_rgb, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA)
    return small, 1.0 / factor


def sort_largest_first(faces: list[DetectedFace]) -> list[DetectedFace]:
    return sorted(faces, key=lambda f: f.width * (f.box[3] - f.box[1]), reverse=True)
