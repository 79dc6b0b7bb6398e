"""A restorer that needs no weights: edge-preserving denoise and a gentle unsharp mask.

It is the floor every learned restorer must beat, and what runs when nothing else can.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch

from ..faces import Reference
from .base import RestorerInfo, RestorerSpec

RESAMPLE_INFO = RestorerInfo(
    name="resample",
    input_size=512,
    license="MIT (no weights)",
    uses_references=False,
    description="Bilateral denoise and unsharp mask at 512 px; no network, no weights.",
)


class ResampleRestorer:
    info = RESAMPLE_INFO

    def __init__(self, device: torch.device | None = None) -> None:
        self.device = device or torch.device("cpu")

    def restore(
        self,
        faces: Sequence[np.ndarray],
        references: Sequence[Sequence[Reference]] | None = None,
        strength: float = 1.0,
    ) -> list[np.ndarray]:
        out = []
        for face in faces:
            smooth = cv2.bilateralFilter(face, d=9, sigmaColor=40, sigmaSpace=6)
            blur = cv2.GaussianBlur(smooth, (0, 0), 2.5)
            sharp = cv2.addWeighted(smooth, 1.8, blur, -0.8, 0)
            if strength < 1.0:
                sharp = cv2.addWeighted(sharp, strength, face, 1.0 - strength, 0)
            out.append(sharp)
        return out


def _factory(weights_dir: Path, device: torch.device, half: bool) -> ResampleRestorer:
    return ResampleRestorer(device)


RESAMPLE_SPEC = RestorerSpec(info=RESAMPLE_INFO, factory=_factory)
