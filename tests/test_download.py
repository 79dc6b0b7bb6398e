"""The downloader against a real HTTP server on 127.0.0.1 that injects faults."""
from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from refrestore.weights import (
    DownloadEvent,
    Manifest,
    ManifestEntry,
    WeightsError,
    WeightStore,
    download,
    load_manifest,
    load_state_dict,
)
from weights_http_server import FaultServer, make_file, write_manifest

SIZE = 2 * 1024 * 1024 + 123  # a few MB, not a multiple of the chunk size
NAME = "tiny_restorer.pth"


@pytest.fixture
def served(server: FaultServer, tmp_path: Path):
    """One served file, a user manifest pointing at it, and an empty weights store."""
    path, sha = make_file(server.root, NAME, SIZE)
    manifest = write_manifest(tmp_path / "m" / "manifest.toml", [entry(NAME, server.url(NAME), SIZE, sha)])
    store = WeightStore(tmp_path / "weights", load_manifest(manifest))
    return store, sha, path.read_bytes()


def entry(name: str, url: str, size: int, sha: str, **extra: object) -> dict[str, object]:
    return {"name": name, "role": "restorer", "models": ["tiny"], "url": url, "size": size,
            "sha256": sha, "license": "MIT", **extra}


def fetch(store: WeightStore, **kwargs: object) -> tuple[list[Path], list[DownloadEvent]]:
    events: list[DownloadEvent] = []
    kwargs.setdefault("timeout", 2.0)
    kwargs.setdefault("backoff", 0.01)
    paths = download([NAME], store, progress=events.append, **kwargs)  # type: ignore[arg-type]
    return paths, events


def leftovers(store: WeightStore) -> list[str]:
    return sorted(p.name for p in store.directory.iterdir() if not p.name.endswith(".lock")
                  and not p.name.startswith("."))


def test_download_installs_the_verified_file(served) -> None:
    store, sha, data = served
    paths, events = fetch(store)
    assert paths == [store.directory / NAME]
    assert paths[0].read_bytes() == data
    assert store.find(NAME) == paths[0]
    assert leftovers(store) == [NAME]  # no .part left behind
    assert events[0].kind == "warning" and "plain http" in events[0].message
    kinds = [e.kind for e in events[1:]]
    assert kinds[0] == "start" and kinds[-1] == "done" and "progress" in kinds
    assert events[-1].message == sha


def test_cut_connection_resumes_with_range(served, server: FaultServer) -> None:
    store, sha, _data = served
    server.plan[NAME] = ["cut"]
    paths, events = fetch(store)
    assert hashlib.sha256(paths[0].read_bytes()).hexdigest() == sha
    first, second = server.requests_for(NAME)
    assert first.mode == "cut" and first.range is None
    # Resumes from what reached the disk: at most the half the server sent before the cut.
    assert second.status == 206 and second.range is not None
    assert 0 < int(second.range.removeprefix("bytes=").rstrip("-")) <= SIZE // 2
    assert any(e.kind == "retry" for e in events)


def test_partial_file_is_kept_and_resumed_by_the_next_run(served, server: FaultServer) -> None:
    store, _sha, data = served
    server.plan[NAME] = ["cut"]
    with pytest.raises(WeightsError, match="partial file is kept"):
        fetch(store, retries=0)
    part = store.directory / (NAME + ".part")
    kept = part.stat().st_size
    assert 0 < kept <= SIZE // 2
    assert store.find(NAME) is None  # a partial file is never taken for the real one
    paths, _ = fetch(store)
    assert paths[0].read_bytes() == data
    assert server.requests_for(NAME)[-1].range == f"bytes={kept}-"
    assert not part.exists()


def test_server_error_then_success(served, server: FaultServer) -> None:
    store, _sha, data = served
    server.plan[NAME] = ["500", "503"]
    paths, events = fetch(store)
    assert paths[0].read_bytes() == data
    assert [r.status for r in server.requests_for(NAME)] == [500, 503, 200]
    assert sum(e.kind == "retry" for e in events) == 2


