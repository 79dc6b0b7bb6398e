"""RefSel: choose the references that will guide the restoration of one face.

Following RefSTAR's reference-selection idea, the best reference is the same person with the
most compatible, highest-quality face, not just the nearest embedding:

1. *Who is it?* The degraded face is embedded robustly (several views: as is, mirrored, and for
   dlib a light restoration by a downscale/upscale round trip and a slight zoom; the unit
   embeddings are averaged). Its score for each gallery person (folders; top-level photos
   clustered, see :mod:`.people`) is the best over that person's faces. With a person-level
   rule (:data:`RULES`, calibrated on shared/data/faces) the best person must reach a threshold
   and lead the second person by a margin, both read from the face's detail; below either there
   is no match and the face is restored without a reference. Models without a rule (ArcFace)
   keep the photo-level thresholds of :data:`THRESHOLDS` with the hubness correction.
2. *Which photos of that person?* The matched person's faces that are not far below the
   threshold from the query (without a rule: faces close to the best match in the clean
   gallery-to-gallery space). A gallery with several people can thus give different faces of
   one photo different people.
3. *Which are most useful?* Candidates are ranked by a weighted sum of identity (relative to the
   best match), pose closeness, expression closeness (eyes and mouth open) and quality, and the
   top K are returned, each with per-region compatibility (eyes, nose, mouth, outline, 0..1).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from refrestore.faces import DetectedFace, Reference
from refrestore.identity import IdentityModel
from refrestore.identity.crops import _normalise
from refrestore.identity.restored_queries import prepare_query
from refrestore.imageio import ImageReadError

from .index import Gallery, GalleryFace, aligned_crop_of, find_faces, load_rgb
from .people import PersonDecision
from .rules import rule_for, thresholds_for
from .pose import FaceAnalyzer
from .quality import assess


# Hubness: some gallery faces resemble everybody (a common look, a soft photo) and attract
# false matches, above all from blurred queries. A gallery face's hubness is its mean
# similarity to its HUB_K nearest other-person faces (fewer neighbours are padded with the
# prior); a degraded query's score is lowered by hub_weight * (hubness - prior).
HUB_K = 10

# Weights of the ranking among same-person candidates.
WEIGHTS = {"identity": 0.35, "pose": 0.25, "expression": 0.10, "quality": 0.30}
# How far below the threshold a candidate's similarity to the query may be when the gallery
# itself says it is the same person as the best match.
QUERY_SLACK = 0.02


@dataclass
class QueryFace:
    """What selection needs to know about the face being restored."""

    embedding: np.ndarray  # (dim,) unit
    yaw: float
    pitch: float
    roll: float
    eye_open: float
    mouth_open: float
    detail: float  # sharpness score of the aligned crop, 0..1
    face_width: float | None  # px in its photo, when known
    second: np.ndarray | None = None  # the identity rule's second model's embedding (one-person galleries)


def _views(aligned: np.ndarray, count: int = 4) -> list[np.ndarray]:
    """The crop as is, mirrored, after a light restoration, and slightly zoomed in (the first
    ``count`` of them)."""
    if count == 2:
        return [aligned, np.ascontiguousarray(aligned[:, ::-1])]
    size = aligned.shape[0]
    small = cv2.resize(aligned, (128, 128), interpolation=cv2.INTER_AREA)
    smooth = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    c = round(size * 0.03)
    zoom = cv2.resize(aligned[c:size - c, c:size - c], (size, size), interpolation=cv2.INTER_CUBIC)
    return [aligned, np.ascontiguousarray(aligned[:, ::-1]), smooth, zoom]


def robust_embedding(aligned: np.ndarray, identity: IdentityModel, detail: float | None = None) -> np.ndarray:
    # Models trained with degraded positives need no restoration view: as is + mirrored (of the
    # crop the model asks for: MobileFaceNets restore a query with little ``detail`` first).
    aligned = prepare_query(identity, aligned, detail)
    emb = identity.embed(_views(aligned, getattr(identity, "query_views", 4))).astype(np.float64).sum(0)
    return (emb / max(np.linalg.norm(emb), 1e-12)).astype(np.float32)


def mirrored_embeddings(aligned: Sequence[np.ndarray], identity: IdentityModel) -> np.ndarray:
    """(N, dim) unit rows: each crop as is and mirrored, averaged."""
    emb = identity.embed([v for a in aligned for v in _views(a, 2)]).astype(np.float64)
    return _normalise(emb.reshape(len(aligned), 2, -1).sum(1))


# The declared person's faces a second opinion embeds at most (the best by quality): a centroid
# of two dozen photos is as good as one of hundreds, and each face costs dlib about 0.15 s.
SECOND_MAX_FACES = 24


def second_centroid(gallery: Gallery, identity: IdentityModel, person: str) -> np.ndarray:
    """(dim,) unit: the centroid of ``person``'s faces in a second identity model, kept with the
    gallery (embedding them costs about 0.15 s a face)."""
    def make() -> np.ndarray:
        faces = sorted((f for f in gallery.faces if f.person == person),
                       key=lambda f: f.quality.total, reverse=True)[:SECOND_MAX_FACES]
        rows = mirrored_embeddings([gallery.aligned_image(f) for f in faces], identity)
        return _normalise(rows.astype(np.float64).sum(0, keepdims=True))[0]

    return gallery.derived(("second-centroid", identity.name, getattr(identity, "version", ""), person), make)


def second_opinion(gallery: Gallery, crops: Sequence[np.ndarray], queries: list[QueryFace],
                   model_for: Callable[[str], IdentityModel]) -> tuple[list[QueryFace], np.ndarray | None]:
    """A one-person gallery asks "is this clearly someone else?": where the identity rule has a
    second opinion (:class:`~.people.SecondOpinion`), that model (``model_for(name)``, which the
    caller keeps for the run) embeds the person's faces and these crops. Returns the queries with
    their ``second`` embedding and the person's centroid (None and the queries unchanged when
    there is nothing to ask)."""
    from dataclasses import replace

    rule = rule_for(gallery.identity_name)
    if rule is None or rule.second is None or gallery.declared is None or not queries:
        return queries, None
    model = model_for(rule.second.model)
    centroid = second_centroid(gallery, model, gallery.declared)
    rows = mirrored_embeddings(list(crops), model)
    return [replace(q, second=r) for q, r in zip(queries, rows)], centroid


def describe_query(aligned: np.ndarray, face: DetectedFace | None, identity: IdentityModel,
                   analyzer: FaceAnalyzer, affine: np.ndarray | None = None) -> QueryFace:
    geo = analyzer.analyze(aligned, affine)
    q = assess(aligned, face, face.width if face is not None else 512.0)
    return QueryFace(embedding=robust_embedding(aligned, identity, q.sharpness), yaw=geo.yaw, pitch=geo.pitch,
                     roll=geo.roll, eye_open=geo.eye_open, mouth_open=geo.mouth_open,
                     detail=q.sharpness, face_width=face.width if face is not None else None)


def _gauss(d: float, s: float) -> float:
    return float(math.exp(-((d / s) ** 2)))


def region_compatibility(query: QueryFace, ref: GalleryFace) -> dict[str, float]:
    """Per-region 0..1: how well each part of the reference can guide this face."""
    dyaw, dpitch = abs(query.yaw - ref.yaw), abs(query.pitch - ref.pitch)
    deye, dmouth = abs(query.eye_open - ref.eye_open), abs(query.mouth_open - ref.mouth_open)
    return {
        "eyes": round(_gauss(dyaw, 30) * _gauss(dpitch, 25) * _gauss(deye, 0.12), 4),
        "nose": round(_gauss(dyaw, 25) * _gauss(dpitch, 20), 4),
        "mouth": round(_gauss(dyaw, 30) * _gauss(dpitch, 25) * _gauss(dmouth, 0.15), 4),
        # the jaw line and cheeks change most with head turn
        "outline": round(_gauss(dyaw, 18) * _gauss(dpitch, 25), 4),
    }


@dataclass
class Candidate:
    """A same-person gallery face with its component scores."""

    face: GalleryFace
    identity: float  # cosine similarity to the query, hubness-corrected (what the threshold sees)
    identity_rank: float  # identity relative to the best match, 0..1
    pose: float
    expression: float
    quality: float
    total: float
    regions: dict[str, float]
    identity_raw: float = 0.0  # plain cosine similarity

    def components(self) -> dict[str, float]:
        return {"identity": round(self.identity, 4), "identity_raw": round(self.identity_raw, 4),
                "identity_rank": round(self.identity_rank, 4),
                "pose": round(self.pose, 4), "expression": round(self.expression, 4),
                "quality": round(self.quality, 4), "total": round(self.total, 4)}

    def as_dict(self) -> dict[str, Any]:
        return {"path": str(self.face.path), "face_index": self.face.face_index, "person": self.face.person,
                "score": round(self.total, 4), **self.components(), "regions": self.regions,
                "yaw": round(self.face.yaw, 1), "pitch": round(self.face.pitch, 1)}


@dataclass
class Selection:
    """The references chosen for one face, or no match."""

    references: list[Reference]
    matched: bool
    best_identity: float
    candidates: list[Candidate]  # ranked, best first; the first len(references) were chosen
    threshold: float = 0.0
    identity_model: str = ""
    decision: PersonDecision | None = None  # the person-level decision, where the model has a rule

    @property
    def person(self) -> str | None:
        """The gallery person the face was matched to (None: no match)."""
        if not self.matched:
            return None
        if self.decision is not None:
            return self.decision.person
        return self.candidates[0].face.person if self.candidates else None

    @property
    def rule(self) -> str | None:
        """What gave the face its references: "matched", "declared" or "unverifiable-declared"
        (see :mod:`refrestore.gallery.decide`); None when it got none."""
        if not self.matched:
            return None
        return self.decision.rule if self.decision is not None else "matched"

    @property
    def reason_code(self) -> str:
        """What decided it (:data:`refrestore.gallery.people.REASON_CODES`)."""
        if self.decision is not None and self.decision.code:
            return self.decision.code
        return "match" if self.matched else "below-threshold"

    def reason(self) -> str:
        """One line, with the figures: why this face got its references, or none."""
        d = self.decision
        if d is not None:
            text = d.reason
        elif self.matched:
            text = f"{self.person} {self.best_identity:.3f} reaches threshold {self.threshold:.3f}"
        else:
            text = f"best {self.best_identity:.3f} below threshold {self.threshold:.3f}"
        if not self.matched:
            return f"no match: {text}"
        return text if self.rule in ("declared", "unverifiable-declared") else f"matched: {text}"

    def warning(self, index: int) -> str | None:
        """A line for the photo's warnings when a one-person gallery decided (or refused) this face."""
        d = self.decision
        if d is None:
            return None
        size = f"{d.face_px:.0f} px" if d.face_px is not None else "aligned crop"
        if self.matched and d.rule in ("declared", "unverifiable-declared"):
            return f"face {index} ({size}): references of {d.person} used as the one-person gallery declares ({d.rule}: {d.reason})"
        if not self.matched and d.reason.startswith("clearly someone else"):
            return f"face {index} ({size}): no references: {d.reason}"
        return None

    def explain(self) -> dict[str, Any]:
        """Every number behind the decision (for ``match`` and the reports)."""
        if self.decision is not None:
            return self.decision.as_dict()
        return {"matched": self.matched, "person": self.person, "best_score": round(self.best_identity, 4),
                "threshold": round(self.threshold, 4), "margin": round(self.best_identity - self.threshold, 4)}

    def report(self) -> dict[str, Any] | None:
        """The JSON ``reference`` object of a report, None when nothing matched."""
        if not self.matched or not self.references:
            return None
        ref = self.references[0]
        out: dict[str, Any] = {"path": ref.path, "face_index": ref.face_index, "person": self.person,
                               "reference_rule": self.rule,
                               "score": round(ref.score, 4), **ref.components,
                               "regions": ref.regions, "identity_model": self.identity_model,
                               "threshold": round(self.threshold, 4), "decision": self.explain()}
        out["alternatives"] = [{"path": r.path, "face_index": r.face_index, "score": round(r.score, 4),
                                **r.components, "regions": r.regions} for r in self.references[1:]]
        return out


