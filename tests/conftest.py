"""Shared fixtures: where the real test data lives, signal hygiene, and waiting on events."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_path() -> Path:
    """Where the shared test data is looked for: REFRESTORE_SHARED, else ../shared."""
    env = os.environ.get("REFRESTORE_SHARED")
    return Path(env) if env else REPO_ROOT.parent / "shared"


@dataclass
class BackgroundCalibration:
    """test_select's calibration data being computed by tests/calibration_data.py."""

    proc: subprocess.Popen
    work: Path
    identities: Path


CALIBRATION = pytest.StashKey[BackgroundCalibration]()


def pytest_configure(config: pytest.Config) -> None:
    """Tests send a real SIGINT (Ctrl-C) to the commands they start. A suite started in the
    background of a non-interactive shell (``bash .ci/run &``) inherits SIGINT ignored, every
    child inherits that too, and Python then never raises KeyboardInterrupt in them: give the
    children the disposition a user's terminal gives them."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start test_select's 90 s of dlib work at once, in its own process at nice 19: on two
    cores it runs beside the tests before test_select instead of after them."""
    if not any(item.path.name == "test_select.py" for item in session.items):
        return
    identities = shared_path() / "data" / "identities"
    if not identities.is_dir():
        return  # test_select skips on its own (shared_dir)
    work = Path(tempfile.mkdtemp(prefix="refrestore-calibration-"))
    with open(work / "log.txt", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("calibration_data.py")), str(identities),
             str(work / "cache"), str(work / "out")],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=dict(os.environ, OMP_NUM_THREADS="1", REFRESTORE_HOME=str(work / "home")))
    session.config.stash[CALIBRATION] = BackgroundCalibration(proc, work, identities)


def pytest_sessionfinish(session: pytest.Session) -> None:
    job = session.config.stash.get(CALIBRATION, None)
    if job is not None:
        job.proc.kill()  # a no-op once it has finished
        job.proc.wait()
        shutil.rmtree(job.work, ignore_errors=True)


def calibration_data(config: pytest.Config, timeout: float = 900) -> Any:
    """The CalibrationData of shared/data/identities, once the background job has written it."""
    from calibration_data import load

    job = config.stash.get(CALIBRATION, None)
    assert job is not None, "the calibration job was not started (test_select not collected?)"
    try:
        job.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"calibration job still running after {timeout:.0f} s:\n"
                             + (job.work / "log.txt").read_text(errors="replace")[-4000:]) from None
    assert job.proc.returncode == 0, (f"calibration job failed ({job.proc.returncode}):\n"
                                      + (job.work / "log.txt").read_text(errors="replace")[-4000:])
    return load(job.identities, job.work / "cache", job.work / "out")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test ever touches the real refrestore home, or inherits an offline setting."""
    monkeypatch.setenv("REFRESTORE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("REFRESTORE_OFFLINE", raising=False)


@pytest.fixture(autouse=True)
def _restore_signal_handlers() -> Iterator[None]:
    """In-process CLI runs (``fix`` through CliRunner) install their own SIGTERM/SIGINT
    handlers; put the ones pytest had back, so no later test inherits them."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        if handler is not None and signal.getsignal(sig) is not handler:
            signal.signal(sig, handler)


class LineWatch:
    """The lines of a subprocess's text stream, read by a thread so that a test can wait for
    one with a timeout (a bare ``readline()`` blocks for ever on a silent process)."""

    def __init__(self, stream: IO[str], label: str) -> None:
        self.label = label
        self.lines: list[str] = []
        self._closed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        try:
            for line in iter(stream.readline, ""):
                with self._cond:
                    self.lines.append(line)
                    self._cond.notify_all()
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()

    def wait_for(self, needle: str, timeout: float) -> str:
        """The first line holding ``needle``; fails with what was said so far if the stream
        closes first or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = next((line for line in self.lines if needle in line), None)
                if found is not None:
                    return found
                if self._closed:
                    raise AssertionError(f"{self.label} closed without a line holding {needle!r}; it said:\n"
                                         + "".join(self.lines))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{self.label}: no line holding {needle!r} within {timeout:.0f} s; "
                                         "so far:\n" + "".join(self.lines))
                self._cond.wait(left)

    def text(self, timeout: float = 30) -> str:
        """Everything the stream said, once it has closed (call after the process exited)."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"{self.label} still open {timeout:.0f} s after the process ended"
        with self._cond:
            return "".join(self.lines)


