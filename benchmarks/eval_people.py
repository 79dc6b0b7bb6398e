"""Finding people in a multi-person gallery, and the one-person-folder rule, with MobileFaceNet.

Usage: python benchmarks/eval_people.py [--model mobilefacenet-dual|mobilefacenet-lr|mobilefacenet]
                                        [--faces ../shared/data/faces] [--weights FILE] [--cache DIR]
                                        [--calibrate --genuine-floor 0.05] [--threads 1]

``--model mobilefacenet-dual`` (the default, what ``--identity auto`` uses once the published weights
are in the store) scores each query with the published network or the fine-tune, as its detail
says (``MatchRule.switch``); its rows are made from the two networks' own cached rows.

Protocol (issue 21). Each side of the fixed split of people (refrestore.net.split) is a gallery of
folders = persons: the first photos of every person (6 for people with 9 or more; fewer for people
with few photos, always at least 2), and its queries are other photos of the same people (up to 3
each, never in the gallery), at several qualities:

- ``bench``: refrestore.gallery.faceset.query_image (blur matched to the downscale, noise 10, JPEG 40)
  so the face is clean, 64, 48, 40, 32, 24 or 16 px wide;
- ``alt``: another kind of damage (blur 1.2 x the downscale factor, area downscale, noise 8, JPEG 45,
  bicubic back up: what ``../shared/checks/refs-used`` does), 64, 48, 40, 32 or 24 px wide.

Everything is embedded as refrestore does it: the gallery with ``embed_gallery`` (the clean photo as is
and mirrored, and its quality levels), queries with ``select.robust_embedding``, detail with
``quality.assess``. Decisions are ``refrestore.gallery.decide`` with the shipped rule
(``rules.RULES``):

- *identified*: the query's person is matched (only the query's own photo is ever left out: it is
  never in the gallery);
- *strangers refused*: the same query with its whole person removed from the gallery gets "no match";
- *one-person folder*: the query against its own person's folder alone (used?) and against each
  other person's folder alone (refused?), with the one-person rule and its second opinion (dlib's
  descriptor of the query and of the folder's clean photos, ``--second dlib``, the default).

``--calibrate`` chooses the rule's thresholds on the TRAINING people (per detail bin: the best
identification with at most 1% of strangers matched; the stranger threshold at ``--genuine-floor``
of the genuine scores, the shipped rules at 0.05) and prints them; every figure is then reported on the HELD-OUT people.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCH = ("clean", "64px", "48px", "40px", "32px", "24px", "16px")
ALT = ("64px", "48px", "40px", "32px", "24px")


def alt_query(path: Path, width: int, seed: int) -> np.ndarray:
    """The refs-used check's damage: the face ``width`` px wide in a 512 aligned crop."""
    from refrestore.gallery.faceset import read_aligned

    rng = np.random.default_rng(seed)
    img = read_aligned(path, 512)
    s = width / 256.0
    x = cv2.GaussianBlur(img, (0, 0), 1.2 / s)
    x = cv2.resize(x, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    x = np.clip(x + rng.normal(0, 8, x.shape), 0, 255).astype(np.uint8)
    x = cv2.imdecode(cv2.imencode(".jpg", x, [cv2.IMWRITE_JPEG_QUALITY, 45])[1], cv2.IMREAD_UNCHANGED)
    return np.ascontiguousarray(cv2.resize(x, (512, 512), interpolation=cv2.INTER_CUBIC))


def side_photos(faces, held_out: bool) -> dict[str, tuple[list[int], list[int]]]:  # type: ignore[no-untyped-def]
    """Per person of one side: (the photos a gallery may hold, the query photos), as photo indices.
    The last photos, up to 3, are queries; at least 2 are always left for the gallery."""
    from refrestore.net.split import is_held_out

    by: dict[str, list[int]] = {}
    for i, f in enumerate(faces):
        if is_held_out(f.person) == held_out:
            by.setdefault(f.person, []).append(i)
    out = {}
    for person, idx in by.items():
        nq = max(0, min(3, len(idx) - 2))
        out[person] = (idx[:len(idx) - nq], idx[len(idx) - nq:])
    return out


def split_side(faces, held_out: bool):  # type: ignore[no-untyped-def]
    """(gallery photo indices, query photo indices, person names) of one side: each person's
    first 6 gallery photos (fewer where it has fewer) and its queries."""
    gallery, queries = [], []
    photos = side_photos(faces, held_out)
    for rest, q in photos.values():
        gallery += rest[:6]
        queries += q
    return np.array(gallery), np.array(queries), sorted(photos)


def embed_all(faces, model, cache: Path) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    """Gallery rows of every photo, and query embeddings + details of both sides' queries."""
    from refrestore.gallery.faceset import query_image, read_aligned
    from refrestore.gallery.quality import assess
    from refrestore.gallery.select import robust_embedding
    from refrestore.identity import embed_gallery

    def key_of(tag: str) -> str:
        return hashlib.sha256(("|".join(str(f.path) for f in faces) + model.version + tag + "v1").encode()).hexdigest()[:16]

    view = getattr(model, "restored_queries", None)
    plain = cache / f"people-{model.name}-{key_of('')}.npz"  # queries as they are
    path = plain if view is None else cache / f"people-{model.name}-{key_of(view.tag)}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    start = time.perf_counter()
    out: dict[str, np.ndarray] = {}
    if plain.is_file():  # the gallery rows do not depend on how queries are prepared
        with np.load(plain, allow_pickle=False) as z:
            out["gallery"] = z["gallery"]
    else:
        out["gallery"] = np.concatenate([embed_gallery(model, [read_aligned(f.path, 256)]) for f in faces])
    print(f"  gallery rows: {len(faces)} photos ({time.perf_counter() - start:.0f} s)", flush=True)
    qidx = np.concatenate([split_side(faces, h)[1] for h in (False, True)])
    out["queries"] = qidx
    kinds = [("bench", q) for q in BENCH] + [("alt", q) for q in ALT]
    for kind, q in kinds:
        embs, details = [], []
        for i in qidx:
            f = faces[int(i)]
            img = query_image(f.path, q, seed=int(i)) if kind == "bench" else alt_query(f.path, int(q[:-2]), int(i))
            details.append(assess(img, None, 512.0).sharpness)
            embs.append(robust_embedding(img, model, details[-1]))
        out[f"q_{kind}_{q}"] = np.stack(embs)
        out[f"d_{kind}_{q}"] = np.asarray(details)
        print(f"  queries {kind} {q}: {len(qidx)} ({time.perf_counter() - start:.0f} s)", flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out)
    return out


def embed_second(faces, cache: Path) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    """dlib's rows, as refrestore's one-person rule asks for them (``select.mirrored_embeddings``):
    every photo's clean 512 crop (``gallery``, by photo), and both sides' queries of every kind
    (as ``embed_all`` orders them)."""
    from refrestore.gallery.faceset import query_image, read_aligned
    from refrestore.gallery.select import mirrored_embeddings
    from refrestore.identity import DlibIdentity

    key = hashlib.sha256(("|".join(str(f.path) for f in faces) + "dlib-mirrored-v1").encode()).hexdigest()[:16]
    path = cache / f"people-dlib-{key}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    model = DlibIdentity()
    start = time.perf_counter()
    out: dict[str, np.ndarray] = {}
    gi = np.concatenate([split_side(faces, h)[0] for h in (False, True)])
    rows = np.zeros((len(faces), model.dim), np.float32)
    for i in gi:
        rows[int(i)] = mirrored_embeddings([read_aligned(faces[int(i)].path, 512)], model)[0]
    out["gallery"] = rows
    print(f"  dlib gallery rows: {len(gi)} photos ({time.perf_counter() - start:.0f} s)", flush=True)
    qidx = np.concatenate([split_side(faces, h)[1] for h in (False, True)])
    for kind, q in [("bench", q) for q in BENCH] + [("alt", q) for q in ALT]:
        imgs = (query_image(faces[int(i)].path, q, seed=int(i)) if kind == "bench"
                else alt_query(faces[int(i)].path, int(q[:-2]), int(i)) for i in qidx)
        out[f"q_{kind}_{q}"] = np.stack([mirrored_embeddings([img], model)[0] for img in imgs])
        print(f"  dlib queries {kind} {q}: {len(qidx)} ({time.perf_counter() - start:.0f} s)", flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out)
    return out


def dual_rows(pub: dict[str, np.ndarray], lr: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """mobilefacenet-dual's rows from the two networks' own (cached) rows, as
    ``DualMobileFaceNet`` makes them: per part, the two unit embeddings side by side over sqrt 2
    (the published network's levels outside ``PUBLISHED_LEVELS`` hold its clean embedding)."""
    from refrestore.identity.levels import LEVELS
    from refrestore.identity.mobilefacenet import PUBLISHED_LEVELS, side_by_side

    out = dict(lr)
    for k in lr:
        if k == "gallery" or k.startswith("q_"):
            n = len(lr[k])
            a, b = pub[k].reshape(n, -1, 128).copy(), lr[k].reshape(n, -1, 128)
            if k == "gallery":
                for j, w in enumerate(LEVELS):
                    if w not in PUBLISHED_LEVELS:
                        a[:, 1 + j] = a[:, 0]
            out[k] = side_by_side(a, b)
    return out


def make_gallery(rows: np.ndarray, persons: list[str], model, levels: tuple[int, ...]):  # type: ignore[no-untyped-def]
    """A Gallery of precomputed rows (what decide reads: embeddings, levels, persons)."""
    from refrestore.faces import LANDMARKS_RETINAFACE, DetectedFace
    from refrestore.gallery.index import Gallery, GalleryFace
    from refrestore.gallery.quality import Quality

    dim = model.dim
    face = DetectedFace((0, 0, 1, 1), np.zeros((5, 2), np.float32), 1.0, LANDMARKS_RETINAFACE, "x")
    q = Quality(*(0.0,) * 7)
    out = [GalleryFace(Path(f"{p}/{i}"), 0, face, np.eye(2, 3), True, r[:dim], 0, 0, 0, 0, 0, q, (1, 1),
                       person=p, labelled=True, levels=r[dim:].reshape(-1, dim) if len(r) > dim else None)
           for i, (r, p) in enumerate(zip(rows, persons))]
    return Gallery(out, [], model.name, model.version, levels=levels)


class Side:
    """One side's gallery and queries, with per-query scores against every person."""

    def __init__(self, data: dict[str, np.ndarray], faces, held_out: bool, model, rule,  # type: ignore[no-untyped-def]
                 second: dict[str, np.ndarray] | None = None) -> None:
        from refrestore.identity import gallery_levels

        gi, qi, self.names = split_side(faces, held_out)
        self.persons = [faces[int(i)].person for i in gi]
        self.q_person = np.array([self.names.index(faces[int(i)].person) for i in qi])
        rows = np.array([np.flatnonzero(data["queries"] == i)[0] for i in qi])
        self.gallery = make_gallery(data["gallery"][gi], self.persons, model, gallery_levels(model))
        self.queries = {k[2:]: data[k][rows] for k in data if k.startswith("q_")}
        self.details = {k[2:]: data[k][rows] for k in data if k.startswith("d_")}
        self.rule = rule
        self.second_queries: dict[str, np.ndarray] = {}
        self.second_centroids: np.ndarray | None = None  # (people, dim2) unit, in self.names' order
        if second is not None:
            self.second_queries = {k[2:]: second[k][rows] for k in second if k.startswith("q_")}
            g2 = second["gallery"][gi]
            persons = np.array(self.persons)
            c = np.stack([g2[persons == n].sum(0) for n in self.names]).astype(np.float64)
            self.second_centroids = (c / np.linalg.norm(c, axis=1, keepdims=True)).astype(np.float32)

    def scores(self, kind: str, rule) -> np.ndarray:  # type: ignore[no-untyped-def]
        """(queries, people) person scores under ``rule``'s anchors and levels."""
        from refrestore.gallery.decide import person_scores

        q, d = self.queries[kind], self.details[kind]
        return np.array([[s[n] for n in self.names] for s in
                         (person_scores(self.gallery, q[i], float(d[i]), rule) for i in range(len(q)))])


def rates(S: np.ndarray, own: np.ndarray, thr: np.ndarray, gap: np.ndarray) -> tuple[float, float, int]:
    """(identified, strangers refused, wrong person) of threshold + margin over the second person."""
    r = np.arange(len(S))
    top = -np.sort(-S, 1)
    hit = (top[:, 0] >= thr) & (top[:, 0] - top[:, 1] >= gap)
    right = hit & (S.argmax(1) == own)
    T = S.copy()
    T[r, own] = -np.inf
    st = -np.sort(-T, 1)
    fa = (st[:, 0] >= thr) & (st[:, 0] - st[:, 1] >= gap)
    return float(right.mean()), float(1 - fa.mean()), int((hit & ~right).sum())


def calibrate(side: Side, rule, max_fa: float, genuine_floor: float):  # type: ignore[no-untyped-def]
    """Per anchor: (threshold, gap) with the best identification at most ``max_fa`` strangers
    matched, and the stranger threshold at ``genuine_floor`` of the own-person scores, over the
    queries of both damages whose detail is nearest that anchor."""
    S, D, own = [], [], []
    for kind in side.queries:
        S.append(side.scores(kind, rule))
        D.append(side.details[kind])
        own.append(side.q_person)
    S, D, own = np.concatenate(S), np.concatenate(D), np.concatenate(own)
    anchors = np.asarray(rule.details)
    nearest = np.abs(D[:, None] - anchors[None, :]).argmin(1)
    thresholds, gaps, strangers = [], [], []
    for k in range(len(anchors)):
        m = nearest == k
        Sk, ok = S[m], own[m]
        best = (-1.0, 0.9, 0.1)
        for gap in (0.0, 0.02, 0.04, 0.06, 0.08, 0.1):
            for thr in np.arange(0.2, 0.9, 0.005):
                ident, refused, _ = rates(Sk, ok, np.full(len(Sk), thr), np.full(len(Sk), gap))
                if refused >= 1 - max_fa and ident > best[0]:
                    best = (ident, float(thr), gap)
        gen = Sk[np.arange(len(Sk)), ok]
        thresholds.append(round(best[1], 3))
        gaps.append(best[2])
        strangers.append(round(float(np.quantile(gen, genuine_floor)), 3))
        print(f"  anchor {anchors[k]:.2f} ({int(m.sum())} queries): threshold {best[1]:.3f} gap {best[2]:.2f} "
              f"(identified {best[0]:.3f} of them), stranger threshold {strangers[-1]:.3f}", flush=True)
    if side.second_centroids is not None:
        rule = replace(rule, second=calibrate_second(side, rule, nearest_of=anchors, genuine_floor=genuine_floor))
    # a blurrier query never gets a lower threshold than a sharper one needs... is not required here:
    # the scores of blurrier queries are compared with blurrier gallery levels, so each anchor stands alone.
    return replace(rule, thresholds=tuple(thresholds), gaps=tuple(gaps), strangers=tuple(strangers),
                   second=rule.second)


def calibrate_second(side: Side, rule, nearest_of: np.ndarray, genuine_floor: float):  # type: ignore[no-untyped-def]
    """dlib as the one-person rule's second opinion: its weight makes the two models' scores
    spread alike (the ratio of their spreads over every query and person), its centre is dlib's
    median score, and the stranger threshold of the fused score is at ``genuine_floor`` of the
    own-person fused scores, per anchor (queries of both damages nearest it)."""
    from refrestore.gallery.people import SecondOpinion

    S1, S2, D, own = [], [], [], []
    for kind in side.queries:
        S1.append(side.scores(kind, rule))
        S2.append(side.second_queries[kind] @ side.second_centroids.T)
        D.append(side.details[kind])
        own.append(side.q_person)
    S1, S2, D, own = np.concatenate(S1), np.concatenate(S2), np.concatenate(D), np.concatenate(own)
    weight, centre = float(S1.std() / S2.std()), float(np.median(S2))
    F = S1 + weight * (S2 - centre)
    gen = F[np.arange(len(F)), own]
    nearest = np.abs(D[:, None] - nearest_of[None, :]).argmin(1)
    strangers = tuple(round(float(np.quantile(gen[nearest == k], genuine_floor)), 3) for k in range(len(nearest_of)))
    print(f"  second opinion dlib: weight {weight:.3f}, centre {centre:.4f}, fused stranger thresholds {strangers}",
          flush=True)
    return SecondOpinion("dlib", round(weight, 3), round(centre, 4), strangers)


def one_person(side: Side, kind: str, rule) -> tuple[float, float, float]:  # type: ignore[no-untyped-def]
    """(own folder used, other person's folder used, unverifiable share) under the one-person rule."""
    from refrestore.gallery.decide import FaceQuery, decide_photo

    q, d = side.queries[kind], side.details[kind]
    galleries = {}
    for p in sorted(set(side.q_person.tolist())):
        name = side.names[p]
        sub = side.gallery.subset(lambda f, n=name: f.person == n)
        sub.declared = name
        galleries[p] = sub
    people = sorted(galleries)
    used_own, used_other, unver = [], [], []
    q2 = side.second_queries.get(kind)
    cents = side.second_centroids
    for i in range(len(q)):
        fq = FaceQuery(q[i], float(d[i]), None, None if q2 is None else q2[i])
        p = int(side.q_person[i])
        o = people[(people.index(p) + 1) % len(people)]
        own = decide_photo(galleries[p], [fq], rule, second_centroid=None if cents is None else cents[p])[0]
        other = decide_photo(galleries[o], [fq], rule, second_centroid=None if cents is None else cents[o])[0]
        used_own.append(own.matched)
        used_other.append(other.matched)
        unver.append(not own.verifiable)
    return float(np.mean(used_own)), float(np.mean(used_other)), float(np.mean(unver))


def pc(a: np.ndarray) -> str:
    return "/".join(f"{v:.3f}" for v in np.percentile(a, [1, 5, 50, 95, 99]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--faces", type=Path, default=ROOT.parent / "shared" / "data" / "faces")
    p.add_argument("--model", choices=("mobilefacenet", "mobilefacenet-lr", "mobilefacenet-dual"),
                   default="mobilefacenet-dual")
    p.add_argument("--weights", type=Path, default=None,
                   help="default: the shared published file (mobilefacenet) or models/mobilefacenet_lr.pt "
                        "(mobilefacenet-lr, and the fine-tune half of mobilefacenet-dual)")
    p.add_argument("--levels", choices=("on", "off"), default="on", help="gallery quality levels")
    p.add_argument("--second", choices=("dlib", "none"), default="dlib",
                   help="the one-person rule's second opinion (none: the first model's score alone)")
    p.add_argument("--cache", type=Path, default=ROOT / "runs" / "identity-eval")
    p.add_argument("--calibrate", action="store_true", help="choose the rule on the training people")
    p.add_argument("--max-fa", type=float, default=0.01)
    p.add_argument("--genuine-floor", type=float, default=0.03)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--queries", choices=("restored", "plain"), default="restored",
                   help="the fine-tune's queries below detail 0.64 restored blind first (as refrestore "
                        "does) or embedded as they are (the release before)")
    args = p.parse_args(argv)
    published = ROOT.parent / "shared" / "weights" / "mobilefacenet" / "mobilefacenet.pt"
    if args.weights is None:
        args.weights = published if args.model == "mobilefacenet" else ROOT / "models" / "mobilefacenet_lr.pt"
    if not args.faces.is_dir() or not args.weights.is_file() or (args.model.endswith("dual") and not published.is_file()):
        print(f"error: need {args.faces}, {args.weights} and {published}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    from refrestore.gallery.faceset import read_faceset
    from refrestore.gallery.rules import RULES
    from refrestore.identity import embedded_restorer_queries
    from refrestore.identity.mobilefacenet import DualMobileFaceNet, MobileFaceNetIdentity

    faces = read_faceset(args.faces)
    if args.model == "mobilefacenet-dual":
        if args.levels != "on":
            print("error: mobilefacenet-dual is measured with its gallery levels", file=sys.stderr)
            return 2
        model = DualMobileFaceNet(published, args.weights)
        if args.queries == "restored":
            # as init_identity_model: the fine-tune's queries (detail below the switch) restored
            # first; the published half only ever scores queries that are not
            model.fine_tune.restored_queries = embedded_restorer_queries()
        data = dual_rows(embed_all(faces, model.published, args.cache), embed_all(faces, model.fine_tune, args.cache))
    elif args.levels == "on":
        model = MobileFaceNetIdentity(args.weights, name=args.model)
        if args.queries == "restored" and args.model == "mobilefacenet-lr":
            model.restored_queries = embedded_restorer_queries()
        data = embed_all(faces, model, args.cache)
    else:
        # the clean columns of the levels-on rows are the levels-off rows: reuse that cache
        model = MobileFaceNetIdentity(args.weights, name=args.model, levels=())
        data = dict(embed_all(faces, MobileFaceNetIdentity(args.weights, name=args.model), args.cache))
        data["gallery"] = data["gallery"][:, :model.dim]
    rule = RULES.get(args.model) or RULES["mobilefacenet"]
    second = embed_second(faces, args.cache) if args.second == "dlib" else None
    if second is None:
        rule = replace(rule, second=None)
    if not model.gallery_levels:
        rule = replace(rule, levels=None)
    if args.calibrate:
        train = Side(data, faces, False, model, rule, second)
        print(f"calibrating on {len(train.names)} training people ({len(train.q_person)} queries per quality)")
        rule = calibrate(train, rule, args.max_fa, args.genuine_floor)
        print(f"  rule: {rule}")
    held = Side(data, faces, True, model, rule, second)
    print(f"\nheld-out: {len(held.names)} people, {len(held.persons)} gallery photos, {len(held.q_person)} queries "
          f"per quality ({len(held.q_person)} stranger queries per quality)")
    print("kind  quality  identified  strangers-refused (wrong person)  | one-person folder: own used, "
          "other's used, unverifiable | detail median | genuine / best stranger (pct 1/5/50/95/99)")
    for kind in held.queries:
        S = held.scores(kind, rule)
        d = held.details[kind]
        thr = np.array([rule.threshold_at(x) for x in d])
        gap = np.array([rule.gap_at(x) for x in d])
        # unverifiable faces are never matched
        ver = np.array([rule.unverifiable(float(x), None) is None for x in d])
        ident, refused, wrong = rates(np.where(ver[:, None], S, -9.0), held.q_person, thr, gap)
        own_used, other_used, unver = one_person(held, kind, rule)
        r = np.arange(len(S))
        gen = S[r, held.q_person]
        T = S.copy()
        T[r, held.q_person] = -np.inf
        print(f"{kind:14s} {ident:9.3f}  {refused:9.3f} ({wrong})  | {own_used:.3f} {other_used:.3f} {unver:.3f} | "
              f"{np.median(d):.3f} | {pc(gen)} / {pc(T.max(1))}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
