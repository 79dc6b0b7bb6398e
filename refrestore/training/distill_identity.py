"""Fine-tune the pretrained MobileFaceNet for small and damaged faces (``models/mobilefacenet_lr.pt``).

``python -m refrestore.training.distill_identity --data ../shared/data/faces --teacher mobilefacenet.pt
--run runs/mobilefacenet-lr --out models/mobilefacenet_lr.pt [--minutes 120]``

The published network (the teacher, frozen) embeds every clean training photo; a copy of it (the
student) is trained so that a degraded copy of a photo (a face 10-72 px wide: blur matched to the
downscale or heavier, area downscale, noise, JPEG, sometimes greyscale; or the clean photo itself)
lands where the teacher put the clean photo: a cosine term, plus InfoNCE against the teacher
embeddings of every training photo (other photos of the same person are not negatives). No
identity classes are learnt, so nothing ties the network to the training people; the student keeps
the teacher's space (clean faces land where they did), so one gallery serves clean and degraded
queries. Only the *training* people of :mod:`refrestore.net.split` are read. With
``--restored-prob`` a share of the damaged samples is first restored blind by the embedded
restorer, as ``fix`` restores a query with little detail before embedding it
(:mod:`refrestore.identity.restored_queries`).

The budget is wall time (``--minutes``, counted across resumes), the learning rate a cosine over
it; the run folder holds a resumable checkpoint written every few minutes.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from refrestore.gallery.quality import assess
from refrestore.identity.crops import ALIGNED_SIZE
from refrestore.identity.mobilefacenet import MobileFaceNet, load_mobilefacenet, to_input
from refrestore.identity.restored_queries import RestoredQueries, embedded_restorer_queries
from refrestore.net.split import split_people

logger = logging.getLogger(__name__)

IMAGE_EXTS = (".jpg", ".jpeg", ".png")
CROP = 256  # the training crops' size (shared/data/faces is 256)


@dataclass(frozen=True)
class DistillConfig:
    minutes: float = 120.0
    batch: int = 48
    lr: float = 5e-5
    tau: float = 0.05  # InfoNCE temperature
    cos_weight: float = 2.0
    clean_prob: float = 0.2  # share of samples left clean (the student keeps the teacher's clean space)
    min_face_px: float = 10.0
    max_face_px: float = 72.0
    checkpoint_minutes: float = 3.0
    seed: int = 0
    # Share of the person's centroid (the teacher's mean of all their clean photos) in each
    # sample's target, beside the photo's own clean embedding: the one-person rule scores a face
    # against that centroid, so pulling damaged faces towards it raises the own-person scores
    # that decide the stranger thresholds (0: the photo's own embedding only, as first trained).
    centroid_mix: float = 0.0
    # Share of samples seen as refrestore embeds a query (identity.restored_queries): a damaged
    # face with detail under its threshold is restored blind by the embedded restorer first, so
    # the student learns the faces it is actually given (0: the damaged face as it is, as first
    # trained). The others stay as they are: gallery levels embed damaged faces unrestored.
    restored_prob: float = 0.0


def degrade_sample(img: np.ndarray, rng: np.random.Generator, cfg: DistillConfig) -> np.ndarray:
    """A random degradation of an aligned crop (its face about half the crop wide), or the crop."""
    if rng.random() < cfg.clean_prob:
        out = img
    else:
        size = img.shape[0]
        width = float(np.exp(rng.uniform(np.log(cfg.min_face_px), np.log(cfg.max_face_px))))
        factor = 0.5 * size / width
        # blur matched to the downscale, or heavier (a soft lens, a print enlarged from a small one)
        sigma = factor * (rng.uniform(0.3, 0.7) if rng.random() < 0.6 else rng.uniform(0.8, 1.5))
        x = cv2.GaussianBlur(img, (0, 0), sigma)
        low = max(6, round(size / factor))
        x = cv2.resize(x, (low, low), interpolation=cv2.INTER_AREA)
        x = np.clip(x + rng.normal(0.0, rng.uniform(0.0, 12.0), x.shape), 0, 255).astype(np.uint8)
        if rng.random() < 0.8:
            ok, buf = cv2.imencode(".jpg", x, [cv2.IMWRITE_JPEG_QUALITY, int(rng.uniform(25, 90))])
            x = cv2.imdecode(buf, cv2.IMREAD_COLOR) if ok else x
        if rng.random() < 0.15:
            x = np.repeat(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
        interp = cv2.INTER_CUBIC if rng.random() < 0.7 else cv2.INTER_LINEAR
        out = cv2.resize(x, (size, size), interpolation=interp)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


def query_view(sample: np.ndarray, restored: RestoredQueries | None, rng: np.random.Generator,
               cfg: DistillConfig) -> np.ndarray:
    """A training sample as ``fix`` would embed it as a query, with probability ``restored_prob``:
    the crop at the 512 px ``fix`` aligns to, restored blind when its detail (the sharpness
    ``describe_query`` measures) is under the restorer's threshold; otherwise the sample."""
    if restored is None or rng.random() >= cfg.restored_prob:
        return sample
    big = cv2.resize(sample, (ALIGNED_SIZE, ALIGNED_SIZE), interpolation=cv2.INTER_CUBIC)
    detail = assess(big, None, float(ALIGNED_SIZE)).sharpness
    return sample if detail >= restored.below else restored.prepare(big, detail)


