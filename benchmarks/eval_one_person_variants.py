"""Variants of the one-person folder's stranger test, measured on the held-out people (issue 21).

Usage: python benchmarks/eval_one_person_variants.py [--faces ../shared/data/faces] [--cache DIR]
                                                      [--views] [--threads 1]

The one-person rule gives a folder's references to a face unless it scores below the stranger
threshold (``gallery.decide``): with ``mobilefacenet-dual`` and dlib's second opinion, the score is
the fine-tune's cosine to the person's centroid (at the query's gallery level) plus dlib's, weighted
(``RULES["mobilefacenet-dual"].second``). ``../shared/checks/refs-used`` fails on faces of another
person that score above it. This script asks whether another way of scoring would separate the
own person's faces from another person's better, on the damage that check uses (``alt`` 48, 40 and
32 px, ``benchmarks/eval_people.py``), each query given its own person's folder and the next
person's (as eval_people's one-person figures).

Figures per variant (lower is better): the share of another person's faces that pass when one
threshold keeps 95% of the own faces (pooled queries of each side), on the training people and on
the held-out people; and the held-out own / other shares with the rule itself (stranger thresholds
per detail anchor at the 5th percentile of the training people's own scores of this damage, as
the shipped rule is calibrated, or matched by the first model). Variants:

- the shipped score, and dlib's weight from 0 (the fine-tune alone) to 6;
- cohort normalisation: the score minus the mean of the query's best 50 scores against the
  training people (the held-out people are never in the cohort), and the same divided by their
  spread (adaptive s-norm);
- folder-side cohort normalisation (z-norm): each folder's scores minus the mean of the training
  people's queries (same damage) against that folder, over their spread: a folder that many
  strangers resemble asks more of a face (no query's own person, nor the folder's, in the cohort);
- the published network's score added as a third opinion;
- the person scored by its best photo, the mean of its photos or of its best two, not its centroid;
- the stranger threshold calibrated so that the whole rule (matched, or not below the stranger
  threshold) keeps 95% of the training people's own faces at each detail anchor, against the
  shipped 5th percentile of the fused scores (both figures with the rule itself);
- with ``--views`` (slow: about 35 minutes on one thread, the queries are restored and embedded
  again, the gallery embedded by dlib at three levels): the query also restored mirrored and
  shifted by 6 px, the views' embeddings averaged; dlib reading the restored query instead of the
  damaged one; and dlib comparing the query with the folder's photos degraded to its level (as
  the first model does), not with the clean photos.

Reads and writes eval_people's caches (``--cache``, the same default); a cold cache takes about 45
minutes.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import eval_people as E  # noqa: E402  (the protocol, caches and galleries of the main benchmark)

ROOT = Path(__file__).resolve().parents[1]
WIDTHS = (48, 40, 32)
OWN_KEPT = 0.95
COHORT = 50


@dataclass
class Pairs:
    """Per query of one side (alt 48-32 px pooled): scores for the own person and the next one,
    the query's detail, and whether the first model alone matches it to each (the rule's other path)."""

    own: np.ndarray
    other: np.ndarray
    detail: np.ndarray
    matched_own: np.ndarray
    matched_other: np.ndarray

    def passing(self, own_kept: float = OWN_KEPT) -> float:
        """Another person's share passing at the threshold that keeps ``own_kept`` of the own faces."""
        return float(np.mean(self.other >= np.quantile(self.own, 1.0 - own_kept)))

    def stranger_thresholds(self, anchors: np.ndarray, floor: float = 0.05) -> np.ndarray:
        """As the shipped rule is calibrated: per detail anchor, ``floor`` of the own scores nearest it."""
        near = np.abs(self.detail[:, None] - anchors[None]).argmin(1)
        return np.array([np.quantile(self.own[near == k], floor) if np.any(near == k) else np.nan
                         for k in range(len(anchors))])

    def with_rule(self, anchors: np.ndarray, strangers: np.ndarray) -> tuple[float, float]:
        """(own used, another person's used) under the rule: matched, or not below the stranger threshold."""
        ok = ~np.isnan(strangers)
        t = np.interp(self.detail, anchors[ok], strangers[ok])
        return (float(np.mean(self.matched_own | (self.own >= t))),
                float(np.mean(self.matched_other | (self.other >= t))))


@dataclass
class Setting:
    faces: list
    model: object
    data: dict[str, np.ndarray]
    second: dict[str, np.ndarray]
    rule: object
    gallery: object  # every person of both sides
    names: list[str]
    persons: np.ndarray  # per gallery face
    training: np.ndarray  # per name: a training person
    dlib_centroids: np.ndarray  # (people, 128) unit


