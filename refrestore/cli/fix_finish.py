"""The end of a ``fix`` run, for either engine: the gallery line, the reports, the summary and the
exit status (below ``fix_cmd`` and ``fix_ray``, which both finish this way)."""
from __future__ import annotations

import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from .common import print_error
from .fix_request import FixRequest
from .outcome import print_summary, used_models, where_lines

if TYPE_CHECKING:
    from ..batch import BatchSummary


def finish_run(req: FixRequest, summary: Any, meta: dict, out_console: Console, err_console: Console) -> int:
    """Reports, summary and exit status of a finished run, for either engine."""
    # The album is done: a SIGTERM now must not cut the reports short, nor kill the process
    # while it tears down (a default handler again: exit 143 and no word); it finishes cleanly.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from ..licences import licence_line

    licences = used_models(summary, meta, req.manifest)
    meta = {**meta, "licences": [lic.as_dict() for lic in licences]}
    _write_reports(req, summary, meta, err_console)
    after: list[str] = []
    if not req.quiet:
        after = [line for line in (licence_line(licences),) if line]
        after += where_lines(summary, req.output, [req.html_report, req.json_report])
    print_summary(summary, out_console, after)
    if summary.fatal:
        print_error(f"{summary.fatal}; stopped", err_console)
        return 1
    if summary.interrupted:
        err_console.print("interrupted: finished outputs are complete; rerun to continue")
        return 130
    return 1 if summary.failed else 0


def _gallery_line(gallery: Any) -> str | None:
    """faces, people (folders), photos, from the cache, identity model: what the gallery held."""
    if gallery is None:
        return None
    stats = gallery.stats
    # People are folders, plus clusters where RefSel names them (a second face in a photo,
    # top-level photos): both counts are shown so neither surprises.
    people = {getattr(f, "person", None) or Path(f.path).parent.name for f in gallery.faces}
    folders = {Path(f.path).parent for f in gallery.faces}
    return (f"gallery: {len(gallery.faces)} faces of {_count(len(people), 'person', 'people')} "
            f"({_count(len(folders), 'folder', 'folders')}) in {_count(stats.files, 'photo', 'photos')}, "
            f"{stats.from_cache} from the cache, {stats.indexed} indexed; identity model {gallery.identity_name}")


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _write_reports(req: FixRequest, summary: "BatchSummary", meta: dict[str, Any], err_console: Console) -> None:
    from ..report import build_document, write_json_report

    if req.json_report is None and req.html_report is None:
        return
    document = build_document(summary, meta)
    if req.json_report is not None:
        write_json_report(req.json_report, document, req.report_mode)
    if req.html_report is not None:
        from ..report import write_html_report

        write_html_report(req.html_report, document, title="refrestore fix", source_mode=req.report_mode)
