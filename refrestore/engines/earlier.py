"""What the run that made an output reported about its photo, kept beside the output.

A rerun skips a photo whose output is still the one refrestore made from it; without this its
report would say "skipped" with no faces, and a rerun's HTML page would lose every face panel.
So each output gets a small side file in the hidden records folder beside it
(``fileio.side_file``): the photo's report entry as that run wrote it, when it finished, and the
output's size and modification time then. A skipped photo's report is read back from it, marked
as the earlier run's (``earlier``), and only while the output is still that file.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from ..fileio import is_stream_path, read_regular_bytes, replace_file, side_file
from .reports import ImageReport

log = logging.getLogger(__name__)

KIND = "outcome"
_MAX_BYTES = 8 << 20  # a photo of a few hundred faces


def remember(output: Path, report: ImageReport) -> None:
    """Keep ``report`` (of the photo just written to ``output``) beside it; best effort."""
    if is_stream_path(output):
        return
    try:
        st = os.stat(output)
        doc = {"output_size": st.st_size, "output_mtime_ns": st.st_mtime_ns,
               "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "report": report.to_json()}
        data = json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogateescape")
        side = side_file(output, KIND)
        side.parent.mkdir(exist_ok=True)
        # no more readable than the output itself: the report names the photo and its faces
        replace_file(side, lambda f: f.write(data), st.st_mode & 0o666, durable=False)
    except (OSError, ValueError, TypeError) as exc:
        log.info("%s: its report is not kept for a rerun (%s)", output, exc)


def _valid(report: Any) -> bool:
    return (isinstance(report, dict) and isinstance(report.get("faces"), list)
            and all(isinstance(f, dict) for f in report["faces"])
            and isinstance(report.get("warnings", []), list) and report.get("status") in ("ok", "no_faces"))


def recall(input_path: Path, output: Path) -> ImageReport | None:
    """The skipped photo's report with what the run that made ``output`` said of it (None when
    that is not known, or ``output`` has changed since)."""
    try:
        st = os.stat(output)
        doc = json.loads(read_regular_bytes(side_file(output, KIND), _MAX_BYTES).decode("utf-8", "surrogateescape"))
        if not isinstance(doc, dict) or (doc.get("output_size"), doc.get("output_mtime_ns")) != (st.st_size, st.st_mtime_ns):
            return None
        report = doc.get("report")
        if not _valid(report):
            return None
    except (OSError, ValueError):
        return None
    return ImageReport(str(input_path), str(output), "skipped", None, list(report["faces"]),
                       [str(w) for w in report.get("warnings", [])], copied=bool(report.get("copied", False)),
                       earlier={"finished": str(doc.get("finished") or "?"), "status": report["status"]})
