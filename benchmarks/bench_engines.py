"""The local engine and the Ray engine on the same album of real photos, in the same run.

    python benchmarks/bench_engines.py [--shared ../shared] [--count 60] [--model auto] [--detector dlib]
                                       [--workers 1] [--threads 1]

Builds the album of ``bench_batch.py`` (real photos from shared/), restores it once with the
local engine and once with the Ray engine on a local Ray of ``--workers`` CPUs, checks that
both wrote the same bytes, and prints images/s for each: end to end (pipeline built, Ray
started, workers started) and for Ray also with Ray already running, as on a cluster.
"""
from __future__ import annotations

import argparse
import filecmp
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_batch import album  # noqa: E402

from refrestore.api import build_pipeline  # noqa: E402
from refrestore.discover import find_inputs  # noqa: E402
from refrestore.engines import BatchOptions, plan_outputs, run_local  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared")
    ap.add_argument("--count", type=int, default=60)
    ap.add_argument("--model", default="auto")
    ap.add_argument("--detector", default="dlib")
    ap.add_argument("--workers", type=int, default=1, help="Ray workers (one CPU each)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads, locally and in each Ray worker")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)

    import ray

    from refrestore.engines.ray import PipelineSpec, RayOptions, run_ray

    tmp = Path(tempfile.mkdtemp())
    src = album(args.shared, tmp / "album", args.count)
    inputs, _ = find_inputs([src], recursive=False)
    options = BatchOptions(jobs=2, prefetch=2)

    t0 = time.perf_counter()
    built = build_pipeline(model=args.model, detector=args.detector, device="cpu")
    t1 = time.perf_counter()
    local = run_local(plan_outputs(inputs, tmp / "local", single_file=False), built.pipeline, options)
    t2 = time.perf_counter()
    restorer = built.pipeline.restorer.info.name

    t3 = time.perf_counter()
    ray.init(address="local", num_cpus=args.workers, object_store_memory=256 * 2**20, include_dashboard=False,
             log_to_driver=False, logging_level=logging.WARNING,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": str(args.threads)}})
    t4 = time.perf_counter()
    spec = PipelineSpec(model=args.model, detector=args.detector, device="cpu")
    run = run_ray(plan_outputs(inputs, tmp / "ray", single_file=False), spec, None, options, RayOptions(workers=args.workers))
    t5 = time.perf_counter()
    ray.shutdown()

    n = len(inputs)
    assert run.summary.fatal is None, run.summary.fatal
    assert [r.status for r in run.summary.images] == [r.status for r in local.images]
    names = sorted(p.name for p in (tmp / "local").iterdir())
    same = names == sorted(p.name for p in (tmp / "ray").iterdir()) and all(
        filecmp.cmp(tmp / "local" / f, tmp / "ray" / f, shallow=False) for f in names)
    print(f"{n} real photos, restorer {restorer}, detector {args.detector}, torch threads {args.threads}, "
          f"Ray workers {args.workers}, CPU; outputs byte-identical: {'yes' if same else 'NO'}")
    print("| engine | what is timed | seconds | images/s |\n|---|---|---|---|")
    print(f"| local | pipeline built, album restored | {t2 - t0:.1f} | {n / (t2 - t0):.2f} |")
    print(f"| local | album restored | {t2 - t1:.1f} | {n / (t2 - t1):.2f} |")
    print(f"| ray | Ray started, workers started, album restored | {t5 - t3:.1f} | {n / (t5 - t3):.2f} |")
    print(f"| ray | Ray already running: workers started, album restored | {t5 - t4:.1f} | {n / (t5 - t4):.2f} |")
    print(f"Ray costs {100 * ((t5 - t3) / (t2 - t0) - 1):+.0f}% end to end, "
          f"{100 * ((t5 - t4) / (t2 - t0) - 1):+.0f}% with Ray already running")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
