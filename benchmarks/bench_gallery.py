"""Gallery index build time, first run versus cached run (issue 4: second run >= 20x faster;
issue 21: a cold gallery at >= 5 photos per second).

Usage: python benchmarks/bench_gallery.py [--set identities|refbench] [--detector dlib]
                                          [--identity auto|mobilefacenet|dlib] [--threads 2]

``identities``: the 99 photos of ../shared/data/identities plus one aligned crop of
../shared/data/refbench (100 photos, 112 to 4352 px, one group photo). ``refbench``: the 85
aligned photos of ../shared/data/refbench/hq (6 people). The cache goes to a temporary folder, so
the first run always indexes from scratch. The weight store is a temporary one holding the shared
MobileFaceNet file (added as a user who has it would: ``download-weights --from-file``), so
``--identity auto`` is what ``fix`` uses after ``download-weights``.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Time the gallery index, first and cached.")
    parser.add_argument("--set", choices=("identities", "refbench"), default="identities")
    parser.add_argument("--detector", default="dlib")
    parser.add_argument("--identity", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from refrestore.detection import init_detector
    from refrestore.gallery import Gallery
    from refrestore.identity import init_identity_model
    from refrestore.weights import WeightStore

    if args.set == "refbench":
        sources = [SHARED / "data" / "refbench" / "hq"]
    else:
        sources = [SHARED / "data" / "identities", SHARED / "data" / "refbench" / "hq" / "00022" / "0.png"]
    mfn = SHARED / "weights" / "mobilefacenet" / "mobilefacenet.pt"
    if not all(s.exists() for s in sources):
        print(f"shared data not found under {SHARED}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as weights, tempfile.TemporaryDirectory() as tmp:
        store = WeightStore(Path(weights))
        if mfn.is_file() and args.identity != "dlib":
            from refrestore.userweights import add_user_file

            add_user_file(store, None, mfn)
        detector = init_detector(args.detector, store)
        identity = init_identity_model(args.identity, store=store)
        times = []
        for run in ("first", "cached"):
            start = time.perf_counter()
            gallery = Gallery.build(sources, detector, identity, cache_dir=Path(tmp))
            times.append(time.perf_counter() - start)
            st = gallery.stats
            print(f"{run:6s}: {times[-1]:7.2f} s  {st.files / times[-1]:8.1f} photos/s  "
                  f"({st.files} photos, {st.faces} faces, {st.indexed} indexed, {st.from_cache} from cache)")
    print(f"speed-up: {times[0] / times[1]:.0f}x (target >= 20x); detector {detector.name}, "
          f"identity {identity.name}, {args.threads} torch threads")
    return 0


if __name__ == "__main__":
    sys.exit(main())
