"""``--model auto``'s "adds a better model" note names only a model that download-weights can
fetch from the store's manifest: a private manifest without GFPGAN must not send the user to a
command that fails."""
from __future__ import annotations

from pathlib import Path

from conftest import store_for_files

from refrestore.restorers.registry import choose_restorer


def test_auto_names_no_better_model_the_manifest_cannot_download(tmp_path: Path) -> None:
    (tmp_path / "RestoreFormer.pth").write_bytes(b"stands for the downloaded file: only its hash is checked")
    choice = choose_restorer("auto", store_for_files(tmp_path, {"RestoreFormer.pth": ("restorer", "restoreformer")}))
    assert choice.spec.info.name == "restoreformer"
    assert choice.better is None  # GFPGAN ranks higher but this manifest has no entry for it


def test_auto_still_names_a_better_model_the_manifest_can_download(tmp_path: Path) -> None:
    (tmp_path / "RestoreFormer.pth").write_bytes(b"stands for the downloaded file: only its hash is checked")
    (tmp_path / "GFPGANv1.4.pth").write_bytes(b"written only to hash it for the manifest")
    store = store_for_files(tmp_path, {"RestoreFormer.pth": ("restorer", "restoreformer"),
                                       "GFPGANv1.4.pth": ("restorer", "gfpgan-v1.4")})
    (tmp_path / "GFPGANv1.4.pth").unlink()  # listed, not downloaded
    choice = choose_restorer("auto", store)
    assert choice.spec.info.name == "restoreformer"
    assert choice.better is not None and choice.better.info.name == "gfpgan-v1.4"
