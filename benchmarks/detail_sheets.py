"""Contact sheets of real degraded photos, with and without the reference detail stage.

Runs the real ``refrestore fix`` (subprocesses, as a user would) twice on a folder of photos,
``--no-detail`` and with the stage (the default), both with ``--save-faces --compare``, and
joins per face: input | restored without the stage | with it | the stage's confidence map |
the references that gave detail (with their shares, from the compare sheet). Two sets by
default: the 24 faces of ``shared/data/real_lq/whole`` against ``shared/data/identities``
(most of those people are not in it: no reference, so the stage does nothing), and
``shared/data/refbench/real_lq_no_gt`` against ``shared/data/refbench/hq``.

The pictures are third-party and non-commercial: they go to ``--out`` (default outside the
repository) and must not be committed.

    python benchmarks/detail_sheets.py [--out /tmp/refrestore-detail-sheets] [--fidelity F]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
SETS = {"real_lq_whole": (SHARED / "real_lq" / "whole", SHARED / "identities"),
        "refbench_real_lq": (SHARED / "refbench" / "real_lq_no_gt", SHARED / "refbench" / "hq")}
TILE = 256


def _label(img: np.ndarray, text: str) -> np.ndarray:
    out = cv2.resize(img, (TILE, TILE), interpolation=cv2.INTER_AREA)
    cv2.rectangle(out, (0, 0), (TILE, 22), (0, 0, 0), -1)
    cv2.putText(out, text[:34], (5, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def _fix(inputs: Path, refs: Path, out: Path, extra: list[str]) -> dict:
    report = out / "report.json"
    cmd = [sys.executable, "-m", "refrestore", "fix", str(inputs), "--refs", str(refs), "-o", str(out / "fixed"),
           "--save-faces", "--compare", "--overwrite", "--json", str(report), *extra]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode not in (0, 1):
        raise SystemExit(res.stderr[-2000:])
    return json.loads(report.read_text())


def _face_refs(compare: Path, n_refs: int) -> list[np.ndarray]:
    """The reference panels of a compare sheet (input | restored | references...)."""
    sheet = cv2.imread(str(compare))
    if sheet is None:
        return []
    return [sheet[:, (2 + i) * 520:(2 + i) * 520 + 512] for i in range(n_refs)
            if (2 + i) * 520 + 512 <= sheet.shape[1]]


def sheet_for(name: str, inputs: Path, refs: Path, out: Path, extra: list[str]) -> None:
    plain = _fix(inputs, refs, out / "no_detail", ["--no-detail", *extra])
    stage = _fix(inputs, refs, out / "detail", extra)
    rows = []
    for img_plain, img in zip(plain["images"], stage["images"]):
        if img.get("status") != "ok":
            continue
        stem = Path(img["output"]).stem
        faces_dir = out / "detail" / "fixed" / f"{stem}_faces"
        plain_dir = out / "no_detail" / "fixed" / f"{stem}_faces"
        for face in img["faces"]:
            k = face["index"]
            tile = lambda folder, tag: cv2.imread(str(folder / f"face{k:02d}_{tag}.png"))  # noqa: E731
            inp, before, after = tile(faces_dir, "input"), tile(plain_dir, "restored"), tile(faces_dir, "restored")
            if inp is None or after is None:
                continue
            detail = face.get("detail") or {}
            conf = tile(faces_dir, "confidence")
            person = (face.get("reference") or {}).get("person") or "no match"
            change = f"detail +{detail.get('change', 0):.1f}" if detail.get("added") else (
                "no reference" if not face.get("reference") else "detail: none added")
            panels = [_label(inp, f"{stem} f{k} input"), _label(before if before is not None else inp, "restored, no stage"),
                      _label(after, f"with stage: {change}"),
                      _label(conf, "confidence") if conf is not None else np.zeros((TILE, TILE, 3), np.uint8)]
            shown = [r for r in (detail.get("references") or []) if r.get("share", 0) >= 0.05] if detail.get("added") else []
            compare = out / "detail" / "fixed" / f"{stem}_compare_face{k:02d}.jpg"
            for r, img_ref in zip(shown, _face_refs(compare, len(shown))):
                panels.append(_label(img_ref, f"{person}: {r['share']:.0%}"))
            while len(panels) < 7:
                panels.append(np.zeros((TILE, TILE, 3), np.uint8))
            rows.append(np.concatenate(panels[:7], axis=1))
    if rows:
        path = out / f"{name}.jpg"
        cv2.imwrite(str(path), np.concatenate(rows, axis=0), [cv2.IMWRITE_JPEG_QUALITY, 88])
        print(f"{name}: {len(rows)} faces -> {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("/tmp/refrestore-detail-sheets"))
    ap.add_argument("--sets", nargs="+", default=list(SETS))
    ap.add_argument("--fidelity", type=float, default=None)
    args = ap.parse_args()
    if REPO in args.out.resolve().parents or args.out.resolve() == REPO:
        raise SystemExit("--out must be outside the repository (the photos may not be committed)")
    extra = ["--fidelity", str(args.fidelity)] if args.fidelity is not None else []
    for name in args.sets:
        inputs, refs = SETS[name]
        sheet_for(name, inputs, refs, args.out / name, extra)


if __name__ == "__main__":
    main()
