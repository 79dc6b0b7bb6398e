"""How damaged is a face? A small, explainable estimate from five measurements.

Every face is measured where its information is: at its native size in the photo (an
aligned 512 crop of a 90 px face is an upscale, and its blur says nothing about the
photo). The five measurements, each mapped to 0 (fine) .. 1 (badly damaged):

- ``sharpness``: how much fine gradient a light re-blur removes (Crete-Roffet's re-blur
  idea): a sharp face loses much of its gradient to a sigma-1 blur, a blurred one little;
- ``noise``: the noise sigma (0..255) of the photo's own pixels under the face, from the
  quieter half of a residual that cancels smooth shading (Immerkaer's mask), on float luma,
  at the photo's pixels and at twice their size (noise enlarged with its photo);
- ``blockiness``: JPEG 8x8 block edges, measured on the photo's own pixel grid;
- ``face_px``: the face's width in the output (photo pixels times the upscale): a sharp
  face that is small in the output still has little to show.

- ``pattern``: a regular pattern of fine lines or dots across the face (a scanner's streaks, a
  printed screen), from the rows' and columns' spectra on the photo's own pixels.

``severity`` combines the five scores as independent damages, 1 - prod(1 - score): one bad
property is enough to need restoration, and two moderate ones (a small face that is also
soft, as in most old group photos) add up. ``cause`` names the largest.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from .align import FFHQ_SIZE, affine_scale

# The face region of the FFHQ template (eyes, nose, mouth, cheeks), as fractions of the side.
FACE_BOX = (0.28, 0.32, 0.72, 0.80)  # x0, y0, x1, y1
# FFHQ template side over the face's width: the template is about twice the face.
TEMPLATE_PER_FACE = 2.0


@dataclass(frozen=True)
class Thresholds:
    """Where each measurement starts to count as damage (0) and where it is fully damaged (1)."""

    sharp_ok: float = 0.20  # re-blur loss of gradient at or above this: sharp (median clean photo 0.19)
    sharp_bad: float = 0.06  # about the moderate preset
    noise_ok: float = 4.0  # 0..255
    noise_bad: float = 12.0
    block_ok: float = 1.7  # block-edge / in-block gradient ratio; about JPEG quality 50
    block_bad: float = 2.3  # about JPEG quality 25
    size_ok: float = 160.0  # face width in output pixels
    size_bad: float = 40.0
    pattern_ok: float = 1.9  # spectral peak of a regular 2-6.5 px pattern (103 clean faces: at most 1.74)
    pattern_bad: float = 2.2  # codeformer_02's scan lines read 2.15-3.70, a halftone print 33
    tiny_ok: float = 80.0  # a face at least this wide (output pixels) has pixels enough to hold detail
    tiny_bad: float = 48.0  # below this, what looks like detail is mostly pixel noise and compression
    leave_below: float = 0.15  # a face whose severity is below this is left as it was
    full_above: float = 0.6  # severity from which the restoration is applied in full


@dataclass(frozen=True)
class Degradation:
    """The measurements of one face and what they add up to (all JSON-friendly floats)."""

    face_px: float  # face width in the output photo, pixels
    native_px: float  # side of the 512 template at the photo's own resolution
    sharpness: float  # fraction of gradient a sigma-1 re-blur removes (higher is sharper)
    noise: float  # noise sigma, 0..255
    blockiness: float  # JPEG block-edge ratio (1 = none)
    pattern: float  # strongest regular 2-6.5 px pattern over the spectrum around it (1 = none)
    scores: dict[str, float]  # each measurement as damage 0..1
    severity: float  # 1 - prod(1 - score)
    cause: str  # which measurement set the severity

    def report(self) -> dict:
        d = asdict(self)
        return {k: (round(v, 4) if isinstance(v, float) else ({kk: round(vv, 4) for kk, vv in v.items()} if isinstance(v, dict) else v)) for k, v in d.items()}


def _grey(rgb: np.ndarray) -> np.ndarray:
    if rgb.ndim == 2:
        return rgb.astype(np.float32)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)


def _central(img: np.ndarray, box: tuple[float, float, float, float] = FACE_BOX) -> np.ndarray:
    h, w = img.shape[:2]
    return img[int(box[1] * h): int(box[3] * h), int(box[0] * w): int(box[2] * w)]


def reblur_sharpness(grey: np.ndarray) -> float:
    """1 - (gradient after a sigma-1 blur) / (gradient before): 0 for a flat or blurred patch."""
    def grad(x: np.ndarray) -> float:
        gx = cv2.Sobel(x, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(x, cv2.CV_32F, 0, 1, ksize=3)
        return float(np.mean(np.abs(gx)) + np.mean(np.abs(gy)))

    g = grad(grey)
    if g < 1e-6:
        return 0.0
    return float(max(0.0, 1.0 - grad(cv2.GaussianBlur(grey, (0, 0), 1.0)) / g))


def pattern_peak(grey: np.ndarray, periods: tuple[float, float] = (2.0, 6.5)) -> float:
    """How strongly a regular pattern of fine lines or dots stands out: over the rows and over
    the columns, the mean power spectrum of the detail band, and its highest peak at a period of
    ``periods`` pixels over the running median of the spectrum around it (1 for no pattern).

    Scan lines and a printed screen repeat every few pixels across the whole face; faces do
    not (their features are single edges, not a rhythm), so the spectrum of a face is smooth
    there. Both are invisible to the noise estimate, whose mask cancels any line along a row
    or a column.
    """
    g = np.asarray(grey, dtype=np.float64)
    if min(g.shape) < 24:
        return 1.0
    band = g - cv2.GaussianBlur(g, (0, 0), 3.0)
    best = 1.0
    for x in (band, band.T):
        x = x * np.hanning(x.shape[1])[None, :]
        power = (np.abs(np.fft.rfft(x, axis=1)) ** 2).mean(axis=0)[2:]  # from two cycles per row
        if power.size < 9:
            continue
        padded = np.pad(power, 4, mode="edge")
        base = np.median(np.lib.stride_tricks.sliding_window_view(padded, 9), axis=1)
        ratio = power / np.maximum(base, 1e-12)
        period = x.shape[1] / (np.arange(power.size) + 2.0)
        inside = (period >= periods[0]) & (period <= periods[1])
        if inside.any():
            best = max(best, float(ratio[inside].max()))
    return best


_NOISE_MASK = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)
# For Gaussian noise of sigma s the mask's response is N(0, (6s)^2), and the mean of the
# smaller half of its absolute values is 0.32464 * 6s (half-normal below its median).
_LOWER_HALF_MEAN = 0.32464 * 6.0


def noise_sigma(grey: np.ndarray) -> float:
    """Noise sigma (0..255) of a grey float image: the mean of the quieter half of the
    absolute residual of a mask that cancels planes and ramps.

    Edges and texture raise the residual where they are, so they sit in the louder half;
    the quieter half is mostly noise. A mean rather than a median: on 8-bit data the
    residual is whole numbers, and its median moves in steps of 0.25 sigma (the old
    estimate read 0.247 for nearly every face).
    """
    g = np.asarray(grey, dtype=np.float32)
    if g.ndim != 2 or min(g.shape) < 8:
        return 0.0
    r = np.abs(cv2.filter2D(g, cv2.CV_32F, _NOISE_MASK)[1:-1, 1:-1]).ravel()
    half = r.size // 2
    return float(np.partition(r, half)[:half].mean() / _LOWER_HALF_MEAN)


def luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma as float32, not rounded (rounding would add its own 0.29 of noise)."""
    if rgb.ndim == 2:
        return rgb.astype(np.float32)
    f = rgb.astype(np.float32)
    return f[..., 0] * np.float32(0.299) + f[..., 1] * np.float32(0.587) + f[..., 2] * np.float32(0.114)


