"""refrestore: reference-guided face restoration for old photos.

The library under the ``refrestore`` command. The data flows one way: read image ->
detect -> align -> select references -> restore -> paste back -> write.
"""
from __future__ import annotations

__version__ = "0.1.0"

from .align import align_face
from .api import BuiltPipeline, build_pipeline, restore_photo
from .detection import init_detector
from .faces import AlignedFace, DetectedFace, Reference
from .imageio import LoadedImage, read_image, save_image
from .pasteback import paste_faces
from .pipeline import FaceOutcome, FacePipeline, FixOptions, PhotoResult

__all__ = [
    "AlignedFace",
    "BuiltPipeline",
    "DetectedFace",
    "FaceOutcome",
    "FacePipeline",
    "FixOptions",
    "LoadedImage",
    "PhotoResult",
    "Reference",
    "align_face",
    "build_pipeline",
    "init_detector",
    "paste_faces",
    "read_image",
    "restore_photo",
    "save_image",
]
