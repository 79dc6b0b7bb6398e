"""``refrestore train`` and ``refrestore eval``: train RefNet and measure restorers on refbench-style data."""
from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Optional

import typer

log = logging.getLogger(__name__)


def _fail(msg: str, code: int = 1) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


def _parse_overrides(items: list[str]) -> dict[str, Any]:
    from ..net.arch import RefNetConfig

    types = {f: type(v) for f, v in RefNetConfig().to_dict().items()}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, val = item.partition("=")
        key = key.strip()
        if not sep or key not in types:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE with KEY one of {', '.join(types)}")
        if types[key] is bool:
            low = val.strip().lower()
            if low not in {"1", "0", "true", "false", "yes", "no", "on", "off"}:
                raise ValueError(f"--set {item!r}: expected a boolean")
            out[key] = low in {"1", "true", "yes", "on"}
        else:
            out[key] = types[key](val)
    return out


def _parse_source(item: str) -> Any:
    from ..training.train import DataSource

    path, _, rest = item.rpartition(":")
    path2, _, size = path.rpartition(":")
    try:
        src = DataSource(Path(path2), int(size), float(rest))
    except ValueError:
        raise ValueError(f"--extra-data {item!r}: expected PATH:SIZE:WEIGHT") from None
    if not src.path.is_dir() or src.size < 16 or src.weight < 0:
        raise ValueError(f"--extra-data {item!r}: expected an existing folder, a size >= 16 and a weight >= 0")
    return src


def _parse_loss_weights(items: list[str]) -> dict[str, float]:
    from dataclasses import fields

    from ..training.losses import LossWeights

    names = [f.name for f in fields(LossWeights)]
    out: dict[str, float] = {}
    for item in items:
        key, sep, val = item.partition("=")
        try:
            if not sep or key not in names:
                raise ValueError
            out[key] = float(val)
        except ValueError:
            raise ValueError(f"--loss {item!r}: expected NAME=VALUE with NAME one of {', '.join(names)}") from None
    return out


