"""The packaged manifest, manifest validation, the weight store's checks, and safe loading."""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pytest
import torch

from refrestore import paths
from refrestore.weights import (
    ROLES,
    WeightsError,
    WeightStore,
    load_manifest,
    load_state_dict,
    preferred,
)
from weights_http_server import make_file, write_manifest

# The published files as listed in issue 3 (gathered from several public manifests).
PUBLISHED = {
    "detection_Resnet50_Final.pth": ("https://github.com/xinntao/facexlib/releases/download/v0.1.0/detection_Resnet50_Final.pth", 109497761, "6d1de9c2944f2ccddca5f5e010ea5ae64a39845a86311af6fdf30841b0a5a16d"),
    "detection_mobilenet0.25_Final.pth": ("https://github.com/xinntao/facexlib/releases/download/v0.1.0/detection_mobilenet0.25_Final.pth", 1789735, "2979b33ffafda5d74b6948cd7a5b9a7a62f62b949cef24e95fd15d2883a65220"),
    "parsing_parsenet.pth": ("https://github.com/xinntao/facexlib/releases/download/v0.2.2/parsing_parsenet.pth", 85331193, "3d558d8d0e42c20224f13cf5a29c79eba2d59913419f945545d8cf7b72920de2"),
    "parsing_bisenet.pth": ("https://github.com/xinntao/facexlib/releases/download/v0.2.0/parsing_bisenet.pth", 53289463, "468e13ca13a9b43cc0881a9f99083a430e9c0a38abd935431d1c28ee94b26567"),
    # the sha256 the shared copy has (../shared/README.md): tests/test_mobilefacenet.py checks the file itself
    "mobilefacenet.pt": ("https://raw.githubusercontent.com/foamliu/MobileFaceNet/a6cc9032a659b615f477833e1a70b5e7931bcccc/weights/mobilefacenet.pt", 4135271, "90a00ba1d8b0b688af3deb731ed53dca582e6106805d1bc3cfdef55f570493f4"),
    "recognition_arcface_ir_se50.pth": ("https://github.com/xinntao/facexlib/releases/download/v0.1.0/recognition_arcface_ir_se50.pth", 175367323, "a035c768259b98ab1ce0e646312f48b9e1e218197a0f80ac6765e88f8b6ddf28"),
    "GFPGANv1.4.pth": ("https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.4.pth", 348632874, "e2cd4703ab14f4d01fd1383a8a8b266f9a5833dacee8e6a79d3bf21a1b6be5ad"),
    "GFPGANv1.3.pth": ("https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.3.pth", 348632874, "c953a88f2727c85c3d9ae72e2bd4846bbaf59fe6972ad94130e23e7017524a70"),
    "RestoreFormer.pth": ("https://github.com/TencentARC/GFPGAN/releases/download/v1.3.4/RestoreFormer.pth", 290785322, "07404d446d62ca3d5ed38b1de09a947a1e77d46dbccec961a74d713a8f24ace0"),
    "codeformer.pth": ("https://github.com/sczhou/CodeFormer/releases/download/v0.1.0/codeformer.pth", 376637898, "1009e537e0c2a07d4cabce6355f53cb66767cd4b4297ec7a4a64ca4b8a5684b7"),
    "RealESRGAN_x2plus.pth": ("https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.1/RealESRGAN_x2plus.pth", 67061725, "49fafd45f8fd7aa8d31ab2a22d14d91b536c34494a5cfe31eb5d89c2fa266abb"),
}


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFRESTORE_HOME", str(tmp_path / "home"))


# ---- the packaged manifest ----------------------------------------------------------------

def test_every_packaged_entry_is_complete() -> None:
    manifest = load_manifest()
    assert manifest.source == paths.models_dir() / "manifest.toml"
    assert not manifest.user_supplied
    names = [e.name for e in manifest.entries]
    assert len(names) == len(set(names))
    for e in manifest.entries:
        assert e.role in ROLES, e.name
        assert e.license.strip(), e.name
        assert e.models, e.name
        assert e.description, e.name
        if e.embedded:
            assert e.url is None
            continue
        assert e.url is not None and e.url.startswith("https://"), e.name
        assert isinstance(e.size, int) and e.size > 0, e.name
        if e.sha256 is not None:
            assert re.fullmatch(r"[0-9a-f]{64}", e.sha256), e.name


