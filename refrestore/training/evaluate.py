"""Held-out evaluation of a restorer on refbench-style data.

For every photo of every person: hold it out as ground truth, degrade it with a named preset
(fixed seed per photo), restore it with the person's other photos as references (minus exact
duplicates), restore it again with the references withheld, and compare both and the bicubic
input against the ground truth: PSNR and SSIM on RGB 0-255, and identity distance (Euclidean
distance between unit-normalised dlib descriptors, on the aligned crop).
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import cv2
import numpy as np

from ..faces import Reference
from ..net.degrade import degrade, preset, scaled_for
from ..net.split import is_held_out
from ..restorers.base import Restorer
from .data import FaceBank, scan_people
from .metrics import hf_scores, psnr, ssim

log = logging.getLogger(__name__)

ROWS = ("model", "no_ref", "bicubic")
# With the reference detail stage: the restorer alone (with references) is kept as no_detail.
ROWS_DETAIL = ("model", "no_detail", "no_ref", "bicubic")


@dataclass
class Scores:
    psnr: float
    ssim: float
    id_dist: float
    n: int = 0
    hf_ratio: float = float("nan")  # std of the output's detail band / the truth's (metrics.hf_scores)
    hf_corr: float = float("nan")  # correlation of the two detail bands


@dataclass
class EvalReport:
    preset: str
    model_name: str
    top_k: int | None
    rows: dict[str, Scores]  # model / no_ref / bicubic, averaged over all photos
    per_person: dict[str, dict[str, Scores]] = field(default_factory=dict)
    size: int = 512
    split: str = "all"
    fidelity: float | None = None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {k: {"psnr": v.psnr, "ssim": v.ssim, "id_dist": v.id_dist, "hf_ratio": v.hf_ratio,
                                 "hf_corr": v.hf_corr} for k, v in self.rows.items()}
        d["n"] = self.rows["model"].n
        d["size"] = self.size
        d["split"] = self.split
        d["fidelity"] = self.fidelity
        d["preset"] = self.preset
        d["model_name"] = self.model_name
        d["top_k"] = self.top_k
        d["per_person"] = {p: {k: asdict(v) for k, v in rows.items()} for p, rows in self.per_person.items()}
        return d


def photo_seed(person: str, index: int, base: int = 0) -> int:
    """A fixed degradation seed per photo, independent of evaluation order."""
    h = hashlib.sha1(f"{base}:{person}:{index}".encode()).digest()
    return int.from_bytes(h[:4], "little")


def rank_references(lq: np.ndarray, candidates: Sequence[np.ndarray], top_k: int | None) -> list[int]:
    """Order candidate references by similarity of layout (pose, expression, lighting) to the
    degraded face: L2 distance between 32x32 grey thumbnails. No identity model is involved."""
    def thumb(img: np.ndarray) -> np.ndarray:
        g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
        t = cv2.resize(g, (32, 32), interpolation=cv2.INTER_AREA)
        return (t - t.mean()) / (t.std() + 1e-6)

    q = thumb(lq)
    d = [float(np.mean((thumb(c) - q) ** 2)) for c in candidates]
    order = sorted(range(len(candidates)), key=lambda i: d[i])
    return order if top_k is None else order[:top_k]


SPLITS = ("all", "held-out", "train")


def select_people(data: Path, split: str, people: Sequence[str] | None = None) -> list[str]:
    """People of ``data`` in ``split`` (refrestore.net.split), optionally only ``people``."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    names = list(scan_people(data, include=list(people) if people else None))
    if split == "held-out":
        names = [p for p in names if is_held_out(p)]
    elif split == "train":
        names = [p for p in names if not is_held_out(p)]
    return names


@dataclass
class Sample:
    """One held-out photo: its truth, its degraded copy and the person's other photos."""

    person: str
    index: int
    gt: np.ndarray
    lq: np.ndarray
    refs: list[Reference]


def samples(data: Path, preset_name: str = "severe", top_k: int | None = None, limit: int | None = None,
            people: Sequence[str] | None = None, seed: int = 0, size: int = 512,
            split: str = "all") -> tuple[int, Iterator[Sample]]:
    """(count, the samples in order) of :func:`evaluate`; also what ``benchmarks/fit_detail.py``
    fits the detail stage on (with ``split="train"``)."""
    params = scaled_for(preset(preset_name), size)
    if top_k is not None and top_k < 1:
        raise ValueError("top_k must be >= 1")
    chosen = select_people(data, split, people)
    if not chosen:
        raise ValueError(f"no person under {data} in split {split!r}")
    bank = FaceBank(data, size=size, include=chosen)
    jobs = []
    for person in bank.trainable_people():
        n = len(bank.images[person])
        for i in range(n if limit is None else min(n, limit)):
            jobs.append((person, i))
    if not jobs:
        raise ValueError(f"no person under {data} has two or more photos")

    def each() -> Iterator[Sample]:
        for person, i in jobs:
            imgs = bank.images[person]
            gt = imgs[i]
            lq = degrade(gt, params, seed=photo_seed(person, i, seed))
            cand_idx = bank.reference_indices(person, i)
            order = rank_references(lq, [imgs[j] for j in cand_idx], top_k)
            refs = [Reference(image=imgs[cand_idx[j]], path=str(bank.people[person][cand_idx[j]])) for j in order]
            yield Sample(person, i, gt, lq, refs)

    return len(jobs), each()


