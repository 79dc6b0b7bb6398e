"""The damage users' photos have, for training: random chains of it, in random orders.

``degrade.py``'s presets are one fixed pipeline (blur, downscale, noise, JPEG, upscale) kept
for comparable evaluation. Real photos are messier: a face shared online was JPEG-compressed
at its small size (the 8x8 blocks an eighth of the face, chroma at half resolution), its noise
came before and after the compression, its blur was a shake or a missed focus as often as a
soft lens; an old print was screened (halftone), scanned with streaks, faded and colour-cast.
:func:`random_damage` draws such a chain and :func:`apply_damage` applies it. Tone changes
(fading, colour casts, greyscale, sepia) are applied to the ground truth as well: the network
learns to see through them, not to recolour a photo (the restored face must sit in its print).

Everything happens at the photo's own resolution of the face (``small`` pixels for the side of
the face template), where the photo's pixels, blocks and scan lines are, and the result is
enlarged back to the crop's size, as the pipeline's alignment enlarges a small face.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

# JPEG chroma subsampling names -> OpenCV's sampling-factor flags.
SAMPLING = {
    "420": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420,
    "422": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422,
    "444": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
}


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def jpeg(img: np.ndarray, quality: int, sampling: str = "420", offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """JPEG round trip of an RGB uint8 image with the given chroma subsampling. ``offset``
    (dy, dx in 0..7): the 8x8 blocks start at that row and column, as when a face sits
    anywhere in a photo (the image is padded in front while it is encoded)."""
    dy, dx = (-offset[0]) % 8, (-offset[1]) % 8
    src = cv2.copyMakeBorder(img, dy, 0, dx, 0, cv2.BORDER_REFLECT_101) if dy or dx else img
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(src, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, int(quality), cv2.IMWRITE_JPEG_SAMPLING_FACTOR, SAMPLING[sampling]])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    out = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(out[dy:, dx:])


def motion_kernel(length: float, angle_deg: float) -> np.ndarray:
    """A normalised line kernel (camera shake) ``length`` pixels long, one pixel thin (drawn 8x
    larger and area-reduced: an anti-aliased line at full size would blur across it too)."""
    r = max(1, int(math.ceil(length / 2)))
    scale = 8
    side = (2 * r + 1) * scale
    big = np.zeros((side, side), np.float32)
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    half, mid = length / 2.0 * scale, r * scale + scale / 2.0 - 0.5  # the centre pixel's centre
    p0 = (int(round(mid - c * half)), int(round(mid - s * half)))
    p1 = (int(round(mid + c * half)), int(round(mid + s * half)))
    cv2.line(big, p0, p1, 1.0, 1, lineType=cv2.LINE_8)
    k = cv2.resize(big, (2 * r + 1, 2 * r + 1), interpolation=cv2.INTER_AREA)
    return k / max(float(k.sum()), 1e-6)


def defocus_kernel(radius: float) -> np.ndarray:
    """A normalised anti-aliased disk (a missed focus)."""
    r = max(1, int(math.ceil(radius)))
    scale = 4  # drawn 4x larger and area-reduced: a smooth edge for fractional radii
    big = np.zeros(((2 * r + 1) * scale, (2 * r + 1) * scale), np.float32)
    cv2.circle(big, ((2 * r + 1) * scale // 2, (2 * r + 1) * scale // 2), int(round(radius * scale)), 1.0, -1)
    k = cv2.resize(big, (2 * r + 1, 2 * r + 1), interpolation=cv2.INTER_AREA)
    return k / max(float(k.sum()), 1e-6)


def blur(img: np.ndarray, kind: str, size: float, angle: float = 0.0) -> np.ndarray:
    """Gaussian (``size`` = sigma), motion (length) or defocus (radius) blur of an RGB image."""
    if size <= 0:
        return img
    if kind == "gauss":
        return cv2.GaussianBlur(img, (0, 0), size, borderType=cv2.BORDER_REFLECT)
    k = motion_kernel(size, angle) if kind == "motion" else defocus_kernel(size)
    return cv2.filter2D(img, -1, k, borderType=cv2.BORDER_REFLECT)


def add_noise(img: np.ndarray, rng: np.random.Generator, sigma: float, colour: float = 0.5,
              poisson: bool = False) -> np.ndarray:
    """Gaussian noise (``sigma`` on 0..255), partly shared by the channels (luma) and partly
    per channel (``colour``: 0 all luma, 1 all chroma); ``poisson`` scales it with brightness
    (shot noise, darker = quieter)."""
    if sigma <= 0:
        return img
    h, w = img.shape[:2]
    luma = rng.normal(0.0, 1.0, (h, w, 1))
    chroma = rng.normal(0.0, 1.0, (h, w, 3))
    n = math.sqrt(1 - colour) * luma + math.sqrt(colour) * chroma
    x = img.astype(np.float32)
    scale = np.sqrt(np.clip(x / 128.0, 0.05, 2.0)) if poisson else 1.0
    return _u8(x + sigma * n * scale)


def halftone(img: np.ndarray, period: float, angle_deg: float = 45.0, mix: float = 1.0) -> np.ndarray:
    """A printed screen: each channel thresholded against a rotated dot screen of ``period``
    pixels (a grey image gets round dots on one screen), blended with the image by ``mix``."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty_like(img, dtype=np.float32)
    x = img.astype(np.float32) / 255.0
    grey = bool(np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 1], img[..., 2]))
    for c in range(3):
        # Print screens of the three inks sit at different angles (rosette); one for grey.
        a = math.radians(angle_deg + (0 if grey else 30 * c))
        u = (xx * math.cos(a) + yy * math.sin(a)) * (2 * math.pi / period)
        v = (-xx * math.sin(a) + yy * math.cos(a)) * (2 * math.pi / period)
        screen = 0.5 + 0.25 * (np.cos(u) + np.cos(v))  # 0..1, dots centred on the maxima
        out[..., c] = (x[..., c] > screen).astype(np.float32)
    out = cv2.GaussianBlur(out, (0, 0), max(0.3, period / 6.0)) * 255.0  # ink spread and the scanner's optics
    return _u8(mix * out + (1 - mix) * img.astype(np.float32))


