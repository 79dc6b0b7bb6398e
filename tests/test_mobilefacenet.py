"""The pretrained MobileFaceNet identity model: our module against the published ONNX export, the
manifest's published file, and its calibrated thresholds on real faces."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(1)


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def mfn_file(shared_dir: Path) -> Path:
    path = shared_dir / "weights" / "mobilefacenet" / "mobilefacenet.pt"
    if not path.is_file():
        pytest.skip(f"shared MobileFaceNet weights not found at {path}")
    return path


def test_our_module_reproduces_the_published_onnx_export(mfn_file: Path, shared_dir: Path) -> None:
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime (a test dependency) is not installed")
    from refrestore.identity.mobilefacenet import load_mobilefacenet, to_input

    onnx_path = mfn_file.with_name("MobileFaceNet.onnx")
    if not onnx_path.is_file():
        pytest.skip(f"ONNX export not found at {onnx_path}")
    # real faces: aligned 512 refbench crops and 256 crops of `faces`, two people each
    files = sorted((shared_dir / "data" / "refbench" / "hq" / "00005").glob("*.png"))[:3]
    files += sorted(next(p for p in sorted((shared_dir / "data" / "faces").iterdir()) if p.is_dir()).glob("*.jpg"))[:3]
    x = to_input([_rgb(f) for f in files])
    with torch.no_grad():
        ours = load_mobilefacenet(mfn_file)(torch.from_numpy(x)).numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    theirs = np.concatenate([session.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])
    cos = (ours * theirs).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
    assert cos.min() >= 0.9999, cos
    # and the faces are told apart at all (not a constant output that matches by accident)
    unit = ours / np.linalg.norm(ours, axis=1, keepdims=True)
    assert (unit[:3] @ unit[3:].T).max() < 0.5


def test_strict_load_refuses_a_file_of_another_network(tmp_path: Path, mfn_file: Path) -> None:
    from refrestore.identity.mobilefacenet import load_mobilefacenet

    state = torch.load(mfn_file, map_location="cpu", weights_only=True)
    state.pop("bn.running_var")
    bad = tmp_path / "bad.pt"
    torch.save(state, bad)
    with pytest.raises(RuntimeError, match="running_var"):
        load_mobilefacenet(bad)


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "refrestore", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def test_from_file_installs_the_published_file_by_its_sha256(tmp_path: Path, mfn_file: Path) -> None:
    """What a user who has the file does (and what the acceptance checks do): no name needed; the
    manifest entry's size and sha256 verify it, so it is the published file, not a user-added one."""
    env = {**os.environ, "REFRESTORE_HOME": str(tmp_path / "home"), "REFRESTORE_OFFLINE": "1"}
    run = _cli("download-weights", "--from-file", str(mfn_file), env=env)
    assert run.returncode == 0, run.stderr
    assert "as mobilefacenet.pt" in run.stdout and "published file, sha256 verified" in run.stdout
    models = _cli("models", "--json", env=env)
    assert models.returncode == 0, models.stderr
    listing = json.loads(models.stdout)
    files = {f["name"]: f for f in listing["files"]}
    entry = files["mobilefacenet.pt"]
    assert entry["status"] == "present" and not entry.get("user_added"), entry
    # a file that is not the published one and not named is refused with one line
    other = tmp_path / "weights.pt"
    other.write_bytes(b"not weights")
    run = _cli("download-weights", "--from-file", str(other), env=env)
    assert run.returncode == 1 and "name the model or file it is" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


def test_auto_picks_the_embedded_fine_tune_and_both_networks_once_the_published_file_is_added(tmp_path: Path, mfn_file: Path) -> None:
    from refrestore.identity import init_identity_model
    from refrestore.weights import WeightStore
    from refrestore.userweights import add_user_file

    store = WeightStore(tmp_path / "weights")
    # the fine-tune ships inside the package: auto needs no download
    assert init_identity_model("auto", store=store).name == "mobilefacenet-lr"
    with pytest.raises(Exception, match="mobilefacenet"):
        init_identity_model("mobilefacenet", store=store)
    with pytest.raises(FileNotFoundError, match="download-weights mobilefacenet.pt"):
        init_identity_model("mobilefacenet-dual", store=store)
    added = add_user_file(store, None, mfn_file)
    assert added.published and added.name == "mobilefacenet.pt"
    assert store.find("mobilefacenet.pt") is not None
    assert init_identity_model("mobilefacenet", store=store).name == "mobilefacenet"
    assert init_identity_model("auto", store=store).name == "mobilefacenet-dual"
    assert init_identity_model("mobilefacenet-lr", store=store).name == "mobilefacenet-lr"