def setting(faces_dir: Path, cache: Path) -> Setting:
    from refrestore.gallery.faceset import read_faceset
    from refrestore.gallery.rules import RULES
    from refrestore.identity import embedded_restorer_queries, gallery_levels
    from refrestore.identity.mobilefacenet import DualMobileFaceNet
    from refrestore.net.split import is_held_out

    published = ROOT.parent / "shared" / "weights" / "mobilefacenet" / "mobilefacenet.pt"
    faces = read_faceset(faces_dir)
    model = DualMobileFaceNet(published, ROOT / "models" / "mobilefacenet_lr.pt")
    model.fine_tune.restored_queries = embedded_restorer_queries()
    data = E.dual_rows(E.embed_all(faces, model.published, cache), E.embed_all(faces, model.fine_tune, cache))
    second = E.embed_second(faces, cache)
    gi = np.concatenate([E.split_side(faces, h)[0] for h in (False, True)])
    persons = np.array([faces[int(i)].person for i in gi])
    names = sorted(set(persons.tolist()))
    gallery = E.make_gallery(data["gallery"][gi], persons.tolist(), model, gallery_levels(model))
    g2 = second["gallery"][gi]
    c2 = np.stack([g2[persons == n].sum(0) for n in names]).astype(np.float64)
    c2 /= np.linalg.norm(c2, axis=1, keepdims=True)
    training = np.array([not is_held_out(n) for n in names])
    return Setting(faces, model, data, second, RULES["mobilefacenet-dual"], gallery, names, persons, training, c2)


@dataclass
class Side:
    """The alt 48-32 px queries of one side: their rows, detail, own person and the next person."""

    rows: np.ndarray  # into the cache's query arrays, per width
    photo: np.ndarray  # photo index per query
    own: np.ndarray  # name index
    other: np.ndarray  # name index


def side_of(s: Setting, held_out: bool) -> Side:
    _, qi, _ = E.split_side(s.faces, held_out)
    rows = np.array([np.flatnonzero(s.data["queries"] == i)[0] for i in qi])
    own = np.array([s.names.index(s.faces[int(i)].person) for i in qi])
    people = sorted(set(own.tolist()))
    other = np.array([people[(people.index(p) + 1) % len(people)] for p in own])
    return Side(rows, qi, own, other)


def person_matrix(s: Setting, queries: np.ndarray, details: np.ndarray, rule) -> np.ndarray:  # type: ignore[no-untyped-def]
    """(queries, people) scores under ``rule``."""
    from refrestore.gallery.decide import person_scores

    return np.array([[sc[n] for n in s.names] for sc in
                     (person_scores(s.gallery, q, float(d), rule) for q, d in zip(queries, details))])


def face_matrix(s: Setting, queries: np.ndarray, details: np.ndarray) -> np.ndarray:
    """(queries, gallery faces) cosines at the query's level, blended as ``person_scores`` does."""
    from refrestore.gallery.decide import _anchor_matrix, level_blend, query_part

    out = []
    for q, d in zip(queries, details):
        qq, part = query_part(q, float(d), s.rule)
        low, high, t = level_blend(s.rule, float(d))
        out.append((1 - t) * (_anchor_matrix(s.gallery, low, part) @ qq) + t * (_anchor_matrix(s.gallery, high, part) @ qq))
    return np.array(out)


