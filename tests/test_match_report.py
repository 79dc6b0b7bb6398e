"""`match --html` and the contact sheet's captions, on real photos and a real gallery."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from refrestore.cli.match_cmd import CAPTION_SCALE, fit_caption


def test_long_captions_are_shortened_to_the_tile() -> None:
    import cv2

    long = "a_very_long_reference_photo_name_from_the_family_album_1987.jpg #0"
    short = fit_caption(long, 252)
    assert short != long and "..." in short
    assert short.startswith("a_very") and short.endswith("#0")
    assert cv2.getTextSize(short, cv2.FONT_HERSHEY_SIMPLEX, CAPTION_SCALE, 1)[0][0] <= 252
    assert fit_caption("score 0.931", 252) == "score 0.931"


def test_match_html_and_contact_sheet(tmp_path: Path, shared_dir: Path) -> None:
    gallery = tmp_path / "gallery" / "00005"
    gallery.mkdir(parents=True)
    # All of the person's other photos, as in the README demo (three are too few for RefSel to be sure).
    for src in sorted((shared_dir / "data" / "refbench" / "hq" / "00005").glob("*.png")):
        shutil.copyfile(src, gallery / f"portrait_of_a_person_with_a_long_file_name_{src.name}")
    known = shared_dir / "data" / "refbench" / "real_lq_no_gt" / "00005_17.png"
    stranger = shared_dir / "data" / "real_lq" / "whole" / "gfpgan_Blake_Lively.jpg"
    sheets, page, report = tmp_path / "sheets", tmp_path / "m.html", tmp_path / "m.json"
    env = dict(os.environ, REFRESTORE_HOME=str(tmp_path / "home"), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "refrestore", "match", str(known), str(stranger), "--refs",
                           str(tmp_path / "gallery"), "--detector", "dlib", "--compare", str(sheets),
                           "--html", str(page), "--json", str(report)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(report.read_text())
    faces = {Path(im["input"]).name: im["faces"] for im in data["images"]}
    assert faces["00005_17.png"][0]["reference"] is not None
    assert all(f["reference"] is None for f in faces["gfpgan_Blake_Lively.jpg"])
    text = page.read_text()
    assert "portrait_of_a_person" in text and "no reference" in text and "restored (" not in text

    # The captions sit in a white strip under the tiles: the tile pixels are the face's own.
    sheet = np.array(Image.open(sheets / "00005_17_match.png").convert("RGB"))
    tile, gap = 256, 6
    assert sheet.shape[0] > tile + 2 * gap + 30  # room for two caption lines
    strip = sheet[gap + tile: gap + tile + 40, gap: gap + 4 * (tile + gap)]
    assert (strip < 100).any(), "no caption text under the tiles"
    assert (strip > 250).mean() > 0.8  # white background, not a face
