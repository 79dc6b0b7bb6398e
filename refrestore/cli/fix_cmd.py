"""``refrestore fix``: restore every face in photos, guided by the user's gallery.

The command line becomes one typed :class:`FixRequest`, built once in :func:`fix` and passed
down; the work itself is the library's (``api.build_pipeline``, ``batch.run_batch``).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer
from rich.console import Console

from .common import (PlainConsole, PlainHelpCommand, Verbosity, consoles, fail, is_terminal, setup_logging,
                     shown, verbosity_from)
from .progress import GalleryProgress
from .fix_finish import _gallery_line, finish_run
from .fix_request import FixRequest
from .outcome import print_image_line, print_photo_faces

if TYPE_CHECKING:
    from ..batch import BatchOptions, BatchSummary, ImageReport, Task
    from ..pipeline import FacePipeline

log = logging.getLogger("refrestore")

# Kept in step with restorers.registry.restorer_names() by a test; listed here so that
# `fix --help` does not import torch to name them.
MODEL_HELP = (
    "Restorer: auto (the best one present), refnet-small (uses references), gfpgan-v1.4, "
    "restoreformer, codeformer (non-commercial, only when named) or resample (no network)."
)
FIDELITY_HELP = "0 = most detail, 1 = closest to the input (default: the model's own; the reference detail stage's 0.5)."


def register(app: typer.Typer) -> None:
    app.command("fix", no_args_is_help=True, cls=PlainHelpCommand)(fix)


def _raise_interrupt(signum: int, frame: object) -> None:
    # The first SIGTERM stops the run; later ones must not cut short the writes in flight
    # and the report, which are what make the stop clean.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt



def fix(
    # str, not Path: a Path would fold "s3://bucket" into "s3:/bucket".
    inputs: list[str] = typer.Argument(..., metavar="INPUT...", help="Photos or folders of photos to restore (with --engine ray also s3://, gs://, file:// URIs)."),
    refs: list[Path] = typer.Option([], "--refs", metavar="DIR_OR_FILE", help="Gallery folder or photo of good references (repeatable)."),
    ref: Optional[Path] = typer.Option(None, "--ref", metavar="FILE", help="Force this photo as the reference (single-face photos)."),
    person: Optional[Path] = typer.Option(None, "--person", metavar="DIR", help="Photos of the one person these photos show: used unless a face is clearly someone else (instead of --refs)."),
    output: Optional[str] = typer.Option(None, "-o", "--output", metavar="PATH", help="Output file (one input) or folder (a trailing / says folder)."),
    aligned: bool = typer.Option(False, "--aligned", help="Inputs are already aligned face crops."),
    model: str = typer.Option("auto", "--model", metavar="NAME", help=MODEL_HELP),
    detector: str = typer.Option("auto", "--detector", metavar="NAME", help="auto, retinaface, retinaface_resnet50, retinaface_mobile0.25 or dlib."),
    device: str = typer.Option("auto", "--device", metavar="DEVICE", help="auto, cpu, cuda, cuda:N or mps."),
    upscale: int = typer.Option(1, "--upscale", min=1, max=8, metavar="N", help="Upscale the whole photo by this factor."),
    strength: float = typer.Option(1.0, "--strength", min=0.0, max=1.0, metavar="F", help="Scales how much of the restored face each face gets (the tool picks that per face from its damage): 1 = as picked, 0.5 = half of it, 0 = faces left as they were."),
    fidelity: Optional[float] = typer.Option(None, "--fidelity", min=0.0, max=1.0, metavar="F", help=FIDELITY_HELP),
    reference_detail: bool = typer.Option(True, "--detail/--no-detail", help="Add the references' own fine detail where they agree (default), or not."),
    only_center_face: bool = typer.Option(False, "--only-center-face", help="Restore only the face nearest the centre."),
    save_faces: bool = typer.Option(False, "--save-faces", help="Also write each face's input, restored and reference crops."),
    compare: bool = typer.Option(False, "--compare", help="Also write input | restored | reference per face."),
    json_report: Optional[Path] = typer.Option(None, "--json", metavar="FILE", help="Write a machine-readable report here."),
    html_report: Optional[Path] = typer.Option(None, "--html", metavar="FILE", help="Write a report to look at in a browser here (images beside it)."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Walk sub-folders and mirror them under the output."),
    skip_existing: bool = typer.Option(True, "--skip-existing/--overwrite", help="Skip inputs whose output exists (default), or redo them."),
    offline: bool = typer.Option(False, "--offline", help="Never use the network (also REFRESTORE_OFFLINE=1)."),
    download: bool = typer.Option(False, "--download", help="Download the chosen model's weights first."),
    top_k: int = typer.Option(3, "--top-k", min=1, max=16, metavar="K", help="References per face."),
    jobs: int = typer.Option(2, "--jobs", min=1, max=64, metavar="N", help="Threads for decoding images."),
    prefetch: int = typer.Option(2, "--prefetch", min=0, max=64, metavar="N", help="Images decoded ahead (0: none)."),
    max_pixels: Optional[int] = typer.Option(None, "--max-pixels", metavar="N", help="Refuse images larger than this many pixels."),
    weights_dir: Optional[Path] = typer.Option(None, "--weights-dir", metavar="DIR", help="Weights folder for this run."),
    manifest: Optional[Path] = typer.Option(None, "--manifest", metavar="FILE", help="Use another weights manifest."),
    engine: str = typer.Option("local", "--engine", metavar="local|ray", help="Run here (local) or on a Ray cluster (ray; pip install 'refrestore\\[ray]')."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", metavar="ADDR", help="Ray cluster to use (default: RAY_ADDRESS, a running local one, or a new local one)."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, metavar="N", help="Ray workers (default: as many as the cluster's CPUs or GPUs allow)."),
    gpus_per_worker: float = typer.Option(0.0, "--gpus-per-worker", min=0.0, metavar="F", help="GPUs per Ray worker (fractions share a GPU)."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Only errors and the summary."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Also log what each step does."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and debug logs."),
) -> None:
    """Restore the faces in photos and paste them back."""
    from ..engines.remote import is_uri  # no torch: a machine's limits are met inside run_fix

    output_uri = output if output and is_uri(output) else None
    request = FixRequest(
        inputs=[Path(p) for p in inputs if not is_uri(p)], uris=tuple(p for p in inputs if is_uri(p)),
        output_uri=output_uri, refs=list(refs), ref=ref, person=person, output=Path(output) if output and not output_uri else None,
        output_is_folder=bool(output) and output.endswith(("/", os.sep)), aligned=aligned, model=model,
        detector=detector, device=device, upscale=upscale, strength=strength, fidelity=fidelity,
        reference_detail=reference_detail, only_center_face=only_center_face, save_faces=save_faces, compare=compare,
        json_report=json_report, html_report=html_report, recursive=recursive,
        skip_existing=skip_existing, offline=offline, download=download, top_k=top_k, jobs=jobs,
        prefetch=prefetch, max_pixels=max_pixels, weights_dir=weights_dir, manifest=manifest,
        verbosity=verbosity_from(quiet, verbose, debug),
        engine=engine, ray_address=ray_address, workers=workers, gpus_per_worker=gpus_per_worker,
    )
    setup_logging(request.debug, request.verbosity)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        code = run_fix(request)
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        raise fail("interrupted", 130)
    except (ImportError, MemoryError):
        raise  # a library that cannot load (a memory limit): cli.main says so in one line
    except Exception as exc:  # noqa: BLE001 - one line unless --debug
        if request.debug:
            raise
        raise fail(f"{exc}".splitlines()[0] if str(exc) else type(exc).__name__)
    raise typer.Exit(code)


def _fix_options(req: FixRequest) -> Any:
    from ..pipeline import FixOptions

    options = FixOptions(upscale=req.upscale, strength=req.strength, only_center_face=req.only_center_face, aligned=req.aligned,
                         reference_detail=req.reference_detail)
    if req.fidelity is not None:
        import dataclasses

        options = dataclasses.replace(options, fidelity=req.fidelity)
    return options


def _choose(req: FixRequest, offline: bool, err_console: Console) -> tuple[Any, Any]:
    """(weights store, restorer choice), downloading first with --download."""
    from ..devices import DeviceError, pick_device
    from ..restorers.registry import RestorerError, choose_restorer
    from ..weights import WeightsError, WeightStore, load_manifest

    try:
        pick_device(req.device)  # a bad --device is a usage error before any work
        store = WeightStore(req.weights_dir, load_manifest(req.manifest) if req.manifest else None)
        choice = choose_restorer(req.model, store) if not req.download else None
    except (DeviceError, RestorerError, WeightsError) as exc:
        raise fail(str(exc), 2)
    if not req.download:
        return store, choice
    if offline:
        raise fail("--download and --offline together: nothing can be fetched offline", 2)
    from ..weights import download

    try:
        if req.model == "auto":
            entries = [e.name for e in store.manifest.default_entries()]
        else:
            entries = [e.name for e in store.manifest.for_model(req.model)]
        from .weights_cmd import DownloadProgress

        with DownloadProgress(err_console) as progress:
            download(entries, store, offline=offline, progress=progress)
        return store, choose_restorer(req.model, store)
    except (RestorerError, WeightsError) as exc:
        failures = getattr(exc, "failures", None) or [str(exc)]  # one line per file that failed
        for line in failures[:-1]:
            fail(line)
        raise fail(failures[-1], 1)


def _run_uris(req: FixRequest, store: Any, choice: Any, max_pixels: int | None, out_console: Console,
              err_console: Console) -> int:
    """Inputs or output on another filesystem (pyarrow: s3://, gs://, file://): planned and run
    by the Ray engine, which stages each photo on its worker."""
    if req.engine != "ray":
        raise fail("inputs or outputs given as URIs (s3://, gs://, file://) need --engine ray", 2)
    if req.output is None and req.output_uri is None:
        raise fail("URIs as inputs need an output folder: give -o", 2)
    from ..batch import UsageError
    from ..distributed import plan_dataset
    from .fix_ray import run_ray_fix

    try:
        tasks, pre = plan_dataset([*map(str, req.inputs), *req.uris], req.output_uri or str(req.output),
                                  recursive=req.recursive)
    except (UsageError, OSError, ValueError) as exc:
        raise fail(str(exc), 2)
    if not tasks:
        raise fail("; ".join(f"{r.input}: {r.error}" for r in pre[:5]) or "no photos found", 2)
    problems = [(r.input, r.error or "error") for r in pre]
    return run_ray_fix(req, tasks, problems, store, choice, _fix_options(req), max_pixels, out_console, err_console)


def run_fix(req: FixRequest) -> int:
    """The whole command: check the request, build the pipeline, run the album, report."""
    from ..engines.tasks import UsageError, plan_outputs
    from ..fileio import stream_fd
    from ..paths import offline_from_env

    # markup off and names escaped: what is printed holds the user's file names; a broken
    # stdout or stderr stops the messages, never the work (cli.common.PlainConsole)
    out_console, err_console = consoles()
    if req.json_report is not None and stream_fd(req.json_report) == 1:
        out_console = PlainConsole(stderr=True)  # stdout carries the report: messages go to stderr
    offline = req.offline or offline_from_env()
    _refuse_remote_offline(req, offline)
    _refuse_misspelt(req)
    from ..imageio import max_pixels_from_env

    try:
        max_pixels = req.max_pixels if req.max_pixels is not None else max_pixels_from_env()
    except ValueError as exc:
        raise fail(str(exc), 2)
    if max_pixels is not None and max_pixels < 256:
        raise fail(f"--max-pixels {max_pixels}: too small to hold a photo", 2)
    if req.person is not None:
        if req.refs or req.ref is not None:
            raise fail("--person is the whole gallery (the one person these photos show): give it without --refs or --ref", 2)
        if not req.person.is_dir():
            raise fail(f"--person {req.person}: no such folder", 2)
    from ..engines.clash import report_path_problem

    for report_path, flag in ((req.json_report, "--json"), (req.html_report, "--html")):
        problem = report_path_problem(report_path, html=flag == "--html") if report_path is not None else None
        if problem:
            raise fail(f"{flag} {report_path}: {problem}", 2)
    if req.uris or req.output_uri:
        req, _locks = _gate(req, [])
        store, choice = _choose(req, offline, err_console)
        return _run_uris(req, store, choice, max_pixels, out_console, err_console)
    if req.output is not None:
        for src in req.inputs:
            if src.is_dir() and os.path.realpath(src) == os.path.realpath(req.output):
                raise fail(f"the output folder {req.output} is the input folder: choose another -o", 2)
    exclude = [req.output] if req.output is not None else []
    from ..engines.inputs import PathListError, expand_inputs, is_path_list

    try:  # text/CSV/Parquet lists of paths are expanded
        found, problems = expand_inputs(req.inputs, recursive=req.recursive, exclude=exclude)
    except PathListError as exc:
        raise fail(str(exc), 2)
    if not found:
        # Nothing usable: name what was wrong with each input, as a usage error.
        if problems:
            raise fail("; ".join(f"{p}: {reason}" for p, reason in problems[:5]), 2)
        from ..fileio import RECORDS

        own = any((p / RECORDS).is_dir() for p in req.inputs if p.is_dir())
        raise fail(f"no photos found in {', '.join(str(p) for p in req.inputs)}"
                   + ("; what is there is refrestore's own output (name the files one by one to restore them again)"
                      if own else ""), 2)
    # One photo, even when named twice: -o is then its output file
    single = (len(found) == 1 and all(p.is_file() and not is_path_list(p) for p in req.inputs)
              and len({os.path.realpath(p) for p in req.inputs}) == 1)
    try:
        tasks = plan_outputs(found, req.output, single_file=single, output_is_folder=req.output_is_folder)
    except UsageError as exc:
        raise fail(str(exc), 2)
    if single and req.upscale > 1 and not req.aligned:
        _refuse_oversized_output(tasks[0].source.path, req.upscale, max_pixels)
    if single and stream_fd(tasks[0].output) == 1:
        out_console = PlainConsole(stderr=True)  # stdout carries the photo
    # Every written path through the one gate before any work (torch is not even imported yet);
    # the reports' locks are held until the run ends.
    req, _locks = _gate(req, tasks)
    store, choice = _choose(req, offline, err_console)
    assert choice is not None
    from ..batch import BatchOptions, ImageReport

    if choice.better is not None and not req.quiet:
        err_console.print(
            f"note: using {choice.spec.info.name}; 'refrestore download-weights {choice.better.info.name}' adds a better model"
        )
    if req.engine != "local":
        if req.engine != "ray":
            raise fail(f"--engine {req.engine}: choose local or ray", 2)
        from .fix_ray import run_ray_fix

        return run_ray_fix(req, tasks, problems, store, choice, _fix_options(req), max_pixels, out_console, err_console)
    built = _build(req, choice, store, err_console)
    for note in built.notes:
        err_console.print(f"warning: {note}")
    pipeline = built.pipeline
    det, restorer = pipeline.detector, pipeline.restorer
    options = BatchOptions(
        skip_existing=req.skip_existing,
        save_faces=req.save_faces,
        compare=req.compare,
        jobs=req.jobs,
        prefetch=req.prefetch,
        max_pixels=max_pixels,
        # On a GPU the faces of several photos share one batch; on the CPU there is nothing to gain.
        group_images=4 if restorer.device.type == "cuda" else 1,
    )
    pre = [ImageReport(str(p), None, "error", reason) for p, reason in problems]
    summary = _run_with_progress(tasks, pipeline, options, out_console, err_console, req.verbosity)
    summary.images[:0] = pre
    meta = {"restorer": restorer.info.name, "detector": getattr(det, "name", None), "device": str(restorer.device)}
    gallery_line = _gallery_line(getattr(built, "gallery", None))
    if gallery_line:
        meta["gallery"] = gallery_line
        meta["identity"] = built.gallery.identity_name
    return finish_run(req, summary, meta, out_console, err_console)


def _refuse_misspelt(req: FixRequest) -> None:
    """Names and paths the command line gets wrong: exit 2 before torch loads (cli.usage)."""
    from .usage import device_problem, detector_problem, first_problem, model_problem, reference_problem

    problem = first_problem(model_problem(req.model), detector_problem(req.detector), device_problem(req.device),
                            reference_problem(req.refs, req.ref))
    if problem:
        raise fail(problem, 2)


def _refuse_remote_offline(req: FixRequest, offline: bool) -> None:
    """Remote inputs or outputs with --offline: a usage error before anything touches the network."""
    remote = [u for u in (*req.uris, *([req.output_uri] if req.output_uri else [])) if not u.startswith("file://")]
    if offline and remote:
        raise fail(f"{remote[0]}: a remote path and --offline (or REFRESTORE_OFFLINE=1): nothing can be "
                   f"fetched or written offline", 2)


def _gate(req: FixRequest, tasks: "list[Task]") -> "tuple[FixRequest, list[Any]]":
    """Every file the run writes through the one gate (``engines.clash``), before any work:
    exit 2 with one line naming both files. Returns the request with its report paths as the
    writers must take them (a FIFO opened here is ``/dev/fd/N``), and the reports' locks: a
    second run writing the same report fails here, not after its album."""
    from ..engines.clash import ClashError, check_run_writes
    from ..fileio import is_stream_path, lock_for_writing

    try:  # no file of this run may land on an input, a reference or a file refrestore did not write
        plan = check_run_writes(tasks, [*req.refs, *([req.ref] if req.ref else []), *([req.person] if req.person else [])],
                                save_faces=req.save_faces,
                                compare=req.compare, reports=[("--json", req.json_report), ("--html", req.html_report)],
                                html=req.html_report)
    except ClashError as exc:
        raise fail(str(exc), 2)
    locks = []
    for flag, path in (("--json", req.json_report), ("--html", req.html_report)):
        if path is None or is_stream_path(plan.destination(path)):
            continue
        lock = lock_for_writing(path)
        if lock is None:
            raise fail(f"{flag} {path}: another refrestore run is writing this report; wait for it or choose another path", 2)
        locks.append(lock)
    modes = [os.stat(t.source.path).st_mode for t in tasks if os.path.exists(t.source.path)]
    private = 0o777
    for mode in modes:
        private &= mode  # the reports show every photo: no more readable than the most private one
    return dataclasses.replace(req, json_report=plan.destination(req.json_report),
                               html_report=plan.destination(req.html_report), report_mode=private), locks



def _refuse_oversized_output(path: Path, upscale: int, max_pixels: int | None) -> None:
    """One photo whose upscaled output would pass the pixel limit: a usage error before any
    work (in an album it is that photo's error, from its header, and the rest go on)."""
    from ..imageio import ImageReadError, check_output_size, image_size, max_pixels_from_env

    size = image_size(path)
    if size is None:
        return  # reading it will say what is wrong
    try:
        check_output_size(*size, upscale, max_pixels if max_pixels is not None else max_pixels_from_env())
    except ImageReadError as exc:
        raise fail(f"{path}: {exc}", 2)


def _build(req: FixRequest, choice: Any, store: Any, err_console: Console) -> Any:
    """The pipeline, with a progress bar while the gallery is indexed and one line after it."""
    from ..api import build_pipeline
    from ..detection import DetectorError
    from ..restorers.registry import RestorerError
    from ..weights import WeightsError

    # The user's --model ("auto" routes each face: matched -> refnet-small, stranger -> best blind);
    # choose_restorer above only checked that it can be built.
    kwargs: dict[str, Any] = dict(
        refs=req.refs, ref=req.ref, person=req.person, model=req.model, detector=req.detector, device=req.device,
        options=_fix_options(req), top_k=req.top_k, store=store,
    )
    try:
        indexing = not req.quiet and bool(req.refs or req.person)
        with GalleryProgress(err_console, live=indexing and is_terminal(), plain=indexing) as progress:
            built = build_pipeline(**kwargs, on_gallery_progress=progress)
    except (DetectorError, FileNotFoundError, ValueError) as exc:
        raise fail(str(exc), 2)
    except (WeightsError, RestorerError) as exc:
        raise fail(str(exc), 1)
    line = _gallery_line(getattr(built, "gallery", None))
    if line and not req.quiet:
        err_console.print(line, markup=False)
    return built




def _run_with_progress(tasks: "list[Task]", pipeline: "FacePipeline", options: "BatchOptions", out_console: Console,
                       err_console: Console, verbosity: Verbosity) -> "BatchSummary":
    from ..batch import run_batch

    if verbosity <= Verbosity.QUIET:
        return run_batch(tasks, pipeline, options)
    if not is_terminal():
        def done(task: "Task", rep: "ImageReport") -> None:
            print_image_line(task, rep, out_console, err_console)

        return run_batch(tasks, pipeline, options, on_done=done)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.fields[name]}", markup=False), console=err_console, transient=False,
    ) as progress:
        images = progress.add_task("images", total=len(tasks), name="")
        faces = progress.add_task("faces", total=None, name="")

        def start(task: "Task") -> None:
            progress.update(images, name=shown(task.source.path.name))
            progress.reset(faces, total=None)

        def face(i: int, n: int) -> None:
            progress.update(faces, total=n, completed=i + 1)

        def done(task: "Task", rep: "ImageReport") -> None:
            progress.advance(images)
            print_photo_faces(task, rep, progress.console)  # above the bars, which stay at the bottom

        return run_batch(tasks, pipeline, options, on_start=start, on_done=done, on_face=face)
