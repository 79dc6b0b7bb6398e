"""The library entry points: build a pipeline from names, or restore one photo in one call.

    from refrestore import restore_photo
    result = restore_photo("old.jpg", refs=["family/"])
    result.image  # RGB uint8, faces restored and pasted back
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .detail import DetailStage
from .detection import Detector, init_detector
from .devices import pick_device
from .parsing import init_parser
from .pipeline import FacePipeline, FixOptions, PhotoResult, ReferenceSource
from .restorers.base import Restorer, RestorerSpec
from .restorers.choose import Router
from .restorers.registry import available_specs, build_restorer, choose_restorer

log = logging.getLogger(__name__)


@dataclass
class BuiltPipeline:
    pipeline: FacePipeline
    device: torch.device
    better: RestorerSpec | None  # a better model that download-weights would add
    notes: list[str] = field(default_factory=list)  # gallery problems and other warnings
    gallery: object | None = None  # the indexed --refs gallery (its stats make fix's summary line)


def build_references(
    refs: Sequence[os.PathLike[str] | str],
    ref: os.PathLike[str] | str | None,
    detector: Detector | None,
    store: object,
    device: torch.device,
    top_k: int = 3,
    notes: list[str] | None = None,
    on_progress: Callable[[int, int, str], None] | None = None,
    person: os.PathLike[str] | str | None = None,
) -> ReferenceSource | None:
    """A gallery of the user's references (``refs``), one person's folder (``person``: the photo
    shows that person, unless a face is clearly someone else), or one forced reference (``ref``)."""
    if person is not None:
        if refs or ref is not None:
            raise ValueError("--person is the whole gallery: give it without --refs or --ref")
        if not Path(person).is_dir():
            raise FileNotFoundError(f"--person {person}: no such folder")
        refs = [person]
    if not refs and ref is None:
        return None
    from .identity import init_identity_model
    from .references import ForcedReference, GalleryReferences

    if detector is None:
        detector = init_detector("auto", store, device)
    identity = init_identity_model("auto", store=store, device=device)
    if ref is not None:
        from .gallery import forced_reference

        path = Path(ref)
        if not path.is_file():
            raise FileNotFoundError(f"--ref {path}: no such file")
        return ForcedReference(forced_reference(path, detector, identity))
    paths = [Path(p) for p in refs]
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"--refs {missing[0]}: no such file or folder")
    from .gallery import Gallery
    from .paths import cache_dir

    gallery = Gallery.build(paths, detector, identity, cache_dir=cache_dir(), progress=on_progress,
                            people=[Path(person)] if person is not None else ())
    for problem in getattr(gallery, "problems", []):
        if notes is not None:
            notes.append(f"gallery {problem[0]}: {problem[1]}")
    if not gallery.faces:
        if notes is not None:
            notes.append("no faces found in the --refs gallery; restoring without references")
        return None
    return GalleryReferences(gallery, identity, top_k=top_k)


def build_pipeline(
    *,
    refs: Sequence[os.PathLike[str] | str] = (),
    ref: os.PathLike[str] | str | None = None,
    model: str = "auto",
    detector: str = "auto",
    device: str = "auto",
    options: FixOptions | None = None,
    top_k: int = 3,
    store: object | None = None,
    on_gallery_progress: Callable[[int, int, str], None] | None = None,
    person: os.PathLike[str] | str | None = None,
) -> BuiltPipeline:
    """Everything ``fix`` needs, by name; nothing is downloaded.

    ``model="auto"`` routes each face (a matched person to the reference-guided network, a
    stranger to the best blind restorer present); a named model restores every face.
    Restorers are built when a face first needs one, each once.
    """
    options = options or FixOptions()
    from .weights import WeightStore

    store = store if store is not None else WeightStore()
    dev = pick_device(device)
    choice = choose_restorer(model, store)
    det = None
    if not options.aligned or refs or ref is not None or person is not None:
        det = init_detector(detector, store, dev)
    def build(spec: RestorerSpec) -> Restorer:
        return build_restorer(spec, store, dev)

    if model == "auto":
        router = Router(available_specs(store), build)
    else:
        router = Router([choice.spec], build, named=choice.spec)
    notes: list[str] = []
    references = build_references(refs, ref, det, store, dev, top_k, notes, on_gallery_progress, person)
    parser = None if options.aligned else init_parser(store, dev)
    # Built whatever the references: a Ray worker gets the driver's gallery after this. Its
    # landmark model loads when a face with references first needs it.
    detail = DetailStage() if options.reference_detail else None
    pipeline = FacePipeline(det, None, references, options, parser, router=router, detail=detail)
    return BuiltPipeline(pipeline, pipeline.restorer.device, choice.better, notes,
                         gallery=getattr(references, "gallery", None))


def restore_photo(
    image: os.PathLike[str] | str | np.ndarray,
    refs: Sequence[os.PathLike[str] | str] = (),
    *,
    model: str = "auto",
    detector: str = "auto",
    device: str = "auto",
    upscale: int = 1,
    strength: float = 1.0,
    top_k: int = 3,
    only_center_face: bool = False,
    fidelity: float | None = None,
    person: os.PathLike[str] | str | None = None,
) -> PhotoResult:
    """Restore every face of one photo (a path or an RGB uint8 array); ``person``: a folder of
    photos of the one person the photo shows (instead of a gallery of several people)."""
    grayscale = False
    if isinstance(image, np.ndarray):
        rgb = image
    else:
        from .imageio import read_image

        loaded = read_image(Path(image))
        rgb, grayscale = loaded.rgb, loaded.grayscale
    built = build_pipeline(
        refs=refs, model=model, detector=detector, device=device, top_k=top_k, person=person,
        options=FixOptions(upscale=upscale, strength=strength, only_center_face=only_center_face, fidelity=fidelity),
    )
    return built.pipeline.run(rgb, grayscale=grayscale)
