"""Training losses for RefNet."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from .arch import RefNetOutput


@dataclass(frozen=True)
class LossWeights:
    pixel: float = 1.0  # L1 on the 512 output
    core: float = 0.5  # L1 on the restored core image
    grad: float = 0.5  # L1 on image gradients (keeps edges sharp)
    recon: float = 0.25  # mask-guided cycle consistency (reconstruct the references)
    vq: float = 0.1
    identity: float = 0.1  # hard-example identity loss, only with an embedder


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


def total_loss(
    o: RefNetOutput,
    gt: torch.Tensor,
    refs: torch.Tensor | None,
    weights: LossWeights = LossWeights(),
    embed: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    core_size = o.core.shape[-1]
    gt_core = F.interpolate(gt, size=(core_size, core_size), mode="area")
    parts: dict[str, torch.Tensor] = {
        "pix": weights.pixel * F.l1_loss(o.out, gt),
        "core": weights.core * F.l1_loss(o.core, gt_core),
        "grad": weights.grad * _grad_l1(o.out, gt),
    }
    if "recon" in o.aux and refs is not None:
        parts["rec"] = weights.recon * recon_loss(o.aux["recon"], refs, o.aux["mask"])
    vq = o.aux.get("vq_commit")
    if vq is not None:
        parts["vq"] = weights.vq * (0.25 * vq + o.aux.get("vq_loss", torch.zeros_like(vq)))
    if embed is not None and weights.identity > 0:
        parts["id"] = weights.identity * hard_example_identity_loss(embed, o.out, gt, refs)
    total = torch.stack(list(parts.values())).sum()
    return total, {k: float(v.detach()) for k, v in parts.items()}
