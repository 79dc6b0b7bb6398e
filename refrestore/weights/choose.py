"""Which present model a role would use, by manifest order (a fallback for listings)."""
from __future__ import annotations

from .errors import WeightsError
from .store import WeightStore


def preferred(store: WeightStore, role: str) -> str | None:
    """The first model of ``role`` whose files are all present and verified.

    Entries are tried in manifest order; on-request-only models (CodeFormer) are never
    chosen; a model with a corrupt file is skipped.
    """
    seen: set[str] = set()
    for entry in store.manifest.entries:
        if entry.role != role or entry.on_request_only:
            continue
        for model in entry.models:
            if model in seen:
                continue
            seen.add(model)
            if any(e.on_request_only for e in store.manifest.for_model(model)):
                continue
            try:
                if store.has_model(model):
                    return model
            except WeightsError:
                continue
    return None
