"""Usage errors that the command line and the file system show on their own.

A missing ``--refs`` folder or a misspelt ``--model`` must come back in a fraction of a second,
not after torch, the detector and the identity model have loaded (3-10 s). So the names each
option takes are listed here, stdlib only, and checked before any library is imported; tests
keep these lists in step with the registries they copy (restorers, detectors, identity models).
The libraries still check again when they load: this is only the early, cheap word.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

# restorers.registry.restorer_names(), best first
MODEL_NAMES = ("gfpgan-v1.4", "restoreformer", "refnet-small", "codeformer", "resample")
# detection.DETECTOR_NAMES
DETECTOR_NAMES = ("auto", "retinaface", "retinaface_resnet50", "retinaface_mobile0.25", "dlib")
# identity.IDENTITY_MODELS
IDENTITY_NAMES = ("auto", "mobilefacenet-dual", "mobilefacenet-lr", "mobilefacenet", "dlib", "faceid", "fused", "arcface")

_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def model_problem(name: str) -> str | None:
    if name == "auto" or name in MODEL_NAMES:
        return None
    return f"unknown model {name!r}: expected auto or one of {', '.join(MODEL_NAMES)}"


def detector_problem(name: str) -> str | None:
    if name in DETECTOR_NAMES:
        return None
    return f"unknown detector {name!r}: expected one of {', '.join(DETECTOR_NAMES)}"


def identity_problem(name: str) -> str | None:
    if name.lower() in IDENTITY_NAMES:
        return None
    return f"unknown identity model {name!r}; choose one of {', '.join(IDENTITY_NAMES)}"


def device_problem(name: str) -> str | None:
    """The spelling only: whether CUDA or MPS is there is torch's to say."""
    if _DEVICE.fullmatch((name or "auto").strip().lower()):
        return None
    return f"--device {name!r}: expected auto, cpu, cuda, cuda:N or mps"


def reference_problem(refs: Iterable[Path], ref: Path | None) -> str | None:
    """A ``--refs`` that is not there, or a ``--ref`` that is not a file."""
    for path in refs:
        if not path.exists():
            return f"--refs {path}: no such file or folder"
    if ref is not None and not ref.is_file():
        return f"--ref {ref}: no such file"
    return None


def first_problem(*problems: str | None) -> str | None:
    return next((p for p in problems if p), None)