def hubness(gallery: Gallery, same_person: float, prior: float, k: int = HUB_K) -> np.ndarray:
    """Per gallery face: mean similarity to its k nearest faces of other people (clean
    gallery-to-gallery scores; "other people" = below the ``same_person`` threshold)."""
    emb = gallery.embeddings
    n = len(emb)
    out = np.full(n, prior, dtype=np.float64)
    for start in range(0, n, 1024):  # chunks keep memory flat for big galleries
        block = emb[start:start + 1024] @ emb.T
        for r, row in enumerate(block):
            others = row[row < same_person]
            top = np.sort(others)[-k:] if len(others) else others
            out[start + r] = (top.sum() + (k - len(top)) * prior) / k
    return out


def rank_candidates(gallery: Gallery, query: QueryFace, threshold: float | None = None,
                    identity_name: str | None = None) -> tuple[list[Candidate], float, float]:
    """(same-person candidates ranked best first, best identity score, threshold used)."""
    cands, best, thr, _ = rank_with_decision(gallery, query, threshold, identity_name)
    return cands, best, thr


def _score(query: QueryFace, g: GalleryFace, sim: float, raw: float, floor: float, best_sim: float) -> Candidate:
    id_rank = float(np.clip((sim - floor) / max(best_sim - floor, 1e-6), 0.0, 1.0))
    pose = _gauss(abs(query.yaw - g.yaw), 25) * _gauss(abs(query.pitch - g.pitch), 20)
    expr = _gauss(abs(query.eye_open - g.eye_open), 0.12) * _gauss(abs(query.mouth_open - g.mouth_open), 0.15)
    qual = g.quality.total
    total = (WEIGHTS["identity"] * id_rank + WEIGHTS["pose"] * pose
             + WEIGHTS["expression"] * expr + WEIGHTS["quality"] * qual)
    return Candidate(g, sim, id_rank, pose, expr, qual, total, region_compatibility(query, g), identity_raw=raw)


