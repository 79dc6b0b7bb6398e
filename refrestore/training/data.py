"""Training and evaluation data: folders of aligned photos, one sub-folder per person.

Layout: ``DIR/<person>/<n>.png`` (or ``DIR/hq/<person>/...``), every image an aligned
512x512 FFHQ-template face. A training sample is a target photo of one person, degraded at
random, and 1..K other photos of the same person as references.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import torch

from ..net.arch import region_prior
from ..net.degrade import MILD, degrade, random_params, scaled_for
from ..net.tensors import resize_square
from ..net.warp import align_references
from .damage import apply_damage, random_damage
from .folders import DataError, read_rgb, scan_people
from .pack import read_pack

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Photo:
    person: str
    path: Path
    digest: str  # sha1 of the decoded pixels, to drop exact duplicates from references


class FaceBank:
    """All photos of a data folder (or of a ``refrestore.training.pack`` ``.npz``), decoded once and
    kept in memory (uint8). ``keep(person)`` False leaves a person out."""

    def __init__(self, data: Path, size: int = 512, exclude: Sequence[str] = (),
                 include: Sequence[str] | None = None, keep: Callable[[str], bool] | None = None) -> None:
        self.size = size
        self.images: dict[str, list[np.ndarray]] = {}
        self.digests: dict[str, list[str]] = {}
        self.people: dict[str, list[Path]] = {}

        def wanted(p: str) -> bool:
            return p not in exclude and (include is None or p in include) and (keep is None or keep(p))

        data = Path(data)
        if data.is_file() and data.suffix == ".npz":
            _, packed = read_pack(data)
            decoded = {p: imgs for p, imgs in packed.items() if wanted(p)}
            self.people = {p: [Path(f"{data}#{p}/{i}") for i in range(len(v))] for p, v in decoded.items()}
        else:
            self.people = {p: f for p, f in scan_people(data, exclude, include).items() if wanted(p)}
            decoded = {p: [read_rgb(f) for f in files] for p, files in self.people.items()}
        if not decoded:
            raise DataError(f"no people left in {data}")
        for person, raw in decoded.items():
            imgs = [resize_square(img, size) for img in raw]
            self.images[person] = imgs
            self.digests[person] = [hashlib.sha1(img.tobytes()).hexdigest() for img in imgs]

    def trainable_people(self) -> list[str]:
        return [p for p, imgs in self.images.items() if len(imgs) >= 2]

    def reference_indices(self, person: str, target: int) -> list[int]:
        """All other photos of ``person``, minus exact duplicates of the target."""
        digs = self.digests[person]
        return [i for i in range(len(digs)) if i != target and digs[i] != digs[target]]

    def __len__(self) -> int:
        return sum(len(v) for v in self.images.values())


@dataclass
class Batch:
    lq: torch.Tensor  # (B, 3, 512, 512) in [0, 1]
    gt: torch.Tensor  # (B, 3, 512, 512)
    refs: torch.Tensor | None  # (B, K, 3, R, R)
    ref_prior: torch.Tensor | None  # (B, K, 1, P, P)
    aligned: torch.Tensor | None = None  # (B, K, 3, 512, 512) references warped onto the lq

    def to(self, device: torch.device) -> "Batch":
        return Batch(self.lq.to(device), self.gt.to(device),
                     None if self.refs is None else self.refs.to(device),
                     None if self.ref_prior is None else self.ref_prior.to(device),
                     None if self.aligned is None else self.aligned.to(device))


def to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255.0)


def _jitter(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Small random rotation, scale, shift and brightness/contrast change."""
    h, w = img.shape[:2]
    angle = float(rng.uniform(-6, 6))
    scale = float(rng.uniform(0.93, 1.07))
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    m[:, 2] += rng.uniform(-0.025, 0.025, size=2) * np.array([w, h])
    out = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    gain, bias = float(rng.uniform(0.9, 1.1)), float(rng.uniform(-12, 12))
    return np.clip(out.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8)


