"""Conversions between aligned uint8 face crops and model tensors."""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import torch


def batch_to_tensor(faces: Sequence[np.ndarray], size: int, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """N RGB uint8 crops -> (N, 3, size, size) in [0, 1]."""
    arrs = []
    for face in faces:
        if face.shape[0] != size or face.shape[1] != size:
            interp = cv2.INTER_AREA if face.shape[0] > size else cv2.INTER_CUBIC
            face = cv2.resize(face, (size, size), interpolation=interp)
        arrs.append(face)
    x = torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).contiguous()
    return x.to(device=device, dtype=dtype).div_(255.0)


def tensor_to_batch(x: torch.Tensor, out_size: int) -> list[np.ndarray]:
    """(N, 3, H, W) in [0, 1] -> N RGB uint8 crops of out_size."""
    arr = (x.detach().float().clamp(0, 1).mul(255.0).round().byte().permute(0, 2, 3, 1).cpu().numpy())
    out = []
    for face in arr:
        if face.shape[0] != out_size:
            interp = cv2.INTER_AREA if face.shape[0] > out_size else cv2.INTER_CUBIC
            face = cv2.resize(face, (out_size, out_size), interpolation=interp)
        out.append(np.ascontiguousarray(face))
    return out
