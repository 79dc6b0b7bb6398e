"""What every identity model takes: aligned 512x512 RGB uint8 crops on the FFHQ template
(resized when they are not 512), and what it returns: unit float32 rows."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

ALIGNED_SIZE = 512


def _check_aligned(img: np.ndarray) -> np.ndarray:
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got {img.shape} {img.dtype}")
    if img.shape[:2] != (ALIGNED_SIZE, ALIGNED_SIZE):
        import cv2

        img = cv2.resize(img, (ALIGNED_SIZE, ALIGNED_SIZE), interpolation=cv2.INTER_AREA
                         if img.shape[0] > ALIGNED_SIZE else cv2.INTER_CUBIC)
    return np.ascontiguousarray(img)


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def embed_in_batches(aligned: Sequence[np.ndarray], dim: int, batch_size: int,
                     prepare: Callable[[Sequence[np.ndarray]], np.ndarray], model: Any, device: Any) -> np.ndarray:
    """(N, dim) unit rows: ``prepare`` turns each batch of crops into the network's NCHW float
    input, ``model`` embeds it on ``device``."""
    import torch

    if not len(aligned):
        return np.zeros((0, dim), dtype=np.float32)
    chunks = []
    with torch.no_grad():
        for start in range(0, len(aligned), batch_size):
            # contiguous NCHW: a transposed view would make convs pick channels_last,
            # which facexlib's Flatten (a .view) cannot take
            x = torch.from_numpy(np.ascontiguousarray(prepare(aligned[start:start + batch_size]))).to(device)
            chunks.append(model(x).float().cpu().numpy())
    return _normalise(np.concatenate(chunks, axis=0))
