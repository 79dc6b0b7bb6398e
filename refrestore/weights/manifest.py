"""The weights manifest: every file refrestore can use, where it comes from, and its licence.

The packaged manifest is ``models/manifest.toml``. A user may pass another one of the same
schema (``--manifest``) for private models; only such a user-given manifest may use
``http://`` or ``file://`` URLs.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any
from collections.abc import Iterable
from urllib.parse import urlparse

from .. import paths
from ..fileio import read_regular_bytes  # every file read back goes through it
from .errors import WeightsError

SCHEMA_VERSION = 1
ROLES: tuple[str, ...] = ("detector", "parser", "identity", "restorer", "upsampler")
MANIFEST_FILE = "manifest.toml"

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9.\-]*$")
# Names the store writes beside the weights; a manifest entry must never collide with them.
RESERVED_SUFFIXES: tuple[str, ...] = (".part", ".lock")
RESERVED_NAMES: frozenset[str] = frozenset({"recorded_hashes.json", "user_added.json"})

_FIELDS = {
    "name", "role", "models", "url", "size", "sha256", "license", "commercial", "default",
    "on_request_only", "embedded", "path", "card", "homepage", "description",
}


@dataclass
class ManifestEntry:
    """One weights file."""

    name: str  # file name, unique, never a path
    role: str  # one of ROLES
    url: str | None
    size: int | None  # exact bytes; None only for embedded files not yet measured
    sha256: str | None  # lower-case hex; None where not yet known (first download is recorded)
    license: str
    models: list[str] = field(default_factory=list)  # refrestore model names that need it
    default: bool = False  # part of the default download set
    on_request_only: bool = False  # never fetched or chosen unless named (CodeFormer)
    commercial: bool = True  # its licence allows commercial use
    embedded: bool = False  # ships inside the package (models dir), never downloaded
    description: str = ""
    path: str | None = None  # embedded only: location relative to the manifest's folder
    card: str | None = None  # model card file beside the manifest
    homepage: str | None = None


@dataclass
class Manifest:
    """All entries of one manifest file, in file order (which is also preference order)."""

    entries: list[ManifestEntry]
    source: Path
    user_supplied: bool = False  # given by the user: http/file URLs allowed

    @property
    def folder(self) -> Path:
        """Folder the manifest lives in: embedded files and cards are relative to it."""
        return self.source.parent

    def get(self, name: str) -> ManifestEntry | None:
        """The entry for a file name, or None."""
        for entry in self.entries:
            if entry.name == name:
                return entry
        return None

    def entry(self, name: str) -> ManifestEntry:
        """The entry for a file name; WeightsError when the manifest has none."""
        entry = self.get(name)
        if entry is None:
            raise WeightsError(f"no weights file named {name!r} in {self.source}")
        return entry

    def for_model(self, model_name: str) -> list[ManifestEntry]:
        """Every file a refrestore model needs (empty for an unknown model)."""
        return [e for e in self.entries if model_name in e.models]

    def model_names(self) -> list[str]:
        """Every model named by the manifest, in first-appearance order."""
        seen: dict[str, None] = {}
        for entry in self.entries:
            for model in entry.models:
                seen.setdefault(model, None)
        return list(seen)

    def default_entries(self) -> list[ManifestEntry]:
        return [e for e in self.entries if e.default and not e.embedded]

    def downloadable_entries(self) -> list[ManifestEntry]:
        """What ``--all`` fetches: every published file except on-request-only ones."""
        return [e for e in self.entries if not e.embedded and not e.on_request_only]

    def resolve(self, names: Iterable[str]) -> list[ManifestEntry]:
        """Entries for file names or model names, in order, without duplicates."""
        out: list[ManifestEntry] = []
        for name in names:
            entry = self.get(name)
            found = [entry] if entry is not None else self.for_model(name)
            if not found:
                known = ", ".join(self.model_names())
                raise WeightsError(
                    f"unknown weights file or model {name!r} (models: {known}; "
                    "`refrestore models` lists the files)"
                )
            for item in found:
                if item not in out:
                    out.append(item)
        return out

    def embedded_path(self, entry: ManifestEntry) -> Path:
        """Where an embedded file lives (inside the manifest's folder)."""
        if not entry.embedded:
            raise WeightsError(f"{entry.name} is not an embedded file")
        return self.folder / (entry.path or entry.name)


def check_file_name(name: str) -> str:
    """Return ``name`` if it is a plain file name that cannot leave its folder."""
    if not isinstance(name, str) or not name or name.strip() != name:
        raise WeightsError(f"invalid weights file name {name!r}")
    if (
        name in {".", ".."}
        or "/" in name
        or "\\" in name
        or "\x00" in name
        or ":" in name  # drive letters and alternate streams on Windows
        or name.startswith(".")
        or PurePosixPath(name).is_absolute()
        or PureWindowsPath(name).is_absolute()
        or any(ord(c) < 32 for c in name)
    ):
        raise WeightsError(f"invalid weights file name {name!r}: must be a plain file name")
    if name.endswith(RESERVED_SUFFIXES) or name in RESERVED_NAMES:
        raise WeightsError(f"invalid weights file name {name!r}: reserved for refrestore")
    return name


def check_relative_path(rel: str) -> str:
    """A relative path that stays inside its folder (embedded files, model cards)."""
    if not isinstance(rel, str) or not rel:
        raise WeightsError(f"invalid relative path {rel!r}")
    posix = PurePosixPath(rel)
    if (
        posix.is_absolute()
        or PureWindowsPath(rel).is_absolute()
        or "\\" in rel
        or any(part in {"..", "."} for part in posix.parts)
    ):
        raise WeightsError(f"invalid relative path {rel!r}: must stay inside the models folder")
    return rel


def check_url(url: str, *, allow_insecure: bool) -> str:
    """https always; http and file only where the user gave the manifest or mirror."""
    parsed = urlparse(url)
    scheme = parsed.scheme.lower()
    allowed = {"https", "http", "file"} if allow_insecure else {"https"}
    if scheme not in allowed:
        only = "https, http or file" if allow_insecure else "https"
        raise WeightsError(f"URL {url!r} not allowed: only {only} URLs are accepted")
    if scheme in {"https", "http"} and not parsed.netloc:
        raise WeightsError(f"URL {url!r} has no host")
    if scheme == "file" and not parsed.path:
        raise WeightsError(f"URL {url!r} has no path")
    return url


def default_manifest_path() -> Path:
    return paths.models_dir() / MANIFEST_FILE


MAX_MANIFEST_BYTES = 4 << 20  # the packaged one is a few KB


def read_regular_text(path: Path, max_bytes: int) -> str:
    """:func:`read_regular_bytes` as UTF-8 text (UnicodeDecodeError when it is not)."""
    return read_regular_bytes(path, max_bytes).decode("utf-8")


def load_manifest(path: Path | None = None, *, user_supplied: bool | None = None) -> Manifest:
    """Read and validate a manifest (default: the packaged one). Errors are one line.

    ``user_supplied`` defaults to True for any file other than the packaged manifest.
    """
    default = default_manifest_path()
    source = Path(path).expanduser() if path is not None else default
    if user_supplied is None:
        user_supplied = path is not None and _resolved(source) != _resolved(default)
    try:
        text = read_regular_text(source, MAX_MANIFEST_BYTES)
    except FileNotFoundError:
        raise WeightsError(f"manifest not found: {source}") from None
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise WeightsError(f"cannot read manifest {source}: {why}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise WeightsError(f"{source}: not valid TOML: {exc}") from None
    except RecursionError:  # tomllib parses nested arrays and tables recursively
        raise WeightsError(f"{source}: not valid TOML: nested too deeply") from None
    return parse_manifest(data, source, user_supplied=user_supplied)


def parse_manifest(data: dict[str, Any], source: Path, *, user_supplied: bool) -> Manifest:
    """Validate an already-parsed manifest table."""
    unknown_top = set(data) - {"schema", "file"}
    if unknown_top:
        raise WeightsError(f"{source}: unknown top-level keys {sorted(unknown_top)}")
    schema = data.get("schema")
    if schema != SCHEMA_VERSION:
        raise WeightsError(f"{source}: schema must be {SCHEMA_VERSION}, found {schema!r}")
    raw_entries = data.get("file")
    if not isinstance(raw_entries, list) or not raw_entries:
        raise WeightsError(f"{source}: no [[file]] entries")
    entries: list[ManifestEntry] = []
    names: set[str] = set()
    for index, raw in enumerate(raw_entries, start=1):
        if not isinstance(raw, dict):
            raise WeightsError(f"{source}: [[file]] entry {index} is not a table")
        label = f"{source}: [[file]] entry {index} ({raw.get('name', '?')})"
        try:
            entry = _parse_entry(raw, allow_insecure=user_supplied)
        except WeightsError as exc:
            raise WeightsError(f"{label}: {exc}") from None
        if entry.name in names:
            raise WeightsError(f"{label}: duplicate file name {entry.name!r}")
        names.add(entry.name)
        entries.append(entry)
    return Manifest(entries=entries, source=source, user_supplied=user_supplied)


def _parse_entry(raw: dict[str, Any], *, allow_insecure: bool) -> ManifestEntry:
    unknown = set(raw) - _FIELDS
    if unknown:
        raise WeightsError(f"unknown keys {sorted(unknown)}")
    name = check_file_name(_req(raw, "name", str))
    role = _req(raw, "role", str)
    if role not in ROLES:
        raise WeightsError(f"role {role!r} is not one of {', '.join(ROLES)}")
    license_ = _req(raw, "license", str).strip()
    if not license_:
        raise WeightsError("empty license")
    models = _opt(raw, "models", list, [])
    if not models or not all(isinstance(m, str) and _MODEL_NAME.match(m) for m in models):
        raise WeightsError("models must be a non-empty list of lower-case model names")
    embedded = _opt(raw, "embedded", bool, False)
    url = _opt(raw, "url", str, None)
    size = _opt(raw, "size", int, None)
    sha = _opt(raw, "sha256", str, None)
    if sha is not None:
        sha = sha.strip().lower()
        if sha in {"", "unknown"}:
            sha = None  # the entry says the hash is not yet known
        elif not _SHA256.match(sha):
            raise WeightsError(f"sha256 {sha!r} is not 64 hex digits (or \"unknown\")")
    if size is not None and (isinstance(size, bool) or size <= 0):
        raise WeightsError(f"size must be a positive number of bytes, found {size!r}")
    rel_path = _opt(raw, "path", str, None)
    if embedded:
        if url is not None:
            raise WeightsError("an embedded file has no url")
        check_relative_path(rel_path or name)
    else:
        if rel_path is not None:
            raise WeightsError("path is only for embedded files")
        if url is None:
            raise WeightsError("missing url")
        check_url(url, allow_insecure=allow_insecure)
        if size is None:
            raise WeightsError("missing size (the exact byte size is required)")
    card = _opt(raw, "card", str, None)
    if card is not None:
        check_relative_path(card)
    on_request_only = _opt(raw, "on_request_only", bool, False)
    default = _opt(raw, "default", bool, False)
    if default and (on_request_only or embedded):
        raise WeightsError("a default download cannot be embedded or on-request-only")
    return ManifestEntry(
        name=name,
        role=role,
        url=url,
        size=size,
        sha256=sha,
        license=license_,
        models=list(models),
        default=default,
        on_request_only=on_request_only,
        commercial=_opt(raw, "commercial", bool, True),
        embedded=embedded,
        description=" ".join(_opt(raw, "description", str, "").split()),
        path=rel_path,
        card=card,
        homepage=_opt(raw, "homepage", str, None),
    )


def _req(raw: dict[str, Any], key: str, kind: type) -> Any:
    if key not in raw:
        raise WeightsError(f"missing {key}")
    return _opt(raw, key, kind, None)


def _opt(raw: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    if key not in raw:
        return default
    value = raw[key]
    # bool is an int subclass: keep them apart so `size = true` is rejected.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise WeightsError(f"{key} must be a {kind.__name__}, found {value!r}")
    return value


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except OSError:
        return path.absolute()
