"""Speed and memory of the embedded RefNet against a GFPGAN v1.4-architecture forward pass.

Both run on the same CPU in the same process with the same thread count; GFPGAN is built with
random weights (its speed does not depend on them). Prints seconds per 512 face (median of
several runs), the ratio, and the peak resident memory of a separate RefNet-only process.

    python benchmarks/bench_refnet.py [--threads 1] [--refs 1 3 5] [--runs 5]
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent



def _faces(k: int) -> tuple[np.ndarray, list]:
    from refrestore.faces import Reference
    from refrestore.training.data import read_rgb

    root = REPO.parent / "shared" / "data" / "refbench" / "hq" / "00005"
    imgs = [read_rgb(p) for p in sorted(root.glob("*.png"))[: k + 1]] if root.is_dir() else []
    rng = np.random.default_rng(0)
    while len(imgs) < k + 1:
        imgs.append(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8))
    return imgs[0], [Reference(image=im, path=f"ref{i}") for i, im in enumerate(imgs[1:])]


def peak_memory_child(k: int, threads: int) -> None:
    """Run in a fresh process: restore one face with K references, print peak RSS in MB."""
    torch.set_num_threads(threads)
    from refrestore.restorers.refnet import REFNET_SPEC

    face, refs = _faces(k)
    r = REFNET_SPEC.factory(Path("."), torch.device("cpu"), False)
    r.restore([face], [refs])
    # VmHWM (peak resident set of this address space); ru_maxrss would carry over the parent's
    # peak across fork+exec.
    status = Path("/proc/self/status")
    if status.is_file():
        line = next(l for l in status.read_text().splitlines() if l.startswith("VmHWM:"))
        mb = int(line.split()[1]) / 1024
    else:
        mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_rss_mb": mb}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--refs", type=int, nargs="+", default=[1, 3, 5])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--child-mem", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_mem is not None:
        peak_memory_child(args.child_mem, args.threads)
        return
    torch.set_num_threads(args.threads)
    from refrestore.restorers.refnet import REFNET_SPEC

    # The GFPGAN v1.4 architecture (GFPGANv1Clean, 512, channel multiplier 2), random weights.
    from spandrel.architectures.GFPGAN import GFPGAN

    gfpgan_model = GFPGAN(out_size=512, num_style_feat=512, channel_multiplier=2, num_mlp=8,
                          input_is_latent=True, different_w=True, narrow=1, sft_half=True).eval()
    x = torch.rand(1, 3, 512, 512) * 2 - 1

    def gfpgan() -> None:
        with torch.no_grad():
            gfpgan_model(x, return_rgb=False)

    restorer = REFNET_SPEC.factory(Path("."), torch.device("cpu"), False)
    print(f"refnet-small: {sum(p.numel() for p in restorer.model.parameters()):,} parameters")
    ks = [0] + list(args.refs)
    inputs = {k: _faces(k) for k in ks}
    calls = {"gfpgan": gfpgan}
    for k in ks:
        face, refs = inputs[k]
        calls[f"K={k}"] = (lambda f=face, r=refs: restorer.restore([f], [r]))
    # Interleaved rounds: on a shared machine the load changes from second to second, so each
    # round times every candidate back to back and the medians compare like with like.
    times: dict[str, list[float]] = {name: [] for name in calls}
    for fn in calls.values():
        fn()  # warm-up
    for _ in range(args.runs):
        for name, fn in calls.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    t_gfp = statistics.median(times["gfpgan"])
    print(f"threads {args.threads}; GFPGAN v1.4 architecture forward (512, random weights): {t_gfp:.3f} s/face")
    for k in ks:
        t = statistics.median(times[f"K={k}"])
        ratios = [a / b for a, b in zip(times[f"K={k}"], times["gfpgan"])]
        print(f"refnet-small K={k}: {t:.3f} s/face  ({t / t_gfp:.3f} of GFPGAN, per-round ratio "
              f"median {statistics.median(ratios):.3f}; target <= 0.100)")
    for k in [1, 5]:
        res = subprocess.run([sys.executable, __file__, "--child-mem", str(k), "--threads", str(args.threads)],
                             capture_output=True, text=True, check=True)
        mb = json.loads(res.stdout.strip().splitlines()[-1])["peak_rss_mb"]
        print(f"refnet-small K={k}: peak memory of a process restoring one face: {mb:.0f} MB (target < 1536)")


if __name__ == "__main__":
    main()
