"""dlib's HOG face detector with its 5-point landmarks: works with no download at all."""
from __future__ import annotations

import numpy as np

from ..faces import LANDMARKS_DLIB5, DetectedFace
from .base import DETECTION_VERSION, downscale_for_detection, drop_faces_in_heads, sort_largest_first


# The width from which dlib's HOG window finds a face (it slides an 80x80 window).
HOG_MIN_FACE = 80.0


class DlibDetector:
    name = "dlib"
    version = DETECTION_VERSION

    def __init__(self, upsample: int = 1, threshold: float = -0.2, max_side: int = 1600) -> None:
        import dlib
        import face_recognition_models

        self._detector = dlib.get_frontal_face_detector()
        self._shape = dlib.shape_predictor(face_recognition_models.pose_predictor_five_point_model_location())
        self._rect = dlib.rectangle
        self.upsample = upsample
        self.threshold = threshold
        self.max_side = max_side

    def detect(self, image_rgb: np.ndarray, min_face: float = 0.0) -> list[DetectedFace]:
        small, back = downscale_for_detection(image_rgb, self.max_side)
        small = np.ascontiguousarray(small)
        # HOG misses faces under ~80 px; upsampling small photos more finds the small faces
        # of old group photos without slowing down large ones.
        upsample = self.upsample + (1 if max(small.shape[:2]) < 700 else 0)
        # Each upsampling quadruples the work: none beyond what the smallest wanted face needs.
        while upsample > 0 and min_face / back * 2 ** (upsample - 1) >= HOG_MIN_FACE:
            upsample -= 1
        rects, scores, _ = self._detector.run(small, upsample, self.threshold)
        faces: list[DetectedFace] = []
        h, w = image_rgb.shape[:2]
        # Landmarks from the full-resolution photo where it was downscaled: they decide the alignment.
        lm_image = np.ascontiguousarray(image_rgb) if back != 1.0 else small
        for rect, score in zip(rects, scores):
            x1, y1, x2, y2 = (rect.left() * back, rect.top() * back, rect.right() * back, rect.bottom() * back)
            full = self._rect(int(round(x1)), int(round(y1)), int(round(x2)), int(round(y2)))
            shape = self._shape(lm_image, full)
            lms = np.array([[shape.part(i).x, shape.part(i).y] for i in range(5)], dtype=np.float32)
            box = (float(max(0.0, x1)), float(max(0.0, y1)), float(min(w, x2)), float(min(h, y2)))
            # HOG scores are margins around 0..3; squash to 0..1 so reports compare across detectors.
            prob = float(1.0 / (1.0 + np.exp(-2.0 * float(score))))
            faces.append(DetectedFace(box=box, landmarks=lms, score=prob, landmark_kind=LANDMARKS_DLIB5, detector=self.name))
        return sort_largest_first(drop_faces_in_heads(faces))