def measure(s: Setting, views: dict[int, dict[str, np.ndarray]] | None,
            dlib_levels: dict[int | None, np.ndarray] | None) -> None:
    from refrestore.gallery.people import Switch

    rule = s.rule
    weight, centre = rule.second.weight, rule.second.centre
    anchors = np.asarray(rule.details)
    published = replace(rule, switch=Switch(dim=rule.switch.dim, detail=-1.0))  # always the published part
    shipped = f"shipped (fine-tune + dlib, weight {weight:g})"
    pooled: dict[str, dict[str, Pairs]] = {}
    training_rows: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # per width: the training side's F and own
    by_width: dict[str, list[Pairs]] = {}  # the held-out side's pairs per variant, one per width
    for side_name, held in (("training", False), ("held-out", True)):
        side = side_of(s, held)
        r = np.arange(len(side.own))
        per: dict[str, list[Pairs]] = {}
        for w in WIDTHS:
            kind = f"alt_{w}px"
            q, d = s.data["q_" + kind][side.rows], s.data["d_" + kind][side.rows]
            S1 = person_matrix(s, q, d, rule)
            matched = S1 >= np.array([rule.threshold_at(float(x)) for x in d])[:, None]
            damaged = s.second["q_" + kind][side.rows]  # dlib's embeddings of the damaged queries
            S2 = damaged @ s.dlib_centroids.T

            def put(name: str, m: np.ndarray) -> None:
                per.setdefault(name, []).append(Pairs(m[r, side.own], m[r, side.other], d,
                                                      matched[r, side.own], matched[r, side.other]))

            F = S1 + weight * (S2 - centre)
            put(shipped, F)
            for wt in (0.0, 1.0, 2.0, 4.0, 6.0):
                put(f"dlib weight {wt:g}", S1 + wt * (S2 - centre))
            # cohort: the training people, never the query's own person nor the folder's
            cohort = np.tile(s.training, (len(q), 1))
            cohort[r, side.own] = False
            cohort[r, side.other] = False
            top = -np.sort(-np.where(cohort, F, -np.inf), axis=1)[:, :COHORT]
            mu, sd = top.mean(1, keepdims=True), top.std(1, keepdims=True)
            put(f"cohort: minus the mean of the best {COHORT} training people", F - mu)
            put(f"cohort: s-norm over the best {COHORT} training people", (F - mu) / sd)
            if not held:
                training_rows[w] = (F, side.own)
            put("folder cohort: z-norm by the training people's queries", folder_znorm(F, side.own, *training_rows[w]))
            put("published network added as a third score", F + person_matrix(s, q, d, published))
            faces = face_matrix(s, q, d)
            aggregates: dict[str, Callable[[np.ndarray], float]] = {
                "best photo": np.max, "mean of photos": np.mean, "mean of best two": lambda x: float(np.sort(x)[-2:].mean())}
            for name, agg in aggregates.items():
                A = np.array([[agg(row[s.persons == n]) for n in s.names] for row in faces])
                put(f"person by its {name} (not centroid)", A + weight * (S2 - centre))
            if views is not None:
                v = views[w]
                vrows = np.array([np.flatnonzero(v["queries"] == i)[0] for i in side.photo])
                qv = np.concatenate([q[:, :rule.switch.dim], v["fine_tune"][vrows] / np.sqrt(2.0)], 1).astype(np.float32)
                put("query restored as is, mirrored and shifted (views averaged)",
                    person_matrix(s, qv, d, rule) + weight * (S2 - centre))
                put("dlib reads the restored query", S1 + weight * (v["dlib"][vrows] @ s.dlib_centroids.T - centre))
            if dlib_levels is not None:
                lv = np.array([dlib_at_level(s, dlib_levels, x, float(y)) for x, y in zip(damaged, d)])
                put("dlib compares the query with the folder at its level", S1 + weight * (lv - centre))
        if held:
            by_width = per
        for name, parts in per.items():
            pooled.setdefault(name, {})[side_name] = Pairs(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                                                            ("own", "other", "detail", "matched_own", "matched_other")))

    print(f"another person's alt {'/'.join(map(str, WIDTHS))} px face passing a one-person folder (lower is better):\n"
          f"  pooled: one threshold keeping {OWN_KEPT:.0%} of own faces; rule: stranger thresholds per detail anchor "
          "at the 5th percentile of the training people's own scores, or matched (held-out own / other)")
    for name, sides in pooled.items():
        own, other = sides["held-out"].with_rule(anchors, sides["training"].stranger_thresholds(anchors))
        print(f"  {name:62s} pooled training {sides['training'].passing():.3f} held-out {sides['held-out'].passing():.3f}"
              f" | rule {own:.3f} / {other:.3f}")
    # A normalisation that only puts the sizes on one scale gains at one pooled threshold and
    # nothing once each size has its own threshold (as the rule's anchors give it).
    print(f"  held-out, one threshold per width keeping {OWN_KEPT:.0%} of own faces (alt {' / '.join(map(str, WIDTHS))} px):")
    for name in [shipped] + [n for n in by_width if n.startswith("folder cohort")]:
        print(f"    {name:60s} " + " / ".join(f"{p.passing():.3f}" for p in by_width[name]))


