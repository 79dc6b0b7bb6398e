"""Experiment (issue 14, not shipped): maps of dlib's space for degraded queries.

``python tools/experiments/dlib_degraded_maps.py [--pairs 4]``

1. For every photo of the student fold of the training people (``dlib_student``: training
   people minus the calibration fold), ``--pairs`` degraded copies (face 16-72 px wide, the
   training recipe of refrestore.net.degrade, not the benchmark's) are embedded with dlib
   (resumable, one part file per 100 photos under runs/dlib-lowres/pairs; about 15 minutes).
2. Fitted on those pairs, each evaluated as ``benchmarks/eval_identity.py`` does (rule chosen on
   training people rejecting >= 99.5% of strangers, figures on the 106 held-out people):
   ridge regression degraded -> clean descriptor (global, per detail bin, blended with the
   query), centring, and within-class covariance whitening (WCCN) of query and gallery.
   Set ALL=1 to calibrate on all training people's queries instead of the calibration fold only.

Result: regression raises the degraded query's cosine to its own clean photo (24 px 0.926 ->
0.939) but pulls every query toward the mean face, so strangers rise too and identification
falls. Calibrated on all training people (ALL=1; plain dlib 85.5% / 59.1% / 10.1%), the best,
a 50/50 blend of the query and its regression, gains 1.6 points at 48 px (60.7%), loses at
24 px (8.5%) and lets 2 of 318 strangers through on the alt damage; the others identify fewer.
Whitening seemed to lift clean queries to 91% on the small calibration fold, but let 3-5% of
held-out strangers through.
"""
import glob
import math
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.chdir(ROOT)

from dlib_student import is_calibration_person  # noqa: E402
from eval_dlib_student import dlib_sides  # noqa: E402
from eval_identity import robust  # noqa: E402

from refrestore.gallery.faceset import FACE_WIDTH_FRACTION  # noqa: E402
from refrestore.gallery.heldout import GallerySet, QuerySet, person_scores, pick_rule, rates  # noqa: E402
from refrestore.gallery.quality import assess  # noqa: E402
from refrestore.identity import DlibIdentity  # noqa: E402
from refrestore.net.degrade import MILD, degrade, face_width_rule, random_params  # noqa: E402
from refrestore.net.split import split_people  # noqa: E402
from refrestore.net.train_embedder import list_people, read_rgb  # noqa: E402

# 1. pairs
K = int(sys.argv[sys.argv.index("--pairs") + 1]) if "--pairs" in sys.argv else 4
out = ROOT / "runs/dlib-lowres/pairs"; out.mkdir(exist_ok=True)
people = list_people(ROOT.parent / "shared/data/faces")
train, _ = split_people(people)
files = [f for p in train if not is_calibration_person(p) for f in people[p]]
labels = [p for p in train if not is_calibration_person(p) for f in people[p]]
dlib = DlibIdentity()
rng = np.random.default_rng(123)
CH = 100
for c0 in range(0, len(files), CH):
    part = out / f"part-{c0:05d}.npz"
    if part.is_file():
        rng = np.random.default_rng([123, c0 + CH]); continue
    t = time.time(); rng = np.random.default_rng([123, c0 + CH])
    X, D, W, I = [], [], [], []
    for i in range(c0, min(c0 + CH, len(files))):
        native = read_rgb(files[i], 256)
        for k in range(K):
            w = math.exp(rng.uniform(math.log(16), math.log(72)))
            base = random_params(rng, MILD, "severe", old_photo_prob=0.1, out_size=None)
            factor, sigma = face_width_rule(FACE_WIDTH_FRACTION * 256, w)
            params = replace(base, scale=max(factor, 1.0), blur_sigma=sigma * float(rng.uniform(0.6, 1.4)),
                             noise_sigma=base.noise_sigma * float(rng.uniform(0.0, 1.2)))
            low = degrade(native, params, int(rng.integers(0, 2**31)))
            interp = cv2.INTER_CUBIC if rng.uniform() < 0.6 else cv2.INTER_LINEAR
            img = np.ascontiguousarray(cv2.resize(low, (512, 512), interpolation=interp))
            X.append(dlib.embed([img, np.ascontiguousarray(img[:, ::-1])]))
            D.append(assess(img, None, 512.0).sharpness); W.append(w); I.append(i)
    np.savez(part, x=np.stack(X), detail=np.array(D), width=np.array(W), index=np.array(I))
    print(c0, len(files), round(time.time() - t, 1), flush=True)

# 2. maps
T = np.load(glob.glob(str(ROOT / "runs/dlib-lowres/teacher-*.npy"))[0])
parts = sorted(glob.glob(str(ROOT / "runs/dlib-lowres/pairs/part-*.npz")))
X, D, I = [], [], []
for p in parts:
    z = np.load(p); X.append(z["x"]); D.append(z["detail"]); I.append(z["index"])
X, D, I = np.concatenate(X), np.concatenate(D), np.concatenate(I)
x = robust(X); y = robust(T[I])
print("pairs", len(x), "cos before", (x * y).sum(1).mean().round(4))

