"""Fit the reference detail stage's gains (``refrestore.detail.fuse.ALPHA``/``BETA``) on training
people only, and print them to paste into ``fuse.py``.

Samples: the training people of ``shared/data/faces`` at 256 (one photo each) and of
``shared/data/refbench`` at 512 (every photo), degraded with ``severe`` and with ``moderate``
as ``refrestore eval`` does, restored by the restorer with the person's 3 most similar other
photos, then the stage's terms against the truth (``detail.calibrate.GainFit``). Held-out
people (``refrestore.net.split``) are never read.

    python benchmarks/fit_detail.py --threads 1 [--step 2] [--presets severe moderate]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"


def training_samples(restorer, presets, step: int = 1, split: str = "train"):
    """[(restored, reference images, truth)] of the training people (every step-th sample)."""
    from refrestore.training.evaluate import samples

    sets = {"faces": (SHARED / "faces", 256, 1), "refbench": (SHARED / "refbench", 512, None)}
    out = []
    for data, size, limit in sets.values():
        for preset in presets:
            _, todo = samples(data, preset, top_k=3, limit=limit, size=size, split=split)
            for i, s in enumerate(todo):
                if i % step == 0:
                    out.append((restorer.restore([s.lq], [s.refs])[0], [r.image for r in s.refs], s.gt))
    return out


def fit_gains(stage, training):
    """(alpha, beta) fitted for ``stage``'s options on ``training`` samples."""
    from refrestore.detail.calibrate import GainFit

    acc = GainFit()
    for restored, refs, truth in training:
        acc.add(stage, restored, refs, truth)
    return acc.solve()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--weights", type=Path, default=REPO / "models" / "refnet_small.pth")
    ap.add_argument("--presets", nargs="+", default=["severe", "moderate"])
    ap.add_argument("--step", type=int, default=1, help="use every N-th training sample")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not SHARED.is_dir():
        raise SystemExit(f"{SHARED} not found: the training data are needed")

    from refrestore.detail import DetailStage
    from refrestore.restorers.refnet import RefNetRestorer

    restorer = RefNetRestorer.from_file(args.weights, torch.device("cpu"))
    t = time.perf_counter()
    training = training_samples(restorer, args.presets, args.step)
    alpha, beta = fit_gains(DetailStage(), training)
    print(f"{len(training)} training faces, {time.perf_counter() - t:.0f} s")
    print("ALPHA = np.array(" + repr(np.round(alpha, 3).tolist()) + ", np.float32)")
    print("BETA = np.array(" + repr(np.round(beta, 3).tolist()) + ", np.float32)")


if __name__ == "__main__":
    main()
