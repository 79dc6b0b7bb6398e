"""Reference sources for the pipeline: the user's gallery, or one forced reference."""
from __future__ import annotations

from typing import Any

import numpy as np

from .faces import DetectedFace, Reference


class GalleryReferences:
    """Picks the top-K references of the same person from an indexed gallery (RefSel)."""

    def __init__(self, gallery: Any, identity: Any, top_k: int = 3, threshold: float | None = None) -> None:
        self.gallery = gallery
        self.identity = identity
        self.top_k = top_k
        self.threshold = threshold

    def select(self, aligned: np.ndarray, face: DetectedFace | None) -> tuple[list[Reference], dict | None]:
        from .gallery import select_references

        selection = select_references(self.gallery, aligned, face, self.identity, top_k=self.top_k, threshold=self.threshold)
        return list(selection.references), selection.report()


class ForcedReference:
    """``--ref FILE``: the user says who it is; every face uses this reference."""

    def __init__(self, reference: Reference) -> None:
        self.reference = reference

    def select(self, aligned: np.ndarray, face: DetectedFace | None) -> tuple[list[Reference], dict | None]:
        ref = self.reference
        report = {"path": ref.path, "face_index": ref.face_index, "score": ref.score, **ref.components}
        report.update({"regions": dict(ref.regions), "forced": True})
        return [ref], report