def folder_znorm(F: np.ndarray, own: np.ndarray, cohort: np.ndarray, cohort_own: np.ndarray) -> np.ndarray:
    """``F`` (queries, people) with each folder's column normalised by the scores the cohort's
    queries (the training side's, ``cohort`` with their people ``cohort_own``) get against that
    folder: minus their mean, over their spread. A query's own person's queries and the folder's
    person's own queries are never in the cohort (the query itself neither)."""
    n = len(F[0])
    ones = np.ones(len(cohort))
    # per (person of the cohort, folder): sums over that person's queries, to take them out
    by_person = np.zeros((n, n)), np.zeros((n, n)), np.zeros(n)
    np.add.at(by_person[0], cohort_own, cohort)
    np.add.at(by_person[1], cohort_own, cohort * cohort)
    np.add.at(by_person[2], cohort_own, ones)
    total, total_sq, count = cohort.sum(0), (cohort * cohort).sum(0), float(len(cohort))
    cols = np.arange(n)
    # the folder's own person out of its column
    s1 = total - by_person[0][cols, cols]
    s2 = total_sq - by_person[1][cols, cols]
    c = count - by_person[2][cols]
    # and the query's own person (nothing for a held-out query: none of its person is in the cohort)
    s1 = s1[None] - by_person[0][own] * (own[:, None] != cols[None])
    s2 = s2[None] - by_person[1][own] * (own[:, None] != cols[None])
    c = c[None] - by_person[2][own][:, None] * (own[:, None] != cols[None])
    mu = s1 / c
    sd = np.sqrt(np.maximum(s2 / c - mu * mu, 1e-12))
    return (F - mu) / sd


def dlib_at_level(s: Setting, cents: dict[int | None, np.ndarray], query: np.ndarray, detail: float) -> np.ndarray:
    """dlib's cosine of a query to every person's centroid at the query's gallery level (the folder's
    photos degraded as gallery levels are, mixed with their clean embedding), blended between the
    rule's anchors as ``person_scores`` does (16 px reads the 24 px level)."""
    from refrestore.gallery.decide import level_blend

    def at(level: int | None) -> np.ndarray:
        return cents[None if level is None else max(level, 24)] @ query

    low, high, t = level_blend(s.rule, detail)
    return (1 - t) * at(low) + t * at(high)


def full_rule(s: Setting) -> None:
    """The stranger thresholds that keep 95% of the training people's own faces under the whole rule,
    against the shipped ones; figures with the rule itself, every damage and size."""
    rule = s.rule
    weight, centre = rule.second.weight, rule.second.centre
    anchors = np.asarray(rule.details)
    kinds = sorted(k[2:] for k in s.data if k.startswith("q_"))

    def collect(held: bool) -> tuple[np.ndarray, ...]:
        side = side_of(s, held)
        out = []
        for kind in kinds:
            q, d = s.data["q_" + kind][side.rows], s.data["d_" + kind][side.rows]
            S1 = person_matrix(s, q, d, rule)
            F = S1 + weight * (s.second["q_" + kind][side.rows] @ s.dlib_centroids.T - centre)
            thr = np.array([rule.threshold_at(float(x)) for x in d])
            r = np.arange(len(side.own))
            out.append((S1[r, side.own] >= thr, F[r, side.own], S1[r, side.other] >= thr, F[r, side.other], d))
        return tuple(np.concatenate([o[j] for o in out]) for j in range(5))

    sides = {held: collect(held) for held in (False, True)}
    matched, fused, matched_o, fused_o, d = sides[False]
    near = np.abs(d[:, None] - anchors[None]).argmin(1)
    fitted = []
    for j in range(len(anchors)):
        m = near == j
        ok = [t for t in np.sort(fused[m]) if np.mean(matched[m] | (fused[m] >= t)) >= OWN_KEPT]
        fitted.append(round(float(max(ok)), 3))
    print("\nstranger thresholds per detail anchor: shipped (5th percentile of the fused own scores) "
          f"{tuple(rule.second.strangers)}; keeping {OWN_KEPT:.0%} of own faces under the whole rule "
          f"{tuple(fitted)}")
    for name, st in (("shipped", np.asarray(rule.second.strangers)), ("whole rule", np.asarray(fitted))):
        for side_name, held in (("training", False), ("held-out", True)):
            mg, fg, mo, fo, dd = sides[held]
            t = np.interp(dd, anchors, st)
            print(f"  {name:10s} {side_name:9s} own kept {np.mean(mg | (fg >= t)):.3f}, "
                  f"another person's passing {np.mean(mo | (fo >= t)):.3f} (every damage and size)")


