"""Head pose and expression cues of an aligned face, from dlib's 68-point landmarks.

The 68 points are fitted on the aligned 512 crop (the same fixed box the identity model uses),
so they come out the same whichever detector found the face. Yaw is a PnP fit of six of the
points to a generic 3D head. Pitch is not taken from that fit: it leans on the chin and mouth
corners, so an open mouth or a broad smile reads as a nod (a smiling frontal face came out at
-40 degrees). Instead pitch comes from how far the nose tip sits below the eye line, which
expressions hardly move; a person's own nose length still biases it, but selection only
compares a face with references of the same person, where that bias cancels. Roll in the photo
comes from the alignment transform, because alignment has already removed it from the crop.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from refrestore.identity import DLIB_ALIGNED_RECT

# A generic head in camera-like axes (x right, y down, z away from the camera), nose tip at
# the origin, millimetre-ish units. Points: nose tip 30, chin 8, outer eye corners 36/45,
# mouth corners 48/54 of the 68-point scheme.
_MODEL_IDX = [30, 8, 36, 45, 48, 54]
_MODEL_3D = np.array(
    [
        [0.0, 0.0, 0.0],
        [0.0, 330.0, 65.0],
        [-225.0, -170.0, 135.0],
        [225.0, -170.0, 135.0],
        [-150.0, 150.0, 125.0],
        [150.0, 150.0, 125.0],
    ],
    dtype=np.float64,
)


@dataclass(frozen=True)
class FaceGeometry:
    """Pose in degrees and expression cues (openness ratios) of one face."""

    yaw: float  # + : face turned toward the image's right
    pitch: float  # + : face tilted down (offset by the person's nose length, see above)
    roll: float  # in-plane rotation in the photo
    eye_open: float  # eye aspect ratio, ~0.25-0.35 open, < 0.15 closed
    mouth_open: float  # inner-lip gap / mouth width, ~0 closed, > 0.3 wide open
    landmarks68: np.ndarray  # (68, 2) float32 on the aligned crop


class FaceAnalyzer:
    """Fits dlib's 68-point shape model on aligned crops; holds the (100 MB) predictor."""

    def __init__(self) -> None:
        import dlib
        import face_recognition_models as frm

        self._predictor = dlib.shape_predictor(frm.pose_predictor_model_location())
        self._rect = dlib.rectangle(*DLIB_ALIGNED_RECT)

    def landmarks68(self, aligned: np.ndarray) -> np.ndarray:
        if aligned.shape[:2] != (512, 512):
            aligned = cv2.resize(aligned, (512, 512), interpolation=cv2.INTER_CUBIC)
        shape = self._predictor(np.ascontiguousarray(aligned), self._rect)
        return np.array([[shape.part(i).x, shape.part(i).y] for i in range(68)], dtype=np.float32)

    def analyze(self, aligned: np.ndarray, affine: np.ndarray | None = None) -> FaceGeometry:
        lm = self.landmarks68(aligned)
        yaw, pitch, roll_in_crop = head_pose(lm)
        roll = roll_in_crop + (roll_from_affine(affine) if affine is not None else 0.0)
        eye, mouth = expression_cues(lm)
        return FaceGeometry(yaw=yaw, pitch=pitch, roll=roll, eye_open=eye, mouth_open=mouth,
                            landmarks68=lm)


def head_pose(lm68: np.ndarray, size: int = 512) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees from 68 landmarks on a size x size aligned crop."""
    pts = np.asarray(lm68, dtype=np.float64)[_MODEL_IDX]
    focal = float(size)
    camera = np.array([[focal, 0, size / 2.0], [0, focal, size / 2.0], [0, 0, 1]], dtype=np.float64)
    ok, rvec, _ = cv2.solvePnP(_MODEL_3D, pts, camera, np.zeros(4), flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        return 0.0, 0.0, 0.0
    rot, _ = cv2.Rodrigues(rvec)
    # R = Rz(roll) Ry(yaw) Rx(pitch) decomposition
    yaw = -float(np.degrees(np.arcsin(np.clip(-rot[2, 0], -1.0, 1.0))))
    roll = float(np.degrees(np.arctan2(rot[1, 0], rot[0, 0])))
    return yaw, nose_pitch(lm68, yaw), roll


# Generic head, in units of the outer-eye-corner distance: the nose tip lies 0.38 below the
# eye line and 0.30 in front of it. Tilting by p moves it to 0.38 cos p + 0.30 sin p below.
_NOSE_DROP, _NOSE_DEPTH = 170.0 / 450.0, 135.0 / 450.0


def nose_pitch(lm68: np.ndarray, yaw: float = 0.0) -> float:
    """Pitch in degrees from the nose tip's drop below the eye line (see the module notes)."""
    lm = np.asarray(lm68, dtype=np.float64)
    eye_width = _dist(lm[36], lm[45]) / max(math.cos(math.radians(min(abs(yaw), 70.0))), 0.3)
    if eye_width <= 0:
        return 0.0
    drop = (lm[30, 1] - lm[36:48, 1].mean()) / eye_width
    radius = math.hypot(_NOSE_DROP, _NOSE_DEPTH)
    phase = math.atan2(_NOSE_DEPTH, _NOSE_DROP)
    return float(math.degrees(phase - math.acos(float(np.clip(drop / radius, -1.0, 1.0)))))


def roll_from_affine(affine: np.ndarray) -> float:
    """The photo's in-plane face rotation undone by a photo->aligned similarity, in degrees."""
    m = np.asarray(affine, dtype=np.float64)
    return float(-np.degrees(np.arctan2(m[1, 0], m[0, 0])))


def _dist(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.hypot(*(np.asarray(a) - np.asarray(b))))


def expression_cues(lm68: np.ndarray) -> tuple[float, float]:
    """(eye openness, mouth openness) as aspect ratios of the 68-point eye and lip contours."""
    lm = np.asarray(lm68, dtype=np.float64)

    def ear(e: np.ndarray) -> float:
        width = _dist(e[0], e[3])
        return (_dist(e[1], e[5]) + _dist(e[2], e[4])) / (2.0 * width) if width > 0 else 0.0

    eye = (ear(lm[36:42]) + ear(lm[42:48])) / 2.0
    inner = lm[60:68]
    width = _dist(inner[0], inner[4])
    gap = (_dist(inner[1], inner[7]) + _dist(inner[2], inner[6]) + _dist(inner[3], inner[5])) / 3.0
    mouth = gap / width if width > 0 else 0.0
    return float(eye), float(mouth)
