"""Files the user already has, added as a named model (``download-weights NAME --from-file FILE``).

Such a file is of the right architecture but not the published bytes (another training run,
a converted copy), so it would fail the manifest's size or sha256. After a strict load into
the architecture it is copied into the weights folder and its own size and hash are recorded
in ``user_added.json``; the store then accepts exactly that file, and ``models`` says so.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..weights.errors import WeightsError
from ..weights.manifest import ManifestEntry
from ..weights.store import WeightStore, file_lock, sha256_file
from .architectures import check_architecture

USER_ADDED = "user_added.json"


@dataclass(frozen=True)
class UserAdded:
    """The outcome of adding one file."""

    name: str  # the manifest file name it now stands in for
    models: list[str]
    path: Path  # where it was installed
    source: Path
    sha256: str
    size: int
    architecture: str
    published: bool = False  # the manifest's own published bytes (not recorded as user-added)


def resolve_one(store: WeightStore, name: str) -> ManifestEntry:
    """The single manifest file a file or model name stands for."""
    entries = store.manifest.resolve([name])
    if len(entries) != 1:
        files = ", ".join(e.name for e in entries)
        raise WeightsError(f"{name} has several files ({files}): name the file to add")
    return entries[0]


def identify_file(store: WeightStore, source: Path, sha256: str) -> ManifestEntry:
    """The manifest file ``source`` is, when the user did not name it: the entry whose published
    sha256 it has, else the entry of the same file name."""
    for entry in store.manifest.entries:
        if entry.sha256 == sha256 and not entry.embedded:
            return entry
    by_name = store.manifest.get(source.name)
    if by_name is not None and not by_name.embedded:
        return by_name
    raise WeightsError(f"--from-file {source}: not a published file of the manifest and not named like one; "
                       "name the model or file it is (see `refrestore models`)")


def add_user_file(store: WeightStore, name: str | None, source: Path, *, replace: bool = False) -> UserAdded:
    """Install ``source`` as ``name`` (None: the manifest file it is, by hash or file name).

    A file with the published size and sha256 is installed as the published file. Any other file
    must load strictly into the architecture and is recorded as user-added. A verified published
    copy already in place is kept unless ``replace``; the source file is only read.
    """
    source = Path(source).expanduser()
    if not source.is_file():
        raise WeightsError(f"--from-file {source}: no such file")
    sha = sha256_file(source)
    entry = resolve_one(store, name) if name is not None else identify_file(store, source, sha)
    target = store.path(entry.name)
    published = entry.sha256 == sha and (entry.size is None or entry.size == source.stat().st_size)
    if not replace and not published:
        present = None
        with contextlib.suppress(WeightsError):
            present = store.find(entry.name)
        if present is not None and store.user_added(entry.name) is None:
            raise WeightsError(
                f"a verified copy of {entry.name} is already in {store.directory}; add --force to replace it with {source}"
            )
    architecture = "published file, sha256 verified" if published else check_architecture(entry, source)
    try:
        store.directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(f"cannot create {store.directory}: {exc.strerror or exc}") from None
    with file_lock(target.with_name(target.name + ".lock")):
        fd, tmp = tempfile.mkstemp(prefix=f".{entry.name}.", suffix=".tmp", dir=store.directory)
        try:
            with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o644)
            sha = sha256_file(Path(tmp))
            size = Path(tmp).stat().st_size
            if published:
                # The published bytes: checked against the manifest like a download, so an
                # earlier user-added record for this name no longer applies.
                store.forget_user_added(entry.name)
            else:
                # The record comes first: a reader that sees the new file also finds its hash.
                store.record_user_added(entry, sha, size, source=str(source.absolute()), architecture=architecture,
                                        added=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    store.remember_verified(target, sha)
    return UserAdded(entry.name, list(entry.models), target, source, sha, size, architecture, published)
