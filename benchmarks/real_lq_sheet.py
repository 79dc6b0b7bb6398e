"""Side-by-side pictures of the real degraded photos: input | restored (| reference).

Runs the real ``refrestore fix`` (a subprocess, exactly as a user would) on
``shared/data/real_lq/whole`` with ``--save-faces``, then joins every face's saved input and
restored crops into one sheet per photo and one contact sheet of all faces, and prints the
variance of the Laplacian inside each face before and after (the issue's smoothing check).
The pictures stay out of the repository (the photos' licences; see models/refnet-small.md).

    python benchmarks/real_lq_sheet.py --out runs/real_lq [--refs ../shared/data/identities]
        [--fidelity F] [--weights-dir DIR]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"


def lap_var(img: np.ndarray) -> float:
    g = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    h = g.shape[0]
    m = h // 8  # the central face area of the aligned crop
    return float(cv2.Laplacian(g[m:h - m, m:h - m], cv2.CV_64F).var())


def label(img: np.ndarray, text: str) -> np.ndarray:
    out = img.copy()
    cv2.rectangle(out, (0, 0), (out.shape[1], 26), (0, 0, 0), -1)
    cv2.putText(out, text, (6, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--input", type=Path, default=SHARED / "real_lq" / "whole")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "real_lq")
    ap.add_argument("--refs", type=Path, default=None)
    ap.add_argument("--fidelity", type=float, default=None)
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more fix options")
    args = ap.parse_args()
    fixed = args.out / "fixed"
    cmd = [sys.executable, "-m", "refrestore", "fix", str(args.input), "-o", str(fixed), "--save-faces",
           "--overwrite", "--json", str(args.out / "report.json")]
    if args.refs is not None:
        cmd += ["--refs", str(args.refs)]
    if args.fidelity is not None:
        cmd += ["--fidelity", str(args.fidelity)]
    cmd += args.extra
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    print(res.stdout[-3000:], res.stderr[-3000:])
    tiles, ratios = [], []
    for faces_dir in sorted(fixed.glob("*_faces")):
        for inp in sorted(faces_dir.glob("face*_input.png")):
            rest = inp.with_name(inp.name.replace("_input", "_restored"))
            if not rest.is_file():
                continue
            a, b = cv2.imread(str(inp)), cv2.imread(str(rest))
            b = cv2.resize(b, (a.shape[1], a.shape[0]), interpolation=cv2.INTER_AREA)
            va, vb = lap_var(a), lap_var(b)
            ratios.append(vb / max(va, 1e-6))
            name = f"{faces_dir.name[:-len('_restored_faces')] if faces_dir.name.endswith('_restored_faces') else faces_dir.name} {inp.name[:6]}"
            print(f"{name}: laplacian variance {va:.0f} -> {vb:.0f} ({vb / max(va, 1e-6):.2f}x)")
            pair = np.concatenate([label(cv2.resize(a, (256, 256)), "input"),
                                   label(cv2.resize(b, (256, 256)), f"restored {vb / max(va, 1e-6):.2f}x")], axis=1)
            tiles.append(label(pair, name) if False else pair)
            cv2.imwrite(str(args.out / f"{faces_dir.name}_{inp.stem[:6]}_pair.jpg"), pair, [cv2.IMWRITE_JPEG_QUALITY, 90])
    if tiles:
        cols = 4
        rows = [np.concatenate(tiles[i:i + cols] + [np.zeros_like(tiles[0])] * (cols - len(tiles[i:i + cols])), axis=1)
                for i in range(0, len(tiles), cols)]
        cv2.imwrite(str(args.out / "sheet.jpg"), np.concatenate(rows, axis=0), [cv2.IMWRITE_JPEG_QUALITY, 88])
        r = np.asarray(ratios)
        print(f"{len(r)} faces: Laplacian variance ratio restored/input median {np.median(r):.2f}, "
              f"min {r.min():.2f}, max {r.max():.2f}; faces smoother than their input: {(r < 1).sum()}")


if __name__ == "__main__":
    main()
