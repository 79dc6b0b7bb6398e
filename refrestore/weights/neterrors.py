"""What a failed request means, in one line: a host that cannot be reached at all (no DNS, a
refused connection, no route) against a failure that may pass (a timeout, a reset, a server
error). Used by the downloader to stop at once offline and to retry otherwise."""
from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator
from urllib.parse import urlparse

import requests


def _host(url: str) -> str:
    return urlparse(url).netloc or url


_UNREACHABLE_ERRNOS = {errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH}


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and everything it wraps: requests -> urllib3 MaxRetryError -> reason -> OSError."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [a for a in getattr(e, "args", ()) if isinstance(a, BaseException)]
        for attr in ("reason", "__cause__", "__context__"):
            inner = getattr(e, attr, None)
            if isinstance(inner, BaseException):
                todo.append(inner)


def unreachable_cause(exc: BaseException, url: str) -> str | None:
    """One line saying why ``url``'s host cannot be reached at all, or None when the
    failure may pass (a timeout, a reset connection, a server error)."""
    parsed = urlparse(url)
    host = parsed.hostname or parsed.netloc or url
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    causes = list(_causes(exc))
    for e in causes:
        if isinstance(e, socket.gaierror):
            return f"cannot resolve host {host}: {e.strerror or e} (no network or no DNS?)"
    for e in causes:
        if type(e).__name__ == "NameResolutionError":
            return f"cannot resolve host {host} (no network or no DNS?)"
        if isinstance(e, OSError) and e.errno in _UNREACHABLE_ERRNOS:
            what = "connection refused by" if e.errno == errno.ECONNREFUSED else "no route to"
            return f"{what} {host}:{port} ({os.strerror(e.errno)})"
    text = str(exc)
    if "Name or service not known" in text or "Temporary failure in name resolution" in text or "nodename nor servname" in text:
        return f"cannot resolve host {host} (no network or no DNS?)"
    if "Connection refused" in text:
        return f"connection refused by {host}:{port}"
    return None


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "timed out" in text.lower() or isinstance(exc, requests.Timeout):
        return f"timed out ({type(exc).__name__})"
    return text if len(text) <= 160 else text[:157] + "..."
