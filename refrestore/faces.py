"""Data types shared by detection, alignment, reference selection and restoration.

Images inside the library are numpy arrays, HxWx3, RGB, uint8, unless a name says otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Landmark conventions. RetinaFace gives eye centres, nose tip and mouth corners;
# dlib's 5-point model gives the outer and inner corners of both eyes and the base of the nose.
LANDMARKS_RETINAFACE = "retinaface5"
LANDMARKS_DLIB5 = "dlib5"


@dataclass(frozen=True)
class DetectedFace:
    """One face found in a photo, in that photo's pixel coordinates."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    landmarks: np.ndarray  # (5, 2) float32, in the convention named by landmark_kind
    score: float
    landmark_kind: str
    detector: str

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def center(self) -> tuple[float, float]:
        return ((self.box[0] + self.box[2]) / 2.0, (self.box[1] + self.box[3]) / 2.0)


@dataclass
class AlignedFace:
    """A face warped onto the FFHQ 512 template, with the transform that put it there."""

    image: np.ndarray  # (S, S, 3) uint8 RGB
    affine: np.ndarray  # (2, 3) float64: photo coordinates -> aligned coordinates
    face: DetectedFace | None = None


@dataclass(frozen=True)
class Reference:
    """An aligned high-quality face of the same person, chosen from the user's gallery."""

    image: np.ndarray  # (512, 512, 3) uint8 RGB, aligned like the face it guides
    path: str
    face_index: int = 0
    score: float = 1.0  # selection score, used as a weight across several references
    # Compatibility per facial region (eyes, nose, mouth, outline), 0..1: which parts of
    # this reference may guide the restoration.
    regions: dict[str, float] = field(default_factory=dict)
    components: dict[str, float] = field(default_factory=dict)
