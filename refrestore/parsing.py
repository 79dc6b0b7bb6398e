"""Face parsing masks for paste-back (ParseNet, when its weights are in the weights folder).

A parsing mask follows the face's real outline (hair, neck and clothes excluded), so the
restored face does not spill over a hand or a hat the way the default ellipse can.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

PARSENET_FILE = "parsing_parsenet.pth"
# CelebAMask-HQ labels kept as "face": skin, brows, eyes, glasses, ears, earrings, nose,
# mouth, lips (1-13) and 15; background 0, neck 14, neck-lace 16, cloth 17 (hair 17/18 vary
# by release) are left to the original photo, as GFPGAN's paste-back does.
FACE_LABELS = np.array([0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 0, 0, 0], dtype=np.float32)


class FaceParser:
    """ParseNet (facexlib's architecture) loaded tensors-only; facexlib's own loader downloads and unpickles."""

    name = "parsenet"

    def __init__(self, weights: Path, device: torch.device | None = None) -> None:
        from facexlib.parsing.parsenet import ParseNet

        from .weights import WeightsError, load_state_dict

        self.device = device or torch.device("cpu")
        model = ParseNet(in_size=512, out_size=512, parsing_ch=19)
        try:
            model.load_state_dict(load_state_dict(weights), strict=True)
        except RuntimeError as exc:
            raise WeightsError(f"{weights.name} is not a ParseNet model: run 'refrestore download-weights --force {weights.name}'") from exc
        self.model = model.eval().to(self.device)

    @torch.no_grad()
    def labels(self, faces: list[np.ndarray]) -> list[np.ndarray]:
        """(512, 512) int64 CelebAMask-HQ class maps of aligned crops (the detail stage's regions)."""
        x = torch.from_numpy(np.stack([cv2.resize(f, (512, 512)) for f in faces])).permute(0, 3, 1, 2).float()
        x = (x / 255.0 - 0.5) / 0.5
        logits = self.model(x.to(self.device))[0]
        return list(logits.argmax(1).cpu().numpy())

    def masks(self, faces: list[np.ndarray]) -> list[np.ndarray]:
        """Soft 0..1 float32 masks (512x512) of the face region of aligned crops."""
        out = []
        for lab in self.labels(faces):
            mask = FACE_LABELS[lab]
            # Feather: zero a thin border, then blur twice (soft edge without a halo).
            mask[:10, :] = mask[-10:, :] = 0
            mask[:, :10] = mask[:, -10:] = 0
            mask = cv2.GaussianBlur(mask, (101, 101), 11)
            mask = cv2.GaussianBlur(mask, (101, 101), 11)
            out.append(mask.astype(np.float32))
        return out


def init_parser(store: object, device: torch.device | None = None) -> FaceParser | None:
    """The parser when its weights are present and verified, else None (the ellipse mask is used)."""
    manifest = getattr(store, "manifest", None)
    if manifest is None or manifest.get(PARSENET_FILE) is None:
        return None
    path = store.find(PARSENET_FILE)  # type: ignore[attr-defined]
    return FaceParser(path, device) if path is not None else None
