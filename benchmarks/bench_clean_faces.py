"""Never a good face made worse: clean faces through the real `fix` path, output vs input.

    python benchmarks/bench_clean_faces.py [--shared ../shared] [--model auto] [--detector dlib]
                                           [--upscale 1] [--threads 1] [--limit N] [--png] [--json OUT]

Every photo of ``shared/data/identities`` (real press photos, not degraded) goes through the
batch runner `fix` uses (whole photos, paste-back, `--upscale 1` by default). For each face
of the JSON report, the input and output photos are aligned with the same transform (from the
report's landmarks) and compared:

- identity distance: dlib's descriptor of the output face against the input face's
  (Euclidean, unit vectors; the metric of ``refrestore eval``);
- detail: the variance of the Laplacian of the grey photo inside the face (the template's
  eyes-nose-mouth-cheeks box, ``refrestore.degradation.FACE_BOX``) at the photo's own
  resolution, output over input.

Targets (issue 11): identity distance <= 0.06 and detail ratio >= 0.9 on at least 95% of
the faces, and no face below 0.75.
"""
from __future__ import annotations

import argparse
import filecmp
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from refrestore.align import align_face
from refrestore.api import build_pipeline
from refrestore.batch import BatchOptions, Task, plan_outputs, run_batch
from refrestore.degradation import photo_window
from refrestore.discover import find_inputs
from refrestore.faces import DetectedFace
from refrestore.identity import DlibIdentity
from refrestore.imageio import read_image
from refrestore.pipeline import FixOptions

ID_MAX, DETAIL_MIN, DETAIL_FLOOR, SHARE = 0.06, 0.9, 0.75, 0.95


def laplacian_variance(rgb: np.ndarray) -> float:
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if rgb.ndim == 3 else rgb
    return float(cv2.Laplacian(grey.astype(np.float32), cv2.CV_32F).var())


