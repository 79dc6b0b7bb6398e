"""Average RefNet weights of one lineage (a "model soup", Wortsman et al. 2022) into one file.

    python tools/soup_weights.py OUT A.pth B.pth [--weights 0.5 0.5]

Each input is exported weights or a training checkpoint (its EMA); all must share one
config (refnet-v6 was trained from refnet-v2, so their weights sit in one basin and their
average is a working network, not a blend of two unrelated ones). Written as fp16 weights
with the inputs' steps in ``meta``. The shipped refnet-small is

    python tools/soup_weights.py models/refnet_small.pth runs/refnet-v2/last.pth \
        runs/refnet-v6/last.pth --weights 0.7 0.3

(README, "The blind path": ``benchmarks/eval_blind.py`` has the figures).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from refrestore.training.train import export_weights, read_weights


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("inputs", type=Path, nargs="+")
    ap.add_argument("--weights", type=float, nargs="+", help="one per input (default: equal)")
    a = ap.parse_args()
    w = a.weights or [1.0 / len(a.inputs)] * len(a.inputs)
    if len(w) != len(a.inputs) or abs(sum(w) - 1.0) > 1e-6:
        ap.error("--weights: one per input, summing to 1")
    loaded = [read_weights(p) for p in a.inputs]
    cfg = loaded[0][0]
    if any(c.to_dict() != cfg.to_dict() or set(sd) != set(loaded[0][1]) for c, sd in loaded[1:]):
        ap.error("the inputs do not share one config")
    soup = {k: (sum(wi * sd[k] for wi, (_, sd) in zip(w, loaded)) if v.is_floating_point() else v)
            for k, v in loaded[0][1].items()}
    steps = []
    for p in a.inputs:
        obj = torch.load(p, map_location="cpu", weights_only=True)
        steps.append(obj.get("step", obj.get("meta", {}).get("step")))
    export_weights(soup, cfg, a.out, {"soup": [{"file": str(p), "step": s, "weight": wi}
                                               for p, s, wi in zip(a.inputs, steps, w)]})


if __name__ == "__main__":
    main()
