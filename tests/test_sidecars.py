"""Files refrestore reads back outside the gallery (weights side files such as
``.verified.json``): a FIFO, deep nesting or a huge file is ignored, never a hang or a crash
(issue 15, item 3, weights part)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from refrestore.weights.store import MAX_SIDECAR_BYTES, VERIFIED_CACHE, WeightStore


@pytest.mark.parametrize("kind", ["fifo", "nested", "huge", "list", "binary"])
def test_a_damaged_sidecar_is_ignored(tmp_path: Path, kind: str) -> None:
    side = tmp_path / VERIFIED_CACHE
    if kind == "fifo":
        os.mkfifo(side)
    elif kind == "nested":
        side.write_text("[" * 200_000 + "]" * 200_000)
    elif kind == "huge":
        with open(side, "wb") as f:
            f.truncate(MAX_SIDECAR_BYTES + 1)
    elif kind == "list":
        side.write_text("[1, 2, 3]")
    else:
        side.write_bytes(b"\xff\xfe\x00garbage")
    # In a subprocess with a timeout: a blocking read of the FIFO would hang the test run.
    code = (f"from pathlib import Path; from refrestore.weights.store import WeightStore; "
            f"print(WeightStore._read_json(Path({str(side)!r})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "{}"
    assert "Traceback" not in proc.stderr
    assert WeightStore._read_json(tmp_path / "absent.json") == {}


def _weights_folder(tmp_path: Path, sha: str) -> tuple[Path, Path]:
    """A weights folder holding one real file and a user-given manifest naming it."""
    from weights_http_server import make_file, write_manifest

    folder = tmp_path / "weights"
    _, real_sha = make_file(folder, "small.pth", 50_000)
    manifest = write_manifest(tmp_path / "manifest.toml", [{
        "name": "small.pth", "role": "restorer", "models": ["small"], "url": "https://example.org/small.pth",
        "size": 50_000, "sha256": real_sha if sha == "published" else "unknown", "license": "MIT"}])
    return folder, manifest


SIDECAR_DAMAGE = {
    # (the sidecar, the manifest's sha256: published or unknown (the recorded hash is used), the damage)
    "verified_cache_is_a_fifo": (VERIFIED_CACHE, "published", os.mkfifo),
    "verified_cache_nested": (VERIFIED_CACHE, "published",
                              lambda p: p.write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")),
    "recorded_hashes_nested": ("recorded_hashes.json", "unknown",
                               lambda p: p.write_text("{" + '"a":{' * 50_000 + "}" * 50_001)),
    "recorded_hashes_is_a_fifo": ("recorded_hashes.json", "unknown", os.mkfifo),
    "recorded_hash_not_hex": ("recorded_hashes.json", "unknown",
                              lambda p: p.write_text('{"small.pth": {"sha256": "' + "zz" * 32 + '", "size": 50000}}')),
    "user_added_size_is_true": ("user_added.json", "published",
                                lambda p: p.write_text('{"small.pth": {"sha256": "' + "a" * 64 + '", "size": true}}')),
    "user_added_sha_not_hex": ("user_added.json", "published",
                               lambda p: p.write_text('{"small.pth": {"sha256": "' + "A" * 64 + '", "size": 50000}}')),
    "user_added_huge": ("user_added.json", "published", lambda p: open(p, "wb").truncate(MAX_SIDECAR_BYTES + 1)),
}


@pytest.mark.parametrize("damage", sorted(SIDECAR_DAMAGE))
def test_damaged_weights_side_files_through_the_cli(tmp_path: Path, damage: str) -> None:
    """`refrestore models` over a folder whose side files are damaged: no hang, no traceback,
    the file still verified (present), and the side file rewritten as a plain file."""
    import json

    name, sha, write = SIDECAR_DAMAGE[damage]
    folder, manifest = _weights_folder(tmp_path, sha)
    write(folder / name)
    env = dict(os.environ, OMP_NUM_THREADS="1", REFRESTORE_HOME=str(tmp_path / "home"), REFRESTORE_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "refrestore", "models", "--json", "--dir", str(folder),
                           "--manifest", str(manifest)], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    (small,) = [m for m in json.loads(proc.stdout)["models"] if m["name"] == "small"]
    assert small["status"] == "present" and small["user_added"] is False
    side = folder / name
    if damage.startswith(("verified", "recorded")):  # these two are rewritten on the way
        assert side.is_file() and isinstance(json.loads(side.read_text()), dict)
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_a_weights_file_that_is_a_fifo_is_refused_not_read(tmp_path: Path) -> None:
    code = ("import os, sys; from pathlib import Path; from refrestore.weights import load_state_dict, WeightsError\n"
            f"p = Path({str(tmp_path / 'w.pth')!r}); os.mkfifo(p)\n"
            "try: load_state_dict(p)\n"
            "except WeightsError as e: print(e)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "not a regular file" in proc.stdout, proc.stderr
