"""Synthetic degradations of face photos, shared by training, evaluation and tests.

One pipeline, applied in a fixed order: Gaussian blur -> area downscale -> Gaussian noise ->
JPEG round trip -> bicubic upscale back to ``out_size`` (or the input size). Optional
old-photo effects (greyscale, fading, scratches) come last. Every random draw comes from a
``numpy.random.Generator`` seeded by the caller, so the same seed gives the same image.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numpy as np


@dataclass(frozen=True)
class DegradeParams:
    """One degradation. ``scale`` is the downscale factor (4.0 means 512 -> 128)."""

    blur_sigma: float
    scale: float
    noise_sigma: float  # on the 0..255 scale
    jpeg_quality: int  # 1..100; 100 or more skips JPEG
    out_size: int | None = 512  # None: back to the input size
    grey: bool = False
    fade: float = 0.0  # 0..1: blend toward a washed-out sepia-ish grey
    scratches: int = 0  # number of thin bright/dark strokes

    def __post_init__(self) -> None:
        if self.blur_sigma < 0 or self.noise_sigma < 0:
            raise ValueError("blur_sigma and noise_sigma must be >= 0")
        if self.scale < 1:
            raise ValueError("scale must be >= 1 (a downscale factor)")
        if not 1 <= self.jpeg_quality:
            raise ValueError("jpeg_quality must be >= 1")
        if not 0.0 <= self.fade <= 1.0:
            raise ValueError("fade must be in [0, 1]")
        if self.scratches < 0:
            raise ValueError("scratches must be >= 0")
        if self.out_size is not None and self.out_size < 1:
            raise ValueError("out_size must be positive or None")


PRESETS: dict[str, DegradeParams] = {
    "moderate": DegradeParams(blur_sigma=2.0, scale=4.0, noise_sigma=5.0, jpeg_quality=70),
    "severe": DegradeParams(blur_sigma=4.0, scale=8.0, noise_sigma=15.0, jpeg_quality=40),
    "extreme": DegradeParams(blur_sigma=6.0, scale=16.0, noise_sigma=20.0, jpeg_quality=30),
}


# Not an evaluation preset: the mild end of a training range (a scan that is only a little soft),
# so that the network also learns to keep detail a face still has.
MILD = DegradeParams(blur_sigma=1.0, scale=2.0, noise_sigma=2.0, jpeg_quality=85)


def preset(name: str) -> DegradeParams:
    """The named preset, or a ValueError listing the valid names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}") from None


def _check_image(img: np.ndarray) -> None:
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got {img.dtype} {img.shape}")


def _gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return img
    ksize = 2 * int(math.ceil(3 * sigma)) + 1
    return cv2.GaussianBlur(img, (ksize, ksize), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)


def _jpeg(img_rgb: np.ndarray, quality: int) -> np.ndarray:
    if quality >= 100:
        return img_rgb
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img_rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _scratches(img: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    out = img.copy()
    h, w = out.shape[:2]
    for _ in range(count):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        angle = rng.uniform(0, math.pi)
        length = rng.uniform(0.2, 0.8) * max(h, w)
        x1 = int(x0 + length * math.cos(angle))
        y1 = int(y0 + length * math.sin(angle))
        value = int(rng.choice([rng.integers(200, 256), rng.integers(0, 50)]))
        thickness = max(1, int(round(rng.uniform(0.5, 2.0) * max(h, w) / 512)))
        cv2.line(out, (x0, y0), (x1, y1), (value, value, value), thickness, lineType=cv2.LINE_AA)
    return out


def degrade(img_rgb_uint8: np.ndarray, params: DegradeParams, seed: int) -> np.ndarray:
    """Degrade an RGB uint8 image; deterministic for a given ``seed``."""
    _check_image(img_rgb_uint8)
    rng = np.random.default_rng(seed)
    h, w = img_rgb_uint8.shape[:2]
    x = _gaussian_blur(img_rgb_uint8, params.blur_sigma)
    lw, lh = max(1, int(round(w / params.scale))), max(1, int(round(h / params.scale)))
    if (lw, lh) != (w, h):
        x = cv2.resize(x, (lw, lh), interpolation=cv2.INTER_AREA)
    if params.noise_sigma > 0:
        noise = rng.normal(0.0, params.noise_sigma, size=x.shape)
        x = np.clip(x.astype(np.float64) + noise, 0, 255).round().astype(np.uint8)
    x = _jpeg(x, params.jpeg_quality)
    out_w, out_h = (w, h) if params.out_size is None else (params.out_size, params.out_size)
    if (x.shape[1], x.shape[0]) != (out_w, out_h):
        x = cv2.resize(x, (out_w, out_h), interpolation=cv2.INTER_CUBIC)
    if params.grey:
        g = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)
        x = np.repeat(g[:, :, None], 3, axis=2)
    if params.fade > 0:
        # Faded prints lose contrast and drift toward a warm grey.
        tint = np.array([200.0, 185.0, 160.0])
        x = np.clip(x.astype(np.float64) * (1 - params.fade) + tint * params.fade, 0, 255).round().astype(np.uint8)
    if params.scratches > 0:
        x = _scratches(x, params.scratches, rng)
    return np.ascontiguousarray(x)


