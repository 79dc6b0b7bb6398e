"""Shared fixtures: where the real test data lives."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


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


@pytest.fixture(scope="session")
def retinaface_store(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """A WeightStore holding the shared RetinaFace mobilenet0.25 file under a test manifest.

    The shared file is a different training run from facexlib's release, so it gets a
    manifest of its own (with its own hash) instead of posing as the published file.
    """
    import shutil

    from refrestore.weights import WeightStore, load_manifest

    src = shared_dir / "weights" / "retinaface" / "detection_mobilenet0.25_Final.pth"
    if not src.is_file():
        pytest.skip(f"shared RetinaFace weights not found at {src}")
    folder = tmp_path_factory.mktemp("weights")
    shutil.copyfile(src, folder / src.name)
    manifest = folder / "test-manifest.toml"
    manifest.write_text(
        "schema = 1\n\n[[file]]\n"
        f'name = "{src.name}"\nrole = "detector"\nmodels = ["retinaface-mobilenet"]\n'
        f'url = "https://example.invalid/{src.name}"\nsize = {SHARED_RETINAFACE_SIZE}\n'
        f'sha256 = "{SHARED_RETINAFACE_SHA256}"\nlicense = "MIT"\ncommercial = true\ndefault = true\n'
        'description = "RetinaFace MobileNet-0.25 (test copy from shared/, not the published file)"\n'
    )
    return WeightStore(folder, load_manifest(manifest))


@pytest.fixture(scope="session")
def whole_photos(shared_dir: Path) -> list[Path]:
    folder = shared_dir / "data" / "real_lq" / "whole"
    photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".png"})
    if not photos:
        pytest.skip(f"no photos in {folder}")
    return photos
