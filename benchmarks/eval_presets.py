"""The README table: refnet (or any restorer) on refbench for the three presets.

Runs ``refrestore.training.evaluate.evaluate`` for moderate, severe and extreme, prints a markdown
table (all people, the held-out person, and the people seen in training), and writes every
report as JSON.

    python benchmarks/eval_presets.py [--weights models/refnet_small.pth] [--top-k 5]
        [--held-out 00089] [--json-dir runs/eval] [--threads 2] [--limit N]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent


def _mean(per_person: dict, people: list[str], row: str) -> tuple[float, float, float, int]:
    n = sum(per_person[p][row].n for p in people)
    if n == 0:
        return (float("nan"),) * 3 + (0,)  # type: ignore[return-value]
    w = [per_person[p][row].n / n for p in people]
    ps = sum(wi * per_person[p][row].psnr for wi, p in zip(w, people))
    ss = sum(wi * per_person[p][row].ssim for wi, p in zip(w, people))
    ids = sum(wi * per_person[p][row].id_dist for wi, p in zip(w, people))
    return ps, ss, ids, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "refbench")
    ap.add_argument("--weights", type=Path, default=REPO / "models" / "refnet_small.pth")
    ap.add_argument("--presets", nargs="+", default=["moderate", "severe", "extreme"])
    ap.add_argument("--top-k", type=int, default=None)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--held-out", nargs="*", default=None,
                    help="people not seen in training (default: read from the weights' metadata)")
    ap.add_argument("--json-dir", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from refrestore.identity import DlibIdentity
    from refrestore.training.evaluate import evaluate
    from refrestore.restorers.refnet import RefNetRestorer

    meta = torch.load(args.weights, map_location="cpu", weights_only=True).get("meta", {})
    held = args.held_out if args.held_out is not None else list(meta.get("held_out", []))
    restorer = RefNetRestorer.from_file(args.weights, torch.device("cpu"))
    emb = DlibIdentity()
    print(f"weights {args.weights} (step {meta.get('step', '?')}), top-k {args.top_k or 'all'}, "
          f"held out: {', '.join(held) or 'none'}")
    lines = ["| preset | people | row | PSNR | SSIM | id dist |", "|---|---|---|---|---|---|"]
    for name in args.presets:
        t = time.perf_counter()
        rep = evaluate(restorer, args.data, name, top_k=args.top_k, limit=args.limit, embedder=emb)
        people = list(rep.per_person)
        groups = [("all", people)]
        if held:
            groups += [("held-out " + ",".join(held), [p for p in people if p in held]),
                       ("seen in training", [p for p in people if p not in held])]
        for gname, gp in groups:
            for row in ("model", "no_ref", "bicubic"):
                ps, ss, ids, n = _mean(rep.per_person, gp, row)
                lines.append(f"| {name} | {gname} (n={n}) | {row} | {ps:.2f} | {ss:.4f} | {ids:.4f} |")
        print(f"{name}: {time.perf_counter() - t:.0f} s", flush=True)
        if args.json_dir is not None:
            args.json_dir.mkdir(parents=True, exist_ok=True)
            (args.json_dir / f"{name}.json").write_text(json.dumps(rep.to_json(), indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
