"""Benchmark: read_image/save_image time and peak RSS on a 50 MP photo (one process per case).

Usage: python benchmarks/bench_imageio.py [--shared ../shared]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from PIL import Image

CASE = textwrap.dedent(
    """
    import resource, sys, time
    from pathlib import Path

    def peak_mb():
        # VmHWM starts afresh at exec; ru_maxrss would carry over the parent's peak on Linux
        try:
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) // 1024
        except OSError:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024

    from refrestore.imageio import read_image, save_image
    base = peak_mb()
    t0 = time.perf_counter(); img = read_image(Path(sys.argv[1])); t1 = time.perf_counter()
    read_peak = peak_mb()
    save_image(Path(sys.argv[2]), img.rgb, img); t2 = time.perf_counter()
    peak = peak_mb()
    print(f"{t1 - t0:.2f} {t2 - t1:.2f} {base} {read_peak} {peak}")
    """
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared",
                    help="the shared data folder (default: ../shared)")
    args = ap.parse_args()
    src = Image.open(args.shared / "data" / "real_lq" / "whole" / "gfpgan_00.jpg").convert("RGB")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        big = src.resize((5800, 8700), Image.Resampling.BILINEAR)  # 50.5 MP
        big.save(d / "colour.jpg", quality=90)
        big.convert("L").save(d / "grey.jpg", quality=90)
        exif = Image.Exif()
        exif[0x0112] = 6
        big.transpose(Image.Transpose.ROTATE_90).save(d / "rotated.jpg", quality=90, exif=exif.tobytes())
        del big
        cases = [("colour.jpg", "out.jpg"), ("colour.jpg", "out.png"), ("colour.jpg", "out.tif"),
                 ("grey.jpg", "grey_out.jpg"), ("rotated.jpg", "rot_out.jpg")]
        print("input        output        read_s  save_s  base_MB  peak_after_read_MB  peak_MB")
        for inp, out in cases:
            res = subprocess.run([sys.executable, "-c", CASE, str(d / inp), str(d / out)],
                                 capture_output=True, text=True, check=True)
            r, s, b, pr, p = res.stdout.split()
            print(f"{inp:12s} {out:13s} {r:>6s}  {s:>6s}  {b:>7s}  {pr:>18s}  {p:>7s}")


if __name__ == "__main__":
    main()
