"""Training loop for RefNet: resumable, checkpointed, CPU or CUDA.

Checkpoints (``RUN/last.pth``) are written atomically every ``ckpt_every_s`` seconds and on
stop, and are kept small so that they can be committed: model weights in fp32, the EMA
weights in fp16, and Adam's second moments in bf16 (the first moments are dropped; they
rebuild within a few dozen steps after a resume).
"""
from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from ..net.arch import RefNet, RefNetConfig, count_parameters, get_config
from ..net.split import is_held_out
from ..net.weights import CKPT_FORMAT, WEIGHTS_FORMAT, load_weights, read_weights  # noqa: F401 (load_weights: the trainer's callers)
from .data import FaceBank, MixedSampler, TrainSampler
from .discriminator import PatchDiscriminator, d_hinge_loss
from .losses import LossWeights, at_size, total_loss

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataSource:
    """A folder of aligned faces (``DIR/<person>/<n>.*``) at its own size, drawn with a weight."""

    path: Path
    size: int = 512
    weight: float = 1.0


@dataclass
class TrainOptions:
    data: Path  # aligned 512 faces (refbench-style); more sources in ``extra_data``
    config: str = "tiny"
    out: Path = Path("runs/refnet")
    steps: int = 1000  # total steps to reach (a resumed run continues up to this)
    batch: int = 4
    lr: float = 2e-4
    warmup: int = 200
    device: str = "cpu"
    resume: bool = False
    seed: int = 0
    exclude: tuple[str, ...] = ()  # people held out of training
    max_refs: int = 3
    extreme_prob: float = 0.25  # share of samples whose degradation range reaches `extreme`
    mild_prob: float = 0.0  # share of samples degraded between MILD and `moderate` instead
    real_prob: float = 0.0  # share of samples with the damage of real photos (refrestore.training.damage)
    no_ref_prob: float = 0.15  # share of batches without references (trains the no-reference path)
    self_ref_prob: float = 0.0  # share of reference slots filled with a jittered copy of the target
    ckpt_every_s: float = 120.0
    export_every_s: float = 600.0
    export_path: Path | None = None  # where to export EMA weights (e.g. models/refnet_small.pth)
    ema_decay: float = 0.999
    threads: int | None = None
    config_overrides: dict[str, Any] = field(default_factory=dict)
    init_from: Path | None = None  # start a new run from these weights (new modules keep their init)
    extra_data: tuple[DataSource, ...] = ()  # e.g. DataSource(Path("../shared/data/faces"), 256, 3.0)
    data_weight: float = 1.0  # weight of ``data`` among the sources
    held_out_split: bool = True  # leave out the people of refrestore.net.split (never trained on)
    adv_start: int = 300  # generator steps (of this run) before the adversarial term is switched on
    disc_lr: float = 2e-4
    identity_embedder: Path | None = None  # weights of refrestore.net.embedder (hard-example identity loss)
    mobilefacenet: Path | None = None  # pretrained MobileFaceNet: identity loss and perceptual feature loss
    loss_overrides: dict[str, float] = field(default_factory=dict)
    max_seconds: float | None = None  # stop (with a checkpoint) after this long, e.g. on a lent GPU
    workers: int = 0  # processes that prepare batches (degradation, flow warps) ahead of a GPU


@dataclass
class StepInfo:
    step: int
    total: int
    loss: float
    parts: dict[str, float]
    seconds_per_step: float