def load_training_photos(data: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """(RGB 256 crops, person index per crop) of the training people only."""
    people = sorted(d.name for d in data.iterdir() if d.is_dir())
    train, _ = split_people(people)
    images, owners = [], []
    for k, person in enumerate(train):
        for f in sorted((data / person).iterdir()):
            if f.suffix.lower() not in IMAGE_EXTS:
                continue
            bgr = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if bgr is None:
                continue
            if bgr.shape[:2] != (CROP, CROP):
                bgr = cv2.resize(bgr, (CROP, CROP), interpolation=cv2.INTER_AREA)
            images.append(np.ascontiguousarray(bgr[:, :, ::-1]))
            owners.append(k)
    return images, np.asarray(owners)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def teacher_embeddings(teacher: MobileFaceNet, images: list[np.ndarray]) -> torch.Tensor:
    """(N, 128) unit: each clean photo as is and mirrored, averaged (as the gallery embeds it)."""
    out = []
    with torch.no_grad():
        for i in range(0, len(images), 64):
            batch = images[i:i + 64]
            a = teacher(torch.from_numpy(to_input(batch)))
            b = teacher(torch.from_numpy(to_input([np.ascontiguousarray(x[:, ::-1]) for x in batch])))
            out.append(_unit(_unit(a) + _unit(b)))
    return torch.cat(out)


def lr_at(cfg: DistillConfig, elapsed: float) -> float:
    t = min(1.0, elapsed / max(cfg.minutes * 60.0, 1.0))
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * t))


