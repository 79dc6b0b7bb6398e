"""Image quality metrics on RGB 0-255 images: PSNR and SSIM."""
from __future__ import annotations

import cv2
import numpy as np


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB over all RGB channels, on the 0-255 scale."""
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {a.shape} vs {b.shape}")
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    if mse == 0:
        return float("inf")
    return 10.0 * np.log10(255.0**2 / mse)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5), averaged over RGB channels."""
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {a.shape} vs {b.shape}")
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    x = a.astype(np.float64)
    y = b.astype(np.float64)
    if x.ndim == 2:
        x, y = x[:, :, None], y[:, :, None]
    vals = []
    for c in range(x.shape[2]):
        xc, yc = x[:, :, c], y[:, :, c]
        mx = cv2.GaussianBlur(xc, (11, 11), 1.5)
        my = cv2.GaussianBlur(yc, (11, 11), 1.5)
        sxx = cv2.GaussianBlur(xc * xc, (11, 11), 1.5) - mx * mx
        syy = cv2.GaussianBlur(yc * yc, (11, 11), 1.5) - my * my
        sxy = cv2.GaussianBlur(xc * yc, (11, 11), 1.5) - mx * my
        m = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
        vals.append(float(m[5:-5, 5:-5].mean()))
    return float(np.mean(vals))
