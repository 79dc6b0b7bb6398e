"""The licences of the models a run used, so that it can say which of them are non-commercial.

The code is MIT; several weights are not (refnet-small's are CC BY-NC-SA 4.0, trained on
non-commercial data). A run says once which weights it used and under what terms: restorers
from their :class:`~refrestore.restorers.base.RestorerInfo`, identity models and detectors from
the weights manifest (``models/manifest.toml``), built-in ones from :data:`BUILT_IN`.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelLicence:
    role: str  # restorer | identity | detector
    name: str
    license: str
    commercial: bool

    def as_dict(self) -> dict[str, Any]:
        return {"role": self.role, "name": self.name, "license": self.license, "commercial": self.commercial}


# Models that ship with the dependencies, outside the manifest: dlib's detector and descriptor come
# from the face_recognition_models package (CC0-1.0 on PyPI).
BUILT_IN: dict[str, tuple[str, bool]] = {
    "dlib": ("CC0-1.0 (dlib's models, from face_recognition_models)", True),
}
# Identity and detector names as the run reports them -> manifest model names.
_MANIFEST_NAMES = {
    "faceid": "faceid-small",
    "retinaface": "retinaface-resnet50",
    "retinaface_resnet50": "retinaface-resnet50",
    "retinaface-resnet50": "retinaface-resnet50",
    "retinaface_mobile0.25": "retinaface-mobilenet",
    "retinaface-mobilenet": "retinaface-mobilenet",
}
# The fused identity model is dlib and faceid-small together.
# mobilefacenet-dual is the published MobileFaceNet and refrestore's fine-tune together.
_PARTS = {"fused": ("dlib", "faceid"), "mobilefacenet-dual": ("mobilefacenet", "mobilefacenet-lr")}


def restorer_licence(name: str) -> ModelLicence | None:
    """A restorer's licence, from the registry (None: a name it does not know)."""
    from .restorers.registry import RestorerError, get_spec

    try:
        info = get_spec(name).info
    except RestorerError:
        return None
    return ModelLicence("restorer", name, info.license, info.commercial_use)


def manifest_licence(role: str, name: str, manifest: Any) -> ModelLicence | None:
    """A detector's or identity model's licence: built in, or its manifest entries (every file)."""
    if name in _PARTS:
        parts = [manifest_licence(role, p, manifest) for p in _PARTS[name]]
        known = [p for p in parts if p is not None]
        if not known:
            return None
        return ModelLicence(role, name, "; ".join(f"{p.name}: {_short(p.license)}" for p in known),
                            all(p.commercial for p in known))
    if name in BUILT_IN:
        text, commercial = BUILT_IN[name]
        return ModelLicence(role, name, text, commercial)
    entries = manifest.for_model(_MANIFEST_NAMES.get(name, name)) if manifest is not None else []
    if not entries:
        return None
    licences = sorted({e.license for e in entries})
    return ModelLicence(role, name, "; ".join(licences), all(e.commercial for e in entries))


def run_licences(restorers: Iterable[str], identity: str | None, detector: str | None,
                 manifest: Any) -> list[ModelLicence]:
    """The licences of what a run used, in the order restorers, identity model, detector."""
    out: list[ModelLicence] = []
    for name in dict.fromkeys(r for r in restorers if r):
        lic = restorer_licence(name)
        if lic is not None:
            out.append(lic)
    for role, name in (("identity", identity), ("detector", detector)):
        if name:
            lic = manifest_licence(role, name, manifest)
            if lic is not None:
                out.append(lic)
    return out


def _short(text: str) -> str:
    """"CC BY-NC-SA 4.0 (weights trained on ...)" -> "CC BY-NC-SA 4.0"."""
    return text.split(" (", 1)[0].strip() or text


def licence_line(licences: list[ModelLicence]) -> str | None:
    """``licences: restorer refnet-small: non-commercial weights (CC BY-NC-SA 4.0); identity, detector
    dlib: CC0-1.0``: one line for the run (a model used in two roles is named once)."""
    if not licences:
        return None
    roles: dict[tuple[str, str, bool], list[str]] = {}
    for lic in licences:
        roles.setdefault((lic.name, _short(lic.license), lic.commercial), []).append(lic.role)
    def terms(text: str, commercial: bool) -> str:
        if commercial:
            return text
        return "non-commercial weights (" + (text.replace("non-commercial ", "", 1) or text) + ")"

    parts = [f"{', '.join(r)} {name}: {terms(text, commercial)}" for (name, text, commercial), r in roles.items()]
    return "licences: " + "; ".join(parts)
