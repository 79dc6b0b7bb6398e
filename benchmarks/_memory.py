"""Peak resident memory while a block runs, sampled from /proc (Linux)."""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Iterator


def rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


@contextmanager
def peak_rss(result: dict) -> Iterator[None]:
    """Fills result['peak_mb'] (peak RSS during the block) and result['delta_mb'] (above the start)."""
    start = rss_bytes()
    peak = [start]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.002)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    t0 = time.perf_counter()
    try:
        yield
    finally:
        result["seconds"] = time.perf_counter() - t0
        stop.set()
        t.join()
        peak[0] = max(peak[0], rss_bytes())
        result["peak_mb"] = peak[0] / 2**20
        result["delta_mb"] = (peak[0] - start) / 2**20
