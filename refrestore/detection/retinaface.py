"""RetinaFace (facexlib's architecture) with weights from the refrestore weights folder."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from ..faces import LANDMARKS_RETINAFACE, DetectedFace
from .base import DETECTION_VERSION, DetectorError, downscale_for_detection, drop_faces_in_heads, sort_largest_first

# facexlib's own init_detection_model() downloads from GitHub when the file is missing and
# unpickles it with a plain torch.load; we build the same architecture and load the weights
# ourselves, restricted to tensors.
RETINAFACE_FILES = {
    "resnet50": "detection_Resnet50_Final.pth",
    "mobile0.25": "detection_mobilenet0.25_Final.pth",
}


class RetinaFaceDetector:
    def __init__(
        self,
        weights: Path,
        network: str = "mobile0.25",
        device: torch.device | None = None,
        threshold: float = 0.9,
        max_side: int = 1600,
    ) -> None:
        from facexlib.detection.retinaface import RetinaFace

        from ..weights import WeightsError, load_state_dict

        self.device = device or torch.device("cpu")
        self.network = network
        self.name = "retinaface_resnet50" if network == "resnet50" else "retinaface_mobile0.25"
        self.version = DETECTION_VERSION
        self.threshold = threshold
        self.max_side = max_side
        model = RetinaFace(network_name=network, half=False, phase="test", device=self.device)
        state = load_state_dict(weights)
        state = {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise WeightsError(
                f"{weights.name} does not fit RetinaFace {network}: run 'refrestore download-weights --force {weights.name}'"
            ) from exc
        self.model = model.to(self.device).eval()
        if not isinstance(self.model, torch.nn.Module):  # pragma: no cover - defensive
            raise DetectorError("RetinaFace could not be built")

    def detect(self, image_rgb: np.ndarray, min_face: float = 0.0) -> list[DetectedFace]:
        small, back = downscale_for_detection(image_rgb, self.max_side)
        bgr = cv2.cvtColor(small, cv2.COLOR_RGB2BGR)
        # facexlib's detect_faces builds graphs unless gradients are off (a known trap).
        with torch.no_grad():
            dets = self.model.detect_faces(bgr, conf_threshold=self.threshold, nms_threshold=0.4, use_origin_size=True)
        faces: list[DetectedFace] = []
        h, w = image_rgb.shape[:2]
        for row in np.asarray(dets, dtype=np.float64):
            box = row[:4] * back
            box = (
                float(np.clip(box[0], 0, w)),
                float(np.clip(box[1], 0, h)),
                float(np.clip(box[2], 0, w)),
                float(np.clip(box[3], 0, h)),
            )
            if box[2] - box[0] < 2 or box[3] - box[1] < 2:
                continue
            lms = (row[5:15].reshape(5, 2) * back).astype(np.float32)
            faces.append(
                DetectedFace(box=box, landmarks=lms, score=float(row[4]), landmark_kind=LANDMARKS_RETINAFACE, detector=self.name)
            )
        return sort_largest_first(drop_faces_in_heads(faces))
