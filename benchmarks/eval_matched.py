"""Quality-matched gallery and cohort scores for degraded queries, on held-out people.

Usage: python benchmarks/eval_matched.py [--faces ../shared/data/faces] [--cache runs/identity-eval]

The same split, galleries and queries as benchmarks/eval_identity.py (dlib; its cached
embeddings are reused). Added here:

- every gallery photo degraded to each level of refrestore.gallery.matched.LEVELS with the
  matched recipe (refrestore.gallery.matched.degrade_to_width: not the queries' degradation),
  one view, as the matched cache embeds them;
- a second query set at 48 and 24 px with another kind of damage (stronger blur, little noise,
  JPEG 25, other seeds: ``alt``), to check that what helps is not fitted to one degradation.

For each scoring method (clean gallery, matched gallery, their mix, and with a cohort term:
the best person's score minus the mean of the next COHORT people's) a rule is chosen on
TRAINING people (best identification among rules rejecting >= 99.5% of strangers; grid over
threshold, margin over the second person and cohort margin) and its rates are printed on the
HELD-OUT people, for the benchmark queries and the ``alt`` queries.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from eval_identity import _views, cached_embeddings, embed_side, robust  # noqa: E402

ALT_SEED = 90_000


def alt_query(path: Path, width: int, seed: int) -> np.ndarray:
    """Another kind of damage than the benchmark's: more blur, less noise, harder JPEG."""
    import cv2

    from refrestore.gallery.faceset import FACE_WIDTH_FRACTION, read_aligned
    from refrestore.net.degrade import DegradeParams, degrade

    native = read_aligned(path, 256)
    factor = FACE_WIDTH_FRACTION * 256 / width
    low = degrade(native, DegradeParams(0.8 * factor, factor, 4.0, 25, out_size=None), seed)
    return np.ascontiguousarray(cv2.resize(low, (512, 512), interpolation=cv2.INTER_LINEAR))


def embed_matched(model, faces, qidx: np.ndarray, cache: Path, tag: str) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    from refrestore.gallery.faceset import read_aligned
    from refrestore.gallery.matched import LEVELS, RECIPE, degrade_to_width
    from refrestore.gallery.quality import assess

    def compute() -> dict[str, np.ndarray]:
        start = time.perf_counter()
        out: dict[str, np.ndarray] = {}
        clean = [read_aligned(f.path) for f in faces]
        for level in LEVELS:
            out[f"g_{level}"] = np.concatenate([model.embed([degrade_to_width(img, level)]) for img in clean])
            print(f"  {tag}: gallery at {level} px ({time.perf_counter() - start:.0f} s)", flush=True)
        for width in (48, 24):
            embs, details = [], []
            for i in qidx:
                img = alt_query(faces[i].path, width, ALT_SEED + int(i))
                embs.append(model.embed(_views(img)))
                details.append(assess(img, None, 512.0).sharpness)
            out[f"alt_{width}px"] = np.stack(embs)
            out[f"alt_detail_{width}px"] = np.asarray(details)
            print(f"  {tag}: alt queries at {width} px ({time.perf_counter() - start:.0f} s)", flush=True)
        return out

    return cached_embeddings(cache, f"matched-{model.name}-{tag}", faces,
                             f"|{model.version}|{RECIPE}|{LEVELS}", compute)

# Detail anchors of the shipped dlib rule (median detail of 24 px, 48 px and clean training
# queries) and the face widths they stand for; a query's width is read off its detail.
DETAIL_ANCHORS = (0.441, 0.762, 1.0)
WIDTH_ANCHORS = (24.0, 48.0, 96.0)
MIN_REJECTED = 0.995


def level_of(detail: np.ndarray) -> np.ndarray:
    """Index into LEVELS of each query's matched level (-1: clean enough for none)."""
    from refrestore.gallery.matched import CLEAN_WIDTH, LEVELS

    width = np.interp(detail, DETAIL_ANCHORS, WIDTH_ANCHORS)
    out = np.full(len(width), -1)
    logs = np.log(np.asarray(LEVELS, dtype=np.float64))
    for k, w in enumerate(width):
        if w < CLEAN_WIDTH * 0.75:
            out[k] = int(np.argmin(np.abs(logs - np.log(w))))
    return out


