"""A training-data pack: the training people's aligned faces in one ``.npz`` of JPEG bytes.

A lent GPU machine gets the working tree (64 MiB in all) and nothing of ``../shared``, so the
training data travels as one file: every photo re-encoded as JPEG (quality 90 keeps the 256
faces' detail; they were quality 95 already), concatenated into one uint8 array with offsets,
and the person of each photo. Read with ``allow_pickle=False``. Held-out people
(``refrestore.net.split``) are never packed.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ..net.split import is_held_out
from ..net.tensors import resize_square
from .folders import read_rgb, scan_people

PACK_FORMAT = "refrestore-facepack-1"


@dataclass
class PackInfo:
    path: Path
    people: int
    photos: int
    size: int
    bytes: int


def pack_faces(data: Path, out: Path, size: int, quality: int = 90, max_per_person: int | None = None,
               exclude: Sequence[str] = ()) -> PackInfo:
    """Pack the training people of ``data`` at ``size`` px into ``out`` (written atomically)."""
    people = {p: f for p, f in scan_people(data).items() if not is_held_out(p) and p not in exclude}
    blobs: list[bytes] = []
    names: list[str] = []
    owner: list[int] = []
    for i, (person, files) in enumerate(sorted(people.items())):
        names.append(person)
        for f in files[:max_per_person]:
            img = resize_square(read_rgb(f), size)
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
            if not ok:
                raise ValueError(f"cannot encode {f}")
            blobs.append(buf.tobytes())
            owner.append(i)
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp.npz", dir=out.parent)
    os.close(fd)
    try:
        np.savez(tmp, format=np.array(PACK_FORMAT), size=np.array(size),
                 data=np.frombuffer(b"".join(blobs), dtype=np.uint8), offsets=offsets,
                 owner=np.asarray(owner, dtype=np.int32), people=np.asarray(names))
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return PackInfo(out, len(names), len(blobs), size, out.stat().st_size)


def read_pack(path: Path) -> tuple[int, dict[str, list[np.ndarray]]]:
    """(size, person -> decoded RGB photos) of a pack."""
    with np.load(path, allow_pickle=False) as z:
        if str(z["format"]) != PACK_FORMAT:
            raise ValueError(f"{path} is not a refrestore face pack")
        size = int(z["size"])
        data, offsets, owner, names = z["data"], z["offsets"], z["owner"], [str(n) for n in z["people"]]
    if len(offsets) != len(owner) + 1 or offsets[-1] != len(data) or (len(owner) and owner.max() >= len(names)):
        raise ValueError(f"{path}: inconsistent pack")
    people: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for j, i in enumerate(owner):
        img = cv2.imdecode(data[offsets[j]:offsets[j + 1]], cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"{path}: photo {j} does not decode")
        people[names[int(i)]].append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    return size, {p: v for p, v in people.items() if v}
