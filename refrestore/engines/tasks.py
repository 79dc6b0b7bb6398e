"""Where each input's output goes, and which outputs a rerun can skip."""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from ..discover import InputFile
from ..imageio import ImageWriteError, output_ext_for_path, output_format
from .reports import ImageReport

OUTPUT_SUFFIX = "_restored"


class UsageError(ValueError):
    """Bad combination of inputs and outputs (exit status 2)."""


@dataclass(frozen=True)
class Task:
    source: InputFile
    output: Path


def output_format_or_none(path: Path) -> str | None:
    """The image format ``path``'s extension names, or None."""
    try:
        return output_format(path)
    except ImageWriteError:
        return None


def plan_outputs(inputs: list[InputFile], output: Path | None, single_file: bool, suffix: str = OUTPUT_SUFFIX,
                 *, output_is_folder: bool = False) -> list[Task]:
    """Where each input's output goes; refuses any plan that would write over an input.

    One file: ``-o`` is the output file (or a folder to put it in); default next to the
    input with a suffix. Several files or a folder: ``-o`` is a folder (default: the first
    input folder's name plus the suffix), mirroring sub-folders.
    """
    tasks: list[Task] = []
    input_paths = {os.path.realpath(i.path) for i in inputs}
    if single_file and len(inputs) == 1:
        src = inputs[0]
        ext = None
        if output is None:
            target = src.path.with_name(src.path.stem + suffix)
        elif output_is_folder or output.is_dir() or not output.suffix:  # no extension: a folder to put it in
            target = output / (src.path.stem + suffix)
        else:
            target, ext = output, output.suffix
        if ext is None:
            target = target.with_suffix(output_ext_for_path(src.path))
        tasks.append(Task(src, target))
    else:
        if output is None:
            raise UsageError("several inputs or a folder: give an output folder with -o")
        if output.exists() and not output.is_dir():
            raise UsageError(f"-o {output}: exists and is not a folder")
        if not output_is_folder and not output.exists() and output_format_or_none(output) is not None:
            raise UsageError(f"-o {output}: names an image file, but several photos need a folder "
                             f"(end it with / to mean a folder)")
        for src in inputs:
            rel = src.rel.parent / (src.rel.stem + suffix)
            tasks.append(Task(src, (output / rel).with_suffix(output_ext_for_path(src.path))))
    for t in tasks:
        if os.path.realpath(t.output) in input_paths:
            raise UsageError(f"refusing to overwrite the input {t.source.path}")
    seen: dict[str, Path] = {}
    for t in tasks:
        key = os.path.realpath(t.output)
        if key in seen:
            raise UsageError(f"{seen[key]} and {t.source.path} would both be written to {t.output}")
        seen[key] = t.source.path
    return tasks


def _is_finished(output: Path) -> bool:
    """A regular file at ``output``; a folder in its place, or a name the file system cannot
    hold (that image's write will say so), is not a finished output."""
    try:
        return stat.S_ISREG(os.stat(output).st_mode)
    except (OSError, ValueError):
        return False


def split_finished(tasks: list[Task], skip_existing: bool) -> tuple[list[Task], list[tuple[Task, ImageReport]]]:
    """(tasks still to do, finished ones with their ``skipped`` reports): a rerun resumes."""
    todo: list[Task] = []
    done: list[tuple[Task, ImageReport]] = []
    for t in tasks:
        if skip_existing and _is_finished(t.output):
            done.append((t, ImageReport(str(t.source.path), str(t.output), "skipped", None)))
        else:
            todo.append(t)
    return todo, done