@dataclass(frozen=True)
class Method:
    name: str
    clean_weight: float  # face score = a * clean + (1 - a) * matched (-1: the max of both)
    cohort: bool


@dataclass(frozen=True)
class Features:
    """Per query, for the leave-one-out and the stranger condition."""

    s1: np.ndarray
    gap: np.ndarray
    cohort: np.ndarray
    own: np.ndarray  # best person is the query's own (LOO)
    has_own: np.ndarray
    t_s1: np.ndarray
    t_gap: np.ndarray
    t_cohort: np.ndarray


def features(sc: np.ndarray, sm: np.ndarray, qidx: np.ndarray, persons: np.ndarray, people: int,
             method: Method, top_k: int, cohort_n: int, per_person_m: int = 3) -> Features:
    rows = np.arange(len(sc))
    sc = sc.copy()
    sm = sm.copy()
    sc[rows, qidx] = -np.inf
    sm[rows, qidx] = -np.inf
    own = persons[qidx]
    # matched scores only for each person's per_person_m faces nearest by the clean score
    for p in range(people):
        cols = np.flatnonzero(persons == p)
        if len(cols) > per_person_m:
            far = np.argsort(-sc[:, cols], axis=1)[:, per_person_m:]
            sub = sm[:, cols]
            np.put_along_axis(sub, far, -np.inf, 1)
            sm[:, cols] = sub

    def per_person(s: np.ndarray) -> np.ndarray:
        out = np.full((len(s), people), -np.inf)
        for p in range(people):
            cols = persons == p
            out[:, p] = s[:, cols].max(1)
        return out

    pc, pm = per_person(sc), per_person(sm)

    def one(pc: np.ndarray, pm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        # matched scores only for the top_k people by the clean score (bounded cost)
        order = np.argsort(-pc, axis=1)[:, :top_k]
        c = np.take_along_axis(pc, order, 1)
        m = np.take_along_axis(pm, order, 1)
        a = method.clean_weight
        comb = np.maximum(c, m) if a < 0 else a * c + (1 - a) * m
        comb = np.where(np.isfinite(c), comb, -np.inf)
        srt = np.sort(comb, axis=1)[:, ::-1]
        s1, s2 = srt[:, 0], srt[:, 1]
        rest = srt[:, 1:1 + cohort_n]
        rest = np.where(np.isfinite(rest), rest, np.nan)
        coh = s1 - np.nanmean(rest, axis=1)
        best = order[rows, comb.argmax(1)]
        return s1, s1 - s2, coh, best

    s1, gap, coh, best = one(pc, pm)
    has_own = np.isfinite(pc[rows, own])
    pc2, pm2 = pc.copy(), pm.copy()
    pc2[rows, own] = -np.inf
    pm2[rows, own] = -np.inf
    t1, tg, tc, _ = one(pc2, pm2)
    return Features(s1, gap, coh, best == own, has_own, t1, tg, tc)


def concat(a: Features, b: Features) -> Features:
    return Features(*(np.concatenate([getattr(a, k), getattr(b, k)]) for k in Features.__dataclass_fields__))


GAPS = np.array([0.0, 0.005, 0.01, 0.015, 0.02, 0.03, 0.04])
COHORTS = np.concatenate([[-np.inf], np.round(np.arange(0.0, 0.081, 0.005), 3)])


def rates(f: Features, t: float, g: float, c: float, cohort: bool) -> tuple[float, float, int]:
    cond = (f.s1 >= t) & (f.gap >= g) & ((f.cohort >= c) if cohort else True)
    tcond = (f.t_s1 >= t) & (f.t_gap >= g) & ((f.t_cohort >= c) if cohort else True)
    h = f.has_own
    return float((cond & f.own)[h].mean()), float(1 - tcond.mean()), int((cond & ~f.own)[h].sum())


def pick(f: Features, cohort: bool, min_rejected: float = MIN_REJECTED) -> tuple[float, float, float]:
    grid = np.round(np.arange(0.85, 1.0, 0.0025), 4)
    best, arg = None, (grid[-1], GAPS[-1], COHORTS[-1])
    for g in GAPS:
        for c in (COHORTS if cohort else [-np.inf]):
            for t in grid:
                ident, rej, _ = rates(f, float(t), float(g), float(c), cohort)
                if rej < min_rejected:
                    continue
                key = (ident, rej, float(t))
                if best is None or key > best:
                    best, arg = key, (float(t), float(g), float(c))
    return arg


METHODS = [Method("clean (shipped signal)", 1.0, False), Method("clean + cohort", 1.0, True),
           Method("matched", 0.0, False), Method("matched + cohort", 0.0, True),
           Method("mix 0.5", 0.5, False), Method("mix 0.5 + cohort", 0.5, True),
           Method("mix 0.25 + cohort", 0.25, True), Method("max", -1.0, False),
           Method("max + cohort", -1.0, True)]


def analyse(sides, data, top_k: int = 10, cohort_n: int = 5, per_person_m: int = 3,  # type: ignore[no-untyped-def]
            min_rejected: float = MIN_REJECTED, methods: list[Method] | None = None) -> int:
    from refrestore.gallery.matched import LEVELS

    persons = {}
    for s, faces in sides.items():
        names = sorted({f.person for f in faces})
        persons[s] = (np.array([names.index(f.person) for f in faces]), len(names))

    def query_sets(side: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        base, m = data[side]
        out = {q: (robust(base[f"q_{q}"]), base[f"detail_{q}"]) for q in ("clean", "48px", "24px")}
        for w in ("48px", "24px"):
            out[f"alt {w}"] = (robust(m[f"alt_{w}"]), m[f"alt_detail_{w}"])
        return out

    def feats(side: str, qset: str, method: Method) -> Features:
        base, m = data[side]
        q, detail = query_sets(side)[qset]
        sc = q @ base["gallery"].T
        lv = level_of(detail)
        sm = sc.copy()
        for k, level in enumerate(LEVELS):
            rows = lv == k
            if rows.any():
                sm[rows] = q[rows] @ m[f"g_{level}"].T
        per, n = persons[side]
        return features(sc, sm, base["query_index"], per, n, method, top_k, cohort_n, per_person_m)

    from refrestore.gallery.rules import RULES

    rule = RULES["dlib"]
    print("Shipped rule (refrestore.gallery.rules.RULES['dlib'], threshold and margin read from each "
          "query's detail), held-out: identified / rejected (wrong person)")
    for qs in ("clean", "48px", "24px", "alt 48px", "alt 24px"):
        _, detail = query_sets("held_out")[qs]
        f = feats("held_out", qs, Method("clean", 1.0, False))
        thr = np.array([rule.threshold_at(d) for d in detail])
        gap = np.array([rule.gap_at(d) for d in detail])
        cond = (f.s1 >= thr) & (f.gap >= gap)
        tcond = (f.t_s1 >= thr) & (f.t_gap >= gap)
        h = f.has_own
        print(f"  {qs:9s} {(cond & f.own)[h].mean():.3f} / {1 - tcond.mean():.3f} ({int((cond & ~f.own)[h].sum())})"
              f"  detail median {np.median(detail):.3f}")
    print("\nHeld-out, query vs the clean and the matched gallery (all faces; medians): genuine best, "
          "best stranger, genuine lead, share of queries whose own person is nearest")
    base_h, m_h = data["held_out"]
    per_h, _ = persons["held_out"]
    qi = base_h["query_index"]
    for qs, level in (("48px", 48), ("24px", 24), ("alt 48px", 48), ("alt 24px", 24)):
        q, _ = query_sets("held_out")[qs]
        for name, g in (("clean", base_h["gallery"]), (f"matched {level}", m_h[f"g_{level}"])):
            s = q @ g.T
            s[np.arange(len(qi)), qi] = -np.inf
            own = per_h[qi][:, None] == per_h[None, :]
            gen = np.where(own, s, -np.inf).max(1)
            imp = np.where(~own, s, -np.inf).max(1)
            k = np.isfinite(gen)
            print(f"  {qs:9s} {name:11s} genuine {np.median(gen[k]):.4f}  stranger {np.median(imp):.4f}  "
                  f"lead {np.median((gen - imp)[k]):.4f}  rank-1 {(gen > imp)[k].mean():.3f}")
    print()
    print(f"top {top_k} people by the clean score get matched scores; cohort = mean of the next "
          f"{cohort_n} people's scores; matched scores for each person's {per_person_m} faces nearest "
          f"by the clean score. Rule per quality chosen on training people "
          f"(>= {min_rejected:.1%} strangers rejected). held-out: identified / rejected (wrong person)")
    for qual, alt in (("clean", None), ("48px", "alt 48px"), ("24px", "alt 24px")):
        print(f"\n{qual}:")
        for method in methods or METHODS:
            # training queries of both kinds of damage: a rule must hold for either
            ftr = feats("train", qual, method)
            if alt:
                ftr = concat(ftr, feats("train", alt, method))
            t, g, c = pick(ftr, method.cohort, min_rejected)
            i_tr, r_tr, _ = rates(ftr, t, g, c, method.cohort)
            cells = [f"train {i_tr:.3f}/{r_tr:.3f}"]
            for qs in (qual, alt) if alt else (qual,):
                i, r, w = rates(feats("held_out", qs, method), t, g, c, method.cohort)
                cells.append(f"{qs} held-out {i:.3f}/{r:.3f} ({w})")
            if method.clean_weight != 1.0 and qual != "clean":
                # the same rule when no matched gallery is at hand (the clean score stands in)
                fb = Method("fallback", 1.0, method.cohort)
                i, r, w = rates(feats("held_out", qual, fb), t, g, c, method.cohort)
                cells.append(f"clean-only fallback {i:.3f}/{r:.3f} ({w})")
            print(f"  {method.name:22s} thr {t:.4f} gap {g:.3f} cohort {c:.3f}: " + ", ".join(cells), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--faces", type=Path, default=ROOT.parent / "shared" / "data" / "faces")
    p.add_argument("--cache", type=Path, default=ROOT / "runs" / "identity-eval")
    p.add_argument("--queries", type=int, default=3)
    p.add_argument("--train-per-person", type=int, default=8)
    p.add_argument("--embed-only", action="store_true")
    p.add_argument("--top-people", type=int, default=10, help="people scored against the matched gallery")
    p.add_argument("--cohort", type=int, default=5, help="people in the cohort term")
    p.add_argument("--min-rejected", type=float, default=MIN_REJECTED,
                   help="strangers a rule must reject on training people")
    p.add_argument("--faces-per-person", type=int, default=3, help="matched faces per candidate person")
    args = p.parse_args(argv)
    if not args.faces.is_dir():
        print(f"error: {args.faces} is not a folder", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    from refrestore.gallery.faceset import read_faceset
    from refrestore.identity import DlibIdentity

    model = DlibIdentity()
    sides = {"train": read_faceset(args.faces, held_out=False, per_person=args.train_per_person),
             "held_out": read_faceset(args.faces, held_out=True)}
    data = {}
    for s, faces in sides.items():
        base = embed_side(model, faces, args.queries, args.cache, s)
        data[s] = (base, embed_matched(model, faces, base["query_index"], args.cache, s))
    if args.embed_only:
        return 0
    return analyse(sides, data, args.top_people, args.cohort, args.faces_per_person, args.min_rejected)


if __name__ == "__main__":
    sys.exit(main())
