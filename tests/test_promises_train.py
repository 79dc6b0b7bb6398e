"""README promises of ``refrestore train`` (issue 16): Ctrl-C (SIGINT) saves a checkpoint and
exits cleanly, and ``--set NAME=false`` switches a module off in the network that is trained.

A real ``refrestore train`` subprocess on real photos; the test waits for the log line the
command writes after its first step, with a deadline that fails with a clear message.
"""
from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

# A network small enough to step in well under a second on one thread.
MINI = dict(core=64, c1=8, c2=16, c3=24, attn_dim=8, id_dim=8, codebook_size=16, code_dim=4)


@pytest.fixture()
def small_data(shared_dir: Path, tmp_path: Path) -> Path:
    """Two training people (refrestore.net.split), three photos each, linked into a tmp folder."""
    from refrestore.net.split import is_held_out

    root = tmp_path / "data"
    for person in ("00022", "00075"):
        assert not is_held_out(person)
        (root / person).mkdir(parents=True)
        for f in sorted((shared_dir / "data" / "refbench" / "hq" / person).resolve().glob("*.png"))[:3]:
            os.symlink(f, root / person / f.name)
    return root


def _wait_for(lines: "queue.Queue[str | None]", text: str, seconds: float, seen: list[str]) -> None:
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {text!r} from train within {seconds:.0f} s; it said: {''.join(seen[-20:])}")
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            continue
        if line is None:
            raise AssertionError(f"train exited before {text!r}; it said: {''.join(seen[-20:])}")
        seen.append(line)
        if text in line:
            return


def test_sigint_saves_a_checkpoint_of_the_network_with_the_switches_set_off(small_data, tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", REFRESTORE_HOME=str(tmp_path / "home"), PYTHONUNBUFFERED="1")
    sets = [a for k, v in MINI.items() for a in ("--set", f"{k}={v}")]
    cmd = [sys.executable, "-m", "refrestore", "train", "--data", str(small_data), "--out", str(out),
           "--steps", "100000", "--batch", "1", "--threads", "1", "--device", "cpu", *sets,
           "--set", "recon=false", "--set", "vq=FALSE", "--set", "texture=off"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    seen: list[str] = []
    try:
        _wait_for(lines, "step 1/", 180, seen)  # the first step is done: there is something to save
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(timeout=10)
    while not lines.empty():
        line = lines.get()
        if line is not None:
            seen.append(line)
    stdout = proc.stdout.read() if proc.stdout else ""
    assert proc.returncode == 0, "".join(seen)
    assert "Traceback" not in "".join(seen) and "KeyboardInterrupt" not in "".join(seen)
    assert "checkpoint" in stdout and str(out / "last.pth") in stdout, stdout
    ck = torch.load(out / "last.pth", map_location="cpu", weights_only=True)
    assert ck["step"] >= 1
    cfg = ck["config"]
    assert cfg["recon"] is False and cfg["vq"] is False and cfg["texture"] is False
    assert cfg["selection"] is True and cfg["transfer"] is True and cfg["use_refs"] is True  # the rest as they were
    assert cfg["c1"] == MINI["c1"]
    # The switched-off modules are not in the trained network at all, or not trained.
    from refrestore.net.arch import RefNet, RefNetConfig

    switched = RefNet(RefNetConfig.from_dict(cfg))
    switched.load_state_dict(ck["model"])  # strictly: the checkpoint is of the network with those switches
    full = RefNet(RefNetConfig(**MINI))
    assert set(ck["model"]) != set(full.state_dict()), "--set changed nothing in the network"


def test_a_bad_set_value_is_a_usage_error(small_data, tmp_path):
    """In this process (the value is refused before training would start or touch a signal)."""
    from typer.testing import CliRunner

    from refrestore.cli import build_app

    base = ["train", "--data", str(small_data), "--out", str(tmp_path / "r"), "--steps", "1", "--device", "cpu"]
    for bad, says in (("recon=maybe", "expected a boolean"), ("nosuch=false", "expected KEY=VALUE")):
        res = CliRunner().invoke(build_app(), [*base, "--set", bad], catch_exceptions=False)
        assert res.exit_code == 2, res.output
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and says in lines[0] and "Traceback" not in res.output
    assert not (tmp_path / "r").exists()
