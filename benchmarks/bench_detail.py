"""Speed and memory of the reference detail stage (``refrestore.detail``).

Time: seconds the stage adds per 512 face with K references on one CPU thread (median of
``--runs``, after one warm-up that loads dlib's landmark model), on real faces: a severely
degraded photo of refbench's held-out person 00089 restored by the shipped network, and the
person's other photos as references. Also the restorer's own time, for scale.

On a shared machine the wall time counts the other processes' turns on the core; the CPU
time of the process (``time.process_time``, one thread) is what the stage costs on a core of
its own, and the load average is printed beside it.

Memory: peak resident memory of a fresh process that restores one face with the network and
adds the references' detail (torch runtime, network, dlib's 100 MB landmark model, the stage).

    python benchmarks/bench_detail.py [--threads 1] [--refs 1 3 5] [--runs 7]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
REFBENCH = REPO.parent / "shared" / "data" / "refbench"


def _case(k: int):
    from refrestore.training.evaluate import samples

    _, todo = samples(REFBENCH, "severe", top_k=k, limit=1, people=["00089"])
    return next(todo)


def child(k: int, threads: int) -> None:
    """In a fresh process: one face restored and given its references' detail; peak RSS in MB."""
    torch.set_num_threads(threads)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _memory import peak_rss

    from refrestore.detail import DetailStage
    from refrestore.restorers.refnet import RefNetRestorer, embedded_weights_path

    s = _case(k)
    result: dict = {}
    with peak_rss(result):
        restorer = RefNetRestorer.from_file(embedded_weights_path(), torch.device("cpu"))
        restored = restorer.restore([s.lq], [s.refs])[0]
        DetailStage().add(restored, [r.image for r in s.refs])
    print(json.dumps({"peak_mb": round(result["peak_mb"], 1)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--refs", type=int, nargs="+", default=[1, 3, 5])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not REFBENCH.is_dir():
        raise SystemExit(f"{REFBENCH} not found")
    if args.child is not None:
        child(args.child, args.threads)
        return
    torch.set_num_threads(args.threads)
    import cv2

    cv2.setNumThreads(args.threads)
    from refrestore.detail import DetailStage
    from refrestore.restorers.refnet import RefNetRestorer, embedded_weights_path

    restorer = RefNetRestorer.from_file(embedded_weights_path(), torch.device("cpu"))
    stage = DetailStage()
    for k in args.refs:
        s = _case(k)
        refs = [r.image for r in s.refs]
        net, add, cpu = [], [], []
        restored = restorer.restore([s.lq], [s.refs])[0]
        stage.add(restored, refs)  # warm-up: loads the landmark model
        for _ in range(args.runs):
            t = time.perf_counter()
            restored = restorer.restore([s.lq], [s.refs])[0]
            net.append(time.perf_counter() - t)
            t, c = time.perf_counter(), time.process_time()
            stage.add(restored, refs)
            add.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        mem = subprocess.run([sys.executable, __file__, "--child", str(k), "--threads", str(args.threads)],
                             capture_output=True, text=True, check=True)
        peak = json.loads(mem.stdout.strip().splitlines()[-1])["peak_mb"]
        print(f"load average {os.getloadavg()[0]:.1f}; K={len(refs)}: detail stage {statistics.median(add) * 1000:.0f} ms per 512 face "
              f"(min {min(add) * 1000:.0f}; CPU time {statistics.median(cpu) * 1000:.0f} ms, what it takes on an "
              f"idle core), restorer {statistics.median(net) * 1000:.0f} ms; "
              f"peak RSS of one face, network + stage, fresh process: {peak:.0f} MB", flush=True)


if __name__ == "__main__":
    main()
