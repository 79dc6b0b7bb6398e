"""The steps every engine takes for one photo: decode, prepare, restore, paste back, write.

The local runner and the Ray workers both go through these functions (the local runner
only overlaps them on threads), which is what makes their outputs byte-identical.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from ..imageio import ImageReadError, ImageWriteError, LoadedImage, read_image, save_output
from ..pipeline import FacePipeline, PhotoResult, PreparedPhoto
from .earlier import remember
from .reports import ImageReport, error_text
from .tasks import Task

log = logging.getLogger(__name__)


@dataclass
class BatchOptions:
    skip_existing: bool = True
    save_faces: bool = False
    compare: bool = False
    jobs: int = 2
    prefetch: int = 2
    max_pixels: int | None = None
    group_images: int = 1  # photos whose faces are restored in one batch (4 on a GPU)


@dataclass
class PhotoJob:
    """An image between decoding and its written output."""

    task: Task
    report: ImageReport
    started: float = field(default_factory=time.perf_counter)
    loaded: LoadedImage | None = None
    prepared: PreparedPhoto | None = None
    result: PhotoResult | None = None

    @classmethod
    def start(cls, task: Task) -> "PhotoJob":
        return cls(task, ImageReport(str(task.source.path), None, "error", warnings=[task.note] if task.note else []))


def load(task: Task, options: BatchOptions, upscale: int = 1) -> LoadedImage:
    return read_image(task.source.path, max_pixels=options.max_pixels, upscale=upscale)


def prepare(job: PhotoJob, pipeline: FacePipeline) -> None:
    """Detect, align and choose references."""
    assert job.loaded is not None
    job.report.warnings.extend(job.loaded.warnings)
    job.prepared = pipeline.prepare(job.loaded.rgb, grayscale=job.loaded.grayscale)


def finish(job: PhotoJob, pipeline: FacePipeline) -> None:
    """Paste back the restored faces (after ``pipeline.restore_faces``) and fill in the report."""
    assert job.prepared is not None
    result = pipeline.finish(job.prepared)
    job.report.warnings.extend(result.warnings)
    job.report.faces = [o.report() for o in result.faces]
    job.report.status = "ok" if result.faces else "no_faces"
    job.result = result


def write(job: PhotoJob, options: BatchOptions) -> None:
    """The face crops and comparison sheets when asked, then the output (each atomically).

    The output goes last: a rerun skips an image whose output exists, so it must only exist
    once everything else of that image is complete (a SIGKILL in between leaves a redo)."""
    assert job.loaded is not None and job.result is not None
    task = job.task
    if options.save_faces or options.compare:
        from .facefiles import _save_face_files

        maps = _save_face_files(job.result, task.output, job.loaded, options.save_faces, options.compare)
        for face in job.report.faces:  # the HTML report shows the confidence maps written
            if face.get("index") in maps and face.get("detail"):
                face["detail"]["confidence_map"] = maps[face["index"]]
    # A photo none of whose faces needed anything is the input itself: its own bytes are
    # written (no re-encoding loss); otherwise a JPEG keeps the input's tables.
    job.report.copied = save_output(task.output, job.result.image, job.loaded)
    if job.report.copied:
        log.info("%s: nothing changed; the input was copied as it is", task.source.path)
    job.report.output = str(task.output)
    remember(task.output, job.report)  # a rerun that skips this photo reports it again


def fail(job: PhotoJob, exc: BaseException) -> None:
    rep = job.report
    rep.status, rep.output = "error", None
    rep.error = error_text(exc)
    if not isinstance(exc, (ImageReadError, ImageWriteError, MemoryError)):
        log.debug("failed on %s", job.task.source.path, exc_info=(type(exc), exc, exc.__traceback__))


def close(job: PhotoJob) -> ImageReport:
    job.report.seconds = time.perf_counter() - job.started
    job.loaded = job.prepared = job.result = None  # free the pixels early
    return job.report


def process_photo(task: Task, pipeline: FacePipeline, options: BatchOptions) -> ImageReport:
    """One photo, start to finish, without threads; a failure is reported, never raised
    (an ``ImageWriteError`` with ``stops_run`` in the report's error, which callers treat as fatal)."""
    job = PhotoJob.start(task)
    try:
        opts = pipeline.options
        job.loaded = load(task, options, 1 if getattr(opts, "aligned", False) else int(getattr(opts, "upscale", 1)))
        prepare(job, pipeline)
        assert job.prepared is not None
        pipeline.restore_faces([job.prepared])
        finish(job, pipeline)
        write(job, options)
    except Exception as exc:  # noqa: BLE001 - one photo must not stop the album
        fail(job, exc)
    return close(job)
