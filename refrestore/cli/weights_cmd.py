"""``refrestore download-weights`` and ``refrestore models``."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from .common import PlainConsole, PlainHelpCommand, fail, print_error, setup_logging, verbosity_from

from ..weights.choose import preferred
from ..weights.errors import WeightsError
from ..weights.manifest import Manifest, ManifestEntry, load_manifest
from ..weights.store import WeightStore

if TYPE_CHECKING:  # the downloader pulls in requests: imported when a download starts
    from ..weights.download import DownloadEvent


def register(app: typer.Typer) -> None:
    app.command("download-weights", cls=PlainHelpCommand)(download_weights)
    app.command("models", cls=PlainHelpCommand)(models)


def _err() -> Console:
    return PlainConsole(stderr=True)  # paths are text, escaped; a closed stderr stops only the messages


def _fail(message: str, code: int) -> typer.Exit:
    return fail(message, code)


def _open_store(directory: Optional[Path], manifest_file: Optional[Path]) -> WeightStore:
    try:
        manifest = load_manifest(manifest_file) if manifest_file is not None else load_manifest()
    except WeightsError as exc:
        raise _fail(str(exc), 2) from None
    if directory is not None and directory.exists() and not directory.is_dir():
        raise _fail(f"--dir {directory} is not a folder", 2)
    return WeightStore(directory, manifest)


def _gate_dir(store: WeightStore, directory: Path, entries: list[ManifestEntry]) -> None:
    """The one gate (``engines.clash``) for ``--dir``, a folder of the user's: a file there with
    a weights file's name is replaced only when it is that file as published (or a copy
    refrestore wrote); anything else is the user's, refused before any download."""
    from ..engines.clash import ClashError, check_writes

    def verified(path: Path) -> bool:
        name = path.name
        try:
            return store.find(name) is not None
        except WeightsError:
            return False

    try:
        check_writes([(f"--dir {directory}: the file", store.path(e.name)) for e in entries], streams=False,
                     may_replace=verified)
    except ClashError as exc:
        raise _fail(str(exc), 2) from None


def _mb(size: int | None) -> str:
    if size is None:
        return "?"
    return f"{size / 1e6:.1f} MB" if size < 1e9 else f"{size / 1e9:.2f} GB"


# ---- download-weights ---------------------------------------------------------------------

def download_weights(
    names: Annotated[
        Optional[list[str]],
        typer.Argument(metavar="[NAME...]", help="File or model names (see `refrestore models`). Default: the default set."),
    ] = None,
    all_files: Annotated[
        bool, typer.Option("--all", help="Every published file except on-request-only ones (CodeFormer).")
    ] = False,
    directory: Annotated[
        Optional[Path], typer.Option("--dir", metavar="DIR", help="Weights folder for this run (default: REFRESTORE_HOME/weights).")
    ] = None,
    mirror: Annotated[
        Optional[str],
        typer.Option(
            "--mirror", metavar="BASE_URL",
            help="Fetch every file as BASE_URL/<file name> (https, http, file:// or a folder).",
        ),
    ] = None,
    manifest_file: Annotated[
        Optional[Path], typer.Option("--manifest", metavar="FILE", help="Use another manifest of the same schema (private models).")
    ] = None,
    from_file: Annotated[
        Optional[Path],
        typer.Option(
            "--from-file", metavar="FILE",
            help="Add this local file instead of downloading: the published file (found by its sha256; NAME "
            "optional), or your own file as NAME, which must load strictly into NAME's architecture (its own "
            "hash is then recorded as user-added).",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Fetch again even if a verified copy is present.")] = False,
    offline: Annotated[
        bool,
        typer.Option("--offline", help="Forbid network use (also REFRESTORE_OFFLINE=1); a local --mirror still works."),
    ] = False,
    timeout: Annotated[float, typer.Option("--timeout", min=0.1, metavar="SECONDS", help="Connect/read timeout in seconds.")] = 30.0,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Only errors and the files installed.")] = False,
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="Also log each request and retry.")] = False,
) -> None:
    """Download model weights, verify their size and sha256, and install them atomically."""
    setup_logging(False, verbosity_from(quiet, verbose))
    store = _open_store(directory, manifest_file)
    if from_file is not None:
        _add_from_file(store, names or [], from_file, force)
        return
    manifest = store.manifest
    try:
        entries = _select(manifest, names or [], all_files)
    except WeightsError as exc:
        raise _fail(str(exc), 2) from None
    if not entries:
        raise _fail("nothing to download: the manifest has no default files (name some, or use --all)", 2)

    err = _err()
    fetch = [e for e in entries if not e.embedded]
    if directory is not None:
        _gate_dir(store, directory, fetch)
    total = sum(e.size or 0 for e in fetch)
    if not quiet:
        err.print(f"{len(entries)} file(s), {_mb(total)}, into {store.directory}")
        for entry in entries:
            if not entry.commercial:
                err.print(f"note: {entry.name} is licensed {entry.license}: not for commercial use")

    from ..weights.download import download

    renderer = DownloadProgress(err, silent=quiet)
    try:
        with renderer:
            paths = download(
                [e.name for e in entries], store, mirror=mirror, force=force, offline=offline,
                progress=renderer, timeout=timeout,
            )
    except WeightsError as exc:
        # One line per file that failed, each with its own cause.
        for line in getattr(exc, "failures", None) or [str(exc)]:
            print_error(line, err)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        raise _fail("interrupted; run the command again to resume", 130) from None
    out = PlainConsole()
    for entry, path in zip(entries, paths, strict=True):
        out.print(f"ok  {entry.name}  {path}")


