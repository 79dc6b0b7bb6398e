"""Album throughput on the CPU: images per second and peak memory, with and without prefetch.

    python benchmarks/bench_batch.py [--shared ../shared] [--count 60] [--model auto] [--detector dlib]

Builds an album of real photos from shared/ (whole photos, aligned crops, greyscale faces,
refbench portraits), then runs the same batch runner `fix` uses, once decoding each image
only when it is needed (--prefetch 0) and once decoding ahead on worker threads.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _memory import peak_rss  # noqa: E402

from refrestore.api import build_pipeline  # noqa: E402
from refrestore.batch import BatchOptions, plan_outputs, run_batch  # noqa: E402
from refrestore.discover import find_inputs  # noqa: E402


def album(shared: Path, folder: Path, count: int) -> Path:
    data = shared / "data"
    sources = (
        sorted((data / "real_lq" / "whole").iterdir())
        + sorted((data / "real_lq" / "cropped_faces").iterdir())
        + sorted((data / "real_lq" / "gray_faces").iterdir())
        + sorted((data / "refbench" / "hq").glob("*/*.png"))
    )
    folder.mkdir(parents=True)
    for i, src in enumerate(sources[:count]):
        shutil.copyfile(src, folder / f"{i:03d}_{src.name}")
    return folder


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared")
    ap.add_argument("--count", type=int, default=60)
    ap.add_argument("--model", default="auto")
    ap.add_argument("--detector", default="dlib")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp())
    src = album(args.shared, tmp / "album", args.count)
    built = build_pipeline(model=args.model, detector=args.detector, device="cpu")
    inputs, _ = find_inputs([src], recursive=False)
    print(f"{len(inputs)} real photos, restorer {built.pipeline.restorer.info.name}, detector {args.detector}, torch threads {args.threads}, CPU")
    print("| prefetch | images | seconds | images/s | peak RSS (MB) |\n|---|---|---|---|---|")
    for prefetch in (0, 2):
        out = tmp / f"out{prefetch}"
        tasks = plan_outputs(inputs, out, single_file=False)
        r: dict = {}
        with peak_rss(r):
            summary = run_batch(tasks, built.pipeline, BatchOptions(prefetch=prefetch, jobs=2))
        n = len(summary.images)
        print(f"| {prefetch} | {n} | {r['seconds']:.1f} | {n / r['seconds']:.2f} | {r['peak_mb']:.0f} |")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
