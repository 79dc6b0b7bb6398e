"""What ``fix`` tells the user as it goes and at the end: a line per photo with its faces'
outcomes, the summary, the licences of the weights used, and where everything went.

Only typer and rich are imported at the top (``fix --help`` goes through here); the lines are
built from the same report objects as the JSON and HTML reports.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from .common import is_terminal

if TYPE_CHECKING:
    from ..batch import BatchSummary, ImageReport


def image_line(task: Any, rep: "ImageReport") -> str:
    """``ok       a.jpg -> out/a_restored.jpg; faces: 1 restored with grandma (3 refs)``."""
    from ..report.outcome import faces_line

    head = f"{rep.status:<8} {task.source.path} -> {rep.output or '-'}"
    if rep.status == "error":
        return f"{head} ({rep.error})"
    faces = faces_line(rep.faces)
    if rep.status == "skipped":
        earlier = getattr(rep, "earlier", None)
        head += " (output exists" + (f", made by an earlier run on {earlier['finished']}" if earlier else "") + ")"
    elif not faces:
        head += " (no faces)"
    return f"{head}; {faces}" if faces else head


def print_image_line(task: Any, rep: "ImageReport", out_console: Console, err_console: Console) -> None:
    """One line per finished image (logs, pipes), and its warnings on stderr."""
    out_console.print(image_line(task, rep), markup=False)
    print_warnings(task, rep, err_console)


def print_photo_faces(task: Any, rep: "ImageReport", console: Console) -> None:
    """On a terminal, above the progress bars: the photo's faces line (photos done in this
    run), then its warnings."""
    from ..report.outcome import faces_line

    faces = faces_line(rep.faces) if rep.status == "ok" else None
    if faces:
        console.print(f"{task.source.path.name}: {faces}", markup=False, highlight=False)
    print_warnings(task, rep, console)


def print_warnings(task: Any, rep: "ImageReport", console: Console) -> None:
    """An image's warnings as it finishes (a face pasted back unrestored must not hide in the
    JSON report of a photo counted as done)."""
    for warning in rep.warnings:
        console.print(f"warning: {task.source.path}: {warning}", markup=False, highlight=False)


def summary_lines(summary: "BatchSummary", shown: int = 3) -> list[str]:
    """The summary: counts, skipped outputs and how to redo them, failures grouped by reason
    with the files they hit."""
    counts = summary.counts()
    lines = [f"done {counts['ok']}, skipped {counts['skipped']}, no faces {counts['no_faces']}, failed {counts['error']}"]
    if counts["skipped"]:
        lines.append(f"  skipped {counts['skipped']}: the output exists; --overwrite redoes them")
    by_reason: dict[str, list[str]] = defaultdict(list)
    for r in summary.images:
        if r.status == "error":
            by_reason[(r.error or "unknown error").split(":")[0]].append(r.input)
    for reason, files in sorted(by_reason.items(), key=lambda kv: -len(kv[1])):
        names = ", ".join(files[:shown]) + (f" and {len(files) - shown} more" if len(files) > shown else "")
        lines.append(f"  failed ({len(files)}): {reason}: {names}")
    return lines


def print_summary(summary: "BatchSummary", console: Console, after: list[str] = ()) -> None:  # type: ignore[assignment]
    """The counts (a table on a terminal), the grouped failures, then ``after`` (the licences
    and where things went)."""
    lines = summary_lines(summary)
    if is_terminal():
        from rich.table import Table

        counts = summary.counts()
        table = Table(title="refrestore fix")
        for col in ("done", "skipped", "no faces", "failed"):
            table.add_column(col, justify="right")
        table.add_row(str(counts["ok"]), str(counts["skipped"]), str(counts["no_faces"]), str(counts["error"]))
        console.print(table)
    else:
        console.print(lines[0], markup=False)
    for line in [*lines[1:], *after]:
        console.print(line, markup=False)


def used_models(summary: "BatchSummary", meta: dict[str, Any], manifest_path: Path | None) -> list[Any]:
    """The licences of the weights this run's photos went through (restorers of their faces,
    the gallery's identity model, the detector)."""
    from ..licences import run_licences
    from ..weights import WeightsError, load_manifest

    restorers = [f.get("restorer") for r in summary.images for f in r.faces if f.get("restorer")]
    try:
        manifest = load_manifest(manifest_path) if manifest_path else load_manifest()
    except (WeightsError, OSError):
        manifest = None
    detector = meta.get("detector") if any(r.faces for r in summary.images) else None
    return run_licences(restorers, meta.get("identity"), detector, manifest)


def where_lines(summary: "BatchSummary", output: Path | None, reports: list[Path | None]) -> list[str]:
    """Where the outputs and reports went: the one output file, or the output folder, then
    each report (streams left out)."""
    from ..fileio import is_stream_path

    outputs = [r.output for r in summary.images if r.output]
    lines = []
    if len(outputs) == 1 and len(summary.images) == 1:
        lines.append(f"output: {outputs[0]}")
    elif outputs:
        folder = output if output is not None else Path(outputs[0]).parent
        lines.append(f"outputs: {folder}{'' if str(folder).endswith('/') else '/'} ({len(outputs)} photos)")
    for path in reports:
        if path is not None and not is_stream_path(path):
            lines.append(f"report: {path}")
    return lines