def _add_from_file(store: WeightStore, names: list[str], source: Path, force: bool) -> None:
    from ..userweights import add_user_file

    if len(names) > 1:
        raise _fail("--from-file adds one file: name the model or file it is (see `refrestore models`)", 2)
    try:
        added = add_user_file(store, names[0] if names else None, source, replace=force)
    except WeightsError as exc:
        raise _fail(str(exc), 1) from None
    out = PlainConsole()
    if added.published:
        out.print(f"added {source} as {added.name} ({', '.join(added.models)}; the published file, sha256 "
                  f"verified): {added.path}")
        return
    out.print(f"added {source} as {added.name} ({', '.join(added.models)}; {added.architecture}, strict load ok), "
              f"user-added, sha256 {added.sha256[:16]}...: {added.path}")


def _select(manifest: Manifest, names: list[str], all_files: bool) -> list[ManifestEntry]:
    chosen: list[ManifestEntry] = []
    if all_files:
        chosen += manifest.downloadable_entries()
    if names:
        chosen += [e for e in manifest.resolve(names) if e not in chosen]
    if not names and not all_files:
        chosen = manifest.default_entries()
    return chosen


class DownloadProgress:
    """Turns DownloadEvents into a rich progress bar on a terminal, plain lines otherwise.

    Use as ``with DownloadProgress(console) as p: download(..., progress=p)`` (also from
    other commands, e.g. ``fix --download``)."""

    def __init__(self, console: Console, silent: bool = False) -> None:
        self.console = console
        self.silent = silent  # -q: no bars, no lines; errors are reported by the caller
        self.live = console.is_terminal and not silent
        self.progress: Progress | None = None
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> DownloadProgress:
        if self.live:
            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                TransferSpeedColumn(), TimeRemainingColumn(), console=self.console,
            )
            self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, event: DownloadEvent) -> None:
        if self.silent:
            return
        name = event.name
        if event.kind == "progress":
            if self.progress is not None and name in self.tasks:
                self.progress.update(self.tasks[name], completed=event.done)
            return
        if event.kind == "start":
            if self.progress is not None:
                self.tasks[name] = self.progress.add_task(name, total=event.total, completed=event.done)
            else:
                resume = f" (resuming at {_mb(event.done)})" if event.done else ""
                self._line(f"{name}: downloading {_mb(event.total)} from {event.message}{resume}")
            return
        if event.kind == "done":
            if self.progress is not None and name in self.tasks:
                self.progress.update(self.tasks[name], completed=event.total or event.done)
            self._line(f"{name}: done, sha256 {event.message[:16]}...")
        elif event.kind == "skip":
            self._line(f"{name}: already present ({event.message})")
        elif event.kind in ("retry", "restart", "wait", "warning"):
            label = f"{name}: " if name else ""
            self._line(f"{label}{event.message}")
        # "failed" is reported once, by the final error line.

    def _line(self, text: str) -> None:
        if self.progress is not None:
            self.progress.console.print(text, highlight=False, markup=False)
        else:
            self.console.print(text, highlight=False, markup=False)


