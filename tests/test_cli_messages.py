"""Error lines show file names as they are: rich markup in a name (``[draft]``, ``[/b]``) is
text, never a style that swallows part of the name or a closing tag that crashes the CLI."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize("args, line", [
    (["fix", "holiday [draft].jpg", "-o", "x.png"], "error: holiday [draft].jpg: no such file or folder"),
    (["fix", "a [/b].jpg", "-o", "x.png"], "error: a [/b].jpg: no such file or folder"),
    (["gallery", "family [old]"], "error: family [old]: no such file or folder"),
    (["download-weights", "[bold]x[/bold]"], "error: unknown weights file or model '[bold]x[/bold]'"),
])
def test_a_name_with_brackets_is_shown_as_it_is(tmp_path: Path, args: list[str], line: str) -> None:
    env = dict(os.environ, REFRESTORE_HOME=str(tmp_path / "home"))
    proc = subprocess.run([sys.executable, "-m", "refrestore", *args], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith(line), proc.stderr