def noise_level(pixels: np.ndarray) -> float:
    """The noise of a photo region at its own pixels, or at twice their size where that is
    larger: noise that was enlarged with its photo (a small noisy print scanned large) is
    smooth at the pixel scale, and the mask cancels it there but not at half the size.

    Measured on 99 clean press photos (103 faces) with Gaussian noise added: clean faces
    read 1.4 (median, 90% under 2.7); noise of sigma 5 added at the photo's resolution reads
    3.6, sigma 10 reads 6.8; added to the photo at half size and enlarged 2x, clean 0.9,
    sigma 5 2.0, sigma 10 3.4 (``benchmarks/bench_noise.py``).
    """
    g = luma(pixels)
    level = noise_sigma(g)
    h, w = g.shape
    if min(h, w) >= 32:
        level = max(level, noise_sigma(cv2.resize(g, (w // 2, h // 2), interpolation=cv2.INTER_AREA)))
    return level


def blockiness(grey: np.ndarray) -> float:
    """Mean jump across 8-pixel block edges over the mean jump inside blocks (1: no blocks).

    ``grey`` must be on the photo's own pixel grid with its block origin at (0, 0).
    """
    h, w = grey.shape
    if h < 24 or w < 24:
        return 1.0
    dx = np.abs(np.diff(grey, axis=1))
    dy = np.abs(np.diff(grey, axis=0))
    cols = np.arange(dx.shape[1])
    rows = np.arange(dy.shape[0])
    edge = float(dx[:, cols % 8 == 7].mean() + dy[rows % 8 == 7, :].mean())
    inner = float(dx[:, cols % 8 != 7].mean() + dy[rows % 8 != 7, :].mean())
    return edge / max(inner, 1e-3)


def ramp(value: float, ok: float, bad: float) -> float:
    """0 at ``ok``, 1 at ``bad`` (either direction), linear between."""
    t = (value - ok) / (bad - ok)
    return float(min(1.0, max(0.0, t)))


def native_view(aligned: np.ndarray, affine: np.ndarray, upscale: int = 1) -> tuple[np.ndarray, float]:
    """The aligned crop at the output's resolution (the photo's own times ``upscale``, never
    above the crop's), and the photo's own resolution of the template."""
    native = FFHQ_SIZE / max(affine_scale(affine), 1e-6) * (aligned.shape[0] / FFHQ_SIZE)
    side = int(round(min(float(aligned.shape[0]), native * upscale)))
    side = max(side, 16)
    if side < aligned.shape[0]:
        return cv2.resize(aligned, (side, side), interpolation=cv2.INTER_AREA), native
    return aligned, native


def photo_window(photo: np.ndarray, affine: np.ndarray, size: int = FFHQ_SIZE) -> np.ndarray:
    """The photo's own pixels under the face region of the template, on the photo's 8x8 grid."""
    inv = cv2.invertAffineTransform(np.asarray(affine, dtype=np.float64))
    x0, y0, x1, y1 = (v * size for v in FACE_BOX)
    pts = np.array([[x0, y0, 1], [x1, y0, 1], [x0, y1, 1], [x1, y1, 1]], dtype=np.float64) @ inv.T
    h, w = photo.shape[:2]
    # Snap the window to the JPEG block grid so block edges fall at 7 mod 8.
    px0 = int(max(0, np.floor(pts[:, 0].min() / 8) * 8))
    py0 = int(max(0, np.floor(pts[:, 1].min() / 8) * 8))
    px1 = int(min(w, np.ceil(pts[:, 0].max())))
    py1 = int(min(h, np.ceil(pts[:, 1].max())))
    return photo[py0:py1, px0:px1]


def estimate(
    aligned: np.ndarray,
    affine: np.ndarray,
    photo: np.ndarray | None = None,
    upscale: int = 1,
    thresholds: Thresholds = Thresholds(),
) -> Degradation:
    """Measure one aligned face (``affine``: photo -> crop); ``photo`` adds the JPEG measure."""
    # Upscaled, a face shows its blur larger: measure it as the output will show it.
    view, native = native_view(aligned, affine, upscale)
    grey = _grey(_central(view))
    sharp = reblur_sharpness(grey)
    # Noise and blocks are measured on the photo's own pixels: the aligned crop is resampled,
    # which smooths noise away (a small face's crop is an enlargement) and moves the blocks.
    window = photo_window(photo, affine, aligned.shape[0]) if photo is not None else aligned
    noise = noise_level(window if min(window.shape[:2]) >= 8 else aligned)
    block = blockiness(_grey(window))
    pattern = pattern_peak(luma(window)) if min(window.shape[:2]) >= 24 else 1.0
    face_px = native / TEMPLATE_PER_FACE * upscale
    t = thresholds
    scores = {
        "sharpness": ramp(sharp, t.sharp_ok, t.sharp_bad),
        "noise": ramp(noise, t.noise_ok, t.noise_bad),
        "blockiness": ramp(block, t.block_ok, t.block_bad),
        "face_px": ramp(face_px, t.size_ok, t.size_bad),
        "pattern": ramp(pattern, t.pattern_ok, t.pattern_bad),
    }
    cause = max(scores, key=lambda k: scores[k])
    severity = 1.0 - float(np.prod([1.0 - v for v in scores.values()]))
    return Degradation(
        face_px=float(face_px), native_px=float(native), sharpness=sharp, noise=noise, blockiness=block, pattern=pattern,
        scores=scores, severity=severity, cause=cause,
    )
