"""The blind path (no references) of one or more RefNet weights, on held-out people, side by side.

For each photo (one per held-out person of ``shared/data/faces`` at 256, ``refrestore.net.split``)
three damages: the ``severe`` and ``moderate`` presets (as ``refrestore eval``) and ``real``, one
chain of ``refrestore.training.damage`` per photo (JPEG at the small size, shake and defocus, noise
before and after compression, halftone, scan lines, faded prints; a fixed seed per photo, the
same for every weights file). Rows: each weights file without references, and bicubic (the
damaged input). PSNR/SSIM on RGB 0-255; identity distance with dlib (the metric only).

    python benchmarks/eval_blind.py --weights models/refnet_small.pth runs/refnet-v6/last.pth \
        [--people 40] [--settings severe moderate real] [--threads 1]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, nargs="+", default=[REPO / "models" / "refnet_small.pth"])
    ap.add_argument("--people", type=int, default=40, help="held-out people of faces (one photo each)")
    ap.add_argument("--settings", nargs="+", default=["severe", "moderate", "real"])
    ap.add_argument("--no-identity", action="store_true", help="skip dlib (faster)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from refrestore.training.damage import apply_damage, random_damage
    from refrestore.training.data import FaceBank
    from refrestore.net.degrade import degrade, preset, scaled_for
    from refrestore.training.evaluate import photo_seed, select_people
    from refrestore.training.metrics import psnr, ssim
    from refrestore.restorers.refnet import RefNetRestorer

    emb = None
    if not args.no_identity:
        from refrestore.identity import DlibIdentity

        emb = DlibIdentity()
    people = select_people(SHARED / "faces", "held-out")[: args.people]
    bank = FaceBank(SHARED / "faces", size=256, include=people)
    restorers = {str(w): RefNetRestorer.from_file(w, torch.device("cpu")) for w in args.weights}
    print("| setting | row | PSNR | SSIM | id dist |")
    print("|---|---|---|---|---|")
    for setting in args.settings:
        t = time.perf_counter()
        rows: dict[str, list[tuple[float, float, float]]] = {}
        for person in sorted(bank.images):
            gt = bank.images[person][0]
            seed = photo_seed(person, 0)
            if setting == "real":
                lq, gt = apply_damage(gt, random_damage(np.random.default_rng(seed), gt.shape[0]), seed)
            else:
                lq = degrade(gt, scaled_for(preset(setting), gt.shape[0]), seed=seed)
            outs = {"bicubic": lq, **{name: r.restore([lq], [[]])[0] for name, r in restorers.items()}}
            names = list(outs)
            e = emb.embed([gt, *outs.values()]) if emb is not None else None
            for i, name in enumerate(names):
                d = float(np.linalg.norm(e[i + 1] - e[0])) if e is not None else float("nan")
                rows.setdefault(name, []).append((psnr(outs[name], gt), ssim(outs[name], gt), d))
        for name, vals in rows.items():
            a = np.asarray(vals)
            print(f"| {setting} (n={len(vals)}) | {name} | {a[:, 0].mean():.2f} | {a[:, 1].mean():.4f} | {a[:, 2].mean():.4f} |",
                  flush=True)
        print(f"<!-- {setting}: {time.perf_counter() - t:.0f} s -->", flush=True)


if __name__ == "__main__":
    main()
