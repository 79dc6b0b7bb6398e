"""Running the pipeline over many files: the names the CLI, benchmarks and notebooks use.

The runner itself lives in ``refrestore.engines`` (``local`` for one machine, ``ray`` for a
cluster); this module keeps the public names (the face-crop writers are ``engines/facefiles.py``).
"""
from __future__ import annotations

from .engines.local import run_local as run_batch
from .engines.photo import BatchOptions, process_photo
from .engines.reports import BatchSummary, ImageReport, write_report
from .engines.tasks import OUTPUT_SUFFIX, Task, UsageError, plan_outputs
from .engines.facefiles import side_by_side

__all__ = [
    "OUTPUT_SUFFIX", "BatchOptions", "BatchSummary", "ImageReport", "Task", "UsageError",
    "plan_outputs", "process_photo", "run_batch", "side_by_side", "write_report",
]
