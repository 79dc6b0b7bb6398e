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
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from eval_identity import _views, cached_embeddings, embed_side, robust  # noqa: E402
from eval_matched import ALT_SEED, alt_query, embed_matched  # noqa: E402

MIXES = (1.0, 0.75, 0.5, 0.35, 0.25, 0.0)
MIN_REJECTED = 0.995
QUALITIES = ("clean", "48px", "24px", "alt 48px", "alt 24px")


@dataclass
class Side:
    """One side of the split with dlib's embeddings of its gallery and queries."""

    faces: list  # LabelledFace
    qidx: np.ndarray  # every query's photo (eval_identity.query_indices)
    keep: np.ndarray  # the queries used (training side: the calibration fold only, unless all)
    gallery: object  # refrestore.gallery.heldout.GallerySet
    people: int
    views: dict[str, np.ndarray]  # quality -> (Q, 2, 128) dlib views (as is, mirrored), kept queries
    detail: dict[str, np.ndarray]  # quality -> (Q,) detail of the kept queries

    @property
    def queries(self) -> np.ndarray:
        return self.qidx[self.keep]

    @property
    def persons(self) -> np.ndarray:
        return self.gallery.persons[self.queries]  # type: ignore[attr-defined]


def dlib_sides(dlib, faces_root: Path, cache: Path, queries: int = 3, train_per_person: int = 8,  # type: ignore[no-untyped-def]
               all_training: bool = False) -> dict[str, Side]:
    """The training side (queries of the calibration fold, or of every training person) and the
    held-out side, with eval_identity's and eval_matched's cached dlib embeddings."""
    from dlib_student import is_calibration_person

    from refrestore.gallery.faceset import read_faceset
    from refrestore.gallery.heldout import GallerySet

    sides = {"train": read_faceset(faces_root, held_out=False, per_person=train_per_person),
             "held_out": read_faceset(faces_root, held_out=True)}
    out = {}
    for side, faces in sides.items():
        base = embed_side(dlib, faces, queries, cache, side)
        alt = embed_matched(dlib, faces, base["query_index"], cache, side)
        names = sorted({f.person for f in faces})
        per = np.array([names.index(f.person) for f in faces])
        qi = base["query_index"]
        keep = np.ones(len(qi), dtype=bool)
        if side == "train" and not all_training:  # calibration queries: people the student never saw
            keep = np.array([is_calibration_person(faces[i].person) for i in qi])
        views = {q: base[f"q_{q}"][keep] for q in ("clean", "48px", "24px")}
        views.update({f"alt {w}": alt[f"alt_{w}"][keep] for w in ("48px", "24px")})
        detail = {q: base[f"detail_{q}"][keep] for q in ("clean", "48px", "24px")}
        detail.update({f"alt {w}": alt[f"alt_detail_{w}"][keep] for w in ("48px", "24px")})
        out[side] = Side(faces, qi, keep, GallerySet(base["gallery"], per), len(names), views, detail)
    return out


def embed_student(student, faces, qidx: np.ndarray, cache: Path, tag: str) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    from refrestore.gallery.faceset import QUALITIES as BENCHMARK, query_image

    def compute() -> dict[str, np.ndarray]:
        start = time.perf_counter()
        out: dict[str, np.ndarray] = {}
        for q in BENCHMARK:
            out[f"q_{q}"] = np.stack([student.embed(_views(query_image(faces[i].path, q, seed=int(i)))) for i in qidx])
        for w in (48, 24):
            out[f"alt_{w}px"] = np.stack([student.embed(_views(alt_query(faces[i].path, w, ALT_SEED + int(i))))
                                          for i in qidx])
        print(f"  student embedded {tag}: {len(qidx)} queries x 5 ({time.perf_counter() - start:.0f} s)", flush=True)
        return out

    return cached_embeddings(cache, f"student-{tag}", faces, f"|{student.version}|{len(qidx)}", compute)


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
    from refrestore.gallery.heldout import QuerySet, person_scores, pick_rule, rates
    from refrestore.identity import DlibIdentity
    from refrestore.identity.own import OwnIdentity

    student = OwnIdentity(args.student)
    sides = dlib_sides(DlibIdentity(), args.faces, args.cache, args.queries, args.train_per_person)
    stu = {}  # side -> quality -> (Q, 2, 128) student views of the kept queries
    for name, side in sides.items():
        raw = embed_student(student, side.faces, side.qidx, args.cache, name)
        stu[name] = {q: raw[f"q_{q}"][side.keep] for q in ("clean", "48px", "24px")}
        stu[name].update({f"alt {w}": raw[f"alt_{w}"][side.keep] for w in ("48px", "24px")})
    tr, ho = sides["train"], sides["held_out"]
    print(f"calibration: {len(tr.queries)} queries of {len(set(tr.persons))} people unseen by the student, "
          f"against {len(tr.gallery.persons)} photos of {tr.people} training people")
    print(f"held-out: {len(ho.queries)} queries, {len(ho.gallery.persons)} photos of {ho.people} people\n")
    print("cosine of the query's embedding (as is) to dlib's of its own clean photo, held-out / calibration:")
    for qual in ("48px", "24px", "alt 48px", "alt 24px"):
        cells = []
        for label in ("dlib", "student"):
            vals = []
            for name in ("held_out", "train"):
                side = sides[name]
                e = (side.views if label == "dlib" else stu[name])[qual][:, 0]
                e = e / np.linalg.norm(e, axis=1, keepdims=True)
                vals.append(float((e * side.gallery.embeddings[side.queries]).sum(1).mean()))
            cells.append(f"{label} {vals[0]:.4f} / {vals[1]:.4f}")
        print(f"  {qual:8s} " + "   ".join(cells))
    print("\nidentified / strangers rejected (strangers matched) on held-out people; rule from calibration")
    for qual in QUALITIES:
        cells = []
        for a in MIXES:
            ps = {}
            for name, side in sides.items():
                qs = QuerySet(mix(side.views[qual], stu[name][qual], a), side.persons, side.queries,
                              np.ones(len(side.queries)))
                ps[name] = person_scores(qs, side.gallery, side.people)
            t, gap, r_tr = pick_rule(ps["train"], args.min_rejected)
            r = rates(ps["held_out"], t, gap)
            n_imp = round((1 - r.rejected) * r.queries)
            cells.append(f"a={a:.2f} {100 * r.identified:5.1f}%/{100 * r.rejected:5.1f}% ({n_imp}) "
                         f"[t {t:.4f} g {gap:.3f} cal {100 * r_tr.identified:.0f}%]")
        print(f"  {qual:8s} " + "\n           ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
