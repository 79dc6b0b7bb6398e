"""Identity signals on held-out people: dlib, refrestore's faceid-small, and their fusion.

Usage: python benchmarks/eval_identity.py [--faces ../shared/data/faces] [--cache runs/identity-eval]

For each side of the split (refrestore.net.split) the gallery is every clean photo (one view,
as the index embeds it) and the queries are up to --queries photos per person at three
qualities (clean, 48 px, 24 px; refrestore.gallery.faceset), embedded as selection embeds them
(as is + mirrored, averaged). Prints

1. verification on held-out people (query vs every clean photo of the other people and of
   its own person): TAR at FAR 1e-2 and 1e-3, and EER, per model and quality;
2. for each dlib weight of the fusion, the rule calibrated on TRAINING people (threshold and
   margin over the second person, per quality, rejecting >= 99.5% of strangers) and its
   identified / rejected rates on HELD-OUT people;
3. the score distributions the shipped rule was chosen from.

Embeddings are cached under --cache (keyed by model version and file list).
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
QUERY_VIEWS = 2


def _views(img: np.ndarray) -> list[np.ndarray]:
    return [img, np.ascontiguousarray(img[:, ::-1])]


def cached_embeddings(cache: Path, name: str, faces, extra: str,  # type: ignore[no-untyped-def]
                      compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """``compute()``'s arrays, kept in ``cache/NAME-KEY.npz`` (KEY: the photos and ``extra``)."""
    key = hashlib.sha256(("|".join(str(f.path) for f in faces) + extra).encode()).hexdigest()[:16]
    path = cache / f"{name}-{key}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    out = compute()
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out)
    return out


