"""Does the noise estimate tell clean faces from noisy ones? Real faces, known added noise.

    python benchmarks/bench_noise.py [--shared ../shared] [--limit N] [--json OUT]

Every face dlib finds in ``shared/data/identities`` (clean press photos) is measured the way
``fix`` measures it (``refrestore.degradation.estimate`` on its aligned crop and the photo),
as it is and with Gaussian noise of sigma 3, 5 and 10 (per channel, 0..255) added:

- ``at the photo's resolution``: noise added to the photo's pixels;
- ``enlarged 2x``: the photo reduced to half size, noise added, enlarged back (bicubic):
  noise that was resized with its photo, smooth at the pixel scale.

For comparison, the estimate before issue 11 (the median of the whole-number residual of
Immerkaer's mask on the resampled crop) is measured on the same images. Printed: median and
90th percentile per condition, the share of faces over ``Thresholds.noise_ok`` (where noise
starts to count as damage), and the share of faces ordered clean < sigma 5 < sigma 10.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from refrestore.align import align_face
from refrestore.degradation import Thresholds, _central, _grey, estimate, native_view
from refrestore.detection import init_detector
from refrestore.faces import DetectedFace
from refrestore.imageio import read_image

SIGMAS = (0, 3, 5, 10)
_MASK = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)


def old_noise(aligned: np.ndarray, affine: np.ndarray) -> float:
    """The estimate before issue 11, for comparison."""
    view, _ = native_view(aligned, affine, 1)
    r = cv2.filter2D(_grey(_central(view)), cv2.CV_32F, _MASK)[1:-1, 1:-1]
    return float(np.median(np.abs(r)) / 0.6745 / 6.0) if r.size else 0.0


def around(photo: np.ndarray, face: DetectedFace) -> tuple[np.ndarray, DetectedFace]:
    """The photo around one face (on its 8x8 grid) and the face in its coordinates: noise
    is added to this region only, which keeps a 4352-px photo cheap."""
    x0, y0, x1, y1 = face.box
    w = x1 - x0
    X0, Y0 = int(max(0, x0 - 1.5 * w)), int(max(0, y0 - 1.5 * w))
    X0, Y0 = X0 - X0 % 8, Y0 - Y0 % 8
    X1, Y1 = int(min(photo.shape[1], x1 + 1.5 * w)), int(min(photo.shape[0], y1 + 1.5 * w))
    shifted = DetectedFace((x0 - X0, y0 - Y0, x1 - X0, y1 - Y0), face.landmarks - np.float32([X0, Y0]),
                           face.score, face.landmark_kind, face.detector)
    return photo[Y0:Y1, X0:X1], shifted


def noisy(img: np.ndarray, sigma: float, enlarged: bool, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    base = cv2.resize(img, (w // 2, h // 2), interpolation=cv2.INTER_AREA) if enlarged else img
    if sigma:
        base = np.clip(base.astype(np.float32) + rng.normal(0, sigma, base.shape) + 0.5, 0, 255).astype(np.uint8)
    return cv2.resize(base, (w, h), interpolation=cv2.INTER_CUBIC) if enlarged else base


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared")
    ap.add_argument("--limit", type=int, default=0, help="only the first N photos (0: all)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    folder = args.shared / "data" / "identities"
    if not folder.is_dir():
        print(f"no clean photos at {folder}", file=sys.stderr)
        return 2
    photos = sorted(p for p in folder.glob("*/*") if p.suffix.lower() != ".tsv")
    if args.limit:
        photos = photos[: args.limit]
    det = init_detector("dlib")
    rng = np.random.default_rng(0)
    rows: list[dict] = []
    for path in photos:
        photo = read_image(path).rgb
        for face in det.detect(photo):
            region, f = around(photo, face)
            row: dict = {"photo": str(path.relative_to(folder)), "face_px": float(face.width)}
            for enlarged in (False, True):
                for s in SIGMAS:
                    img = noisy(region, s, enlarged, rng)
                    a = align_face(img, f)
                    key = f"{'x2' if enlarged else 'px'}{s}"
                    row[key] = estimate(a.image, a.affine, img).noise
                    row["old_" + key] = old_noise(a.image, a.affine)
            rows.append(row)
    ok = Thresholds().noise_ok
    print(f"{len(photos)} photos, {len(rows)} faces; noise counts as damage from {ok}")
    print("| estimate | noise added | clean | sigma 3 | sigma 5 | sigma 10 | clean < 5 < 10 |")
    print("|---|---|---|---|---|---|---|")
    for prefix, name in (("", "now"), ("old_", "before")):
        for where, label in (("px", "at the photo's resolution"), ("x2", "enlarged 2x")):
            vals = {s: np.array([r[f"{prefix}{where}{s}"] for r in rows]) for s in SIGMAS}
            cells = [f"{np.median(v):.2f} / {np.percentile(v, 90):.2f} / {np.mean(v > ok):.0%}" for v in vals.values()]
            order = np.mean((vals[0] < vals[5]) & (vals[5] < vals[10]))
            print(f"| {name} | {label} | " + " | ".join(cells) + f" | {order:.0%} |")
    print("cells: median / 90th percentile / share over the threshold")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
