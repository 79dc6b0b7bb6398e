"""The Ray engine: the same per-photo steps on a Ray cluster, through Ray Data ``map_batches``.

Each worker is a callable class that builds the pipeline (detector, identity model,
restorer) once and keeps it. The gallery is indexed once on the driver and reaches the
workers through the object store. Outputs are written by the workers, atomically, with the
names the local engine uses; the driver skips finished outputs, collects the per-image
reports in input order and reports progress. Ray restarts a worker that dies and redoes
its batch (atomic writes make a redone photo harmless).

Ray is an optional extra (``pip install 'refrestore[ray]'``); it is imported only here.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..discover import InputFile
from ..fileio import RECORDS, remove_stale_temp_files
from ..pipeline import FacePipeline, FixOptions
from .photo import BatchOptions
from .remote import RemoteTask, download, is_uri, split_finished_remote, upload
from .reports import BatchSummary, ImageReport, error_text
from .tasks import Task, split_finished

log = logging.getLogger(__name__)

INSTALL_HINT = "--engine ray needs Ray: pip install 'refrestore[ray]'"
# Environment a worker needs to find the same weights, cache and settings as the driver.
FORWARDED_ENV = ("REFRESTORE_HOME", "REFRESTORE_OFFLINE", "REFRESTORE_MAX_PIXELS")


class RayNotInstalled(RuntimeError):
    """Ray (the ``ray`` extra) is missing."""


class RayEngineError(RuntimeError):
    """The cluster could not be reached or the workers could not start (one line)."""


def import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401 - the Data library is a separate part of the wheel
    except ImportError as exc:
        raise RayNotInstalled(INSTALL_HINT) from exc
    return ray


@dataclass(frozen=True)
class PipelineSpec:
    """What a worker needs to build the same pipeline the driver would (names, not objects)."""

    model: str = "auto"
    detector: str = "auto"
    device: str = "auto"
    options: FixOptions = field(default_factory=FixOptions)
    top_k: int = 3
    weights_dir: str | None = None
    manifest: str | None = None
    with_detector: bool = True  # aligned crops without references need none

    def store(self) -> Any:
        from ..weights import WeightStore, load_manifest

        return WeightStore(Path(self.weights_dir) if self.weights_dir else None,
                           load_manifest(Path(self.manifest)) if self.manifest else None)

    def build(self, references: "ReferencePlan | None") -> FacePipeline:
        """The pipeline ``api.build_pipeline`` builds, with the driver's references."""
        from ..api import build_pipeline
        from ..detection import init_detector

        store = self.store()
        built = build_pipeline(model=self.model, detector=self.detector, device=self.device, options=self.options,
                               top_k=self.top_k, store=store)
        pipeline = built.pipeline
        if self.with_detector and pipeline.detector is None:  # aligned crops with references
            pipeline.detector = init_detector(self.detector, store, built.device)
        if references is not None:
            pipeline.references = references.source(store, built.device)
        return pipeline