# ---- models -------------------------------------------------------------------------------

def models(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    directory: Annotated[
        Optional[Path], typer.Option("--dir", metavar="DIR", help="Weights folder to inspect (default: REFRESTORE_HOME/weights).")
    ] = None,
    manifest_file: Annotated[
        Optional[Path], typer.Option("--manifest", metavar="FILE", help="Use another manifest of the same schema.")
    ] = None,
) -> None:
    """List every model and file: present or missing, size, licence, path, and what `fix` uses."""
    store = _open_store(directory, manifest_file)
    report = models_report(store)
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return
    _print_models(report)


# Roles `fix` draws on (identity embedding belongs to the gallery, upsampling is optional),
# the manifest models it can use for each, and what it falls back on without any of them.
FIX_ROLES: tuple[str, ...] = ("detector", "parser", "restorer")
FIX_MODELS: dict[str, tuple[str, ...]] = {
    "detector": ("retinaface-resnet50", "retinaface-mobilenet"),
    "parser": ("parsenet",),
}
FIX_BUILT_IN: dict[str, str] = {"detector": "dlib", "parser": "ellipse", "restorer": "resample"}
BUILT_IN_NOTE = " (built in)"


def fix_choices(store: WeightStore) -> dict[str, str | None]:
    """The model each role would use in `fix`: the restorer registry decides the restorer
    (``choose_restorer("auto", store)``); other roles take the first present model in
    manifest order."""
    choices: dict[str, str | None] = {}
    for role in FIX_ROLES:
        choice = preferred(store, role)
        if role in FIX_MODELS:
            choice = next((m for m in FIX_MODELS[role] if _has_model(store, m)), None)
        choices[role] = choice or FIX_BUILT_IN[role]
    try:
        from ..restorers import registry
    except ImportError:
        return choices
    try:
        chosen: Any = registry.choose_restorer("auto", store)
    except Exception:  # noqa: BLE001 - a listing must not fail because the registry did
        return choices
    spec = getattr(chosen, "spec", chosen)
    name = getattr(getattr(spec, "info", None), "name", None)
    if isinstance(name, str):
        choices["restorer"] = name
    return choices


def _has_model(store: WeightStore, model: str) -> bool:
    try:
        return store.has_model(model)
    except WeightsError:  # a corrupt copy is not used
        return False


def models_report(store: WeightStore) -> dict[str, Any]:
    """Everything `refrestore models` shows, as plain data."""
    manifest = store.manifest
    files = []
    state_of: dict[str, str] = {}
    for entry in manifest.entries:
        status = store.status(entry.name)
        state_of[entry.name] = status.state
        files.append({
            "name": entry.name,
            "role": entry.role,
            "models": entry.models,
            "status": status.state,
            "user_added": status.user_added,
            "problem": status.problem or None,
            "size": entry.size if entry.size is not None else status.size_on_disk,
            "sha256": entry.sha256 or (store.recorded_hash(entry) if status.present else None),
            "license": entry.license,
            "commercial": entry.commercial,
            "default": entry.default,
            "on_request_only": entry.on_request_only,
            "embedded": entry.embedded,
            "path": str(status.path),
            "url": entry.url,
            "description": entry.description,
        })
    choices = fix_choices(store)
    model_rows = []
    for model in manifest.model_names():
        entries = manifest.for_model(model)
        states = [state_of[e.name] for e in entries]
        state = "corrupt" if "corrupt" in states else ("present" if all(s == "present" for s in states) else "missing")
        model_rows.append({
            "name": model,
            "role": entries[0].role,
            "status": state,
            "files": [e.name for e in entries],
            "license": sorted({e.license for e in entries}),
            "commercial": all(e.commercial for e in entries),
            "embedded": all(e.embedded for e in entries),
            "on_request_only": any(e.on_request_only for e in entries),
            "user_added": any(f["user_added"] for f in files if f["name"] in {e.name for e in entries}),
            "used_by_fix": choices.get(entries[0].role) == model,
        })
    return {
        "weights_dir": str(store.directory),
        "manifest": str(manifest.source),
        "fix_uses": choices,
        "models": model_rows,
        "files": files,
    }