@pytest.fixture
def watch() -> Callable[[IO[str] | None, str], LineWatch]:
    """``watch(proc.stderr, "label")``: a LineWatch over a subprocess's pipe."""

    def make(stream: IO[str] | None, label: str) -> LineWatch:
        assert stream is not None, f"{label} is not a pipe"
        return LineWatch(stream, label)

    return make


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll a condition the code reports only through the file system (a file reaching a size),
    failing with ``what`` after ``timeout`` seconds instead of going on silently."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} (waited {timeout:.0f} s)")
        time.sleep(0.01)


@pytest.fixture
def until() -> Callable[[Callable[[], bool], float, str], None]:
    """``until(condition, timeout, what)``: see wait_until."""
    return wait_until


@pytest.fixture
def server(tmp_path: Path):
    """A real fault-injecting HTTP server on 127.0.0.1 (see weights_http_server.py)."""
    from weights_http_server import FaultServer

    srv = FaultServer(tmp_path / "served").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared (or REFRESTORE_SHARED); skips with a reason when it is absent."""
    path = shared_path()
    if not path.is_dir():
        pytest.skip(f"shared test data not found at {path} (set REFRESTORE_SHARED)")
    return path


SHARED_RETINAFACE_SHA256 = "5f88f7957d9eaef82b49b9e0202bc56e97292e2aede2999209accd34442cc4df"
SHARED_RETINAFACE_SIZE = 1786259


def store_for(folder: Path, name: str, role: str, model: str):
    """A WeightStore over ``folder`` whose manifest lists ``folder/name`` with its own size and hash.

    For files a test writes itself or copies from shared/: they are not the published files,
    so they get a manifest of their own instead of posing as them.
    """
    return store_for_files(folder, {name: (role, model)})


def store_for_files(folder: Path, files: dict[str, tuple[str, str]]):
    """As :func:`store_for`, for several files: ``{file name: (role, model)}``, in that order
    (the manifest's order is its preference order). The files must exist when this is called;
    a test may delete one afterwards to stand for "listed, not downloaded"."""
    import hashlib

    from refrestore.weights import WeightStore, load_manifest

    entries = []
    for name, (role, model) in files.items():
        data = (folder / name).read_bytes()
        entries.append(
            f'[[file]]\nname = "{name}"\nrole = "{role}"\nmodels = ["{model}"]\n'
            f'url = "https://example.invalid/{name}"\nsize = {len(data)}\nsha256 = "{hashlib.sha256(data).hexdigest()}"\n'
            'license = "test"\ncommercial = true\ndefault = true\ndescription = "written or copied by the tests"\n'
        )
    manifest = folder / "test-manifest.toml"
    manifest.write_text("schema = 1\n\n" + "\n".join(entries))
    return WeightStore(folder, load_manifest(manifest))


@pytest.fixture(scope="session")
def retinaface_store(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """A WeightStore holding the shared RetinaFace mobilenet0.25 file under a test manifest."""
    import shutil

    src = shared_dir / "weights" / "retinaface" / "detection_mobilenet0.25_Final.pth"
    if not src.is_file():
        pytest.skip(f"shared RetinaFace weights not found at {src}")
    folder = tmp_path_factory.mktemp("weights")
    shutil.copyfile(src, folder / src.name)
    store = store_for(folder, src.name, "detector", "retinaface-mobilenet")
    assert store.manifest.entry(src.name).sha256 == SHARED_RETINAFACE_SHA256
    return store


@pytest.fixture(scope="session")
def whole_photos(shared_dir: Path) -> list[Path]:
    folder = shared_dir / "data" / "real_lq" / "whole"
    photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".png"})
    if not photos:
        pytest.skip(f"no photos in {folder}")
    return photos
