"""The JSON report, written atomically with the user's umask (not mkstemp's private 0600)."""
from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any


def current_umask() -> int:
    """The process umask, read without changing it where /proc allows."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no /proc: the classic read-and-restore
    os.umask(mask)
    return mask


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename; mode 0666 & ~umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from ..discover import TEMP_PREFIX
    from ..imageio import remove_stale_temp_files

    remove_stale_temp_files(path.parent)  # a killed run's leftovers (only of dead processes)
    # Named like the image writer's temporary files (prefix and pid) so a rerun can clean them.
    tmp = str(path.parent / f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}{path.suffix}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json_report(path: Path, document: dict[str, Any]) -> None:
    """The report document (``report.build_document``) as indented JSON; file names that are
    not UTF-8 are written with ``\\xNN`` escapes (``document.printable``)."""
    from .document import printable

    write_text_atomic(path, json.dumps(printable(document), indent=2, ensure_ascii=False) + "\n")
