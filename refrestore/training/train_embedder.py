"""Train the small face-identity embedder (``models/faceid_small.pth``) on ``shared/data/faces``.

``python -m refrestore.training.train_embedder --data ../shared/data/faces --out models/faceid_small.pth``

CosFace margin softmax over the *training* people of :mod:`refrestore.net.split` only (held-out
people are never read here). Every sample is jittered (rotation, scale, shift), flipped half the
time and, with probability ``degrade_prob``, degraded so the face is 16-64 px wide (blur matched
to the downscale, noise, JPEG, sometimes greyscale / faded) and brought back up: a degraded copy
is a positive of its own person, which is what reference selection needs from the embedder.

The budget is wall time (``--minutes``, counted across resumes): the learning rate follows a
cosine over that time, and the run folder holds a resumable checkpoint written every few minutes.
Imports only torch, numpy and OpenCV (runs on a bare GPU machine).
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from refrestore.net.degrade import MILD, degrade, face_width_rule, random_params
from refrestore.net.embedder import EmbedderConfig, FaceEmbedder, save_embedder
from refrestore.net.split import HELD_OUT_BELOW, HELD_OUT_BYTE_MOD, split_people

logger = logging.getLogger(__name__)

# Training images are kept at this size (the 256 crops area-reduced): the network's 64 px input
# covers 0.64 of the crop, so 128 loses nothing it would see.
TRAIN_SIZE = 128
# The face (detector box) width as a fraction of an FFHQ-aligned crop: the box RetinaFace puts on
# a face is about twice the eye distance, which the template puts at a quarter of the crop.
FACE_WIDTH_FRACTION = 0.5
IMAGE_EXTS = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class EmbedderTrainConfig:
    minutes: float = 22.0
    batch: int = 128
    lr: float = 0.1
    weight_decay: float = 5e-4
    scale: float = 30.0  # CosFace s
    margin: float = 0.30  # CosFace m
    degrade_prob: float = 0.6
    min_face_px: float = 16.0
    max_face_px: float = 64.0
    warmup_steps: int = 150
    checkpoint_minutes: float = 3.0
    seed: int = 0


def list_people(data: Path) -> dict[str, list[Path]]:
    people: dict[str, list[Path]] = {}
    for d in sorted(p for p in Path(data).iterdir() if p.is_dir()):
        files = sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_EXTS)
        if files:
            people[d.name] = files
    return people


def read_rgb(path: Path, size: int) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot read {path}")
    if bgr.shape[:2] != (size, size):
        bgr = cv2.resize(bgr, (size, size), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def load_training_set(data: Path, size: int = TRAIN_SIZE) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(N, size, size, 3) uint8 images, (N,) labels, label names: training people only."""
    people = list_people(data)
    train, _ = split_people(people)
    images, labels = [], []
    for i, person in enumerate(train):
        for f in people[person]:
            images.append(read_rgb(f, size))
            labels.append(i)
    return np.stack(images), np.asarray(labels, dtype=np.int64), train


def degrade_face_width(img: np.ndarray, face_px: float, rng: np.random.Generator) -> np.ndarray:
    """A degraded copy whose face looks ``face_px`` wide (noise/JPEG/old-photo from random_params)."""
    base = random_params(rng, MILD, "severe", old_photo_prob=0.15, out_size=None)
    factor, sigma = face_width_rule(FACE_WIDTH_FRACTION * img.shape[1], face_px)
    params = replace(base, scale=factor, blur_sigma=sigma * float(rng.uniform(0.7, 1.3)),
                     noise_sigma=base.noise_sigma * float(rng.uniform(0.0, 1.0)))
    return degrade(img, params, int(rng.integers(0, 2**31)))


def augment(img: np.ndarray, rng: np.random.Generator, cfg: EmbedderTrainConfig) -> np.ndarray:
    h, w = img.shape[:2]
    angle = float(rng.uniform(-6, 6))
    scale = float(rng.uniform(0.94, 1.06))
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    m[:, 2] += rng.uniform(-0.025, 0.025, size=2) * w
    out = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    if rng.uniform() < 0.5:
        out = out[:, ::-1]
    out = np.ascontiguousarray(out)
    if rng.uniform() < cfg.degrade_prob:
        # Log-uniform face width: as many 16-32 px faces as 32-64 px ones.
        face_px = math.exp(rng.uniform(math.log(cfg.min_face_px), math.log(cfg.max_face_px)))
        out = degrade_face_width(out, face_px, rng)
    elif rng.uniform() < 0.3:
        # Colour/contrast jitter so that clean copies do not all share one camera's look.
        gain = rng.uniform(0.8, 1.2, size=3) if rng.uniform() < 0.7 else np.full(3, rng.uniform(0.8, 1.2))
        out = np.clip(out.astype(np.float32) * gain + rng.uniform(-15, 15), 0, 255).astype(np.uint8)
    return out


