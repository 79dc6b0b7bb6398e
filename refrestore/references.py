"""Reference sources for the pipeline: the user's gallery, or one forced reference."""
from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .faces import DetectedFace, Reference


@dataclass
class ReferenceChoice:
    """What one face of a photo gets: its references, the report's ``reference`` object (None:
    none), the decision behind it (every number, also for "no match"), a warning line, and why
    (one line with the figures, and its code: ``refrestore.gallery.people.REASON_CODES`` or
    "forced")."""

    references: list[Reference] = field(default_factory=list)
    report: dict[str, Any] | None = None
    decision: dict[str, Any] | None = None
    warning: str | None = None
    reason: str | None = None
    reason_code: str | None = None


@dataclass(frozen=True)
class FaceToMatch:
    """One face of the photo, as reference selection sees it."""

    aligned: np.ndarray  # 512 RGB uint8 crop
    face: DetectedFace | None
    affine: np.ndarray | None = None


def _init_identity_model(name: str) -> Any:
    from .identity import init_identity_model

    return init_identity_model(name)


class GalleryReferences:
    """Picks the top-K references of the same person from an indexed gallery (RefSel), deciding
    the faces of one photo together (a one-person gallery's person goes to the face that fits)."""

    def __init__(self, gallery: Any, identity: Any, top_k: int = 3, threshold: float | None = None) -> None:
        self.gallery = gallery
        self.identity = identity
        self.top_k = top_k
        self.threshold = threshold
        # the identity rule's second model (one-person galleries), made on first use and kept
        self._second_model = functools.cache(_init_identity_model)

    def select_photo(self, faces: Sequence[FaceToMatch]) -> list[ReferenceChoice]:
        from .gallery.select import describe_query, second_opinion, select_photo

        if self.gallery.identity_name and self.gallery.identity_name != self.identity.name:
            raise ValueError(f"gallery was indexed with {self.gallery.identity_name}, not {self.identity.name}")
        analyzer = self.gallery.analyzer()
        queries = [describe_query(f.aligned, f.face, self.identity, analyzer, f.affine) for f in faces]
        queries, centroid = second_opinion(self.gallery, [f.aligned for f in faces], queries, self._second_model)
        selections = select_photo(self.gallery, queries, top_k=self.top_k, threshold=self.threshold,
                                  second_centroid=centroid)
        return [ReferenceChoice(list(s.references), s.report(), s.explain(), s.warning(i), s.reason(), s.reason_code)
                for i, s in enumerate(selections)]


class ForcedReference:
    """``--ref FILE``: the user says who it is; every face uses this reference."""

    def __init__(self, reference: Reference) -> None:
        self.reference = reference

    def select_photo(self, faces: Sequence[FaceToMatch]) -> list[ReferenceChoice]:
        ref = self.reference
        report = {"path": ref.path, "face_index": ref.face_index, "score": ref.score, **ref.components}
        report.update({"regions": dict(ref.regions), "forced": True, "reference_rule": "forced"})
        warning = (f"--ref is meant for single-face photos; used for all {len(faces)} faces"
                   if len(faces) > 1 else None)
        why = f"--ref {ref.path}: chosen by the user"
        return [ReferenceChoice([ref], dict(report), None, warning if i == 0 else None, why, "forced")
                for i in range(len(faces))]
