"""Time and peak memory of each stage of `fix` on a real multi-face photo, on the CPU.

    python benchmarks/bench_pipeline.py [--shared ../shared] [--threads 2] [--large]

Stages are timed separately: detection (RetinaFace mobilenet0.25 from shared/ through a
test manifest, and dlib), alignment, restoration (every restorer that can run here), and
paste-back. ``--large`` also runs the whole pipeline on a 50-megapixel photo.
"""
from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _memory import peak_rss  # noqa: E402

from refrestore.align import align_face  # noqa: E402
from refrestore.detection import init_detector  # noqa: E402
from refrestore.pasteback import PasteJob, paste_faces  # noqa: E402
from refrestore.pipeline import FacePipeline, FixOptions  # noqa: E402
from refrestore.restorers.registry import all_specs, build_restorer  # noqa: E402
from refrestore.weights import WeightStore, load_manifest  # noqa: E402


def shared_retinaface_store(shared: Path, folder: Path) -> WeightStore:
    src = shared / "weights" / "retinaface" / "detection_mobilenet0.25_Final.pth"
    shutil.copyfile(src, folder / src.name)
    data = src.read_bytes()
    (folder / "m.toml").write_text(
        f'schema = 1\n\n[[file]]\nname = "{src.name}"\nrole = "detector"\nmodels = ["retinaface-mobilenet"]\n'
        f'url = "https://example.invalid/{src.name}"\nsize = {len(data)}\nsha256 = "{hashlib.sha256(data).hexdigest()}"\n'
        'license = "MIT"\ncommercial = true\ndefault = true\ndescription = "shared test copy"\n'
    )
    return WeightStore(folder, load_manifest(folder / "m.toml"))


def row(name: str, r: dict, extra: str = "") -> None:
    print(f"| {name} | {r['seconds']:.3f} | {r['delta_mb']:.0f} | {r['peak_mb']:.0f} | {extra} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared")
    ap.add_argument("--photo", default="codeformer_02.png")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--large", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    photo = np.array(Image.open(args.shared / "data" / "real_lq" / "whole" / args.photo).convert("RGB"))
    tmp = Path(tempfile.mkdtemp())
    store = shared_retinaface_store(args.shared, tmp)
    print(f"photo {args.photo}: {photo.shape[1]}x{photo.shape[0]}, torch threads {args.threads}, CPU")
    print("| stage | seconds | peak RSS above start (MB) | peak RSS (MB) | notes |\n|---|---|---|---|---|")
    dets = {}
    for name in ("retinaface_mobile0.25", "dlib"):
        det = init_detector(name, store)
        det.detect(photo)  # warm-up
        r: dict = {}
        with peak_rss(r):
            faces = det.detect(photo)
        dets[name] = (det, faces)
        row(f"detection ({name})", r, f"{len(faces)} faces")
    det, faces = dets["retinaface_mobile0.25"]
    r = {}
    with peak_rss(r):
        aligned = [align_face(photo, f) for f in faces]
    row("alignment", r, f"{len(aligned)} faces to 512")
    crops = [a.image for a in aligned]
    restored = None
    for spec in all_specs():
        if spec.info.weight_files and not spec.info.embedded:
            continue  # published weights are not downloaded here
        restorer = build_restorer(spec, store, torch.device("cpu"))
        restorer.restore(crops[:1])
        r = {}
        with peak_rss(r):
            out = restorer.restore(crops)
        row(f"restoration ({spec.info.name})", r, f"{len(crops)} faces, {r['seconds'] / len(crops):.3f} s/face")
        restored = restored or out
    r = {}
    with peak_rss(r):
        paste_faces(photo, [PasteJob(o, a.image, a.affine) for o, a in zip(restored, aligned)], upscale=2)
    row("paste-back (x2 upscale)", r)
    if args.large:
        from refrestore.restorers.resample import ResampleRestorer

        big_src = np.array(Image.open(args.shared / "data" / "real_lq" / "whole" / "gfpgan_00.jpg").convert("RGB"))
        f = (50e6 / (big_src.shape[0] * big_src.shape[1])) ** 0.5
        big = cv2.resize(big_src, (int(big_src.shape[1] * f), int(big_src.shape[0] * f)), interpolation=cv2.INTER_CUBIC)
        del big_src
        pipe = FacePipeline(det, ResampleRestorer(), None, FixOptions())
        r = {}
        with peak_rss(r):
            res = pipe.run(big)
        row(f"whole pipeline, {big.shape[1]}x{big.shape[0]} ({big.shape[0] * big.shape[1] / 1e6:.0f} MP)", r, f"{len(res.faces)} faces, resample")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
