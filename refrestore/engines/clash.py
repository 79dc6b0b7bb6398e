"""The one gate every path a command writes goes through, decided before any work.

Every file a run writes (outputs, face crops, compare sheets, reports, the HTML report's image
folder, match's contact sheets, ``eval``/``gallery`` JSON, ``train`` checkpoints and exports)
is checked here, after ``realpath``, so a symlink or a ``..`` cannot slip past:

- never on an input, a reference, a data photo (or inside a data folder the run reads), or
  another file of the same run;
- an existing file is replaced only when refrestore wrote it (``fileio`` records it) or it is
  empty; an existing folder is written into only when refrestore made it or it is empty, and
  never through a symbolic link;
- a stream (``-``, ``/dev/stdout``, ``/dev/fd/N``), a character device or a FIFO is written
  through: a FIFO is opened now (one nobody reads is refused now, not after the album) and
  kept open, so :meth:`WritePlan.destination` hands the writer ``/dev/fd/N``;
- a path that could never be written (a regular file among its folders, a broken link, a
  folder without write permission) is refused too.

A refusal is :class:`ClashError`, one line naming both files; the CLI exits 2 with it.
"""
from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..fileio import final_target, stream_fd, written_by_refrestore

_COMPARE = re.compile(r"(.*)_compare_face\d+\.jpg")


class ClashError(ValueError):
    """A file of the run would land on something the user owns, or can never be written (exit 2)."""


def _real(path: Path) -> str:
    return os.path.realpath(path)


def _inside(key: str, folder: str) -> bool:
    return key == folder or key.startswith(folder.rstrip(os.sep) + os.sep)


def path_problem(path: Path) -> str | None:
    """Why nothing could ever be created at ``path`` (None: it can): found before any work."""
    if path.is_dir():
        return "is a folder; give a file name"
    parent = path.parent
    # The nearest ancestor that exists must be a folder we can create the rest in.
    while not parent.exists():
        if parent.is_symlink():
            return f"{parent} is a broken symbolic link"
        if parent == parent.parent:
            break
        parent = parent.parent
    if not parent.is_dir():
        return f"{parent} is not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot write in {parent}"
    return None


def report_path_problem(path: Path, html: bool = False) -> str | None:
    """:func:`path_problem` of a report (``html``: and of its images folder)."""
    problem = path_problem(path) if stream_fd(path) is None else None
    if problem is None and html:
        from ..report.html import files_folder

        folder = files_folder(final_target(path))
        if folder.exists() and not folder.is_dir():
            return f"its images folder {folder} exists and is not a folder"
    return problem


