"""Fetching weights: resumable, verified, atomic, and safe against a second process.

``download(names, store)`` fetches each file into ``<name>.part`` next to its final place,
hashing while it writes, resumes with an HTTP Range request after a cut (starting clean when
the server ignores Range), retries with backoff on connection errors and 5xx answers, checks
the exact size and the sha256, and only then renames the file into place. A lock file beside
the target (``<name>.lock``, flock) lets one process download while another waits and then
finds the finished file. Progress is reported through a callback, never printed.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from collections.abc import Callable, Iterable, Iterator
from urllib.parse import quote, unquote, urlparse
from urllib.request import url2pathname

import requests
import urllib3

from .. import __version__ as _version
from .. import paths
from .errors import WeightsError
from .manifest import ManifestEntry, check_url
from .neterrors import _host, _short, unreachable_cause
from .store import WeightStore, file_lock

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_MAX_BACKOFF_S = 30.0


@dataclass(frozen=True)
class DownloadEvent:
    """One progress report.

    kind: "skip" (already present), "wait" (another process holds the lock), "start",
    "progress", "retry", "restart" (starting the file again from byte 0), "warning",
    "done", "failed".
    """

    kind: str
    name: str
    done: int = 0  # bytes in place so far (including a resumed part)
    total: int | None = None  # expected bytes
    message: str = ""
    path: Path | None = None


ProgressCallback = Callable[[DownloadEvent], None]


class _Retryable(Exception):
    """A failure worth another attempt (connection, timeout, 5xx, short body)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DownloadFailed(WeightsError):
    """Some files could not be fetched: ``failures`` holds one line per file."""

    def __init__(self, failures: list[str], total: int) -> None:
        self.failures = list(failures)
        self.total = total
        if len(failures) == 1:
            super().__init__(failures[0])
        else:
            super().__init__(f"{len(failures)} of {total} downloads failed: " + "; ".join(failures))


class _Unreachable(Exception):
    """The host cannot be reached at all (no such name, connection refused, no route):
    retrying within seconds cannot help, and other files from that host fail the same way."""


class _RestartClean(Exception):
    """The partial file cannot be continued: drop it and start from byte 0."""


