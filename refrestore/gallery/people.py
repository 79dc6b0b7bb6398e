"""People in a gallery, and the person-level "who is it?" decision.

*People, not photos.* A folder of the gallery is a person (``family/grandma/*.jpg`` is
``grandma``: the folder that holds the photo). Photos at the top level of a gallery source (and
sources given as single files) are unlabelled: each of their faces joins the labelled person it
clearly resembles, or else a cluster of unlabelled faces (``person-1``, ``person-2``, ...,
single linkage at the gallery's same-person threshold). In a labelled folder, a photo with
several faces gives the folder's name to the face that resembles the folder's other faces most;
its other faces are unlabelled (the people standing beside).

*Label check.* A labelled face whose mean score to another person's faces beats its mean score
to the other faces of its own person (and reaches the same-person threshold) is a suspected
label error.

*The decision.* Scores are per person (the best cosine over that person's faces). A match needs
the best person's score to reach a threshold that rises as the query loses detail, and to beat
the second person's by a margin that also grows with degradation (:class:`MatchRule`).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

UNLABELLED = ""
CLUSTER_PREFIX = "person-"


# Faces narrower than this in their photo are never matched by a rule that does not say otherwise:
# on held-out people dlib identifies 1.3% of 24-px faces correctly (benchmarks/eval_identity.py),
# so a match there is mostly risk; in the README demo a 22-px blob was matched to a background
# face of another person's photo.
MIN_MATCH_FACE_PX = 32.0


@dataclass(frozen=True)
class SecondOpinion:
    """A second identity model asked where one model alone cannot tell: is a face of a one-person
    folder clearly someone else?

    Its cosine to the person's centroid (``model``'s embeddings of the clean gallery faces) is
    added to the first model's score as ``weight * (cosine - centre)``: the two models' errors
    differ, so the sum separates a person from a stranger better than either (on held-out
    people, another person's 32-px face passed a one-person folder half as often at the same
    share of the person's own faces kept). ``strangers`` are the thresholds of that sum at the
    rule's detail anchors."""

    model: str
    weight: float
    centre: float
    strangers: tuple[float, ...]

    def fused(self, score: float, second: float) -> float:
        return float(score + self.weight * (second - self.centre))


@dataclass(frozen=True)
class Switch:
    """Two models side by side in one embedding (:class:`~refrestore.identity.mobilefacenet.DualMobileFaceNet`):
    the first ``dim`` values are the model for faces with detail, the rest the model for small and
    damaged faces. A query with at least ``detail`` is scored with the first part, any other with
    the second (each part compared on its own, as unit vectors)."""

    dim: int
    detail: float

    def part(self, detail: float) -> slice:
        return slice(0, self.dim) if detail >= self.detail else slice(self.dim, None)


@dataclass(frozen=True)
class MatchRule:
    """Threshold and margin over the second person, piecewise linear in the query's detail.

    ``details`` are ascending anchor values of the sharpness score (for dlib the median detail
    of 24 px, 48 px and clean queries); ``thresholds`` and ``gaps`` are their calibrated values.
    ``gallery`` is the same-person threshold between two clean gallery faces.

    Rules of models with gallery levels (:mod:`refrestore.identity.levels`) also say, per anchor,
    which level the query is compared with (``levels``; None is the clean gallery) and how a
    person's faces make one score (``aggregate``: the best face, or the centroid of them all).
    ``strangers`` are the scores below which a face is positive evidence of someone else (the
    one-person-folder rule); a face narrower than ``min_face_px`` or with less detail than
    ``verifiable_detail`` is unverifiable: no threshold means anything there. ``second``: a
    second model's opinion for that test (:class:`SecondOpinion`), used where its embeddings
    are at hand. ``switch``: the embedding holds two models, and the query's detail picks the one
    that scores it (:class:`Switch`).
    """

    details: tuple[float, ...]
    thresholds: tuple[float, ...]
    gaps: tuple[float, ...]
    gallery: float
    calibrated: bool = True
    levels: tuple[int | None, ...] | None = None
    aggregate: str = "max"  # "max" or "centroid"
    strangers: tuple[float, ...] | None = None
    verifiable_detail: float = 0.0
    min_face_px: float = MIN_MATCH_FACE_PX
    second: SecondOpinion | None = None
    switch: Switch | None = None

    def threshold_at(self, detail: float) -> float:
        return float(np.interp(detail, self.details, self.thresholds))

    def gap_at(self, detail: float) -> float:
        return float(np.interp(detail, self.details, self.gaps))

    def stranger_at(self, detail: float) -> float | None:
        """Below this score a verifiable face is clearly someone else (None: the rule cannot say)."""
        return None if self.strangers is None else float(np.interp(detail, self.details, self.strangers))

    def second_stranger_at(self, detail: float) -> float | None:
        """The stranger threshold of the fused score (None: no second opinion)."""
        return None if self.second is None else float(np.interp(detail, self.details, self.second.strangers))

    def clean_threshold(self) -> float:
        return float(self.thresholds[-1])

    def unverifiable(self, detail: float, face_width: float | None) -> str | None:
        """Why no score means anything for this face, or None when it is verifiable."""
        if face_width is not None and face_width < self.min_face_px:
            return f"face {face_width:.0f} px wide: too small to identify (< {self.min_face_px:.0f} px)"
        if detail < self.verifiable_detail:
            return f"too damaged to identify (detail {detail:.2f} < {self.verifiable_detail:.2f})"
        return None


# Why a face got (or did not get) references. "match", "declared" and "unverifiable-declared" gave
# it references; the others did not.
REASON_CODES = ("match", "declared", "unverifiable-declared", "below-threshold", "too-close", "too-small",
                "too-damaged", "someone-else", "another-face", "undecided", "empty-gallery")


@dataclass
class PersonDecision:
    """Who a query face is, with every number behind the decision.

    ``rule`` says what gave the face its references: "matched" (identified among the gallery's
    people), "declared" (a one-person gallery, and nothing says it is someone else) or
    "unverifiable-declared" (a one-person gallery and a face too small or damaged to check);
    None when it got none."""

    matched: bool
    person: str | None  # the matched person, None when no match
    best_person: str | None
    best_score: float
    second_person: str | None
    second_score: float | None
    threshold: float
    required_gap: float
    reason: str
    rule: str | None = None
    verifiable: bool = True
    face_px: float | None = None
    stranger_threshold: float | None = None
    # What decided it, for reports and one-line summaries (:data:`REASON_CODES`).
    code: str = ""

    @property
    def margin(self) -> float:
        """How far the best score is above the threshold (negative: below)."""
        return self.best_score - self.threshold

    @property
    def second_margin(self) -> float | None:
        """How far the lead over the second person exceeds the required gap (None: no second)."""
        if self.second_score is None:
            return None
        return self.best_score - self.second_score - self.required_gap

    def as_dict(self) -> dict[str, Any]:
        r = lambda v: None if v is None else round(float(v), 4)  # noqa: E731
        return {"matched": self.matched, "person": self.person, "best_person": self.best_person,
                "best_score": r(self.best_score), "second_person": self.second_person,
                "second_score": r(self.second_score), "threshold": r(self.threshold),
                "required_gap": r(self.required_gap), "margin": r(self.margin),
                "second_margin": r(self.second_margin), "reason": self.reason,
                "reference_rule": self.rule, "verifiable": self.verifiable,
                "face_px": None if self.face_px is None else round(float(self.face_px), 1),
                "stranger_threshold": r(self.stranger_threshold), "reason_code": self.code}


def best_per_person(sims: np.ndarray, persons: Sequence[str]) -> dict[str, tuple[float, int]]:
    """person -> (best score, index of that face)."""
    out: dict[str, tuple[float, int]] = {}
    for i, (s, p) in enumerate(zip(sims.tolist(), persons)):
        if p not in out or s > out[p][0]:
            out[p] = (float(s), i)
    return out


def decide(sims: np.ndarray, persons: Sequence[str], detail: float, rule: MatchRule,
           threshold: float | None = None, face_width: float | None = None) -> PersonDecision:
    """The person-level decision for one query's scores against every gallery face (a person's
    score is its best face)."""
    scores = {p: s for p, (s, _) in best_per_person(sims, persons).items()}
    return decide_people(scores, detail, rule, threshold, face_width)


def decide_people(scores: dict[str, float], detail: float, rule: MatchRule,
                  threshold: float | None = None, face_width: float | None = None) -> PersonDecision:
    """The person-level decision from one score per gallery person."""
    thr = float(threshold) if threshold is not None else rule.threshold_at(detail)
    gap = rule.gap_at(detail)
    stranger = rule.stranger_at(detail)
    if not scores:
        return PersonDecision(False, None, None, -1.0, None, None, thr, gap, "empty gallery",
                              face_px=face_width, stranger_threshold=stranger, code="empty-gallery")
    ranked = sorted(scores.items(), key=lambda kv: kv[1], reverse=True)
    p1, s1 = ranked[0]
    p2, s2 = ranked[1] if len(ranked) > 1 else (None, None)
    why = rule.unverifiable(detail, face_width)
    if why is not None:
        small = face_width is not None and face_width < rule.min_face_px
        return PersonDecision(False, None, p1, s1, p2, s2, thr, gap, why, verifiable=False,
                              face_px=face_width, stranger_threshold=stranger,
                              code="too-small" if small else "too-damaged")
    if s1 < thr:
        return PersonDecision(False, None, p1, s1, p2, s2, thr, gap, f"best {p1} {s1:.3f} below threshold {thr:.3f}",
                              face_px=face_width, stranger_threshold=stranger, code="below-threshold")
    if s2 is not None and s1 - s2 < gap:
        return PersonDecision(False, None, p1, s1, p2, s2, thr, gap, f"{p1} leads {p2} by {s1 - s2:.3f} < {gap:.3f}",
                              face_px=face_width, stranger_threshold=stranger, code="too-close")
    lead = f", {s1 - s2:.3f} ahead of {p2} (needs {gap:.3f})" if s2 is not None else ""
    return PersonDecision(True, p1, p1, s1, p2, s2, thr, gap, f"{p1} {s1:.3f} reaches threshold {thr:.3f}{lead}",
                          rule="matched", face_px=face_width, stranger_threshold=stranger, code="match")


# ---- labels -----------------------------------------------------------------------------------


def folder_label(path: Path | str, roots: Sequence[Path], person_roots: Sequence[Path] = ()) -> str:
    """The person a photo's folder names: the first folder under the gallery root that holds it
    ('' for top-level photos and single-file sources); every photo under a one-person root (a flat
    folder, ``--person DIR``) is that root's person."""
    # string work, not pathlib: this runs for every face of 5,000-face galleries at each load
    p = str(path)
    for root in person_roots:
        if p.startswith(str(root).rstrip(os.sep) + os.sep):
            return root.name
    for root in roots:
        prefix = str(root).rstrip(os.sep) + os.sep
        if p.startswith(prefix):
            rel = p[len(prefix):].split(os.sep)
            return rel[0] if len(rel) > 1 else UNLABELLED
    return UNLABELLED


@dataclass
class LabelProblem:
    """A labelled face that looks more like somebody else."""

    path: Path
    face_index: int
    person: str
    own_score: float  # best score to the other faces of its own person (-1: none)
    other_person: str
    other_score: float

    def as_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "face_index": self.face_index, "person": self.person,
                "own_score": round(self.own_score, 4), "closer_to": self.other_person,
                "other_score": round(self.other_score, 4)}


