"""Issue 10's figures: the reference-guided network on held-out people.

Two sets: the held-out people of ``shared/data/faces`` at 256 (``refrestore.net.split``; every
person's photo is restored with that person's other photos) and all of ``shared/data/refbench``
at 512 (its held-out people 00005 and 00089 reported apart). For each: severe at the default
fidelity, severe at fidelity 1, moderate at the default; rows model / no_ref / bicubic with PSNR,
SSIM, identity distance (dlib, the metric only), hf_ratio and hf_corr (``metrics.hf_scores``).
References: the 3 most similar other photos of the person (``fix``'s default top-k).

    python benchmarks/eval_quality.py --weights models/refnet_small.pth --threads 1 [--limit 1]
        [--json runs/eval/quality.json]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--weights", type=Path, default=REPO / "models" / "refnet_small.pth")
    ap.add_argument("--limit", type=int, default=1, help="photos per held-out person of faces")
    ap.add_argument("--refbench-limit", type=int, default=None)
    ap.add_argument("--top-k", type=int, default=3)
    ap.add_argument("--fidelity", type=float, default=None, help="the default fidelity (None: the network's)")
    ap.add_argument("--sets", nargs="+", default=["faces", "refbench"])
    ap.add_argument("--settings", nargs="+", default=["severe", "severe@1", "moderate"])
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from refrestore.identity import DlibIdentity
    from refrestore.training.evaluate import evaluate
    from refrestore.restorers.refnet import RefNetRestorer

    meta = torch.load(args.weights, map_location="cpu", weights_only=True).get("meta", {})
    restorer = RefNetRestorer.from_file(args.weights, torch.device("cpu"))
    emb = DlibIdentity()
    print(f"weights {args.weights} (step {meta.get('step', '?')}), top-k {args.top_k}, "
          f"fidelity {args.fidelity if args.fidelity is not None else 'default'}")
    sets = {"faces": (SHARED / "faces", 256, "held-out", args.limit),
            "refbench": (SHARED / "refbench", 512, "all", args.refbench_limit)}
    lines = ["| set | setting | row | PSNR | SSIM | id dist | hf_ratio | hf_corr |", "|---|---|---|---|---|---|---|---|"]
    out: dict[str, dict] = {}
    for set_name in args.sets:
        data, size, split, limit = sets[set_name]
        for setting in args.settings:
            preset, _, fid = setting.partition("@")
            fidelity = float(fid) if fid else args.fidelity
            t = time.perf_counter()
            rep = evaluate(restorer, data, preset, top_k=args.top_k, limit=limit, embedder=emb, size=size,
                           split=split, fidelity=fidelity)
            n = rep.rows["model"].n
            label = f"{set_name} {split} (n={n}, {size}px)"
            for row, s in rep.rows.items():
                lines.append(f"| {label} | {setting} | {row} | {s.psnr:.2f} | {s.ssim:.4f} | {s.id_dist:.4f} | "
                             f"{s.hf_ratio:.3f} | {s.hf_corr:.3f} |")
            r = rep.rows
            print(f"{set_name} {setting}: {time.perf_counter() - t:.0f} s; PSNR over bicubic "
                  f"{r['model'].psnr - r['bicubic'].psnr:+.2f} dB, hf_ratio {r['model'].hf_ratio:.3f}, id dist "
                  f"{r['model'].id_dist:.4f} (no_ref {r['no_ref'].id_dist:.4f}, bicubic {r['bicubic'].id_dist:.4f})",
                  flush=True)
            out[f"{set_name}/{setting}"] = rep.to_json()
    print("\n".join(lines))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"weights": str(args.weights), "meta": meta, "results": out}, indent=2))


if __name__ == "__main__":
    main()
