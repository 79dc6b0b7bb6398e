"""fix --refs: every face picks references of its own person, or none, and the report says so."""
from __future__ import annotations

import json
import shutil

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from refrestore.cli import build_app


def test_fix_with_a_gallery_picks_the_same_person_or_no_match(tmp_path, shared_dir, monkeypatch):
    monkeypatch.setenv("REFRESTORE_HOME", str(tmp_path / "home"))
    ids = shared_dir / "data" / "identities"
    gallery = tmp_path / "family"
    for person in ("angelina_jolie", "obama", "biden"):
        shutil.copytree(ids / person, gallery / person)
    held_out = tmp_path / "angelina_old.jpg"
    shutil.move(gallery / "angelina_jolie" / "deepface_img1.jpg", held_out)
    stranger = tmp_path / "stranger.jpg"
    shutil.copyfile(ids / "carell" / "openface_carell.jpg", stranger)  # not in the gallery

    # Make the held-out photo old: small, blurred and noisy, then back to its size.
    img = np.asarray(Image.open(held_out).convert("RGB"))
    h, w = img.shape[:2]
    small = Image.fromarray(img).resize((w // 4, h // 4), Image.BILINEAR)
    noisy = np.clip(np.asarray(small, float) + np.random.default_rng(0).normal(0, 6, (h // 4, w // 4, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(noisy).resize((w, h), Image.BICUBIC).save(held_out, quality=60)

    report = tmp_path / "r.json"
    res = CliRunner().invoke(
        build_app(),
        ["fix", str(held_out), str(stranger), "--refs", str(gallery), "-o", str(tmp_path / "out"), "--json", str(report), "--detector", "dlib", "--top-k", "2"],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    entries = {e["input"]: e for e in json.loads(report.read_text())["images"]}
    old = entries[str(held_out)]
    assert old["status"] == "ok" and len(old["faces"]) == 1
    ref = old["faces"][0]["reference"]
    assert ref is not None, "the person is in the gallery"
    assert "/angelina_jolie/" in ref["path"] and ref["score"] > 0
    assert old["faces"][0]["restorer"] == json.loads(report.read_text())["restorer"]
    assert all("/angelina_jolie/" in alt["path"] for alt in ref.get("alternatives", []))
    new = entries[str(stranger)]
    assert new["status"] == "ok" and new["faces"][0]["reference"] is None, "strangers get no match"


def test_fix_with_a_forced_reference(tmp_path, shared_dir, monkeypatch):
    monkeypatch.setenv("REFRESTORE_HOME", str(tmp_path / "home"))
    ids = shared_dir / "data" / "identities" / "biden"
    src, ref = tmp_path / "old.jpg", ids / "face_recognition_biden2.jpg"
    shutil.copyfile(ids / "face_recognition_biden.jpg", src)
    report = tmp_path / "r.json"
    res = CliRunner().invoke(build_app(), ["fix", str(src), "--ref", str(ref), "--json", str(report), "--detector", "dlib", "--save-faces"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    face = json.loads(report.read_text())["images"][0]["faces"][0]
    assert face["reference"]["path"] == str(ref) and face["reference"]["forced"] is True
    assert (tmp_path / "old_restored_faces" / "face00_reference.png").is_file()
    missing = CliRunner().invoke(build_app(), ["fix", str(src), "--ref", str(tmp_path / "nope.jpg")], catch_exceptions=False)
    assert missing.exit_code == 2 and "nope.jpg" in missing.output