@dataclass
class WritePlan:
    """What a run owns (``protect``) and what it will write (``files``, ``folders``)."""

    protected: dict[str, str] = field(default_factory=dict)  # realpath -> "the input X"
    protected_folders: dict[str, str] = field(default_factory=dict)  # nothing is written inside these
    files: dict[str, str] = field(default_factory=dict)  # realpath -> "--json X"
    folders: dict[str, str] = field(default_factory=dict)  # realpath -> "the faces folder X"
    # (folder realpath, output stem) of outputs whose compare sheets sit beside them
    compare_stems: dict[tuple[str, str], str] = field(default_factory=dict)
    opened: dict[str, Path] = field(default_factory=dict)  # a FIFO's path -> /dev/fd/N, held open

    def protect(self, paths: Iterable[Path], what: str) -> None:
        for p in paths:
            self.protected.setdefault(_real(p), f"{what} {p}")

    def protect_folder(self, folder: Path, what: str) -> None:
        """Nothing may be written inside ``folder`` (a data set the run reads)."""
        self.protected_folders.setdefault(_real(folder), f"{what} {folder}")

    def destination(self, path: Path | None) -> Path | None:
        """The path a writer should be given for ``path``: ``/dev/fd/N`` for a FIFO opened here."""
        if path is None:
            return None
        return self.opened.get(os.fspath(path), path)

    def write_file(self, path: Path, what: str, *, stream: bool = True,
                   may_replace: Callable[[Path], bool] | None = None, usable: bool = True) -> None:
        """Plan a file at ``path``. ``stream``: a stream, device or FIFO may take it (a report,
        one photo's output); ``may_replace``: also let an existing file be replaced when it
        says so (a training run's own checkpoint on ``--resume``); ``usable``: refuse now a path
        that can never be written (a photo's output that cannot be written is that photo's
        error in the report instead, and the album goes on)."""
        name = f"{what} {path}"
        if stream_fd(path) is not None:
            self._check_stream(path, name, stream)
            return
        try:
            st = os.stat(path)  # follows links: a link to /dev/null is /dev/null
        except OSError:
            st = None
        if st is not None and not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode):
            self._check_special(path, st, name, stream)
            return
        target = final_target(path)
        key = _real(target)
        self._check_file(key, name)
        problem = path_problem(target) if usable else None
        if problem is not None:
            raise ClashError(f"{name}: {problem}")
        if st is not None and stat.S_ISREG(st.st_mode) and st.st_size > 0 and written_by_refrestore(target) is None \
                and not (may_replace is not None and may_replace(target)):
            shown = f" (a link to {target})" if target != Path(os.path.abspath(path)) else ""
            raise ClashError(f"{name} would overwrite {path}{shown}, which refrestore did not write: "
                             f"move it or choose another path")
        self.files[key] = name

    def write_folder(self, path: Path, what: str) -> None:
        """Plan a folder whose files this run writes: new, empty, or made by refrestore."""
        name = f"{what} {path}"
        if path.is_symlink():
            raise ClashError(f"{name} is a symbolic link: choose another path")
        if path.exists() and not path.is_dir():
            raise ClashError(f"{name} exists and is not a folder")
        key = _real(path)
        inside = key + os.sep
        for owned in (self.protected, self.files):
            for other, other_name in owned.items():
                if other == key or other.startswith(inside):
                    raise ClashError(f"{name} would hold {other_name}: choose another path")
        for folder, folder_name in self.protected_folders.items():
            if _inside(key, folder):
                raise ClashError(f"{name} lies in {folder_name}, which this run reads: choose another path")
        if key in self.folders:
            raise ClashError(f"{name} and {self.folders[key]} are the same folder: choose another path")
        if path.is_dir() and written_by_refrestore(path) is None and _has_entries(path):
            raise ClashError(f"{name} holds files refrestore did not write: move them or choose another path")
        self.folders[key] = name

    def write_compare_sheets(self, output: Path, what: str) -> None:
        """The ``STEM_compare_faceNN.jpg`` sheets beside ``output``: their number is unknown."""
        folder, stem = _real(output.parent), output.stem
        sheets = f"{what} {output.parent / (stem + '_compare_faceNN.jpg')}"
        for owned in (self.protected, self.files):
            for other, other_name in owned.items():
                m = _COMPARE.fullmatch(os.path.basename(other))
                if m and m.group(1) == stem and os.path.dirname(other) == folder:
                    raise ClashError(f"{sheets} would overwrite {other_name}: choose another path")
        for existing in _existing_sheets(output.parent, stem):
            if written_by_refrestore(existing) is None and existing.stat().st_size > 0:
                raise ClashError(f"{sheets} would overwrite {existing}, which refrestore did not write: "
                                 f"move it or choose another path")
        self.compare_stems[(folder, stem)] = sheets

    def _check_stream(self, path: Path, name: str, allowed: bool) -> None:
        fd = stream_fd(path)
        assert fd is not None
        if not allowed:
            raise ClashError(f"{name}: a stream cannot take this; give a file name")
        try:
            st = os.fstat(fd)
        except OSError:
            raise ClashError(f"{name}: descriptor {fd} is not open") from None
        if stat.S_ISDIR(st.st_mode):
            raise ClashError(f"{name}: descriptor {fd} is a folder")

    def _check_special(self, path: Path, st: os.stat_result, name: str, allowed: bool) -> None:
        if stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode):
            if not allowed:
                raise ClashError(f"{name}: a device or pipe cannot take this; give a file name")
            if stat.S_ISFIFO(st.st_mode):
                self._open_fifo(path, name)
            return
        kind = "a block device" if stat.S_ISBLK(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a file"
        raise ClashError(f"{name} is {kind}: give a file name")

    def _open_fifo(self, path: Path, name: str) -> None:
        """Open a FIFO now: refused when nobody reads it, and held open (a reader that saw this
        open and a close would take it for the end)."""
        if os.fspath(path) in self.opened:
            raise ClashError(f"{name} and another file of this run are the same pipe: choose another path")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                raise ClashError(f"{name} is a pipe nobody reads: start its reader first") from None
            raise ClashError(f"{name}: {(exc.strerror or str(exc)).lower()}") from None
        os.set_blocking(fd, True)
        self.opened[os.fspath(path)] = Path(f"/dev/fd/{fd}")

    def _check_file(self, key: str, name: str) -> None:
        for owned, verb in ((self.protected, "would overwrite"), (self.files, "is the same file as")):
            if key in owned:
                raise ClashError(f"{name} {verb} {owned[key]}: choose another path")
        for folder, folder_name in self.protected_folders.items():
            if _inside(key, folder):
                raise ClashError(f"{name} lies in {folder_name}, which this run reads: choose another path")
        for folder, folder_name in self.folders.items():
            if key.startswith(folder + os.sep):
                raise ClashError(f"{name} lies in {folder_name}, which this run writes: choose another path")
        m = _COMPARE.fullmatch(os.path.basename(key))
        if m and (os.path.dirname(key), m.group(1)) in self.compare_stems:
            raise ClashError(f"{name} would be overwritten by "
                             f"{self.compare_stems[(os.path.dirname(key), m.group(1))]}: choose another path")


def _has_entries(folder: Path) -> bool:
    try:
        with os.scandir(folder) as it:
            return any(True for _ in it)
    except OSError:
        return False


def _existing_sheets(folder: Path, stem: str) -> list[Path]:
    try:
        with os.scandir(folder) as it:
            return [Path(e.path) for e in it if (m := _COMPARE.fullmatch(e.name)) and m.group(1) == stem]
    except OSError:
        return []


def reference_photos(refs: list[Path]) -> list[Path]:
    """The photos a gallery reads from ``--refs`` folders and files (as the gallery finds them)."""
    from ..discover import find_inputs

    found, _ = find_inputs(refs, recursive=True)
    return [f.path for f in found]


def check_writes(writes: Iterable[tuple[str, Path | None]], *, protect: Iterable[tuple[str, Iterable[Path]]] = (),
                 protect_folders: Iterable[tuple[str, Path | None]] = (),
                 may_replace: Callable[[Path], bool] | None = None, streams: bool = True) -> WritePlan:
    """The gate for a command's own files (``--json``, ``--export``, ...): ``writes`` are
    (flag, path) pairs, ``protect`` (what, paths) it reads, ``protect_folders`` (what, folder)
    it reads all of. Raises :class:`ClashError`; returns the plan (``destination``)."""
    plan = WritePlan()
    for what, paths in protect:
        plan.protect(list(paths), what)
    for what, folder in protect_folders:
        if folder is not None:
            plan.protect_folder(folder, what)
    for flag, path in writes:
        if path is not None:
            plan.write_file(path, flag, stream=streams, may_replace=may_replace)
    return plan


def check_run_writes(tasks: Iterable[object], refs: list[Path], *, save_faces: bool = False, compare: bool = False,
                     reports: Iterable[tuple[str, Path | None]] = (), html: Path | None = None,
                     sheets: Iterable[tuple[Path, Path]] = (), protect: Iterable[Path] = ()) -> WritePlan:
    """The gate for ``fix`` and ``match``: raise :class:`ClashError` when any file of the run
    lands on an input, a reference, a file refrestore did not write or another of its files.
    ``tasks`` are :class:`~refrestore.engines.tasks.Task` (input, output); ``sheets`` are
    (input, contact sheet) pairs of ``match --compare``; ``protect`` more inputs."""
    plan = WritePlan()
    task_list = list(tasks)
    sheet_list = list(sheets)
    plan.protect([t.source.path for t in task_list], "the input")  # type: ignore[attr-defined]
    plan.protect([src for src, _ in sheet_list], "the input")
    plan.protect(list(protect), "the input")
    plan.protect(reference_photos(refs) if refs else [], "the reference")
    one = len(task_list) == 1
    for t in task_list:
        # one photo's output may be a device or a pipe (-o /dev/null); an album's are files
        plan.write_file(t.output, f"the output of {t.source.path}:", stream=one, usable=False)  # type: ignore[attr-defined]
    for src, sheet in sheet_list:
        plan.write_file(sheet, f"the contact sheet of {src}:", stream=False, usable=False)
    for t in task_list:
        out: Path = t.output  # type: ignore[attr-defined]
        if save_faces:
            plan.write_folder(out.with_name(out.stem + "_faces"), "the faces folder")
        if compare:
            plan.write_compare_sheets(out, "the compare sheets")
    for flag, path in reports:
        if path is not None:
            plan.write_file(path, flag)
    if html is not None:
        if stream_fd(html) is not None or os.fspath(html) in plan.opened:
            raise ClashError(f"--html {html}: the page needs a folder beside it for its images; give a file name")
        from ..report.html import files_folder

        if not (os.path.exists(html) and not os.path.isfile(html)):  # a device or pipe gets no images
            plan.write_folder(files_folder(final_target(html)), "the --html images folder")
    return plan
