"""``refrestore fix``: restore every face in photos, guided by the user's gallery."""
from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .common import fail, is_terminal, setup_logging

log = logging.getLogger("refrestore")


def register(app: typer.Typer) -> None:
    app.command("fix", no_args_is_help=True)(fix)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def fix(
    inputs: list[Path] = typer.Argument(..., help="Photos or folders of photos to restore."),
    refs: list[Path] = typer.Option([], "--refs", help="Gallery folder or photo of good references (repeatable)."),
    ref: Optional[Path] = typer.Option(None, "--ref", help="Force this photo as the reference (single-face photos)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Output file (one input) or folder."),
    aligned: bool = typer.Option(False, "--aligned", help="Inputs are already aligned face crops."),
    model: str = typer.Option("auto", "--model", help="Restorer name, or auto."),
    detector: str = typer.Option("auto", "--detector", help="auto, retinaface, retinaface_resnet50, retinaface_mobile0.25 or dlib."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    upscale: int = typer.Option(1, "--upscale", min=1, max=8, help="Upscale the whole photo by this factor."),
    strength: float = typer.Option(1.0, "--strength", min=0.0, max=1.0, help="Blend between input (0) and restored (1)."),
    only_center_face: bool = typer.Option(False, "--only-center-face", help="Restore only the face nearest the centre."),
    save_faces: bool = typer.Option(False, "--save-faces", help="Also write each face's input, restored and reference crops."),
    compare: bool = typer.Option(False, "--compare", help="Also write input | restored | reference per face."),
    json_report: Optional[Path] = typer.Option(None, "--json", help="Write a machine-readable report here."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Walk sub-folders and mirror them under the output."),
    skip_existing: bool = typer.Option(True, "--skip-existing/--overwrite", help="Skip inputs whose output exists (default), or redo them."),
    offline: bool = typer.Option(False, "--offline", help="Never use the network (also REFRESTORE_OFFLINE=1)."),
    download: bool = typer.Option(False, "--download", help="Download the chosen model's weights first."),
    top_k: int = typer.Option(3, "--top-k", min=1, max=16, help="References per face."),
    jobs: int = typer.Option(2, "--jobs", min=1, max=64, help="Threads for decoding images."),
    prefetch: int = typer.Option(2, "--prefetch", min=0, max=64, help="Images decoded ahead (0: none)."),
    max_pixels: Optional[int] = typer.Option(None, "--max-pixels", help="Refuse images larger than this many pixels."),
    weights_dir: Optional[Path] = typer.Option(None, "--weights-dir", help="Weights folder for this run."),
    manifest: Optional[Path] = typer.Option(None, "--manifest", help="Use another weights manifest."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and debug logs."),
) -> None:
    """Restore the faces in photos and paste them back."""
    setup_logging(debug)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        code = _fix(**locals())
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        raise fail("interrupted", 130)
    except Exception as exc:  # noqa: BLE001 - one line unless --debug
        if debug:
            raise
        raise fail(f"{exc}".splitlines()[0] if str(exc) else type(exc).__name__)
    raise typer.Exit(code)


def _fix(**a: object) -> int:
    from ..batch import BatchOptions, ImageReport, UsageError, plan_outputs, write_report
    from ..detection import DetectorError
    from ..devices import DeviceError, pick_device
    from ..discover import find_inputs
    from ..paths import offline_from_env
    from ..pipeline import FixOptions
    from ..restorers.registry import RestorerError, choose_restorer
    from ..weights import WeightsError, WeightStore, load_manifest

    inputs: list[Path] = a["inputs"]  # type: ignore[assignment]
    out_console = Console(highlight=False, soft_wrap=True)
    err_console = Console(stderr=True, highlight=False, soft_wrap=True)
    offline = bool(a["offline"]) or offline_from_env()
    try:
        pick_device(str(a["device"]))  # a bad --device is a usage error before any work
        store = WeightStore(a["weights_dir"], load_manifest(a["manifest"]) if a["manifest"] else None)  # type: ignore[arg-type]
        choice = choose_restorer(str(a["model"]), store) if not a["download"] else None
    except (DeviceError, RestorerError, WeightsError) as exc:
        raise fail(str(exc), 2)
    if a["download"]:
        if offline:
            raise fail("--download and --offline together: nothing can be fetched offline", 2)
        from ..weights import download

        name = str(a["model"])
        try:
            if name == "auto":
                entries = [e.name for e in store.manifest.default_entries()]
            else:
                entries = [e.name for e in store.manifest.for_model(name)]
            from .weights_cmd import DownloadProgress

            with DownloadProgress(err_console) as progress:
                download(entries, store, offline=offline, progress=progress)
            choice = choose_restorer(name, store)
        except (RestorerError, WeightsError) as exc:
            raise fail(str(exc), 1)
    assert choice is not None

    from ..imageio import max_pixels_from_env

    try:
        max_pixels = a["max_pixels"] if a["max_pixels"] is not None else max_pixels_from_env()
    except ValueError as exc:
        raise fail(str(exc), 2)
    if max_pixels is not None and int(max_pixels) < 256:  # type: ignore[arg-type]
        raise fail(f"--max-pixels {max_pixels}: too small to hold a photo", 2)
    exclude = [a["output"]] if a["output"] is not None else []
    found, problems = find_inputs(inputs, recursive=bool(a["recursive"]), exclude=exclude)  # type: ignore[arg-type]
    single = len(inputs) == 1 and inputs[0].is_file()
    output: Path | None = a["output"]  # type: ignore[assignment]
    if output is not None:
        for src in inputs:
            if src.is_dir() and os.path.realpath(src) == os.path.realpath(output):
                raise fail(f"the output folder {output} is the input folder: choose another -o", 2)
    try:
        tasks = plan_outputs(found, output, single_file=single)
    except UsageError as exc:
        raise fail(str(exc), 2)

    if choice.better is not None:
        err_console.print(
            f"note: using {choice.spec.info.name}; 'refrestore download-weights {choice.better.info.name}' adds a better model"
        )
    from ..api import build_pipeline

    try:
        built = build_pipeline(
            refs=a["refs"],  # type: ignore[arg-type]
            ref=a["ref"],  # type: ignore[arg-type]
            model=choice.spec.info.name,
            detector=str(a["detector"]),
            device=str(a["device"]),
            options=FixOptions(upscale=int(a["upscale"]), strength=float(a["strength"]), only_center_face=bool(a["only_center_face"]), aligned=bool(a["aligned"])),  # type: ignore[arg-type]
            top_k=int(a["top_k"]),  # type: ignore[arg-type]
            store=store,
        )
    except (DetectorError, FileNotFoundError) as exc:
        raise fail(str(exc), 2)
    except (WeightsError, RestorerError) as exc:
        raise fail(str(exc), 1)
    for note in built.notes:
        err_console.print(f"warning: {note}")
    pipeline = built.pipeline
    det, restorer = pipeline.detector, pipeline.restorer
    options = BatchOptions(
        skip_existing=bool(a["skip_existing"]),
        save_faces=bool(a["save_faces"]),
        compare=bool(a["compare"]),
        jobs=int(a["jobs"]),  # type: ignore[arg-type]
        prefetch=int(a["prefetch"]),  # type: ignore[arg-type]
        max_pixels=int(max_pixels),  # type: ignore[arg-type]
        # On a GPU the faces of several photos share one batch; on the CPU there is nothing to gain.
        group_images=4 if restorer.device.type == "cuda" else 1,
    )
    pre = [ImageReport(str(p), None, "error", reason) for p, reason in problems]
    summary = _run_with_progress(tasks, pipeline, options, out_console, err_console)
    summary.images[:0] = pre
    if a["json_report"]:
        write_report(
            a["json_report"],  # type: ignore[arg-type]
            summary,
            {"restorer": restorer.info.name, "detector": getattr(det, "name", None), "device": str(restorer.device)},
        )
    _print_summary(summary, out_console)
    if summary.fatal:
        err_console.print(f"[bold red]error:[/] {summary.fatal}; stopped")
        return 1
    if summary.interrupted:
        err_console.print("interrupted: finished outputs are complete; rerun to continue")
        return 130
    return 1 if summary.failed else 0


def _run_with_progress(tasks, pipeline, options, out_console: Console, err_console: Console):  # type: ignore[no-untyped-def]
    from ..batch import run_batch

    if not is_terminal():
        def done(task, rep):  # type: ignore[no-untyped-def]
            detail = rep.error or (f"{len(rep.faces)} face(s)" if rep.status != "skipped" else "output exists")
            out_console.print(f"{rep.status:<8} {task.source.path} -> {rep.output or '-'} ({detail})")

        return run_batch(tasks, pipeline, options, on_done=done)
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.fields[name]}"), console=err_console, transient=False,
    ) as progress:
        images = progress.add_task("images", total=len(tasks), name="")
        faces = progress.add_task("faces", total=None, name="")

        def start(task):  # type: ignore[no-untyped-def]
            progress.update(images, name=task.source.path.name)
            progress.reset(faces, total=None)

        def face(i: int, n: int) -> None:
            progress.update(faces, total=n, completed=i + 1)

        def done(task, rep):  # type: ignore[no-untyped-def]
            progress.advance(images)

        return run_batch(tasks, pipeline, options, on_start=start, on_done=done, on_face=face)


def _print_summary(summary, console: Console) -> None:  # type: ignore[no-untyped-def]
    counts = summary.counts()
    if is_terminal():
        table = Table(title="refrestore fix")
        for col in ("done", "skipped", "no faces", "failed"):
            table.add_column(col, justify="right")
        table.add_row(str(counts["ok"]), str(counts["skipped"]), str(counts["no_faces"]), str(counts["error"]))
        console.print(table)
    else:
        console.print(f"done {counts['ok']}, skipped {counts['skipped']}, no faces {counts['no_faces']}, failed {counts['error']}")
    for reason, n in summary.failure_reasons().most_common():
        console.print(f"  failed ({n}): {reason}")


