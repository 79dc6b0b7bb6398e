"""RefNet modules: shapes, gradients, multi-reference inference, the no-reference path,
and the shipped weights."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from refrestore.net.arch import (
    CONFIGS,
    Encoder,
    FiLM,
    IdentityHead,
    RefNet,
    RefNetConfig,
    SelectionMask,
    VQDictionary,
    get_config,
    region_prior,
)
from refrestore.training.losses import hard_example_identity_loss, recon_loss, total_loss

# A miniature config so that every test runs in well under a second.
MINI = RefNetConfig(core=32, out_size=64, c1=8, c2=12, c3=16, attn_dim=8, id_dim=8, codebook_size=16, code_dim=4)
FLAGS = ("selection", "transfer", "texture", "recon", "identity_context", "vq", "refine")


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(1)


def _model(cfg: RefNetConfig = MINI, seed: int = 0) -> RefNet:
    torch.manual_seed(seed)
    m = RefNet(cfg)
    # Zero-initialised output layers would hide whether the references matter; perturb them.
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return m.eval()


def _inputs(b: int = 2, k: int = 2, size: int = 64, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, size, size, generator=g), torch.rand(b, k, 3, size, size, generator=g)


def test_submodule_shapes_and_gradients() -> None:
    enc = Encoder(MINI)
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    f1, f2, f3 = enc(x)
    assert f1.shape == (2, 8, 32, 32) and f2.shape == (2, 12, 16, 16) and f3.shape == (2, 16, 8, 8)
    (f1.mean() + f2.mean() + f3.mean()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0

    head = IdentityHead(16, 8)
    ident = head(f3.detach().requires_grad_())
    assert ident.shape == (2, 8) and torch.allclose(ident.norm(dim=1), torch.ones(2), atol=1e-5)

    film = FiLM(8, 16)
    y = film(f3.detach(), ident.detach())
    assert torch.equal(y, f3.detach())  # zero-initialised: starts as the identity map
    film.lin.weight.data.normal_()
    y = film(f3.detach(), ident.detach())
    y.sum().backward()
    assert film.lin.weight.grad.abs().sum() > 0

    sel = SelectionMask(16)
    lq3, r3 = torch.rand(2, 16, 8, 8), torch.rand(6, 16, 8, 8, requires_grad=True)
    prior = torch.rand(6, 1, 8, 8)
    m = sel(lq3, r3, prior)
    assert m.shape == (6, 1, 8, 8) and (m <= prior + 1e-6).all() and (m >= 0).all()
    m.sum().backward()
    assert r3.grad is not None

    vq = VQDictionary(16, 16, 4)
    z = torch.rand(2, 16, 8, 8, requires_grad=True)
    out, commit = vq(z)
    assert out.shape == z.shape and commit.ndim == 0
    loss = vq.vq_loss(torch.rand(2, 16, 8, 8))
    (out.sum() + commit + loss).backward()
    assert vq.codebook.grad is not None and vq.codebook.grad.abs().sum() > 0
    assert z.grad is not None


@pytest.mark.parametrize("off", (None,) + FLAGS)
def test_full_model_with_each_module_switched_off(off: str | None) -> None:
    cfg = MINI if off is None else replace(MINI, **{off: False})
    m = _model(cfg).train()
    lq, refs = _inputs()
    o = m(lq, refs, need_aux=True)
    assert o.out.shape == (2, 3, 64, 64) and o.core.shape == (2, 3, 32, 32)
    if cfg.recon and cfg.transfer:
        assert o.aux["recon"].shape == (2, 2, 3, 16, 16)
    loss, parts = total_loss(o, torch.rand(2, 3, 64, 64), refs)
    loss.backward()
    # Every parameter that took part gets a gradient; the reference encoder always does.
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.ref_enc.parameters())
    for name in ("select", "q", "k", "v", "fuse_gate", "tex_gate", "recon_dec", "refine_blocks", "id_head", "vq"):
        mod = getattr(m, name, None)
        if mod is not None and not (name == "select" and not cfg.transfer):  # the mask acts only through transfer
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in mod.parameters()), name
    assert ("rec" in parts) == (cfg.recon and cfg.transfer)


def test_k_1_3_5_references_without_retraining() -> None:
    m = _model()
    lq, refs = _inputs(b=1, k=5)
    outs = {}
    with torch.no_grad():
        for k in (1, 3, 5):
            o = m(lq, refs[:, :k])
            assert o.out.shape == (1, 3, 64, 64) and torch.isfinite(o.out).all()
            outs[k] = o.out
        # Different reference sets give different results: the references are used.
        assert not torch.allclose(outs[1], outs[5])
        # Attention over the union of tokens: reference order does not matter...
        perm = m(lq, refs[:, [4, 2, 0, 1, 3]]).out
        assert torch.allclose(perm, outs[5], atol=1e-5)
        # ...and K copies of one reference act exactly like that reference alone.
        same = m(lq, refs[:, :1].expand(-1, 3, -1, -1, -1)).out
        assert torch.allclose(same, outs[1], atol=1e-5)
        # Selection scores weight the references: a near-zero score removes a reference.
        scores = torch.tensor([[1.0, 1e-9]])
        weighted = m(lq, refs[:, :2], ref_scores=scores).out
        assert torch.allclose(weighted, outs[1], atol=1e-3)


def test_no_reference_path_and_padding() -> None:
    m = _model()
    lq, refs = _inputs(b=2, k=3)
    with torch.no_grad():
        none = m(lq).out
        empty = m(lq, refs[:, :0]).out
        assert torch.allclose(none, empty)
        # A face whose reference slots are all padding restores exactly as with no references,
        # while its batch neighbour still uses its own references.
        valid = torch.tensor([[True, True, True], [False, False, False]])
        mixed = m(lq, refs, ref_valid=valid).out
        assert torch.allclose(mixed[1], none[1], atol=1e-5)
        alone = m(lq[:1], refs[:1]).out
        assert torch.allclose(mixed[0], alone[0], atol=1e-5)
        # Padding one face to three slots equals giving it its single reference.
        valid1 = torch.tensor([[True, False, False], [True, True, True]])
        padded = m(lq, refs, ref_valid=valid1).out
        assert torch.allclose(padded[0], m(lq[:1], refs[:1, :1]).out[0], atol=1e-5)


def test_model_without_reference_support() -> None:
    m = _model(replace(MINI, use_refs=False))
    lq, refs = _inputs()
    with torch.no_grad():
        assert torch.allclose(m(lq, refs).out, m(lq).out)


def test_region_prior_and_losses() -> None:
    p = region_prior({"eyes": 0.0, "mouth": 1.0, "nose": 0.5, "outline": 0.8}, 32)
    assert p.shape == (1, 32, 32)
    assert p[0, 15, 12].item() == pytest.approx(0.02)  # inside the eye box
    assert p[0, 2, 2].item() == pytest.approx(0.8)
    assert torch.equal(region_prior(None, 8), torch.ones(1, 8, 8))

    recon = torch.zeros(1, 2, 3, 8, 8, requires_grad=True)
    refs = torch.ones(1, 2, 3, 32, 32)
    mask = torch.zeros(1, 2, 1, 4, 4)
    assert recon_loss(recon, refs, mask).item() == 0.0  # nothing selected, nothing to reconstruct
    mask[:, 0] = 1
    assert recon_loss(recon, refs, mask).item() == pytest.approx(1.0)

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=4), torch.nn.Flatten(), torch.nn.LazyLinear(8))
    out = torch.rand(3, 3, 32, 32, requires_grad=True)
    loss = hard_example_identity_loss(net, out, torch.rand(3, 3, 32, 32), torch.rand(3, 2, 3, 32, 32))
    loss.backward()
    assert loss.item() > 0 and out.grad is not None and out.grad.abs().sum() > 0


def test_configs_are_consistent() -> None:
    for name, cfg in CONFIGS.items():
        assert cfg.out_size % cfg.core == 0 and cfg.attn_dim % 4 == 0, name
    with pytest.raises(ValueError, match="unknown config"):
        get_config("huge")
    with pytest.raises(ValueError, match="unknown RefNet config keys"):
        RefNetConfig.from_dict({"bogus": 1})


# -- the shipped weights -----------------------------------------------------------------

def _readme_rows(preset: str, people: str) -> dict[str, tuple[float, float, float]]:
    """The README's table row for ``preset`` and ``people``: {row: (PSNR, SSIM, id dist)}."""
    import re

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    pat = rf"^\| {preset} \| {re.escape(people)} \| (\w+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$"
    rows = {m[0]: (float(m[1]), float(m[2]), float(m[3])) for m in re.findall(pat, text, re.M)}
    assert set(rows) == {"model", "no_ref", "bicubic"}, f"README has no {preset} / {people} table"
    return rows