@dataclass(frozen=True)
class ReferencePlan:
    """The driver's references in a form that pickles: an indexed gallery or one forced reference."""

    gallery: Any = None  # gallery.Gallery without its per-process helpers
    forced: Any = None  # faces.Reference
    top_k: int = 3
    threshold: float | None = None

    @classmethod
    def of(cls, source: Any) -> "ReferencePlan | None":
        from ..gallery import Gallery
        from ..references import ForcedReference, GalleryReferences

        if source is None:
            return None
        if isinstance(source, ForcedReference):
            return cls(forced=source.reference)
        if isinstance(source, GalleryReferences):
            g = source.gallery
            # The landmark fitter and derived tables are rebuilt where they are used.
            plain = Gallery(list(g.faces), list(g.problems), g.identity_name, g.identity_version, g.stats,
                            levels=g.levels)
            plain.declared = g.declared
            return cls(gallery=plain, top_k=source.top_k, threshold=source.threshold)
        raise TypeError(f"cannot send {type(source).__name__} to Ray workers")

    def source(self, store: Any, device: Any) -> Any:
        from ..identity import init_identity_model
        from ..references import ForcedReference, GalleryReferences

        if self.forced is not None:
            return ForcedReference(self.forced)
        identity = init_identity_model("auto", store=store, device=device)
        if identity.name != self.gallery.identity_name:
            raise RayEngineError(
                f"the gallery was indexed with {self.gallery.identity_name} but this worker has {identity.name}: "
                "give the workers the same weights (REFRESTORE_HOME on a shared filesystem)")
        return GalleryReferences(self.gallery, identity, top_k=self.top_k, threshold=self.threshold)


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide to run."""

    address: str | None = None  # None: Ray's default (RAY_ADDRESS, a local cluster, or a new one)
    workers: int | None = None  # None: as many as the cluster's CPUs (or GPUs) allow
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    photos_per_batch: int | None = None  # None: 4 with GPUs, 2 without
    num_cpus: int | None = None  # only when starting a new local Ray
    object_store_memory: int | None = None  # bytes, only when starting a new local Ray


@dataclass
class RayRun:
    """A finished (or stopped) run and what the workers reported about themselves."""

    summary: BatchSummary
    restorer: str | None = None
    detector: str | None = None
    device: str | None = None
    workers: int = 0
    gallery: Any = None  # the gallery indexed on the driver, when there is one


def group_images_for(pipeline: FacePipeline) -> int:
    # On a GPU the faces of several photos share one batch; on the CPU there is nothing to gain.
    return 4 if pipeline.restorer.device.type == "cuda" else 1


class PhotoWorker:
    """One Ray worker: builds the pipeline once, then runs the local engine over each batch."""

    def __init__(self, spec: PipelineSpec, references: tuple[Any, ...], options: BatchOptions) -> None:
        ray = import_ray()
        plan = ray.get(references[0]) if references else None  # wrapped, so Ray does not resolve it
        self.pipeline = spec.build(plan)
        # The driver has already skipped finished outputs; a batch redone after a worker died
        # rewrites its photos (same bytes), so its reports stay those of a first run.
        self.options = dataclasses.replace(options, skip_existing=False, group_images=group_images_for(self.pipeline))
        det = self.pipeline.detector
        self.names = (self.pipeline.restorer.info.name, getattr(det, "name", None), str(self.pipeline.restorer.device))

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        from .local import run_local

        rows = list(zip((int(i) for i in batch["index"]), (str(i) for i in batch["input"]), (str(r) for r in batch["rel"]), (str(o) for o in batch["output"])))
        out: dict[str, list[Any]] = {k: [] for k in ("index", "report", "seconds", "fatal", "restorer", "detector", "device")}
        with tempfile.TemporaryDirectory(prefix="refrestore-ray-") as stage:
            staged = _Staging(Path(stage))
            tasks: list[Task] = []
            reports: dict[int, ImageReport] = {}
            for index, inp, rel, outp in rows:
                try:
                    tasks.append(staged.task(index, inp, rel, outp))
                except Exception as exc:  # noqa: BLE001 - an unreadable remote input is one failed photo
                    reports[index] = ImageReport(inp, None, "error", f"cannot read {inp}: {error_text(exc)}")
            summary = run_local(tasks, self.pipeline, self.options, clean_temp=False)
            by_input = {r.input: r for r in summary.images}
            for index, inp, rel, outp in rows:
                if index in reports:
                    continue
                rep = by_input.get(str(Path(staged.local_input(index, inp))))
                if rep is not None:
                    reports[index] = staged.finish(index, inp, outp, rep)
        for index, inp, rel, outp in rows:
            rep = reports.get(index)
            if rep is None:  # not reached: the batch stopped at a fatal error
                continue
            out["index"].append(index)
            out["report"].append(json.dumps(rep.to_json()))
            out["seconds"].append(float(rep.seconds))
            out["fatal"].append(rep.error if summary.fatal and rep.error == summary.fatal else "")
            out["restorer"].append(self.names[0])
            out["detector"].append(self.names[1] or "")
            out["device"].append(self.names[2])
        return out


class _Staging:
    """Local copies of remote inputs, and uploads of the outputs made from them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def local_input(self, index: int, inp: str) -> str:
        return str(self.folder / "in" / str(index) / Path(inp.rsplit("/", 1)[-1])) if is_uri(inp) else inp

    def local_output(self, index: int, outp: str) -> str:
        return str(self.folder / "out" / str(index) / outp.rsplit("/", 1)[-1]) if is_uri(outp) else outp

    def task(self, index: int, inp: str, rel: str, outp: str) -> Task:
        local_in = self.local_input(index, inp)
        if local_in != inp:
            download(inp, Path(local_in))
        return Task(InputFile(Path(local_in), Path(rel)), Path(self.local_output(index, outp)))

    def finish(self, index: int, inp: str, outp: str, rep: ImageReport) -> ImageReport:
        """Upload what was written for this photo; the report names the URIs."""
        local_in, local_out = self.local_input(index, inp), self.local_output(index, outp)
        rep.input = inp
        if rep.error:
            rep.error = rep.error.replace(local_in, inp)
        if local_out == outp or rep.output is None:
            return rep
        try:
            made = Path(local_out).parent
            base = outp.rsplit("/", 1)[0]
            # the output and any face files (not the records of what was written in the staging folder)
            for f in sorted(q for q in made.rglob("*") if q.is_file() and RECORDS not in q.parts):
                upload(f, base + "/" + f.relative_to(made).as_posix())
            rep.output = outp
        except Exception as exc:  # noqa: BLE001 - one photo's upload must not stop the batch
            rep.status, rep.output, rep.error = "error", None, f"cannot write {outp}: {error_text(exc)}"
        return rep