def test_packaged_entries_match_the_published_files() -> None:
    manifest = load_manifest()
    published = {e.name: (e.url, e.size, e.sha256) for e in manifest.entries if not e.embedded}
    assert published == PUBLISHED


def test_roles_models_and_download_sets() -> None:
    m = load_manifest()
    assert [e.name for e in m.default_entries()] == [
        "detection_Resnet50_Final.pth", "detection_mobilenet0.25_Final.pth", "parsing_parsenet.pth",
        "mobilefacenet.pt", "GFPGANv1.4.pth", "RestoreFormer.pth",
    ]
    expected_models = {
        "gfpgan-v1.4": "GFPGANv1.4.pth", "gfpgan-v1.3": "GFPGANv1.3.pth", "restoreformer": "RestoreFormer.pth",
        "codeformer": "codeformer.pth", "retinaface-resnet50": "detection_Resnet50_Final.pth",
        "retinaface-mobilenet": "detection_mobilenet0.25_Final.pth", "parsenet": "parsing_parsenet.pth",
        "bisenet": "parsing_bisenet.pth", "arcface": "recognition_arcface_ir_se50.pth",
        "mobilefacenet": "mobilefacenet.pt", "mobilefacenet-lr": "mobilefacenet_lr.pt",
        "realesrgan-x2": "RealESRGAN_x2plus.pth", "refnet-small": "refnet_small.pth",
    }
    for model, file_name in expected_models.items():
        assert [e.name for e in m.for_model(model)] == [file_name]
    codeformer = m.entry("codeformer.pth")
    assert codeformer.on_request_only and not codeformer.commercial and not codeformer.default
    assert "non-commercial" in codeformer.license
    assert codeformer not in m.downloadable_entries()
    assert m.entry("recognition_arcface_ir_se50.pth").role == "identity"
    assert not m.entry("recognition_arcface_ir_se50.pth").default
    # v1.3 and v1.4 share a size: only the hash tells them apart.
    v13, v14 = m.entry("GFPGANv1.3.pth"), m.entry("GFPGANv1.4.pth")
    assert v13.size == v14.size and v13.sha256 != v14.sha256
    refnet = m.entry("refnet_small.pth")
    assert refnet.embedded and refnet.role == "restorer" and refnet.license == "CC BY-NC-SA 4.0"
    assert not refnet.commercial and refnet.size is None and refnet.sha256 is None
    assert m.embedded_path(refnet) == paths.models_dir() / "refnet_small.pth"


def test_every_model_card_exists() -> None:
    manifest = load_manifest()
    for e in manifest.entries:
        assert e.card, e.name
        card = manifest.folder / e.card
        assert card.is_file(), f"missing model card {card}"
        text = card.read_text(encoding="utf-8")
        assert "icen" in text  # every card states the licence


def test_resolve_accepts_file_and_model_names() -> None:
    m = load_manifest()
    got = m.resolve(["gfpgan-v1.4", "GFPGANv1.4.pth", "parsenet"])
    assert [e.name for e in got] == ["GFPGANv1.4.pth", "parsing_parsenet.pth"]
    with pytest.raises(WeightsError, match="unknown weights file or model 'nope'"):
        m.resolve(["nope"])


# ---- validation ---------------------------------------------------------------------------

def good(**over: object) -> dict[str, object]:
    base: dict[str, object] = {"name": "ok.pth", "role": "restorer", "models": ["ok"],
                               "url": "https://example.org/ok.pth", "size": 10, "sha256": "a" * 64,
                               "license": "MIT"}
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


@pytest.mark.parametrize("name", ["../evil.pth", "/etc/evil.pth", "sub/evil.pth", "..", ".",
                                  ".hidden.pth", "C:\\evil.pth", "..\\evil.pth", "evil.pth.part",
                                  "evil.pth.lock", "recorded_hashes.json", ""])
