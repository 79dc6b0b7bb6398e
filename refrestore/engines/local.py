"""The local engine: one process, decoding ahead on threads and encoding on others.

Inputs are decoded ahead of time on worker threads (a small bounded queue), faces are
restored on the calling thread, and every output is written atomically, so an interrupted
run leaves only complete files and a rerun skips them.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterator

from ..fileio import remove_stale_temp_files
from ..imageio import ImageWriteError, LoadedImage, read_image
from ..pipeline import FacePipeline
from . import photo
from .photo import BatchOptions, PhotoJob
from .reports import BatchSummary, ImageReport
from .tasks import Task, split_finished


def _prefetch(tasks: list[Task], workers: int, depth: int, max_pixels: int | None,
              upscale: int = 1) -> Iterator[tuple[Task, "Future[LoadedImage]"]]:
    """Yield tasks with their decode futures, at most ``depth`` decoded ahead."""
    if depth <= 0:
        for t in tasks:
            fut: Future[LoadedImage] = Future()
            try:
                fut.set_result(read_image(t.source.path, max_pixels=max_pixels, upscale=upscale))
            except BaseException as exc:  # noqa: BLE001 - delivered to the consumer
                fut.set_exception(exc)
            yield t, fut
        return
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="decode") as pool:
        pending: list[tuple[Task, Future[LoadedImage]]] = []
        it = iter(tasks)
        try:
            for t in it:
                pending.append((t, pool.submit(read_image, t.source.path, max_pixels, upscale)))
                if len(pending) > depth:
                    yield pending.pop(0)
            while pending:
                yield pending.pop(0)
        finally:
            for _, fut in pending:
                fut.cancel()


def _upscale_of(pipeline: FacePipeline) -> int:
    """The whole-photo upscale (1 for aligned crops, whose output is the crop's size)."""
    opts = pipeline.options
    return 1 if getattr(opts, "aligned", False) else int(getattr(opts, "upscale", 1))


class _Runner:
    """The state of one run: the current group of images and the writes in flight."""

    def __init__(self, pipeline: FacePipeline, options: BatchOptions, summary: BatchSummary,
                 on_done: Callable[[Task, ImageReport], None], on_face: Callable[[int, int], None] | None,
                 writer: ThreadPoolExecutor) -> None:
        self.pipeline, self.options, self.summary = pipeline, options, summary
        self.on_done, self.on_face, self.writer = on_done, on_face, writer
        self.group: list[PhotoJob] = []
        self.writing: list[tuple[PhotoJob, Future[None]]] = []

    def close(self, job: PhotoJob, exc: BaseException | None = None) -> None:
        if exc is not None:
            photo.fail(job, exc)
            if isinstance(exc, ImageWriteError) and exc.stops_run:
                self.summary.fatal = job.report.error
        rep = photo.close(job)
        self.summary.images.append(rep)
        self.on_done(job.task, rep)

    def add(self, job: PhotoJob) -> None:
        """Detect, align and select references now; restore when the group is full."""
        photo.prepare(job, self.pipeline)
        self.group.append(job)
        faces = sum(len(g.prepared.outcomes) for g in self.group if g.prepared is not None)
        if len(self.group) >= self.options.group_images or faces >= self.pipeline.options.batch_size:
            self.flush()

    def flush(self) -> None:
        """Restore the group's faces in one go, paste back, and hand the outputs to the writers."""
        group, self.group = self.group, []
        if not group:
            return
        self.pipeline.restore_faces([g.prepared for g in group if g.prepared is not None], self.on_face)
        for job in group:
            try:
                photo.finish(job, self.pipeline)
                self.writing.append((job, self.writer.submit(photo.write, job, self.options)))
            except Exception as exc:  # noqa: BLE001 - one photo must not stop the album
                self.close(job, exc)
        self.collect(block=self.options.jobs <= 1)

    def collect(self, block: bool) -> None:
        """Report finished writes, in input order; with ``block``, wait for all of them."""
        while self.writing and (block or self.writing[0][1].done()):
            self.collect_one()
        # Bounded memory: never more finished photos waiting than there are writers.
        while len(self.writing) > max(1, self.options.jobs):
            self.collect_one()

    def collect_one(self) -> None:
        job, fut = self.writing.pop(0)
        try:
            fut.result()
            self.close(job)
        except Exception as exc:  # noqa: BLE001
            self.close(job, exc)


def run_local(
    tasks: list[Task],
    pipeline: FacePipeline,
    options: BatchOptions,
    on_start: Callable[[Task], None] = lambda t: None,
    on_done: Callable[[Task, ImageReport], None] = lambda t, r: None,
    on_face: Callable[[int, int], None] | None = None,
    *,
    clean_temp: bool = True,
) -> BatchSummary:
    """Process every task; a bad input is reported and skipped, a full disk stops the run.

    Images are decoded ahead on threads, faces of ``options.group_images`` photos are
    restored together (worth it on a GPU), and outputs are encoded on ``options.jobs``
    writer threads. The report lists skipped outputs first, then the rest in input order.
    ``clean_temp=False`` leaves other processes' temporary files alone (a Ray worker cannot
    tell whether a process on another node is alive).
    """
    summary = BatchSummary()
    if clean_temp:
        # A run killed outright (SIGKILL, power cut) cannot remove its temporary files; the
        # next run does, for folders it writes to and only for processes no longer alive.
        folders = {t.output.parent for t in tasks}
        if options.save_faces:
            folders |= {t.output.with_name(t.output.stem + "_faces") for t in tasks}
        for folder in sorted(folders):
            if folder.is_dir():
                remove_stale_temp_files(folder)
    todo, finished = split_finished(tasks, options.skip_existing)
    for t, rep in finished:
        summary.images.append(rep)
        on_done(t, rep)
    with ThreadPoolExecutor(max_workers=max(1, options.jobs), thread_name_prefix="encode") as writer:
        runner = _Runner(pipeline, options, summary, on_done, on_face, writer)
        try:
            for task, fut in _prefetch(todo, options.jobs, options.prefetch, options.max_pixels,
                                       _upscale_of(pipeline)):
                if summary.fatal:
                    break
                on_start(task)
                job = PhotoJob.start(task)
                try:
                    job.loaded = fut.result()
                    runner.add(job)
                except Exception as exc:  # noqa: BLE001 - one photo must not stop the album
                    runner.close(job, exc)
                runner.collect(block=False)
            if not summary.fatal:
                runner.flush()
        except KeyboardInterrupt:
            summary.interrupted = True
        finally:
            # Writes in flight finish (each is atomic): the report then matches the disk.
            runner.collect(block=True)
    # A photo that fails while earlier ones are still being written reports first; the
    # report lists them in input order all the same (as the Ray engine does).
    order = {str(t.source.path): i for i, t in enumerate(todo)}
    done = summary.images[len(finished):]
    summary.images[len(finished):] = sorted(done, key=lambda r: order.get(r.input, len(order)))
    return summary
