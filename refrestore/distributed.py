"""``fix`` on a Ray cluster, as one library call a notebook on the cluster can make.

    from refrestore.distributed import RayOptions, fix_dataset
    run = fix_dataset(["/archive/box1", "/archive/list.parquet", "s3://scans/box2"], "s3://scans/restored",
                      refs=["/archive/family"], cluster=RayOptions(gpus_per_worker=0.25))
    run.summary.counts()

The gallery is indexed here, on the driver (or read from ``REFRESTORE_HOME/cache``), then
shared read-only with every worker through Ray's object store.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Sequence

from .engines.inputs import expand_inputs
from .engines.photo import BatchOptions
from .engines.ray import INSTALL_HINT, PipelineSpec, RayEngineError, RayNotInstalled, RayOptions, RayRun, ReferencePlan, import_ray, run_ray
from .engines.remote import RemoteFile, find_remote_inputs, is_uri, listed_remote, plan_remote
from .engines.reports import ImageReport
from .engines.tasks import UsageError, plan_outputs

log = logging.getLogger(__name__)

__all__ = [
    "INSTALL_HINT", "PipelineSpec", "RayEngineError", "RayNotInstalled", "RayOptions", "RayRun",
    "ReferencePlan", "fix_dataset", "fix_tasks", "reference_plan",
]


def reference_plan(refs: Sequence[os.PathLike[str] | str], ref: os.PathLike[str] | str | None,
                   spec: PipelineSpec, notes: list[str] | None = None,
                   person: os.PathLike[str] | str | None = None) -> ReferencePlan | None:
    """Index the gallery once, here, in the form that goes to the workers."""
    if not refs and ref is None and person is None:
        return None
    from .api import build_references
    from .detection import init_detector
    from .devices import pick_device

    store = spec.store()
    # The driver of a GPU cluster is often a CPU machine; indexing runs wherever it is.
    dev = pick_device("cpu" if spec.device.startswith("cuda") else spec.device)
    det = init_detector(spec.detector, store, dev)
    source = build_references(refs, ref, det, store, dev, spec.top_k, notes, person=person)
    return ReferencePlan.of(source)


def fix_tasks(
    tasks: Sequence[Any],
    spec: PipelineSpec,
    *,
    refs: Sequence[os.PathLike[str] | str] = (),
    ref: os.PathLike[str] | str | None = None,
    options: BatchOptions | None = None,
    cluster: RayOptions | None = None,
    on_done: Callable[[Any, ImageReport], None] = lambda t, r: None,
    notes: list[str] | None = None,
    person: os.PathLike[str] | str | None = None,
) -> RayRun:
    """Planned tasks (``engines.plan_outputs``) on Ray, with the gallery indexed once here."""
    import_ray()  # say what to install before indexing anything
    plan = reference_plan(refs, ref, spec, notes, person)
    return run_ray(list(tasks), spec, plan, options or BatchOptions(), cluster or RayOptions(), on_done)


def plan_dataset(inputs: Sequence[os.PathLike[str] | str], output: os.PathLike[str] | str,
                 recursive: bool = False) -> tuple[list[Any], list[ImageReport]]:
    """(tasks, error reports of inputs that could not be read) for :func:`fix_dataset`; local
    paths and URIs of any pyarrow filesystem alike."""
    raw = [str(p) for p in inputs]
    out = str(output)
    local = [Path(p) for p in raw if not is_uri(p)]
    if not is_uri(out):
        for src in local:
            if src.is_dir() and os.path.realpath(src) == os.path.realpath(out):
                raise UsageError(f"the output folder {out} is the input folder: choose another output")
    listed: list[str] = []
    found, problems = expand_inputs(local, recursive=recursive, exclude=[] if is_uri(out) else [Path(out)], remote=listed)
    pre = [ImageReport(str(p), None, "error", reason) for p, reason in problems]
    remote_roots = [p for p in raw if is_uri(p)]
    tasks: list[Any]
    if is_uri(out) or remote_roots or listed:
        files = [RemoteFile(os.path.abspath(f.path), f.rel) for f in found]
        more, remote_problems = find_remote_inputs(remote_roots, recursive)
        files += more + listed_remote(listed)
        pre += [ImageReport(u, None, "error", reason) for u, reason in remote_problems]
        tasks = plan_remote(files, out if is_uri(out) else os.path.abspath(out))
    else:
        tasks = plan_outputs(found, Path(out), single_file=False)
    return tasks, pre


def fix_dataset(
    inputs: Sequence[os.PathLike[str] | str],
    output: os.PathLike[str] | str,
    *,
    refs: Sequence[os.PathLike[str] | str] = (),
    ref: os.PathLike[str] | str | None = None,
    spec: PipelineSpec | None = None,
    options: BatchOptions | None = None,
    cluster: RayOptions | None = None,
    recursive: bool = False,
    on_done: Callable[[Any, ImageReport], None] = lambda t, r: None,
    notes: list[str] | None = None,
) -> RayRun:
    """Restore every photo named by ``inputs`` into the folder ``output``, on Ray.

    ``inputs``: files, folders, and text/CSV/Parquet lists of paths; any of them, and
    ``output``, may be a URI of a filesystem pyarrow understands (``s3://bucket/scans``,
    ``gs://...``). Outputs are named as ``refrestore fix -o`` names them, and finished ones are
    skipped, so calling it again resumes.
    """
    spec = spec or PipelineSpec(with_detector=True)
    tasks, pre = plan_dataset(inputs, output, recursive=recursive)
    run = fix_tasks(tasks, spec, refs=refs, ref=ref, options=options, cluster=cluster, on_done=on_done, notes=notes)
    run.summary.images[:0] = pre
    return run
