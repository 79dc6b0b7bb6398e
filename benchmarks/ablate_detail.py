"""The reference detail stage, each part on and off, on held-out people.

For every variant the gains are fitted again on the training people (as
``benchmarks/fit_detail.py`` does for the shipped one), then it runs on the held-out people of
``shared/data/faces`` at 256 (one photo each) and of ``shared/data/refbench`` at 512 (every photo), after
the shipped network with the person's 3 most similar other photos (``refrestore eval``'s
protocol). Rows: the restorer alone, the issue's plain training-free baseline, the full stage
at fidelity 0.5 (the default), 1 and 0, and the full stage with one part switched off.
Columns: PSNR, hf_ratio, hf_corr, identity distance (dlib, the metric only).

    python benchmarks/ablate_detail.py --threads 1 [--step 2] [--only full no_flow ...]
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
sys.path.insert(0, str(Path(__file__).resolve().parent))

VARIANTS = {
    "full": {},  # affine + DIS flow (the spline is off by default)
    "no landmarks (flow only)": {"landmarks": False},
    "no flow (affine only)": {"flow": False},
    "no correspondence": {"landmarks": False, "flow": False},
    "with the spline (affine + spline + flow)": {"spline": True},
    "affine + spline, no flow": {"spline": True, "flow": False},
    "no agreement between references": {"agreement": False},
    "no agreement with the face": {"face_agreement": False},
    "no visibility": {"visibility": False},
    "no regions": {"regions": False},
    "plain mean (no weighted fusion)": {"weighted": False},
}


def issue_baseline(restored: np.ndarray, refs: list[np.ndarray]) -> np.ndarray:
    """The issue's plain version: DIS on band-limited copies (``net.warp``), a 15-px local
    correlation of the 3.5-px low band, softmax over the references, the 3.5-px detail band
    added where the confidence exceeds 0.5 (pixels at 512)."""
    from refrestore.net.warp import align_references

    size = restored.shape[0]
    s = size / 512.0
    sig, win = 3.5 * s, int(round(15 * s)) | 1

    def grey(x: np.ndarray) -> np.ndarray:
        return cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).astype(np.float32)

    def ncc(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ma, mb = cv2.blur(a, (win, win)), cv2.blur(b, (win, win))
        va = np.maximum(cv2.blur(a * a, (win, win)) - ma * ma, 1e-3)
        vb = np.maximum(cv2.blur(b * b, (win, win)) - mb * mb, 1e-3)
        return (cv2.blur(a * b, (win, win)) - ma * mb) / np.sqrt(va * vb)

    low = cv2.GaussianBlur(grey(restored), (0, 0), sig)
    confs, bands = [], []
    for w in align_references(restored, refs, size):
        g = grey(w)
        lw = cv2.GaussianBlur(g, (0, 0), sig)
        confs.append(ncc(low, lw))
        bands.append(g - lw)
    c = np.stack(confs)
    wts = np.exp((c - c.max(0)) / 0.1)
    wts /= wts.sum(0)
    add = (wts * np.stack(bands)).sum(0) * ((wts * c).sum(0) > 0.5)
    return np.clip(restored.astype(np.float32) + add[..., None] + 0.5, 0, 255).astype(np.uint8)


def held_out(restorer, preset: str):
    from refrestore.training.evaluate import samples

    sets = {"faces held-out 256": (SHARED / "faces", 256, "held-out", 1),
            "refbench held-out 512": (SHARED / "refbench", 512, "held-out", None)}
    out = {}
    for name, (data, size, split, limit) in sets.items():
        _, todo = samples(data, preset, top_k=3, limit=limit, size=size, split=split)
        out[name] = [(restorer.restore([s.lq], [s.refs])[0], [r.image for r in s.refs], s.gt, s.lq) for s in todo]
    return out


class Scorer:
    def __init__(self) -> None:
        from refrestore.identity import DlibIdentity

        self.emb = DlibIdentity()
        self.truth: dict[int, np.ndarray] = {}

    def __call__(self, outs: list[np.ndarray], cases: list) -> tuple[float, ...]:
        from refrestore.training.metrics import hf_scores, psnr

        vals = []
        for i, (out, case) in enumerate(zip(outs, cases)):
            gt = case[2]
            key = id(gt)
            if key not in self.truth:
                self.truth[key] = self.emb.embed([gt])[0]
            e = self.emb.embed([out])[0]
            vals.append((psnr(out, gt), *hf_scores(out, gt), float(np.linalg.norm(e - self.truth[key]))))
        a = np.asarray(vals)
        return tuple(float(v) for v in a.mean(0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--weights", type=Path, default=REPO / "models" / "refnet_small.pth")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--step", type=int, default=1, help="fit on every N-th training sample")
    ap.add_argument("--only", nargs="*", default=None, help="variant names (default: all)")
    ap.add_argument("--moderate", action="store_true", help="also the full stage on the moderate preset")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    from fit_detail import fit_gains, training_samples

    from refrestore.detail import DetailOptions, DetailStage
    from refrestore.restorers.refnet import RefNetRestorer

    restorer = RefNetRestorer.from_file(args.weights, torch.device("cpu"))
    t = time.perf_counter()
    training = training_samples(restorer, ["severe", "moderate"], args.step)
    evals = held_out(restorer, "severe")
    print(f"{len(training)} training faces, {sum(map(len, evals.values()))} held-out; {time.perf_counter() - t:.0f} s",
          flush=True)
    score = Scorer()
    landmarker = DetailStage().landmarker
    lines = ["| variant | " + " | ".join(f"{n}: PSNR / hf_ratio / hf_corr / id" for n in evals) + " |",
             "|---|" + "---|" * len(evals)]

    def row(label: str, make) -> None:
        cells = []
        for cases in evals.values():
            p, r, c, d = score([make(case) for case in cases], cases)
            cells.append(f"{p:.2f} / {r:.3f} / {c:.3f} / {d:.4f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)

    row("bicubic (the degraded input)", lambda c: c[3])
    row("restorer alone (refnet-small, references)", lambda c: c[0])
    row("the issue's plain baseline", lambda c: issue_baseline(c[0], c[1]))
    shipped = DetailStage(landmarker=landmarker)
    row("shipped stage (fuse.py's gains), fidelity 0.5", lambda c: shipped.add(c[0], c[1]).image)
    for name, switches in VARIANTS.items():
        if args.only and name not in args.only and name.split()[0] not in args.only:
            continue
        opts = DetailOptions(**switches)
        alpha, beta = fit_gains(DetailStage(opts, landmarker), training)
        stage = DetailStage(dataclasses.replace(opts, alpha=alpha, beta=beta), landmarker)
        fids = (0.5, 1.0, 0.0) if name == "full" else (0.5,)
        for f in fids:
            label = f"{name}, fidelity {f}" if name == "full" else name
            row(label, lambda c, f=f: stage.add(c[0], c[1], fidelity=f).image)
    if args.moderate:
        evals = held_out(restorer, "moderate")
        lines.append("| **moderate** | |")
        row("moderate: bicubic", lambda c: c[3])
        row("moderate: restorer alone", lambda c: c[0])
        row("moderate: full stage, fidelity 0.5", lambda c: DetailStage(landmarker=landmarker).add(c[0], c[1]).image)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
