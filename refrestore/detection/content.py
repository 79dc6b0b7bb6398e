"""Detection on the content of a mostly-paper scan.

Detectors work on a copy at most ~1600 px long, so a 620x391 print on a 2480x3508 A4 scan
would be searched at about a fifth of its size and its faces lost. Cropping to the content
first (``paper.content_box``) searches the print at its own resolution; faces are mapped
back to the page's pixels.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..faces import DetectedFace
from ..paper import content_box
from .base import Detector


def detect_faces(detector: Detector, rgb: np.ndarray) -> list[DetectedFace]:
    """``detector.detect(rgb)``, on the content's crop when the photo is a mostly-paper scan."""
    box = content_box(rgb)
    if box is None:
        return detector.detect(rgb)
    x0, y0, x1, y1 = box
    faces = detector.detect(np.ascontiguousarray(rgb[y0:y1, x0:x1]))
    shift = np.array([x0, y0], dtype=np.float32)
    return [dataclasses.replace(f, box=(f.box[0] + x0, f.box[1] + y0, f.box[2] + x0, f.box[3] + y0),
                                landmarks=(np.asarray(f.landmarks, dtype=np.float32) + shift).astype(np.float32))
            for f in faces]
