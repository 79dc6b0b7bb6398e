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


def test_progress_bar_shows_a_bracketed_name_as_it_is(tmp_path: Path) -> None:
    """At a terminal the bar names the photo being restored: ``[bold]`` in it is text."""
    import numpy as np
    from PIL import Image
    from terminal import run_on_a_terminal

    album = tmp_path / "album"
    album.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(album / "a [bold]b.png")
    env = dict(os.environ, REFRESTORE_HOME=str(tmp_path / "home"), OMP_NUM_THREADS="1", TERM="xterm", COLUMNS="200")
    proc, shown = run_on_a_terminal([sys.executable, "-m", "refrestore", "fix", str(album), "-o", str(tmp_path / "out"),
                                     "--model", "resample", "--detector", "dlib"], env)
    assert proc.returncode == 0, shown
    assert "a [bold]b.png" in shown, shown
    assert (tmp_path / "out" / "a [bold]b_restored.png").is_file()