def _two_people(hq: Path, root: Path, photos: slice) -> Path:
    """A gallery of folders = persons: 00022 and 00086 of refbench, these photos of each (linked)."""
    for person in ("00022", "00086"):
        (root / person).mkdir(parents=True)
        for f in sorted((hq / person).glob("*.png"))[photos]:
            (root / person / f.name).symlink_to(f)
    return root


@pytest.mark.parametrize("name,quality", [("mobilefacenet", "clean"), ("mobilefacenet", "48px"),
                                          ("mobilefacenet-lr", "clean"), ("mobilefacenet-lr", "48px"),
                                          ("mobilefacenet-dual", "clean"), ("mobilefacenet-dual", "48px")])
def test_a_real_pair_of_one_person_scores_above_and_of_two_people_below_the_threshold(
        name: str, quality: str, tmp_path: Path, mfn_file: Path, shared_dir: Path) -> None:
    """The shipped rule on real faces: a held-out photo of a person against that person's other
    photos reaches the identification threshold; against another person's photos it stays below."""
    from refrestore.detection import init_detector
    from refrestore.gallery import Gallery
    from refrestore.gallery.decide import person_scores
    from refrestore.gallery.faceset import query_image
    from refrestore.gallery.quality import assess
    from refrestore.gallery.rules import RULES
    from refrestore.gallery.select import robust_embedding
    from refrestore.identity import embedded_restorer_queries
    from refrestore.identity.mobilefacenet import DualMobileFaceNet, MobileFaceNetIdentity

    hq = shared_dir / "data" / "refbench" / "hq"
    root = _two_people(hq, tmp_path / "family", slice(1, 7))
    fine_tune = Path(__file__).parents[1] / "models" / "mobilefacenet_lr.pt"
    model = (DualMobileFaceNet(mfn_file, fine_tune) if name == "mobilefacenet-dual"
             else MobileFaceNetIdentity(mfn_file if name == "mobilefacenet" else fine_tune, name=name))
    if name != "mobilefacenet":  # as init_identity_model makes them: their rules were calibrated so
        model.restored_queries = embedded_restorer_queries()
    gallery = Gallery.build([root], init_detector("dlib"), model, cache_dir=tmp_path / "cache")
    assert set(gallery.persons) == {"00022", "00086"}
    rule = RULES[name]
    for own, other in (("00022", "00086"), ("00086", "00022")):
        query = query_image(sorted((hq / own).glob("*.png"))[0], quality, seed=3)
        detail = assess(query, None, 512.0).sharpness
        scores = person_scores(gallery, robust_embedding(query, model, detail), detail, rule)
        threshold = rule.threshold_at(detail)
        assert scores[own] >= threshold > scores[other], (own, quality, scores, threshold)


def test_a_query_with_little_detail_is_embedded_after_a_blind_restoration_and_a_sharp_one_as_it_is(
        shared_dir: Path) -> None:
    """The fine-tune's rule was calibrated on queries restored blind first (no references) when
    their detail is below the switch; the embedded restorer is loaded on the first such query."""
    from refrestore.gallery.faceset import query_image
    from refrestore.gallery.quality import assess
    from refrestore.gallery.select import robust_embedding
    from refrestore.identity import init_identity_model
    from refrestore.identity.restored_queries import RESTORE_BELOW, prepare_query
    from refrestore.restorers.refnet import RefNetRestorer, embedded_weights_path

    photo = sorted((shared_dir / "data" / "refbench" / "hq" / "00022").glob("*.png"))[0]
    model = init_identity_model("mobilefacenet-lr")
    view = model.restored_queries
    assert view is not None and view.below == RESTORE_BELOW
    clean, small = query_image(photo, "clean", seed=3), query_image(photo, "24px", seed=3)
    d_clean, d_small = assess(clean, None, 512.0).sharpness, assess(small, None, 512.0).sharpness
    assert d_small < RESTORE_BELOW <= d_clean
    assert prepare_query(model, clean, d_clean) is clean
    assert view._restore is None  # nothing restored yet: not loaded
    restored = prepare_query(model, small, d_small)
    want = RefNetRestorer.from_file(embedded_weights_path(), torch.device("cpu")).restore([small])[0]
    assert restored.shape == small.shape and np.array_equal(restored, want)
    assert np.abs(restored.astype(int) - small.astype(int)).mean() > 1.0  # it did change the face
    plain = init_identity_model("mobilefacenet-lr")
    plain.restored_queries = None
    assert np.allclose(robust_embedding(small, model, d_small), robust_embedding(restored, plain), atol=1e-6)
    assert np.allclose(robust_embedding(clean, model, d_clean), robust_embedding(clean, plain), atol=1e-6)
    # without a detail (gallery faces, or a caller that does not know it) nothing is restored
    assert np.allclose(robust_embedding(small, model), robust_embedding(small, plain), atol=1e-6)
    # dlib's second opinion reads the crop as it is
    assert prepare_query(init_identity_model("dlib"), small, d_small) is small