def _print_models(report: dict[str, Any]) -> None:
    # Piped output is not squeezed to 80 columns: paths and licences stay on one line.
    out = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
    folder = report["weights_dir"]
    if out.width < 120:
        _print_models_narrow(report, out)
    else:
        _print_models_table(report, out)
    out.print(f"weights folder: {folder}  (manifest: {report['manifest']})", markup=False)
    built_in = set(FIX_BUILT_IN.values())
    uses = ", ".join(
        f"{role} {name}{BUILT_IN_NOTE if name in built_in else ''}" for role, name in report["fix_uses"].items()
    )
    out.print(f"fix would use: {uses}", markup=False)
    for row in report["files"]:
        if row["status"] == "corrupt":
            out.print(f"problem: {row['problem']}", markup=False)
    missing = [r["name"] for r in report["files"] if r["default"] and r["status"] == "missing"]
    if missing:
        out.print(
            f"missing from the default set: {', '.join(missing)}; run `refrestore download-weights`",
            markup=False,
        )


def _file_cells(row: dict[str, Any], folder: str, used: set[str]) -> tuple[str, str, str, str]:
    """(status, licence, fix, path) of one file as the listing shows them."""
    status = row["status"] + (" (embedded)" if row["embedded"] else "") + (" (user-added)" if row.get("user_added") else "")
    licence = row["license"]
    if not row["commercial"] and "non-commercial" not in licence.lower():
        licence += " (non-commercial)"
    fix = "yes" if used & set(row["models"]) else ("only when named" if row["on_request_only"] else "")
    path = Path(row["path"])
    return status, licence, fix, path.name if path.parent == Path(folder) else str(path)


def _print_models_narrow(report: dict[str, Any], out: Console) -> None:
    """A terminal under 120 columns (80 is common): one line per file with what fits, its
    licence and path indented below; the seven-column table would fold every cell."""
    folder = report["weights_dir"]
    used = {m["name"] for m in report["models"] if m["used_by_fix"]}
    out.print("refrestore models", markup=False)
    out.print(f"{'model':<21} {'role':<9} {'status':<19} {'size':>9}  fix", markup=False, style="bold")
    for row in report["files"]:
        status, licence, fix, path = _file_cells(row, folder, used)
        out.print(f"{', '.join(row['models']):<21} {row['role']:<9} {status:<19} {_mb(row['size']):>9}  {fix}".rstrip(),
                  markup=False)
        out.print(f"    {licence}", markup=False, style="yellow" if not row["commercial"] else None)
        out.print(f"    {path}", markup=False, style="dim")


def _print_models_table(report: dict[str, Any], out: Console) -> None:
    folder = report["weights_dir"]
    table = Table(title="refrestore models", title_justify="left")
    for column in ("model", "role", "status", "size", "licence", "fix", "path"):
        table.add_column(column, overflow="fold")
    used = {m["name"] for m in report["models"] if m["used_by_fix"]}
    colours = {"present": "green", "missing": "yellow", "corrupt": "red"}
    for row in report["files"]:
        status, licence, fix, shown = _file_cells(row, folder, used)
        table.add_row(
            ", ".join(row["models"]),
            row["role"],
            f"[{colours[row['status']]}]{status}[/]",
            _mb(row["size"]),
            licence.replace("[", "\\["),
            fix,
            shown.replace("[", "\\["),
        )
    out.print(table)