def evaluate(
    restorer: Restorer,
    data: Path,
    preset_name: str = "severe",
    top_k: int | None = None,
    limit: int | None = None,
    people: Sequence[str] | None = None,
    embedder: Any = None,
    seed: int = 0,
    model_name: str | None = None,
    on_photo: Callable[[int, int], None] | None = None,
    size: int = 512,
    split: str = "all",
    fidelity: float | None = None,
    detail: Any = True,
) -> EvalReport:
    """Evaluate ``restorer`` (any object with the Restorer interface) on ``data``.

    Every photo is compared at ``size`` (512 for refbench, 256 for ``faces``): the ground truth
    is read at that size, degraded with the preset scaled to it (``degrade.scaled_for``: the
    same pixels on the template as at 512), and the restorer's output is area-reduced to it.
    ``limit`` caps the number of photos per person; ``people`` restricts to some persons and
    ``split`` to the held-out (or training) people of ``refrestore.net.split``.
    ``embedder`` is anything with ``embed(list_of_aligned_rgb) -> (N, D) unit rows``;
    the default is dlib's descriptor (``refrestore.identity.DlibIdentity``). ``fidelity`` is
    passed to restorers that support it, and to the detail stage.

    ``detail``: the reference detail stage (``refrestore.detail``) that ``fix`` runs after the
    restorer, applied the same way to the output with references: True for the default
    stage, a ``DetailStage``, or False/None to score the restorer alone. With it, the
    ``model`` row is restorer + stage and ``no_detail`` the restorer alone with references.
    """
    count, todo = samples(data, preset_name, top_k, limit, people, seed, size, split)
    if embedder is None:
        from ..identity import DlibIdentity

        embedder = DlibIdentity()
    if detail is True:
        from ..detail import DetailStage

        detail = DetailStage()
    rows_of = ROWS_DETAIL if detail else ROWS
    kwargs = {"fidelity": fidelity} if fidelity is not None and getattr(restorer.info, "supports_fidelity", False) else {}
    per: dict[str, dict[str, list[tuple[float, ...]]]] = {}
    for done, sample in enumerate(todo):
        gt, lq, refs = sample.gt, sample.lq, sample.refs
        restored = restorer.restore([lq], [refs], **kwargs)[0]
        without = restorer.restore([lq], [[]], **kwargs)[0]
        outputs = {"model": restored, "no_ref": without, "bicubic": lq}
        if detail:
            outputs["no_detail"] = restored
            outputs["model"] = detail.add(restored, [r.image for r in refs], fidelity=fidelity).image
        names = list(rows_of)
        emb = embedder.embed([gt] + [outputs[n] for n in names])
        rows = per.setdefault(sample.person, {r: [] for r in rows_of})
        for name, e in zip(names, emb[1:]):
            img = outputs[name]
            rows[name].append((psnr(img, gt), ssim(img, gt), float(np.linalg.norm(e - emb[0])), *hf_scores(img, gt)))
        if on_photo is not None:
            on_photo(done + 1, count)

    def agg(vals: list[tuple[float, ...]]) -> Scores:
        a = np.asarray(vals, dtype=np.float64)
        return Scores(float(a[:, 0].mean()), float(a[:, 1].mean()), float(a[:, 2].mean()), len(vals),
                      float(a[:, 3].mean()), float(a[:, 4].mean()))

    per_person = {p: {r: agg(v[r]) for r in rows_of} for p, v in per.items()}
    overall = {r: agg([x for v in per.values() for x in v[r]]) for r in rows_of}
    return EvalReport(preset_name, model_name or getattr(restorer.info, "name", "?"), top_k, overall, per_person,
                      size=size, split=split, fidelity=fidelity)


# Seed modules that can be switched off in a trained network (each a RefNetConfig flag). The
# hard-example identity loss and the reconstruction branch act during training only: switching
# them off at inference changes nothing, so their worth is measured by training runs.
ABLATION_MODULES = ("selection", "transfer", "texture", "identity_context", "vq", "refine", "aligned",
                    "lq_detail", "hr_head")


def ablate(weights: Path, data: Path, modules: Sequence[str] = ABLATION_MODULES, **kwargs: Any) -> dict[str, EvalReport]:
    """Evaluate the network with each module switched off in turn (the module's weights dropped,
    everything else as trained): ``{"full": ..., module: ...}``. kwargs go to :func:`evaluate`."""
    import torch
    from dataclasses import replace

    from ..restorers.refnet import RefNetRestorer
    from ..net.arch import RefNet
    from .train import read_weights

    kwargs.setdefault("detail", False)  # the network's own modules, without the detail stage
    cfg, sd = read_weights(weights)
    reports: dict[str, EvalReport] = {}
    for name in ("full", *modules):
        if name != "full" and not getattr(cfg, name, False):
            continue
        c = cfg if name == "full" else replace(cfg, **{name: False})
        model = RefNet(c)
        missing, _ = model.load_state_dict(sd, strict=False)
        if missing:
            raise ValueError(f"switching off {name} left tensors unset: {missing[:3]}")
        restorer = RefNetRestorer(model, torch.device("cpu"))
        reports[name] = evaluate(restorer, data, model_name=f"{weights} without {name}" if name != "full" else str(weights),
                                 **kwargs)
    return reports
