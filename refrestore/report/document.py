"""The report document: what happened to every photo and face, as plain JSON-ready data."""
from __future__ import annotations

import os
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


def printable_name(text: str) -> str:
    """``text`` as valid Unicode: a file name that is not UTF-8 reaches Python with its bad
    bytes as surrogates (PEP 383), which no UTF-8 writer accepts. Those bytes are written as
    ``\\xNN`` escapes (``os.fsencode`` then backslashreplace): ``caf\\xe9.jpg``."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return os.fsencode(text).decode("utf-8", "backslashreplace")


def printable(value: Any) -> Any:
    """The document with every string (keys too) made :func:`printable_name`."""
    if isinstance(value, str):
        return printable_name(value)
    if isinstance(value, dict):
        return {printable(k): printable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [printable(v) for v in value]
    return value