def embed_side(model, faces, queries_per_person: int, cache: Path, tag: str) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    from refrestore.gallery.faceset import QUALITIES, query_image, read_aligned
    from refrestore.gallery.quality import assess

    def compute() -> dict[str, np.ndarray]:
        start = time.perf_counter()
        gallery = np.concatenate([model.embed([read_aligned(f.path)]) for f in faces])
        qidx = query_indices(faces, queries_per_person)
        out = {"gallery": gallery, "query_index": qidx}
        for quality in QUALITIES:
            embs, details = [], []
            for i in qidx:
                img = query_image(faces[i].path, quality, seed=int(i))
                embs.append(model.embed(_views(img)))
                details.append(assess(img, None, 512.0).sharpness)
            out[f"q_{quality}"] = np.stack(embs)
            out[f"detail_{quality}"] = np.asarray(details)
        print(f"  embedded {tag} with {model.name}: {len(faces)} photos, {len(qidx)} queries "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
        return out

    return cached_embeddings(cache, f"{model.name}-{tag}", faces, f"|{queries_per_person}|{model.version}", compute)


def query_indices(faces, per_person: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Up to ``per_person`` photos of each person, spread over its (resolution-sorted) photos."""
    by: dict[str, list[int]] = {}
    for i, f in enumerate(faces):
        by.setdefault(f.person, []).append(i)
    out = []
    for idx in by.values():
        if len(idx) < 2:
            continue
        step = max(1, len(idx) // per_person)
        out.extend(idx[::step][:per_person])
    return np.asarray(out, dtype=np.int64)


def robust(q: np.ndarray) -> np.ndarray:
    s = q.sum(1)
    return s / np.maximum(np.linalg.norm(s, axis=1, keepdims=True), 1e-12)


def fuse(a: np.ndarray, b: np.ndarray, w: float) -> np.ndarray:
    return np.concatenate([np.sqrt(w) * a, np.sqrt(1 - w) * b], axis=-1)


def tar_at_far(gen: np.ndarray, imp: np.ndarray, far: float) -> float:
    thr = np.quantile(imp, 1.0 - far)
    return float((gen > thr).mean())


def eer(gen: np.ndarray, imp: np.ndarray) -> float:
    ts = np.quantile(np.concatenate([gen, imp]), np.linspace(0, 1, 2001))
    frr = np.array([(gen < t).mean() for t in ts])
    far = np.array([(imp >= t).mean() for t in ts])
    i = int(np.argmin(np.abs(frr - far)))
    return float((frr[i] + far[i]) / 2)


def pairs(qemb: np.ndarray, gemb: np.ndarray, qidx: np.ndarray, persons: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sims = qemb @ gemb.T
    same = persons[qidx][:, None] == persons[None, :]
    own = np.zeros_like(same)
    own[np.arange(len(qidx)), qidx] = True
    return sims[same & ~own], sims[~same]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--faces", type=Path, default=ROOT.parent / "shared" / "data" / "faces")
    p.add_argument("--cache", type=Path, default=ROOT / "runs" / "identity-eval")
    p.add_argument("--queries", type=int, default=3, help="queries per person")
    p.add_argument("--train-per-person", type=int, default=8, help="training gallery photos per person")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    if not args.faces.is_dir():
        print(f"error: {args.faces} is not a folder", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    from refrestore.gallery.faceset import QUALITIES, read_faceset
    from refrestore.gallery.heldout import GallerySet, QuerySet, distributions, person_scores, pick_rule, rates
    from refrestore.identity import DlibIdentity
    from refrestore.identity.own import OwnIdentity

    models = [DlibIdentity(), OwnIdentity()]
    sides = {"train": read_faceset(args.faces, held_out=False, per_person=args.train_per_person),
             "held_out": read_faceset(args.faces, held_out=True)}
    emb = {(m.name, s): embed_side(m, faces, args.queries, args.cache, s) for m in models for s, faces in sides.items()}
    persons = {}
    for s, faces in sides.items():
        names = sorted({f.person for f in faces})
        persons[s] = (np.array([names.index(f.person) for f in faces]), len(names))
    held = sides["held_out"]
    print(f"held-out: {len(persons['held_out'][0])} photos of {persons['held_out'][1]} people; "
          f"training (calibration): {len(persons['train'][0])} photos of {persons['train'][1]} people")

    def model_emb(side: str, w: float | None, name: str | None = None) -> dict[str, np.ndarray]:
        d, o = emb[("dlib", side)], emb[("faceid", side)]
        if name == "dlib" or w == 1.0:
            return d
        if name == "faceid" or w == 0.0:
            return o
        out = {"gallery": fuse(d["gallery"], o["gallery"], w), "query_index": d["query_index"]}
        for q in QUALITIES:
            out[f"q_{q}"] = fuse(d[f"q_{q}"], o[f"q_{q}"], w)
            out[f"detail_{q}"] = d[f"detail_{q}"]
        return out

    print("\n1. Verification, held-out people (query view as is vs clean photos; "
          f"TAR at FAR 1e-2 / 1e-3, EER)")
    per, _ = persons["held_out"]
    from refrestore.identity.fused import DLIB_WEIGHT

    for label, w in (("dlib", 1.0), ("faceid", 0.0), (f"fused {DLIB_WEIGHT}", DLIB_WEIGHT)):
        e = model_emb("held_out", w)
        cells = []
        for q in QUALITIES:
            qe = e[f"q_{q}"][:, 0]
            qe = qe / np.linalg.norm(qe, axis=1, keepdims=True)
            gen, imp = pairs(qe, e["gallery"], e["query_index"], per)
            cells.append(f"{q} {tar_at_far(gen, imp, 1e-2):.3f}/{tar_at_far(gen, imp, 1e-3):.3f}/{eer(gen, imp):.3f}")
        print(f"  {label:10s} " + "  ".join(cells))

    def scores(side: str, w: float, q: str):  # type: ignore[no-untyped-def]
        e = model_emb(side, w)
        per_, n = persons[side]
        qi = e["query_index"]
        qs = QuerySet(robust(e[f"q_{q}"]), per_[qi], qi, e[f"detail_{q}"])
        return person_scores(qs, GallerySet(e["gallery"], per_), n), qs

    print("\n2. Identification with a rule calibrated on training people (>= 99.5% strangers rejected); "
          "held-out: identified / rejected (wrong person)")
    results = {}
    # dlib's cosines spread over a few hundredths, faceid's over tenths: the useful weights of
    # a plain cosine mix are close to 1
    for w in (1.0, 0.99, 0.98, 0.97, 0.95, 0.9, 0.0):
        line, rule = [], {}
        for q in QUALITIES:
            ps_tr, _ = scores("train", w, q)
            t, g, r_tr = pick_rule(ps_tr)
            ps_ho, _ = scores("held_out", w, q)
            r = rates(ps_ho, t, g)
            rule[q] = (t, g)
            line.append(f"{q} thr {t:.4f} gap {g:.3f}: train {r_tr.identified:.3f}/{r_tr.rejected:.3f}, "
                        f"held-out {r.identified:.3f}/{r.rejected:.3f} ({r.wrong_person})")
        results[w] = rule
        print(f"  dlib weight {w:.2f}:\n    " + "\n    ".join(line))

    from refrestore.gallery.rules import RULES

    print(f"\n4. Shipped rules (refrestore.gallery.rules.RULES; per-query threshold and margin from the "
          f"query's detail), held-out: identified / rejected (wrong person)")
    for name, w in (("dlib", 1.0), ("fused", DLIB_WEIGHT)):
        rule = RULES.get(name)
        if rule is None:
            print(f"  {name}: no rule shipped")
            continue
        cells = []
        for q in QUALITIES:
            ps, qs = scores("held_out", w, q)
            thr = np.array([rule.threshold_at(d) for d in qs.detail])
            gap = np.array([rule.gap_at(d) for d in qs.detail])
            r = rates(ps, thr, gap)
            cells.append(f"{q} {r.identified:.3f}/{r.rejected:.3f} ({r.wrong_person})")
        print(f"  {name:7s} " + "  ".join(cells) + f"  [{len(qs.detail)} queries, {persons['held_out'][1]} people]")

    print("\n5. Clean gallery-to-gallery pairs (training people): same-person thresholds at FAR 1e-3 / 1e-4 "
          "(clustering of top-level photos, label checks)")
    for w in (1.0, DLIB_WEIGHT, 0.0):
        e = model_emb("train", w)
        per_, _ = persons["train"]
        sims = e["gallery"] @ e["gallery"].T
        iu = np.triu_indices(len(per_), 1)
        same = (per_[:, None] == per_[None, :])[iu]
        gen, imp = sims[iu][same], sims[iu][~same]
        t3, t4 = np.quantile(imp, 1 - 1e-3), np.quantile(imp, 1 - 1e-4)
        print(f"  w={w:.2f}: FAR 1e-3 at {t3:.4f} (TAR {(gen > t3).mean():.3f}), FAR 1e-4 at {t4:.4f} "
              f"(TAR {(gen > t4).mean():.3f}); genuine median {np.median(gen):.4f}")

    print("\n3. Distributions (robust query embedding; percentiles 1/5/50/95/99)")
    for side in ("train", "held_out"):
        for w in (1.0, DLIB_WEIGHT, 0.0):
            for q in QUALITIES:
                ps, qs = scores(side, w, q)
                gen, imp, gap = distributions(ps)
                pc = lambda a: "/".join(f"{v:.3f}" for v in np.percentile(a, [1, 5, 50, 95, 99]))  # noqa: E731
                print(f"  {side:8s} w={w:.2f} {q:5s} genuine {pc(gen)} | impostor {pc(imp)} | "
                      f"genuine-gap {pc(gap)} | detail median {np.median(qs.detail):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
