"""``refrestore gallery DIR``: the people of a reference gallery, their faces, and suspected label errors."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from .common import consoles, fail, setup_logging

log = logging.getLogger("refrestore")


def register(app: typer.Typer) -> None:
    app.command("gallery", no_args_is_help=True)(gallery)


def gallery(
    sources: list[Path] = typer.Argument(..., help="Gallery folders (one sub-folder per person) or photos."),
    json_report: Path | None = typer.Option(None, "--json", help="Write the people as JSON here ('-': standard output)."),
    detector: str = typer.Option("auto", "--detector", help="auto, retinaface, retinaface_resnet50, retinaface_mobile0.25 or dlib."),
    identity: str = typer.Option("auto", "--identity", help="Identity model: auto, mobilefacenet-dual, mobilefacenet-lr, mobilefacenet, fused, faceid, dlib or arcface."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    weights_dir: Path | None = typer.Option(None, "--weights-dir", help="Weights folder for this run."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and debug logs."),
) -> None:
    """List the people of a gallery with face counts and quality, and flag photos that look like someone else."""
    setup_logging(debug)
    try:
        code = _gallery(sources, json_report, detector, identity, device, weights_dir)
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        raise fail("interrupted", 130)
    except (ImportError, MemoryError):
        raise  # a library that cannot load (a memory limit): cli.main says so in one line
    except Exception as exc:
        if debug:
            raise
        raise fail(f"{exc}".splitlines()[0] if str(exc) else type(exc).__name__)
    raise typer.Exit(code)


def _gallery(sources: list[Path], json_report: Path | None, detector_name: str, identity_name: str,
             device_name: str, weights_dir: Path | None) -> int:
    # markup off and names escaped: what is printed holds the user's file names
    out, err = consoles()
    missing = [p for p in sources if not p.exists()]
    if missing:
        raise fail(f"{missing[0]}: no such file or folder", 2)
    if json_report is not None:
        json_report = _gate(json_report, sources)
    # the libraries (torch among them) only once the gate has let the run through
    from ..detection import DetectorError, init_detector
    from ..devices import DeviceError, pick_device
    from ..gallery import Gallery
    from ..identity import init_identity_model
    from ..paths import cache_dir
    from ..weights import WeightsError, WeightStore
    from .match_cmd import _build_gallery
    try:
        device = pick_device(device_name)
        store = WeightStore(weights_dir)
        det = init_detector(detector_name, store, device)
        model = init_identity_model(identity_name, store=store, device=device)
    except (DeviceError, DetectorError, ValueError) as exc:
        raise fail(str(exc), 2)
    except (WeightsError, FileNotFoundError) as exc:
        raise fail(str(exc), 1)
    g = _build_gallery(Gallery, list(sources), det, model, cache_dir(), err)
    for problem in g.problems:
        err.print(f"warning: {problem.path}: {problem.reason}", markup=False)
    if not g.faces:
        raise fail("no faces found in the gallery", 1)
    people = g.people()
    st = g.stats
    err.print(f"gallery: {len(people)} people, {st.faces} faces in {st.files} photos "
              f"({st.from_cache} from cache, {st.indexed} indexed) with {model.name}", markup=False)
    if g.declared is not None:
        err.print(f"one-person gallery: {g.declared} (its references are used unless a face is clearly someone else)",
                  markup=False)
    doc = {"sources": [str(s) for s in sources], "identity_model": f"{model.name} {model.version}",
           "photos": st.files, "faces": st.faces, "indexed": st.indexed, "from_cache": st.from_cache,
           "one_person": g.declared, "people": [p.as_dict() for p in people],
           "problems": [{"path": str(p.path), "reason": p.reason} for p in g.problems]}
    if json_report is not None:
        from ..fileio import stream_fd
        from ..report.json import write_text_atomic

        write_text_atomic(json_report, json.dumps(doc, indent=2) + "\n")
        if stream_fd(json_report) == 1:
            return 0  # stdout carries the JSON
    _print_people(out, people)
    return 0


def _print_people(console: Console, people: list[Any]) -> None:
    suspects = [s for p in people for s in p.suspects]
    if console.is_terminal:
        table = Table(title="people", title_justify="left")
        for col in ("person", "faces", "photos", "quality (mean/best)", "from"):
            table.add_column(col, justify="left" if col in ("person", "from") else "right")
        for p in people:
            table.add_row(p.name, str(p.faces), str(p.photos), f"{p.quality_mean:.2f}/{p.quality_best:.2f}",
                          "folder" if p.labelled else "clustered")
        console.print(table)
    else:
        for p in people:
            console.print(f"{p.name}: {p.faces} faces, {p.photos} photos, quality {p.quality_mean:.2f} mean "
                          f"{p.quality_best:.2f} best ({'folder' if p.labelled else 'clustered'})", markup=False)
    for s in suspects:
        console.print(f"suspected label error: {s.path}#{s.face_index} is in {s.person} but looks like "
                      f"{s.other_person} ({s.other_score:.3f} vs {s.own_score:.3f} to its own person)", markup=False)


def _gate(json_report: Path, sources: list[Path]) -> Path:
    """The one gate (``engines.clash``) before any work: never on a photo of the gallery, nor
    on a file refrestore did not write. Returns the path the writer takes."""
    from ..engines.clash import ClashError, check_writes, reference_photos

    try:
        plan = check_writes([("--json", json_report)], protect=[("the gallery photo", reference_photos(sources))])
    except ClashError as exc:
        raise fail(str(exc), 2)
    return plan.destination(json_report) or json_report
