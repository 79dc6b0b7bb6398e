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


def _detail_band(img: np.ndarray) -> np.ndarray:
    """The fine-detail band of an RGB face at evaluation size S: grey minus its Gaussian blur of
    sigma 2*S/512, over the central 3/4 (384x384 at 512)."""
    g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float64) if img.ndim == 3 else img.astype(np.float64)
    s = g.shape[0]
    band = g - cv2.GaussianBlur(g, (0, 0), sigmaX=2.0 * s / 512.0, borderType=cv2.BORDER_REFLECT)
    m = s // 8
    return band[m:s - m, m:s - m]


def hf_scores(out: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(hf_ratio, hf_corr) of an output against the ground truth, both RGB at the evaluation size.

    hf_ratio: std of the output's detail band / std of the truth's (1 = as much fine detail as the
    truth; a bicubic upscale of a severe degradation is about 0.15). hf_corr: Pearson correlation
    of the two bands (is it the right detail)."""
    if out.shape != truth.shape:
        raise ValueError(f"shape mismatch {out.shape} vs {truth.shape}")
    bo, bt = _detail_band(out), _detail_band(truth)
    so, st = float(bo.std()), float(bt.std())
    ratio = so / st if st > 0 else float("nan")
    corr = float(np.corrcoef(bo.ravel(), bt.ravel())[0, 1]) if so > 0 and st > 0 else 0.0
    return ratio, corr
