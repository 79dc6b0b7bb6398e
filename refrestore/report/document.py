"""The report document: what happened to every photo and face, as plain JSON-ready data."""
from __future__ import annotations

from typing import Any, Protocol, Sequence


class _ImageReport(Protocol):
    def to_json(self) -> dict[str, Any]: ...


class _Summary(Protocol):
    images: Sequence[_ImageReport]
    interrupted: bool


def build_document(summary: _Summary, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """``{"images": [...], "interrupted": bool, **extra}``: the JSON report's schema."""
    data: dict[str, Any] = {"images": [r.to_json() for r in summary.images], "interrupted": summary.interrupted}
    if extra:
        data.update(extra)
    return data
