"""Fitting the fusion's gains (``fuse.ALPHA``/``fuse.BETA``) by least squares on training people.

For each training face the stage's terms (``fuse.terms``) are the columns and the truth's
luminance minus the restored face's is the target, over every third pixel of the central
3/4 of the crop (the part ``metrics.hf_scores`` scores). The normal equations are summed
over faces, so any number of them fits in a few megabytes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .correspond import grey_of
from .fuse import N_BANDS, terms
from .stage import DetailStage

STRIDE = 3


@dataclass
class GainFit:
    """Accumulated normal equations of the (B x 3) alpha and beta gains."""

    n_bands: int = N_BANDS
    n_regions: int = 3
    xtx: np.ndarray = field(init=False)
    xty: np.ndarray = field(init=False)
    count: int = 0

    def __post_init__(self) -> None:
        m = 2 * self.n_bands * self.n_regions
        self.xtx = np.zeros((m, m))
        self.xty = np.zeros(m)

    def add(self, stage: DetailStage, restored: np.ndarray, references: list[np.ndarray], truth: np.ndarray) -> None:
        p = stage.prepare(restored, references)
        add, take, _, _ = terms(p.face_bands, p.ref_bands, p.conf, p.regions, p.lacking, stage.options.weighted)
        size = restored.shape[0]
        m = size // 8
        sl = (slice(m, size - m, STRIDE), slice(m, size - m, STRIDE))
        cols = [add[b, r][sl].ravel() for b in range(self.n_bands) for r in range(self.n_regions)]
        cols += [-take[b, r][sl].ravel() for b in range(self.n_bands) for r in range(self.n_regions)]
        x = np.stack(cols, 1).astype(np.float64)
        y = (grey_of(truth) - grey_of(restored))[sl].ravel().astype(np.float64)
        self.xtx += x.T @ x
        self.xty += x.T @ y
        self.count += 1

    def solve(self, ridge: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
        """(alpha, beta), each (B, 3), none negative: the references' detail is added, never
        taken away, and the restorer's is taken away, never amplified (a signed fit uses the
        two against each other where they are correlated, which no fidelity can scale). A
        small ridge keeps unused columns (a region the faces never had) at 0."""
        m = self.xtx.shape[0]
        scale = max(float(np.trace(self.xtx)) / m, 1e-12)
        a = self.xtx + ridge * scale * np.eye(m)
        free = np.ones(m, bool)
        coef = np.zeros(m)
        for _ in range(m):  # active set: fix the negative ones at 0, solve for the rest again
            coef[:] = 0.0
            coef[free] = np.linalg.solve(a[np.ix_(free, free)], self.xty[free])
            if (coef >= 0).all():
                break
            free &= coef > 0
        half = self.n_bands * self.n_regions
        return (coef[:half].reshape(self.n_bands, self.n_regions).astype(np.float32),
                coef[half:].reshape(self.n_bands, self.n_regions).astype(np.float32))
