"""Weights downloader and verification figures.

Measures, on this machine, for one file of --mb megabytes served by a local HTTP server:
- download throughput (streaming sha256, fsync, atomic rename), plain and with a cut
  half-way followed by a Range resume;
- ``WeightStore.find`` cold (hashes the file) and warm (size/mtime/ctime/inode cache hit).

    python benchmarks/bench_weights.py --mb 350
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from weights_http_server import FaultServer, write_manifest  # noqa: E402

from refrestore.weights import WeightStore, download, load_manifest  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=350, help="file size in MB (GFPGAN is ~350)")
    args = parser.parse_args()
    size = args.mb * 1_000_000
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        served = root / "served"
        served.mkdir()
        digest = hashlib.sha256()
        with open(served / "big.pth", "wb") as handle:
            left = size
            while left:
                block = os.urandom(min(left, 1 << 22))
                digest.update(block)
                handle.write(block)
                left -= len(block)
        server = FaultServer(served).start()
        try:
            manifest = write_manifest(root / "m.toml", [{
                "name": "big.pth", "role": "restorer", "models": ["big"], "url": server.url("big.pth"),
                "size": size, "sha256": digest.hexdigest(), "license": "MIT",
            }])
            for label, plan in (("plain", []), ("cut + resume", ["cut"])):
                store = WeightStore(root / f"w-{len(plan)}", load_manifest(manifest))
                server.plan["big.pth"] = list(plan)
                start = time.perf_counter()
                download(["big.pth"], store, backoff=0.0)
                took = time.perf_counter() - start
                print(f"download {label:13s}: {took:6.2f} s  {size / took / 1e6:7.1f} MB/s")
            start = time.perf_counter()
            store.find("big.pth")
            warm = time.perf_counter() - start
            (store.directory / ".verified.json").unlink()
            start = time.perf_counter()
            store.find("big.pth")
            cold = time.perf_counter() - start
            print(f"find cold (hash): {cold:6.3f} s   find warm (cached): {warm * 1000:6.2f} ms")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
