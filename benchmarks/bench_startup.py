"""Start-up time and memory of the command line, beside a bare ``python -c pass``.

    python benchmarks/bench_startup.py [--runs 10]

Each command runs as a fresh process (the way a user starts it); the figures are the median
wall time over ``--runs`` runs and the peak resident memory of the child (ru_maxrss).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

COMMANDS: list[tuple[str, list[str]]] = [
    ("python -c pass", ["-c", "pass"]),
    ("refrestore --version", ["-m", "refrestore", "--version"]),
    ("refrestore --help", ["-m", "refrestore", "--help"]),
    ("refrestore fix --help", ["-m", "refrestore", "fix", "--help"]),
    ("refrestore match --help", ["-m", "refrestore", "match", "--help"]),
    ("refrestore download-weights --help", ["-m", "refrestore", "download-weights", "--help"]),
]


def run_once(args: list[str]) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, peak RSS in bytes) of one fresh process. CPU time is the
    steadier figure on a busy machine, where wall time includes waiting for a core."""
    env = dict(os.environ, COLUMNS="100")
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(args)} failed: {proc.stderr.read().decode() if proc.stderr else ''}")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    rows = []
    for label, argv in COMMANDS:
        run_once(argv)  # warm the file cache, as every run after the first is
        times, cpus, peaks = zip(*(run_once(argv) for _ in range(args.runs)))
        rows.append((label, statistics.median(times), max(times), statistics.median(cpus), max(peaks)))
    base = rows[0][1]
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores, {args.runs} runs each")
    print(f"{'command':<38} {'median s':>9} {'max s':>7} {'+ over pass':>11} {'CPU s':>6} {'peak MB':>8}")
    for label, med, worst, cpu, peak in rows:
        print(f"{label:<38} {med:>9.3f} {worst:>7.3f} {med - base:>11.3f} {cpu:>6.3f} {peak / 1e6:>8.0f}")


if __name__ == "__main__":
    main()
