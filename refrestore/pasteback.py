"""Putting restored faces back into the whole photo, only as much as each face needs.

Each face is warped back with the inverse of its alignment and blended through a soft,
feathered face-shaped mask, touching only the pixels around that face, so a 50-megapixel
photo is never copied to float.

Two rules keep a good face from getting worse. In the crop (``temper``), the restored
face's low frequencies replace the original's by the amount the face needs, and each part
of the face keeps whichever fine detail is richer, the original's or the restorer's, with
the original's discounted where it is noise or JPEG blocks. In the photo (``paste_faces``),
the photo's own detail finer than the 512 crop (a face larger than 512 pixels) is added back
by the same discount: the restorer never saw it, so it has nothing better to put there.

And the face must sit in its photo: it keeps the original's colour (``keep_colour``), and
where the photo around it is grainier than the restored face (film grain, noise, a halftone
print), grain of the missing level is added (``matching_grain``), so no seam shows where a
smooth face meets grainy hair and clothes.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .align import FFHQ_SIZE, invert_affine


@dataclass(frozen=True)
class PasteJob:
    restored: np.ndarray  # aligned crop, RGB uint8 (S x S)
    original: np.ndarray  # the aligned input crop it replaces, for colour matching
    affine: np.ndarray  # 2x3: photo (before upscale) -> aligned crop
    mask: np.ndarray | None = None  # optional S x S float32 0..1 (face parsing), else the default
    detail: float = 0.0  # 0..1: how much of the photo's own detail finer than the crop to keep
    amount: float = 1.0  # 0..1: how much of the restoration the face got (its grain moves by as much)


def detail_sigma(native_px: float, size: int = FFHQ_SIZE) -> float:
    """Blur that separates "fine detail" from structure in the crop: 2 pixels at the
    photo's own resolution (the crop of a small face is an upscale), never under 4 pixels
    of a 512 crop: refnet-small works on a 128 grid (4 crop pixels a cell), so anything finer
    is not structure it restores but detail, where a sharp face keeps its own."""
    return float(max(4.0 * size / FFHQ_SIZE, 2.0 * size / max(native_px, 1.0)))


def temper(original: np.ndarray, restored: np.ndarray, amount: float, keep_detail: float, sigma: float,
           detail_amount: float | None = None, sharpen: float = 0.0) -> np.ndarray:
    """The restored crop, applied only as much as needed (all arrays S x S x 3 uint8).

    Low frequencies (below ``sigma``: the face's structure, where identity lives) move from
    the original toward the restored face by ``amount``. For the fine detail, each
    neighbourhood takes the richer of the original's (weighted by ``keep_detail``: 0 when it
    is noise or blocks) and the restorer's (weighted by ``detail_amount``, default
    ``amount``), by local energy, so a sharp face is never smoothed and a blurred one gets
    the restorer's detail. ``sharpen`` (0..1) raises the original's kept detail by that share
    (a soft but clean face: an unsharp mask of its finest band).
    """
    amount = float(np.clip(amount, 0.0, 1.0))
    sharpen = float(np.clip(sharpen, 0.0, 1.0))
    detail_amount = amount if detail_amount is None else float(np.clip(detail_amount, 0.0, 1.0))
    keep_detail = float(np.clip(keep_detail, 0.0, 1.0))
    if amount >= 1.0 and detail_amount >= 1.0 and keep_detail <= 0.0:
        return restored
    if amount <= 0.0 and detail_amount <= 0.0 and sharpen <= 0.0:
        return original  # nothing of the restorer's: the face as it was (--strength 0)
    a = original.astype(np.float32)
    r = restored.astype(np.float32)
    low_a = cv2.GaussianBlur(a, (0, 0), sigma)
    low_r = cv2.GaussianBlur(r, (0, 0), sigma)
    hi_a = (a - low_a) * keep_detail * (1.0 + sharpen)
    hi_r = (r - low_r) * detail_amount
    # Local detail energy over a few detail widths, on luminance-like sums of the channels.
    ea = cv2.GaussianBlur((hi_a ** 2).sum(axis=2), (0, 0), 2.0 * sigma)
    er = cv2.GaussianBlur((hi_r ** 2).sum(axis=2), (0, 0), 2.0 * sigma)
    # A steep soft switch (fourth power of the energies): mixing two uncorrelated details
    # half and half would lose half of both, so each place takes one of them.
    ea, er = ea ** 4, er ** 4
    w = (er / (ea + er + 1e-12))[..., None]
    out = low_a + amount * (low_r - low_a) + w * hi_r + (1.0 - w) * hi_a
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def face_mask(size: int = FFHQ_SIZE) -> np.ndarray:
    """A feathered ellipse over forehead, cheeks and chin on the FFHQ template, 0..1 float32."""
    s = size / FFHQ_SIZE
    mask = np.zeros((size, size), dtype=np.float32)
    cv2.ellipse(mask, (int(256 * s), int(276 * s)), (int(168 * s), int(212 * s)), 0, 0, 360, 1.0, -1)
    # Feather inwards: erode, then blur, so the mask reaches 0 before the ellipse edge.
    k = max(3, int(40 * s) | 1)
    mask = cv2.erode(mask, np.ones((k, k), np.uint8))
    return cv2.GaussianBlur(mask, (0, 0), 16.0 * s)


def keep_colour(restored: np.ndarray, original: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """The restored face with the original's colour (all S x S x 3 uint8 RGB).

    Its lightness takes the original's mean in the mask (restorers drift in brightness); its
    colour (Lab a, b) takes the original's coarse colour, blurred by ``sigma`` (the halftone
    dots and chroma noise go, the pink cheeks and warm skin stay), plus the restorer's own
    finer colour (lips, eyes). A mean shift of the colour alone turned a halftone child's
    pink cheeks grey: the restorer's colour was right on average, wrong where it matters.
    """
    weight = mask > 0.5
    if weight.sum() < 16:
        return restored
    lab_r = cv2.cvtColor(restored, cv2.COLOR_RGB2LAB).astype(np.float32)
    lab_o = cv2.cvtColor(original, cv2.COLOR_RGB2LAB).astype(np.float32)
    lab_r[..., 0] += lab_o[..., 0][weight].mean() - lab_r[..., 0][weight].mean()
    chroma_o = cv2.GaussianBlur(lab_o[..., 1:], (0, 0), sigma)
    chroma_r = cv2.GaussianBlur(lab_r[..., 1:], (0, 0), sigma)
    lab_r[..., 1:] = chroma_o + (lab_r[..., 1:] - chroma_r)
    return cv2.cvtColor(np.clip(np.rint(lab_r), 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def grain_level(grey: np.ndarray, where: np.ndarray, already_fine: bool = False) -> float:
    """The photo's grain where ``where`` is true: the spread of what a 1-pixel blur removes,
    robustly (median absolute deviation), so that edges (hair, a collar) do not count as grain.
    ``already_fine``: ``grey`` is that fine band already."""
    if where.sum() < 64:
        return 0.0
    fine = grey if already_fine else grey - cv2.GaussianBlur(grey, (0, 0), 1.0)
    values = fine[where]
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


# The share of the surroundings' grain a restored face gets (0.75 left the halftone child of
# gfpgan_Blake_Lively.jpg visibly smoother than the print around her).
GRAIN_MATCH = 1.0


def grain_like(fine: np.ndarray, where: np.ndarray, seed: int = 0) -> np.ndarray:
    """Grain with the isotropic spectrum of the photo's own, at spread 1 as :func:`grain_level`
    measures it.

    ``fine`` is the photo's fine band (what a 1-pixel blur removes), grain where ``where`` is
    true. Its power spectrum, averaged over directions, shapes white noise: film grain, noise or
    a print's dots at their own size, but not the photo's noise in place (putting it back where
    it was would undo the denoising) and not its scan lines (a direction's peak is spread over
    every direction). Edges are clipped first so they do not count as grain."""
    h, w = fine.shape
    spread = grain_level(fine, where, already_fine=True)
    if spread <= 1e-6:
        return np.zeros((h, w), np.float32)
    power = np.abs(np.fft.fft2(np.clip(fine, -3.0 * spread, 3.0 * spread))) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij")
    radius = np.sqrt(fx * fx + fy * fy)
    bins = np.minimum((radius / radius.max() * 64).astype(int), 63)
    profile = np.bincount(bins.ravel(), power.ravel(), 64) / np.maximum(np.bincount(bins.ravel(), None, 64), 1)
    noise = np.random.default_rng(seed).standard_normal((h, w))
    out = np.real(np.fft.ifft2(np.fft.fft2(noise) * np.sqrt(profile[bins]))).astype(np.float32)
    return out / max(grain_level(out, np.ones((h, w), bool)), 1e-6)


def matching_grain(roi: np.ndarray, face: np.ndarray, alpha: np.ndarray, amount: float = 1.0) -> np.ndarray | None:
    """Grain to add to ``face`` (the restored face in the photo's ``roi``, float32 RGB) so that
    it is as grainy as the photo around it (:data:`GRAIN_MATCH`): the ring outside the
    face's mask is measured, the face is measured, and grain of the photo's own kind
    (:func:`grain_like`) is added at the difference. None when the face is already grainy
    enough. A restored face is smooth; pasted into a grainy, noisy or halftone print it looks
    airbrushed and its seam shows. ``amount`` (how much of the restoration the face got) moves
    the grain from the photo's own, where it was, to grain of its kind: a face given half of its
    restoration (``--strength 0.5``) keeps half of its own grain pattern, so it changes half as
    much."""
    # Luminance only: the photo's colour noise stays out.
    grey_roi = roi.mean(axis=2)
    fine = grey_roi - cv2.GaussianBlur(grey_roi, (0, 0), 1.0)
    # The grain of the skin the face replaces, or of the ring around it where that is less:
    # hair and fabric in the ring are texture, not grain, and would make the face look dirty.
    inner = alpha[..., 0] > 0.9
    ring = alpha[..., 0] < 0.02
    around = min(grain_level(fine, inner, already_fine=True) or np.inf, grain_level(fine, ring, already_fine=True) or np.inf)
    around = 0.0 if not np.isfinite(around) else GRAIN_MATCH * around
    inside = grain_level(face.mean(axis=2), inner)
    missing = float(np.sqrt(max(0.0, around * around - inside * inside)))
    if missing < 0.5:  # under half a grey level: nothing a viewer could see
        return None
    a = float(np.clip(amount, 0.0, 1.0))
    own = fine / max(grain_level(fine, inner | ring, already_fine=True), 1e-6)
    # two unrelated fields of spread 1: their mix is rescaled to spread 1
    mixed = (a * grain_like(fine, inner | ring) + (1.0 - a) * own) / max(float(np.hypot(a, 1.0 - a)), 1e-6)
    return (mixed * missing)[..., None]


def upscale_photo(photo: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return photo.copy()
    h, w = photo.shape[:2]
    return cv2.resize(photo, (w * factor, h * factor), interpolation=cv2.INTER_CUBIC)


def paste_faces(photo: np.ndarray, jobs: list[PasteJob], upscale: int = 1, grayscale: bool = False) -> np.ndarray:
    """The photo (upscaled by ``upscale``) with every restored face blended in."""
    out = upscale_photo(photo, upscale)
    h, w = out.shape[:2]
    for job in jobs:
        size = job.restored.shape[0]
        mask = job.mask if job.mask is not None else face_mask(size)
        # crop pixels per photo pixel: the colour is blurred over 4 photo pixels (a halftone's
        # dots, chroma noise), never less than 8 crop pixels
        per_px = 1.0 / max(float(np.sqrt(abs(np.linalg.det(invert_affine(job.affine)[:, :2])))), 1e-6)
        face = keep_colour(job.restored, job.original, mask, max(8.0 * size / FFHQ_SIZE, 4.0 * per_px))
        original = job.original
        if grayscale:
            grey = cv2.cvtColor(face, cv2.COLOR_RGB2GRAY)
            face = cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)
        # aligned -> upscaled photo
        to_photo = invert_affine(job.affine)
        to_photo[:, :] *= upscale
        corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], dtype=np.float64) @ to_photo.T
        x0 = int(max(0, np.floor(corners[:, 0].min()) - 2))
        y0 = int(max(0, np.floor(corners[:, 1].min()) - 2))
        x1 = int(min(w, np.ceil(corners[:, 0].max()) + 2))
        y1 = int(min(h, np.ceil(corners[:, 1].max()) + 2))
        if x1 <= x0 or y1 <= y0:
            continue
        local = to_photo.copy()
        local[:, 2] -= (x0, y0)
        roi_size = (x1 - x0, y1 - y0)
        # A face pasted into a small photo shrinks: area-average the crop first (warpAffine
        # has no area filter) so the warp only does the last factor of two and does not alias.
        scale_back = float(np.sqrt(abs(np.linalg.det(local[:, :2]))))
        if scale_back < 0.5:
            small = max(8, int(round(size * scale_back * 2.0)))
            face = cv2.resize(face, (small, small), interpolation=cv2.INTER_AREA)
            mask = cv2.resize(mask, (small, small), interpolation=cv2.INTER_AREA)
            original = cv2.resize(original, (small, small), interpolation=cv2.INTER_AREA)
            local = local.copy()
            local[:, :2] *= size / float(small)
        warped = cv2.warpAffine(face, local, roi_size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        alpha = cv2.warpAffine(mask, local, roi_size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        alpha = np.clip(alpha, 0.0, 1.0)[..., None]
        roi = out[y0:y1, x0:x1].astype(np.float32)
        face_back = warped.astype(np.float32)
        if job.detail > 0.0:
            # The photo minus its own crop warped back: the detail finer than the crop (plus
            # the warp's rounding), which the restorer never saw.
            round_trip = cv2.warpAffine(original, local, roi_size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            finer = roi - round_trip.astype(np.float32)
            if grayscale:
                finer = np.repeat(finer.mean(axis=2, keepdims=True), 3, axis=2)
            face_back += job.detail * finer
        # Grain for a face the crop enlarged (most old photos): a face larger than the crop has
        # the photo's own finer detail added back above, by the discount the pipeline chose.
        grain = matching_grain(roi, face_back, alpha, job.amount) if scale_back <= upscale else None
        if grain is not None:
            face_back += grain
        blended = roi + (face_back - roi) * alpha
        out[y0:y1, x0:x1] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
    return out