def rank_with_decision(gallery: Gallery, query: QueryFace, threshold: float | None = None,
                       identity_name: str | None = None, decision: PersonDecision | None = None
                       ) -> tuple[list[Candidate], float, float, PersonDecision | None]:
    """As :func:`rank_candidates`, plus the person-level decision where the model has a rule
    (``decision``: one already made for this face, as :func:`select_photo` makes them)."""
    name = identity_name or gallery.identity_name
    rule = rule_for(name)
    if rule is not None:
        from .decide import RULE_MATCHED, FaceQuery, face_scores, identify

        dec = decision if decision is not None else identify(
            gallery, FaceQuery(query.embedding, query.detail, query.face_width), rule, threshold)
        if not dec.matched:
            return [], dec.best_score, dec.threshold, dec
        raw = face_scores(gallery, query.embedding, query.detail, rule)
        persons = gallery.persons
        # The gallery's labels (folders, clusters) say which faces are this person; a matched face
        # leaves out the person's faces far below the threshold from it (a profile, a child photo).
        # A face given its person by a one-person folder keeps them all: its score says little.
        idx = [i for i, p in enumerate(persons) if p == dec.person]
        best = max(idx, key=lambda i: raw[i])
        if dec.rule == RULE_MATCHED:
            floor = min(dec.threshold, float(raw[best])) - QUERY_SLACK
            picks = [i for i in idx if i == best or raw[i] >= floor]
        else:
            floor = float(raw[idx].min()) - QUERY_SLACK
            picks = idx
        out = [_score(query, gallery.faces[i], float(raw[i]), float(raw[i]), floor, float(raw[best])) for i in picks]
        out.sort(key=lambda c: c.total, reverse=True)
        return out, dec.best_score, dec.threshold, dec
    th = thresholds_for(name)
    thr = float(threshold) if threshold is not None else th.at(query.detail)
    if not gallery.faces:
        return [], -1.0, thr, None  # cosine floor: nothing to compare with
    emb = gallery.embeddings
    raw = emb @ query.embedding
    weight = th.hub_weight_at(query.detail)
    if weight > 0:
        hub = gallery.derived(("hub", th.gallery, th.hub_prior, HUB_K),
                              lambda: hubness(gallery, th.gallery, th.hub_prior))
        # Only ever lower a score: an unusual gallery face (hubness below the prior) must not be
        # pushed over the threshold by a blurred stranger (seen on real old photos).
        sims = raw - weight * np.maximum(hub - th.hub_prior, 0.0)
    else:
        sims = raw
    best = int(np.argmax(sims))
    best_sim = float(sims[best])
    if best_sim < thr:
        return [], best_sim, thr, None
    anchor = emb @ emb[best]
    picks = [i for i in range(len(gallery.faces))
             if i == best or (anchor[i] >= th.gallery and sims[i] >= thr - QUERY_SLACK)]
    floor = thr - QUERY_SLACK
    out = [_score(query, gallery.faces[i], float(sims[i]), float(raw[i]), floor, best_sim) for i in picks]
    out.sort(key=lambda c: c.total, reverse=True)
    return out, best_sim, thr, None


