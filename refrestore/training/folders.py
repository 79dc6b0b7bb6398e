"""The layout of a folder of training or evaluation faces: ``DIR/<person>/<n>.png`` (or
``DIR/hq/<person>/...``), every image an aligned face; its people, their photos, and reading one.

Below both the samplers (``data``) and the pack writer and reader (``pack``), which each need it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


class DataError(ValueError):
    """The data folder is missing or not laid out as expected."""


def read_rgb(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(f"cannot read image {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def person_root(data: Path) -> Path:
    """DIR itself, or DIR/hq when DIR is a refbench-style folder."""
    data = Path(data)
    if not data.is_dir():
        raise DataError(f"data folder not found: {data}")
    if (data / "hq").is_dir():
        return data / "hq"
    return data


def _natural_key(p: Path) -> tuple[int, str]:
    return (int(p.stem), "") if p.stem.isdigit() else (1 << 30, p.stem)


def scan_people(data: Path, exclude: Sequence[str] = (), include: Sequence[str] | None = None) -> dict[str, list[Path]]:
    """person -> sorted photo paths; people with a single photo are kept (usable as eval GT only if >= 2)."""
    root = person_root(data)
    people: dict[str, list[Path]] = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        if d.name in exclude or (include is not None and d.name not in include):
            continue
        files = sorted((f for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES), key=_natural_key)
        if files:
            people[d.name] = files
    if not people:
        raise DataError(f"no <person>/<photo> images found under {root}")
    return people
