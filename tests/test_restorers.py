"""Restorers: the registry, the weight-free restorer, and published architectures loaded by
spandrel from checkpoints this test writes itself (random weights, published key layout)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from refrestore.restorers.registry import RestorerError, build_restorer, choose_restorer, get_spec, restorer_names
from conftest import store_for
from refrestore.weights import WeightsError, WeightStore

torch.set_num_threads(2)


def _random_checkpoint(arch: str, path: Path) -> None:
    """Random weights of the published architecture, saved like the release files."""
    torch.manual_seed(0)
    if arch == "gfpgan":
        from spandrel.architectures.GFPGAN import GFPGAN

        net = GFPGAN(out_size=512, num_style_feat=512, channel_multiplier=2, decoder_load_path=None, fix_decoder=False,
                     num_mlp=8, input_is_latent=True, different_w=True, narrow=1, sft_half=True)
    elif arch == "restoreformer":
        from spandrel.architectures.RestoreFormer import RestoreFormer

        net = RestoreFormer()
    else:
        from spandrel_extra_arches.architectures.CodeFormer import CodeFormer

        net = CodeFormer()
    torch.save({"params_ema": net.state_dict()}, path)


def _store_with(tmp_path: Path, name: str, model: str) -> WeightStore:
    return store_for(tmp_path, name, "restorer", model)


def _faces(shared_dir: Path, n: int) -> list[np.ndarray]:
    from PIL import Image

    files = sorted((shared_dir / "data" / "real_lq" / "cropped_faces").glob("*.png"))[:n]
    return [np.array(Image.open(f).convert("RGB").resize((512, 512))) for f in files]


@pytest.mark.parametrize(
    "arch,file_name,model",
    [
        ("gfpgan", "GFPGANv1.4.pth", "gfpgan-v1.4"),
        ("restoreformer", "RestoreFormer.pth", "restoreformer"),
        ("codeformer", "codeformer.pth", "codeformer"),
    ],
)
def test_published_architecture_loads_and_restores_a_batch(tmp_path, shared_dir, arch, file_name, model):
    _random_checkpoint(arch, tmp_path / file_name)
    store = _store_with(tmp_path, file_name, model)
    spec = get_spec(model)
    restorer = build_restorer(spec, store, torch.device("cpu"), half=True)
    assert restorer.info.name == model and not restorer.info.uses_references
    # fp16 is only used on CUDA; on the CPU the model stays in fp32.
    assert next(restorer.model.parameters()).dtype == torch.float32
    # Two faces are a batch (one forward of two, the batch size is 4); each CPU forward of
    # these 512 px networks takes seconds, so no more faces than that.
    faces = _faces(shared_dir, 2)
    out = restorer.restore(faces, [[], []])
    assert len(out) == 2
    # The output is the network's, called with the published convention (RGB in [-1, 1],
    # the first output back from [-1, 1]): a missing rescale, swapped channels or the wrong
    # output of the tuple give other pixels. The network is called here on the first face
    # alone, so this also shows that batching does not change a face's result.
    with torch.no_grad():
        x = torch.from_numpy(faces[0][None]).permute(0, 3, 1, 2).contiguous().float() / 255.0
        y = restorer.model(x * 2.0 - 1.0)
        y = y[0] if isinstance(y, (tuple, list)) else y
        alone = (((y + 1.0) / 2.0).clamp(0, 1) * 255.0).round().byte().permute(0, 2, 3, 1).numpy()[0]
    for o, f in zip(out, faces):
        assert o.shape == (512, 512, 3) and o.dtype == np.uint8
        assert np.abs(o.astype(int) - f.astype(int)).mean() > 1.0  # the network really ran
    assert np.abs(out[0].astype(int) - alone.astype(int)).max() <= 2
    assert np.abs(out[1].astype(int) - alone.astype(int)).mean() > 1.0  # each face its own result


def test_published_restorer_at_strength_zero_gives_the_input_back(tmp_path, shared_dir):
    # The strength blend is SpandrelRestorer's own, the same code for all three
    # architectures, so it is checked once, on the cheapest network to run (that the
    # network does change the face at full strength: the test above).
    _random_checkpoint("gfpgan", tmp_path / "GFPGANv1.4.pth")
    store = _store_with(tmp_path, "GFPGANv1.4.pth", "gfpgan-v1.4")
    restorer = build_restorer(get_spec("gfpgan-v1.4"), store, torch.device("cpu"))
    face = _faces(shared_dir, 1)[0]
    same = restorer.restore([face], strength=0.0)[0]
    assert np.abs(same.astype(int) - face.astype(int)).max() <= 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU for the fp16 path")
def test_fp16_on_cuda(tmp_path, shared_dir):
    _random_checkpoint("gfpgan", tmp_path / "GFPGANv1.4.pth")
    store = _store_with(tmp_path, "GFPGANv1.4.pth", "gfpgan-v1.4")
    restorer = build_restorer(get_spec("gfpgan-v1.4"), store, torch.device("cuda"), half=True)
    out = restorer.restore(_faces(shared_dir, 2))
    assert out[0].shape == (512, 512, 3)


def test_tampered_published_file_is_refused(tmp_path):
    _random_checkpoint("restoreformer", tmp_path / "RestoreFormer.pth")
    store = _store_with(tmp_path, "RestoreFormer.pth", "restoreformer")
    data = bytearray((tmp_path / "RestoreFormer.pth").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "RestoreFormer.pth").write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="download-weights --force"):
        build_restorer(get_spec("restoreformer"), store, torch.device("cpu"))


def test_wrong_architecture_in_a_file_is_a_clear_error(tmp_path):
    torch.save({"params_ema": {"conv.weight": torch.zeros(3, 3, 3, 3)}}, tmp_path / "GFPGANv1.4.pth")
    store = _store_with(tmp_path, "GFPGANv1.4.pth", "gfpgan-v1.4")
    with pytest.raises(WeightsError, match="not a gfpgan-v1.4 model"):
        build_restorer(get_spec("gfpgan-v1.4"), store, torch.device("cpu"))


def test_registry_declares_every_restorer():
    names = restorer_names()
    assert {"gfpgan-v1.4", "restoreformer", "codeformer", "resample"} <= set(names)
    for name in names:
        info = get_spec(name).info
        assert info.input_size > 0 and info.license and info.description
    assert get_spec("codeformer").info.on_request_only and not get_spec("codeformer").info.commercial_use
    with pytest.raises(RestorerError, match="unknown model"):
        get_spec("nope")


def test_auto_never_picks_codeformer_and_names_a_better_model(tmp_path):
    store = WeightStore(tmp_path)  # nothing downloaded
    choice = choose_restorer("auto", store)
    assert choice.spec.info.name != "codeformer"
    assert choice.spec.info.embedded or not choice.spec.info.weight_files
    assert choice.better is not None and choice.better.info.name == "gfpgan-v1.4"
    with pytest.raises(RestorerError, match="download-weights"):
        choose_restorer("gfpgan-v1.4", store)


def test_resample_restorer_changes_faces_but_not_their_size(shared_dir):
    from refrestore.restorers.resample import ResampleRestorer

    faces = _faces(shared_dir, 2)
    out = ResampleRestorer().restore(faces)
    assert [o.shape for o in out] == [(512, 512, 3)] * 2
    import cv2

    def low(x: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(x.astype(np.float32), (0, 0), 4)

    def fine(x: np.ndarray) -> float:  # detail finer than a pixel or two
        x = x.astype(np.float32)
        return float((x - cv2.GaussianBlur(x, (0, 0), 1)).std())

    for o, f in zip(out, faces):
        # The face stays where and what it was (measured 0.22 and 0.31 levels below 4 px) and
        # its edges are sharpened (1.62x and 1.40x the fine detail; the bilateral denoise alone
        # gives 0.87x and 0.78x, a sigma-1 blur 0.55x): a no-op, a blur, a denoise alone,
        # noise, or a colour or position change each fail one of the two.
        assert np.abs(low(o) - low(f)).mean() < 1.5, np.abs(low(o) - low(f)).mean()
        assert fine(o) > 1.2 * fine(f), (fine(o), fine(f))
