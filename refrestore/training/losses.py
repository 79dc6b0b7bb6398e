"""Training losses for RefNet."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..net.arch import RefNetOutput


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms; terms marked (1-F) scale with 1 - fidelity, so at F = 1 the
    network is trained for fidelity alone (pixel terms) and at F = 0 for detail."""

    pixel: float = 1.0  # L1 on the output (at the ground truth's size)
    core: float = 0.5  # L1 on the restored core image
    grad: float = 0.5  # L1 on image gradients (keeps edges sharp)
    band: float = 1.0  # L1 on multi-scale high-pass bands (the right detail where it is predictable)
    texture: float = 2.0  # (1-F) local energy of the high-pass bands (as much detail as the truth)
    ref_detail: float = 1.0  # band L1 where a warped reference agrees with the truth
    adv: float = 0.03  # (1-F) hinge GAN loss from the patch discriminator
    recon: float = 0.25  # mask-guided cycle consistency (reconstruct the references)
    vq: float = 0.1
    identity: float = 0.1  # hard-example identity loss, only with an embedder
    feature: float = 0.1  # L1 on a face network's early feature maps (perceptual), only with one


# Bands: three octaves of detail, from the finest (pores, lashes) to features' edges.
BAND_LEVELS = 3


def at_size(x: torch.Tensor, size: int) -> torch.Tensor:
    return x if x.shape[-1] == size else F.interpolate(x, size=(size, size), mode="area")


