"""Issue 10's ablation table: each seed module of the trained network switched off in turn.

``refrestore.training.evaluate.ablate`` rebuilds the network with one config flag off (that module's
weights dropped, everything else as trained) and evaluates it: severe, held-out people of
``shared/data/faces`` at 256, three references. Modules that act only during training (the
reconstruction branch's cycle loss, the hard-example identity loss) cannot be switched off
at inference; their rows are the training runs' (see models/refnet-small.md).

    python benchmarks/ablation.py --weights models/refnet_small.pth --people 40 --threads 1
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--weights", type=Path, default=REPO / "models" / "refnet_small.pth")
    ap.add_argument("--data", type=Path, default=SHARED / "faces")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--people", type=int, default=40, help="first N held-out people (one photo each)")
    ap.add_argument("--preset", default="severe")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from refrestore.identity import DlibIdentity
    from refrestore.training.evaluate import ablate, select_people

    people = select_people(args.data, "held-out")[: args.people]
    reports = ablate(args.weights, args.data, preset_name=args.preset, top_k=3, limit=1, people=people,
                     embedder=DlibIdentity(), size=args.size, split="held-out")
    full = reports["full"].rows["model"]
    lines = ["| switched off | PSNR | SSIM | id dist | hf_ratio | hf_corr | PSNR vs full | id dist vs full |",
             "|---|---|---|---|---|---|---|---|"]
    for name, rep in reports.items():
        s = rep.rows["model"]
        lines.append(f"| {'nothing (full network)' if name == 'full' else name} | {s.psnr:.2f} | {s.ssim:.4f} | "
                     f"{s.id_dist:.4f} | {s.hf_ratio:.3f} | {s.hf_corr:.3f} | {s.psnr - full.psnr:+.2f} | "
                     f"{s.id_dist - full.id_dist:+.4f} |")
    print(f"{args.weights}: {args.preset}, {len(people)} held-out people of {args.data} at {args.size}")
    print("\n".join(lines))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({k: v.to_json() for k, v in reports.items()}, indent=2))


if __name__ == "__main__":
    main()
