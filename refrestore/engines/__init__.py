"""Engines that run the pipeline over many photos: ``local`` (one process) and ``ray`` (a cluster).

Both go through the same per-photo steps (``photo``), so they write the same bytes and the
same reports. ``ray`` is imported only when asked for: Ray is an optional extra.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

# Imported when first used (PEP 562): the CLI's up-front checks (``tasks``, ``clash``) must not
# pay for torch, which ``local`` pulls in, before they refuse a run.
_WHERE = {"run_local": "local", "BatchOptions": "photo", "process_photo": "photo", "BatchSummary": "reports",
          "ImageReport": "reports", "write_report": "reports", "OUTPUT_SUFFIX": "tasks", "Task": "tasks",
          "UsageError": "tasks", "plan_outputs": "tasks", "split_finished": "tasks"}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_WHERE[name]}", __name__), name)


__all__ = [
    "OUTPUT_SUFFIX", "BatchOptions", "BatchSummary", "ImageReport", "Task", "UsageError",
    "plan_outputs", "process_photo", "run_local", "split_finished", "write_report",
]
