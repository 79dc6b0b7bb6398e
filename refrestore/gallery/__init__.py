"""The user's reference gallery: indexing (with an on-disk cache) and reference selection."""
from __future__ import annotations

from .index import BuildStats, Gallery, GalleryFace, GalleryProblem
from .rules import Thresholds
from .select import (
    Candidate,
    QueryFace,
    Selection,
    describe_query,
    forced_reference,
    select_from_query,
    select_photo,
    select_references,
    thresholds_for,
)

__all__ = [
    "BuildStats",
    "Candidate",
    "Gallery",
    "GalleryFace",
    "GalleryProblem",
    "QueryFace",
    "Selection",
    "Thresholds",
    "describe_query",
    "forced_reference",
    "select_from_query",
    "select_photo",
    "select_references",
    "thresholds_for",
]
