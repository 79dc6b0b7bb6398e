"""refrestore's own small identity embedder (``models/faceid_small.pth``) behind IdentityModel."""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .crops import _normalise

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch


class OwnIdentity:
    """The faceid-small CNN on aligned crops (any size; it crops the face area itself)."""

    name = "faceid"
    # Queries are embedded as is and mirrored: this model saw degraded copies as positives in
    # training, so the restoration and zoom views that help dlib only cost time here.
    query_views = 2

    def __init__(self, path: Path | None = None, device: torch.device | None = None,
                 batch_size: int = 64) -> None:
        import torch

        from refrestore.net.embedder import SHIPPED_PATH, load_embedder

        self.path = Path(path) if path is not None else SHIPPED_PATH
        self.device = device if device is not None else torch.device("cpu")
        self._model = load_embedder(self.path, self.device)
        self.dim = int(self._model.config.dim)
        self.batch_size = batch_size
        # The weights' hash is the version: caches keyed on it go stale when the file changes.
        digest = hashlib.sha256(self.path.read_bytes()).hexdigest()[:12]
        self.version = f"faceid-small-{digest}"

    def embed(self, aligned: Sequence[np.ndarray]) -> np.ndarray:
        import torch

        if not len(aligned):
            return np.zeros((0, self.dim), dtype=np.float32)
        out = []
        with torch.no_grad():
            for start in range(0, len(aligned), self.batch_size):
                chunk = aligned[start:start + self.batch_size]
                for img in chunk:
                    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                        raise ValueError(f"expected an HxWx3 uint8 RGB image, got {img.shape} {img.dtype}")
                # Crops of one size batch together; mixed sizes go one by one.
                if len({img.shape for img in chunk}) == 1:
                    groups = [np.stack(chunk)]
                else:
                    groups = [img[None] for img in chunk]
                for g in groups:
                    x = torch.from_numpy(np.ascontiguousarray(g)).permute(0, 3, 1, 2).float().div_(255.0)
                    out.append(self._model(x.to(self.device)).float().cpu().numpy())
        return _normalise(np.concatenate(out, axis=0))
