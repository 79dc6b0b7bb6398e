"""``refrestore fix --engine ray``: the same command, its photos restored on a Ray cluster.

Turns the request into the library's typed options and calls ``distributed.fix_tasks``;
the report and the summary are the local engine's.
"""
from __future__ import annotations

import logging
from typing import Any

from rich.console import Console

from .common import Verbosity, fail, is_terminal


def run_ray_fix(req: Any, tasks: list[Any], problems: list[tuple[Any, str]], store: Any, choice: Any,
                fix_options: Any, max_pixels: int | None, out_console: Console, err_console: Console) -> int:
    """Run planned ``tasks`` on Ray; the exit status as ``run_fix`` gives it."""
    from ..batch import BatchOptions, ImageReport
    from ..detection import DetectorError
    from ..engines.ray import PipelineSpec, RayEngineError, RayNotInstalled, RayOptions, import_ray
    from ..restorers.registry import RestorerError
    from ..weights import WeightsError

    try:
        import_ray()
    except RayNotInstalled as exc:
        raise fail(str(exc), 2)
    if not req.debug:
        # Ray's own INFO lines (execution plans, log folders) would bury the progress bar.
        logging.getLogger("ray").setLevel(logging.WARNING)
        logging.getLogger("ray.data").setLevel(logging.ERROR)
    from ..distributed import fix_tasks

    spec = PipelineSpec(
        model=req.model, detector=req.detector, device=req.device, options=fix_options,
        top_k=req.top_k, weights_dir=str(store.directory), manifest=str(req.manifest) if req.manifest else None,
        with_detector=not req.aligned or bool(req.refs) or req.ref is not None or req.person is not None,
    )
    options = BatchOptions(skip_existing=req.skip_existing, save_faces=req.save_faces, compare=req.compare,
                           jobs=req.jobs, prefetch=req.prefetch, max_pixels=max_pixels)
    cluster = RayOptions(address=req.ray_address, workers=req.workers, gpus_per_worker=req.gpus_per_worker)
    notes: list[str] = []
    on_done, progress = _progress(len(tasks), out_console, err_console, req.verbosity)
    try:
        with progress:
            run = fix_tasks(tasks, spec, refs=req.refs, ref=req.ref, person=req.person, options=options, cluster=cluster,
                            on_done=on_done, notes=notes)
    except (DetectorError, FileNotFoundError) as exc:
        raise fail(str(exc), 2)
    except (WeightsError, RestorerError, RayEngineError) as exc:
        raise fail(str(exc), 1)
    for note in notes:
        err_console.print(f"warning: {note}", markup=False)
    summary = run.summary
    summary.images[:0] = [ImageReport(str(p), None, "error", reason) for p, reason in problems]
    meta = {"restorer": run.restorer or choice.spec.info.name, "detector": run.detector, "device": run.device}
    from .fix_finish import _gallery_line, finish_run

    gallery_line = _gallery_line(run.gallery)
    if gallery_line:
        meta["gallery"] = gallery_line
        meta["identity"] = getattr(run.gallery, "identity_name", None)
        if not req.quiet:
            err_console.print(gallery_line, markup=False)

    return finish_run(req, summary, meta, out_console, err_console)


class _NoProgress:
    def __enter__(self) -> "_NoProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _progress(total: int, out_console: Console, err_console: Console, verbosity: Verbosity) -> tuple[Any, Any]:
    """(on_done callback, context manager): a bar on a terminal, one line per image otherwise."""
    from .outcome import print_image_line, print_photo_faces

    if verbosity <= Verbosity.QUIET:
        return (lambda t, r: None), _NoProgress()
    if not is_terminal():
        def line(task: Any, rep: Any) -> None:
            print_image_line(task, rep, out_console, err_console)

        return line, _NoProgress()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("[bold]images (ray)"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("{task.fields[name]}", markup=False), console=err_console, transient=False)
    images = bar.add_task("images", total=total, name="")

    def advance(task: Any, rep: Any) -> None:
        bar.update(images, advance=1, name=str(task.source.path).rsplit("/", 1)[-1])  # a Path or a URI
        print_photo_faces(task, rep, bar.console)

    return advance, bar