def _connect(ray: Any, cluster: RayOptions) -> bool:
    """Connect to (or start) Ray; True when this call started it and should shut it down."""
    if ray.is_initialized():
        return False
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "runtime_env": {"env_vars": env},
                              # Ray's INFO lines would bury the driver's progress unless we are debugging.
                              "logging_level": logging.DEBUG if log.isEnabledFor(logging.DEBUG) else logging.WARNING}
    if cluster.address:
        kwargs["address"] = cluster.address
    elif not _local_cluster_alive():
        # A new Ray here: Ray itself would try, forever, to reach a local cluster that
        # died without `ray stop` (its address file is left behind).
        kwargs["address"] = "local"
    if kwargs.get("address") == "local":  # sizes only for a Ray this call starts
        if cluster.num_cpus is not None:
            kwargs["num_cpus"] = cluster.num_cpus
        if cluster.object_store_memory is not None:
            kwargs["object_store_memory"] = cluster.object_store_memory
    try:
        ray.init(**kwargs)
    except Exception as exc:  # noqa: BLE001 - ConnectionError, ValueError, RuntimeError...
        where = cluster.address or "a local Ray"
        hint = ""
        if cluster.address and "RAY_AUTH_MODE" not in os.environ:
            hint = " (a cluster with token authentication, Ray's default, needs RAY_AUTH_MODE=token here)"
        raise RayEngineError(f"cannot start or reach {where}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}{hint}") from exc
    return True


def _local_cluster_alive() -> bool:
    """Whether the environment or a cluster started on this machine (``ray start``) names a
    Ray that answers; ``RAY_ADDRESS`` is always taken as given."""
    if os.environ.get("RAY_ADDRESS"):
        return True
    try:
        from ray._private.utils import read_ray_address  # where `ray start` leaves its address

        address = read_ray_address()
    except Exception:  # noqa: BLE001 - a private helper; without it, let Ray decide
        return True
    if not address:
        return False
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except (OSError, ValueError):
        return False


