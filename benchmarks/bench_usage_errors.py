"""How long a simple mistake takes to be reported: every usage error should come back in under 0.5 s.

    python benchmarks/bench_usage_errors.py [--runs 5]

Each mistake runs as a fresh ``python -m refrestore`` process, as a user starts it, in a
scratch folder with one real photo (from ``../shared/data/real_lq/whole``, or a tiny PNG
written here when that is absent). The figures are the median wall time over ``--runs`` runs,
the child's CPU time (the steadier figure on a busy machine) and whether the process loaded
torch (``-X importtime`` names it), beside a bare ``python -c pass``. Each must exit 2 with
one ``error:`` line; the script says so when one does not.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED_PHOTO = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real_lq" / "whole" / "gfpgan_00.jpg"


def mistakes(d: Path) -> list[tuple[str, list[str]]]:
    a, o = str(d / "a.jpg"), str(d / "out")
    return [
        ("fix: a missing input file", ["fix", str(d / "missing.jpg")]),
        ("fix: -o equal to the input", ["fix", a, "-o", a]),
        ("fix: a missing --refs folder", ["fix", a, "--refs", str(d / "family"), "-o", o + "/"]),
        ("fix: a missing --ref photo", ["fix", a, "--ref", str(d / "grandma.jpg"), "-o", o + "/"]),
        ("fix: a missing --person folder", ["fix", a, "--person", str(d / "grandma"), "-o", o + "/"]),
        ("fix: an unknown --model", ["fix", a, "--model", "gfpgan-v9", "-o", o + "/"]),
        ("fix: a bad --device", ["fix", a, "--device", "gpu", "-o", o + "/"]),
        ("fix: an unknown --detector", ["fix", a, "--detector", "yolo", "-o", o + "/"]),
        ("fix: an output it did not write", ["fix", a, "-o", str(d / "mine.jpg")]),
        ("fix: an unknown option", ["fix", a, "--strenght", "0.5"]),
        ("match: a missing input file", ["match", str(d / "missing.jpg"), "--refs", str(d)]),
        ("match: a missing --refs folder", ["match", a, "--refs", str(d / "family")]),
    ]


def run_once(args: list[str], cwd: Path, importtime: bool = False) -> tuple[float, float, int, str, bool]:
    """(wall s, CPU s, exit status, stderr, torch loaded) of one fresh process; ``importtime``
    (which slows the start) tells whether torch was loaded."""
    env = dict(os.environ, COLUMNS="100", OMP_NUM_THREADS="1")
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *(["-X", "importtime"] if importtime else []), "-m", "refrestore", *args], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    assert proc.stderr is not None
    err = proc.stderr.read().decode("utf-8", "replace")
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    torch = any(line.startswith("import time:") and line.split("|")[-1].strip() == "torch" for line in err.splitlines())
    said = "\n".join(line for line in err.splitlines() if not line.startswith("import time:"))
    return seconds, usage.ru_utime + usage.ru_stime, os.waitstatus_to_exitcode(status), said, torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        if SHARED_PHOTO.is_file():
            shutil.copy(SHARED_PHOTO, d / "a.jpg")
        else:
            import cv2
            import numpy as np

            cv2.imwrite(str(d / "a.jpg"), np.full((64, 64, 3), 128, np.uint8))
        (d / "mine.jpg").write_bytes(b"the user's own file")
        base = statistics.median(run_once_pass() for _ in range(args.runs))
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores, {args.runs} runs each; "
              f"python -c pass: {base:.3f} s")
        print(f"{'mistake':<34} {'median s':>9} {'max s':>7} {'CPU s':>6} {'torch':>6}  first line")
        worst = 0.0
        for label, argv in mistakes(d):
            # the first run (which warms the file cache, as every run after the first is) says
            # whether torch was loaded
            _, _, _, _, torch = run_once(argv, d, importtime=True)
            rows = [run_once(argv, d) for _ in range(args.runs)]
            walls = [r[0] for r in rows]
            cpu = statistics.median(r[1] for r in rows)
            code, said = rows[-1][2], rows[-1][3]
            first = said.strip().splitlines()[0] if said.strip() else "(nothing)"
            flag = "" if code == 2 else f"  [exit {code}, not 2]"
            worst = max(worst, statistics.median(walls))
            print(f"{label:<34} {statistics.median(walls):>9.3f} {max(walls):>7.3f} {cpu:>6.3f} "
                  f"{'yes' if torch else 'no':>6}  {first.replace(str(d), 'DIR')[:70]}{flag}")
        print(f"slowest median: {worst:.3f} s")


def run_once_pass() -> float:
    start = time.perf_counter()
    subprocess.call([sys.executable, "-c", "pass"])
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
