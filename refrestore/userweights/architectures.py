"""Does a weights file fit the network it is meant for? A strict load says.

Used before a file the user already has is added as a named model (``download-weights
NAME --from-file FILE``): the hash of such a file is not the published one, so the only
check left is that every tensor fits the architecture, no more and no fewer.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..weights.errors import WeightsError
from ..weights.manifest import ManifestEntry


def _retinaface(network: str) -> Callable[[], Any]:
    def build() -> Any:
        import warnings

        from facexlib.detection.retinaface import RetinaFace

        with warnings.catch_warnings():  # facexlib passes torchvision's deprecated pretrained=False
            warnings.simplefilter("ignore", UserWarning)
            return RetinaFace(network_name=network, half=False, phase="test", device="cpu")

    return build


def _parsenet() -> Any:
    from facexlib.parsing.parsenet import ParseNet

    return ParseNet(in_size=512, out_size=512, parsing_ch=19)


def _bisenet() -> Any:
    from facexlib.parsing.bisenet import BiSeNet

    return BiSeNet(num_class=19)


def _arcface() -> Any:
    from facexlib.recognition.arcface_arch import Backbone

    return Backbone(num_layers=50, drop_ratio=0.6, mode="ir_se")


def _mobilefacenet() -> Any:
    from ..identity.mobilefacenet import MobileFaceNet

    return MobileFaceNet()


# File name -> (architecture, builder) for the networks refrestore builds itself.
TORCH_ARCHITECTURES: dict[str, tuple[str, Callable[[], Any]]] = {
    "detection_Resnet50_Final.pth": ("RetinaFace resnet50", _retinaface("resnet50")),
    "detection_mobilenet0.25_Final.pth": ("RetinaFace mobilenet0.25", _retinaface("mobile0.25")),
    "parsing_parsenet.pth": ("ParseNet", _parsenet),
    "parsing_bisenet.pth": ("BiSeNet", _bisenet),
    "recognition_arcface_ir_se50.pth": ("ArcFace IR-SE50", _arcface),
    "mobilefacenet.pt": ("MobileFaceNet", _mobilefacenet),
}
# File name -> the spandrel architecture id its published file loads as.
SPANDREL_ARCHITECTURES: dict[str, str] = {
    "GFPGANv1.4.pth": "GFPGAN",
    "GFPGANv1.3.pth": "GFPGAN",
    "RestoreFormer.pth": "RestoreFormer",
    "codeformer.pth": "CodeFormer",
    "RealESRGAN_x2plus.pth": "ESRGAN",
}


def _mismatch(expected: dict[str, Any], found: dict[str, Any]) -> str:
    """What keeps a state dict from loading, counted (the full list can run to hundreds)."""
    missing = [k for k in expected if k not in found]
    extra = [k for k in found if k not in expected]
    shape = [k for k in expected if k in found and tuple(expected[k].shape) != tuple(found[k].shape)]
    parts = [f"{len(v)} {what}, e.g. {v[0]}" for what, v in
             (("missing tensors", missing), ("unexpected tensors", extra), ("tensors of another shape", shape)) if v]
    return "; ".join(parts) or "the tensors do not fit"


def check_architecture(entry: ManifestEntry, path: Path) -> str:
    """The architecture ``path`` loads into strictly, for ``entry``'s role; WeightsError if none."""
    from ..weights.loading import load_state_dict

    if entry.embedded:
        raise WeightsError(f"{entry.name} ships inside refrestore; it cannot be replaced by a file")
    state = load_state_dict(path, entry.name)
    state = {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}
    if entry.name in TORCH_ARCHITECTURES:
        arch, build = TORCH_ARCHITECTURES[entry.name]
        model = build()
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError:
            raise WeightsError(f"{path} does not load strictly into {arch} ({_mismatch(model.state_dict(), state)})") from None
        return arch
    if entry.name in SPANDREL_ARCHITECTURES:
        wanted = SPANDREL_ARCHITECTURES[entry.name]
        from spandrel import ModelLoader, UnsupportedModelError

        from ..restorers.published import _registry

        try:
            descriptor = ModelLoader(device="cpu", registry=_registry()).load_from_state_dict(state)
        except (UnsupportedModelError, KeyError, RuntimeError, ValueError) as exc:
            raise WeightsError(f"{path} does not load as {wanted} ({type(exc).__name__})") from None
        found = descriptor.architecture.id
        if found != wanted:
            raise WeightsError(f"{path} is a {found} model, not {wanted}")
        return wanted
    raise WeightsError(f"refrestore has no architecture check for {entry.name}, so it cannot add a file for it")
