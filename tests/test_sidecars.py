"""Files refrestore reads back outside the gallery (weights side files such as
``.verified.json``): a FIFO, deep nesting or a huge file is ignored, never a hang or a crash
(issue 15, item 3, weights part)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from refrestore.weights.store import MAX_SIDECAR_BYTES, VERIFIED_CACHE, WeightStore


@pytest.mark.parametrize("kind", ["fifo", "nested", "huge", "list", "binary"])
def test_a_damaged_sidecar_is_ignored(tmp_path: Path, kind: str) -> None:
    side = tmp_path / VERIFIED_CACHE
    if kind == "fifo":
        os.mkfifo(side)
    elif kind == "nested":
        side.write_text("[" * 200_000 + "]" * 200_000)
    elif kind == "huge":
        with open(side, "wb") as f:
            f.truncate(MAX_SIDECAR_BYTES + 1)
    elif kind == "list":
        side.write_text("[1, 2, 3]")
    else:
        side.write_bytes(b"\xff\xfe\x00garbage")
    # In a subprocess with a timeout: a blocking read of the FIFO would hang the test run.
    code = (f"from pathlib import Path; from refrestore.weights.store import WeightStore; "
            f"print(WeightStore._read_json(Path({str(side)!r})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "{}"
    assert "Traceback" not in proc.stderr
    assert WeightStore._read_json(tmp_path / "absent.json") == {}
