"""The detector interface and helpers shared by all detectors."""
from __future__ import annotations

from typing import Protocol

import cv2
import numpy as np

from ..faces import DetectedFace


class DetectorError(RuntimeError):
    """A detector could not be built (missing or broken weights)."""


# In gallery cache keys (``gallery.index.detector_key``): 2 drops detections inside a larger
# face's head (``drop_faces_in_heads``), so galleries indexed before are indexed again.
DETECTION_VERSION = 2


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


# A detection a third as wide as another face, or smaller, lying wholly on that face or on its
# forehead and hair, is a pattern in that head (dlib's HOG finds "faces" in hair), not a second
# person: a real face there would be hidden by the head. The box is eyebrows to chin, so the
# head above it is taken as half a box high and the hair beside it a sixth of a box wide.
NESTED_MAX_WIDTH = 1.0 / 3.0
HEAD_ABOVE = 0.5
HEAD_BESIDE = 1.0 / 6.0


def drop_faces_in_heads(faces: list[DetectedFace]) -> list[DetectedFace]:
    """``faces`` without the small detections that lie wholly within a much larger face's head."""

    def inside_head(small: DetectedFace, big: DetectedFace) -> bool:
        if small.width > NESTED_MAX_WIDTH * big.width:
            return False
        x1, y1, x2, y2 = big.box
        w, h = x2 - x1, y2 - y1
        a1, b1, a2, b2 = small.box
        return a1 >= x1 - HEAD_BESIDE * w and a2 <= x2 + HEAD_BESIDE * w and b1 >= y1 - HEAD_ABOVE * h and b2 <= y2

    return [f for f in faces if not any(g is not f and inside_head(f, g) for g in faces)]