def to_tensor(batch: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float().div_(255.0)


class CosFaceHead(torch.nn.Module):
    """Class centres on the unit sphere; logits s * (cos - m at the true class)."""

    def __init__(self, dim: int, classes: int, scale: float, margin: float) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(classes, dim) * 0.01)
        self.scale, self.margin = scale, margin

    def forward(self, feats: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cos = F.normalize(feats, dim=1) @ F.normalize(self.weight, dim=1).t()
        logits = self.scale * (cos - self.margin * F.one_hot(labels, cos.shape[1]))
        return F.cross_entropy(logits, labels), (cos.argmax(1) == labels).float().mean()


def wall_time_lr(cfg: EmbedderTrainConfig, step: int, elapsed: float) -> float:
    """Linear warm-up over ``cfg.warmup_steps``, then a cosine over the wall-time budget
    (``cfg.minutes``) down to 2% of ``cfg.lr``. Any config with those three fields will do."""
    warm = min(1.0, (step + 1) / cfg.warmup_steps)
    frac = min(1.0, elapsed / (cfg.minutes * 60.0))
    return cfg.lr * warm * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * frac)))


def train(data: Path, out: Path, run_dir: Path, cfg: EmbedderTrainConfig,
          model_config: EmbedderConfig | None = None, resume: bool = True,
          device: str = "cpu") -> FaceEmbedder:
    """Train for ``cfg.minutes`` of wall time (across resumes); write the shipped file to ``out``."""
    images, labels, names = load_training_set(data)
    logger.info("training people %d, photos %d", len(names), len(images))
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    model = FaceEmbedder(model_config).to(device)
    head = CosFaceHead(model.config.dim, len(names), cfg.scale, cfg.margin).to(device)
    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay, nesterov=True)
    step, elapsed_before = 0, 0.0
    ckpt = Path(run_dir) / "last.pth"
    if resume and ckpt.is_file():
        state = torch.load(ckpt, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        head.load_state_dict(state["head"])
        opt.load_state_dict(state["opt"])
        step, elapsed_before = int(state["step"]), float(state["elapsed"])
        rng = np.random.default_rng([cfg.seed, step])
        logger.info("resumed at step %d (%.1f min)", step, elapsed_before / 60)

    def save_ckpt(elapsed: float) -> None:
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        tmp = ckpt.with_name("last.pth.tmp")
        torch.save({"model": model.state_dict(), "head": head.state_dict(), "opt": opt.state_dict(),
                    "step": step, "elapsed": elapsed}, tmp)
        tmp.replace(ckpt)

    model.train()
    start = time.perf_counter()
    last_ckpt = start
    budget = cfg.minutes * 60.0
    loss_avg = acc_avg = None
    while True:
        elapsed = elapsed_before + time.perf_counter() - start
        if elapsed >= budget:
            break
        for g in opt.param_groups:
            g["lr"] = wall_time_lr(cfg, step, elapsed)
        idx = rng.integers(0, len(images), size=cfg.batch)
        x = to_tensor([augment(images[i], rng, cfg) for i in idx]).to(device)
        y = torch.from_numpy(labels[idx]).to(device)
        loss, acc = head(model.features(model.crop(x)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        loss_avg = loss.item() if loss_avg is None else 0.98 * loss_avg + 0.02 * loss.item()
        acc_avg = acc.item() if acc_avg is None else 0.98 * acc_avg + 0.02 * acc.item()
        if step % 50 == 0:
            logger.info("step %d  %.1f min  lr %.4f  loss %.3f  train acc %.3f", step, elapsed / 60,
                        opt.param_groups[0]["lr"], loss_avg, acc_avg)
        if time.perf_counter() - last_ckpt > cfg.checkpoint_minutes * 60:
            save_ckpt(elapsed_before + time.perf_counter() - start)
            last_ckpt = time.perf_counter()
    save_ckpt(elapsed_before + time.perf_counter() - start)
    model.eval()
    meta = {
        "trained_on": f"shared/data/faces training people ({len(names)} people, {len(images)} photos)",
        "held_out_rule": f"sha256(person folder name)[0] % {HELD_OUT_BYTE_MOD} < {HELD_OUT_BELOW} "
                         "(refrestore.net.split.is_held_out); never trained on",
        "loss": f"CosFace s={cfg.scale} m={cfg.margin}",
        "steps": step, "batch": cfg.batch, "minutes": round((elapsed_before + time.perf_counter() - start) / 60, 1),
        "final_train_loss": round(float(loss_avg or 0.0), 4), "final_train_acc": round(float(acc_avg or 0.0), 4),
        "licence": "non-commercial research use (trained on CelebA-derived data)",
    }
    save_embedder(model, out, meta)
    return model


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Train refrestore's small face-identity embedder.")
    p.add_argument("--data", type=Path, default=Path("../shared/data/faces"))
    p.add_argument("--out", type=Path, default=Path("models/faceid_small.pth"))
    p.add_argument("--run-dir", type=Path, default=Path("runs/faceid-small"))
    p.add_argument("--minutes", type=float, default=EmbedderTrainConfig.minutes)
    p.add_argument("--batch", type=int, default=EmbedderTrainConfig.batch)
    p.add_argument("--lr", type=float, default=EmbedderTrainConfig.lr)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-resume", action="store_true")
    args = p.parse_args(argv)
    if not args.data.is_dir():
        print(f"error: {args.data} is not a folder", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        handlers=[logging.StreamHandler(), logging.FileHandler(_log_path(args.run_dir))])
    torch.set_num_threads(args.threads)
    cfg = EmbedderTrainConfig(minutes=args.minutes, batch=args.batch, lr=args.lr)
    train(args.data, args.out, args.run_dir, cfg, resume=not args.no_resume, device=args.device)
    return 0


def _log_path(run_dir: Path) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir / "train.log"


if __name__ == "__main__":
    sys.exit(main())
