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
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from .discover import InputFile
from .imageio import ImageReadError, ImageWriteError, LoadedImage, read_image, remove_stale_temp_files, save_image
from .pipeline import FacePipeline, PhotoResult

log = logging.getLogger(__name__)

OUTPUT_SUFFIX = "_restored"


class UsageError(ValueError):
    """Bad combination of inputs and outputs (exit status 2)."""


class FatalOutputError(RuntimeError):
    """The output cannot be written at all (full disk, read-only folder): stop the run."""


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
            target = target.with_suffix(_ext_for(src.path))
        tasks.append(Task(src, target))
    else:
        if output is None:
            raise UsageError("several inputs or a folder: give an output folder with -o")
        if output.exists() and not output.is_dir():
            raise UsageError(f"-o {output}: exists and is not a folder")
        for src in inputs:
            rel = src.rel.parent / (src.rel.stem + suffix)
            tasks.append(Task(src, (output / rel).with_suffix(_ext_for(src.path))))
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


def _ext_for(path: Path) -> str:
    ext = path.suffix.lower()
    if ext in {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp"}:
        return ext
    return ".png"


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


def run_batch(
    tasks: list[Task],
    pipeline: FacePipeline,
    options: BatchOptions,
    on_start: Callable[[Task], None] = lambda t: None,
    on_done: Callable[[Task, ImageReport], None] = lambda t, r: None,
    on_face: Callable[[int, int], None] | None = None,
) -> BatchSummary:
    """Process every task; a bad input is reported and skipped, a full disk stops the run."""
    import time

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
    try:
        for task, fut in _prefetch(todo, options.jobs, options.prefetch, options.max_pixels):
            on_start(task)
            started = time.perf_counter()
            rep = ImageReport(str(task.source.path), None, "error")
            try:
                loaded = fut.result()
                rep.warnings.extend(loaded.warnings)
                result = pipeline.run(loaded.rgb, grayscale=loaded.grayscale, on_face=on_face)
                rep.warnings.extend(result.warnings)
                rep.faces = [o.report() for o in result.faces]
                task.output.parent.mkdir(parents=True, exist_ok=True)
                save_image(task.output, result.image, loaded)
                if options.save_faces or options.compare:
                    _save_face_files(result, task.output, loaded, options.save_faces, options.compare)
                rep.output = str(task.output)
                rep.status = "ok" if result.faces else "no_faces"
            except ImageReadError as exc:
                rep.error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            except ImageWriteError as exc:
                rep.error = str(exc).splitlines()[0]
                summary.fatal = rep.error
                rep.seconds = time.perf_counter() - started
                summary.images.append(rep)
                on_done(task, rep)
                break
            except MemoryError:
                rep.error = "out of memory while processing this image"
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:  # noqa: BLE001 - one photo must not stop the album
                log.debug("failed on %s", task.source.path, exc_info=True)
                rep.error = f"{type(exc).__name__}: {exc}".splitlines()[0]
            rep.seconds = time.perf_counter() - started
            summary.images.append(rep)
            on_done(task, rep)
    except KeyboardInterrupt:
        summary.interrupted = True
    return summary
