"""Labelled aligned-face sets (``shared/data/faces`` layout) as identification queries.

A face set is one folder per person of FFHQ-aligned crops. Queries come at three qualities:
``clean``, and degraded with :func:`refrestore.net.degrade.degrade_to_face_width` so the face is
about 48 or 24 px wide (blur matched to the downscale, noise sigma 10, JPEG 40, back up to the
crop size), then brought to the 512 template as the pipeline would.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from refrestore.net.degrade import degrade_to_face_width
from refrestore.net.split import is_held_out

IMAGE_EXTS = (".jpg", ".jpeg", ".png")
# Face (detector box) width as a fraction of the aligned crop's width: the box is about twice
# the eye distance, which the FFHQ template puts at a quarter of the crop.
FACE_WIDTH_FRACTION = 0.5
QUALITIES: dict[str, int | None] = {"clean": None, "48px": 48, "24px": 24}


@dataclass(frozen=True)
class LabelledFace:
    person: str
    path: Path


def read_faceset(root: Path, held_out: bool | None = None, per_person: int | None = None) -> list[LabelledFace]:
    """The photos of ``root`` (one folder per person); ``held_out`` picks one side of the split."""
    out: list[LabelledFace] = []
    for d in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        if held_out is not None and is_held_out(d.name) != held_out:
            continue
        files = sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_EXTS)
        out.extend(LabelledFace(d.name, f) for f in files[:per_person])
    return out


def read_aligned(path: Path, size: int = 512) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot read {path}")
    if bgr.shape[:2] != (size, size):
        bgr = cv2.resize(bgr, (size, size), interpolation=cv2.INTER_AREA if bgr.shape[0] > size else cv2.INTER_CUBIC)
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def face_width_of(quality: str) -> int | None:
    """The face width a query quality names: "clean" is None, "NNpx" is NN (see :data:`QUALITIES`)."""
    if quality in QUALITIES:
        return QUALITIES[quality]
    if quality.endswith("px") and quality[:-2].isdigit() and 8 <= int(quality[:-2]) <= 512:
        return int(quality[:-2])
    raise ValueError(f"unknown quality {quality!r}; expected clean or a face width such as 48px")


def query_image(path: Path, quality: str, seed: int, size: int = 512) -> np.ndarray:
    """The aligned ``size`` crop of ``path`` at a query quality: "clean", or degraded so the face is
    about NN px wide ("NNpx"; :data:`QUALITIES` lists the benchmark's three)."""
    target = face_width_of(quality)
    if target is None:
        return read_aligned(path, size)
    native = read_aligned(path, 256)
    low = degrade_to_face_width(native, FACE_WIDTH_FRACTION * native.shape[1], target_width=target,
                                noise_sigma=10, jpeg_quality=40, seed=seed)
    return np.ascontiguousarray(cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC))
