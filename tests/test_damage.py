"""The damage of real photos used in training (refrestore.training.damage): each kind does what it
claims on a real face, and a drawn chain is reproducible."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from refrestore.degradation import blockiness
from refrestore.training.damage import Damage, apply_damage, blur, halftone, jpeg, random_damage, scan_lines, tone


@pytest.fixture(scope="module")
def face(shared_dir: Path) -> np.ndarray:
    img = cv2.imread(str(shared_dir / "data" / "refbench" / "hq" / "00005" / "0.png"), cv2.IMREAD_COLOR)
    assert img is not None
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _grey(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)


def test_jpeg_at_the_small_size_leaves_blocks_on_the_small_images_grid(face: np.ndarray) -> None:
    # Only a JPEG of the 64-pixel face, enlarged to 512: each 8x8 block is an eighth of the crop.
    d = Damage(small=64, pre_blur=("gauss", 0.0, 0.0), down=cv2.INTER_AREA, up=cv2.INTER_NEAREST,
               steps=(("jpeg", {"quality": 20, "sampling": "420", "offset": (3, 5)}),))
    lq, truth = apply_damage(face, d, seed=0)
    assert lq.shape == face.shape and np.array_equal(truth, face)
    small = _grey(lq[::8, ::8])  # back on the small image's pixels
    on_grid = blockiness(small[3:, 5:])  # the block grid moved by the offset
    off_grid = blockiness(small[7:, 1:])
    clean = blockiness(_grey(cv2.resize(face, (64, 64), interpolation=cv2.INTER_AREA))[3:, 5:])
    assert on_grid > 1.4 and on_grid > off_grid + 0.3 and on_grid > clean + 0.3, (on_grid, off_grid, clean)
    # 4:2:0 keeps colour at half resolution: less fine chroma than 4:4:4 at the same quality.
    small_rgb = cv2.resize(face, (64, 64), interpolation=cv2.INTER_AREA)

    def chroma_detail(img: np.ndarray) -> float:
        cr = cv2.cvtColor(img, cv2.COLOR_RGB2YCrCb)[..., 1].astype(np.float32)
        return float(np.abs(cr - cv2.GaussianBlur(cr, (0, 0), 1.0)).mean())

    assert chroma_detail(jpeg(small_rgb, 60, "420")) < 0.8 * chroma_detail(jpeg(small_rgb, 60, "444"))


def test_halftone_dots_sit_on_the_screen_period(face: np.ndarray) -> None:
    grey = np.repeat(cv2.cvtColor(face, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)  # one screen for grey
    g = _grey(halftone(grey, period=4.0, angle_deg=0.0))
    hp = g - cv2.GaussianBlur(g, (0, 0), 4.0)

    def corr(dy: int, dx: int) -> float:
        a, b = hp[8:-8, 8:-8], np.roll(hp, (-dy, -dx), axis=(0, 1))[8:-8, 8:-8]
        return float((a * b).mean() / (a * a).mean())

    # Dots repeat every 4 pixels along both screen axes; half a period diagonally is between dots.
    assert corr(0, 4) > 0.5 and corr(4, 0) > 0.5 and corr(2, 2) < -0.2, (corr(0, 4), corr(4, 0), corr(2, 2))
    plain = _grey(face) - cv2.GaussianBlur(_grey(face), (0, 0), 4.0)
    assert hp.std() > 3 * plain.std()


def test_scan_lines_run_along_one_axis_and_motion_blur_along_its_direction(face: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    diff = _grey(scan_lines(face, rng, amplitude=8.0, vertical=True)) - _grey(face)
    assert diff[:, 16:-16].mean(axis=0).std() > 2.0  # columns differ from each other ...
    assert diff[16:-16].mean(axis=1).std() < 0.5  # ... rows alike
    g0 = _grey(face)

    def kept(x: np.ndarray, axis: int) -> float:  # gradient left across that axis
        return float(np.abs(np.diff(x, axis=axis)).mean() / np.abs(np.diff(g0, axis=axis)).mean())

    sideways, upright = _grey(blur(face, "motion", 9.0, angle=0.0)), _grey(blur(face, "motion", 9.0, angle=90.0))
    assert kept(sideways, 1) < 0.8 * kept(sideways, 0)  # a sideways shake smears along the rows
    assert kept(upright, 0) < 0.8 * kept(upright, 1)


def test_drawn_chains_are_reproducible_and_the_truth_takes_only_the_tone(face: np.ndarray) -> None:
    small = cv2.resize(face, (128, 128), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(3)
    chains = [random_damage(rng, 128) for _ in range(60)]
    names = {s[0] for c in chains for s in c.steps}
    assert {"jpeg", "noise", "scan", "blur"} <= names
    assert {c.pre_blur[0] for c in chains} == {"gauss", "motion", "defocus"}
    assert all(16 <= c.small <= 128 for c in chains)
    toned = next(c for c in chains if c.tone.get("grey"))
    lq, truth = apply_damage(small, toned, seed=1)
    lq2, _ = apply_damage(small, toned, seed=1)
    assert np.array_equal(lq, lq2) and lq.shape == small.shape
    assert np.array_equal(truth, tone(small, **toned.tone))  # a greyscale print's truth is that print
    assert np.abs(truth[..., 0].astype(int) - truth[..., 1]).max() <= 30  # grey, faded warm at most
    plain = next(c for c in chains if not c.tone)
    assert np.array_equal(apply_damage(small, plain, seed=1)[1], small)