def test_shipped_weights_load_strictly_and_restore(shared_dir: Path) -> None:
    from refrestore.faces import Reference
    from refrestore.training.data import read_rgb
    from refrestore.net.degrade import PRESETS, degrade
    from refrestore.training.evaluate import evaluate
    from refrestore.net.split import is_held_out
    from refrestore.paths import models_dir
    from refrestore.restorers.refnet import REFNET_SPEC, embedded_weights_path

    path = embedded_weights_path()
    assert path == models_dir() / "refnet_small.pth"
    assert path.is_file(), "models/refnet_small.pth must ship with the package"
    assert path.stat().st_size < 20 * 1024 * 1024
    obj = torch.load(path, map_location="cpu", weights_only=True)
    model = RefNet(RefNetConfig.from_dict(obj["config"]))
    model.load_state_dict({k: v.float() for k, v in obj["state_dict"].items()}, strict=True)

    r = REFNET_SPEC.factory(Path("unused"), torch.device("cpu"), False)
    assert r.info.uses_references and r.info.embedded and "CC BY-NC-SA" in r.info.license
    root = shared_dir / "data" / "refbench" / "hq" / "00089"  # the held-out person
    assert is_held_out("00089")
    imgs = [read_rgb(p) for p in sorted(root.glob("*.png"))[:3]]
    lq = degrade(imgs[0], PRESETS["severe"], seed=0)
    refs = [Reference(image=imgs[1], path="2"), Reference(image=imgs[2], path="3", score=0.5,
                                                          regions={"eyes": 1.0, "mouth": 0.3})]
    out_ref, out_none, out_mixed_k = r.restore([lq, lq, lq], [refs, [], refs[:1]])
    for o in (out_ref, out_none, out_mixed_k):
        assert o.shape == (512, 512, 3) and o.dtype == np.uint8
    # Batched with other faces, each face gets its own references (and none gets none).
    assert np.abs(out_none.astype(int) - r.restore([lq], [[]])[0]).max() <= 1
    assert np.abs(out_ref.astype(int) - r.restore([lq], [refs])[0]).max() <= 1
    assert np.abs(out_ref.astype(int) - out_none).mean() > 1.0, "the references must change the face"  # 2.1; 0.4 without the aligned transfer
    assert r.restore([lq], [refs], strength=0.0)[0].tolist() == lq.tolist()
    half = r.restore([lq], [refs], strength=0.5)[0].astype(int)
    assert np.abs(half - (out_ref.astype(int) + lq.astype(int)) / 2).max() <= 1
    with pytest.raises(ValueError):
        r.restore([lq], [refs], strength=1.5)

    # The README's figures for the held-out person (severe, all other photos as references,
    # the eval protocol's fixed seeds) are reproduced, and so are its claims: better than
    # bicubic by at least the margins, and references lower the dlib identity distance.
    claimed = _readme_rows("severe", "held-out 00089 (n=9)")
    rows = evaluate(r, shared_dir / "data" / "refbench", "severe", people=["00089"], detail=False).rows  # the network alone
    got = {k: (v.psnr, v.ssim, v.id_dist) for k, v in rows.items()}
    for row, (p, s, d) in claimed.items():
        gp, gs, gd = got[row]
        assert abs(gp - p) < 0.1 and abs(gs - s) < 0.005 and abs(gd - d) < 0.01, (row, got[row], claimed[row])
    assert got["model"][0] - got["bicubic"][0] > 1.0, got  # target +1.0 dB (README: +1.61)
    assert got["model"][1] - got["bicubic"][1] > 0.03, got  # target +0.03 SSIM (README: +0.049)
    assert got["no_ref"][2] - got["model"][2] > 0.02, got  # references help identity (README: 0.071)
    assert got["model"][2] < got["bicubic"][2], got


