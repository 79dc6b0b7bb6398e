"""One-person folders of different sizes: how often the own folder and another person's folder
give their references, with the shipped rule, by the number of photos in the folder.

Usage: python benchmarks/eval_folder_size.py [--sizes 2,3,4,6,8,10] [--faces ../shared/data/faces]
                                             [--cache DIR] [--threads 1]

The held-out people of ``shared/data/faces`` (refrestore.net.split), queries as in
``benchmarks/eval_people.py`` (each person's last photos, up to 3, at every quality of both kinds of
damage; 16-px and alt 24-px faces left out, as many of them are unverifiable). A person's folder is
its first K photos (never a query), for every person with at least K such photos; "another
person's folder" is the next such person's. Each face is decided by
``refrestore.gallery.decide.decide_photo`` with ``--identity auto``'s rule after
``download-weights`` (``mobilefacenet-dual``, dlib's second opinion on the folder's photos).

The rule's thresholds were calibrated with folders of up to 6 photos (``eval_people.py``), so
this says how far the figures move for a user with fewer or more photos of the person.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import eval_people as E  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ALT_CHECK = ("alt_48px", "alt_40px", "alt_32px")  # the refs-used check's sizes


def dlib_rows(faces, cache: Path) -> np.ndarray:  # type: ignore[no-untyped-def]
    """dlib's row (as is and mirrored, ``select.mirrored_embeddings``) of every photo that is not a
    query: eval_people's cached rows, and the photos past its 6-photo galleries embedded here."""
    from refrestore.gallery.faceset import read_aligned
    from refrestore.gallery.select import mirrored_embeddings
    from refrestore.identity import DlibIdentity

    rows = E.embed_second(faces, cache)["gallery"].copy()
    key = hashlib.sha256(("|".join(str(f.path) for f in faces) + "dlib-mirrored-all-v1").encode()).hexdigest()[:16]
    path = cache / f"folder-size-dlib-{key}.npy"
    if path.is_file():
        return np.load(path, allow_pickle=False)
    queries = set(np.concatenate([E.split_side(faces, h)[1] for h in (False, True)]).tolist())
    todo = [i for i in range(len(faces)) if not rows[i].any() and i not in queries]
    model, start = DlibIdentity(), time.perf_counter()
    for n, i in enumerate(todo):
        rows[i] = mirrored_embeddings([read_aligned(faces[i].path, 512)], model)[0]
        if n % 500 == 0:
            print(f"  dlib rows: {n} of {len(todo)} ({time.perf_counter() - start:.0f} s)", flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, rows)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--faces", type=Path, default=ROOT.parent / "shared" / "data" / "faces")
    p.add_argument("--sizes", default="2,3,4,6,8,10")
    p.add_argument("--cache", type=Path, default=ROOT / "runs" / "identity-eval")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    published = ROOT.parent / "shared" / "weights" / "mobilefacenet" / "mobilefacenet.pt"
    fine_tune = ROOT / "models" / "mobilefacenet_lr.pt"
    if not args.faces.is_dir() or not published.is_file() or not fine_tune.is_file():
        print(f"error: need {args.faces}, {published} and {fine_tune}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    from refrestore.gallery.decide import FaceQuery, decide_photo
    from refrestore.gallery.faceset import read_faceset
    from refrestore.gallery.rules import RULES
    from refrestore.identity import embedded_restorer_queries, gallery_levels
    from refrestore.identity.mobilefacenet import DualMobileFaceNet

    faces = read_faceset(args.faces)
    model = DualMobileFaceNet(published, fine_tune)
    model.fine_tune.restored_queries = embedded_restorer_queries()  # as init_identity_model
    data = E.dual_rows(E.embed_all(faces, model.published, args.cache), E.embed_all(faces, model.fine_tune, args.cache))
    second = E.embed_second(faces, args.cache)
    d2 = dlib_rows(faces, args.cache)
    rule = RULES["mobilefacenet-dual"]
    kinds = [k[2:] for k in data if k.startswith("q_") and not k.endswith("16px") and k != "q_alt_24px"]
    row_of = {int(i): r for r, i in enumerate(data["queries"])}
    photos = E.side_photos(faces, held_out=True)
    print("photos in the folder | people | queries per kind | own folder used, another person's folder used: "
          f"all {len(kinds)} kinds | alt 48-32 px (the refs-used check's damage)")
    for size in (int(s) for s in args.sizes.split(",")):
        folders, centroids, queries = {}, {}, {}
        for person, (rest, q) in photos.items():
            if len(rest) < size:
                continue
            g = E.make_gallery(data["gallery"][rest[:size]], [person] * size, model, gallery_levels(model))
            g.declared = person
            folders[person] = g
            c = d2[rest[:size]].astype(np.float64).sum(0)
            centroids[person] = (c / np.linalg.norm(c)).astype(np.float32)
            queries[person] = q
        people = sorted(folders)
        own, other, alt = [], [], []
        for j, person in enumerate(people):
            nxt = people[(j + 1) % len(people)]
            for i in queries[person]:
                r = row_of[i]
                for kind in kinds:
                    fq = FaceQuery(data["q_" + kind][r], float(data["d_" + kind][r]), None, second["q_" + kind][r])
                    own.append(decide_photo(folders[person], [fq], rule, second_centroid=centroids[person])[0].matched)
                    other.append(decide_photo(folders[nxt], [fq], rule, second_centroid=centroids[nxt])[0].matched)
                    alt.append(kind in ALT_CHECK)
        o, x, a = np.array(own), np.array(other), np.array(alt)
        print(f"{size:3d} | {len(people)} | {int(sum(len(v) for v in queries.values()))} | "
              f"{o.mean():.1%} / {x.mean():.1%} | {o[a].mean():.1%} / {x[a].mean():.1%}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