def test_persistent_server_errors_give_up(served, server: FaultServer) -> None:
    store, _, _ = served
    server.plan[NAME] = ["500"] * 10
    with pytest.raises(WeightsError, match="HTTP 500"):
        fetch(store, retries=2)
    assert len(server.requests_for(NAME)) == 3
    assert not (store.directory / NAME).exists()


def test_server_that_ignores_range_restarts_clean(served, server: FaultServer) -> None:
    store, _sha, data = served
    store.directory.mkdir(parents=True)
    # A stale partial file whose bytes are not the file's: a blind append would corrupt it.
    (store.directory / (NAME + ".part")).write_bytes(b"\x00" * (SIZE // 3))
    server.plan[NAME] = ["ignore_range"]
    paths, events = fetch(store)
    assert paths[0].read_bytes() == data
    (request,) = server.requests_for(NAME)
    assert request.range == f"bytes={SIZE // 3}-" and request.status == 200
    assert any(e.kind == "restart" for e in events)


def test_stale_partial_file_from_another_file_is_redone_once(served, server: FaultServer) -> None:
    store, _sha, data = served
    store.directory.mkdir(parents=True)
    (store.directory / (NAME + ".part")).write_bytes(b"\x00" * (SIZE // 3))  # wrong bytes
    paths, _events = fetch(store)  # server honours Range: the result fails, then one clean try
    assert paths[0].read_bytes() == data
    assert [r.status for r in server.requests_for(NAME)] == [206, 200]


def fetch_within(limit: float, store: WeightStore, **kwargs: object) -> BaseException | None:
    """``fetch`` in a thread: the error it raised (None if none), failing the test if it does
    not return within ``limit`` seconds (a read timeout that is not applied hangs)."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            fetch(store, **kwargs)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(limit)
    assert outcome, f"the download did not give up within {limit:.0f} s against a silent server"
    return outcome[0]


@pytest.mark.parametrize("kind", ["fifo", "link"])
def test_a_partial_file_that_is_not_a_regular_file_is_replaced_not_read(served, server: FaultServer,
                                                                       tmp_path: Path, kind: str) -> None:
    """A FIFO where the .part goes blocked the resume's read for ever; a link would have been
    appended to wherever it points. Either is removed and the download starts over."""
    import os

    store, _sha, data = served
    store.directory.mkdir(parents=True)
    part = store.directory / (NAME + ".part")
    elsewhere = tmp_path / "not-ours.bin"
    elsewhere.write_bytes(b"keep me")
    os.mkfifo(part) if kind == "fifo" else part.symlink_to(elsewhere)
    assert fetch_within(60, store) is None
    assert store.find(NAME).read_bytes() == data  # type: ignore[union-attr]
    assert not os.path.lexists(part) and elsewhere.read_bytes() == b"keep me"


def test_slow_server_times_out_then_resumes(served, server: FaultServer) -> None:
    store, _sha, data = served
    # Headers, then silence until teardown: only the client's read timeout ends each attempt.
    server.plan[NAME] = ["stall", "stall"]
    error = fetch_within(60, store, timeout=0.5, retries=1)
    assert isinstance(error, WeightsError) and "timed out" in str(error), error
    # A loaded server thread may log a request after the client has given up on it.
    assert [r.mode for r in server.wait_for_requests(NAME, 2)] == ["stall", "stall"]
    # A server that sends 1 KB and goes silent: the 1 KB is kept and the next run continues.
    # (A longer timeout here: the 1 KB must arrive before the client gives up.)
    server.plan[NAME] = ["stall_1k"]
    error = fetch_within(60, store, timeout=2.0, retries=0)
    assert isinstance(error, WeightsError) and "timed out" in str(error), error
    assert server.wait_for_requests(NAME, 3)[2].mode == "stall_1k"
    assert (store.directory / (NAME + ".part")).stat().st_size == 1024
    paths, _ = fetch(store, timeout=30)
    assert paths[0].read_bytes() == data
    # The first request after the stall resumes at the kept 1 KB.
    assert server.requests_for(NAME)[3].range == "bytes=1024-"


def test_redirect_is_followed(server: FaultServer, tmp_path: Path) -> None:
    _, sha = make_file(server.root, NAME, SIZE)
    manifest = write_manifest(tmp_path / "manifest.toml", [entry(NAME, server.url(NAME, "redirect"), SIZE, sha)])
    store = WeightStore(tmp_path / "weights", load_manifest(manifest))
    paths, _ = fetch(store)
    assert store.find(NAME) == paths[0]
    assert [r.status for r in server.requests_for(NAME)] == [302, 200]


def test_missing_file_is_not_retried(server: FaultServer, tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "manifest.toml", [entry(NAME, server.url(NAME), SIZE, "0" * 64)])
    store = WeightStore(tmp_path / "weights", load_manifest(manifest))
    with pytest.raises(WeightsError, match="HTTP 404"):
        fetch(store)
    assert len(server.requests_for(NAME)) == 1


def test_server_size_differing_from_manifest_is_an_error(served, server: FaultServer) -> None:
    store, _, _ = served
    server.plan[NAME] = ["big"]
    with pytest.raises(WeightsError, match="manifest says"):
        fetch(store)
    assert leftovers(store) == []


def test_present_file_is_not_fetched_again_unless_forced(served, server: FaultServer) -> None:
    store, _sha, _data = served
    fetch(store)
    _, events = fetch(store)
    assert [e.kind for e in events] == ["warning", "skip"]
    assert len(server.requests_for(NAME)) == 1
    fetch(store, force=True)
    assert len(server.requests_for(NAME)) == 2


def test_corrupt_copy_is_replaced(served, server: FaultServer) -> None:
    store, _sha, data = served
    fetch(store)
    target = store.directory / NAME
    target.write_bytes(b"\xff" * SIZE)  # right size, wrong bytes
    with pytest.raises(WeightsError, match="download-weights --force"):
        store.find(NAME)
    paths, events = fetch(store)
    assert paths[0].read_bytes() == data
    assert any(e.kind == "warning" and "downloading it again" in e.message for e in events)


def test_concurrent_downloads_in_threads_end_with_one_file(served, server: FaultServer) -> None:
    store, _sha, data = served
    server.plan[NAME] = ["hold"]
    results: dict[str, object] = {}
    waiting = threading.Event()

    def run(key: str, progress) -> None:
        try:
            results[key] = download([NAME], WeightStore(store.directory, store.manifest),
                                    progress=progress, timeout=60)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertions below
            results[key] = exc

    first = threading.Thread(target=run, args=("a", None))
    first.start()
    second = None
    try:
        assert server.holding.wait(120), "the first download never got half-way"
        second = threading.Thread(target=run, args=("b", lambda e: waiting.set() if e.kind == "wait" else None))
        second.start()
        assert waiting.wait(120), "the second download did not report waiting for the lock"
    finally:
        server.gate.set()
        first.join(120)
        if second is not None:
            second.join(120)
    assert results["a"] == results["b"] == [store.directory / NAME]
    assert (store.directory / NAME).read_bytes() == data
    assert len(server.requests_for(NAME)) == 1  # the second found the finished file
    assert leftovers(store) == [NAME]


def test_concurrent_cli_processes_end_with_one_file(served, server: FaultServer, watch) -> None:
    store, _sha, data = served
    server.plan[NAME] = ["hold"]
    cmd = [sys.executable, "-m", "refrestore", "download-weights", NAME,
           "--manifest", str(store.manifest.source), "--dir", str(store.directory)]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = None
    try:
        assert server.holding.wait(120), "the first process never got half-way through its download"
        second = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out_b, err_b = watch(second.stdout, "second's stdout"), watch(second.stderr, "second's stderr")
        # The second process reports that it waits for the first one's lock ...
        err_b.wait_for("another process is downloading it; waiting", 120)
        server.gate.set()  # ... and only then does the first one get the rest of the file.
        out_a, err_a = first.communicate(timeout=120)
        second.wait(timeout=120)
    finally:
        server.gate.set()
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
    assert first.returncode == 0, err_a
    assert second.returncode == 0, err_b.text()
    assert (store.directory / NAME).read_bytes() == data
    assert len(server.requests_for(NAME)) == 1  # the second found the finished file
    assert f"ok  {NAME}" in out_a and f"ok  {NAME}" in out_b.text()
    assert "already present" in err_b.text()


def test_file_mirror_works_offline(served, server: FaultServer, monkeypatch: pytest.MonkeyPatch) -> None:
    store, _sha, data = served
    monkeypatch.setenv("REFRESTORE_OFFLINE", "1")
    paths, _ = fetch(store, mirror=str(server.root))
    assert paths[0].read_bytes() == data
    assert server.log == []


def test_http_mirror_is_allowed_with_a_warning(served, server: FaultServer, tmp_path: Path) -> None:
    store, sha, data = served
    packaged_like = Manifest(
        entries=[ManifestEntry(NAME, "restorer", "https://example.invalid/" + NAME, SIZE, sha, "MIT", ["tiny"])],
        source=tmp_path / "manifest.toml",
    )
    store = WeightStore(tmp_path / "w2", packaged_like)
    paths, events = fetch(store, mirror=server.base + "/files")
    assert paths[0].read_bytes() == data
    assert any(e.kind == "warning" and "plain http" in e.message for e in events)


def test_http_url_in_a_non_user_manifest_is_refused(served, server: FaultServer, tmp_path: Path) -> None:
    _store, sha, _ = served
    packaged_like = Manifest(
        entries=[ManifestEntry(NAME, "restorer", server.url(NAME), SIZE, sha, "MIT", ["tiny"])],
        source=tmp_path / "manifest.toml",
    )
    with pytest.raises(WeightsError, match="only https"):
        fetch(WeightStore(tmp_path / "w2", packaged_like))
    assert server.log == []


def test_unknown_hash_is_recorded_then_enforced(server: FaultServer, tmp_path: Path) -> None:
    _, sha = make_file(server.root, NAME, SIZE)
    manifest = write_manifest(tmp_path / "manifest.toml", [entry(NAME, server.url(NAME), SIZE, "unknown")])
    store = WeightStore(tmp_path / "weights", load_manifest(manifest))
    assert store.manifest.entries[0].sha256 is None
    fetch(store)
    assert store.recorded_hash(store.manifest.entries[0]) == sha
    (store.directory / NAME).write_bytes(b"\x01" * SIZE)
    with pytest.raises(WeightsError, match="does not match its sha256"):
        store.find(NAME)
    # A download that differs from the recorded hash is refused as well.
    server.plan[NAME] = ["wrong"]
    with pytest.raises(WeightsError, match="nothing was installed"):
        fetch(store)


def test_shared_retinaface_file_through_a_test_manifest(shared_dir: Path, tmp_path: Path) -> None:
    """The shared detector is a different training run than facexlib's release: it goes
    through its own manifest and hash, and must then load into facexlib's architecture."""
    torch.set_num_threads(1)
    folder = shared_dir / "weights" / "retinaface"
    name = "detection_mobilenet0.25_Final.pth"
    if not (folder / name).is_file():
        pytest.skip(f"{folder / name} not present")
    srv = FaultServer(folder).start()
    try:
        srv.plan[name] = ["cut"]
        manifest = write_manifest(tmp_path / "manifest.toml", [{
            "name": name, "role": "detector", "models": ["retinaface-mobilenet"], "url": srv.url(name),
            "size": 1786259, "sha256": "5f88f7957d9eaef82b49b9e0202bc56e97292e2aede2999209accd34442cc4df",
            "license": "MIT",
        }])
        store = WeightStore(tmp_path / "weights", load_manifest(manifest))
        (path,) = download([name], store, timeout=5, backoff=0.01)
    finally:
        srv.stop()
    state = load_state_dict(path)
    from facexlib.detection.retinaface import RetinaFace

    net = RetinaFace(network_name="mobile0.25", half=False, phase="test", device="cpu")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    net.load_state_dict(state, strict=True)
    assert store.has_model("retinaface-mobilenet")
