"""Where each input's output goes, and which outputs a rerun can skip."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..discover import InputFile
from ..fileio import Source, is_stream_path, written_by_refrestore
from ..imageio import ImageWriteError, output_ext_for_path, output_format
from .reports import ImageReport

OUTPUT_SUFFIX = "_restored"


class UsageError(ValueError):
    """Bad combination of inputs and outputs (exit status 2)."""


@dataclass(frozen=True)
class Task:
    source: InputFile
    output: Path
    note: str = ""  # why the output has the name it has (a name clash), for the report


def output_format_or_none(path: Path) -> str | None:
    """The image format ``path``'s extension names, or None."""
    try:
        return output_format(path)
    except ImageWriteError:
        return None


def _default_name(rel: Path, src: Path, suffix: str) -> Path:
    return (rel.parent / (rel.stem + suffix)).with_suffix(output_ext_for_path(src))


def _root_of(f: InputFile) -> Path:
    """The folder an input was found under (the file's own folder for a file named directly)."""
    path = Path(os.path.abspath(f.path))
    for _ in f.rel.parts:
        path = path.parent
    return path


def _labels(roots: list[Path]) -> dict[Path, Path]:
    """The shortest trailing parts of each root folder that tell them apart (``box1/scans``)."""
    for depth in range(1, max(len(r.parts) for r in roots) + 1):
        labels = {r: Path(*r.parts[-depth:]) if len(r.parts) > 1 else Path("root") for r in roots}
        if len({str(v).casefold() for v in labels.values()}) == len(roots):
            return labels
    return {r: Path(f"input{i + 1}") for i, r in enumerate(roots)}


def _clashes(tasks: list[Task]) -> list[list[int]]:
    """Groups of tasks whose outputs share a name (case-folded, for case-insensitive disks)."""
    groups: dict[str, list[int]] = {}
    for i, t in enumerate(tasks):
        groups.setdefault(os.path.normcase(str(t.output)).casefold(), []).append(i)
    return [m for m in groups.values() if len(m) > 1]


def _distinct(tasks: list[Task], output: Path, suffix: str) -> list[Task]:
    """Give outputs that would share a name (``a.jpg`` and ``a.JPG``, ``a.gif`` and ``a.png``,
    ``IMG_0001.jpg`` in two input folders) distinct names that depend only on the inputs:
    input folders whose names clash are each mirrored under their own name (``out/box1/``),
    and in one folder the input whose extension is the output's keeps the plain name while
    the others get theirs in it (``a_gif_restored.png``). The report says so."""
    roots = [_root_of(t.source) for t in tasks]
    crossing = sorted({roots[i] for m in _clashes(tasks) for i in m if len({roots[j] for j in m}) > 1})
    out = list(tasks)
    if crossing:
        labels = _labels(crossing)
        for i, t in enumerate(tasks):
            if roots[i] in labels:
                out[i] = Task(t.source, output / labels[roots[i]] / _default_name(t.source.rel, t.source.path, suffix))
    for members in _clashes(out):
        for i in members:
            t = out[i]
            if t.source.path.suffix != t.output.suffix:
                ext = t.source.path.suffix.lstrip(".") or "noext"
                out[i] = Task(t.source, t.output.with_name(f"{t.source.rel.stem}_{ext}{suffix}{t.output.suffix}"))
    for members in _clashes(tasks):
        for i in members:
            others = ", ".join(str(tasks[j].source.path) for j in members if j != i)
            out[i] = Task(out[i].source, out[i].output, f"written as {out[i].output}: {others} would have had the same output name")
    return out


def plan_outputs(inputs: list[InputFile], output: Path | None, single_file: bool, suffix: str = OUTPUT_SUFFIX,
                 *, output_is_folder: bool = False) -> list[Task]:
    """Where each input's output goes; refuses any plan that would write over an input.

    One file: ``-o`` is the output file (or a folder to put it in); default next to the
    input with a suffix. Several files or a folder: ``-o`` is a folder (default: the first
    input folder's name plus the suffix), mirroring sub-folders; inputs whose outputs would
    share a name get distinct ones (:func:`_distinct`), and the report says so.
    """
    tasks: list[Task] = []
    input_paths = {os.path.realpath(i.path) for i in inputs}
    if single_file and len(inputs) == 1:
        src = inputs[0]
        ext = None
        if output is None:
            target = src.path.with_name(src.path.stem + suffix)
        elif is_stream_path(output):  # /dev/null, a pipe: written through, in the input's format
            target, ext = output, ""
        elif output_is_folder or output.is_dir() or not output.suffix:  # no extension: a folder to put it in
            target = output / (src.path.stem + suffix)
        else:
            target, ext = output, output.suffix
            if output_format_or_none(output) is None:
                raise UsageError(f"-o {output}: {output_error(output)}")
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
            tasks.append(Task(src, output / _default_name(src.rel, src.path, suffix)))
        tasks = _distinct(tasks, output, suffix)
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


def output_error(path: Path) -> str:
    try:
        output_format(path)
    except ImageWriteError as exc:
        return str(exc)
    return ""


def _is_finished(task: Task) -> bool:
    """The output exists, refrestore wrote it, and from this same input as it is now (its
    path, size and modification time): an output of another photo with the same name, or of
    this photo before it was edited, is not a reason to skip it."""
    record = written_by_refrestore(task.output)
    if record is None or record.source is None:
        return False
    return record.source == Source.of(task.source.path)


def split_finished(tasks: list[Task], skip_existing: bool) -> tuple[list[Task], list[tuple[Task, ImageReport]]]:
    """(tasks still to do, finished ones with their ``skipped`` reports): a rerun resumes."""
    todo: list[Task] = []
    done: list[tuple[Task, ImageReport]] = []
    for t in tasks:
        if skip_existing and _is_finished(t):
            done.append((t, ImageReport(str(t.source.path), str(t.output), "skipped", None,
                                        warnings=[t.note] if t.note else [])))
        else:
            todo.append(t)
    return todo, done
