"""Downloads with no network fail fast with their real cause; a file the user has is added
as a named model after a strict load. Real subprocesses, a refused port on 127.0.0.1, an
unresolvable host name and the real RetinaFace file from shared/."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from refrestore.weights import DownloadEvent, WeightsError, WeightStore, download, load_manifest
from weights_http_server import FaultServer, make_file, write_manifest

FILES = ("det.pth", "parse.pth", "resto.pth", "upsample.pth")


def refrestore(args: list[str], home: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, REFRESTORE_HOME=str(home), OMP_NUM_THREADS="1", COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "refrestore", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def refused_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def manifest_at(tmp_path: Path, base: str) -> Path:
    """A default set of four files, all served from ``base``."""
    return write_manifest(tmp_path / "m" / "manifest.toml", [
        {"name": n, "role": "restorer", "models": [n.split(".")[0]], "url": f"{base}/{n}", "size": 1000 + i,
         "sha256": f"{i:064x}", "license": "MIT", "default": True}
        for i, n in enumerate(FILES)
    ])


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.mark.parametrize("where", ["unresolvable", "refused"])
def test_no_network_fails_fast_one_line_per_file_with_its_cause(tmp_path: Path, where: str) -> None:
    base = "http://nonexistent.invalid" if where == "unresolvable" else f"http://127.0.0.1:{refused_port()}"
    manifest, weights = manifest_at(tmp_path, base), tmp_path / "weights"
    proc = refrestore(["download-weights", "--manifest", str(manifest), "--dir", str(weights)], tmp_path / "home")
    assert proc.returncode == 1, proc.stderr
    # Failing fast is checked by what happened, not by a clock (which flakes on a loaded machine):
    # no retry below, one error line per file.
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == len(FILES), proc.stderr
    cause = "cannot resolve host nonexistent.invalid" if where == "unresolvable" else "connection refused by 127.0.0.1:"
    for name, line in zip(FILES, errors):
        assert line.startswith(f"error: {name}: download failed: {cause}"), line
        assert "Caused by" not in line and "..." not in line
        # the way in without a network, in the same line
        assert f"download-weights {name} --from-file FILE" in line and "--mirror" in line, line
    assert "retrying" not in proc.stderr
    assert [n for n in leftovers(weights) if n.endswith((".lock", ".part"))] == []


def test_refused_port_is_not_retried_but_a_server_error_is(tmp_path: Path, server: FaultServer) -> None:
    port = refused_port()
    manifest = manifest_at(tmp_path, f"http://127.0.0.1:{port}")
    store = WeightStore(tmp_path / "weights", load_manifest(manifest))
    events: list[DownloadEvent] = []
    with pytest.raises(WeightsError) as info:
        download(["det.pth"], store, progress=events.append, retries=4, backoff=1.0)
    assert f"connection refused by 127.0.0.1:{port}" in str(info.value)
    assert not [e for e in events if e.kind == "retry"]

    # A 503 can pass: it is still retried, and the download then succeeds.
    _, sha = make_file(server.root, "ok.pth", 5000)
    m2 = write_manifest(tmp_path / "m2" / "manifest.toml", [
        {"name": "ok.pth", "role": "restorer", "models": ["ok"], "url": server.url("ok.pth"), "size": 5000,
         "sha256": sha, "license": "MIT"}])
    store2 = WeightStore(tmp_path / "w2", load_manifest(m2))
    server.plan["ok.pth"] = ["503"]
    events.clear()
    download(["ok.pth"], store2, progress=events.append, retries=2, backoff=0.01)
    assert [e.kind for e in events].count("retry") == 1
    assert leftovers(tmp_path / "w2") == [".verified.json", "ok.pth"]  # no ok.pth.lock left


def test_user_file_is_added_after_a_strict_load_and_shown_as_user_added(tmp_path: Path, shared_dir: Path, whole_photos) -> None:
    src = shared_dir / "weights" / "retinaface" / "detection_mobilenet0.25_Final.pth"
    if not src.is_file():
        pytest.skip(f"shared RetinaFace weights not found at {src}")
    home, weights = tmp_path / "home", tmp_path / "weights"

    # Copied in by hand it is refused on its size, and the error names the command that adds it.
    weights.mkdir()
    shutil.copyfile(src, weights / src.name)
    proc = refrestore(["fix", str(whole_photos[0]), "-o", str(tmp_path / "x.jpg"), "--detector", "retinaface",
                       "--model", "resample", "--weights-dir", str(weights)], home)
    assert proc.returncode != 0
    assert "download-weights retinaface-mobilenet" in proc.stderr and "--from-file FILE" in proc.stderr
    (weights / src.name).unlink()

    # Another architecture's file is refused and nothing is installed.
    proc = refrestore(["download-weights", "parsenet", "--from-file", str(src), "--dir", str(weights)], home)
    assert proc.returncode == 1 and "does not load strictly into ParseNet" in proc.stderr
    assert not (weights / "parsing_parsenet.pth").exists()

    proc = refrestore(["download-weights", "retinaface-mobilenet", "--from-file", str(src), "--dir", str(weights)], home)
    assert proc.returncode == 0, proc.stderr
    assert "user-added" in proc.stdout and "RetinaFace mobilenet0.25" in proc.stdout
    assert (weights / src.name).read_bytes() == src.read_bytes()
    assert [n for n in leftovers(weights) if n.endswith((".lock", ".tmp"))] == []

    listing = json.loads(refrestore(["models", "--json", "--dir", str(weights)], home).stdout)
    row = next(f for f in listing["files"] if f["name"] == src.name)
    assert row["status"] == "present" and row["user_added"] is True
    assert next(m for m in listing["models"] if m["name"] == "retinaface-mobilenet")["user_added"] is True
    assert listing["fix_uses"]["detector"] == "retinaface-mobilenet"
    table = refrestore(["models", "--dir", str(weights)], home).stdout
    assert "present (user-added)" in table

    out, report = tmp_path / "out.png", tmp_path / "r.json"
    photo = next(p for p in whole_photos if p.name == "codeformer_02.png")
    proc = refrestore(["fix", str(photo), "-o", str(out), "--detector", "retinaface", "--model", "resample",
                       "--weights-dir", str(weights), "--json", str(report)], home, timeout=300)
    assert proc.returncode == 0, proc.stderr
    faces = json.loads(report.read_text())["images"][0]["faces"]
    assert len(faces) == 4 and {f["detector"] for f in faces} == {"retinaface_mobile0.25"}

    # The added file is pinned: changed afterwards, it reads as corrupt.
    with open(weights / src.name, "r+b") as fh:
        fh.seek(1000)
        fh.write(b"\x00" * 16)
    listing = json.loads(refrestore(["models", "--json", "--dir", str(weights)], home).stdout)
    assert next(f for f in listing["files"] if f["name"] == src.name)["status"] == "corrupt"


def test_quiet_download_prints_only_the_errors(tmp_path: Path) -> None:
    manifest = manifest_at(tmp_path, "http://nonexistent.invalid")
    proc = refrestore(["download-weights", "-q", "--manifest", str(manifest), "--dir", str(tmp_path / "w")],
                      tmp_path / "home")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == len(FILES) and all(line.startswith("error: ") for line in lines), proc.stderr
    assert proc.stdout == ""
