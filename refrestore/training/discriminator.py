"""A small patch discriminator trained from scratch (no pretrained network is available here).

It judges 256x256 faces (a 512 output is area-reduced first) on overlapping patches: four
stride-2 convolutions give a 16x16 map of real/fake logits, each seeing about 60 pixels, so it
rewards local texture (skin, lashes, hair) and cannot dictate the face's structure, which stays
with the pixel losses, the input and the references. It sees the image and its fine band,
amplified: the difference between real skin and a blur is a few grey levels, which a network
with unit Lipschitz bound (spectral normalisation) can hardly tell apart, so spectral
normalisation is used on the last layer only and the band is given explicitly.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm

DISC_SIZE = 256


class PatchDiscriminator(nn.Module):
    def __init__(self, ch: int = 32) -> None:
        super().__init__()
        chans = [6, ch, ch * 2, ch * 4, ch * 4]
        layers: list[nn.Module] = []
        for i in range(4):
            layers += [nn.Conv2d(chans[i], chans[i + 1], 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
        layers.append(spectral_norm(nn.Conv2d(chans[-1], 1, 3, padding=1)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, 1, 16, 16) logits (inputs resized to 256)."""
        if x.shape[-1] != DISC_SIZE:
            x = F.interpolate(x, size=(DISC_SIZE, DISC_SIZE), mode="area")
        band = x - F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), 3, stride=1)
        return self.net(torch.cat([x * 2 - 1, band * 10], dim=1))


def d_hinge_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()


def g_hinge_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Per-sample generator loss (B,), so each sample can carry its own fidelity weight."""
    return -fake_logits.flatten(1).mean(1)