class _RunningHash:
    """sha256 of the bytes of the part file so far, updated as they are written."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.digest = hashlib.sha256()
        self.count = 0

    def update(self, chunk: bytes) -> None:
        self.digest.update(chunk)
        self.count += len(chunk)

    def catch_up(self, part: Path, offset: int) -> None:
        """Make the hash cover exactly ``part[:offset]`` (re-reading only after a restart
        of the process or a failure that left the two out of step)."""
        if self.count == offset:
            return
        self.reset()
        if offset == 0:
            return
        with open(part, "rb") as handle:
            while self.count < offset:
                chunk = handle.read(min(_CHUNK, offset - self.count))
                if not chunk:
                    break
                self.update(chunk)


def download(
    names: Iterable[str],
    store: WeightStore,
    *,
    mirror: str | None = None,
    force: bool = False,
    offline: bool = False,
    progress: ProgressCallback | None = None,
    timeout: float = 30,
    retries: int = 4,
    backoff: float = 1.0,
    session: requests.Session | None = None,
) -> list[Path]:
    """Fetch the files (file names or model names) into ``store``; return their paths.

    Files already present and verified are not fetched again unless ``force``. ``mirror``
    replaces every URL by ``<mirror>/<file name>`` (https, http with a warning, file:// or a
    local folder). ``offline`` (or ``REFRESTORE_OFFLINE=1``) forbids any network use: only
    files already present, or a file:// source, are allowed. ``timeout`` is the connect and
    per-read timeout in seconds; ``retries`` is how many failed attempts in a row are retried,
    waiting ``backoff`` * 2**n seconds between them. Every file is attempted; a WeightsError
    afterwards names those that failed.
    """
    emit = progress or (lambda event: None)
    entries = store.manifest.resolve(names)
    offline = offline or paths.offline_from_env()
    sources = {e.name: _source_url(e, store, mirror) for e in entries if not e.embedded}
    insecure_hosts = {urlparse(u).netloc for u in sources.values() if urlparse(u).scheme == "http"}
    for host in sorted(insecure_hosts):
        message = f"http://{host} uses plain http: the sha256 check is the only protection"
        log.info(message)  # reported through the callback; a logged warning would say it twice
        emit(DownloadEvent("warning", "", message=message))

    if offline:
        _check_offline(entries, store, sources, force)

    results: list[Path] = []
    failures: list[str] = []
    unreachable: dict[str, str] = {}  # host -> why: later files from it fail at once
    own_session = session is None
    http = session or _new_session()
    try:
        for entry in entries:
            try:
                if entry.embedded:
                    path = store.require(entry.name)
                    emit(DownloadEvent("skip", entry.name, message="embedded", path=path))
                else:
                    path = _fetch_entry(
                        entry, sources[entry.name], store, http, force=force, emit=emit,
                        timeout=timeout, retries=retries, backoff=backoff, unreachable=unreachable,
                    )
                results.append(path)
            except WeightsError as exc:
                failures.append(str(exc))
                emit(DownloadEvent("failed", entry.name, message=str(exc)))
    finally:
        if own_session:
            http.close()
    if failures:
        raise DownloadFailed(failures, len(entries))
    return results


def mirror_url(base: str, name: str) -> str:
    """``<base>/<name>``; ``base`` may be a URL or a local folder."""
    if "://" not in base:
        base = Path(base).expanduser().absolute().as_uri()
    check_url(base, allow_insecure=True)
    return base.rstrip("/") + "/" + quote(name)


def _source_url(entry: ManifestEntry, store: WeightStore, mirror: str | None) -> str:
    if mirror:
        return mirror_url(mirror, entry.name)
    assert entry.url is not None  # the manifest loader guarantees it for downloadable files
    # Re-check here too: a Manifest built in code has not been through the loader.
    return check_url(entry.url, allow_insecure=store.manifest.user_supplied)


def _check_offline(
    entries: list[ManifestEntry], store: WeightStore, sources: dict[str, str], force: bool
) -> None:
    blocked = []
    for entry in entries:
        if entry.embedded or urlparse(sources[entry.name]).scheme == "file":
            continue
        present = None
        if not force:
            with contextlib.suppress(WeightsError):
                present = store.find(entry.name)
        if present is None:
            blocked.append(entry.name)
    if blocked:
        raise WeightsError(
            f"offline mode (--offline or REFRESTORE_OFFLINE=1) forbids downloading {', '.join(blocked)}; "
            f"copy the files into {store.directory}, add a copy you have with 'refrestore download-weights NAME "
            f"--from-file FILE' or use a local --mirror folder"
        )


def _new_session() -> requests.Session:
    session = requests.Session()
    # Identity encoding: byte counts, Range offsets and the hash all refer to the file itself.
    session.headers.update({"Accept-Encoding": "identity", "User-Agent": f"refrestore/{_version}"})
    return session


def _fetch_entry(
    entry: ManifestEntry,
    url: str,
    store: WeightStore,
    http: requests.Session,
    *,
    force: bool,
    emit: ProgressCallback,
    timeout: float,
    retries: int,
    backoff: float,
    unreachable: dict[str, str] | None = None,
) -> Path:
    target = store.path(entry.name)
    if not force:
        try:
            found = store.find(entry.name)
        except WeightsError as exc:
            found = None
            emit(DownloadEvent("warning", entry.name, message=f"{exc}; downloading it again"))
        if found is not None:
            emit(DownloadEvent("skip", entry.name, entry.size or 0, entry.size, "present", found))
            return found
    try:
        store.directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(f"cannot create {store.directory}: {exc.strerror or exc}") from None

    def on_wait() -> None:
        emit(DownloadEvent("wait", entry.name, message="another process is downloading it; waiting"))

    lock_path = target.with_name(target.name + ".lock")
    with file_lock(lock_path, on_wait) as waited:
        if not force or waited:
            # Whoever held the lock may have just finished this very file.
            with contextlib.suppress(WeightsError):
                found = store.find(entry.name)
                if found is not None:
                    emit(DownloadEvent("skip", entry.name, entry.size or 0, entry.size, "present", found))
                    return found
        expected = entry.sha256 or (None if force else store.recorded_hash(entry))
        host = _host(url)
        if unreachable is not None and host in unreachable:
            raise WeightsError(f"{entry.name}: download failed: {unreachable[host]}{_no_network_hint(entry.name)}")
        try:
            return _transfer(entry, url, target, store, http, expected, emit, timeout, retries, backoff)
        except _Unreachable as exc:
            if unreachable is not None:
                unreachable[host] = str(exc)
            raise WeightsError(
                f"{entry.name}: download failed: {exc}"
                + (" (the partial file is kept; run the command again to resume)" if _part_size(target.with_name(target.name + ".part")) else "")
                + _no_network_hint(entry.name)
            ) from None


def _no_network_hint(name: str) -> str:
    """The two ways in without this host, in the same line (a user offline reads no further)."""
    return (f"; a copy you have: 'refrestore download-weights {name} --from-file FILE', "
            f"or another source: --mirror BASE_URL (a URL or a folder)")


def _transfer(
    entry: ManifestEntry,
    url: str,
    target: Path,
    store: WeightStore,
    http: requests.Session,
    expected_sha: str | None,
    emit: ProgressCallback,
    timeout: float,
    retries: int,
    backoff: float,
) -> Path:
    size = entry.size
    if size is None:
        raise WeightsError(f"{entry.name}: the manifest gives no size, so it cannot be verified")
    part = target.with_name(target.name + ".part")
    name = entry.name
    failures = 0
    attempts = 0
    restarted = False
    running = _RunningHash()
    # A flaky link that makes progress each time may retry more; this bounds the total.
    max_attempts = max(retries + 1, 1) * 10
    emit(DownloadEvent("start", name, _part_size(part), size, url))
    while True:
        attempts += 1
        offset = _part_size(part)
        if offset > size:
            part.unlink()
            offset = 0
        resumed_from = offset
        try:
            _check_free_space(store.directory, size - offset)
            running.catch_up(part, offset)
            if offset < size:
                _fetch_into(url, part, offset, size, name, http, emit, timeout, running)
            got = _part_size(part)
            if got < size:
                raise _Retryable(f"connection closed after {got} of {size} bytes")
            running.catch_up(part, got)
            actual = running.digest.hexdigest()
            if expected_sha is not None and actual != expected_sha:
                part.unlink()
                if resumed_from > 0 and not restarted:
                    # The old part may have come from another file: one clean try.
                    restarted = True
                    emit(DownloadEvent("restart", name, 0, size, "resumed file failed its sha256; starting again"))
                    continue
                raise WeightsError(
                    f"{name}: downloaded file does not match its sha256 (expected {expected_sha[:12]}..., "
                    f"got {actual[:12]}...); nothing was installed"
                )
            return _install(entry, part, target, store, actual, url, emit)
        except _RestartClean as exc:
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
            emit(DownloadEvent("restart", name, 0, size, str(exc)))
            if attempts >= max_attempts:
                raise WeightsError(f"{name}: download failed: {exc}") from None
        except _Retryable as exc:
            progressed = _part_size(part) > resumed_from
            failures = 0 if progressed else failures + 1
            if retries <= 0 or failures > retries or attempts >= max_attempts:
                raise WeightsError(
                    f"{name}: download failed after {attempts} attempts: {exc}"
                    + (" (the partial file is kept; run the command again to resume)" if part.exists() else "")
                ) from None
            delay = min(backoff * (2 ** max(failures - 1, 0)), _MAX_BACKOFF_S)
            if exc.retry_after is not None:
                delay = min(max(delay, exc.retry_after), 60.0)
            emit(DownloadEvent("retry", name, _part_size(part), size, f"{exc}; retrying in {delay:.1f} s"))
            log.info("%s: %s; retrying in %.1f s", name, exc, delay)
            time.sleep(delay)


def _fetch_into(
    url: str, part: Path, offset: int, size: int, name: str,
    http: requests.Session, emit: ProgressCallback, timeout: float, running: _RunningHash,
) -> None:
    """Append bytes ``offset..size`` of ``url`` to ``part`` (or rewrite it from 0)."""
    if urlparse(url).scheme == "file":
        _copy_local(url, part, offset, size, name, emit, running)
        return
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        response = http.get(url, headers=headers, stream=True, timeout=(timeout, timeout))
    except requests.RequestException as exc:
        cause = unreachable_cause(exc, url)
        if cause is not None:
            raise _Unreachable(cause) from None
        raise _Retryable(_short(exc)) from None
    with response:
        final = urlparse(response.url)
        if urlparse(url).scheme == "https" and final.scheme != "https":
            raise WeightsError(f"{name}: {url} redirected to insecure {response.url}; refusing")
        status = response.status_code
        if status == 416:
            raise _RestartClean("server refused the resume range")
        if status == 429 or status >= 500:
            raise _Retryable(f"HTTP {status} from {_host(response.url)}", _retry_after(response))
        if status not in (200, 206):
            raise WeightsError(f"{name}: HTTP {status} {response.reason or ''} for {response.url}")
        if status == 206:
            start, total = _content_range(response.headers.get("Content-Range", ""))
            if start != offset:
                raise _RestartClean(f"server resumed at byte {start}, not {offset}")
            if total is not None and total != size:
                raise WeightsError(f"{name}: server has {total} bytes, the manifest says {size}")
            mode = "ab"
        else:
            length = response.headers.get("Content-Length")
            encoded = response.headers.get("Content-Encoding", "identity").lower() not in ("", "identity")
            if not encoded and length is not None and length.isdigit() and int(length) != size:
                raise WeightsError(f"{name}: server sends {length} bytes, the manifest says {size}")
            if offset:
                emit(DownloadEvent("restart", name, 0, size, "server ignored the resume request; starting again"))
            offset = 0
            mode = "wb"  # server ignored Range (or nothing to resume): start clean
        _write_stream(_body_chunks(response), part, mode, offset, size, name, emit, running)


def _body_chunks(response: requests.Response) -> Iterator[bytes]:
    """The body as it arrives. read1 hands over whatever the socket has, so after a cut
    every received byte is already on disk and the resume loses nothing; iter_content
    would hold back up to a whole chunk."""
    raw = response.raw
    read1 = getattr(raw, "read1", None)
    if read1 is None:  # urllib3 < 2
        yield from response.iter_content(64 * 1024)
        return
    while True:
        try:
            chunk = read1(_CHUNK, decode_content=True)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            # Same error type as requests' own streaming: a retryable connection problem.
            raise requests.ConnectionError(exc) from None
        if not chunk:
            return
        yield chunk


def _copy_local(
    url: str, part: Path, offset: int, size: int, name: str, emit: ProgressCallback,
    running: _RunningHash,
) -> None:
    parsed = urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        raise WeightsError(f"{name}: file URL {url} names a remote host")
    source = Path(url2pathname(unquote(parsed.path)))
    try:
        with open(source, "rb") as handle:
            have = os.fstat(handle.fileno()).st_size
            if have != size:
                raise WeightsError(f"{name}: {source} has {have} bytes, the manifest says {size}")
            handle.seek(offset)
            _write_stream(iter(lambda: handle.read(_CHUNK), b""), part, "ab" if offset else "wb",
                          offset, size, name, emit, running)
    except FileNotFoundError:
        raise WeightsError(f"{name}: {source} not found") from None
    except IsADirectoryError:
        raise WeightsError(f"{name}: {source} is a folder") from None
    except PermissionError:
        raise WeightsError(f"{name}: cannot read {source}") from None


def _write_stream(
    chunks: Iterator[bytes], part: Path, mode: str, offset: int, size: int,
    name: str, emit: ProgressCallback, running: _RunningHash,
) -> None:
    if mode == "wb":
        running.reset()
    done = offset
    try:
        with open(part, mode) as out:
            for chunk in chunks:
                if not chunk:
                    continue
                if done + len(chunk) > size:
                    out.close()
                    part.unlink()
                    raise WeightsError(f"{name}: server sent more than the {size} bytes the manifest gives")
                out.write(chunk)
                # Each received chunk goes to the OS at once: a kill or Ctrl-C keeps every byte
                # that arrived, and the part file's size tells how far the download got.
                out.flush()
                running.update(chunk)
                done += len(chunk)
                emit(DownloadEvent("progress", name, done, size))
            _sync(out)
    except requests.RequestException as exc:  # an OSError subclass: must come first
        raise _Retryable(_short(exc)) from None
    except OSError as exc:
        raise WeightsError(f"{name}: cannot write {part}: {exc.strerror or exc}") from None


def _install(
    entry: ManifestEntry, part: Path, target: Path, store: WeightStore, sha: str, url: str,
    emit: ProgressCallback,
) -> Path:
    os.replace(part, target)  # atomic: a reader sees the old file or the whole new one
    _sync_dir(target.parent)
    store.remember_verified(target, sha)
    if entry.sha256 is None:
        store.record_hash(entry, sha, source=url)
    emit(DownloadEvent("done", entry.name, entry.size or 0, entry.size, sha, target))
    log.info("installed %s (sha256 %s)", target, sha)
    return target


def _part_size(part: Path) -> int:
    """Bytes of our own partial download; anything but a regular file in its place (a FIFO
    would block the resume's read, a link would write elsewhere) is removed and started over."""
    try:
        st = os.lstat(part)
    except FileNotFoundError:
        return 0
    if stat.S_ISREG(st.st_mode):
        return st.st_size
    if stat.S_ISDIR(st.st_mode):
        raise WeightsError(f"{part} is a folder where the partial download goes; remove it and run again")
    log.warning("%s is not a regular file; removing it and starting the download over", part)
    part.unlink()
    return 0


def _check_free_space(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if needed > 0 and free < needed:
        raise WeightsError(
            f"not enough free space in {folder}: need {needed / 1e6:.0f} MB, have {free / 1e6:.0f} MB"
        )


def _content_range(value: str) -> tuple[int | None, int | None]:
    """Parse ``bytes START-END/TOTAL``."""
    try:
        _unit, _, rest = value.strip().partition(" ")
        span, _, total = rest.partition("/")
        start = int(span.split("-")[0])
        return start, (int(total) if total.strip().isdigit() else None)
    except (ValueError, IndexError):
        return None, None


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.strip().isdigit() else None


def _sync(handle: IO[bytes]) -> None:
    handle.flush()
    os.fsync(handle.fileno())


def _sync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
