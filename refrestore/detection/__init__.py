"""Face detectors behind one interface, and ``init_detector`` to pick one.

``auto`` prefers RetinaFace (resnet50, then mobilenet0.25) when its weights are in the
weights folder, and falls back to dlib's HOG detector, which needs no download.
"""
from __future__ import annotations

import torch

from .base import Detector, DetectorError, downscale_for_detection
from .dlib_hog import DlibDetector
from .retinaface import RETINAFACE_FILES, RetinaFaceDetector

DETECTOR_NAMES = ("auto", "retinaface", "retinaface_resnet50", "retinaface_mobile0.25", "dlib")


def init_detector(
    name: str = "auto",
    store: object | None = None,
    device: torch.device | None = None,
    threshold: float | None = None,
) -> Detector:
    """Build a detector by name. ``store`` is a ``refrestore.weights.WeightStore``."""
    if name not in DETECTOR_NAMES:
        raise DetectorError(f"unknown detector {name!r}: expected one of {', '.join(DETECTOR_NAMES)}")
    if name == "dlib":
        return DlibDetector() if threshold is None else DlibDetector(threshold=threshold)
    if store is None:
        from ..weights import WeightStore

        store = WeightStore()
    networks = {
        "retinaface_resnet50": ["resnet50"],
        "retinaface_mobile0.25": ["mobile0.25"],
    }.get(name, ["resnet50", "mobile0.25"])
    for network in networks:
        file_name = RETINAFACE_FILES[network]
        if store.manifest.get(file_name) is None:  # type: ignore[attr-defined]  # a private manifest may omit it
            continue
        path = store.find(file_name)  # type: ignore[attr-defined]
        if path is not None:
            kwargs = {} if threshold is None else {"threshold": threshold}
            return RetinaFaceDetector(path, network=network, device=device, **kwargs)
    if name == "auto":
        return DlibDetector() if threshold is None else DlibDetector(threshold=threshold)
    wanted = " or ".join(RETINAFACE_FILES[n] for n in networks)
    raise DetectorError(f"--detector {name}: weights {wanted} not found; run 'refrestore download-weights {RETINAFACE_FILES[networks[-1]]}' or use --detector dlib")


__all__ = [
    "DETECTOR_NAMES",
    "Detector",
    "DetectorError",
    "DlibDetector",
    "RetinaFaceDetector",
    "downscale_for_detection",
    "init_detector",
]