def _to_reference(gallery: Gallery, c: Candidate, with_image: bool) -> Reference:
    image = gallery.aligned_image(c.face) if with_image else np.zeros((0, 0, 3), dtype=np.uint8)
    return Reference(image=image, path=str(c.face.path), face_index=c.face.face_index,
                     score=float(c.total), regions=dict(c.regions), components=c.components())


def select_from_query(gallery: Gallery, query: QueryFace, top_k: int = 3,
                      threshold: float | None = None, with_images: bool = True,
                      decision: PersonDecision | None = None) -> Selection:
    """Selection for an already described face (see :func:`describe_query`)."""
    if top_k < 1:
        raise ValueError("top_k must be at least 1")
    cands, best, thr, dec = rank_with_decision(gallery, query, threshold, decision=decision)
    refs = [_to_reference(gallery, c, with_images) for c in cands[:top_k]]
    return Selection(references=refs, matched=bool(refs), best_identity=best, candidates=cands,
                     threshold=thr, identity_model=gallery.identity_name, decision=dec)


def select_photo(gallery: Gallery, queries: list[QueryFace], top_k: int = 3,
                 threshold: float | None = None, with_images: bool = True,
                 second_centroid: np.ndarray | None = None) -> list[Selection]:
    """Selections for every face of one photo, decided together (:func:`refrestore.gallery.decide.decide_photo`:
    a person goes to one face of a photo; a one-person gallery's person to the face that fits it).
    ``second_centroid``: see :func:`~.decide.decide_photo`."""
    rule = rule_for(gallery.identity_name)
    if rule is None:
        return [select_from_query(gallery, q, top_k, threshold, with_images) for q in queries]
    from .decide import FaceQuery, decide_photo

    decisions = decide_photo(gallery, [FaceQuery(q.embedding, q.detail, q.face_width, q.second) for q in queries],
                             rule, threshold, second_centroid)
    return [select_from_query(gallery, q, top_k, threshold, with_images, decision=d)
            for q, d in zip(queries, decisions)]


