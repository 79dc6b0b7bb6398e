"""A photo's warnings reach the user as it finishes, at a terminal and in a log, not only in
the JSON report: "--ref used for all 4 faces" (and "face N pasted back unrestored") must not
hide behind a photo counted as done."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from terminal import run_on_a_terminal

WARNING = "--ref is meant for single-face photos; used for all 4 faces"


def _args(shared_dir: Path, out: Path) -> list[str]:
    ref = sorted((shared_dir / "data" / "identities" / "adams").iterdir())[0]
    photo = shared_dir / "data" / "real_lq" / "whole" / "codeformer_00.jpg"
    return [sys.executable, "-m", "refrestore", "fix", str(photo), "-o", str(out), "--ref", str(ref),
            "--model", "resample", "--detector", "dlib"]


def test_warning_follows_the_image_line_in_a_log(tmp_path: Path, shared_dir: Path) -> None:
    env = dict(os.environ, REFRESTORE_HOME=str(tmp_path / "home"), OMP_NUM_THREADS="1")
    proc = subprocess.run(_args(shared_dir, tmp_path / "o.png"), capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^ok +\S+codeformer_00\.jpg -> \S+o\.png; faces: 4 restored with --ref ", proc.stdout, re.M), proc.stdout
    assert f"warning: {shared_dir / 'data' / 'real_lq' / 'whole' / 'codeformer_00.jpg'}: {WARNING}" in proc.stderr


def test_warning_is_shown_above_the_progress_bars_on_a_terminal(tmp_path: Path, shared_dir: Path) -> None:
    env = dict(os.environ, REFRESTORE_HOME=str(tmp_path / "home"), OMP_NUM_THREADS="1", TERM="xterm",
               COLUMNS="200")
    proc, shown = run_on_a_terminal(_args(shared_dir, tmp_path / "o.png"), env)
    assert proc.returncode == 0, shown
    assert WARNING in re.sub(r"\s+", " ", shown), shown