def train_command(
    data: Path = typer.Option(..., "--data", help="Folder of <person>/<n>.png aligned faces (or a refbench folder)."),
    config: str = typer.Option("tiny", "--config", help="Network size: tiny (CPU, embedded), small, full (GPU)."),
    out: Path = typer.Option(Path("runs/refnet"), "--out", help="Run folder for checkpoints (last.pth)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from RUN/last.pth."),
    steps: int = typer.Option(1000, "--steps", min=1, help="Total steps to reach."),
    batch: int = typer.Option(4, "--batch", min=1, help="Samples per training step."),
    lr: float = typer.Option(2e-4, "--lr", help="Learning rate (Adam)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads for torch."),
    exclude: list[str] = typer.Option([], "--exclude", help="Person folder to hold out (repeatable)."),
    max_refs: int = typer.Option(3, "--max-refs", min=1, help="At most this many references per training sample."),
    extreme_prob: float = typer.Option(0.25, "--extreme-prob", min=0.0, max=1.0,
                                       help="Share of samples degraded up to the extreme preset."),
    mild_prob: float = typer.Option(0.0, "--mild-prob", min=0.0, max=1.0,
                                    help="Share of samples degraded only mildly (up to the moderate preset)."),
    real_prob: float = typer.Option(0.0, "--real-prob", min=0.0, max=1.0,
                                    help="Share of samples with the damage of real photos (JPEG at the small size, "
                                         "shake and defocus, halftone, scan lines, faded prints)."),
    no_ref_prob: float = typer.Option(0.15, "--no-ref-prob", min=0.0, max=1.0,
                                      help="Share of batches trained without references."),
    self_ref_prob: float = typer.Option(0.0, "--self-ref-prob", min=0.0, max=1.0,
                                        help="Share of reference slots filled with a jittered copy of the target."),
    export: Optional[Path] = typer.Option(None, "--export", help="Also export EMA weights here every 10 minutes."),
    ckpt_every: float = typer.Option(120.0, "--ckpt-every", help="Seconds between checkpoints."),
    ema_decay: float = typer.Option(0.999, "--ema-decay", min=0.0, max=1.0, help="EMA decay of the exported weights."),
    seed: int = typer.Option(0, "--seed", help="Random seed (data order, degradations, initial weights)."),
    set_: list[str] = typer.Option([], "--set", help="Config override KEY=VALUE, e.g. --set recon=false."),
    init_from: Optional[Path] = typer.Option(None, "--init-from",
                                             help="Start a new run from these weights (e.g. to add --set aligned=true)."),
    extra_data: list[str] = typer.Option([], "--extra-data",
                                         help="Another face folder as PATH:SIZE:WEIGHT, e.g. ../shared/data/faces:256:3 (repeatable)."),
    data_weight: float = typer.Option(1.0, "--data-weight", min=0.0, help="Weight of --data among the sources."),
    identity_embedder: Optional[Path] = typer.Option(None, "--identity-embedder",
                                                     help="Identity embedder weights for the hard-example identity loss (models/faceid_small.pth)."),
    mobilefacenet: Optional[Path] = typer.Option(None, "--mobilefacenet",
                                                 help="Pretrained MobileFaceNet weights (mobilefacenet.pt): identity and feature losses."),
    loss: list[str] = typer.Option([], "--loss", help="Loss weight NAME=VALUE, e.g. --loss adv=0 (repeatable)."),
    adv_start: int = typer.Option(300, "--adv-start", min=0, help="Steps of this run before the adversarial loss starts."),
) -> None:
    """Train the reference-guided network (resumable; Ctrl-C saves a checkpoint)."""
    from ..devices import DeviceError, pick_device
    from ..net.arch import CONFIGS
    from ..training.data import DataError
    from ..training.train import StepInfo, TrainOptions, train

    if config not in CONFIGS:
        _fail(f"--config {config!r}: expected one of {', '.join(CONFIGS)}", 2)
    try:
        dev = pick_device(device)
        overrides = _parse_overrides(set_)
    except (DeviceError, ValueError) as e:
        _fail(str(e), 2)
    if not data.is_dir():
        _fail(f"--data {data}: folder not found", 2)
    if init_from is not None and not init_from.is_file():
        _fail(f"--init-from {init_from}: file not found", 2)
    try:
        sources = tuple(_parse_source(x) for x in extra_data)
        loss_weights = _parse_loss_weights(loss)
    except ValueError as e:
        _fail(str(e), 2)
    if identity_embedder is not None and not identity_embedder.is_file():
        _fail(f"--identity-embedder {identity_embedder}: file not found", 2)
    if mobilefacenet is not None and not mobilefacenet.is_file():
        _fail(f"--mobilefacenet {mobilefacenet}: file not found", 2)
    _gate([("--export", export), ("the checkpoint (--out)", out / "last.pth")],
          protect=[("--init-from", [p for p in (init_from, identity_embedder, mobilefacenet) if p is not None])],
          folders=[("--data", data), *(("--extra-data", s.path) for s in sources)])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    opts = TrainOptions(data=data, config=config, out=out, steps=steps, batch=batch, lr=lr, device=str(dev),
                        resume=resume, seed=seed, exclude=tuple(exclude), max_refs=max_refs,
                        extreme_prob=extreme_prob, no_ref_prob=no_ref_prob, self_ref_prob=self_ref_prob,
                        mild_prob=mild_prob, real_prob=real_prob, mobilefacenet=mobilefacenet,
                        ckpt_every_s=ckpt_every, export_path=export, ema_decay=ema_decay, threads=threads,
                        config_overrides=overrides, init_from=init_from, extra_data=sources,
                        data_weight=data_weight, identity_embedder=identity_embedder,
                        loss_overrides=loss_weights, adv_start=adv_start)
    stop = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        stop.set()

    old = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    interactive = sys.stderr.isatty()
    try:
        if interactive:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            with Progress(TextColumn("[bold]train"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                          TextColumn("{task.fields[losses]}"), TimeRemainingColumn(), transient=False) as prog:
                task = prog.add_task("train", total=steps, losses="")

                def on_step(info: StepInfo) -> None:
                    losses = " ".join(f"{k}={v:.4f}" for k, v in info.parts.items())
                    prog.update(task, completed=info.step, losses=f"loss={info.loss:.4f} {losses}")

                result = train(opts, on_step, stop)
        else:
            def on_step(info: StepInfo) -> None:
                if info.step % 25 == 0 or info.step in (1, info.total):
                    losses = " ".join(f"{k}={v:.4f}" for k, v in info.parts.items())
                    log.info("step %d/%d loss=%.4f %s (%.2f s/step)", info.step, info.total, info.loss, losses,
                             info.seconds_per_step)

            result = train(opts, on_step, stop)
    except (DataError, FileExistsError, ValueError) as e:
        _fail(str(e), 2)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    typer.echo(f"step {result.step}: checkpoint {result.checkpoint} (loss {result.first_loss:.4f} -> "
               f"{result.last_loss:.4f}; identity loss {'on' if result.identity_loss else 'off'})")


def _gate(writes: list[tuple[str, Optional[Path]]], *, protect: list[tuple[str, list[Path]]] = (),  # type: ignore[assignment]
          folders: Any = (), streams: bool = False) -> Any:
    """The one gate (``engines.clash``) before any work: never on a photo of the data sets the
    run reads (nor inside them), an input, or a file refrestore did not write (a training run's
    own checkpoint is its to replace: ``train`` refuses it without --resume)."""
    from ..engines.clash import ClashError, check_writes

    try:
        return check_writes(writes, protect=protect, protect_folders=list(folders), streams=streams,
                            may_replace=lambda p: p.name == "last.pth")
    except ClashError as exc:
        _fail(str(exc), 2)


def _build_model(model: str, weights: Optional[Path], device: str, weights_dir: Optional[Path]) -> Any:
    """A Restorer from --weights (a RefNet file) or --model (a registry name)."""
    from ..devices import pick_device

    dev = pick_device(device)
    if weights is not None:
        from ..restorers.refnet import RefNetRestorer

        if not weights.is_file():
            raise ValueError(f"--weights {weights}: file not found")
        return RefNetRestorer.from_file(weights, dev, half=dev.type == "cuda")
    from ..restorers.registry import build_restorer, choose_restorer
    from ..weights import WeightStore

    store = WeightStore(weights_dir)
    choice = choose_restorer(model, store)
    return build_restorer(choice.spec, store, dev)


def _fmt_row(name: str, s: Any) -> list[str]:
    return [name, f"{s.psnr:.2f}", f"{s.ssim:.4f}", f"{s.id_dist:.4f}", f"{s.hf_ratio:.3f}", f"{s.hf_corr:.3f}"]


def eval_command(
    data: Path = typer.Option(..., "--data", help="Folder of <person>/<n>.png aligned faces (or a refbench folder)."),
    preset: str = typer.Option("severe", "--preset", help="Degradation: moderate, severe or extreme."),
    model: str = typer.Option("refnet-small", "--model", help="Restorer name (see 'refrestore fix --help')."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Evaluate a RefNet weights/checkpoint file instead."),
    top_k: Optional[int] = typer.Option(None, "--top-k", min=1, help="Use only the K references most like the input."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the report as JSON here."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="At most N photos per person."),
    person: list[str] = typer.Option([], "--person", help="Only this person folder (repeatable)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    weights_dir: Optional[Path] = typer.Option(None, "--weights-dir", help="Folder of downloaded weights."),
    size: int = typer.Option(512, "--size", min=16, help="Evaluation size S: 512 for refbench, 256 for faces."),
    split: str = typer.Option("all", "--split", help="People: all, held-out or train (refrestore.net.split)."),
    fidelity: Optional[float] = typer.Option(None, "--fidelity", min=0.0, max=1.0,
                                             help="Fidelity for networks that take it and for the reference detail stage (0 = most detail, 1 = closest to the input)."),
    detail: bool = typer.Option(True, "--detail/--no-detail", help="Run the reference detail stage after the restorer, as fix does (default), or score the restorer alone."),
) -> None:
    """Hold out each photo, degrade it, restore it with and without references; PSNR, SSIM, identity distance."""
    import json

    from rich.console import Console
    from rich.table import Table

    from ..training.data import DataError
    from ..net.degrade import PRESETS
    from ..training.evaluate import evaluate

    if preset not in PRESETS:
        _fail(f"--preset {preset!r}: expected one of {', '.join(PRESETS)}", 2)
    if not data.is_dir():
        _fail(f"--data {data}: folder not found", 2)
    if json_path is not None:
        json_path = _gate([("--json", json_path)], protect=[("--weights", [weights] if weights else [])],
                          folders=[("--data", data)], streams=True).destination(json_path)
    try:
        restorer = _build_model(model, weights, device, weights_dir)
    except Exception as e:  # noqa: BLE001 - one clear line
        _fail(str(e).splitlines()[0] if str(e) else type(e).__name__, 2)
    err = Console(stderr=True)
    try:
        with err.status("evaluating") as status:
            report = evaluate(restorer, data, preset, top_k=top_k, limit=limit, people=person or None,
                              model_name=str(weights) if weights else model,
                              on_photo=lambda i, n: status.update(f"evaluating {i}/{n}"),
                              size=size, split=split, fidelity=fidelity, detail=detail)
    except (DataError, ValueError) as e:
        _fail(str(e), 2)
    table = Table(title=f"{report.model_name} on {data} ({preset}, {split} people at {size}, top-k {top_k or 'all'}, "
                        f"{report.rows['model'].n} photos)")
    for col in ("person", "row", "PSNR", "SSIM", "id dist", "hf_ratio", "hf_corr"):
        table.add_column(col)
    for p, rows in report.per_person.items():
        for name, s in rows.items():
            table.add_row(p, *_fmt_row(name, s))
    for name, s in report.rows.items():
        table.add_row("all", *_fmt_row(name, s), style="bold")
    Console(highlight=False).print(table)
    if json_path is not None:
        from ..report.json import write_text_atomic

        write_text_atomic(json_path, json.dumps(report.to_json(), indent=2))


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
    app.command("eval")(eval_command)