def _worker_count(ray: Any, cluster: RayOptions, todo: int) -> int:
    if cluster.workers is not None:
        n = cluster.workers
    else:
        res = ray.cluster_resources()
        if cluster.gpus_per_worker > 0:
            n = int(res.get("GPU", 0) // cluster.gpus_per_worker)
            if n == 0:  # the workers would wait for GPUs forever
                raise RayEngineError(f"the Ray cluster has {res.get('GPU', 0):g} GPUs, too few for workers of "
                                     f"{cluster.gpus_per_worker:g} GPU; give --workers N to wait for an autoscaler to add them")
        else:
            n = int(res.get("CPU", 1) // max(cluster.cpus_per_worker, 1e-6))
    return max(1, min(n, todo))


def run_ray(
    tasks: "list[Task] | list[RemoteTask] | list[Task | RemoteTask]",
    spec: PipelineSpec,
    references: ReferencePlan | None,
    options: BatchOptions,
    cluster: RayOptions,
    on_done: Callable[[Any, ImageReport], None] = lambda t, r: None,
) -> RayRun:
    """Process every task on Ray; reports come back in input order, as ``run_local``'s do.

    ``RemoteTask`` inputs and outputs are URIs of any filesystem pyarrow understands.

    Ctrl-C or SIGTERM (KeyboardInterrupt) stops the run: finished outputs are complete, and
    the same call again does the rest.
    """
    ray = import_ray()
    summary = BatchSummary()
    run = RayRun(summary, gallery=references.gallery if references is not None else None)
    # Temporary files of a killed run are removed before any worker of this run can write.
    local = [t for t in tasks if isinstance(t, Task)]
    for folder in sorted({t.output.parent for t in local}):
        if folder.is_dir():
            remove_stale_temp_files(folder)
    todo_local, finished = split_finished(local, options.skip_existing)
    todo_remote, finished_remote = split_finished_remote([t for t in tasks if isinstance(t, RemoteTask)], options.skip_existing)
    todo: list[Task | RemoteTask] = [*todo_local, *todo_remote]
    finished = [*finished, *finished_remote]
    for t, rep in finished:
        summary.images.append(rep)
        on_done(t, rep)
    if not todo:
        return run
    started = _connect(ray, cluster)
    reports: dict[int, ImageReport] = {}
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # the driver shows its own
        workers = run.workers = _worker_count(ray, cluster, len(todo))
        per_batch = cluster.photos_per_batch or (4 if cluster.gpus_per_worker > 0 else 2)
        plan_ref = (ray.put(references),) if references is not None else ()
        rows = [{"index": i, "input": str(t.source.path), "rel": str(t.source.rel), "output": str(t.output)} for i, t in enumerate(todo)]
        # Small blocks so that the work spreads over every worker and a redone batch is short.
        ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), (len(rows) + per_batch - 1) // per_batch)))
        remote: dict[str, Any] = {"num_cpus": cluster.cpus_per_worker}
        if cluster.gpus_per_worker > 0:
            remote["num_gpus"] = cluster.gpus_per_worker
        out = ds.map_batches(
            PhotoWorker,
            fn_constructor_args=(spec, plan_ref, options),
            batch_size=per_batch,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=workers),
            **remote,
        )
        for row in out.iter_rows():
            i = int(row["index"])
            rep = ImageReport.from_json(json.loads(row["report"]), float(row["seconds"]))
            reports[i] = rep
            run.restorer, run.detector, run.device = str(row["restorer"]), str(row["detector"]) or None, str(row["device"])
            on_done(todo[i], rep)
            if row["fatal"]:
                summary.fatal = str(row["fatal"])
                break
    except KeyboardInterrupt:
        summary.interrupted = True
    except (RayNotInstalled, RayEngineError):
        raise
    except Exception as exc:  # noqa: BLE001 - Ray's errors carry whole remote tracebacks
        log.debug("Ray run failed", exc_info=True)
        summary.fatal = _ray_error_line(exc)
    finally:
        if started:
            ray.shutdown()
    summary.images.extend(reports[i] for i in sorted(reports))
    return run


def _ray_error_line(exc: BaseException) -> str:
    """The innermost one-line cause of a Ray error (a worker's exception, not Ray's wrapping)."""
    cause: BaseException = exc
    while getattr(cause, "cause", None) is not None and isinstance(getattr(cause, "cause"), BaseException):
        cause = cause.cause  # type: ignore[attr-defined]
    while cause.__cause__ is not None:
        cause = cause.__cause__
    text = error_text(cause)
    for line in str(cause).splitlines():
        if line.strip() and not line.startswith((" ", "Traceback", "ray::")):
            text = line.strip()
    return f"Ray: {text}"
