"""Engines that run the pipeline over many photos: ``local`` (one process) and ``ray`` (a cluster).

Both go through the same per-photo steps (``photo``), so they write the same bytes and the
same reports. ``ray`` is imported only when asked for: Ray is an optional extra.
"""
from __future__ import annotations

from .local import run_local
from .photo import BatchOptions, process_photo
from .reports import BatchSummary, ImageReport, write_report
from .tasks import OUTPUT_SUFFIX, Task, UsageError, plan_outputs, split_finished

__all__ = [
    "OUTPUT_SUFFIX", "BatchOptions", "BatchSummary", "ImageReport", "Task", "UsageError",
    "plan_outputs", "process_photo", "run_local", "split_finished", "write_report",
]
