"""JPEG in, JPEG out, without the re-encoding loss (issue 11).

A photo none of whose faces needed anything is written as the input's own bytes; a photo
with restored faces is encoded with the input's quantisation tables and chroma subsampling
when they are fine (quality 90 or more), so what was not restored comes back almost exactly,
and at quality 95, 4:4:4 when they are coarse (their blocks would come back into the faces). Real photos through the batch runner
that `fix` uses (dlib detector, the embedded network).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, JpegImagePlugin

from refrestore.api import build_pipeline
from refrestore.batch import BatchOptions, plan_outputs, run_batch
from refrestore.discover import TEMP_PREFIX, find_inputs
from refrestore.engines.reports import ImageReport
from refrestore.imageio import ImageWriteError, read_image, save_image, save_output

torch.set_num_threads(1)

CLEAN = ("clapton", "openface_clapton-1.jpg")  # one sharp 255-px face: left as it was
OLD = "codeformer_03.jpg"  # one damaged face, 4:2:0, tables of about quality 80
SHARP = ("clapton", "openface_clapton-1.jpg")  # 4:4:4, tables of about quality 99


def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).astype(np.int16)


@pytest.fixture(scope="module")
def album_run(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, ImageReport]]:
    root = tmp_path_factory.mktemp("jpeg-out")
    album = root / "album"
    album.mkdir()
    shutil.copyfile(shared_dir / "data" / "identities" / CLEAN[0] / CLEAN[1], album / "clean.jpg")
    shutil.copyfile(shared_dir / "data" / "real_lq" / "whole" / OLD, album / "old.jpg")
    # The same damaged photo saved again with fine tables (quality 95, 4:2:0), as a scan would be.
    with Image.open(album / "old.jpg") as im:
        im.save(album / "fine.jpg", quality=95, subsampling=2)
    # The clean photo stored turned a quarter (EXIF orientation 6), re-encoded losslessly enough.
    with Image.open(album / "clean.jpg") as im:
        exif = Image.Exif()
        exif[0x0112] = 6
        im.transpose(Image.Transpose.ROTATE_90).save(album / "turned.jpg", quality=98, exif=exif.tobytes())
    built = build_pipeline(model="auto", detector="dlib", device="cpu")
    inputs, _ = find_inputs([album], recursive=False)
    out = root / "out"
    summary = run_batch(plan_outputs(inputs, out, single_file=False), built.pipeline, BatchOptions(jobs=1, prefetch=0))
    return album, out, {Path(r.input).name: r for r in summary.images}


def test_a_photo_whose_faces_need_nothing_is_its_own_bytes(album_run):
    album, out, reports = album_run
    rep = reports["clean.jpg"]
    assert rep.status == "ok" and len(rep.faces) == 1 and rep.faces[0]["left_as_is"], rep
    assert rep.copied and rep.to_json()["copied"] is True  # the report says so
    assert not reports["old.jpg"].copied and not reports["turned.jpg"].copied
    output = Path(rep.output)
    assert output.read_bytes() == (album / "clean.jpg").read_bytes()
    assert not os.path.samefile(output, album / "clean.jpg")  # a copy, not a link to the input
    assert not [p for p in out.iterdir() if p.name.startswith(TEMP_PREFIX)]


def test_a_turned_photo_is_written_upright_not_copied(album_run):
    album, _, reports = album_run
    rep = reports["turned.jpg"]
    assert rep.status == "ok" and rep.faces and all(f["left_as_is"] for f in rep.faces), rep
    output = Path(rep.output)
    # A byte copy would keep orientation 6 over pixels that are stored sideways; the output
    # is the upright photo, which viewers must not turn again.
    assert output.read_bytes() != (album / "turned.jpg").read_bytes()
    with Image.open(output) as back:
        assert back.getexif().get(0x0112) == 1
        assert back.size == Image.open(album / "clean.jpg").size


def _far_from_face(rep: ImageReport, before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """|after - before| away from the face (and the paste-back's reach around it)."""
    x0, y0, x1, y1 = (int(v) for v in rep.faces[0]["box"])
    assert np.abs(after[y0:y1, x0:x1] - before[y0:y1, x0:x1]).mean() > 0.4  # restored: 0.69 levels here; untouched: 0
    changed = np.zeros(before.shape[:2], np.uint8)
    pad = (x1 - x0) // 2  # paste-back reaches a little beyond the box (measured: 25 px here)
    changed[max(0, y0 - pad):y1 + pad, max(0, x0 - pad):x1 + pad] = 1
    changed = cv2.dilate(changed, np.ones((33, 33), np.uint8)) > 0
    assert (~changed).mean() > 0.3
    return np.abs(after - before)[~changed]


def test_a_restored_photo_keeps_fine_tables_and_untouched_pixels(album_run):
    album, _, reports = album_run
    rep = reports["fine.jpg"]
    assert rep.status == "ok" and len(rep.faces) == 1 and rep.faces[0]["restored"], rep
    output = Path(rep.output)
    with Image.open(album / "fine.jpg") as src, Image.open(output) as back:
        assert back.quantization == src.quantization
        assert JpegImagePlugin.get_sampling(back) == JpegImagePlugin.get_sampling(src) == 2
    far = _far_from_face(rep, _rgb(album / "fine.jpg"), _rgb(output))
    # every block away from the face comes back nearly exact in the source's own tables
    assert far.mean() < 0.1 and np.percentile(far, 99) <= 2, (far.mean(), np.percentile(far, 99))


def test_a_restored_photo_from_coarse_tables_is_written_at_quality_95(album_run):
    """Quality 80 tables would put the blocks back into the restored face: quality 95, 4:4:4,
    and the rest of the photo still moves by well under a grey level."""
    album, _, reports = album_run
    rep = reports["old.jpg"]
    assert rep.status == "ok" and len(rep.faces) == 1 and rep.faces[0]["restored"], rep
    output = Path(rep.output)
    with Image.open(album / "old.jpg") as src, Image.open(output) as back:
        assert back.quantization != src.quantization and back.quantization[0][0] == 2  # quality 95
        assert JpegImagePlugin.get_sampling(back) == 0
    far = _far_from_face(rep, _rgb(album / "old.jpg"), _rgb(output))
    assert far.mean() < 0.6, far.mean()


def test_a_source_changed_since_reading_is_encoded_not_copied(shared_dir: Path, tmp_path: Path):
    src = tmp_path / "clean.jpg"
    shutil.copyfile(shared_dir / "data" / "identities" / CLEAN[0] / CLEAN[1], src)
    img = read_image(src)
    # Another photo takes its place after it was read (an editor saving over it).
    shutil.copyfile(shared_dir / "data" / "real_lq" / "whole" / OLD, src)
    out = tmp_path / "out" / "clean_restored.jpg"
    assert save_output(out, img.rgb, img) is False
    assert out.read_bytes() != src.read_bytes()
    assert np.abs(_rgb(out) - img.rgb).mean() < 0.5  # the pixels that were read, in its own tables
    assert not [p for p in out.parent.iterdir() if p.name.startswith(TEMP_PREFIX)]
    with pytest.raises(ImageWriteError, match="refusing to overwrite the input"):
        save_output(src, read_image(src).rgb, read_image(src))


def test_an_explicit_quality_replaces_the_sources_tables(shared_dir: Path, tmp_path: Path):
    img = read_image(shared_dir / "data" / "identities" / SHARP[0] / SHARP[1])
    assert img.jpeg is not None and img.jpeg.subsampling == 0
    save_image(tmp_path / "own.jpg", img.rgb, img)
    save_image(tmp_path / "q95.jpg", img.rgb, img, quality=95)
    with Image.open(img.path) as src, Image.open(tmp_path / "own.jpg") as own, Image.open(tmp_path / "q95.jpg") as q95:
        assert own.quantization == src.quantization
        assert q95.quantization != src.quantization and q95.quantization[0][0] == 2


def test_only_the_photo_itself_gets_the_sources_tables(shared_dir: Path, tmp_path: Path):
    img = read_image(shared_dir / "data" / "identities" / SHARP[0] / SHARP[1])
    h, w = img.rgb.shape[:2]
    save_image(tmp_path / "x2.jpg", cv2.resize(img.rgb, (2 * w, 2 * h), interpolation=cv2.INTER_CUBIC), img)
    save_image(tmp_path / "sheet.jpg", np.full((512, 3 * 512, 3), 128, np.uint8), img)  # a compare sheet
    with Image.open(img.path) as src, Image.open(tmp_path / "x2.jpg") as up, Image.open(tmp_path / "sheet.jpg") as sheet:
        assert up.quantization == src.quantization and up.size == (2 * w, 2 * h)
        assert sheet.quantization != src.quantization and sheet.quantization[0][0] == 2  # quality 95
