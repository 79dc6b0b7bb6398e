"""Person-level identification figures on labelled face sets, from embedding matrices.

Protocol (issue 14). The gallery is every clean photo of a set of people, one embedding each.
A query is one photo of one of them at a quality (clean, 48 px, 24 px):

- *identified*: with only the query's own photo removed from the gallery, the decision matches
  and names the query's person;
- *stranger rejected*: with all the query person's photos removed, the decision is "no match".

Scores are per person: the best cosine over that person's gallery faces. The decision is
:func:`refrestore.gallery.people.decide` (threshold and margin over the second person).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class QuerySet:
    embeddings: np.ndarray  # (Q, d) unit
    persons: np.ndarray  # (Q,) person index
    gallery_index: np.ndarray  # (Q,) the query's own photo in the gallery (-1: not in it)
    detail: np.ndarray  # (Q,) sharpness score of the query crop


@dataclass(frozen=True)
class GallerySet:
    embeddings: np.ndarray  # (G, d) unit
    persons: np.ndarray  # (G,) person index


@dataclass(frozen=True)
class PersonScores:
    """Per query: best score over the query's own person (own photo excluded) and over every
    other person, as (Q, P) with -inf where a person has no gallery face left."""

    scores: np.ndarray
    own: np.ndarray  # (Q,) the query's person index


def person_scores(q: QuerySet, g: GallerySet, people: int) -> PersonScores:
    sims = q.embeddings @ g.embeddings.T  # (Q, G)
    valid = q.gallery_index >= 0
    sims[np.nonzero(valid)[0], q.gallery_index[valid]] = -np.inf  # leave the query's own photo out
    out = np.full((len(sims), people), -np.inf, dtype=np.float64)
    for p in range(people):
        cols = g.persons == p
        if cols.any():
            out[:, p] = sims[:, cols].max(1)
    return PersonScores(out, q.persons)


@dataclass(frozen=True)
class Rates:
    identified: float  # leave-one-out: right person chosen
    rejected: float  # person removed: no match
    queries: int
    wrong_person: int  # leave-one-out queries matched to someone else (the worst case)


@dataclass(frozen=True)
class _Top2:
    """Best and second-best person per query, with and without the query's own person."""

    best: np.ndarray
    second: np.ndarray
    best_is_own: np.ndarray
    has_own: np.ndarray
    stranger_best: np.ndarray
    stranger_second: np.ndarray


def _top2(ps: PersonScores) -> _Top2:
    s = ps.scores
    rows = np.arange(len(s))
    part = -np.partition(-s, 1, axis=1)[:, :2] if s.shape[1] > 1 else np.c_[s.max(1), np.full(len(s), -np.inf)]
    arg = s.argmax(1)
    t = s.copy()
    t[rows, ps.own] = -np.inf
    tpart = -np.partition(-t, 1, axis=1)[:, :2] if t.shape[1] > 1 else np.c_[t.max(1), np.full(len(t), -np.inf)]
    return _Top2(part[:, 0], part[:, 1], arg == ps.own, np.isfinite(s[rows, ps.own]), tpart[:, 0], tpart[:, 1])


def rates(ps: PersonScores, threshold: np.ndarray | float, gap: np.ndarray | float,
          top: _Top2 | None = None) -> Rates:
    """Rates of the rule "best >= threshold and best - second >= gap" (per-query arrays or scalars)."""
    top = _top2(ps) if top is None else top
    n = len(ps.scores)
    thr = np.broadcast_to(np.asarray(threshold, dtype=np.float64), (n,))
    gp = np.broadcast_to(np.asarray(gap, dtype=np.float64), (n,))
    match = (top.best >= thr) & (top.best - top.second >= gp)
    right = match & top.best_is_own
    wrong = match & ~top.best_is_own
    stranger_match = (top.stranger_best >= thr) & (top.stranger_best - top.stranger_second >= gp)
    h = top.has_own
    return Rates(identified=float(right[h].mean()) if h.any() else float("nan"),
                 rejected=float(1.0 - stranger_match.mean()), queries=n, wrong_person=int(wrong[h].sum()))


def distributions(ps: PersonScores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(genuine best, impostor best, genuine gap over the best other person) per query."""
    s = ps.scores
    rows = np.arange(len(s))
    own = s[rows, ps.own]
    t = s.copy()
    t[rows, ps.own] = -np.inf
    imp = t.max(1)
    keep = np.isfinite(own)
    return own[keep], imp, (own - imp)[keep]


def pick_rule(ps: PersonScores, min_rejected: float = 0.995, gaps: np.ndarray | None = None,
              grid: np.ndarray | None = None) -> tuple[float, float, Rates]:
    """(threshold, gap) with the best identification among those rejecting at least
    ``min_rejected`` of strangers (ties: the higher rejection, then the higher threshold)."""
    grid = np.round(np.arange(0.0, 1.0, 0.0025), 4) if grid is None else grid
    gaps = np.array([0.0, 0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05]) if gaps is None else gaps
    best: tuple[tuple[float, float, float], float, float, Rates] | None = None
    top = _top2(ps)
    for g in gaps:
        for t in grid:
            r = rates(ps, float(t), float(g), top)
            if r.rejected < min_rejected:
                continue
            key = (r.identified, r.rejected, float(t))
            if best is None or key > best[0]:
                best = (key, float(t), float(g), r)
    if best is None:
        r = rates(ps, float(grid[-1]), float(gaps[-1]), top)
        return float(grid[-1]), float(gaps[-1]), r
    return best[1], best[2], best[3]
