"""dlib's descriptor and refrestore's own embedder as one identity model.

The two unit embeddings are concatenated with weights sqrt(w) and sqrt(1 - w), so the result
is a unit vector again and a dot product of two fused embeddings is exactly
``w * cos_dlib + (1 - w) * cos_own``: the gallery's one-matrix-product search stays as it is,
and the score stays explainable (``split_scores`` gives the two parts back).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .dlib_resnet import DlibIdentity
from .own import OwnIdentity

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

# Weight of dlib's cosine. dlib's cosines spread over a few hundredths, faceid's over tenths, so
# useful mixes sit close to 1. 0.98 is from the grid of benchmarks/eval_identity.py (section 2);
# the training people cannot choose it (faceid-small has memorised them and would take all the
# weight), so this was picked on the held-out comparison and `fused` is not the default.
DLIB_WEIGHT = 0.98


class FusedIdentity:
    name = "fused"
    # Queries are embedded as is and mirrored: this model saw degraded copies as positives in
    # training, so the restoration and zoom views that help dlib only cost time here.
    query_views = 2

    def __init__(self, dlib_weight: float = DLIB_WEIGHT, device: torch.device | None = None,
                 dlib: DlibIdentity | None = None, own: OwnIdentity | None = None) -> None:
        if not 0.0 <= dlib_weight <= 1.0:
            raise ValueError("dlib_weight must be in [0, 1]")
        self.dlib = dlib if dlib is not None else DlibIdentity()
        self.own = own if own is not None else OwnIdentity(device=device)
        self.dlib_weight = float(dlib_weight)
        self.dim = self.dlib.dim + self.own.dim
        self.version = f"{self.dlib.version}+{self.own.version}-w{self.dlib_weight:g}"

    def combine(self, dlib_emb: np.ndarray, own_emb: np.ndarray) -> np.ndarray:
        """Fused unit rows from the two models' unit rows."""
        a, b = math.sqrt(self.dlib_weight), math.sqrt(1.0 - self.dlib_weight)
        return np.concatenate([a * dlib_emb, b * own_emb], axis=1).astype(np.float32)

    def embed(self, aligned: Sequence[np.ndarray]) -> np.ndarray:
        return self.combine(self.dlib.embed(aligned), self.own.embed(aligned))

    def split_scores(self, query: np.ndarray, gallery: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(dlib cosine, own cosine) behind fused scores of unit ``query`` (dim,) vs (N, dim)."""
        d = self.dlib.dim
        a, b = math.sqrt(self.dlib_weight), math.sqrt(1.0 - self.dlib_weight)
        dl = gallery[:, :d] @ query[:d] / max(a * a, 1e-12) if a > 0 else np.zeros(len(gallery))
        ow = gallery[:, d:] @ query[d:] / max(b * b, 1e-12) if b > 0 else np.zeros(len(gallery))
        return dl, ow
