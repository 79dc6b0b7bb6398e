"""refrestore: reference-guided face restoration for old photos.

The library under the ``refrestore`` command. The data flows one way: read image ->
detect -> align -> select references -> restore -> paste back -> write.

Names are imported on first use, so ``import refrestore.imageio`` (and every CLI start)
does not pay for torch until a network is needed.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.2.0"

_EXPORTS = {
    "AlignedFace": "faces",
    "DetectedFace": "faces",
    "Reference": "faces",
    "align_face": "align",
    "BuiltPipeline": "api",
    "build_pipeline": "api",
    "restore_photo": "api",
    "init_detector": "detection",
    "LoadedImage": "imageio",
    "read_image": "imageio",
    "save_image": "imageio",
    "paste_faces": "pasteback",
    "FaceOutcome": "pipeline",
    "FacePipeline": "pipeline",
    "FixOptions": "pipeline",
    "PhotoResult": "pipeline",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'refrestore' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