# -- dense transfer from flow-aligned references ------------------------------------------

ALIGNED = replace(MINI, aligned=True, aligned_dim=8)


def test_aligned_transfer_shapes_gradients_and_multi_reference() -> None:
    m = _model(ALIGNED).train()
    lq, refs = _inputs(b=2, k=2)
    o = m(lq, refs, need_aux=True, aligned=refs)
    assert o.out.shape == (2, 3, 64, 64) and o.aux["aligned_weight"].shape == (2, 2, 1, 32, 32)
    loss, _ = total_loss(o, torch.rand(2, 3, 64, 64), refs)
    loss.backward()
    for name in ("al_enc", "al_score", "al_fuse"):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in getattr(m, name).parameters()), name

    m.eval()
    lq, refs = _inputs(b=1, k=5, seed=3)
    warped = torch.rand_like(refs)
    with torch.no_grad():
        outs = {k: m(lq, refs[:, :k], aligned=warped[:, :k]).out for k in (1, 3, 5)}
        assert all(torch.isfinite(v).all() for v in outs.values())
        # The aligned references are used: changing only them changes the output.
        other = m(lq, refs, aligned=torch.rand_like(warped)).out
        assert not torch.allclose(other, outs[5])
        # Softmax over K: order does not matter, and padding slots are ignored.
        perm = [3, 0, 4, 2, 1]
        assert torch.allclose(m(lq, refs[:, perm], aligned=warped[:, perm]).out, outs[5], atol=1e-5)
        valid = torch.tensor([[True, False, False]])
        padded = m(lq, refs[:, :3], ref_valid=valid, aligned=warped[:, :3]).out
        assert torch.allclose(padded, outs[1], atol=1e-5)
        # Without references (or without aligned inputs) the branch is skipped entirely.
        no_branch = replace(ALIGNED, aligned=False)
        m2 = RefNet(no_branch)
        m2.load_state_dict({k: v for k, v in m.state_dict().items() if not k.startswith("al_")}, strict=True)
        m2.eval()
        assert torch.allclose(m(lq).out, m2(lq).out, atol=1e-6)
        assert torch.allclose(m(lq, refs).out, m2(lq, refs).out, atol=1e-6)  # no aligned input given


