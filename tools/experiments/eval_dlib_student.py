"""Experiment (issue 14, not shipped): dlib's low-resolution student on held-out people.

Usage: python tools/experiments/eval_dlib_student.py --student runs/dlib-lowres/student.pth

The gallery is dlib's embedding of every clean photo (as the index embeds it). A query is
embedded by dlib (as is + mirrored), by the student (as is + mirrored, in dlib's space), and by
their mix ``normalise(a * dlib + (1 - a) * student)``. For each quality (clean, 48 px, 24 px of
the benchmark's damage, and 48 / 24 px of a second kind of damage, ``alt``) and each ``a``, the
rule (threshold, margin over the second person) is chosen on the CALIBRATION fold of the
training people (``refrestore.net.train_student.is_calibration_person``: people the student
never saw), queried against the whole training gallery, rejecting at least 99.5% of strangers;
the figures are on the 106 HELD-OUT people. Embeddings are cached under --cache.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from eval_identity import embed_side, robust  # noqa: E402
from eval_matched import ALT_SEED, alt_query, embed_matched  # noqa: E402

MIXES = (1.0, 0.75, 0.5, 0.35, 0.25, 0.0)
MIN_REJECTED = 0.995


def embed_student(student, faces, qidx: np.ndarray, cache: Path, tag: str) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    from refrestore.gallery.faceset import QUALITIES, query_image

    key = hashlib.sha256(("|".join(str(f.path) for f in faces) + f"|{student.version}|{len(qidx)}")
                         .encode()).hexdigest()[:16]
    path = cache / f"student-{tag}-{key}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    start = time.perf_counter()
    out: dict[str, np.ndarray] = {}
    views = lambda img: [img, np.ascontiguousarray(img[:, ::-1])]  # noqa: E731
    for q in QUALITIES:
        out[f"q_{q}"] = np.stack([student.embed(views(query_image(faces[i].path, q, seed=int(i)))) for i in qidx])
    for w in (48, 24):
        out[f"alt_{w}px"] = np.stack([student.embed(views(alt_query(faces[i].path, w, ALT_SEED + int(i))))
                                      for i in qidx])
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out)
    print(f"  student embedded {tag}: {len(qidx)} queries x 5 ({time.perf_counter() - start:.0f} s)", flush=True)
    return out


def mix(d: np.ndarray, s: np.ndarray, a: float) -> np.ndarray:
    m = a * robust(d) + (1.0 - a) * robust(s)
    return m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--faces", type=Path, default=ROOT.parent / "shared" / "data" / "faces")
    p.add_argument("--cache", type=Path, default=ROOT / "runs" / "identity-eval")
    p.add_argument("--student", type=Path, default=ROOT / "runs" / "dlib-lowres" / "student.pth")
    p.add_argument("--queries", type=int, default=3)
    p.add_argument("--train-per-person", type=int, default=8)
    p.add_argument("--min-rejected", type=float, default=MIN_REJECTED)
    args = p.parse_args(argv)
    if not args.faces.is_dir():
        print(f"error: {args.faces} is not a folder", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    from refrestore.gallery.faceset import read_faceset
    from refrestore.gallery.heldout import GallerySet, QuerySet, person_scores, pick_rule, rates
    from refrestore.identity import DlibIdentity
    from refrestore.identity.own import OwnIdentity
    from dlib_student import is_calibration_person

    dlib = DlibIdentity()
    student = OwnIdentity(args.student)
    sides = {"train": read_faceset(args.faces, held_out=False, per_person=args.train_per_person),
             "held_out": read_faceset(args.faces, held_out=True)}
    sets = {}
    for side, faces in sides.items():
        base = embed_side(dlib, faces, args.queries, args.cache, side)
        alt = embed_matched(dlib, faces, base["query_index"], args.cache, side)
        stu = embed_student(student, faces, base["query_index"], args.cache, side)
        names = sorted({f.person for f in faces})
        per = np.array([names.index(f.person) for f in faces])
        qi = base["query_index"]
        keep = np.ones(len(qi), dtype=bool)
        if side == "train":  # calibration queries: people the student never saw
            keep = np.array([is_calibration_person(faces[i].person) for i in qi])
        dl = {q: base[f"q_{q}"] for q in ("clean", "48px", "24px")}
        dl.update({f"alt {w}": alt[f"alt_{w}"] for w in ("48px", "24px")})
        st = {q: stu[f"q_{q}"] for q in ("clean", "48px", "24px")}
        st.update({f"alt {w}": stu[f"alt_{w}"] for w in ("48px", "24px")})
        sets[side] = (GallerySet(base["gallery"], per), len(names), qi[keep], per[qi[keep]],
                      {k: v[keep] for k, v in dl.items()}, {k: v[keep] for k, v in st.items()})
    g_tr, n_tr, qi_tr, _, _, _ = sets["train"]
    print(f"calibration: {len(qi_tr)} queries of {len(set(sets['train'][3]))} people unseen by the student, "
          f"against {len(g_tr.persons)} photos of {n_tr} training people")
    print(f"held-out: {len(sets['held_out'][2])} queries, {len(sets['held_out'][0].persons)} photos of "
          f"{sets['held_out'][1]} people\n")
    print("cosine of the query's embedding (as is) to dlib's of its own clean photo, held-out / calibration:")
    for qual in ("48px", "24px", "alt 48px", "alt 24px"):
        cells = []
        for label, k in (("dlib", 4), ("student", 5)):
            vals = []
            for side in ("held_out", "train"):
                g, _, qi, _, dl, st = sets[side]
                e = (dl if k == 4 else st)[qual][:, 0]
                e = e / np.linalg.norm(e, axis=1, keepdims=True)
                vals.append(float((e * g.embeddings[qi]).sum(1).mean()))
            cells.append(f"{label} {vals[0]:.4f} / {vals[1]:.4f}")
        print(f"  {qual:8s} " + "   ".join(cells))
    print("\nidentified / strangers rejected (strangers matched) on held-out people; rule from calibration")
    for qual in ("clean", "48px", "24px", "alt 48px", "alt 24px"):
        cells = []
        for a in MIXES:
            ps = {}
            for side in ("train", "held_out"):
                g, n, qi, per, dl, st = sets[side]
                qs = QuerySet(mix(dl[qual], st[qual], a), per, qi, np.ones(len(qi)))
                ps[side] = person_scores(qs, g, n)
            t, gap, r_tr = pick_rule(ps["train"], args.min_rejected)
            r = rates(ps["held_out"], t, gap)
            n_imp = round((1 - r.rejected) * r.queries)
            cells.append(f"a={a:.2f} {100 * r.identified:5.1f}%/{100 * r.rejected:5.1f}% ({n_imp}) "
                         f"[t {t:.4f} g {gap:.3f} cal {100 * r_tr.identified:.0f}%]")
        print(f"  {qual:8s} " + "\n           ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
