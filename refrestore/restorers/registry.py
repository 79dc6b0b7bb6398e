"""The restorer registry: every restorer, described before anything is loaded.

``auto`` takes the best restorer whose weights are present: a downloaded published model,
else the embedded reference-guided network, else plain resampling.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from .base import Restorer, RestorerSpec
from .published import CODEFORMER_SPEC, GFPGAN_SPEC, RESTOREFORMER_SPEC
from .resample import RESAMPLE_SPEC

log = logging.getLogger(__name__)


class RestorerError(RuntimeError):
    pass


def all_specs() -> list[RestorerSpec]:
    """Every registered restorer, best first."""
    specs = [GFPGAN_SPEC, RESTOREFORMER_SPEC]
    try:
        from .refnet import REFNET_SPEC

        specs.append(REFNET_SPEC)
    except ImportError as exc:  # the embedded network is optional until its weights ship
        log.debug("embedded refnet unavailable: %s", exc)
    specs += [CODEFORMER_SPEC, RESAMPLE_SPEC]
    return specs


def restorer_names() -> list[str]:
    return [s.info.name for s in all_specs()]


def get_spec(name: str) -> RestorerSpec:
    for spec in all_specs():
        if spec.info.name == name:
            return spec
    raise RestorerError(f"unknown model {name!r}: expected auto or one of {', '.join(restorer_names())}")


def _present(spec: RestorerSpec, store: object) -> bool:
    """All weights on disk and verified. A tampered file raises WeightsError: never used silently."""
    if spec.info.embedded or not spec.info.weight_files:
        return True
    if not _downloadable(spec, store):  # a private manifest may omit it
        return False
    return all(store.find(f) is not None for f in spec.info.weight_files)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Choice:
    spec: RestorerSpec
    better: RestorerSpec | None  # a better model that download-weights would add


def choose_restorer(name: str, store: object) -> Choice:
    """Resolve ``--model`` (a name or ``auto``) against what is on disk."""
    specs = all_specs()
    if name != "auto":
        spec = get_spec(name)
        if not _present(spec, store):
            files = " ".join(spec.info.weight_files)
            raise RestorerError(
                f"model {name} needs {files}, which is not downloaded: run 'refrestore download-weights {spec.info.name}' or add --download"
            )
        return Choice(spec=spec, better=None)
    candidates = [s for s in specs if not s.info.on_request_only]
    chosen = next(s for s in candidates if _present(s, store))
    # Only a model download-weights can fetch: a private manifest may leave a model out.
    better = next((s for s in candidates[: candidates.index(chosen)]
                   if not _present(s, store) and _downloadable(s, store)), None)
    return Choice(spec=chosen, better=better)


def _downloadable(spec: RestorerSpec, store: object) -> bool:
    manifest = store.manifest  # type: ignore[attr-defined]
    return bool(spec.info.weight_files) and all(manifest.get(f) is not None for f in spec.info.weight_files)


def available_specs(store: object) -> list[RestorerSpec]:
    """The restorers ``auto`` may use whose weights are present, best first."""
    return [s for s in all_specs() if not s.info.on_request_only and _present(s, store)]


def build_restorer(spec: RestorerSpec, store: object, device: torch.device, half: bool = True) -> Restorer:
    """Build a restorer on ``device``; CUDA that fails falls back to the CPU with a warning."""
    directory = store.directory  # type: ignore[attr-defined]
    if spec.info.weight_files and not spec.info.embedded:
        for f in spec.info.weight_files:
            store.require(f)  # type: ignore[attr-defined]  # verifies size and hash
    try:
        return spec.factory(directory, device, half)
    except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:
        if device.type == "cpu":
            raise
        log.warning("could not load %s on %s (%s); using the CPU", spec.info.name, device, exc)
        return spec.factory(directory, torch.device("cpu"), False)
