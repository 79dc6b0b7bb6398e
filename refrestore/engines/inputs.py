"""Inputs given as lists of paths: a text file (one path a line), a CSV or a Parquet table.

An archive's catalogue is often such a list rather than a folder. Listed files are mirrored
under the output relative to the deepest folder that holds them all, so two scans with
the same name in different boxes keep apart.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Sequence

from ..discover import InputFile, find_inputs

LIST_SUFFIXES: frozenset[str] = frozenset({".txt", ".lst", ".csv", ".parquet"})
PATH_COLUMNS = ("path", "input", "file", "filename")


class PathListError(ValueError):
    """A list of inputs that cannot be read (one line)."""


def is_path_list(path: Path) -> bool:
    return path.suffix.lower() in LIST_SUFFIXES and path.is_file()


def _column(names: Sequence[str], where: Path) -> int:
    lowered = [n.strip().lower() for n in names]
    for want in PATH_COLUMNS:
        if want in lowered:
            return lowered.index(want)
    if len(names) == 1:
        return 0
    raise PathListError(f"{where}: no column named {' or '.join(PATH_COLUMNS)}")


def read_path_list(path: Path) -> list[Path]:
    """The local paths listed in ``path``; relative entries are relative to the list's folder."""
    raw = _raw_entries(path)
    base = path.parent
    return [Path(p) if os.path.isabs(p) else base / p for p in read_path_entries(raw) if not _is_uri(p)]


def _raw_entries(path: Path) -> list[str]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            try:
                import pyarrow.parquet as pq
            except ImportError as exc:
                raise PathListError(f"{path}: reading Parquet needs pyarrow: pip install 'refrestore[ray]'") from exc
            table = pq.read_table(path)
            col = _column(table.column_names, path)
            raw = [str(v) for v in table.column(col).to_pylist() if v is not None]
        elif suffix == ".csv":
            with open(path, newline="", encoding="utf-8") as fh:
                rows = [r for r in csv.reader(fh) if r]
            if not rows:
                return []
            header = [h.strip().lower() for h in rows[0]]
            named = any(h in PATH_COLUMNS for h in header)
            col = _column(rows[0], path)
            # A one-column CSV without a header is just a list of paths.
            body = rows[1:] if named or len(header) > 1 else rows
            raw = [r[col] for r in body if len(r) > col]
        else:
            with open(path, encoding="utf-8") as fh:
                raw = [ln.strip() for ln in fh]
            raw = [ln for ln in raw if ln and not ln.startswith("#")]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise PathListError(f"{path}: cannot read the list of inputs: {exc}".splitlines()[0]) from exc
    except PathListError:
        raise
    except Exception as exc:  # noqa: BLE001 - pyarrow's errors have no common base here
        raise PathListError(f"{path}: cannot read the list of inputs: {exc}".splitlines()[0]) from exc
    return read_path_entries(raw)


def read_path_entries(raw: list[str]) -> list[str]:
    return [p for p in (s.strip() for s in raw) if p]


def read_uri_list(path: Path) -> list[str]:
    """The entries of a list of inputs that are URIs (``s3://...``); ``read_path_list`` has the rest."""
    return [e for e in _raw_entries(path) if _is_uri(e)]


def _is_uri(text: str) -> bool:
    from .remote import is_uri

    return is_uri(text)


def expand_inputs(paths: list[Path], recursive: bool, *, exclude: Sequence[Path] = (),
                  remote: list[str] | None = None) -> tuple[list[InputFile], list[tuple[Path, str]]]:
    """Like ``discover.find_inputs``, with path lists expanded into the files they name.

    URIs in the lists go to ``remote`` when it is given, else they are reported as problems.
    """
    plain: list[Path] = []
    listed: list[InputFile] = []
    problems: list[tuple[Path, str]] = []
    for p in paths:
        if not is_path_list(Path(p)):
            plain.append(Path(p))
            continue
        entries = read_path_list(Path(p))
        for uri in read_uri_list(Path(p)):
            if remote is not None:
                remote.append(uri)
            else:
                problems.append((Path(uri), "a remote path: refrestore.distributed.fix_dataset reads these, fix does not yet"))
        if not entries:
            continue
        root = Path(os.path.commonpath([os.path.abspath(e.parent) for e in entries]))
        found, probs = find_inputs(entries, recursive=recursive, exclude=exclude)
        problems.extend(probs)
        for f in found:
            listed.append(InputFile(f.path, Path(os.path.relpath(os.path.abspath(f.path), root))))
    found, probs = find_inputs(plain, recursive=recursive, exclude=exclude) if plain else ([], [])
    return found + listed, problems + probs