def test_align_reference_undoes_a_known_motion(shared_dir: Path) -> None:
    import cv2

    from refrestore.training.data import read_rgb
    from refrestore.net.degrade import PRESETS, degrade
    from refrestore.net.warp import align_reference

    gt = read_rgb(sorted((shared_dir / "data" / "refbench" / "hq" / "00005").glob("*.png"))[0])
    # The "reference": the same face moved by a smooth non-rigid motion of up to ~9 px.
    ys, xs = np.mgrid[0:512, 0:512].astype(np.float32)
    dx = 6.0 + 3.0 * np.sin(ys / 80.0)
    dy = -4.0 + 3.0 * np.cos(xs / 90.0)
    ref = cv2.remap(gt, xs + dx, ys + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    lq = degrade(gt, PRESETS["severe"], seed=0)
    warped = align_reference(lq, ref)
    assert warped.shape == gt.shape and warped.dtype == np.uint8
    inner = (slice(64, 448), slice(64, 448))
    err_before = np.abs(ref[inner].astype(float) - gt[inner]).mean()
    err_after = np.abs(warped[inner].astype(float) - gt[inner]).mean()
    assert err_after < 0.6 * err_before, (err_before, err_after)
    # A reference at another size is resized to the requested one.
    assert align_reference(lq, cv2.resize(ref, (300, 300)), 512).shape == (512, 512, 3)


def test_lq_detail_reaches_the_output_from_the_full_resolution_input() -> None:
    m = _model(replace(MINI, lq_detail=True)).train()
    lq, refs = _inputs(b=2, k=1)
    o = m(lq, refs, need_aux=True)
    loss, _ = total_loss(o, torch.rand(2, 3, 64, 64), refs)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.lq_fuse.parameters())
    m.eval()
    with torch.no_grad():
        # Detail finer than the core changes the output only through this path.
        fine = lq.clone()
        fine[:, :, ::2, ::2] += 0.05
        fine[:, :, 1::2, 1::2] -= 0.05
        assert not torch.allclose(m(lq).out, m(fine).out)
        m.cfg = replace(m.cfg, lq_detail=False)
        assert torch.allclose(m(lq).out, m(fine).out, atol=1e-6)
