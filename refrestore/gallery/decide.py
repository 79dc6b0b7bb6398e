"""Who is each face of one photo, and does it get references: the person-level decisions.

Two questions, depending on the gallery:

- *Several people* (folders = persons, clusters of unlabelled photos): "who is this?". A face is
  matched when its best person's score reaches the rule's threshold and leads the second person by
  the rule's margin (:func:`refrestore.gallery.people.decide_people`); otherwise "no match".
- *One person* (a flat folder of photos, or ``--person DIR``): "is this clearly someone else?".
  The face that matches the person best gets that person's references unless the identity check
  gives positive evidence of a different person (a verifiable face scoring below the rule's
  stranger threshold, or clearly matching another face of the gallery, such as someone standing
  beside the person in a group photo). A face too small or damaged to check gets them too, as
  declared by the user ("unverifiable-declared"). Other faces of the photo get them only with
  positive evidence (a match).

Scores are per person. For models with gallery levels (:mod:`refrestore.identity.levels`) the query
is compared with the gallery as its own detail says it looks (each face at that level, averaged
with its clean embedding), interpolated between the rule's anchors; the person's score is the
best of its faces or the cosine to their centroid, as the rule says.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from ..identity.crops import _normalise
from .index import Gallery
from .people import MatchRule, PersonDecision, best_per_person, decide_people

RULE_MATCHED = "matched"
RULE_DECLARED = "declared"
RULE_UNVERIFIABLE = "unverifiable-declared"


def _anchor_matrix(gallery: Gallery, level: int | None, part: slice | None = None) -> np.ndarray:
    """(faces, dim): the gallery as a query at ``level`` px sees it (None: clean), in one part of
    a two-model embedding (``part``, each row a unit vector of it) or whole."""
    if part is not None:
        return gallery.derived(("part", level, part.start, part.stop, len(gallery.faces)),
                               lambda: _normalise(_anchor_matrix(gallery, level)[:, part]))
    if level is None or level not in gallery.levels:
        return gallery.embeddings
    return gallery.derived(("mix", level, len(gallery.faces)),
                           lambda: _normalise(gallery.embeddings + gallery.level_embeddings(level)))


def _centroids(gallery: Gallery, level: int | None, part: slice | None = None) -> tuple[list[str], np.ndarray]:
    """(person names, (people, dim) unit centroids of each person's faces at ``level``)."""
    def make() -> tuple[list[str], np.ndarray]:
        matrix = _anchor_matrix(gallery, level, part)
        persons = np.array(gallery.persons, dtype=object)
        names = sorted(set(persons.tolist()))
        cents = np.stack([matrix[persons == n].sum(0) for n in names]) if names else np.zeros((0, matrix.shape[1]))
        return names, _normalise(cents.astype(np.float32))

    key = None if part is None else (part.start, part.stop)
    return gallery.derived(("centroids", level, key, len(gallery.faces)), make)


def _scores_at(gallery: Gallery, query: np.ndarray, level: int | None, aggregate: str,
               part: slice | None = None) -> dict[str, float]:
    if aggregate == "centroid":
        names, cents = _centroids(gallery, level, part)
        return dict(zip(names, (cents @ query).tolist()))
    sims = _anchor_matrix(gallery, level, part) @ query
    return {p: s for p, (s, _) in best_per_person(sims, gallery.persons).items()}


def query_part(query: np.ndarray, detail: float, rule: MatchRule) -> tuple[np.ndarray, slice | None]:
    """The query as the rule scores it: the part of a two-model embedding its detail picks (unit),
    or the whole embedding."""
    if rule.switch is None:
        return query, None
    part = rule.switch.part(detail)
    q = np.asarray(query, dtype=np.float32)[part]
    return q / max(float(np.linalg.norm(q)), 1e-12), part


def face_scores(gallery: Gallery, query: np.ndarray, detail: float, rule: MatchRule) -> np.ndarray:
    """(faces,) cosines of the query to each clean gallery face, in the model the rule scores it with."""
    q, part = query_part(query, detail, rule)
    return _anchor_matrix(gallery, None, part) @ q


def level_blend(rule: MatchRule, detail: float) -> tuple[int | None, int | None, float]:
    """(lower level, upper level, t): a query with this detail is scored as ``(1 - t)`` times its
    scores against the gallery at the lower level plus ``t`` times those at the upper one (None:
    clean), between the rule's detail anchors; t is 0 where one level alone applies."""
    levels = rule.levels or (None,) * len(rule.details)
    d = np.asarray(rule.details, dtype=np.float64)
    k = int(np.clip(np.searchsorted(d, detail, side="right") - 1, 0, len(d) - 1))
    if k == len(d) - 1 or detail <= d[0]:
        return levels[k], levels[k], 0.0
    return levels[k], levels[k + 1], float((detail - d[k]) / max(d[k + 1] - d[k], 1e-9))


def person_scores(gallery: Gallery, query: np.ndarray, detail: float, rule: MatchRule) -> dict[str, float]:
    """One score per gallery person for a query embedding (unit) with this detail."""
    if not gallery.faces:
        return {}
    query, part = query_part(query, detail, rule)
    low, high, t = level_blend(rule, detail)
    lo = _scores_at(gallery, query, low, rule.aggregate, part)
    if t == 0.0:
        return lo
    hi = _scores_at(gallery, query, high, rule.aggregate, part)
    return {p: (1.0 - t) * lo[p] + t * hi[p] for p in lo}


@dataclass(frozen=True)
class FaceQuery:
    """What the decision needs to know of one face of the photo."""

    embedding: np.ndarray  # (dim,) unit
    detail: float
    face_width: float | None
    second: np.ndarray | None = None  # (dim2,) unit: the rule's second model's embedding, when asked


def identify(gallery: Gallery, q: FaceQuery, rule: MatchRule, threshold: float | None = None) -> PersonDecision:
    """"Who is this?" among the gallery's people."""
    scores = person_scores(gallery, q.embedding, q.detail, rule)
    return decide_people(scores, q.detail, rule, threshold, q.face_width)


def _declared(gallery: Gallery, person: str, q: FaceQuery, rule: MatchRule,
              threshold: float | None, second_centroid: np.ndarray | None = None) -> tuple[PersonDecision, float]:
    """The one-person rule for a face that may be ``person``: (decision, how well it fits).

    The fit ranks the faces of a photo: the margin over the stranger threshold, verifiable faces
    first. With the rule's second opinion (``second_centroid``: the person's centroid in the
    second model, and the face's ``second`` embedding), the stranger test is on the fused score."""
    scores = person_scores(gallery, q.embedding, q.detail, rule)
    ident = decide_people(scores, q.detail, rule, threshold, q.face_width)
    own = scores.get(person, -1.0)
    stranger = rule.stranger_at(q.detail)
    how = ""
    if rule.second is not None and second_centroid is not None and q.second is not None:
        other = float(np.dot(q.second, second_centroid))
        how = f" ({own:.3f} with {rule.second.model} {other:.3f})"
        own, stranger = rule.second.fused(own, other), rule.second_stranger_at(q.detail)
    base = replace(ident, person=None, matched=False, rule=None, stranger_threshold=stranger)
    if not ident.verifiable:
        return (replace(base, matched=True, person=person, best_person=person, best_score=own,
                        rule=RULE_UNVERIFIABLE, reason=f"declared {person}; {ident.reason}",
                        code="unverifiable-declared"), -np.inf)
    if ident.matched and ident.person != person:
        return replace(base, reason=f"clearly someone else: matches {ident.person} of the gallery "
                                    f"({ident.best_score:.3f})", code="someone-else"), -np.inf
    fit = own - (stranger if stranger is not None else ident.threshold)
    if ident.matched:  # identified as the person: the stranger test has nothing to add
        return replace(ident, rule=RULE_MATCHED, stranger_threshold=stranger), fit
    if stranger is not None and own < stranger:
        return replace(base, best_person=person, best_score=own,
                       reason=f"clearly someone else: {own:.3f}{how} for {person} is below the stranger "
                              f"threshold {stranger:.3f}", code="someone-else"), -np.inf
    return (replace(base, matched=True, person=person, best_person=person, best_score=own, rule=RULE_DECLARED,
                    reason=f"declared {person}; {own:.3f}{how} is not below the stranger threshold {stranger:.3f}"
                    if stranger is not None else f"declared {person}", code="declared"), fit)


def decide_photo(gallery: Gallery, faces: Sequence[FaceQuery], rule: MatchRule,
                 threshold: float | None = None, second_centroid: np.ndarray | None = None) -> list[PersonDecision]:
    """The decision of every face of one photo.

    A person is given to one face of a photo at most (the best scoring; the others get "no
    match"). With a one-person gallery (``gallery.declared``) the person goes to the face that fits
    best unless it is clearly someone else; the photo's other faces get it only when matched.
    ``second_centroid``: the declared person's centroid in the rule's second model (its
    :class:`~.people.SecondOpinion`), with each face's ``second`` embedding.
    """
    person = gallery.declared
    if person is None:
        out = [identify(gallery, q, rule, threshold) for q in faces]
        return _one_face_per_person(out)
    judged = [_declared(gallery, person, q, rule, threshold, second_centroid) for q in faces]
    verifiable = [i for i, (d, fit) in enumerate(judged) if d.matched and d.verifiable]
    if verifiable:
        chosen: int | None = max(verifiable, key=lambda i: judged[i][1])
    elif len(faces) == 1 and judged[0][0].matched:
        chosen = 0  # one face, too small or damaged to check: the folder says who it is
    else:
        chosen = None
    out = []
    for i, (d, _) in enumerate(judged):
        if i == chosen or (d.matched and d.rule == RULE_MATCHED):
            out.append(d)
        elif d.matched:
            why = (f"another face of this photo fits {person} better" if chosen is not None
                   else f"{len(faces)} faces too small or damaged to tell which one is {person}")
            out.append(replace(d, matched=False, person=None, rule=None, reason=why,
                               code="another-face" if chosen is not None else "undecided"))
        else:
            out.append(d)
    return _one_face_per_person(out)


def _one_face_per_person(decisions: list[PersonDecision]) -> list[PersonDecision]:
    """Where two faces of one photo were given the same person, only the higher-scoring keeps it."""
    best: dict[str, int] = {}
    for i, d in enumerate(decisions):
        if d.matched and d.person is not None:
            j = best.get(d.person)
            if j is None or d.best_score > decisions[j].best_score:
                best[d.person] = i
    out = list(decisions)
    for i, d in enumerate(decisions):
        if d.matched and d.person is not None and best[d.person] != i:
            out[i] = replace(d, matched=False, person=None, rule=None, code="another-face",
                             reason=f"face {best[d.person]} of this photo is {d.person} (scores higher)")
    return out
