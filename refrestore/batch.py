"""Running the pipeline over many files: output paths, skipping, prefetch, reports.

Inputs are decoded ahead of time on worker threads (a small bounded queue), faces are
restored on the main thread, and every output is written atomically, so an interrupted
run leaves only complete files and a rerun skips them.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from .discover import InputFile
from .imageio import ImageReadError, ImageWriteError, LoadedImage, output_ext_for_path, read_image, remove_stale_temp_files, save_image
from .pipeline import FacePipeline, PhotoResult, PreparedPhoto

log = logging.getLogger(__name__)

OUTPUT_SUFFIX = "_restored"


class UsageError(ValueError):
    """Bad combination of inputs and outputs (exit status 2)."""


@dataclass(frozen=True)
class Task:
    source: InputFile
    output: Path


@dataclass
class ImageReport:
    input: str
    output: str | None
    status: str  # ok | no_faces | error | skipped
    error: str | None = None
    faces: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {
            "input": self.input,
            "output": self.output,
            "status": self.status,
            "error": self.error,
            "faces": self.faces,
            "warnings": self.warnings,
        }


@dataclass
class BatchSummary:
    images: list[ImageReport] = field(default_factory=list)
    interrupted: bool = False
    fatal: str | None = None

    def counts(self) -> Counter:
        return Counter(r.status for r in self.images)

    def failure_reasons(self) -> Counter:
        return Counter((r.error or "").split(":")[0] for r in self.images if r.status == "error")

    @property
    def failed(self) -> bool:
        return any(r.status == "error" for r in self.images) or self.fatal is not None


def plan_outputs(inputs: list[InputFile], output: Path | None, single_file: bool, suffix: str = OUTPUT_SUFFIX) -> list[Task]:
    """Where each input's output goes; refuses any plan that would write over an input.

    One file: ``-o`` is the output file (or a folder to put it in); default next to the
    input with a suffix. Several files or a folder: ``-o`` is a folder (default: the first
    input folder's name plus the suffix), mirroring sub-folders.
    """
    tasks: list[Task] = []
    input_paths = {os.path.realpath(i.path) for i in inputs}
    if single_file and len(inputs) == 1:
        src = inputs[0]
        ext = None
        if output is None:
            target = src.path.with_name(src.path.stem + suffix)
        elif output.is_dir() or not output.suffix:  # no extension: a folder to put it in
            target = output / (src.path.stem + suffix)
        else:
            target, ext = output, output.suffix
        if ext is None:
            target = target.with_suffix(output_ext_for_path(src.path))
        tasks.append(Task(src, target))
    else:
        if output is None:
            raise UsageError("several inputs or a folder: give an output folder with -o")
        if output.exists() and not output.is_dir():
            raise UsageError(f"-o {output}: exists and is not a folder")
        for src in inputs:
            rel = src.rel.parent / (src.rel.stem + suffix)
            tasks.append(Task(src, (output / rel).with_suffix(output_ext_for_path(src.path))))
    for t in tasks:
        if os.path.realpath(t.output) in input_paths:
            raise UsageError(f"refusing to overwrite the input {t.source.path}")
    seen: dict[str, Path] = {}
    for t in tasks:
        key = os.path.realpath(t.output)
        if key in seen:
            raise UsageError(f"{seen[key]} and {t.source.path} would both be written to {t.output}")
        seen[key] = t.source.path
    return tasks


def _prefetch(tasks: list[Task], workers: int, depth: int, max_pixels: int | None) -> Iterator[tuple[Task, "Future[LoadedImage]"]]:
    """Yield tasks with their decode futures, at most ``depth`` decoded ahead."""
    if depth <= 0:
        for t in tasks:
            fut: Future[LoadedImage] = Future()
            try:
                fut.set_result(read_image(t.source.path, max_pixels=max_pixels))
            except BaseException as exc:  # noqa: BLE001 - delivered to the consumer
                fut.set_exception(exc)
            yield t, fut
        return
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="decode") as pool:
        pending: list[tuple[Task, Future[LoadedImage]]] = []
        it = iter(tasks)
        try:
            for t in it:
                pending.append((t, pool.submit(read_image, t.source.path, max_pixels)))
                if len(pending) > depth:
                    yield pending.pop(0)
            while pending:
                yield pending.pop(0)
        finally:
            for _, fut in pending:
                fut.cancel()


def write_report(path: Path, summary: BatchSummary, extra: dict | None = None) -> None:
    """The JSON report, written atomically."""
    data = {"images": [r.to_json() for r in summary.images], "interrupted": summary.interrupted}
    if extra:
        data.update(extra)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".refrestore-", suffix=".json.tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, ensure_ascii=False)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@dataclass
class BatchOptions:
    skip_existing: bool = True
    save_faces: bool = False
    compare: bool = False
    jobs: int = 2
    prefetch: int = 2
    max_pixels: int | None = None
    group_images: int = 1  # photos whose faces are restored in one batch (4 on a GPU)


def side_by_side(panels: list[np.ndarray], height: int = 512) -> np.ndarray:
    out = []
    for p in panels:
        if p.shape[0] != height:
            p = cv2.resize(p, (int(p.shape[1] * height / p.shape[0]), height), interpolation=cv2.INTER_AREA)
        out.append(p)
        out.append(np.full((height, 8, 3), 255, np.uint8))
    return np.concatenate(out[:-1], axis=1)


def _save_face_files(result: PhotoResult, output: Path, like: LoadedImage, save_faces: bool, compare: bool) -> None:
    grey = np.full((512, 512, 3), 128, np.uint8)
    # Face crops carry the photo's colour profile but not its alpha, EXIF or greyness.
    plain = dataclasses.replace(like, alpha=None, exif=None, grayscale=False)
    for o in result.faces:
        ref = o.references[0].image if o.references else grey
        restored = o.restored if o.restored is not None else o.aligned
        if save_faces:
            folder = output.with_name(output.stem + "_faces")
            folder.mkdir(parents=True, exist_ok=True)
            for tag, img in (("input", o.aligned), ("restored", restored), ("reference", ref if o.references else None)):
                if img is not None:
                    save_image(folder / f"face{o.index:02d}_{tag}.png", img, plain)
        if compare:
            sheet = side_by_side([o.aligned, restored, ref])
            save_image(output.with_name(f"{output.stem}_compare_face{o.index:02d}.jpg"), sheet, plain)


@dataclass
class _Pending:
    """An image between decoding and its written output."""

    task: Task
    report: ImageReport
    started: float
    loaded: LoadedImage | None = None
    prepared: PreparedPhoto | None = None
    write: "Future[None] | None" = None


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, (ImageReadError, ImageWriteError)):
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, MemoryError):
        return "out of memory while processing this image"
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


class _Runner:
    """The state of one batch run: the current group of images and the writes in flight."""

    def __init__(self, pipeline: FacePipeline, options: BatchOptions, summary: BatchSummary,
                 on_done: Callable[[Task, ImageReport], None], on_face: Callable[[int, int], None] | None,
                 writer: ThreadPoolExecutor) -> None:
        self.pipeline, self.options, self.summary = pipeline, options, summary
        self.on_done, self.on_face, self.writer = on_done, on_face, writer
        self.group: list[_Pending] = []
        self.writing: list[_Pending] = []

    def close(self, item: _Pending, exc: BaseException | None = None) -> None:
        rep = item.report
        if exc is not None:
            rep.status, rep.output = "error", None
            rep.error = _error_text(exc)
            if isinstance(exc, ImageWriteError):
                self.summary.fatal = rep.error
            elif not isinstance(exc, (ImageReadError, MemoryError)):
                log.debug("failed on %s", item.task.source.path, exc_info=(type(exc), exc, exc.__traceback__))
        rep.seconds = time.perf_counter() - item.started
        self.summary.images.append(rep)
        self.on_done(item.task, rep)

    def add(self, item: _Pending) -> None:
        """Detect, align and select references now; restore when the group is full."""
        assert item.loaded is not None
        item.report.warnings.extend(item.loaded.warnings)
        item.prepared = self.pipeline.prepare(item.loaded.rgb, grayscale=item.loaded.grayscale)
        self.group.append(item)
        faces = sum(len(g.prepared.outcomes) for g in self.group if g.prepared is not None)
        if len(self.group) >= self.options.group_images or faces >= self.pipeline.options.batch_size:
            self.flush()

    def flush(self) -> None:
        """Restore the group's faces in one go, paste back, and hand the outputs to the writers."""
        group, self.group = self.group, []
        if not group:
            return
        self.pipeline.restore_faces([g.prepared for g in group if g.prepared is not None], self.on_face)
        for item in group:
            try:
                assert item.prepared is not None and item.loaded is not None
                result = self.pipeline.finish(item.prepared)
                item.report.warnings.extend(result.warnings)
                item.report.faces = [o.report() for o in result.faces]
                item.report.status = "ok" if result.faces else "no_faces"
                item.write = self.writer.submit(self._write, item, result)
                self.writing.append(item)
            except Exception as exc:  # noqa: BLE001 - one photo must not stop the album
                self.close(item, exc)
        self.collect(block=self.options.jobs <= 1)

    def _write(self, item: _Pending, result: PhotoResult) -> None:
        assert item.loaded is not None
        task = item.task
        save_image(task.output, result.image, item.loaded)
        if self.options.save_faces or self.options.compare:
            _save_face_files(result, task.output, item.loaded, self.options.save_faces, self.options.compare)
        item.report.output = str(task.output)

    def collect(self, block: bool) -> None:
        """Report finished writes, in input order; with ``block``, wait for all of them."""
        while self.writing and (block or self.writing[0].write.done()):  # type: ignore[union-attr]
            self.collect_one()
        # Bounded memory: never more finished photos waiting than there are writers.
        while len(self.writing) > max(1, self.options.jobs):
            self.collect_one()

    def collect_one(self) -> None:
        item = self.writing.pop(0)
        try:
            item.write.result()  # type: ignore[union-attr]
            self.close(item)
        except Exception as exc:  # noqa: BLE001
            self.close(item, exc)


def run_batch(
    tasks: list[Task],
    pipeline: FacePipeline,
    options: BatchOptions,
    on_start: Callable[[Task], None] = lambda t: None,
    on_done: Callable[[Task, ImageReport], None] = lambda t, r: None,
    on_face: Callable[[int, int], None] | None = None,
) -> BatchSummary:
    """Process every task; a bad input is reported and skipped, a full disk stops the run.

    Images are decoded ahead on threads, faces of ``options.group_images`` photos are
    restored together (worth it on a GPU), and outputs are encoded on ``options.jobs``
    writer threads; reports keep the input order.
    """
    summary = BatchSummary()
    # A run killed outright (SIGKILL, power cut) cannot remove its temporary files; the
    # next run does, for folders it writes to and only for processes no longer alive.
    for folder in sorted({t.output.parent for t in tasks}):
        if folder.is_dir():
            remove_stale_temp_files(folder)
    todo: list[Task] = []
    for t in tasks:
        if options.skip_existing and t.output.exists():
            rep = ImageReport(str(t.source.path), str(t.output), "skipped", None)
            summary.images.append(rep)
            on_done(t, rep)
        else:
            todo.append(t)
    with ThreadPoolExecutor(max_workers=max(1, options.jobs), thread_name_prefix="encode") as writer:
        runner = _Runner(pipeline, options, summary, on_done, on_face, writer)
        try:
            for task, fut in _prefetch(todo, options.jobs, options.prefetch, options.max_pixels):
                if summary.fatal:
                    break
                on_start(task)
                item = _Pending(task, ImageReport(str(task.source.path), None, "error"), time.perf_counter())
                try:
                    item.loaded = fut.result()
                    runner.add(item)
                except Exception as exc:  # noqa: BLE001 - one photo must not stop the album
                    runner.close(item, exc)
                runner.collect(block=False)
            if not summary.fatal:
                runner.flush()
        except KeyboardInterrupt:
            summary.interrupted = True
        finally:
            # Writes in flight finish (each is atomic): the report then matches the disk.
            runner.collect(block=True)
    return summary