def test_names_that_could_escape_or_collide_are_rejected(tmp_path: Path, name: str) -> None:
    manifest = write_manifest(tmp_path / "manifest.toml", [good(name=name)])
    with pytest.raises(WeightsError, match="invalid weights file name") as info:
        load_manifest(manifest)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("over", "message"), [
    ({"role": "painter"}, "role 'painter'"),
    ({"size": None}, "missing size"),
    ({"size": 0}, "positive"),
    ({"sha256": "abc"}, "64 hex"),
    ({"license": ""}, "empty license"),
    ({"url": "ftp://example.org/x.pth"}, "only https, http or file"),
    ({"url": None}, "missing url"),
    ({"models": []}, "models must be"),
    ({"colour": "red"}, "unknown keys"),
    ({"embedded": True, "url": None, "path": "../outside.pth"}, "must stay inside"),
    ({"card": "/etc/passwd"}, "must stay inside"),
])
def test_bad_entries_are_rejected_in_one_line(tmp_path: Path, over: dict[str, object], message: str) -> None:
    manifest = write_manifest(tmp_path / "manifest.toml", [good(**over)])
    with pytest.raises(WeightsError, match=re.escape(message)) as info:
        load_manifest(manifest)
    assert "\n" not in str(info.value) and str(manifest) in str(info.value)


def test_duplicates_bad_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="duplicate file name"):
        load_manifest(write_manifest(tmp_path / "a.toml", [good(), good()]))
    bad = tmp_path / "b.toml"
    bad.write_text("schema = 1\n[[file]\nname = 'x'\n")
    with pytest.raises(WeightsError, match="not valid TOML") as info:
        load_manifest(bad)
    assert "\n" not in str(info.value)
    with pytest.raises(WeightsError, match="manifest not found"):
        load_manifest(tmp_path / "absent.toml")
    wrong_schema = tmp_path / "c.toml"
    wrong_schema.write_text("schema = 2\n")
    with pytest.raises(WeightsError, match="schema must be 1"):
        load_manifest(wrong_schema)


def test_http_and_file_urls_only_in_user_given_manifests(tmp_path: Path) -> None:
    path = write_manifest(tmp_path / "m.toml", [good(url="http://mirror.lan/ok.pth"),
                                                good(name="f.pth", url="file:///srv/f.pth")])
    assert load_manifest(path).user_supplied
    with pytest.raises(WeightsError, match="only https"):
        load_manifest(path, user_supplied=False)


def test_embedded_entries_need_no_size_or_hash(tmp_path: Path) -> None:
    path = write_manifest(tmp_path / "m.toml", [good(name="own.pth", url=None, size=None, sha256=None,
                                                     embedded=True, path="own.pth")])
    store = WeightStore(tmp_path / "weights", load_manifest(path))
    assert store.path("own.pth") == tmp_path / "own.pth"
    assert store.find("own.pth") is None and not store.has_model("ok")
    with pytest.raises(WeightsError, match="reinstall refrestore"):
        store.require("own.pth")
    (tmp_path / "own.pth").write_bytes(b"weights")
    assert store.find("own.pth") == tmp_path / "own.pth"
    assert store.has_model("ok") and preferred(store, "restorer") == "ok"


# ---- the store ----------------------------------------------------------------------------

@pytest.fixture
def small_store(tmp_path: Path):
    src, sha = make_file(tmp_path / "src", "small.pth", 50_000)
    manifest = write_manifest(tmp_path / "m" / "manifest.toml",
                              [good(name="small.pth", size=50_000, sha256=sha, models=["small"])])
    store = WeightStore(tmp_path / "weights", load_manifest(manifest))
    store.directory.mkdir()
    return store, src.read_bytes()


def test_path_never_leaves_the_weights_folder(small_store) -> None:
    store, _ = small_store
    assert store.path("small.pth") == store.directory / "small.pth"
    for name in ("../x.pth", "/tmp/x.pth", "a/../../x.pth", ".."):
        with pytest.raises(WeightsError):
            store.path(name)


def test_missing_file_tells_what_to_run(small_store) -> None:
    store, _ = small_store
    assert store.find("small.pth") is None and not store.has_model("small")
    with pytest.raises(WeightsError, match=r"run `refrestore download-weights small --dir .* --manifest .*`"):
        store.require("small.pth")
    with pytest.raises(WeightsError, match="no weights file named"):
        store.find("other.pth")


def test_default_store_hint_is_the_plain_command(tmp_path: Path) -> None:
    store = WeightStore()  # REFRESTORE_HOME points into tmp_path
    assert store.directory == tmp_path / "home" / "weights"
    with pytest.raises(WeightsError, match=r"run `refrestore download-weights gfpgan-v1.4`$"):
        store.require("GFPGANv1.4.pth")


