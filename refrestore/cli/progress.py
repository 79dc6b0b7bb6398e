"""Progress while a gallery is indexed: a bar on a terminal, a plain line every few seconds in a
log or a pipe (indexing 85 photos takes 40 s on two cores; a log must not fall silent)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console

from .common import shown

PLAIN_EVERY_S = 5.0


class GalleryProgress:
    """``progress(done, total, path)`` for ``Gallery.build``: ``live`` draws a bar (a terminal),
    ``plain`` prints ``indexing gallery: 12/85 photos, 10 s`` on the first photo, every
    ``every`` seconds and on the last; neither: nothing (-q)."""

    def __init__(self, console: Console, live: bool, plain: bool = False, every: float = PLAIN_EVERY_S) -> None:
        self.console, self.live, self.plain, self.every = console, live, plain and not live, every
        self.progress: Any = None
        self.task: Any = None
        self.start = time.monotonic()
        self.printed: float | None = None

    def __enter__(self) -> "GalleryProgress":
        self.start = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, done: int, total: int, path: str) -> None:
        if self.plain:
            self._line(done, total)
        if not self.live:
            return
        if self.progress is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(
                TextColumn("[bold]indexing gallery"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TextColumn("{task.fields[name]}", markup=False), console=self.console, transient=True,
            )
            self.progress.start()
            self.task = self.progress.add_task("gallery", total=total, name="")
        self.progress.update(self.task, total=total, completed=done, name=shown(Path(path).name))

    def _line(self, done: int, total: int) -> None:
        now = time.monotonic()
        if self.printed is not None and now - self.printed < self.every and done < total:
            return
        self.printed = now
        self.console.print(f"indexing gallery: {done}/{total} photos, {now - self.start:.0f} s",
                           markup=False, highlight=False)