class TrainSampler:
    """Draws random training batches from a :class:`FaceBank`."""

    def __init__(self, bank: FaceBank, ref_size: int, prior_size: int, max_refs: int = 3,
                 no_ref_prob: float = 0.15, old_photo_prob: float = 0.15, extreme_prob: float = 0.25,
                 random_region_prob: float = 0.2, self_ref_prob: float = 0.0, aligned: bool = False,
                 mild_prob: float = 0.0, real_prob: float = 0.0) -> None:
        self.bank = bank
        self.people = bank.trainable_people()
        if not self.people:
            raise DataError("training needs at least one person with two or more photos")
        self.ref_size = ref_size
        self.prior_size = prior_size
        self.max_refs = max_refs
        self.no_ref_prob = no_ref_prob
        self.old_photo_prob = old_photo_prob
        self.extreme_prob = extreme_prob
        self.random_region_prob = random_region_prob
        self.self_ref_prob = self_ref_prob
        self.aligned = aligned
        self.mild_prob = mild_prob
        self.real_prob = real_prob  # share of samples with the damage of real photos (training.damage)

    def sample(self, rng: np.random.Generator, batch: int) -> Batch:
        # One K per batch (tensors stay rectangular); K = 0 trains the no-reference path.
        k = 0 if rng.uniform() < self.no_ref_prob else int(rng.integers(1, self.max_refs + 1))
        lqs, gts, refs, priors, warped = [], [], [], [], []
        for _ in range(batch):
            person = self.people[int(rng.integers(len(self.people)))]
            imgs = self.bank.images[person]
            t = int(rng.integers(len(imgs)))
            gt = imgs[t]
            if rng.uniform() < 0.5:
                gt = gt[:, ::-1]
            gt = np.ascontiguousarray(gt)
            if self.real_prob and rng.uniform() < self.real_prob:
                # The truth takes the damage's tone (a faded or greyscale print stays one).
                damage = random_damage(rng, gt.shape[0], mild=bool(rng.uniform() < self.mild_prob))
                lq, gt = apply_damage(gt, damage, seed=int(rng.integers(1 << 31)))
            else:
                high = "extreme" if rng.uniform() < self.extreme_prob else "severe"
                if self.mild_prob and rng.uniform() < self.mild_prob:
                    params = random_params(rng, low=MILD, high="moderate", old_photo_prob=self.old_photo_prob)
                else:
                    params = random_params(rng, low="moderate", high=high, old_photo_prob=self.old_photo_prob)
                lq = degrade(gt, scaled_for(params, gt.shape[0]), seed=int(rng.integers(1 << 31)))
            lqs.append(to_tensor(lq))
            gts.append(to_tensor(gt))
            if k:
                cand = self.bank.reference_indices(person, t)
                chosen = rng.choice(len(cand), size=k, replace=len(cand) < k)
                rs, ps, ws = [], [], []  # ws: references to warp onto lq
                for c in chosen:
                    if rng.uniform() < self.self_ref_prob:
                        # A geometrically and photometrically jittered copy of the target: teaches
                        # the transfer to find and use matching detail (never pixel-aligned).
                        r = _jitter(gt, rng)
                    else:
                        r = imgs[cand[int(c)]]
                        if rng.uniform() < 0.5:
                            r = r[:, ::-1]
                    r = np.ascontiguousarray(r)
                    rs.append(to_tensor(resize_square(r, self.ref_size)))
                    if self.aligned:
                        ws.append(r)
                    regions = None
                    if rng.uniform() < self.random_region_prob:
                        regions = {n: float(rng.uniform(0.2, 1.0)) for n in ("eyes", "nose", "mouth", "outline")}
                    ps.append(region_prior(regions, self.prior_size))
                refs.append(torch.stack(rs))
                priors.append(torch.stack(ps))
                if ws:
                    warped.append(torch.stack([to_tensor(w) for w in align_references(lq, ws, gt.shape[0])]))
        return Batch(torch.stack(lqs), torch.stack(gts),
                     torch.stack(refs) if k else None, torch.stack(priors) if k else None,
                     torch.stack(warped) if warped else None)


class MixedSampler:
    """Draws each batch from one of several samplers (one size per batch), by weight."""

    def __init__(self, samplers: Sequence[tuple[TrainSampler, float]]) -> None:
        if not samplers:
            raise DataError("no training data")
        self.samplers = [s for s, _ in samplers]
        w = np.asarray([max(0.0, float(x)) for _, x in samplers], dtype=np.float64)
        self.p = w / w.sum()

    def sample(self, rng: np.random.Generator, batch: int) -> Batch:
        i = int(rng.choice(len(self.samplers), p=self.p)) if len(self.samplers) > 1 else 0
        return self.samplers[i].sample(rng, batch)