def test_the_two_network_embedding_scores_a_face_with_the_network_its_detail_picks(
        tmp_path: Path, mfn_file: Path, shared_dir: Path) -> None:
    """mobilefacenet-dual: a clean query's person scores are the published network's, a degraded
    one's the fine-tune's, each against the same gallery; a plain dot product of two rows is the
    mean of the two networks' cosines."""
    from refrestore.detection import init_detector
    from refrestore.gallery import Gallery
    from refrestore.gallery.decide import person_scores
    from refrestore.gallery.faceset import query_image
    from refrestore.gallery.quality import assess
    from refrestore.gallery.rules import RULES
    from refrestore.gallery.select import robust_embedding
    from refrestore.identity.mobilefacenet import DualMobileFaceNet, MobileFaceNetIdentity

    hq = shared_dir / "data" / "refbench" / "hq"
    root = _two_people(hq, tmp_path / "family", slice(1, 4))
    fine_tune = Path(__file__).parents[1] / "models" / "mobilefacenet_lr.pt"
    dual = DualMobileFaceNet(mfn_file, fine_tune)
    single = {"mobilefacenet": MobileFaceNetIdentity(mfn_file), "mobilefacenet-lr": MobileFaceNetIdentity(fine_tune, name="mobilefacenet-lr")}
    detector = init_detector("dlib")
    galleries = {n: Gallery.build([root], detector, m, cache_dir=tmp_path / n) for n, m in single.items()}
    gallery = Gallery.build([root], detector, dual, cache_dir=tmp_path / "dual")
    assert gallery.embeddings.shape[1] == 256
    a, b = gallery.embeddings[0], gallery.embeddings[1]
    pub, lr = galleries["mobilefacenet"].embeddings, galleries["mobilefacenet-lr"].embeddings
    assert abs(float(a @ b) - 0.5 * float(pub[0] @ pub[1] + lr[0] @ lr[1])) < 1e-4
    # the levels, prepared once for both networks, are each network's own
    for level in (32, 24):
        both = gallery.level_embeddings(level)
        assert np.allclose(both[:, 128:] * np.sqrt(2.0), galleries["mobilefacenet-lr"].level_embeddings(level), atol=1e-4)
    assert np.allclose(gallery.level_embeddings(32)[:, :128] * np.sqrt(2.0),
                       galleries["mobilefacenet"].level_embeddings(32), atol=1e-4)
    rule = RULES["mobilefacenet-dual"]
    seen = set()
    for quality in ("clean", "24px"):
        query = query_image(sorted((hq / "00022").glob("*.png"))[0], quality, seed=3)
        detail = assess(query, None, 512.0).sharpness
        which = "mobilefacenet" if detail >= rule.switch.detail else "mobilefacenet-lr"
        seen.add(which)
        got = person_scores(gallery, robust_embedding(query, dual), detail, rule)
        want = person_scores(galleries[which], robust_embedding(query, single[which]), detail, RULES[which])
        assert got.keys() == want.keys()
        for p in got:
            assert abs(got[p] - want[p]) < 1e-4, (quality, which, got, want)
    assert seen == {"mobilefacenet", "mobilefacenet-lr"}


def test_the_published_half_is_embedded_at_every_gallery_level_the_rule_reads_with_it() -> None:
    """A query scored with the published network (detail from the switch up) is compared with the
    gallery levels of the two anchors around it: each must be one the published half embeds."""
    from refrestore.gallery.rules import RULES
    from refrestore.identity.mobilefacenet import PUBLISHED_LEVELS

    rule = RULES["mobilefacenet-dual"]
    d = np.asarray(rule.details)
    first = int(np.searchsorted(d, rule.switch.detail, side="right") - 1)  # the anchor below the switch
    assert rule.levels is not None and first >= 0
    for level in rule.levels[first:]:
        assert level is None or level in PUBLISHED_LEVELS, (level, PUBLISHED_LEVELS)


def test_the_run_names_both_networks_licences_and_calls_the_pair_non_commercial() -> None:
    """The fine-tune's weights are non-commercial: a run with both networks must say so."""
    from refrestore.licences import licence_line, run_licences
    from refrestore.weights.manifest import load_manifest

    line = licence_line(run_licences(["refnet-small"], "mobilefacenet-dual", "dlib", load_manifest()))
    assert line is not None
    assert "identity mobilefacenet-dual: non-commercial weights (mobilefacenet: Apache-2.0; mobilefacenet-lr: " in line
