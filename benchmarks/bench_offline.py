"""How fast `refrestore download-weights` gives up on the default set with no network.

    python benchmarks/bench_offline.py [--runs 5]

Three ways of having no network, each a fresh process with an empty weights folder: the
published URLs (on a machine without internet: DNS fails), a mirror whose name does not
resolve (`nonexistent.invalid`), and a refused port on 127.0.0.1. Prints the median wall
time, the lines printed, and whether any *.lock or *.part file was left.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(extra: list[str]) -> tuple[float, int, int, list[str]]:
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "weights"
        env = dict(os.environ, REFRESTORE_HOME=str(Path(tmp) / "home"))
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "refrestore", "download-weights", "--dir", str(weights), *extra],
                              capture_output=True, text=True, env=env, timeout=600)
        seconds = time.perf_counter() - start
        left = [p.name for p in weights.iterdir() if p.name.endswith((".lock", ".part"))] if weights.exists() else []
        lines = (proc.stdout + proc.stderr).strip().splitlines()
        return seconds, proc.returncode, len(lines), left


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    cases = [
        ("published URLs", []),
        ("mirror http://nonexistent.invalid", ["--mirror", "http://nonexistent.invalid/models"]),
        ("mirror on a refused port", ["--mirror", f"http://127.0.0.1:{refused_port()}/models"]),
    ]
    print(f"{'default set (5 files) from':<36} {'median s':>9} {'exit':>5} {'lines':>6}  left behind")
    for label, extra in cases:
        results = [run(extra) for _ in range(args.runs)]
        med = statistics.median(r[0] for r in results)
        _, code, lines, left = results[-1]
        print(f"{label:<36} {med:>9.2f} {code:>5} {lines:>6}  {', '.join(left) or 'nothing'}")


if __name__ == "__main__":
    main()
