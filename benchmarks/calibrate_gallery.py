"""Reproduce the "same person" threshold calibration of refrestore.gallery.select.

Usage: python benchmarks/calibrate_gallery.py [IDENTITIES_DIR] [--identity dlib|arcface]
(default ../shared/data/identities). See refrestore/gallery/calibrate.py for the method
and the recorded figures.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from refrestore.gallery.calibrate import (
    collect,
    evaluate,
    mean_hubness,
    pick_threshold,
    score_distributions,
    sweep,
)

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    import tempfile

    torch.set_num_threads(2)
    start = time.perf_counter()
    from refrestore.detection import init_detector
    from refrestore.identity import init_identity_model

    parser = argparse.ArgumentParser(description="Calibrate the same-person thresholds.")
    parser.add_argument("identities", nargs="?", type=Path,
                        default=ROOT.parent / "shared" / "data" / "identities")
    parser.add_argument("--identity", default="dlib")
    parser.add_argument("--detector", default="dlib")
    args = parser.parse_args(argv)
    if not args.identities.is_dir():
        parser.error(f"{args.identities} is not a folder")
    identity = init_identity_model(args.identity)
    with tempfile.TemporaryDirectory() as tmp:
        data = collect(args.identities, init_detector(args.detector), identity, cache_dir=Path(tmp))
    out = [f"mean gallery hubness {mean_hubness(data):.4f}"]
    grid = np.round(np.arange(0.900, 0.960, 0.0025), 4)
    for kind in ("clean", "degraded"):
        gen, imp = score_distributions(data, kind)
        details = np.array([getattr(q, kind).detail for q in data.queries])
        points = sweep(data, kind, grid)
        thr = pick_threshold(points)
        best = next(p for p in points if p[0] == thr)
        out.append(f"{kind:9s} raw genuine-best p2 {np.percentile(gen, 2):.3f} min {gen.min():.3f} | "
                   f"impostor-best p95 {np.percentile(imp, 95):.3f} max {imp.max():.3f} | "
                   f"detail {details.min():.2f}-{details.max():.2f}")
        out.extend(f"{'':9s} threshold {t:.4f}: leave-one-out {a:.3f}, no match {b:.3f}"
                   for t, a, b in points if abs(t - thr) <= 0.0101)
        out.append(f"{'':9s} picked {thr:.4f}: leave-one-out {best[1]:.3f}, no match {best[2]:.3f}")
        ev_default = evaluate(data, kind)
        out.append(f"{'':9s} with the shipped thresholds: leave-one-out {ev_default.loo_correct:.3f} "
                   f"({ev_default.loo_total}), no match {ev_default.no_match:.3f} ({ev_default.no_match_total})")
    print(f"identity model {identity.name} {identity.version}; {len(data.queries)} photos")
    print("\n".join(out))
    for kind in ("clean", "degraded"):
        for line in evaluate(data, kind).failures:
            print("  shipped-threshold miss:", line)
    print(f"{time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
