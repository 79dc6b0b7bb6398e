"""RefNet: a small reference-guided face restoration network.

The network works where the information is: the degraded 512 face is area-downsampled to
``core`` pixels (128 for the CPU configs), restored there with the help of K references at
the same scale, and a cheap pixel-shuffle head adds a 512 residual on top of a bicubic upscale
of the restored core image.

The ideas of three papers are separate modules, each switchable by a config flag so that they
can be ablated:

* RefSTAR: ``selection`` (region-prior selection masks refined by a learned predictor),
  cross-attention ``transfer`` with gated residual fusion, and ``recon`` (a branch that
  reconstructs each reference from the fused features, trained with a mask-guided
  cycle-consistency loss so the fusion cannot ignore the reference).
* Identity-preserving restoration: ``identity_context`` (a global identity vector from a small
  learned reference encoder, joined with the multi-level local reference features through FiLM)
  and training-free multi-reference inference (attention over the union of all references'
  tokens, biased by log selection scores, so K is free at test time).
* ENTED: ``texture`` (texture extraction at the 64 level, distributed by the 32-level
  correspondence), ``vq`` (a dictionary of high-quality features replacing corrupted
  low-quality ones) and ``refine`` (reference-guided latent refinement).
* ``aligned``: dense texture distribution at full resolution. Each reference, warped onto the
  degraded face by optical flow (``refrestore.net.warp``), is pixel-unshuffled to the core
  grid (all 512 detail kept as channels), encoded, scored per pixel, and the references are
  merged by a softmax over K (any K at test time) into the last decoder level, from which the
  512 head draws detail the degraded face does not have.

No pretrained face model is used inside the network: the dlib descriptor is the evaluation
metric and must stay independent of it.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

REGION_NAMES = ("eyes", "nose", "mouth", "outline")
# The fidelity a network conditioned on it runs at when none is given (see models/refnet-small.md).
DEFAULT_FIDELITY = 0.5


@dataclass(frozen=True)
class RefNetConfig:
    core: int = 128  # side the network works at; the output is always ``out_size``
    out_size: int = 512
    c1: int = 16  # channels at core
    c2: int = 48  # at core/2
    c3: int = 96  # at core/4 (the attention level)
    enc_blocks: int = 1  # residual blocks per level in the encoders (level 3 gets one more)
    attn_dim: int = 64
    id_dim: int = 128
    codebook_size: int = 256
    code_dim: int = 32
    # switches for ablation
    use_refs: bool = True
    selection: bool = True
    transfer: bool = True
    texture: bool = True
    recon: bool = True
    identity_context: bool = True
    vq: bool = True
    refine: bool = True
    # Dense transfer from flow-aligned full-resolution references (refrestore.net.warp);
    # off in the first exported weights, so their config still loads.
    aligned: bool = False
    aligned_dim: int = 32
    # The degraded face's own 512 detail, pixel-unshuffled into the last decoder level, so a
    # mildly degraded face keeps what it still has (the core alone is 128 pixels).
    lq_detail: bool = False
    # One network for every fidelity F in [0, 1] (0 = most detail, 1 = closest to the input):
    # F enters through FiLM on the two upper decoder levels and the detail head (zero-initialised,
    # so weights trained without it start where they were).
    fidelity: bool = False
    # A detail head that works at half the output size (out_size/2) from the last decoder level,
    # instead of a single linear pixel shuffle from the core grid: room to synthesise texture.
    hr_head: bool = False
    hr_dim: int = 16

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RefNetConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown RefNet config keys: {sorted(unknown)}")
        return cls(**d)


CONFIGS: dict[str, RefNetConfig] = {
    # CPU-sized; the embedded default.
    "tiny": RefNetConfig(c1=16, c2=32, c3=64),
    # A larger CPU/GPU config.
    "small": RefNetConfig(c1=16, c2=48, c3=96),
    # GPU, FFHQ-Ref / CelebRef-HQ scale.
    "full": RefNetConfig(core=256, c1=32, c2=96, c3=192, enc_blocks=3, attn_dim=96, id_dim=256,
                         codebook_size=1024, code_dim=64),
}


def get_config(name: str, **overrides: Any) -> RefNetConfig:
    try:
        cfg = CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown config {name!r}; expected one of {', '.join(CONFIGS)}") from None
    return replace(cfg, **overrides) if overrides else cfg


def _act() -> nn.Module:
    return nn.LeakyReLU(0.2, inplace=True)


class ResBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.act = _act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(x)))


class Encoder(nn.Module):
    """Three-level feature pyramid: core, core/2, core/4."""

    def __init__(self, cfg: RefNetConfig) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, cfg.c1, 3, padding=1), _act(), ResBlock(cfg.c1))
        self.down2 = nn.Sequential(nn.Conv2d(cfg.c1, cfg.c2, 3, stride=2, padding=1), _act(),
                                   *[ResBlock(cfg.c2) for _ in range(cfg.enc_blocks)])
        self.down3 = nn.Sequential(nn.Conv2d(cfg.c2, cfg.c3, 3, stride=2, padding=1), _act(),
                                   *[ResBlock(cfg.c3) for _ in range(cfg.enc_blocks + 1)])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f1 = self.stem(x)
        f2 = self.down2(f1)
        f3 = self.down3(f2)
        return f1, f2, f3


class IdentityHead(nn.Module):
    """Global identity vector of a reference, from its deepest features (learned, not dlib)."""

    def __init__(self, c3: int, id_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(2 * c3, id_dim), _act(), nn.Linear(id_dim, id_dim))

    def forward(self, f3: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([f3.mean(dim=(2, 3)), f3.amax(dim=(2, 3))], dim=1)
        return F.normalize(self.mlp(pooled), dim=1)


class FiLM(nn.Module):
    """Feature-wise modulation by the identity vector; starts as the identity map."""

    def __init__(self, id_dim: int, c: int) -> None:
        super().__init__()
        self.lin = nn.Linear(id_dim, 2 * c)
        nn.init.zeros_(self.lin.weight)
        nn.init.zeros_(self.lin.bias)

    def forward(self, x: torch.Tensor, ident: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.lin(ident).chunk(2, dim=1)
        return x * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]


class SelectionMask(nn.Module):
    """RefSTAR selection: which reference locations may guide the restoration.

    Starts from a region prior (from ``Reference.regions``) and refines it with a learned
    predictor that compares degraded and reference features at the same template position
    (faces are aligned, so position is a strong hint).
    """

    def __init__(self, c3: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(2 * c3 + 1, 32, 1), _act(), nn.Conv2d(32, 32, 3, padding=1), _act(),
                                 nn.Conv2d(32, 1, 1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.constant_(self.net[-1].bias, 2.0)  # start near "use everything the prior allows"

    def forward(self, lq3: torch.Tensor, ref3: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        # lq3 (B, C, h, w), ref3 (B*K, C, h, w), prior (B*K, 1, h, w) -> mask (B*K, 1, h, w) in (0, 1)
        k = ref3.shape[0] // lq3.shape[0]
        lq_rep = lq3.repeat_interleave(k, dim=0)
        logit = self.net(torch.cat([lq_rep, ref3, prior], dim=1))
        return torch.sigmoid(logit) * prior


class VQDictionary(nn.Module):
    """ENTED-style dictionary of high-quality features (nearest code, straight-through)."""

    def __init__(self, c3: int, size: int, dim: int) -> None:
        super().__init__()
        self.proj_in = nn.Conv2d(c3, dim, 1)
        self.proj_out = nn.Conv2d(dim, c3, 1)
        self.codebook = nn.Parameter(torch.randn(size, dim) * 0.1)
        self.merge = nn.Conv2d(2 * c3, c3, 1)
        nn.init.zeros_(self.merge.weight)
        nn.init.zeros_(self.merge.bias)

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        dist = (flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.codebook.t()
                + self.codebook.pow(2).sum(1)[None, :])
        idx = dist.argmin(dim=1)
        q = self.codebook[idx].view(b, h, w, d).permute(0, 3, 1, 2)
        return q, idx.view(b, h, w)

    def vq_loss(self, hq3: torch.Tensor) -> torch.Tensor:
        """Codebook + commitment loss on high-quality (reference) features."""
        z = self.proj_in(hq3)
        q, _ = self.quantize(z)
        return F.mse_loss(q, z.detach()) + 0.25 * F.mse_loss(z, q.detach())

    def forward(self, lq3: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.proj_in(lq3)
        q, _ = self.quantize(z)
        commit = F.mse_loss(z, q.detach())
        q_st = z + (q - z).detach()
        replaced = self.proj_out(q_st)
        return lq3 + self.merge(torch.cat([lq3, replaced], dim=1)), commit


def _pos_embedding(h: int, w: int, dim: int) -> torch.Tensor:
    """Fixed 2D sinusoidal position code (dim must be divisible by 4)."""
    d4 = dim // 4
    freq = torch.exp(torch.arange(d4, dtype=torch.float32) * (-math.log(100.0) / max(d4, 1)))
    ys = torch.arange(h, dtype=torch.float32)[:, None] * freq[None, :] * (32.0 / h)
    xs = torch.arange(w, dtype=torch.float32)[:, None] * freq[None, :] * (32.0 / w)
    pe_y = torch.cat([ys.sin(), ys.cos()], dim=1)  # (h, d/2)
    pe_x = torch.cat([xs.sin(), xs.cos()], dim=1)  # (w, d/2)
    pe = torch.cat([pe_y[:, None, :].expand(h, w, -1), pe_x[None, :, :].expand(h, w, -1)], dim=2)
    return pe.permute(2, 0, 1).contiguous()  # (dim, h, w)


@dataclass
class RefNetOutput:
    out: torch.Tensor  # (B, 3, out_size, out_size) in [0, 1] (not clamped during training)
    core: torch.Tensor  # (B, 3, core, core) restored core image
    aux: dict[str, torch.Tensor]


class RefNet(nn.Module):
    def __init__(self, cfg: RefNetConfig) -> None:
        super().__init__()
        if cfg.attn_dim % 4:
            raise ValueError("attn_dim must be divisible by 4")
        if cfg.out_size % cfg.core:
            raise ValueError("out_size must be a multiple of core")
        self.cfg = cfg
        c1, c2, c3 = cfg.c1, cfg.c2, cfg.c3
        self.lq_enc = Encoder(cfg)
        if cfg.use_refs:
            self.ref_enc = Encoder(cfg)
            if cfg.selection:
                self.select = SelectionMask(c3)
            if cfg.transfer:
                self.q = nn.Conv2d(c3, cfg.attn_dim, 1)
                self.k = nn.Conv2d(c3, cfg.attn_dim, 1)
                self.v = nn.Conv2d(c3, c3, 1)
                self.pos_q = nn.Conv2d(cfg.attn_dim, cfg.attn_dim, 1, bias=False)
                self.pos_k = nn.Conv2d(cfg.attn_dim, cfg.attn_dim, 1, bias=False)
                self.fuse_proj = nn.Conv2d(c3, c3, 3, padding=1)
                self.fuse_gate = nn.Sequential(nn.Conv2d(2 * c3 + 1, 64, 1), _act(), nn.Conv2d(64, c3, 3, padding=1))
                if cfg.texture:
                    self.tex_proj = nn.Conv2d(c2, c2, 3, padding=1)
                    self.tex_gate = nn.Sequential(nn.Conv2d(2 * c2 + 1, 32, 1), _act(),
                                                  nn.Conv2d(32, c2, 3, padding=1))
                if cfg.recon:
                    self.recon_dec = nn.Sequential(
                        nn.Conv2d(c3, c2 * 4, 3, padding=1), nn.PixelShuffle(2), _act(),
                        ResBlock(c2), nn.Conv2d(c2, 3, 3, padding=1))
                if cfg.refine:
                    self.refine_in = nn.Conv2d(2 * c3, c3, 1)
                    self.refine_blocks = nn.Sequential(ResBlock(c3), ResBlock(c3))
            if cfg.identity_context:
                self.id_head = IdentityHead(c3, cfg.id_dim)
                self.film3 = FiLM(cfg.id_dim, c3)
                self.film2 = FiLM(cfg.id_dim, c2)
                self.film1 = FiLM(cfg.id_dim, c1)
            if cfg.aligned:
                f = cfg.out_size // cfg.core
                ca = cfg.aligned_dim
                self.al_enc = nn.Sequential(nn.Conv2d(3 * f * f + 6, ca, 3, padding=1), _act(), ResBlock(ca))
                self.al_score = nn.Conv2d(ca, 1, 3, padding=1)
                self.al_fuse = nn.Sequential(nn.Conv2d(c1 + ca, ca, 3, padding=1), _act(),
                                             nn.Conv2d(ca, c1, 3, padding=1))
                nn.init.zeros_(self.al_fuse[-1].weight)
                nn.init.zeros_(self.al_fuse[-1].bias)
        if cfg.lq_detail:
            f = cfg.out_size // cfg.core
            self.lq_fuse = nn.Sequential(nn.Conv2d(3 * f * f + c1, 32, 3, padding=1), _act(),
                                         nn.Conv2d(32, c1, 3, padding=1))
            nn.init.zeros_(self.lq_fuse[-1].weight)
            nn.init.zeros_(self.lq_fuse[-1].bias)
        if cfg.vq:
            self.vq = VQDictionary(c3, cfg.codebook_size, cfg.code_dim)
        self.mid = ResBlock(c3)
        self.up2 = nn.Sequential(nn.Conv2d(c3, c2 * 4, 3, padding=1), nn.PixelShuffle(2), _act())
        self.dec2 = nn.Sequential(nn.Conv2d(2 * c2, c2, 3, padding=1), _act(), ResBlock(c2))
        self.up1 = nn.Sequential(nn.Conv2d(c2, c1 * 4, 3, padding=1), nn.PixelShuffle(2), _act())
        self.dec1 = nn.Sequential(nn.Conv2d(2 * c1, c1, 3, padding=1), _act(), ResBlock(c1))
        self.to_core = nn.Conv2d(c1, 3, 3, padding=1)
        factor = cfg.out_size // cfg.core
        self.head = nn.Sequential(nn.Conv2d(c1, 3 * factor * factor, 3, padding=1), nn.PixelShuffle(factor))
        for m in (self.to_core, self.head[0]):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)
        if cfg.fidelity:
            self.fid_mlp = nn.Sequential(nn.Linear(2, 32), _act(), nn.Linear(32, 32))
            self.fid_film2 = FiLM(32, c2)
            self.fid_film1 = FiLM(32, c1)
        if cfg.hr_head:
            if factor < 2 or factor % 2:
                raise ValueError("hr_head needs out_size/core to be an even factor")
            hd = cfg.hr_dim
            self.hr_up = nn.Sequential(nn.Conv2d(c1, hd * (factor // 2) ** 2, 3, padding=1),
                                       nn.PixelShuffle(factor // 2), _act())
            self.hr_blocks = nn.Sequential(ResBlock(hd), ResBlock(hd))
            self.hr_out = nn.Sequential(nn.Conv2d(hd, 3 * 4, 3, padding=1), nn.PixelShuffle(2))
            nn.init.zeros_(self.hr_out[0].weight)
            nn.init.zeros_(self.hr_out[0].bias)
            if cfg.fidelity:
                self.fid_film_hr = FiLM(32, hd)
        h3 = cfg.core // 4
        self.register_buffer("pos", _pos_embedding(h3, h3, cfg.attn_dim)[None], persistent=False)

    # -- helpers -------------------------------------------------------------------------
    def _down(self, x: torch.Tensor, size: int) -> torch.Tensor:
        if x.shape[-1] == size and x.shape[-2] == size:
            return x
        return F.interpolate(x, size=(size, size), mode="area")

    def forward(
        self,
        lq: torch.Tensor,
        refs: torch.Tensor | None = None,
        ref_scores: torch.Tensor | None = None,
        ref_valid: torch.Tensor | None = None,
        ref_prior: torch.Tensor | None = None,
        need_aux: bool = False,
        aligned: torch.Tensor | None = None,
        fidelity: torch.Tensor | float | None = None,
    ) -> RefNetOutput:
        """Restore ``lq``.

        lq: (B, 3, H, H) in [0, 1], any H (area-resized to ``core``; passing it already at
            ``core`` saves work unless the config has ``lq_detail``, which wants ``out_size``).
            The output is always ``out_size``.
        refs: (B, K, 3, Hr, Wr) in [0, 1], or None / K = 0 for no references.
        ref_scores: (B, K) selection scores (> 0), default 1.
        ref_valid: (B, K) bool, False for padding slots, default all True.
        ref_prior: (B, K, 1, core/4, core/4) region prior in [0, 1], default 1.
        aligned: (B, K, 3, out_size, out_size) the same references warped onto the degraded
            face (``refrestore.net.warp.align_reference``); used when the config has ``aligned``.
        fidelity: (B,) or a float in [0, 1] (0 = most detail, 1 = closest to the input), used when
            the config has ``fidelity``; default ``DEFAULT_FIDELITY``.
        """
        cfg = self.cfg
        b = lq.shape[0]
        if lq.shape[-1] >= cfg.core:
            lq_core = self._down(lq, cfg.core)
        else:
            lq_core = F.interpolate(lq, size=(cfg.core, cfg.core), mode="bicubic", align_corners=False)
        f1, f2, f3 = self.lq_enc(lq_core)
        aux: dict[str, torch.Tensor] = {}
        ident = None
        h3 = cfg.core // 4

        if cfg.vq:
            f3, commit = self.vq(f3)
            aux["vq_commit"] = commit

        use_refs = cfg.use_refs and refs is not None and refs.shape[1] > 0
        if use_refs:
            assert refs is not None
            k = refs.shape[1]
            if ref_scores is None:
                ref_scores = torch.ones(b, k, device=lq.device, dtype=lq.dtype)
            if ref_valid is None:
                ref_valid = torch.ones(b, k, device=lq.device, dtype=torch.bool)
            has_ref = ref_valid.any(dim=1).to(lq.dtype)  # (B,)
            r = self._down(refs.flatten(0, 1), cfg.core)
            r1, r2, r3 = self.ref_enc(r)
            if ref_prior is None:
                prior = torch.ones(b * k, 1, h3, h3, device=lq.device, dtype=lq.dtype)
            else:
                prior = ref_prior.flatten(0, 1).to(lq.dtype)
                if prior.shape[-1] != h3:
                    prior = F.interpolate(prior, size=(h3, h3), mode="bilinear", align_corners=False)
            mask = self.select(f3, r3, prior) if cfg.selection else prior
            valid_bk = ref_valid.flatten().to(lq.dtype)[:, None, None, None]
            mask = mask * valid_bk
            aux["mask"] = mask.view(b, k, 1, h3, h3)

            if cfg.vq and self.training:
                aux["vq_loss"] = self.vq.vq_loss(r3)

            if cfg.identity_context:
                ids = self.id_head(r3).view(b, k, -1)
                w = (ref_scores.clamp_min(1e-4) * ref_valid.to(lq.dtype))
                w = w / w.sum(dim=1, keepdim=True).clamp_min(1e-6)
                ident = F.normalize((ids * w[:, :, None]).sum(dim=1), dim=1) * has_ref[:, None]
                aux["ref_ids"] = ids

            if cfg.transfer:
                n = h3 * h3
                pos = self.pos
                q = (self.q(f3) + self.pos_q(pos)).flatten(2).transpose(1, 2)  # (B, n, d)
                kk = (self.k(r3) + self.pos_k(pos)).flatten(2)  # (B*K, d, n)
                kk = kk.view(b, k, -1, n).permute(0, 2, 1, 3).reshape(b, -1, k * n)  # (B, d, K*n)
                v = self.v(r3).flatten(2).view(b, k, cfg.c3, n).permute(0, 1, 3, 2).reshape(b, k * n, cfg.c3)
                logits = torch.bmm(q, kk) / math.sqrt(cfg.attn_dim)  # (B, n, K*n)
                # Multi-reference: one softmax over the union of all references' tokens, biased
                # by each token's selection mask and its reference's score.
                bias = torch.log(mask.view(b, k * n).clamp_min(1e-4)) + torch.log(
                    ref_scores.clamp_min(1e-4)).repeat_interleave(n, dim=1)
                bias = bias.masked_fill(~ref_valid.repeat_interleave(n, dim=1), -1e4)
                logits = logits + bias[:, None, :]
                attn = torch.softmax(logits, dim=2)
                t = torch.bmm(attn, v)  # (B, n, c3)
                t = t.transpose(1, 2).reshape(b, cfg.c3, h3, h3)
                conf = (attn * mask.view(b, 1, k * n)).sum(dim=2).view(b, 1, h3, h3) * has_ref[:, None, None, None]
                t = t * has_ref[:, None, None, None]
                aux["conf"] = conf
                # Gated residual fusion: the reference enters additively, so the output can
                # only ignore it by driving the gate to zero, which the reconstruction loss punishes.
                tp = self.fuse_proj(t)
                gate = torch.sigmoid(self.fuse_gate(torch.cat([f3, tp, conf], dim=1)))
                fused = f3 + gate * tp * conf
                aux["gate3"] = gate.mean()

                if cfg.texture:
                    # Texture extraction at core/2: 2x2 patches of reference features, distributed
                    # to each query by its best match (hard attention) weighted by confidence.
                    idx = attn.argmax(dim=2)  # (B, n) in [0, K*n)
                    c2 = cfg.c2
                    patches = F.unfold(r2, kernel_size=2, stride=2)  # (B*K, c2*4, n)
                    patches = patches.view(b, k, c2 * 4, n).permute(0, 2, 1, 3).reshape(b, c2 * 4, k * n)
                    gathered = patches.gather(2, idx[:, None, :].expand(-1, c2 * 4, -1))  # (B, c2*4, n)
                    tex = F.fold(gathered, output_size=(2 * h3, 2 * h3), kernel_size=2, stride=2)
                    tex_conf = F.interpolate(conf, scale_factor=2, mode="nearest")
                    texp = self.tex_proj(tex) * has_ref[:, None, None, None]
                    tgate = torch.sigmoid(self.tex_gate(torch.cat([f2, texp, tex_conf], dim=1)))
                    f2 = f2 + tgate * texp * tex_conf

                if cfg.refine:
                    # Reference-guided latent refinement.
                    refined = self.refine_blocks(self.refine_in(torch.cat([fused, tp], dim=1)))
                    # Faces whose reference slots are all padding take the no-reference path.
                    fused = fused + refined * has_ref[:, None, None, None]

                if cfg.recon and need_aux:
                    # Reconstruct each reference from the fused features through the transposed
                    # correspondence (RefSTAR's cycle): reference token j gathers the fused
                    # tokens that attended to it.
                    at = attn.transpose(1, 2)  # (B, K*n, n)
                    at = at / at.sum(dim=2, keepdim=True).clamp_min(1e-6)
                    back = torch.bmm(at, fused.flatten(2).transpose(1, 2))  # (B, K*n, c3)
                    back = back.view(b, k, n, cfg.c3).permute(0, 1, 3, 2).reshape(b * k, cfg.c3, h3, h3)
                    aux["recon"] = self.recon_dec(back).view(b, k, 3, 2 * h3, 2 * h3)
                f3 = fused

        f3 = self.mid(f3)
        if ident is None and cfg.use_refs and cfg.identity_context:
            ident = torch.zeros(b, cfg.id_dim, device=lq.device, dtype=lq.dtype)
        if ident is not None:
            f3 = self.film3(f3, ident)
        fid = None
        if cfg.fidelity:
            fv = torch.as_tensor(DEFAULT_FIDELITY if fidelity is None else fidelity, dtype=lq.dtype,
                                 device=lq.device).reshape(-1).expand(b)
            fid = self.fid_mlp(torch.stack([fv, fv * fv], dim=1))
        d2 = self.dec2(torch.cat([self.up2(f3), f2], dim=1))
        if ident is not None:
            d2 = self.film2(d2, ident)
        if fid is not None:
            d2 = self.fid_film2(d2, fid)
        d1 = self.dec1(torch.cat([self.up1(d2), f1], dim=1))
        if ident is not None:
            d1 = self.film1(d1, ident)
        if fid is not None:
            d1 = self.fid_film1(d1, fid)
        if use_refs and cfg.aligned and aligned is not None:
            d1 = d1 + self._aligned_transfer(d1, lq_core, aligned, ref_scores, ref_valid, aux)
        if cfg.lq_detail:
            f = cfg.out_size // cfg.core
            full = lq if lq.shape[-1] == cfg.out_size else F.interpolate(
                lq, size=(cfg.out_size, cfg.out_size), mode="bilinear", align_corners=False)
            up = F.interpolate(lq_core, size=(cfg.out_size, cfg.out_size), mode="bilinear", align_corners=False)
            d1 = d1 + self.lq_fuse(torch.cat([F.pixel_unshuffle(full - up, f), d1], dim=1))
        core = lq_core + self.to_core(d1)
        base = F.interpolate(core, size=(cfg.out_size, cfg.out_size), mode="bicubic", align_corners=False)
        out = base + self.head(d1)
        if cfg.hr_head:
            h = self.hr_up(d1)
            if fid is not None:
                h = self.fid_film_hr(h, fid)
            out = out + self.hr_out(self.hr_blocks(h))
        if not need_aux:
            aux = {}
        return RefNetOutput(out=out, core=core, aux=aux)


    def _aligned_transfer(self, d1: torch.Tensor, lq_core: torch.Tensor, aligned: torch.Tensor,
                          ref_scores: torch.Tensor | None, ref_valid: torch.Tensor | None,
                          aux: dict[str, torch.Tensor]) -> torch.Tensor:
        cfg = self.cfg
        b, k = aligned.shape[:2]
        f = cfg.out_size // cfg.core
        a = aligned.flatten(0, 1)
        if a.shape[-1] != cfg.out_size:
            a = F.interpolate(a, size=(cfg.out_size, cfg.out_size), mode="bilinear", align_corners=False)
        a_core = F.interpolate(a, size=(cfg.core, cfg.core), mode="area")
        # Detail as channels: the high band relative to the core image, so that the encoder
        # sees texture, not the reference's lighting.
        up = F.interpolate(a_core, size=(cfg.out_size, cfg.out_size), mode="bilinear", align_corners=False)
        x = torch.cat([F.pixel_unshuffle(a - up, f), a_core, lq_core.repeat_interleave(k, dim=0)], dim=1)
        g = self.al_enc(x)  # (B*K, ca, core, core)
        score = self.al_score(g).view(b, k, 1, cfg.core, cfg.core)
        if ref_scores is not None:
            score = score + torch.log(ref_scores.clamp_min(1e-4))[:, :, None, None, None]
        valid = ref_valid if ref_valid is not None else torch.ones(b, k, dtype=torch.bool, device=d1.device)
        score = score.masked_fill(~valid[:, :, None, None, None], -1e4)
        w = torch.softmax(score, dim=1)
        merged = (w * g.view(b, k, -1, cfg.core, cfg.core)).sum(dim=1)
        has_ref = valid.any(dim=1).to(d1.dtype)[:, None, None, None]
        aux["aligned_weight"] = w
        return self.al_fuse(torch.cat([d1, merged], dim=1)) * has_ref


def region_prior(regions: dict[str, float] | None, size: int) -> torch.Tensor:
    """(1, size, size) prior map on the FFHQ template from per-region compatibilities.

    Missing regions count as fully compatible; the outline region is everything outside
    the eyes, nose and mouth boxes.
    """
    prior = torch.ones(1, size, size)
    if not regions:
        return prior
    s = size / 512.0
    boxes = {  # x1, y1, x2, y2 on the 512 FFHQ template (eyes with brows)
        "eyes": (140, 180, 372, 285),
        "nose": (205, 250, 305, 345),
        "mouth": (175, 340, 340, 420),
    }
    outline = float(regions.get("outline", 1.0))
    prior.fill_(max(0.0, min(1.0, outline)))
    for name, (x1, y1, x2, y2) in boxes.items():
        val = float(regions.get(name, 1.0))
        ya, yb = int(round(y1 * s)), max(int(round(y1 * s)) + 1, int(round(y2 * s)))
        xa, xb = int(round(x1 * s)), max(int(round(x1 * s)) + 1, int(round(x2 * s)))
        prior[:, ya:yb, xa:xb] = max(0.0, min(1.0, val))
    return prior.clamp(0.02, 1.0)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