@dataclass
class TrainResult:
    step: int
    checkpoint: Path
    first_loss: float
    last_loss: float
    identity_loss: bool


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save through refrestore's one writer (``fileio.write_atomic``): never half-written,
    a link's target replaced, and recorded as refrestore's so a rerun may replace it."""
    from ..fileio import write_atomic

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda f: torch.save(obj, f))


def _half_state(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: (v.detach().to("cpu", torch.float16) if v.is_floating_point() else v.detach().cpu())
            for k, v in sd.items()}


def export_weights(model_sd: dict[str, torch.Tensor], cfg: RefNetConfig, path: Path, meta: dict[str, Any]) -> None:
    """Write inference weights (fp16) with their config; loadable with weights_only=True."""
    atomic_save({"format": WEIGHTS_FORMAT, "config": cfg.to_dict(), "state_dict": _half_state(model_sd),
                 "meta": meta}, path)


def _init_from(model: RefNet, path: Path) -> None:
    """Load weights of an earlier run (exported or checkpoint EMA) into a model that may have
    more modules: every tensor of the file must fit; modules the file lacks keep their init."""
    _, sd = read_weights(path)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if unexpected:
        raise ValueError(f"{path} has tensors this config does not: {unexpected[:3]}")
    log.info("initialised from %s; new modules: %s", path, sorted({m.split('.')[0] for m in missing}))


def own_identity_embedder(path: Path | None, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """refrestore's own embedder (``refrestore.net.embedder``, trained on the training people of
    ``faces``), when its weights are there; torch only, so it runs on a bare GPU machine."""
    try:
        from ..net.embedder import load_embedder
    except ImportError:
        return None
    try:
        net = load_embedder(path, device)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        log.warning("identity embedder not loaded (%s)", exc)
        return None
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def find_identity_embedder(device: torch.device) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """A differentiable face embedder (facexlib ArcFace IR-SE50) when its weights are present.

    Used only for the optional hard-example identity loss; it is never dlib (the metric).
    """
    try:
        from ..weights import WeightStore  # type: ignore[attr-defined]
    except ImportError:
        return None
    try:
        path = WeightStore().find("recognition_arcface_ir_se50.pth")
    except Exception:  # the store raises when the file is unknown or absent
        return None
    if path is None or not Path(path).is_file():
        return None
    from facexlib.recognition.arcface_arch import Backbone

    net = Backbone(num_layers=50, drop_ratio=0.6, mode="ir_se")
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    net = net.to(device).eval()
    for p in net.parameters():
        p.requires_grad_(False)

    def embed(x: torch.Tensor) -> torch.Tensor:
        s = x.shape[-1]
        # Face area of the FFHQ template, resized to ArcFace's 112 input in [-1, 1].
        a, b = int(s * 0.1875), int(s * 0.8125)
        crop = torch.nn.functional.interpolate(x[..., a:b, a:b], size=(112, 112), mode="bilinear",
                                               align_corners=False)
        return net(crop * 2 - 1)

    return embed


def mobilefacenet_losses(path: Path, device: torch.device) -> tuple[Callable[[torch.Tensor], torch.Tensor],
                                                                    Callable[[torch.Tensor], torch.Tensor]]:
    """(embed, features) of the pretrained MobileFaceNet (``refrestore.identity.mobilefacenet``,
    torch only) on FFHQ crops in [0, 1]: its 128-d embedding for the identity loss and its early
    feature maps for the perceptual loss, through the differentiable ArcFace warp. Frozen; never
    the evaluation metric (dlib)."""
    from ..identity.mobilefacenet import load_mobilefacenet, to_input_tensor

    net = load_mobilefacenet(path, device)
    for p in net.parameters():
        p.requires_grad_(False)

    def embed(x: torch.Tensor) -> torch.Tensor:
        return net(to_input_tensor(x))

    def features(x: torch.Tensor) -> torch.Tensor:
        return net.stem(to_input_tensor(x))

    return embed, features


def _lr_at(step: int, opts: TrainOptions) -> float:
    if step < opts.warmup:
        return opts.lr * (step + 1) / opts.warmup
    return opts.lr


def _adam_sq(opt: torch.optim.Adam) -> list[torch.Tensor]:
    sq = []
    for group in opt.param_groups:
        for p in group["params"]:
            st = opt.state.get(p, {})
            v = st.get("exp_avg_sq")
            sq.append(v.detach().to("cpu", torch.bfloat16) if v is not None else torch.zeros(0))
    return sq


def _restore_adam(opt: torch.optim.Adam, sqs: list[torch.Tensor], step: int, device: torch.device) -> None:
    params = [p for g in opt.param_groups for p in g["params"]]
    for p, sq in zip(params, sqs):
        if sq.numel():
            opt.state[p] = {"step": torch.tensor(float(step)), "exp_avg": torch.zeros_like(p),
                            "exp_avg_sq": sq.to(device, torch.float32)}


def _save_checkpoint(path: Path, model: RefNet, ema: dict[str, torch.Tensor], opt: torch.optim.Adam,
                     step: int, opts: TrainOptions, identity_loss: bool, last_loss: float,
                     disc: nn.Module | None = None, d_opt: torch.optim.Adam | None = None,
                     run_steps: int = 0) -> None:
    sq = _adam_sq(opt)
    opts_d = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()}
    opts_d["exclude"] = list(opts.exclude)
    opts_d["extra_data"] = [{"path": str(d.path), "size": d.size, "weight": d.weight} for d in opts.extra_data]
    extra: dict[str, Any] = {"run_steps": run_steps}
    if disc is not None and d_opt is not None:
        extra["disc"] = {k: v.detach().cpu() for k, v in disc.state_dict().items()}
        extra["disc_adam_sq"] = _adam_sq(d_opt)
    atomic_save({**extra,
        "format": CKPT_FORMAT,
        "config": model.cfg.to_dict(),
        "step": step,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "ema": _half_state(ema),
        "adam_sq": sq,
        "options": opts_d,
        "identity_loss": identity_loss,
        "last_loss": last_loss,
    }, path)


def _sample_fidelity(rng: np.random.Generator, n: int) -> np.ndarray:
    """Fidelities for a batch: both ends often (they are what users pick), the rest uniform."""
    u = rng.uniform(size=n)
    f = rng.uniform(size=n)
    f[u < 0.2] = 0.0
    f[u > 0.8] = 1.0
    return f.astype(np.float32)


def build_sampler(opts: TrainOptions, cfg: RefNetConfig) -> tuple[MixedSampler, list[str]]:
    """The training sampler over every data source, minus held-out people; returns the people
    left out (for the log and the checkpoint)."""
    sources = [DataSource(Path(opts.data), 512, opts.data_weight), *opts.extra_data]
    left_out: list[str] = []
    parts = []
    for src in sources:
        def keep(p: str) -> bool:
            if p in opts.exclude or (opts.held_out_split and is_held_out(p)):
                left_out.append(p)
                return False
            return True

        n_before = len(left_out)
        bank = FaceBank(src.path, size=src.size, keep=keep)
        sampler = TrainSampler(bank, ref_size=cfg.core, prior_size=cfg.core // 4, max_refs=opts.max_refs,
                               extreme_prob=opts.extreme_prob, no_ref_prob=opts.no_ref_prob,
                               mild_prob=opts.mild_prob, self_ref_prob=opts.self_ref_prob, aligned=cfg.aligned,
                               real_prob=opts.real_prob)
        log.info("training data %s at %d px: %d photos of %d people (%d held out), weight %.2f",
                 src.path, src.size, len(bank), len(bank.images), len(left_out) - n_before, src.weight)
        parts.append((sampler, src.weight))
    return MixedSampler(parts), sorted(set(left_out))


class _BatchStream(torch.utils.data.IterableDataset):
    """Endless batches from the sampler, each worker process with its own seed."""

    def __init__(self, sampler: MixedSampler, batch: int, seed: int, step: int) -> None:
        self.sampler, self.batch, self.seed, self.step = sampler, batch, seed, step

    def __iter__(self):  # type: ignore[no-untyped-def]
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([self.seed, self.step, 0 if info is None else info.id + 1])
        while True:
            yield self.sampler.sample(rng, self.batch)


def _batches(sampler: MixedSampler, opts: TrainOptions, step: int) -> Any:
    if opts.workers <= 0:
        rng = np.random.default_rng([opts.seed, step])
        while True:
            yield sampler.sample(rng, opts.batch)
    loader = torch.utils.data.DataLoader(_BatchStream(sampler, opts.batch, opts.seed, step), batch_size=None,
                                         num_workers=opts.workers, prefetch_factor=4, persistent_workers=True)
    yield from loader


def train(opts: TrainOptions, on_step: Callable[[StepInfo], None] | None = None,
          stop: threading.Event | None = None) -> TrainResult:
    """Train (or resume) until ``opts.steps`` or until ``stop`` is set; returns the last checkpoint."""
    device = torch.device(opts.device)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "last.pth"
    state: dict[str, Any] | None = None
    if opts.resume and ckpt_path.is_file():
        try:
            state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        except Exception as exc:  # corrupt or foreign file
            raise ValueError(f"{ckpt_path} is not a readable RefNet checkpoint ({type(exc).__name__})") from exc
        if not isinstance(state, dict) or state.get("format") != CKPT_FORMAT:
            raise ValueError(f"{ckpt_path} is not a RefNet checkpoint")
        cfg = RefNetConfig.from_dict(state["config"])
        log.info("resuming from %s at step %d", ckpt_path, state["step"])
    else:
        if ckpt_path.is_file() and not opts.resume:
            raise FileExistsError(f"{ckpt_path} exists; pass --resume to continue it or choose another --out")
        cfg = get_config(opts.config, **opts.config_overrides)

    model = RefNet(cfg).to(device)
    if state is None and opts.init_from is not None:
        _init_from(model, Path(opts.init_from))
    opt = torch.optim.Adam(model.parameters(), lr=opts.lr, betas=(0.9, 0.99))
    weights = LossWeights(**opts.loss_overrides)
    disc = PatchDiscriminator().to(device) if weights.adv > 0 else None
    d_opt = torch.optim.Adam(disc.parameters(), lr=opts.disc_lr, betas=(0.5, 0.99)) if disc is not None else None
    step = 0
    run_steps = 0  # steps of this run (a run started --init-from counts from zero)
    if state is not None:
        model.load_state_dict(state["model"], strict=True)
        step = int(state["step"])
        run_steps = int(state.get("run_steps", step))
        _restore_adam(opt, state["adam_sq"], step, device)
        if disc is not None and "disc" in state:
            disc.load_state_dict(state["disc"], strict=True)
            _restore_adam(d_opt, state["disc_adam_sq"], run_steps, device)  # type: ignore[arg-type]
    ema = {k: v.detach().clone().float() for k, v in model.state_dict().items()}
    if state is not None:
        ema = {k: v.to(device).float() for k, v in state["ema"].items()}
    log.info("RefNet %s: %d parameters, device %s", opts.config, count_parameters(model), device)

    sampler, left_out = build_sampler(opts, cfg)
    features = None
    if opts.mobilefacenet is not None:
        embed, features = mobilefacenet_losses(Path(opts.mobilefacenet), device)
    elif opts.identity_embedder is not None:
        embed = own_identity_embedder(opts.identity_embedder, device)
    else:
        embed = find_identity_embedder(device)
    identity_loss = embed is not None
    log.info("hard-example identity loss: %s; feature loss: %s", "on" if identity_loss else "off (no identity embedder)",
             "on (MobileFaceNet)" if features is not None else "off")

    rng = np.random.default_rng([opts.seed, step, 1 << 20])  # fidelity draws
    batches = _batches(sampler, opts, step)
    torch.manual_seed(opts.seed * 1000003 + step)
    first_loss = math.nan
    last_loss = math.nan
    t_ckpt = t_export = time.monotonic()
    t_prev = time.monotonic()
    meta = {"config_name": opts.config, "identity_loss": identity_loss, "held_out": left_out,
            "held_out_rule": "refrestore.net.split.is_held_out"}
    model.train()
    t_start = time.monotonic()
    while step < opts.steps and not (stop is not None and stop.is_set()):
        if opts.max_seconds is not None and time.monotonic() - t_start >= opts.max_seconds:
            log.info("time limit of %.0f s reached at step %d", opts.max_seconds, step)
            break
        batch = next(batches).to(device)
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, opts)
        fid = None
        if cfg.fidelity:
            fid = torch.from_numpy(_sample_fidelity(rng, batch.lq.shape[0])).to(device)
        o = model(batch.lq, batch.refs, ref_prior=batch.ref_prior, need_aux=True, aligned=batch.aligned,
                  fidelity=fid)
        use_adv = disc is not None and run_steps >= opts.adv_start
        fake_logits = disc(o.out) if use_adv else None  # type: ignore[misc]
        loss, parts = total_loss(o, batch.gt, batch.refs, weights, embed, fidelity=fid, aligned=batch.aligned,
                                 fake_logits=fake_logits, features=features)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if disc is not None and d_opt is not None:
            # The discriminator trains from the start (on real faces against the outputs), so it
            # is already useful when the generator starts listening to it.
            real = at_size(batch.gt, 256)
            d_loss = d_hinge_loss(disc(real), disc(o.out.detach()))
            d_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            d_opt.step()
            parts["d"] = float(d_loss.detach())
        step += 1
        run_steps += 1
        decay = min(opts.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for k, v in model.state_dict().items():
                if v.is_floating_point():
                    ema[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
                else:
                    ema[k].copy_(v)
        last_loss = float(loss.detach())
        if math.isnan(first_loss):
            first_loss = last_loss
        now = time.monotonic()
        if on_step is not None:
            on_step(StepInfo(step, opts.steps, last_loss, parts, now - t_prev))
        t_prev = now
        if now - t_ckpt >= opts.ckpt_every_s:
            _save_checkpoint(ckpt_path, model, ema, opt, step, opts, identity_loss, last_loss, disc, d_opt, run_steps)
            t_ckpt = now
        if opts.export_path is not None and now - t_export >= opts.export_every_s:
            export_weights(ema, cfg, opts.export_path, {"step": step, **meta})
            t_export = now
    _save_checkpoint(ckpt_path, model, ema, opt, step, opts, identity_loss, last_loss, disc, d_opt, run_steps)
    if opts.export_path is not None:
        export_weights(ema, cfg, opts.export_path, {"step": step, **meta})
    return TrainResult(step, ckpt_path, first_loss, last_loss, identity_loss)


def main(argv: list[str] | None = None) -> int:
    """``python -m refrestore.training.train``: the training entry point for a bare machine (torch,
    numpy and OpenCV only: no typer, dlib, facexlib or spandrel), e.g. a lent GPU."""
    import argparse
    import json
    import sys

    ap = argparse.ArgumentParser(prog="python -m refrestore.training.train", description=main.__doc__)
    ap.add_argument("--data", type=Path, required=True, help="512 faces: a folder or a pack (.npz)")
    ap.add_argument("--extra-data", action="append", default=[], help="PATH:SIZE:WEIGHT (folder or pack)")
    ap.add_argument("--data-weight", type=float, default=1.0)
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="config KEY=VALUE")
    ap.add_argument("--loss", action="append", default=[], help="loss weight NAME=VALUE")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--init-from", type=Path)
    ap.add_argument("--steps", type=int, default=1_000_000)
    ap.add_argument("--max-seconds", type=float)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--mild-prob", type=float, default=0.3)
    ap.add_argument("--real-prob", type=float, default=0.0, help="share of samples with real photos' damage")
    ap.add_argument("--self-ref-prob", type=float, default=0.0)
    ap.add_argument("--ema-decay", type=float, default=0.999)
    ap.add_argument("--mobilefacenet", type=Path, help="MobileFaceNet weights: identity and feature losses")
    ap.add_argument("--extreme-prob", type=float, default=0.2)
    ap.add_argument("--no-ref-prob", type=float, default=0.2)
    ap.add_argument("--adv-start", type=int, default=300)
    ap.add_argument("--identity-embedder", type=Path)
    ap.add_argument("--ckpt-every", type=float, default=120.0)
    ap.add_argument("--export", type=Path)
    ap.add_argument("--workers", type=int, default=0)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)

    def kv(items: list[str], types: dict[str, type]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for item in items:
            k, _, v = item.partition("=")
            if k not in types:
                raise SystemExit(f"unknown key {k!r}; expected one of {', '.join(types)}")
            out[k] = v.lower() in ("1", "true", "yes", "on") if types[k] is bool else types[k](v)
        return out

    cfg_types = {f: type(v) for f, v in RefNetConfig().to_dict().items()}
    sources = []
    for item in a.extra_data:
        path, size, weight = item.rsplit(":", 2)
        sources.append(DataSource(Path(path), int(size), float(weight)))
    opts = TrainOptions(data=a.data, config=a.config, out=a.out, steps=a.steps, batch=a.batch, lr=a.lr,
                        device=a.device, resume=a.resume, init_from=a.init_from, threads=a.threads,
                        mild_prob=a.mild_prob, extreme_prob=a.extreme_prob, no_ref_prob=a.no_ref_prob,
                        real_prob=a.real_prob, self_ref_prob=a.self_ref_prob, ema_decay=a.ema_decay,
                        mobilefacenet=a.mobilefacenet,
                        adv_start=a.adv_start, identity_embedder=a.identity_embedder, ckpt_every_s=a.ckpt_every,
                        export_path=a.export, extra_data=tuple(sources), data_weight=a.data_weight,
                        config_overrides=kv(a.sets, cfg_types), loss_overrides={k: float(v) for k, v in
                                                                                (x.split("=", 1) for x in a.loss)},
                        max_seconds=a.max_seconds, workers=a.workers)
    stop = threading.Event()
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    t0 = time.monotonic()

    def on_step(info: StepInfo) -> None:
        if info.step % 50 == 0:
            log.info("step %d loss=%.4f %s (%.2f s/step)", info.step, info.loss,
                     " ".join(f"{k}={v:.4f}" for k, v in info.parts.items()), info.seconds_per_step)

    res = train(opts, on_step, stop)
    print(json.dumps({"step": res.step, "checkpoint": str(res.checkpoint), "first_loss": res.first_loss,
                      "last_loss": res.last_loss, "seconds": round(time.monotonic() - t0, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