def _lerp(a: float, b: float, t: float) -> float:
    return a + (b - a) * t


def random_params(
    rng: np.random.Generator,
    low: str | DegradeParams = "moderate",
    high: str | DegradeParams = "severe",
    old_photo_prob: float = 0.2,
    out_size: int | None = 512,
) -> DegradeParams:
    """Random training degradation between two presets, plus old-photo effects.

    Each component is drawn independently between ``low`` and ``high`` (with 15% slack
    on either side, scale interpolated in log space), so training sees the presets and
    everything around them. With probability ``old_photo_prob`` greyscale, fading and
    scratches are added.
    """
    lo = preset(low) if isinstance(low, str) else low
    hi = preset(high) if isinstance(high, str) else high

    def draw() -> float:
        return float(rng.uniform(-0.15, 1.15))

    blur = max(0.0, _lerp(lo.blur_sigma, hi.blur_sigma, draw()))
    scale = max(1.0, math.exp(_lerp(math.log(lo.scale), math.log(hi.scale), draw())))
    noise = max(0.0, _lerp(lo.noise_sigma, hi.noise_sigma, draw()))
    quality = int(round(min(95.0, max(10.0, _lerp(lo.jpeg_quality, hi.jpeg_quality, draw())))))
    grey, fade, scratches = False, 0.0, 0
    if rng.uniform() < old_photo_prob:
        grey = bool(rng.uniform() < 0.6)
        fade = float(rng.uniform(0.0, 0.35)) if rng.uniform() < 0.5 else 0.0
        scratches = int(rng.integers(1, 8)) if rng.uniform() < 0.5 else 0
    return DegradeParams(blur, scale, noise, quality, out_size=out_size, grey=grey, fade=fade, scratches=scratches)


def face_width_rule(face_width_px: float, target_width: float = 48.0) -> tuple[float, float]:
    """(downscale factor, blur sigma) used by :func:`degrade_to_face_width`.

    factor = face_width_px / target_width; sigma = 0.5 * factor when factor > 1, else 0.
    A Gaussian of sigma 0.5*factor (in source pixels) is roughly what a camera's optics and
    sensor integrate over one low-resolution pixel, so the result looks like a photo taken
    at that resolution rather than a sharp image decimated with aliasing.
    """
    if face_width_px <= 0 or target_width <= 0:
        raise ValueError("face_width_px and target_width must be positive")
    factor = float(face_width_px) / float(target_width)
    sigma = 0.5 * factor if factor > 1 else 0.0
    return max(1.0, factor), sigma


def degrade_to_face_width(
    img: np.ndarray,
    face_width_px: float,
    target_width: int = 48,
    noise_sigma: float = 10.0,
    jpeg_quality: int = 40,
    seed: int = 0,
) -> np.ndarray:
    """Make the face in ``img`` look as if it had been ``target_width`` pixels wide.

    The downscale factor is ``face_width_px / target_width`` and the blur sigma is
    ``0.5 * factor`` (see :func:`face_width_rule`); then noise and JPEG at the low
    resolution, and a bicubic upscale back to the input size.
    """
    factor, sigma = face_width_rule(face_width_px, target_width)
    params = DegradeParams(sigma, factor, noise_sigma, jpeg_quality, out_size=None)
    return degrade(img, params, seed)


def with_out_size(params: DegradeParams, out_size: int | None) -> DegradeParams:
    return replace(params, out_size=out_size)


def scaled_for(params: DegradeParams, size: int) -> DegradeParams:
    """The same degradation for a face crop of ``size`` instead of 512: blur and downscale
    factor scale with the crop, so the degraded face has as many pixels on the template as
    the preset gives a 512 crop (``severe`` leaves 64 pixels either way); output at ``size``."""
    if size == 512:
        return params if params.out_size in (None, 512) else replace(params, out_size=512)
    f = size / 512.0
    return replace(params, blur_sigma=params.blur_sigma * f, scale=max(1.0, params.scale * f), out_size=None)
