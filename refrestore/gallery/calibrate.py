"""Calibrate and check the "same person" thresholds on real photos of known people.

History: this photo-level calibration (issue 4) is what ArcFace still uses. dlib and the fused
model now use person-level rules calibrated on shared/data/faces by
``benchmarks/eval_identity.py`` (issue 14, :data:`refrestore.gallery.rules.RULES`); the
figures below are those of the earlier dlib thresholds.

Run ``python benchmarks/calibrate_gallery.py [IDENTITIES_DIR]`` (default ``../shared/data/identities``):
it indexes every photo (one folder per person; a folder with one photo is a person who must
match nobody), then for the main (largest) face of every photo builds two queries, the clean
aligned face and a copy of the photo degraded by ``refrestore.net.degrade.degrade_to_face_width``
so the face is 48 px wide (blur matched to the downscale, noise sigma 10, JPEG quality 40, back up
to the original size; aligned with the clean landmarks, so this measures selection, not
detection). It prints the raw genuine and impostor score distributions, sweeps the threshold of
the real selection (hubness correction included) and picks, for clean and for degraded queries,
the threshold with the best leave-one-out rate whose no-match rate is at least 96.5% (at most 3
of the 99 strangers matched; some margin over the 95% the issue asks for).

Definitions. *Genuine-best*: for a query whose person has other photos, the best similarity to
those photos. *Impostor-best*: the best similarity to any photo of anyone else (the score that
must stay below the threshold when the person is not in the gallery). *Leave-one-out correct*:
with only the query's own photo removed from the gallery, the selection matches and its first
reference is the person's main face in another photo. *No match*: with all the person's photos
removed, the selection returns no reference.

Result with the dlib identity model (99 photos; 93 leave-one-out queries, whose person has
other photos; 99 not-in-gallery queries). Raw cosine of the 4-view averaged query embedding to
the gallery embeddings:

==========  ======================  =======================  ============
query       genuine-best p2 / min   impostor-best p95 / max  detail range
==========  ======================  =======================  ============
clean       0.952 / 0.939           0.927 / 0.937            0.88 - 1.00
48 px       0.920 / 0.915           0.927 / 0.936            0.51 - 0.85
==========  ======================  =======================  ============

Ranking alone puts a photo of the right person first for 100% of both clean and 48-px queries;
the threshold is what costs: dlib's descriptor puts a blurred face about as close to strangers
as to itself. Without correction the best 48-px operating points were 0.930 (leave-one-out
92.5%, no match 96.0%) and 0.9325 (89.2%, 98.0%). The hubness correction (weight 0.5, on
degraded queries only; mean gallery hubness 0.882) moves them to 0.9275 (93.5%, 97.0%) and
0.925 (94.6%, 96.0%); on clean queries it only hurt, so it is off there.

Shipped: clean 0.9375 (leave-one-out 100%, no match 100%), 48 px 0.9275, interpolated on the
detail score between 0.86 and 0.92 (the gap between the degraded maximum 0.85 and the clean
minimum 0.88). The hubness correction is one-sided: it only lowers the scores of gallery faces
that resemble many people, never raises those of unusual ones, because raising them let three
blurred strangers of shared/data/real_lq/whole match one gallery person. With that, 48 px gives
leave-one-out 92.5% and no match 97.0% (96/99), and on the 24 faces of the ten real old photos
in real_lq/whole (none of them in the gallery) 1 face is matched (23/24 no match). These are
fitted on the same photos the tests use (the issue asks for exactly that); expect a few points
less on other people.
ArcFace settings in :mod:`.select` are not calibrated here (no weights offline); run the
benchmark with ``--identity arcface`` where they are.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from refrestore.identity import IdentityModel

from .index import Gallery, GalleryFace, aligned_crop_of, load_rgb
from .select import QueryFace, describe_query, select_from_query

logger = logging.getLogger(__name__)


@dataclass
class LabelledQuery:
    person: str
    path: Path
    clean: QueryFace
    degraded: QueryFace


@dataclass
class CalibrationData:
    gallery: Gallery
    queries: list[LabelledQuery]

    def people_with_others(self) -> set[str]:
        counts: dict[str, int] = {}
        for q in self.queries:
            counts[q.person] = counts.get(q.person, 0) + 1
        return {p for p, n in counts.items() if n > 1}


def person_of(face: GalleryFace) -> str:
    return face.path.parent.name


def collect(identities_dir: Path, detector: Any, identity: IdentityModel, cache_dir: Path | None = None,
            target_width: int = 48, progress: Callable[[int, int, str], None] | None = None) -> CalibrationData:
    """Index the photos and describe the clean and degraded main face of each."""
    from refrestore.net.degrade import degrade_to_face_width

    gallery = Gallery.build([identities_dir], detector, identity, cache_dir=cache_dir)
    analyzer = gallery.analyzer()
    mains = [f for f in gallery.faces if f.face_index == 0]
    queries = []
    for i, f in enumerate(mains):
        image = load_rgb(f.path)
        clean, affine = aligned_crop_of(image, f.face, f.aligned_crop)
        low = degrade_to_face_width(image, f.face.width, target_width=target_width, noise_sigma=10,
                                    jpeg_quality=40, seed=i)
        degraded, _ = aligned_crop_of(low, f.face, f.aligned_crop)
        queries.append(LabelledQuery(
            person=person_of(f), path=f.path,
            clean=describe_query(clean, f.face, identity, analyzer, affine),
            degraded=describe_query(degraded, f.face, identity, analyzer, affine)))
        if progress is not None:
            progress(i + 1, len(mains), str(f.path))
    return CalibrationData(gallery, queries)


@dataclass
class Evaluation:
    loo_correct: float  # over queries whose person has other photos
    no_match: float  # over all queries, with the whole person removed
    loo_total: int
    no_match_total: int
    failures: list[str]


def evaluate(data: CalibrationData, kind: str, threshold: float | None = None) -> Evaluation:
    """Leave-one-out and not-in-gallery rates of the real selection (``kind``: clean/degraded)."""
    multi = data.people_with_others()
    ok = total = nm_ok = 0
    failures = []
    for q in data.queries:
        query = getattr(q, kind)
        if q.person in multi:
            sub = data.gallery.subset(lambda f, p=q.path: f.path != p)
            sel = select_from_query(sub, query, top_k=3, threshold=threshold, with_images=False)
            top = sel.candidates[0].face if sel.matched else None
            good = top is not None and person_of(top) == q.person and top.face_index == 0
            ok += good
            total += 1
            if not good:
                failures.append(f"{kind} {q.path.parent.name}/{q.path.name}: "
                                f"{'no match' if top is None else top.label} (best {sel.best_identity:.3f}, thr {sel.threshold:.3f})")
        sub = data.gallery.subset(lambda f, p=q.person: person_of(f) != p)
        sel = select_from_query(sub, query, top_k=3, threshold=threshold, with_images=False)
        nm_ok += not sel.matched
        if sel.matched:
            failures.append(f"{kind} {q.path.parent.name}/{q.path.name} not in gallery but matched "
                            f"{sel.candidates[0].face.label} ({sel.best_identity:.3f})")
    return Evaluation(ok / max(total, 1), nm_ok / max(len(data.queries), 1), total, len(data.queries), failures)


def score_distributions(data: CalibrationData, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(genuine-best, impostor-best) similarities of the queries' main faces."""
    mains = [f for f in data.gallery.faces if f.face_index == 0]
    emb = np.stack([f.embedding for f in mains])
    genuine, impostor = [], []
    for q in data.queries:
        sims = emb @ getattr(q, kind).embedding
        own = np.array([person_of(f) == q.person and f.path != q.path for f in mains])
        other = np.array([person_of(f) != q.person for f in mains])
        if own.any():
            genuine.append(float(sims[own].max()))
        impostor.append(float(sims[other].max()))
    return np.array(genuine), np.array(impostor)


def sweep(data: CalibrationData, kind: str, grid: np.ndarray) -> list[tuple[float, float, float]]:
    """(threshold, leave-one-out correct, no-match rate) of the real selection at each threshold."""
    out = []
    for t in grid:
        ev = evaluate(data, kind, threshold=float(t))
        out.append((float(t), ev.loo_correct, ev.no_match))
    return out


def pick_threshold(points: list[tuple[float, float, float]], min_no_match: float = 0.965) -> float:
    """The threshold with the best leave-one-out rate among those keeping the no-match rate
    (ties: the higher no-match rate, then the higher threshold)."""
    feasible = [p for p in points if p[2] >= min_no_match]
    if not feasible:
        return max(p[0] for p in points)
    return max(feasible, key=lambda p: (p[1], p[2], p[0]))[0]


def mean_hubness(data: CalibrationData) -> float:
    from .rules import thresholds_for
    from .select import hubness

    th = thresholds_for(data.gallery.identity_name)
    return float(hubness(data.gallery, th.gallery, th.hub_prior).mean())
