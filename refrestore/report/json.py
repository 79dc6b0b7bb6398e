"""The JSON report, written through refrestore's one writer (``fileio.write_atomic``)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..fileio import current_umask, write_text

__all__ = ["current_umask", "write_json_report", "write_text_atomic"]


def write_text_atomic(path: Path, text: str, source_mode: int | None = None) -> None:
    """``text`` at ``path``: atomically (mode 0666 & ~umask, narrowed by ``source_mode``), or
    written through to a stream or device; recorded as refrestore's. A killed run's temporary
    files there (only of dead processes) are removed first."""
    from ..fileio import remove_stale_temp_files, stream_fd

    if stream_fd(path) is None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(Path(path).parent)
    write_text(Path(path), text, source_mode=source_mode)


def write_json_report(path: Path, document: dict[str, Any], source_mode: int | None = None) -> None:
    """The report document (``report.build_document``) as indented JSON; file names that are
    not UTF-8 are written with ``\\xNN`` escapes (``document.printable``)."""
    from .document import printable

    write_text_atomic(path, json.dumps(printable(document), indent=2, ensure_ascii=False) + "\n", source_mode)
