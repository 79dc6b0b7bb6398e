"""``--model auto``'s "adds a better model" note names only a model that download-weights can
fetch from the store's manifest: a private manifest without GFPGAN must not send the user to a
command that fails."""
from __future__ import annotations

import hashlib
from pathlib import Path

from refrestore.restorers.registry import choose_restorer
from refrestore.weights import WeightStore, load_manifest


def _store(folder: Path, files: dict[str, str]) -> WeightStore:
    """A store whose private manifest lists exactly ``files`` (file name -> model) with the
    files' own hashes."""
    entries = []
    for name, model in files.items():
        data = (folder / name).read_bytes()
        entries.append(f'[[file]]\nname = "{name}"\nrole = "restorer"\nmodels = ["{model}"]\n'
                       f'url = "https://example.invalid/{name}"\nsize = {len(data)}\n'
                       f'sha256 = "{hashlib.sha256(data).hexdigest()}"\nlicense = "test"\ncommercial = true\n'
                       'default = true\ndescription = "a stand-in written by the test"\n')
    manifest = folder / "private.toml"
    manifest.write_text("schema = 1\n\n" + "\n".join(entries))
    return WeightStore(folder, load_manifest(manifest))


def test_auto_names_no_better_model_the_manifest_cannot_download(tmp_path: Path) -> None:
    (tmp_path / "RestoreFormer.pth").write_bytes(b"stands for the downloaded file: only its hash is checked")
    choice = choose_restorer("auto", _store(tmp_path, {"RestoreFormer.pth": "restoreformer"}))
    assert choice.spec.info.name == "restoreformer"
    assert choice.better is None  # GFPGAN ranks higher but this manifest has no entry for it


def test_auto_still_names_a_better_model_the_manifest_can_download(tmp_path: Path) -> None:
    (tmp_path / "RestoreFormer.pth").write_bytes(b"stands for the downloaded file: only its hash is checked")
    (tmp_path / "GFPGANv1.4.pth").write_bytes(b"written only to hash it for the manifest")
    store = _store(tmp_path, {"RestoreFormer.pth": "restoreformer", "GFPGANv1.4.pth": "gfpgan-v1.4"})
    (tmp_path / "GFPGANv1.4.pth").unlink()  # listed, not downloaded
    choice = choose_restorer("auto", store)
    assert choice.spec.info.name == "restoreformer"
    assert choice.better is not None and choice.better.info.name == "gfpgan-v1.4"
