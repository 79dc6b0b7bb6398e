"""The calibrated "same person" rules of each identity model.

Person-level rules (:class:`~.people.MatchRule`, :data:`RULES`) for the calibrated models, and the
older photo-level thresholds (:class:`Thresholds`, :data:`THRESHOLDS`) for models without a rule
(ArcFace). Below both the gallery index (clustering, label checks) and selection, which read them.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .people import MatchRule, SecondOpinion, Switch


@dataclass(frozen=True)
class Thresholds:
    """"Same person" settings of one identity model.

    ``clean`` is the cosine threshold for faces with full detail, ``degraded`` for faces about
    48 px wide (or blurrier); in between, threshold and hubness weight are interpolated on the
    query's detail (sharpness) score from ``detail_low`` to ``detail_high``. ``gallery`` is the
    threshold between two clean gallery faces. ``hub_weight`` is the hubness correction applied
    to degraded queries (none for clean ones, which hubs do not fool), ``hub_prior`` the typical
    hubness of a gallery face.
    """

    clean: float
    degraded: float
    detail_low: float
    detail_high: float
    gallery: float
    hub_weight: float
    hub_prior: float
    calibrated: bool = True

    def cleanness(self, detail: float) -> float:
        """0 for a degraded query, 1 for a clean one."""
        return float(np.clip((detail - self.detail_low) / (self.detail_high - self.detail_low), 0.0, 1.0))

    def at(self, detail: float) -> float:
        t = self.cleanness(detail)
        return self.degraded + t * (self.clean - self.degraded)

    def hub_weight_at(self, detail: float) -> float:
        return self.hub_weight * (1.0 - self.cleanness(detail))


# Calibrated on data/identities (29 people, 99 photos) with benchmarks/calibrate_gallery.py;
# the figures behind these numbers are in refrestore/gallery/calibrate.py.
THRESHOLDS: dict[str, Thresholds] = {
    "dlib": Thresholds(clean=0.9375, degraded=0.9275, detail_low=0.86, detail_high=0.92,
                       gallery=0.935, hub_weight=0.5, hub_prior=0.882),
    # Not calibrated here (the weights are not available offline); typical IR-SE50 values.
    "arcface": Thresholds(clean=0.40, degraded=0.30, detail_low=0.86, detail_high=0.92,
                          gallery=0.40, hub_weight=0.5, hub_prior=0.10, calibrated=False),
}

# The pretrained MobileFaceNet, calibrated on the TRAINING people of shared/data/faces by
# `python benchmarks/eval_people.py --calibrate` (per detail anchor: the best identification
# with at most 1% of strangers matched, over two kinds of damage; the stranger threshold at the
# 3rd percentile of genuine scores) and measured on the held-out people (README, "References").
# Anchors: median detail of 16 (and alt-24), 16, 24, 32, 48 px and clean queries; each compares
# the query with the gallery at that level (mixed with the clean embedding), a person scored by
# the centroid of its faces.
_MOBILEFACENET = MatchRule(details=(0.15, 0.29, 0.42, 0.54, 0.74, 1.0),
                           thresholds=(0.53, 0.585, 0.53, 0.47, 0.435, 0.465),
                           gaps=(0.1, 0.1, 0.1, 0.1, 0.1, 0.0), gallery=0.45,
                           levels=(16, 16, 24, 32, 48, None), aggregate="centroid",
                           strangers=(0.272, 0.225, 0.142, 0.132, 0.185, 0.298),
                           verifiable_detail=0.1, min_face_px=16.0)

# Person-level rules (threshold and margin over the second person, rising as the query loses
# detail), calibrated on the TRAINING people of shared/data/faces by benchmarks/eval_identity.py
# and checked on the held-out people; the figures are in README.md ("References (RefSel)").
# Detail anchors: the median detail of 24 px, 48 px and clean training queries. Each quality's
# (threshold, gap) has the best identification among those rejecting >= 99.5% of strangers,
# except that a blurrier query never gets a lower threshold than a sharper one: the 24 px
# optimum (dlib 0.9375, identifying 3.8% of training queries) let a blurred stranger match a
# background face of the held-out test gallery, so 24 px keeps the 48 px threshold.
RULES: dict[str, MatchRule] = {
    "dlib": MatchRule(details=(0.441, 0.762, 1.0), thresholds=(0.9525, 0.9525, 0.9600),
                      gaps=(0.02, 0.02, 0.01), gallery=0.935),
    "mobilefacenet": _MOBILEFACENET,
    # refrestore's fine-tune (models/mobilefacenet-lr.md), what --identity auto uses: the published
    # network's anchors and levels (eval_people.py calibrates on them), its own thresholds, gaps and
    # stranger thresholds, calibrated the same way (`python benchmarks/eval_people.py --model
    # mobilefacenet-lr --calibrate --genuine-floor 0.05`, queries under detail 0.64 restored blind
    # first as identity.restored_queries does), the stranger threshold at the 5th percentile of the training people's
    # genuine scores: held out (before queries were restored), another person's 32-48 px faces used
    # a one-person folder 10% of the time at the 5th (17% at the 3rd), the own person's 95% (98% at
    # the 3rd); a false match is the worse of the two. Current figures: README, "One-person folders".
    "mobilefacenet-lr": replace(_MOBILEFACENET, thresholds=(0.56, 0.54, 0.515, 0.505, 0.495, 0.51),
                                gaps=(0.1, 0.0, 0.1, 0.06, 0.1, 0.0),
                                strangers=(0.124, 0.157, 0.201, 0.249, 0.313, 0.396),
                                # One-person folders ask dlib too: its cosine to the person's clean
                                # photos, weighted so both models spread alike, is added to the score,
                                # and the sum's stranger threshold is at the 5th percentile of the
                                # training people's own-person sums (same command, --second dlib).
                                second=SecondOpinion("dlib", weight=3.327, centre=0.8646,
                                                     strangers=(0.246, 0.295, 0.344, 0.447, 0.551, 0.662))),
    # Both MobileFaceNets (identity.mobilefacenet.DualMobileFaceNet, what --identity auto takes when
    # the published weights are in the store): a query with detail 0.64 or more (between the 40-px
    # and 48-px anchors) is scored with the published network, any other with the fine-tune. Same
    # calibration (`python benchmarks/eval_people.py --model mobilefacenet-dual --calibrate
    # --genuine-floor 0.05`).
    "mobilefacenet-dual": replace(_MOBILEFACENET, thresholds=(0.56, 0.54, 0.515, 0.505, 0.435, 0.465),
                                  gaps=(0.1, 0.0, 0.1, 0.06, 0.1, 0.0),
                                  strangers=(0.124, 0.157, 0.201, 0.249, 0.239, 0.375),
                                  second=SecondOpinion("dlib", weight=3.25, centre=0.8646,
                                                       strangers=(0.243, 0.293, 0.341, 0.442, 0.475, 0.632)),
                                  switch=Switch(dim=128, detail=0.64)),
    # dlib weight 0.98 (refrestore.identity.fused.DLIB_WEIGHT); see README for why this is not
    # the default: faceid-small has memorised the training people, so this rule is fitted on
    # scores that are better than a stranger's photos will give.
    "fused": MatchRule(details=(0.441, 0.762, 1.0), thresholds=(0.9375, 0.9375, 0.9450),
                       gaps=(0.02, 0.02, 0.02), gallery=0.92),
}


def rule_for(identity_name: str) -> MatchRule | None:
    """The person-level rule of an identity model (None: the photo-level thresholds apply)."""
    return RULES.get(identity_name)


def thresholds_for(identity_name: str) -> Thresholds:
    try:
        return THRESHOLDS[identity_name]
    except KeyError:
        raise ValueError(f"no calibrated threshold for identity model {identity_name!r}") from None


def same_person_threshold(identity_name: str) -> float:
    """The same-person threshold between two clean gallery faces of a model (clustering, label checks)."""
    rule = rule_for(identity_name)
    return rule.gallery if rule is not None else thresholds_for(identity_name).gallery
