"""Published blind face restorers (GFPGAN v1.4, RestoreFormer, CodeFormer), loaded by spandrel.

The weights are read by ``refrestore.weights.load_state_dict`` (tensors only) and handed to
spandrel's architecture registry, so spandrel's own file loader never unpickles anything.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..faces import Reference
from ..net.tensors import batch_to_tensor, tensor_to_batch
from .base import RestorerInfo, RestorerSpec

log = logging.getLogger(__name__)

GFPGAN_INFO = RestorerInfo(
    name="gfpgan-v1.4",
    input_size=512,
    license="Apache-2.0 (GFPGAN); StyleGAN2 parts under NVIDIA Source Code License",
    uses_references=False,
    description="GFPGAN v1.4 blind face restorer (TencentARC), as published on the GFPGAN releases page.",
    weight_files=("GFPGANv1.4.pth",),
)
RESTOREFORMER_INFO = RestorerInfo(
    name="restoreformer",
    input_size=512,
    license="Apache-2.0",
    uses_references=False,
    description="RestoreFormer blind face restorer, the file published on the GFPGAN v1.3.4 release.",
    weight_files=("RestoreFormer.pth",),
)
CODEFORMER_INFO = RestorerInfo(
    name="codeformer",
    input_size=512,
    license="S-Lab License 1.0 (non-commercial)",
    uses_references=False,
    description="CodeFormer blind face restorer; non-commercial licence, used only when named.",
    weight_files=("codeformer.pth",),
    commercial_use=False,
    on_request_only=True,
)


def _registry():  # type: ignore[no-untyped-def]
    from spandrel import MAIN_REGISTRY

    registry = MAIN_REGISTRY.copy()
    try:
        from spandrel_extra_arches import EXTRA_REGISTRY

        registry.add(*EXTRA_REGISTRY.architectures(), ignore_duplicates=True)
    except ImportError:  # CodeFormer's architecture lives in the extra package
        log.debug("spandrel_extra_arches not installed: CodeFormer unavailable")
    return registry


class SpandrelRestorer:
    """One published face restorer on one device."""

    def __init__(self, info: RestorerInfo, weights: Path, device: torch.device, half: bool = False, batch_size: int = 4) -> None:
        from spandrel import ModelLoader, UnsupportedModelError

        from ..weights import WeightsError, load_state_dict

        self.info = info
        self.device = device
        self.batch_size = batch_size
        state = load_state_dict(weights)
        try:
            descriptor = ModelLoader(device="cpu", registry=_registry()).load_from_state_dict(state)
        except (UnsupportedModelError, KeyError, RuntimeError) as exc:
            raise WeightsError(
                f"{weights.name} is not a {info.name} model: run 'refrestore download-weights --force {weights.name}'"
            ) from exc
        self.architecture = descriptor.architecture.id
        model = descriptor.model.eval()
        # fp16 only where the architecture is known to be stable in it and only on CUDA.
        self.dtype = torch.float16 if (half and device.type == "cuda" and descriptor.supports_half) else torch.float32
        self.model = model.to(device=device, dtype=self.dtype)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        # All three networks were trained on [-1, 1] and return (image, ...). spandrel 0.4's
        # descriptors do not normalise GFPGAN/CodeFormer input and drop RestoreFormer's
        # call function, so the model is called directly with the published convention.
        out = self.model(x * 2.0 - 1.0)
        if isinstance(out, (tuple, list)):
            out = out[0]
        return ((out + 1.0) / 2.0).clamp(0.0, 1.0)

    @torch.no_grad()
    def restore(
        self,
        faces: Sequence[np.ndarray],
        references: Sequence[Sequence[Reference]] | None = None,
        strength: float = 1.0,
    ) -> list[np.ndarray]:
        results: list[np.ndarray] = []
        for start in range(0, len(faces), self.batch_size):
            chunk = list(faces[start : start + self.batch_size])
            x = batch_to_tensor(chunk, self.info.input_size, self.device, self.dtype)
            y = self._forward(x)
            if strength < 1.0:
                y = strength * y + (1.0 - strength) * x
            results.extend(tensor_to_batch(y, chunk[0].shape[0]))
        return results


def _make_factory(info: RestorerInfo):  # type: ignore[no-untyped-def]
    def factory(weights_dir: Path, device: torch.device, half: bool) -> SpandrelRestorer:
        return SpandrelRestorer(info, weights_dir / info.weight_files[0], device, half)

    return factory


GFPGAN_SPEC = RestorerSpec(info=GFPGAN_INFO, factory=_make_factory(GFPGAN_INFO))
RESTOREFORMER_SPEC = RestorerSpec(info=RESTOREFORMER_INFO, factory=_make_factory(RESTOREFORMER_INFO))
CODEFORMER_SPEC = RestorerSpec(info=CODEFORMER_INFO, factory=_make_factory(CODEFORMER_INFO))
