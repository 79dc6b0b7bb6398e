"""Small and damaged query faces are embedded after a blind pass of the embedded restorer.

Why: a MobileFaceNet reads a blurred 32-48 px face better once the restorer has given it back
some structure (no references: nothing of the gallery can leak into it). On the held-out people
of ``shared/data/faces`` (never seen by the restorer, which was trained on refbench only), with
the damage of ``../shared/checks/refs-used`` at 48-32 px, another person's folder passed the
one-person rule 5.9% of the time where the degraded face itself gave 7.6%, both keeping 96% of
the own faces (README, "One-person folders"). Faces with more detail are embedded as they are:
the published network, which scores them, gains nothing from it.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

# Queries with less detail than this are restored first: the detail from which mobilefacenet-dual
# scores with the published network (RULES["mobilefacenet-dual"].switch), so the restored view
# is only ever read by the fine-tune.
RESTORE_BELOW = 0.64


@dataclass
class RestoredQueries:
    """How an identity model's queries are prepared: restored blind when their detail is below
    ``below``. The restorer is loaded on first use (a gallery-only run never needs it)."""

    load: Callable[[], Callable[[np.ndarray], np.ndarray]]
    below: float
    tag: str  # in cache keys of query embeddings
    _restore: Callable[[np.ndarray], np.ndarray] | None = field(default=None, repr=False)

    def prepare(self, aligned: np.ndarray, detail: float | None) -> np.ndarray:
        if detail is None or detail >= self.below:
            return aligned
        if self._restore is None:
            self._restore = self.load()
        return self._restore(aligned)


def embedded_restorer_queries(device: torch.device | None = None, below: float = RESTORE_BELOW) -> RestoredQueries:
    """Blind restoration with the embedded refnet-small weights (always present: they ship in the
    package): the restorer's own pass without references (``RefNetRestorer.restore`` with no
    references, fp32; a test checks they agree), built from ``net`` because the restorers
    package sits beside this one."""
    import hashlib

    from ..net.tensors import batch_to_tensor, resize_square, tensor_to_batch
    from ..net.weights import embedded_weights_path, load_weights

    path = embedded_weights_path()
    dev = device if device is not None else torch.device("cpu")

    def load() -> Callable[[np.ndarray], np.ndarray]:
        model = load_weights(path, dev)
        cfg = model.cfg

        @torch.no_grad()
        def restore(aligned: np.ndarray) -> np.ndarray:
            lq = batch_to_tensor([aligned], cfg.out_size if cfg.lq_detail else cfg.core, dev, torch.float32)
            out = tensor_to_batch(model(lq).out, cfg.out_size)[0]
            return resize_square(out, aligned.shape[0])

        return restore

    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return RestoredQueries(load, below, f"blind{below:g}-{digest}")


def prepare_query(identity: Any, aligned: np.ndarray, detail: float | None) -> np.ndarray:
    """The crop an identity model embeds for a query with this detail."""
    view = getattr(identity, "restored_queries", None)
    return aligned if view is None else view.prepare(aligned, detail)
