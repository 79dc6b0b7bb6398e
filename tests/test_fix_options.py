"""fix's options, run in-process through the real Typer app on real photos."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from refrestore import restore_photo
from refrestore.cli import build_app
from refrestore.fileio import RECORDS  # the records of what refrestore wrote, beside its files

FAST = ["--model", "resample", "--detector", "dlib"]


@pytest.fixture()
def run(tmp_path, monkeypatch):
    monkeypatch.setenv("REFRESTORE_HOME", str(tmp_path / "home"))
    runner = CliRunner()
    app = build_app()

    def invoke(*args: str):
        return runner.invoke(app, list(args), catch_exceptions=False)

    return invoke


def _photo(whole_photos, name):
    return next(p for p in whole_photos if p.name == name)


def test_save_faces_and_compare(run, tmp_path, whole_photos):
    src = tmp_path / "two.jpg"
    shutil.copyfile(_photo(whole_photos, "gfpgan_Blake_Lively.jpg"), src)
    res = run("fix", str(src), "-o", str(tmp_path / "out"), "--save-faces", "--compare", "--json", str(tmp_path / "r.json"), *FAST)
    assert res.exit_code == 0, res.output
    out = tmp_path / "out"
    faces = sorted(p.name for p in (out / "two_restored_faces").iterdir() if p.name != RECORDS)
    assert faces == ["face00_input.png", "face00_restored.png", "face01_input.png", "face01_restored.png"]
    sheet = Image.open(out / "two_restored_compare_face00.jpg")
    assert sheet.size[1] == 512 and sheet.size[0] > 3 * 512  # input | restored | reference
    assert Image.open(out / "two_restored_faces" / "face00_input.png").size == (512, 512)


def test_only_center_face(run, tmp_path, whole_photos):
    src = tmp_path / "group.png"
    shutil.copyfile(_photo(whole_photos, "codeformer_02.png"), src)
    res = run("fix", str(src), "--only-center-face", "--json", str(tmp_path / "r.json"), *FAST)
    assert res.exit_code == 0, res.output
    entry = json.loads((tmp_path / "r.json").read_text())["images"][0]
    assert len(entry["faces"]) == 1
    # It is the face nearest the photo's centre, found here by the same detector, and
    # clearly nearer than the next one.
    from refrestore.detection import init_detector

    img = np.asarray(Image.open(src).convert("RGB"))
    faces = init_detector("dlib").detect(img)
    assert len(faces) == 4
    cy, cx = img.shape[0] / 2, img.shape[1] / 2
    by_dist = sorted(faces, key=lambda f: np.hypot((f.box[0] + f.box[2]) / 2 - cx, (f.box[1] + f.box[3]) / 2 - cy))
    d = [np.hypot((f.box[0] + f.box[2]) / 2 - cx, (f.box[1] + f.box[3]) / 2 - cy) for f in by_dist[:2]]
    assert d[1] - d[0] > 10, d  # 172 px against 195
    assert np.allclose(entry["faces"][0]["box"], by_dist[0].box, atol=0.5), (entry["faces"][0]["box"], by_dist[0].box)


def test_aligned_input_skips_detection_and_paste_back(run, tmp_path, shared_dir):
    src = tmp_path / "crop.png"
    shutil.copyfile(sorted((shared_dir / "data" / "real_lq" / "cropped_faces").glob("*.png"))[0], src)
    res = run("fix", str(src), "--aligned", "--upscale", "2", "--json", str(tmp_path / "r.json"), "--model", "resample")
    assert res.exit_code == 0, res.output
    entry = json.loads((tmp_path / "r.json").read_text())["images"][0]
    assert entry["status"] == "ok" and len(entry["faces"]) == 1
    assert Image.open(entry["output"]).size == (1024, 1024)


def test_greyscale_photo_stays_greyscale(run, tmp_path, whole_photos):
    src = tmp_path / "grey.jpg"
    Image.open(_photo(whole_photos, "codeformer_06.png")).convert("L").save(src, quality=92)
    res = run("fix", str(src), *FAST)
    assert res.exit_code == 0, res.output
    out = Image.open(tmp_path / "grey_restored.jpg")
    assert out.mode == "L"


def test_alpha_is_kept(run, tmp_path, whole_photos):
    src = tmp_path / "cutout.png"
    im = Image.open(_photo(whole_photos, "codeformer_03.jpg")).convert("RGBA")
    alpha = np.full(im.size[::-1], 255, np.uint8)
    alpha[:20, :20] = 0
    im.putalpha(Image.fromarray(alpha))
    im.save(src)
    res = run("fix", str(src), "--upscale", "2", *FAST)
    assert res.exit_code == 0, res.output
    out = Image.open(tmp_path / "cutout_restored.png")
    assert out.mode == "RGBA" and out.size == (im.size[0] * 2, im.size[1] * 2)
    a = np.asarray(out)[..., 3]
    assert a[:30, :30].max() < 128 and a[60:, 60:].min() > 200


def test_existing_output_is_skipped_then_overwritten(run, tmp_path, whole_photos):
    src = tmp_path / "a.jpg"
    shutil.copyfile(_photo(whole_photos, "codeformer_04.jpg"), src)
    assert run("fix", str(src), *FAST).exit_code == 0
    out = tmp_path / "a_restored.jpg"
    first = out.read_bytes()
    res = run("fix", str(src), "--json", str(tmp_path / "r.json"), *FAST)
    assert res.exit_code == 0
    assert json.loads((tmp_path / "r.json").read_text())["images"][0]["status"] == "skipped"
    assert run("fix", str(src), "--overwrite", *FAST).exit_code == 0
    assert Image.open(out).size == Image.open(src).size and out.read_bytes() == first
    # a file refrestore did not write at the output's name is the user's: never replaced
    out.write_bytes(b"the user's own file")
    for extra in ((), ("--overwrite",)):
        assert run("fix", str(src), *extra, *FAST).exit_code == 2
        assert out.read_bytes() == b"the user's own file"


def test_library_api_restores_a_photo(whole_photos, tmp_path, monkeypatch):
    import cv2

    monkeypatch.setenv("REFRESTORE_HOME", str(tmp_path / "home"))
    photo = _photo(whole_photos, "codeformer_06.png")
    result = restore_photo(photo, model="resample", detector="dlib", upscale=2)
    src = np.asarray(Image.open(photo).convert("RGB"))
    h, w = src.shape[:2]
    assert result.image.shape == (h * 2, w * 2, 3) and result.image.dtype == np.uint8
    assert len(result.faces) == 2 and all(f.restored is not None for f in result.faces)
    assert not any(f.left_as_is or f.error for f in result.faces)
    assert {f.report()["restorer"] for f in result.faces} == {"resample"}
    up = cv2.resize(src, (2 * w, 2 * h), interpolation=cv2.INTER_CUBIC).astype(int)
    out = result.image.astype(int)
    yy, xx = np.mgrid[0:2 * h, 0:2 * w]
    far = np.ones((2 * h, 2 * w), bool)
    for f in result.faces:
        # Each damaged face is restored in place: its middle changed from the plain upscale,
        # but its colour and layout stay (a face pasted elsewhere or recoloured fails).
        x1, y1, x2, y2 = (2 * v for v in f.face.box)
        cx, cy, size = (x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1)
        inner = (slice(int(cy - size / 4), int(cy + size / 4)), slice(int(cx - size / 4), int(cx + size / 4)))
        assert (out[inner] != up[inner]).any(axis=2).mean() > 0.5
        # resample's light sharpening moves the middle by about 0.9 levels on average (a plain
        # upscale pasted back: 0.0; before paste-back rounded its colour match, a 1-level bias added)
        assert np.abs(out[inner] - up[inner]).mean() > 0.5
        low = [cv2.GaussianBlur(a[inner].astype(np.float32), (0, 0), size / 16) for a in (out, up)]
        assert np.abs(low[0] - low[1]).mean() < 4.0, np.abs(low[0] - low[1]).mean()
        far &= np.hypot(xx - cx, yy - cy) > 2.0 * size
    # The background is the plain upscale, untouched.
    assert far.mean() > 0.1, far.mean()  # 13% of this photo is that far from both faces
    assert np.abs(out[far] - up[far]).max() <= 1