def select_references(gallery: Gallery, aligned_face: np.ndarray, face: DetectedFace | None,
                      identity: IdentityModel, top_k: int = 3, threshold: float | None = None,
                      affine: np.ndarray | None = None) -> Selection:
    """Choose up to ``top_k`` references for one aligned 512 face (RGB uint8).

    ``face`` is the detection in the photo being restored (used for its size), ``threshold``
    overrides the calibrated "same person" threshold. The gallery must have been built with
    the same identity model.
    """
    if gallery.identity_name and gallery.identity_name != identity.name:
        raise ValueError(f"gallery was indexed with {gallery.identity_name}, not {identity.name}")
    query = describe_query(aligned_face, face, identity, gallery.analyzer(), affine)
    return select_from_query(gallery, query, top_k=top_k, threshold=threshold)


def forced_reference(path: Path, detector: Any, identity: IdentityModel) -> Reference:
    """The largest face of ``path`` as the reference, chosen by the user (``--ref FILE``).

    The user's choice overrides identity matching, so ``identity`` is only checked to be a
    usable model; all regions are marked compatible. Raises ValueError with a one-line reason
    when the file holds no usable face.
    """
    path = Path(path)
    if not isinstance(identity, IdentityModel):
        raise TypeError("identity must be an IdentityModel")
    try:
        image = load_rgb(path)
    except ImageReadError as exc:
        raise ValueError(f"--ref {path}: {exc}") from None
    found = find_faces(image, detector)
    if not found:
        raise ValueError(f"--ref {path}: no face found")
    face, already = found[0]
    crop, _ = aligned_crop_of(image, face, already)
    quality = assess(crop, face, face.width)
    return Reference(image=crop, path=str(path), face_index=0, score=1.0,
                     regions={"eyes": 1.0, "nose": 1.0, "mouth": 1.0, "outline": 1.0},
                     components={"forced": 1.0, "quality": round(quality.total, 4)})