def embed_views(s: Setting, cache: Path) -> dict[int, dict[str, np.ndarray]]:
    """Per width: the fine-tune's embedding of the query restored as is, mirrored and shifted by 6
    px (each view restored, put back, and embedded as is and mirrored; averaged), and dlib's
    embedding of the restored query (as is and mirrored). Cached beside eval_people's caches."""
    import cv2

    from refrestore.gallery.quality import assess
    from refrestore.gallery.select import mirrored_embeddings
    from refrestore.identity import DlibIdentity

    view = s.model.fine_tune.restored_queries
    dlib = DlibIdentity()
    qidx = np.concatenate([E.split_side(s.faces, h)[1] for h in (False, True)])

    def shift(img: np.ndarray, dx: int, dy: int) -> np.ndarray:
        m = np.float32([[1, 0, dx], [0, 1, dy]])
        return cv2.warpAffine(img, m, img.shape[1::-1], borderMode=cv2.BORDER_REFLECT)

    out = {}
    for w in WIDTHS:
        path = cache / f"one-person-views-{s.model.fine_tune.version}-{view.tag}-alt{w}.npz"
        if path.is_file():
            with np.load(path, allow_pickle=False) as z:
                out[w] = {k: z[k] for k in z.files}
            continue
        fine, dl = [], []
        for i in qidx:
            img = E.alt_query(s.faces[int(i)].path, w, int(i))
            d = assess(img, None, 512.0).sharpness
            base = view.prepare(img, d)
            mirrored = np.ascontiguousarray(view.prepare(np.ascontiguousarray(img[:, ::-1]), d)[:, ::-1])
            shifted = [shift(view.prepare(shift(img, dx, dy), d), -dx, -dy) for dx, dy in ((6, 0), (0, 6))]
            crops = [v for x in [base, mirrored, *shifted] for v in (x, np.ascontiguousarray(x[:, ::-1]))]
            e = s.model.fine_tune.embed(crops).astype(np.float64).sum(0)
            fine.append(e / np.linalg.norm(e))
            dl.append(mirrored_embeddings([base], dlib)[0])
        out[w] = {"queries": qidx, "fine_tune": np.stack(fine).astype(np.float32), "dlib": np.stack(dl)}
        np.savez(path, **out[w])
        print(f"  views alt {w} px: {len(qidx)} queries", flush=True)
    return out


def dlib_level_centroids(s: Setting, cache: Path) -> dict[int | None, np.ndarray]:
    """dlib's unit centroid of every person (``s.names``) clean and at the gallery levels 48, 32 and 24
    px: each gallery photo's 512 crop degraded as gallery levels are (``identity.levels``), embedded
    as is and mirrored, and mixed with its clean embedding (as ``decide`` mixes levels). Cached."""
    from refrestore.gallery.faceset import read_aligned
    from refrestore.gallery.select import mirrored_embeddings
    from refrestore.identity import DlibIdentity
    from refrestore.identity.crops import _normalise
    from refrestore.identity.levels import RECIPE, degrade_to_width

    gi = np.concatenate([E.split_side(s.faces, h)[0] for h in (False, True)])
    path = cache / f"one-person-dlib-levels-{RECIPE}-{len(gi)}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            rows = {int(k[1:]): z[k] for k in z.files if k.startswith("L")}
    else:
        dlib = DlibIdentity()
        rows = {w: np.stack([mirrored_embeddings([degrade_to_width(read_aligned(s.faces[int(i)].path, 512), w)], dlib)[0]
                             for i in gi]) for w in (48, 32, 24)}
        np.savez(path, **{f"L{w}": v for w, v in rows.items()})
        print(f"  dlib gallery levels: {len(gi)} photos", flush=True)
    clean = s.second["gallery"][gi].astype(np.float64)

    def centroids(m: np.ndarray) -> np.ndarray:
        return _normalise(np.stack([m[s.persons == n].sum(0) for n in s.names]))

    out: dict[int | None, np.ndarray] = {None: centroids(clean)}
    for w, m in rows.items():
        out[w] = centroids(_normalise(clean + m))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--faces", type=Path, default=ROOT.parent / "shared" / "data" / "faces")
    p.add_argument("--cache", type=Path, default=ROOT / "runs" / "identity-eval")
    p.add_argument("--views", action="store_true", help="also restore and embed the queries in more views (slow)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    published = ROOT.parent / "shared" / "weights" / "mobilefacenet" / "mobilefacenet.pt"
    if not args.faces.is_dir() or not published.is_file():
        print(f"error: need {args.faces} and {published}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    s = setting(args.faces, args.cache)
    views = embed_views(s, args.cache) if args.views else None
    levels = dlib_level_centroids(s, args.cache) if args.views else None
    measure(s, views, levels)
    full_rule(s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