def _gauss_kernel(sigma: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    r = max(1, int(round(3 * sigma)))
    x = torch.arange(-r, r + 1, device=device, dtype=dtype)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with reflected borders, per channel."""
    c = x.shape[1]
    k = _gauss_kernel(sigma, x.device, x.dtype)
    r = k.numel() // 2
    y = F.pad(x, (r, r, 0, 0), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = F.pad(y, (0, 0, r, r), mode="reflect")
    return F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def high_bands(x: torch.Tensor) -> list[torch.Tensor]:
    """Three octave bands of ``x``: at each of sizes S, S/2, S/4 the image minus its Gaussian
    blur of sigma S/512 (a Laplacian-pyramid-like split that costs one small blur per level)."""
    sig = x.shape[-1] / 512.0
    bands = []
    for level in range(BAND_LEVELS):
        xl = x if level == 0 else F.avg_pool2d(x, 2 ** level)
        bands.append(xl - gaussian_blur(xl, sig))
    return bands


def _per_sample(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).mean(1)


def band_l1(bo: list[torch.Tensor], bg: list[torch.Tensor], weight_map: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) L1 between the high-pass bands of output and truth (``high_bands`` of each),
    optionally weighted per pixel by a (B, 1, H, W) map."""
    total = bo[0].new_zeros(bo[0].shape[0])
    for o, g in zip(bo, bg):
        d = (o - g).abs()
        if weight_map is None:
            total = total + _per_sample(d)
            continue
        w = weight_map if weight_map.shape[-1] == d.shape[-1] else F.adaptive_avg_pool2d(weight_map, d.shape[-2:])
        total = total + (d * w).flatten(1).sum(1) / (w.flatten(1).sum(1) * d.shape[1]).clamp_min(1.0)
    return total


def _local_energy(band: torch.Tensor, win: int) -> torch.Tensor:
    return torch.sqrt(F.avg_pool2d(band.pow(2).mean(1, keepdim=True), win, stride=win // 2) + 1e-6)


def texture_energy_loss(bo: list[torch.Tensor], bg: list[torch.Tensor]) -> torch.Tensor:
    """(B,) L1 between local RMS energies of the bands (16-pixel windows at 512).

    Unlike L1 on the band itself, this does not reward a blur when the exact phase of the
    detail is unknowable: a blurred output has too little energy, whatever the phase."""
    win = max(4, int(round(16 * bo[0].shape[-1] / 512)))
    total = bo[0].new_zeros(bo[0].shape[0])
    for o, g in zip(bo, bg):
        w = max(2, win)
        total = total + _per_sample((_local_energy(o, w) - _local_energy(g, w)).abs())
    return total


def _box(t: torch.Tensor, w: int) -> torch.Tensor:
    """Separable box mean over w x w (same size, borders averaged over what is inside)."""
    h, ww = t.shape[-2:]
    t = F.avg_pool2d(t, (w, 1), stride=1, padding=(w // 2, 0), count_include_pad=False)[..., :h, :]
    return F.avg_pool2d(t, (1, w), stride=1, padding=(0, w // 2), count_include_pad=False)[..., :, :ww]


def reference_agreement(aligned: torch.Tensor, gt: torch.Tensor, win: int = 16) -> torch.Tensor:
    """(B, 1, H, W) in [0, 1]: where some warped reference's fine band correlates locally with
    the truth's (the places a reference can supply the right detail). Computed at 256 at most
    (the correlation is a smooth map) and resized to the truth's size."""
    b, k = aligned.shape[:2]
    size = min(256, gt.shape[-1])
    g = at_size(gt, size).mean(1, keepdim=True)
    a = at_size(aligned.flatten(0, 1), size).mean(1, keepdim=True)
    w = max(3, int(round(win * size / 1024)))  # the middle band lives at half size
    bg = high_bands(g)[1].repeat_interleave(k, dim=0)
    ba = high_bands(a)[1]
    bg = F.interpolate(bg, size=ba.shape[-2:], mode="nearest") if bg.shape[-1] != ba.shape[-1] else bg
    # Band variances are ~1e-4 (images in [0, 1]): the epsilon must be far below their product.
    corr = _box(ba * bg, w) / torch.sqrt(_box(ba * ba, w) * _box(bg * bg, w) + 1e-12)
    half = corr.shape[-1]
    m = corr.view(b, k, 1, half, half).amax(1).clamp(0, 1)
    return F.interpolate(m, size=gt.shape[-2:], mode="bilinear", align_corners=False)


def _grad_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    dxa, dxb = a[..., :, 1:] - a[..., :, :-1], b[..., :, 1:] - b[..., :, :-1]
    dya, dyb = a[..., 1:, :] - a[..., :-1, :], b[..., 1:, :] - b[..., :-1, :]
    return F.l1_loss(dxa, dxb) + F.l1_loss(dya, dyb)


def recon_loss(recon: torch.Tensor, refs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mask-guided cycle consistency: L1 between each reconstructed reference and the
    reference itself, counted only where the selection mask says the reference applies."""
    b, k, _, h, w = recon.shape
    target = F.interpolate(refs.flatten(0, 1), size=(h, w), mode="area").view(b, k, 3, h, w)
    m = F.interpolate(mask.flatten(0, 1), size=(h, w), mode="nearest").view(b, k, 1, h, w)
    # The mask is detached so the cycle term cannot be cheated by closing the mask.
    m = m.detach()
    return ((recon - target).abs() * m).sum() / (m.sum() * 3).clamp_min(1.0)


def hard_example_identity_loss(
    embed: Callable[[torch.Tensor], torch.Tensor],
    out: torch.Tensor,
    gt: torch.Tensor,
    refs: torch.Tensor | None,
    ref_weight: float = 0.5,
    temperature: float = 0.1,
) -> torch.Tensor:
    """Pull the output toward the identity of the ground truth and of the references,
    weighting the batch's hardest examples (largest distance) most."""
    e_out = F.normalize(embed(out), dim=1)
    with torch.no_grad():
        e_gt = F.normalize(embed(gt), dim=1)
    d = 1 - (e_out * e_gt).sum(1)
    if refs is not None and refs.shape[1] > 0:
        b, k = refs.shape[:2]
        with torch.no_grad():
            e_ref = F.normalize(embed(refs.flatten(0, 1)), dim=1).view(b, k, -1).mean(1)
            e_ref = F.normalize(e_ref, dim=1)
        d = d + ref_weight * (1 - (e_out * e_ref).sum(1))
    w = torch.softmax(d.detach() / temperature, dim=0) * d.shape[0]
    return (w * d).mean()


def feature_loss(features: Callable[[torch.Tensor], torch.Tensor], out: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """(B,) L1 between a frozen face network's early feature maps of the output and of the truth,
    each channel in units of the truth's spread over the batch: edges, eyes and mouth as a face
    network sees them, where pixel L1 is content with a blur."""
    fo = features(out)
    with torch.no_grad():
        fg = features(gt)
        scale = fg.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-3)
    return _per_sample((fo - fg).abs() / scale)


def total_loss(
    o: RefNetOutput,
    gt: torch.Tensor,
    refs: torch.Tensor | None,
    weights: LossWeights = LossWeights(),
    embed: Callable[[torch.Tensor], torch.Tensor] | None = None,
    fidelity: torch.Tensor | None = None,
    aligned: torch.Tensor | None = None,
    fake_logits: torch.Tensor | None = None,
    features: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """All generator terms. The output is compared at the ground truth's own size (a 256 face
    from ``faces`` is not upsampled to pretend it has 512 detail). ``fidelity`` (B,) scales the
    detail terms by 1 - F; ``fake_logits`` are the discriminator's logits on this output;
    ``features`` maps faces to a frozen network's early feature maps (the perceptual term)."""
    out = at_size(o.out, gt.shape[-1])
    core_size = o.core.shape[-1]
    gt_core = F.interpolate(gt, size=(core_size, core_size), mode="area")
    detail_w = (1 - fidelity) if fidelity is not None else out.new_ones(out.shape[0])
    parts: dict[str, torch.Tensor] = {
        "pix": weights.pixel * F.l1_loss(out, gt),
        "core": weights.core * F.l1_loss(o.core, gt_core),
        "grad": weights.grad * _grad_l1(out, gt),
    }
    bo = high_bands(out)
    with torch.no_grad():
        bg = high_bands(gt)
    parts["band"] = weights.band * band_l1(bo, bg).mean()
    if weights.texture > 0:
        parts["tex"] = weights.texture * (detail_w * texture_energy_loss(bo, bg)).mean()
    if aligned is not None and weights.ref_detail > 0:
        with torch.no_grad():
            agree = reference_agreement(aligned, gt)
        parts["refd"] = weights.ref_detail * band_l1(bo, bg, agree).mean()
    if fake_logits is not None and weights.adv > 0:
        from .discriminator import g_hinge_loss

        parts["adv"] = weights.adv * (detail_w * g_hinge_loss(fake_logits)).mean()
    if "recon" in o.aux and refs is not None:
        parts["rec"] = weights.recon * recon_loss(o.aux["recon"], refs, o.aux["mask"])
    vq = o.aux.get("vq_commit")
    if vq is not None:
        parts["vq"] = weights.vq * (0.25 * vq + o.aux.get("vq_loss", torch.zeros_like(vq)))
    if embed is not None and weights.identity > 0:
        parts["id"] = weights.identity * hard_example_identity_loss(embed, out, gt, refs)
    if features is not None and weights.feature > 0:
        parts["feat"] = weights.feature * feature_loss(features, out, gt).mean()
    total = torch.stack(list(parts.values())).sum()
    return total, {k: float(v.detach()) for k, v in parts.items()}
