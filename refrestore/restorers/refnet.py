"""The embedded reference-guided restorer (RefNet, trained here on CelebRef-HQ examples)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch

from ..faces import Reference
from ..net.arch import RefNet, region_prior
from ..net.tensors import batch_to_tensor, resize_square, tensor_to_batch
from ..net.warp import align_references
from ..net.weights import EMBEDDED_WEIGHTS_FILE, embedded_weights_path, load_weights  # noqa: F401 (embedded_weights_path: part of the module's names)
from .base import RestorerInfo, RestorerSpec

log = logging.getLogger(__name__)

WEIGHTS_FILE = EMBEDDED_WEIGHTS_FILE

REFNET_INFO = RestorerInfo(
    name="refnet-small",
    input_size=512,
    license="CC BY-NC-SA 4.0 (weights trained on CelebRef-HQ examples)",
    uses_references=True,
    description="Small reference-guided network (RefSTAR/ENTED ideas) shipped inside the package; CPU-fast.",
    weight_files=(),
    embedded=True,
    commercial_use=False,
    supports_fp16=True,
    supports_fidelity=True,
)


class RefNetRestorer:
    """Restores aligned 512 faces with K references each (K may differ per face, or be 0)."""

    info = REFNET_INFO

    def __init__(self, model: RefNet, device: torch.device, half: bool = False, batch_size: int = 4) -> None:
        self.device = device
        self.model = model.to(device).eval()
        self.half = bool(half and device.type == "cuda") and self._half_works()
        if self.half:
            self.model = self.model.half()
        self.batch_size = batch_size

    def _half_works(self) -> bool:
        """fp16 is used only if a forward pass in fp16 runs and stays finite on this GPU."""
        cfg = self.model.cfg
        try:
            probe = RefNet(cfg).to(self.device).eval()
            probe.load_state_dict(self.model.state_dict())
            probe = probe.half()
            x = torch.rand(1, 3, cfg.core, cfg.core, device=self.device, dtype=torch.float16)
            with torch.no_grad():
                out = probe(x, x[:, None]).out
            ok = bool(torch.isfinite(out).all())
        except RuntimeError as exc:
            log.info("fp16 RefNet unavailable on %s: %s", self.device, exc)
            ok = False
        return ok

    @classmethod
    def from_file(cls, path: Path, device: torch.device, half: bool = False) -> "RefNetRestorer":
        return cls(load_weights(path), device, half)

    def _prep_refs(self, face: np.ndarray, refs: Sequence[Reference],
                   kmax: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        cfg = self.model.cfg
        h3 = cfg.core // 4
        imgs = np.zeros((kmax, cfg.core, cfg.core, 3), np.uint8)
        warped = None
        if cfg.aligned:
            warped = np.zeros((kmax, cfg.out_size, cfg.out_size, 3), np.uint8)
            aligned = align_references(resize_square(face, cfg.out_size), [r.image for r in refs[:kmax]],
                                       cfg.out_size)
            for i, a in enumerate(aligned):
                warped[i] = a
        scores = np.ones(kmax, np.float32)
        valid = np.zeros(kmax, bool)
        prior = np.ones((kmax, 1, h3, h3), np.float32)
        for i, r in enumerate(refs[:kmax]):
            imgs[i] = resize_square(np.asarray(r.image), cfg.core)
            scores[i] = max(float(r.score), 1e-3)
            valid[i] = True
            prior[i] = region_prior(r.regions or None, h3).numpy()
        return imgs, scores, valid, prior, warped

    @torch.no_grad()
    def restore(
        self,
        faces: Sequence[np.ndarray],
        references: Sequence[Sequence[Reference]] | None = None,
        strength: float = 1.0,
        fidelity: float | None = None,
    ) -> list[np.ndarray]:
        """``fidelity`` (0 = most detail, 1 = closest to the input; None = the network's
        default, ``DEFAULT_FIDELITY``) is used by weights trained with the fidelity condition
        and ignored by older ones."""
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {strength}")
        if fidelity is not None and not 0.0 <= fidelity <= 1.0:
            raise ValueError(f"fidelity must be in [0, 1], got {fidelity}")
        if references is not None and len(references) != len(faces):
            raise ValueError("references must have one list per face")
        cfg = self.model.cfg
        dtype = torch.float16 if self.half else torch.float32
        outputs: list[np.ndarray] = []
        for start in range(0, len(faces), self.batch_size):
            chunk = [np.asarray(f) for f in faces[start:start + self.batch_size]]
            for f in chunk:
                if f.ndim != 3 or f.shape[2] != 3 or f.dtype != np.uint8:
                    raise ValueError(f"expected HxWx3 uint8 RGB faces, got {f.shape} {f.dtype}")
            refs_chunk = [list(references[start + i]) if references is not None else [] for i in range(len(chunk))]
            # With lq_detail the network reads the face's own 512 detail; otherwise the core suffices.
            lq_side = cfg.out_size if cfg.lq_detail else cfg.core
            lq = batch_to_tensor(chunk, lq_side, self.device, dtype)
            kmax = max((len(r) for r in refs_chunk), default=0)
            if kmax and cfg.use_refs:
                prepped = [self._prep_refs(f, r, kmax) for f, r in zip(chunk, refs_chunk)]
                refs_t = torch.from_numpy(np.stack([p[0] for p in prepped])).permute(0, 1, 4, 2, 3)
                refs_t = refs_t.to(self.device, dtype).div_(255.0)
                scores = torch.from_numpy(np.stack([p[1] for p in prepped])).to(self.device, dtype)
                valid = torch.from_numpy(np.stack([p[2] for p in prepped])).to(self.device)
                prior = torch.from_numpy(np.stack([p[3] for p in prepped])).to(self.device, dtype)
                aligned = None
                if cfg.aligned:
                    aligned = torch.from_numpy(np.stack([p[4] for p in prepped])).permute(0, 1, 4, 2, 3)
                    aligned = aligned.to(self.device, dtype).div_(255.0)
                o = self.model(lq, refs_t, scores, valid, prior, aligned=aligned, fidelity=fidelity)
            else:
                o = self.model(lq, fidelity=fidelity)
            for face, restored in zip(chunk, tensor_to_batch(o.out, cfg.out_size)):
                restored = resize_square(restored, face.shape[0])
                if strength < 1.0:
                    restored = cv2.addWeighted(restored, strength, face, 1.0 - strength, 0)
                outputs.append(restored)
        return outputs


def _factory(weights_dir: Path, device: torch.device, half: bool) -> RefNetRestorer:
    path = embedded_weights_path()
    if not path.is_file():
        raise FileNotFoundError(f"embedded RefNet weights missing: {path}")
    return RefNetRestorer.from_file(path, device, half)


REFNET_SPEC = RestorerSpec(info=REFNET_INFO, factory=_factory)