def face_of(entry: dict) -> DetectedFace:
    return DetectedFace(box=tuple(entry["box"]), landmarks=np.asarray(entry["landmarks"], np.float32),
                        score=float(entry["detector_score"]), landmark_kind=entry["landmark_kind"], detector=entry["detector"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared")
    ap.add_argument("--model", default="auto")
    ap.add_argument("--detector", default="dlib")
    ap.add_argument("--upscale", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--limit", type=int, default=0, help="only the first N photos (0: all)")
    ap.add_argument("--not-adaptive", action="store_true", help="restore every face fully (the behaviour before issue 11)")
    ap.add_argument("--png", action="store_true",
                    help="write every output as PNG (lossless), to separate the restoration from JPEG re-encoding")
    ap.add_argument("--json", type=Path, default=None, help="write per-face figures here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    folder = args.shared / "data" / "identities"
    if not folder.is_dir():
        print(f"no clean photos at {folder}", file=sys.stderr)
        return 2
    inputs, _ = find_inputs([folder], recursive=True)
    inputs = [i for i in inputs if i.path.suffix.lower() != ".tsv"]
    if args.limit:
        inputs = inputs[: args.limit]
    scratch = tempfile.TemporaryDirectory(prefix="bench-clean-")
    out = Path(scratch.name) / "out"
    options = FixOptions(upscale=args.upscale, adaptive=not args.not_adaptive)
    built = build_pipeline(model=args.model, detector=args.detector, device="cpu", options=options)
    tasks = plan_outputs(inputs, out, single_file=False)
    if args.png:
        tasks = [Task(t.source, t.output.with_suffix(".png")) for t in tasks]
    t0 = time.perf_counter()
    summary = run_batch(tasks, built.pipeline, BatchOptions(jobs=1, prefetch=0))
    seconds = time.perf_counter() - t0

    dlib_id = DlibIdentity()
    rows = []
    copied: list[str] = []  # outputs that are the input's own bytes (nothing in them changed)
    for rep in summary.images:
        if rep.status != "ok" or rep.output is None:
            continue
        if filecmp.cmp(rep.input, rep.output, shallow=False):
            copied.append(str(Path(rep.input).relative_to(folder)))
        src = read_image(Path(rep.input)).rgb
        res = read_image(Path(rep.output)).rgb
        if args.upscale != 1:
            src = cv2.resize(src, (res.shape[1], res.shape[0]), interpolation=cv2.INTER_CUBIC)
        for f in rep.faces:
            face = face_of(f)
            if args.upscale != 1:
                face = DetectedFace(tuple(v * args.upscale for v in face.box), face.landmarks * args.upscale,
                                    face.score, face.landmark_kind, face.detector)
            a_in, a_out = align_face(src, face), align_face(res, face)
            e = dlib_id.embed([a_in.image, a_out.image])
            lv_in = laplacian_variance(photo_window(src, a_in.affine))
            lv_out = laplacian_variance(photo_window(res, a_in.affine))
            deg = f.get("degradation") or {}
            rows.append({
                "photo": str(Path(rep.input).relative_to(folder)), "face": f["index"],
                "face_px": deg.get("face_px"), "severity": deg.get("severity"), "cause": deg.get("cause"),
                "restorer": f["restorer"], "left_as_is": f.get("left_as_is", False), "strength": f.get("strength"),
                "id_dist": float(np.linalg.norm(e[0] - e[1])), "lap_in": lv_in, "lap_out": lv_out,
                "detail_ratio": lv_out / max(lv_in, 1e-6),
            })
    print("| photo | face | face px | severity (cause) | restorer | strength | id dist | Laplacian var in -> out | ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        sev = f"{r['severity']:.2f} ({r['cause']})" if r["severity"] is not None else "-"
        px = f"{r['face_px']:.0f}" if r["face_px"] is not None else "-"
        who = "left as it was" if r["left_as_is"] else r["restorer"]
        strength = f"{r['strength']:.2f}" if r["strength"] is not None else "-"
        print(f"| {r['photo']} | {r['face']} | {px} | {sev} | {who} | {strength} | {r['id_dist']:.4f} | "
              f"{r['lap_in']:.1f} -> {r['lap_out']:.1f} | {r['detail_ratio']:.3f} |")
    n = len(rows)
    if not n:
        print("no faces measured", file=sys.stderr)
        return 1
    ids = np.array([r["id_dist"] for r in rows])
    det = np.array([r["detail_ratio"] for r in rows])
    both = (ids <= ID_MAX) & (det >= DETAIL_MIN)
    left = sum(r["left_as_is"] for r in rows)
    print()
    print(f"{len(summary.images)} photos, {n} faces, model {args.model}, detector {args.detector}, upscale {args.upscale}, "
          f"adaptive {not args.not_adaptive}, outputs {'PNG' if args.png else 'in the input format (JPEG with its own tables)'}, {seconds:.1f} s, torch threads {args.threads}, CPU")
    print(f"faces left as they were: {left}/{n}; outputs that are byte copies of their input: {len(copied)}/{len(summary.images)}")
    print(f"identity distance: mean {ids.mean():.4f}, median {np.median(ids):.4f}, max {ids.max():.4f}; <= {ID_MAX}: {np.mean(ids <= ID_MAX):.1%}")
    print(f"detail ratio: mean {det.mean():.3f}, median {np.median(det):.3f}, min {det.min():.3f}; >= {DETAIL_MIN}: {np.mean(det >= DETAIL_MIN):.1%}; "
          f"below {DETAIL_FLOOR}: {int(np.sum(det < DETAIL_FLOOR))}")
    ok = both.mean() >= SHARE and not np.any(det < DETAIL_FLOOR)
    print(f"both targets on {both.mean():.1%} of faces (target {SHARE:.0%}), none below {DETAIL_FLOOR}: {'PASS' if ok else 'FAIL'}")
    misses = [r for r, good in zip(rows, both) if not good]
    if misses:
        print("faces that miss a target:")
        for r in misses:
            print(f"  {r['photo']} face {r['face']}: {r['face_px']:.0f} px, severity {r['severity']:.2f} ({r['cause']}), "
                  f"strength {r['strength']:.2f}, id dist {r['id_dist']:.4f}, detail ratio {r['detail_ratio']:.3f}")
    if args.json:
        args.json.write_text(json.dumps({"faces": rows, "copied": copied, "pass": bool(ok)}, indent=2))
    scratch.cleanup()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