@dataclass
class PersonSummary:
    name: str
    labelled: bool  # from a folder (False: a cluster of top-level photos)
    faces: int
    photos: int
    quality_mean: float
    quality_best: float
    suspects: list[LabelProblem] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"person": self.name, "labelled": self.labelled, "faces": self.faces, "photos": self.photos,
                "quality_mean": round(self.quality_mean, 4), "quality_best": round(self.quality_best, 4),
                "suspected_label_errors": [s.as_dict() for s in self.suspects]}


def assign_people(paths: Sequence[Path], face_indices: Sequence[int], embeddings: np.ndarray,
                  roots: Sequence[Path], same_person: float, person_roots: Sequence[Path] = ()) -> list[str]:
    """The person of every face: folder labels, then clusters for the unlabelled faces.

    Under a one-person root (``person_roots``) a face keeps the root's name only when its median
    score to the root's other faces reaches ``same_person``; a root whose photos mostly fail that
    is not one person after all, and its photos are clustered like top-level photos."""
    n = len(paths)
    labels = [folder_label(p, roots, person_roots) for p in paths]
    if n == 0:
        return labels
    photo_of: dict[Path, int] = {}
    photo = np.array([photo_of.setdefault(Path(p), len(photo_of)) for p in paths])
    # A labelled photo with several faces: only the face most like the folder keeps the label.
    by_photo: dict[int, list[int]] = {}
    for i, ph in enumerate(photo.tolist()):
        by_photo.setdefault(ph, []).append(i)
    lab = np.array(labels, dtype=object)
    for idx in by_photo.values():
        if len(idx) < 2 or not labels[idx[0]]:
            continue
        others = np.flatnonzero((lab == labels[idx[0]]) & (photo != photo[idx[0]]))
        if len(others):
            keep = max(idx, key=lambda i: float((embeddings[others] @ embeddings[i]).max()))
        else:
            keep = min(idx, key=lambda i: face_indices[i])  # the largest face
        for i in idx:
            if i != keep:
                labels[i] = UNLABELLED
    for root in person_roots:
        _check_one_person(labels, photo, embeddings, root.name, same_person)
    lab = np.array(labels, dtype=object)
    free = np.flatnonzero(lab == UNLABELLED)
    if not len(free):
        return labels
    sims = embeddings[free] @ embeddings.T  # (free, n)
    sims[:, free] = np.where(photo[free][:, None] == photo[free][None, :], -np.inf, sims[:, free])
    # Unlabelled faces join the labelled person they resemble best, when that reaches the
    # same-person threshold ...
    named = lab != UNLABELLED
    if named.any():
        masked = np.where(named[None, :], sims, -np.inf)
        j = masked.argmax(1)
        joined = masked[np.arange(len(free)), j] >= same_person
        for k in np.flatnonzero(joined):
            labels[int(free[k])] = str(lab[j[k]])
    # ... or else cluster among themselves (single linkage, union-find).
    rest = [k for k in range(len(free)) if not labels[int(free[k])]]
    parent = {k: k for k in rest}

    def find(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    if rest:
        sub = sims[np.ix_(rest, free[rest])]
        for a, b in zip(*np.nonzero(np.triu(sub >= same_person, 1))):
            parent[find(rest[a])] = find(rest[b])
    clusters: dict[int, list[int]] = {}
    for k in rest:
        clusters.setdefault(find(k), []).append(int(free[k]))
    # Numbered by first appearance, so names stay stable when photos are added at the end.
    for c, members in enumerate(sorted(clusters.values(), key=min), start=1):
        for i in members:
            labels[i] = f"{CLUSTER_PREFIX}{c}"
    return labels


def _check_one_person(labels: list[str], photo: np.ndarray, embeddings: np.ndarray, name: str,
                      same_person: float) -> None:
    """Unlabel (in place) the faces of one-person root ``name`` that do not look like its other
    photos, or all of them when fewer than half of its photos do (a folder of several people)."""
    idx = np.array([i for i, lab in enumerate(labels) if lab == name], dtype=np.int64)
    if len(idx) < 2:
        return
    sims = embeddings[idx] @ embeddings[idx].T
    keep = []
    for r, i in enumerate(idx.tolist()):
        others = sims[r][photo[idx] != photo[i]]
        keep.append(len(others) == 0 or float(np.median(others)) >= same_person)
    kept_photos = {int(photo[i]) for i, k in zip(idx.tolist(), keep) if k}
    all_photos = {int(photo[i]) for i in idx.tolist()}
    one_person = 2 * len(kept_photos) >= len(all_photos)
    for i, k in zip(idx.tolist(), keep):
        if not (k and one_person):
            labels[i] = UNLABELLED


def label_problems(paths: Sequence[Path], face_indices: Sequence[int], embeddings: np.ndarray,
                   persons: Sequence[str], labelled: Sequence[bool], same_person: float) -> list[LabelProblem]:
    """Labelled faces closer to another person than to their own person.

    "Closer to a person" is the mean similarity to that person's faces (the face itself left
    out), not the best one: one mislabelled photo in a folder must not make the photos of the
    person it really shows look mislabelled in turn."""
    out: list[LabelProblem] = []
    names = sorted(set(persons))
    if len(names) < 2:
        return out
    col = {p: k for k, p in enumerate(names)}
    member = np.zeros((len(persons), len(names)), dtype=np.float32)
    member[np.arange(len(persons)), [col[p] for p in persons]] = 1.0
    counts = member.sum(0)
    lab = np.flatnonzero(np.asarray(labelled, dtype=bool))
    for start in range(0, len(lab), 1024):  # chunks keep memory flat for big galleries
        rows = lab[start:start + 1024]
        sims = embeddings[rows] @ embeddings.T
        sums = sims @ member
        for r, i in enumerate(rows.tolist()):
            k = col[persons[i]]
            mean = sums[r] / np.maximum(counts, 1)
            own_n = counts[k] - 1
            own = float((sums[r, k] - sims[r, i]) / own_n) if own_n > 0 else -1.0
            mean[k] = -np.inf
            j = int(np.argmax(mean))
            other = float(mean[j])
            if other > own and other >= same_person:
                out.append(LabelProblem(Path(paths[i]), int(face_indices[i]), str(persons[i]), own, names[j], other))
    return out