def scan_lines(img: np.ndarray, rng: np.random.Generator, amplitude: float, vertical: bool = True,
               period: float = 0.0) -> np.ndarray:
    """Streaks of a scanner or a worn print: every pixel column (or row) offset by its own
    random amount (``amplitude`` levels), plus a regular stripe of ``period`` pixels when set;
    the streaks come and go along their length."""
    h, w = img.shape[:2]
    n, length = (w, h) if vertical else (h, w)
    profile = rng.normal(0.0, 1.0, n)
    profile = profile * (rng.uniform(size=n) < rng.uniform(0.3, 1.0))  # some columns clean
    if period > 0:
        profile = 0.5 * profile + math.sqrt(2.0) * np.sin(2 * math.pi * np.arange(n) / period + rng.uniform(0, 6.3))
    along = cv2.GaussianBlur(rng.uniform(0.4, 1.0, (length, 1)).astype(np.float32), (0, 0), max(2.0, length / 8))[:, 0]
    field_ = along[:, None] * profile[None, :] if vertical else profile[:, None] * along[None, :]
    return _u8(img.astype(np.float32) + amplitude * field_[..., None])


def tone(img: np.ndarray, grey: bool = False, sepia: float = 0.0, fade: float = 0.0,
         cast: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Global tone of an old print: greyscale, a sepia tint, fading (contrast lost toward a
    light warm grey, blacks lifted) and a colour cast (per-channel gains)."""
    x = img.astype(np.float32)
    if grey or sepia > 0:
        g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)[..., None]
        x = np.repeat(g, 3, axis=2)
        if sepia > 0:
            x = x * (1 - sepia) + sepia * x * np.array([1.07, 0.93, 0.72], np.float32)
    if fade > 0:
        x = x * (1 - fade) + fade * np.array([205.0, 195.0, 175.0], np.float32)
    x = x * np.asarray(cast, np.float32)
    return _u8(x)


@dataclass(frozen=True)
class Damage:
    """One drawn chain. ``small`` is the side of the face template at the photo's resolution;
    ``steps`` are (name, parameters) applied in order on the small image."""

    small: int
    pre_blur: tuple[str, float, float]  # (kind, size in small-image pixels, angle), before the downscale
    steps: tuple[tuple[str, dict], ...]
    down: int  # cv2 interpolation of the downscale
    up: int  # cv2 interpolation of the enlargement back
    tone: dict = field(default_factory=dict)  # tone() arguments, applied to the truth too


_INTERP_DOWN = (cv2.INTER_AREA, cv2.INTER_AREA, cv2.INTER_LINEAR, cv2.INTER_CUBIC)
_INTERP_UP = (cv2.INTER_LINEAR, cv2.INTER_LINEAR, cv2.INTER_CUBIC)


def random_damage(rng: np.random.Generator, size: int, small_range: tuple[float, float] = (36.0, 320.0),
                  mild: bool = False) -> Damage:
    """Draw a damage chain for a face crop of ``size`` pixels. The face template's side at the
    photo's resolution is drawn log-uniformly in ``small_range`` (pixels; a 64 means a 32-pixel
    face) and capped at ``size``; ``mild`` draws a little-damaged face (a slightly
    soft, lightly compressed photo) that must keep its own detail."""
    lo, hi = small_range
    # In photo pixels whatever the crop's size (as ``degrade.scaled_for`` keeps the presets'
    # pixels on the template): a 256 crop only caps how large the photo's face can be.
    small = max(16, min(size, int(round(math.exp(rng.uniform(math.log(lo), math.log(hi)))))))
    kinds = ("gauss", "gauss", "motion", "defocus")
    if mild:
        small = max(16, min(size, int(round(size * rng.uniform(0.35, 1.0)))))
        pre = ("gauss", float(rng.uniform(0.0, 0.8)), 0.0)
        steps: list[tuple[str, dict]] = []
        if rng.uniform() < 0.7:
            steps.append(("noise", {"sigma": float(rng.uniform(0.0, 4.0)), "colour": float(rng.uniform(0, 1)),
                                    "poisson": bool(rng.uniform() < 0.5)}))
        if rng.uniform() < 0.7:
            steps.append(("jpeg", {"quality": int(rng.integers(70, 96)), "sampling": str(rng.choice(list(SAMPLING))),
                                   "offset": (int(rng.integers(8)), int(rng.integers(8)))}))
        return Damage(small, pre, tuple(steps), _INTERP_DOWN[int(rng.integers(len(_INTERP_DOWN)))],
                      _INTERP_UP[int(rng.integers(len(_INTERP_UP)))])
    kind = str(rng.choice(kinds))
    size_px = {"gauss": rng.uniform(0.3, 2.2), "motion": rng.uniform(1.5, 6.0), "defocus": rng.uniform(0.8, 3.0)}[kind]
    pre = (kind, float(size_px) if rng.uniform() < 0.8 else 0.0, float(rng.uniform(0, 180)))
    steps = []
    if rng.uniform() < 0.25:  # blur at the photo's own size as well (a soft scan of a soft print)
        k2 = str(rng.choice(kinds))
        steps.append(("blur", {"kind": k2, "size": float(rng.uniform(0.4, 1.5) if k2 != "motion" else rng.uniform(1.5, 4)),
                               "angle": float(rng.uniform(0, 180))}))
    if rng.uniform() < 0.75:
        steps.append(("noise", {"sigma": float(rng.uniform(2.0, 22.0)), "colour": float(rng.uniform(0, 1)),
                                "poisson": bool(rng.uniform() < 0.4)}))
    if small >= 96 and rng.uniform() < 0.15:
        # A printed screen is finer than the face's features: only on faces printed large enough.
        steps.append(("halftone", {"period": float(rng.uniform(2.2, 4.5)), "angle": float(rng.choice([15.0, 45.0, 75.0])),
                                   "mix": float(rng.uniform(0.3, 0.9))}))
    if rng.uniform() < 0.2:
        steps.append(("scan", {"amplitude": float(rng.uniform(2.0, 12.0)), "vertical": bool(rng.uniform() < 0.6),
                               "period": float(rng.choice([0.0, 0.0, rng.uniform(2.0, 6.0)]))}))
    # Mix the orders: everything but the compression in any order, the compression at a random place.
    order = list(rng.permutation(len(steps)))
    steps = [steps[i] for i in order]
    if rng.uniform() < 0.75:
        q = int(rng.integers(15, 61)) if rng.uniform() < 0.8 else int(rng.integers(60, 90))
        pos = int(rng.integers(0, len(steps) + 1))
        steps.insert(pos, ("jpeg", {"quality": q, "sampling": str(rng.choice(["420", "420", "422", "444"])),
                                    "offset": (int(rng.integers(8)), int(rng.integers(8)))}))
        if rng.uniform() < 0.15:  # shared again: a second compression
            steps.append(("jpeg", {"quality": int(rng.integers(30, 80)), "sampling": "420",
                                   "offset": (int(rng.integers(8)), int(rng.integers(8)))}))
    if rng.uniform() < 0.35:  # noise after the compression (a photo of a screen, a re-scan)
        steps.append(("noise", {"sigma": float(rng.uniform(1.0, 8.0)), "colour": float(rng.uniform(0, 1)),
                                "poisson": False}))
    t: dict = {}
    if rng.uniform() < 0.3:
        u = rng.uniform()
        t = {"grey": bool(u < 0.35), "sepia": float(rng.uniform(0.3, 1.0)) if 0.35 <= u < 0.55 else 0.0,
             "fade": float(rng.uniform(0.0, 0.4)) if rng.uniform() < 0.6 else 0.0,
             "cast": tuple(float(v) for v in rng.uniform(0.85, 1.12, 3)) if u >= 0.35 and rng.uniform() < 0.6 else (1.0, 1.0, 1.0)}
    return Damage(small, pre, tuple(steps), _INTERP_DOWN[int(rng.integers(len(_INTERP_DOWN)))],
                  _INTERP_UP[int(rng.integers(len(_INTERP_UP)))], t)


def apply_damage(img: np.ndarray, d: Damage, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(damaged, truth) for an RGB uint8 face crop: the truth is ``img`` with the chain's tone
    (fading, cast, greyscale) and nothing else; the damaged face has everything, at the crop's size."""
    rng = np.random.default_rng(seed)
    h, w = img.shape[:2]
    truth = tone(img, **d.tone) if d.tone else img
    factor = w / float(d.small)
    kind, size, angle = d.pre_blur
    x = blur(truth, kind, size * factor, angle)  # sizes are in small-image pixels
    if d.small != w:
        x = cv2.resize(x, (d.small, max(1, int(round(h / factor)))), interpolation=d.down)
    for name, p in d.steps:
        if name == "blur":
            x = blur(x, p["kind"], p["size"], p["angle"])
        elif name == "noise":
            x = add_noise(x, rng, p["sigma"], p["colour"], p["poisson"])
        elif name == "jpeg":
            x = jpeg(x, p["quality"], p["sampling"], p["offset"])
        elif name == "halftone":
            x = halftone(x, p["period"], p["angle"], p["mix"])
        elif name == "scan":
            x = scan_lines(x, rng, p["amplitude"], p["vertical"], p["period"])
        else:
            raise ValueError(f"unknown damage step {name!r}")
    if x.shape[:2] != (h, w):
        x = cv2.resize(x, (w, h), interpolation=d.up)
    return np.ascontiguousarray(x), np.ascontiguousarray(truth)