def train(data: Path, teacher_path: Path, run_dir: Path, out: Path, cfg: DistillConfig,
          init: Path | None = None) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    images, owners = load_training_photos(data)
    logger.info("%d training photos of %d people", len(images), len(set(owners.tolist())))
    teacher = load_mobilefacenet(teacher_path)
    targets = teacher_embeddings(teacher, images)
    if cfg.centroid_mix > 0.0:
        cents = torch.zeros(int(owners.max()) + 1, targets.shape[1]).index_add_(0, torch.from_numpy(owners), targets)
        targets = _unit((1.0 - cfg.centroid_mix) * targets + cfg.centroid_mix * _unit(cents)[torch.from_numpy(owners)])
    student = MobileFaceNet()
    student.load_state_dict(teacher.state_dict() if init is None else load_mobilefacenet(init).state_dict())
    opt = torch.optim.Adam(student.parameters(), lr=cfg.lr)
    step, elapsed = 0, 0.0
    ckpt = run_dir / "last.pth"
    if ckpt.is_file():
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        student.load_state_dict(state["student"])
        opt.load_state_dict(state["opt"])
        step, elapsed = int(state["step"]), float(state["elapsed"])
        logger.info("resumed at step %d (%.1f min)", step, elapsed / 60)
    rng = np.random.default_rng(cfg.seed + step)
    student.train()
    for m in student.modules():  # small batches: keep the teacher's normalisation statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    same = torch.from_numpy(owners[:, None] == owners[None, :])
    restored = embedded_restorer_queries() if cfg.restored_prob > 0.0 else None

    def save() -> None:
        tmp = ckpt.with_suffix(".tmp")
        torch.save({"student": student.state_dict(), "opt": opt.state_dict(), "step": step,
                    "elapsed": elapsed, "config": asdict(cfg)}, tmp)
        tmp.replace(ckpt)

    last_save = time.monotonic()
    start = time.monotonic() - elapsed
    while elapsed < cfg.minutes * 60.0:
        idx = rng.choice(len(images), cfg.batch, replace=False)
        x = torch.from_numpy(to_input([query_view(degrade_sample(images[i], rng, cfg), restored, rng, cfg)
                                       for i in idx]))
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, elapsed)
        emb = _unit(student(x))
        target = torch.from_numpy(idx)
        logits = (emb @ targets.T / cfg.tau).masked_fill(same[idx] & ~F.one_hot(target, len(images)).bool(), -1e4)
        nce = F.cross_entropy(logits, target)
        cos = (1.0 - (emb * targets[idx]).sum(1)).mean()
        loss = nce + cfg.cos_weight * cos
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        elapsed = time.monotonic() - start
        if step % 20 == 0:
            logger.info("step %d  %.1f min  loss %.3f  nce %.3f  cos %.3f  lr %.2e", step, elapsed / 60,
                        loss.item(), nce.item(), cos.item(), lr_at(cfg, elapsed))
        if time.monotonic() - last_save > cfg.checkpoint_minutes * 60.0:
            save()
            last_save = time.monotonic()
    save()
    export(student, out)
    logger.info("done at step %d; weights in %s", step, out)
    return out


def export(student: MobileFaceNet, out: Path) -> None:
    """The student's state dict alone (the published parameter names), written atomically."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    torch.save({k: v.clone() for k, v in student.state_dict().items()}, tmp)
    tmp.replace(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Fine-tune MobileFaceNet for small and damaged faces.")
    p.add_argument("--data", type=Path, required=True, help="shared/data/faces (training people only are read)")
    p.add_argument("--teacher", type=Path, required=True, help="the published mobilefacenet.pt")
    p.add_argument("--run", type=Path, default=Path("runs/mobilefacenet-lr"))
    p.add_argument("--out", type=Path, default=Path("models/mobilefacenet_lr.pt"))
    p.add_argument("--minutes", type=float, default=DistillConfig.minutes)
    p.add_argument("--init", type=Path, default=None,
                   help="start the student from these weights (default: the teacher's)")
    p.add_argument("--lr", type=float, default=DistillConfig.lr)
    p.add_argument("--min-face-px", type=float, default=DistillConfig.min_face_px)
    p.add_argument("--max-face-px", type=float, default=DistillConfig.max_face_px)
    p.add_argument("--centroid-mix", type=float, default=DistillConfig.centroid_mix)
    p.add_argument("--restored-prob", type=float, default=DistillConfig.restored_prob,
                   help="share of samples restored blind first when their detail is low, as fix embeds queries")
    p.add_argument("--export-only", action="store_true", help="write --out from the run's last checkpoint")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    run_dir: Path = args.run
    run_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        handlers=[logging.StreamHandler(), logging.FileHandler(run_dir / "train.log")])
    if args.export_only:
        state = torch.load(run_dir / "last.pth", map_location="cpu", weights_only=True)
        student = MobileFaceNet()
        student.load_state_dict(state["student"])
        export(student, args.out)
        return 0
    cfg = DistillConfig(minutes=args.minutes, lr=args.lr, min_face_px=args.min_face_px,
                        max_face_px=args.max_face_px, centroid_mix=args.centroid_mix,
                        restored_prob=args.restored_prob)
    train(args.data, args.teacher, run_dir, args.out, cfg, init=args.init)
    return 0


if __name__ == "__main__":
    sys.exit(main())
