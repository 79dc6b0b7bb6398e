"""Conversions between aligned uint8 face crops and model tensors."""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import torch


def resize_square(img: np.ndarray, size: int) -> np.ndarray:
    """A square crop at ``size``: area-averaged when shrinking, bicubic when growing, as is when equal."""
    if img.shape[0] == size and img.shape[1] == size:
        return img
    interp = cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_CUBIC
    return cv2.resize(img, (size, size), interpolation=interp)


def batch_to_tensor(faces: Sequence[np.ndarray], size: int, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """N RGB uint8 crops -> (N, 3, size, size) in [0, 1]."""
    arrs = [resize_square(face, size) for face in faces]
    x = torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).contiguous()
    return x.to(device=device, dtype=dtype).div_(255.0)


def tensor_to_batch(x: torch.Tensor, out_size: int) -> list[np.ndarray]:
    """(N, 3, H, W) in [0, 1] -> N RGB uint8 crops of out_size."""
    arr = (x.detach().float().clamp(0, 1).mul(255.0).round().byte().permute(0, 2, 3, 1).cpu().numpy())
    return [np.ascontiguousarray(resize_square(face, out_size)) for face in arr]
