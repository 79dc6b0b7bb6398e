"""Inputs and outputs on any filesystem pyarrow understands: ``s3://``, ``gs://``, ``hdfs://``, ``file://``.

A Ray worker copies a remote input into a folder of its own, runs the local steps on it, and
uploads the output under its final name: written to a hidden name beside it and moved into
place where the filesystem can rename, written in one piece on object stores (an S3 or GCS
object appears only once complete). Reports name the URIs, never the worker's copies.
"""
from __future__ import annotations

import os
import posixpath
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ..discover import IMAGE_EXTENSIONS, TEMP_PREFIX
from .reports import ImageReport
from .tasks import OUTPUT_SUFFIX, UsageError

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_CHUNK = 8 << 20


def is_uri(text: str) -> bool:
    return bool(_URI.match(str(text)))


def _fs(uri: str) -> tuple[Any, str]:
    try:
        import pyarrow.fs as pafs
    except ImportError as exc:
        raise UsageError(f"{uri}: remote paths need pyarrow: pip install 'refrestore[ray]'") from exc
    try:
        return pafs.FileSystem.from_uri(uri)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError...
        raise UsageError(f"{uri}: {exc}".splitlines()[0]) from exc


def _join(base: str, rel: str) -> str:
    return base.rstrip("/") + "/" + rel.lstrip("/")


@dataclass(frozen=True)
class RemoteFile:
    """An input by URI; ``rel`` is its path below the input root, for mirroring."""

    path: str
    rel: Path


@dataclass(frozen=True)
class RemoteTask:
    source: RemoteFile
    output: str


def find_remote_inputs(uris: Iterable[str], recursive: bool) -> tuple[list[RemoteFile], list[tuple[str, str]]]:
    """Image files (by extension: content sniffing would read every object) under each URI.

    A URI that names a file is an input whatever its extension (reading it will say what it is).
    """
    import pyarrow.fs as pafs

    found: list[RemoteFile] = []
    problems: list[tuple[str, str]] = []
    for uri in uris:
        fs, path = _fs(uri)
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            problems.append((uri, "no such file or folder"))
        elif info.type == pafs.FileType.File:
            found.append(RemoteFile(uri, Path(posixpath.basename(path))))
        else:
            prefix = uri.rstrip("/")
            infos = fs.get_file_info(pafs.FileSelector(path, recursive=recursive))
            files = sorted((i for i in infos if i.type == pafs.FileType.File), key=lambda i: i.path)
            for i in files:
                rel = posixpath.relpath(i.path, path)
                if any(part.startswith(".") for part in rel.split("/")):
                    continue
                if posixpath.splitext(rel)[1].lower() in IMAGE_EXTENSIONS:
                    found.append(RemoteFile(_join(prefix, rel), Path(rel)))
    return found, problems


def plan_remote(inputs: list[RemoteFile], output: str, suffix: str = OUTPUT_SUFFIX) -> list[RemoteTask]:
    """Outputs under the URI ``output`` with the names ``plan_outputs`` gives local ones."""
    from ..imageio import output_ext_for_path  # numpy: not on every start of fix (is_uri)

    tasks = []
    for src in inputs:
        rel = src.rel.parent / (src.rel.stem + suffix)
        name = rel.with_suffix(output_ext_for_path(Path(src.rel.name))).as_posix()
        tasks.append(RemoteTask(src, _join(output, name)))
    inputs_set = {t.source.path for t in tasks}
    seen: set[str] = set()
    for t in tasks:
        if t.output in inputs_set:
            raise UsageError(f"refusing to overwrite the input {t.source.path}")
        if t.output in seen:
            raise UsageError(f"two inputs would both be written to {t.output}")
        seen.add(t.output)
    return tasks


def existing(uris: list[str]) -> set[str]:
    """Those of ``uris`` that exist (one listing call per filesystem)."""
    import pyarrow.fs as pafs

    out: set[str] = set()
    by_fs: dict[str, list[str]] = {}
    for u in uris:
        by_fs.setdefault(u.split("://", 1)[0] + "://" + u.split("://", 1)[1].split("/", 1)[0], []).append(u)
    for group in by_fs.values():
        fs, _ = _fs(group[0])
        paths = [_fs(u)[1] for u in group]
        for u, info in zip(group, fs.get_file_info(paths)):
            if info.type != pafs.FileType.NotFound:
                out.add(u)
    return out


def split_finished_remote(tasks: list[RemoteTask], skip_existing: bool) -> tuple[list[RemoteTask], list[tuple[RemoteTask, ImageReport]]]:
    if not skip_existing:
        return list(tasks), []
    there = existing([t.output for t in tasks])
    todo = [t for t in tasks if t.output not in there]
    done = [(t, ImageReport(t.source.path, t.output, "skipped", None)) for t in tasks if t.output in there]
    return todo, done


def download(uri: str, local: Path) -> None:
    fs, path = _fs(uri)
    local.parent.mkdir(parents=True, exist_ok=True)
    with fs.open_input_stream(path) as src, open(local, "wb") as dst:
        shutil.copyfileobj(src, dst, _CHUNK)


def upload(local: Path, uri: str) -> None:
    """Put ``local`` at ``uri`` so that it appears complete or not at all."""
    fs, path = _fs(uri)
    parent = posixpath.dirname(path)
    if parent:
        fs.create_dir(parent, recursive=True)
    object_store = type(fs).__name__ in ("S3FileSystem", "GcsFileSystem", "AzureFileSystem")
    target = path if object_store else posixpath.join(parent, f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}{posixpath.splitext(path)[1]}")
    try:
        with open(local, "rb") as src, fs.open_output_stream(target) as dst:
            shutil.copyfileobj(src, dst, _CHUNK)
        if target != path:
            fs.move(target, path)
    except BaseException:
        if target != path:
            try:
                fs.delete_file(target)
            except Exception:  # noqa: BLE001 - the original error matters
                pass
        raise


def listed_remote(uris: list[str]) -> list[RemoteFile]:
    """URIs from a list of inputs, mirrored relative to the deepest folder holding them all."""
    if not uris:
        return []
    parents = [u.rsplit("/", 1)[0] for u in uris]
    root = parents[0]
    for p in parents[1:]:
        while not (p == root or p.startswith(root + "/")):
            root = root.rsplit("/", 1)[0]
    return [RemoteFile(u, Path(u[len(root):].lstrip("/"))) for u in uris]
