"""Shared fixtures: where the real test data lives."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test ever touches the real refrestore home, or inherits an offline setting."""
    monkeypatch.setenv("REFRESTORE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("REFRESTORE_OFFLINE", raising=False)


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
    env = os.environ.get("REFRESTORE_SHARED")
    path = Path(env) if env else REPO_ROOT.parent / "shared"
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
    import hashlib

    from refrestore.weights import WeightStore, load_manifest

    data = (folder / name).read_bytes()
    manifest = folder / "test-manifest.toml"
    manifest.write_text(
        f'schema = 1\n\n[[file]]\nname = "{name}"\nrole = "{role}"\nmodels = ["{model}"]\n'
        f'url = "https://example.invalid/{name}"\nsize = {len(data)}\nsha256 = "{hashlib.sha256(data).hexdigest()}"\n'
        'license = "test"\ncommercial = true\ndefault = true\ndescription = "written or copied by the tests"\n'
    )
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