def test_tampered_file_is_never_returned(small_store) -> None:
    store, data = small_store
    target = store.directory / "small.pth"
    target.write_bytes(data)
    assert store.find("small.pth") == target and store.has_model("small")
    stat = target.stat()
    target.write_bytes(bytes(b ^ 0xFF for b in data[:10]) + data[10:])  # same size, other bytes
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with the old mtime
    with pytest.raises(WeightsError, match=r"small.pth does not match its sha256.*download-weights --force small.pth"):
        store.find("small.pth")
    with pytest.raises(WeightsError):
        store.require("small.pth")
    assert store.status("small.pth").state == "corrupt"
    target.write_bytes(data[:-1])
    with pytest.raises(WeightsError, match="has 49999 bytes but the manifest says 50000"):
        store.find("small.pth")


def test_verification_is_cached_by_file_identity(small_store) -> None:
    store, data = small_store
    target = store.directory / "small.pth"
    target.write_bytes(data)
    store.find("small.pth")
    cache = store.directory / ".verified.json"
    text = cache.read_text()
    good_sha = hashlib.sha256(data).hexdigest()
    assert good_sha in text
    # Poison the cached hash for the unchanged file: the cache is what find() trusts...
    cache.write_text(text.replace(good_sha, "b" * 64))
    with pytest.raises(WeightsError, match="does not match"):
        store.find("small.pth")
    # ...until the file itself changes (rewritten with the right bytes), which forces a re-hash.
    target.write_bytes(data)
    assert store.find("small.pth") == target


# ---- loading ------------------------------------------------------------------------------

def test_load_state_dict_unwraps_and_refuses_garbage(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    weights = {"conv.weight": torch.randn(2, 3), "conv.bias": torch.zeros(2)}
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"params_ema": weights, "params": {"x": torch.ones(1)}, "iter": 5}, wrapped)
    got = load_state_dict(wrapped)
    assert set(got) == set(weights) and torch.equal(got["conv.weight"], weights["conv.weight"])
    nested = tmp_path / "nested.ckpt"
    torch.save({"state_dict": {"model": weights}, "epoch": 3}, nested)
    assert set(load_state_dict(nested)) == set(weights)
    plain = tmp_path / "plain.pth"
    torch.save(weights, plain)
    assert set(load_state_dict(plain)) == set(weights)

    from safetensors.torch import save_file

    st = tmp_path / "w.safetensors"
    save_file(weights, str(st))
    assert torch.equal(load_state_dict(st)["conv.bias"], weights["conv.bias"])

    garbage = tmp_path / "GFPGANv1.4.pth"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(WeightsError, match=r"GFPGANv1.4.pth cannot be read as weights.*download-weights --force GFPGANv1.4.pth") as info:
        load_state_dict(garbage)
    assert "\n" not in str(info.value)
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(WeightsError, match="bad.safetensors cannot be read"):
        load_state_dict(bad_st)
    empty = tmp_path / "empty.pth"
    torch.save({"epoch": 1}, empty)
    with pytest.raises(WeightsError, match="holds no tensors"):
        load_state_dict(empty)


class _Payload:
    """An object a weights file must never be allowed to smuggle in."""


def test_load_state_dict_never_unpickles_arbitrary_objects(tmp_path: Path) -> None:
    evil = tmp_path / "evil.pth"
    torch.save({"weight": _Payload()}, evil)  # a real pickle holding a non-tensor class
    with pytest.raises(WeightsError, match="evil.pth cannot be read as weights"):
        load_state_dict(evil, "evil.pth")


def test_preferred_skips_corrupt_and_on_request_models(tmp_path: Path) -> None:
    files = {n: make_file(tmp_path / "w", n, 1000) for n in ("a.pth", "b.pth", "c.pth")}
    manifest = write_manifest(tmp_path / "m.toml", [
        good(name="a.pth", models=["a"], size=1000, sha256=files["a.pth"][1]),
        good(name="b.pth", models=["b"], size=1000, sha256=files["b.pth"][1], on_request_only=True),
        good(name="c.pth", models=["c"], size=1000, sha256=files["c.pth"][1]),
    ])
    store = WeightStore(tmp_path / "w", load_manifest(manifest))
    assert preferred(store, "restorer") == "a"
    (tmp_path / "w" / "a.pth").write_bytes(b"\0" * 1000)
    assert preferred(store, "restorer") == "c"
    assert preferred(store, "detector") is None