def fit(x, y, lam):
    xa = np.c_[x, np.ones(len(x))]
    A = xa.T @ xa + lam * np.eye(xa.shape[1]); A[-1, -1] -= lam
    return np.linalg.solve(A, xa.T @ y)
def apply(W, x):
    o = np.c_[x, np.ones(len(x))] @ W
    return o / np.linalg.norm(o, axis=1, keepdims=True)

ALL = os.environ.get("ALL") == "1"
cache = ROOT / "runs/identity-eval"
faces_root = ROOT.parent / "shared/data/faces"
# (gallery, people, query photos, query persons, robust dlib query embeddings, detail) per side
sets = {name: (side.gallery, side.people, side.queries, side.persons,
               {k: robust(v) for k, v in side.views.items()}, side.detail)
        for name, side in dlib_sides(dlib, faces_root, cache, all_training=ALL).items()}

def evaluate(mapper, label):
    cells = []
    for qual in ("48px", "24px", "alt 48px", "alt 24px"):
        ps = {}
        for side in ("train", "held_out"):
            g, n, qi, per, q, det = sets[side]
            e = mapper(q[qual], det[qual])
            ps[side] = person_scores(QuerySet(e, per, qi, det[qual]), g, n)
        t, gap, r_tr = pick_rule(ps["train"], 0.995)
        r = rates(ps["held_out"], t, gap)
        g, n, qi, per, q, det = sets["held_out"]
        c = (mapper(q[qual], det[qual]) * g.embeddings[qi]).sum(1).mean()
        cells.append(f"{qual} {100*r.identified:.1f}/{100*r.rejected:.1f} cos {c:.4f}")
    print(f"{label:24s} " + " | ".join(cells), flush=True)

evaluate(lambda e, d: e, "dlib")
for lam in (0.1, 1.0, 10.0):
    W = fit(x, y, lam)
    evaluate(lambda e, d, W=W: apply(W, e), f"global ridge {lam}")
# binned by detail
edges = np.quantile(D, [0, 1/3, 2/3, 1])
for lam in (1.0,):
    Ws = [fit(x[(D >= lo) & (D <= hi)], y[(D >= lo) & (D <= hi)], lam) for lo, hi in zip(edges[:-1], edges[1:])]
    def mb(e, d, Ws=Ws):
        b = np.clip(np.searchsorted(edges[1:-1], d), 0, 2)
        out = np.zeros_like(e)
        for k in range(3):
            m = b == k
            if m.any(): out[m] = apply(Ws[k], e[m])
        return out
    evaluate(mb, f"3 detail bins ridge {lam}")
# residual blend: a*x + (1-a)*map
W = fit(x, y, 1.0)
for a in (0.5,):
    evaluate(lambda e, d, W=W, a=a: robust(np.stack([a*e, (1-a)*apply(W, e)], 1)), f"blend {a}")

print("--- whitening (query and gallery transformed alike) ---")
G_tr = sets["train"][0].embeddings
def evaluate_t(tq, tg, label):
    cells = []
    for qual in ("clean", "48px", "24px", "alt 48px", "alt 24px"):
        ps = {}
        for side in ("train", "held_out"):
            g, n, qi, per, q, det = sets[side]
            gt = GallerySet(tg(g.embeddings, qual), g.persons)
            ps[side] = person_scores(QuerySet(tq(q[qual], qual), per, qi, det[qual]), gt, n)
        t, gap, r_tr = pick_rule(ps["train"], 0.995, grid=np.round(np.arange(-1.0, 1.0, 0.0025), 4))
        r = rates(ps["held_out"], t, gap)
        cells.append(f"{qual} {100*r.identified:.1f}/{100*r.rejected:.1f}")
    print(f"{label:24s} " + " | ".join(cells), flush=True)
def nrm(a): return a / np.linalg.norm(a, axis=1, keepdims=True)
mu = G_tr.mean(0)
evaluate_t(lambda e, q: e, lambda g, q: g, "dlib plain")
evaluate_t(lambda e, q: nrm(e - mu), lambda g, q: nrm(g - mu), "centred")
# within-class scatter: degraded vs its clean photo (pairs) + clean within-person (train gallery)
dd = x - y
per_tr = sets["train"][0].persons
wc = np.concatenate([G_tr[per_tr == p] - G_tr[per_tr == p].mean(0) for p in np.unique(per_tr)])
for mixw in (0.0, 0.5, 1.0):
    for eps in (0.1, 0.3):
        Sw = mixw * np.cov(dd.T) + (1 - mixw) * np.cov(wc.T)
        Sw = Sw / np.trace(Sw) * 128
        ev, V = np.linalg.eigh(Sw + eps * np.eye(128))
        A = V @ np.diag(ev ** -0.5) @ V.T
        evaluate_t(lambda e, q, A=A: nrm((e - mu) @ A), lambda g, q, A=A: nrm((g - mu) @ A), f"wccn pairs{mixw} eps{eps}")
