"""The one interface every face restorer implements."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np
import torch

from ..faces import Reference


@dataclass(frozen=True)
class RestorerInfo:
    """What a restorer is, declared before anything is loaded."""

    name: str
    input_size: int  # side of the square aligned face the network works on
    license: str
    uses_references: bool
    description: str
    weight_files: tuple[str, ...] = ()  # manifest file names it needs ("" for none)
    embedded: bool = False  # weights ship inside the package
    commercial_use: bool = True
    on_request_only: bool = False  # never chosen automatically (CodeFormer)
    supports_fp16: bool = False
    supports_fidelity: bool = False  # restore() takes fidelity= (0 most detail .. 1 closest to the input)


class Restorer(Protocol):
    """restore(aligned_faces, references) -> restored_faces.

    ``faces`` are aligned 512x512 RGB uint8 crops; ``references`` has one list per face
    (possibly empty). Returns one 512x512 RGB uint8 crop per face, in order. A restorer
    whose ``info.supports_fidelity`` is True also takes ``fidelity: float | None``; the
    pipeline passes it to no other restorer.
    """

    info: RestorerInfo
    device: torch.device

    def restore(
        self,
        faces: Sequence[np.ndarray],
        references: Sequence[Sequence[Reference]] | None = None,
        strength: float = 1.0,
    ) -> list[np.ndarray]: ...


@dataclass(frozen=True)
class RestorerSpec:
    """A registry entry: the description, plus how to build the restorer."""

    info: RestorerInfo
    # factory(weights_dir, device, half) -> Restorer; weights_dir may hold the needed files
    factory: Callable[[Path, torch.device, bool], Restorer] = field(repr=False)
