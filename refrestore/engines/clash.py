"""Refusing a run that would write one of its files over something the user owns.

Every file a run writes (outputs, face crops, compare sheets, reports, the HTML report's
image folder, match's contact sheets) is checked, before any work, against the inputs, the
references and every other file of the same run. Paths are compared after ``realpath`` so a
symlink or a ``..`` cannot slip past. :func:`report_path_problem` refuses, as early, a report
path that could never be written.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

_COMPARE = re.compile(r"(.*)_compare_face\d+\.jpg")


class ClashError(ValueError):
    """A file of the run would land on an input, a reference or another file of the run (exit 2)."""


def _real(path: Path) -> str:
    return os.path.realpath(path)


@dataclass
class WritePlan:
    """What a run owns (``protect``) and what it will write (``files``, ``folders``)."""

    protected: dict[str, str] = field(default_factory=dict)  # realpath -> "the input X"
    files: dict[str, str] = field(default_factory=dict)  # realpath -> "--json X"
    folders: dict[str, str] = field(default_factory=dict)  # realpath -> "the faces folder X"
    # (folder realpath, output stem) of outputs whose compare sheets sit beside them
    compare_stems: dict[tuple[str, str], str] = field(default_factory=dict)

    def protect(self, paths: Iterable[Path], what: str) -> None:
        for p in paths:
            self.protected.setdefault(_real(p), f"{what} {p}")

    def write_file(self, path: Path, what: str) -> None:
        key = _real(path)
        name = f"{what} {path}"
        self._check_file(key, name)
        self.files[key] = name

    def write_folder(self, path: Path, what: str) -> None:
        key = _real(path)
        name = f"{what} {path}"
        inside = key + os.sep
        for owned in (self.protected, self.files):
            for other, other_name in owned.items():
                if other == key or other.startswith(inside):
                    raise ClashError(f"{name} would hold {other_name}: choose another path")
        if key in self.folders:
            raise ClashError(f"{name} and {self.folders[key]} are the same folder: choose another path")
        self.folders[key] = name

    def write_compare_sheets(self, output: Path, what: str) -> None:
        """The ``STEM_compare_faceNN.jpg`` sheets beside ``output``: their number is unknown."""
        folder, stem = _real(output.parent), output.stem
        for owned in (self.protected, self.files):
            for other, other_name in owned.items():
                m = _COMPARE.fullmatch(os.path.basename(other))
                if m and m.group(1) == stem and os.path.dirname(other) == folder:
                    raise ClashError(f"{what} {output.parent / (stem + '_compare_faceNN.jpg')} "
                                     f"would overwrite {other_name}: choose another path")
        self.compare_stems[(folder, stem)] = f"{what} {output.parent / (stem + '_compare_faceNN.jpg')}"

    def _check_file(self, key: str, name: str) -> None:
        for owned, verb in ((self.protected, "would overwrite"), (self.files, "is the same file as")):
            if key in owned:
                raise ClashError(f"{name} {verb} {owned[key]}: choose another path")
        for folder, folder_name in self.folders.items():
            if key.startswith(folder + os.sep):
                raise ClashError(f"{name} lies in {folder_name}, which this run writes: choose another path")
        m = _COMPARE.fullmatch(os.path.basename(key))
        if m and (os.path.dirname(key), m.group(1)) in self.compare_stems:
            raise ClashError(f"{name} would be overwritten by "
                             f"{self.compare_stems[(os.path.dirname(key), m.group(1))]}: choose another path")


def report_path_problem(path: Path, html: bool = False) -> str | None:
    """Why a report could never be written at ``path`` (None: it can), found before any photo is
    restored: an album's run must not end, after all its work, on a report path that was
    unusable from the start. ``html``: also its images folder (``<stem>_files/``)."""
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
    if html:
        from ..report.html import files_folder

        folder = files_folder(path)
        if folder.exists() and not folder.is_dir():
            return f"its images folder {folder} exists and is not a folder"
    return None


def reference_photos(refs: list[Path]) -> list[Path]:
    """The photos a gallery reads from ``--refs`` folders and files (as the gallery finds them)."""
    from ..discover import find_inputs

    found, _ = find_inputs(refs, recursive=True)
    return [f.path for f in found]


def check_run_writes(tasks: Iterable[object], refs: list[Path], *, save_faces: bool = False, compare: bool = False,
                     reports: Iterable[tuple[str, Path | None]] = (), html: Path | None = None,
                     sheets: Iterable[tuple[Path, Path]] = (), protect: Iterable[Path] = ()) -> None:
    """Raise :class:`ClashError` when any file of the run lands on an input, a reference or
    another of its files. ``tasks`` are :class:`~refrestore.engines.tasks.Task` (input, output);
    ``sheets`` are (input, contact sheet) pairs of ``match --compare``; ``protect`` more inputs."""
    plan = WritePlan()
    task_list = list(tasks)
    sheet_list = list(sheets)
    plan.protect([t.source.path for t in task_list], "the input")  # type: ignore[attr-defined]
    plan.protect([src for src, _ in sheet_list], "the input")
    plan.protect(list(protect), "the input")
    plan.protect(reference_photos(refs) if refs else [], "the reference")
    for t in task_list:
        plan.write_file(t.output, f"the output of {t.source.path}:")  # type: ignore[attr-defined]
    for src, sheet in sheet_list:
        plan.write_file(sheet, f"the contact sheet of {src}:")
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
        from ..report.html import files_folder

        plan.write_folder(files_folder(html), "the --html images folder")
