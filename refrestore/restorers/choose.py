"""Which restorer each face gets: a decision, not a restorer.

With ``--model auto`` a face whose person was found in the gallery goes to the
reference-guided network (its references are what makes it better than a blind model), and
a stranger goes to the best blind restorer present (a downloaded GFPGAN or RestoreFormer),
else the embedded network without references. A named model takes every face.
"""
from __future__ import annotations

import threading
from typing import Callable, Sequence

from .base import Restorer, RestorerSpec


def restorer_for(has_match: bool, available: Sequence[RestorerSpec], named: RestorerSpec | None = None) -> RestorerSpec:
    """The restorer for one face. ``available``: the present restorers auto may use, best first."""
    if named is not None:
        return named
    if not available:
        raise ValueError("no restorer available")
    if has_match:
        guided = next((s for s in available if s.info.uses_references), None)
        if guided is not None:
            return guided
    return available[0]


class Router:
    """The per-face choice plus the restorers it needs, each built once, on first use."""

    def __init__(
        self,
        available: Sequence[RestorerSpec],
        build: Callable[[RestorerSpec], Restorer],
        named: RestorerSpec | None = None,
        prebuilt: Sequence[Restorer] = (),
    ) -> None:
        self.available = list(available)
        self.named = named
        self._build = build
        self._built: dict[str, Restorer] = {r.info.name: r for r in prebuilt}
        self._lock = threading.Lock()  # engines may ask from several threads

    @classmethod
    def fixed(cls, restorer: Restorer) -> "Router":
        """Every face to this one (already built) restorer."""
        spec = RestorerSpec(info=restorer.info, factory=lambda *_: restorer)
        return cls([spec], build=lambda s: restorer, named=spec, prebuilt=[restorer])

    @property
    def routes(self) -> bool:
        """True when faces may go to different restorers."""
        return self.named is None

    def spec_for(self, has_match: bool) -> RestorerSpec:
        return restorer_for(has_match, self.available, self.named)

    def get(self, spec: RestorerSpec) -> Restorer:
        with self._lock:
            restorer = self._built.get(spec.info.name)
            if restorer is None:
                restorer = self._build(spec)
                self._built[spec.info.name] = restorer
            return restorer

    def built(self) -> list[Restorer]:
        return list(self._built.values())
