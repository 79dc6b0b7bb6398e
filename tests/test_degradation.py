"""The degradation estimate on real faces with known damage, and the rules that keep a good
face from getting worse (tempering in the crop, the photo's own detail in paste-back)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from refrestore.align import align_face
from refrestore.degradation import blockiness, estimate, noise_sigma, photo_window
from refrestore.net.degrade import MILD, degrade, preset
from refrestore.pasteback import PasteJob, detail_sigma, paste_faces, temper

IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def _lap_var(rgb: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32), cv2.CV_32F).var())


@pytest.fixture(scope="module")
def clean_faces(shared_dir: Path) -> list[np.ndarray]:
    files = sorted((shared_dir / "data" / "refbench" / "hq").glob("*/*.png"))[::12][:6]
    return [np.asarray(Image.open(f).convert("RGB")) for f in files]


def test_severity_orders_faces_by_a_known_degradation(clean_faces):
    for i, hq in enumerate(clean_faces):
        steps = [hq] + [degrade(hq, p, seed=i) for p in (MILD, preset("moderate"), preset("severe"), preset("extreme"))]
        est = [estimate(x, IDENTITY, x) for x in steps]
        sharp = [e.sharpness for e in est]
        assert all(a > b for a, b in zip(sharp, sharp[1:])), sharp
        sev = [e.severity for e in est]
        assert all(a <= b for a, b in zip(sev, sev[1:])), sev
        assert sev[0] < sev[1], "a mild blur is noticed"
        assert est[2].severity == 1.0 and est[2].cause == "sharpness"


def test_noise_and_jpeg_measures_grow_with_the_damage(clean_faces):
    rng = np.random.default_rng(0)
    for hq in clean_faces[:3]:
        grey = cv2.cvtColor(hq, cv2.COLOR_RGB2GRAY).astype(np.float32)
        sigmas = [noise_sigma(np.clip(grey + rng.normal(0, s, grey.shape), 0, 255).astype(np.float32)) for s in (0, 5, 10, 20)]
        assert all(a < b for a, b in zip(sigmas, sigmas[1:])), sigmas
        assert abs(sigmas[2] - 10) < 3 and abs(sigmas[3] - 20) < 4, sigmas  # in units a user can read
        blocks = []
        for q in (100, 75, 40, 15):
            ok, buf = cv2.imencode(".jpg", hq[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
            blocks.append(blockiness(cv2.cvtColor(cv2.imdecode(buf, 1), cv2.COLOR_BGR2GRAY).astype(np.float32)))
        assert all(a < b for a, b in zip(blocks, blocks[1:])), blocks
        jpeg15 = cv2.cvtColor(cv2.imdecode(cv2.imencode(".jpg", hq[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 15])[1], 1), cv2.COLOR_BGR2RGB)
        assert estimate(jpeg15, IDENTITY, jpeg15).scores["blockiness"] == 1.0


def test_scan_lines_and_a_printed_screen_are_seen_as_a_pattern(clean_faces):
    """Streaks along the columns and a halftone screen, at the photo's pixels, count as damage
    (the noise mask cancels lines along a row or column and read the streaks as clean)."""
    from refrestore.training.damage import halftone, scan_lines

    for i, hq in enumerate(clean_faces[:3]):
        photo = cv2.resize(hq, (256, 256), interpolation=cv2.INTER_AREA)  # a 128-pixel face
        lines = scan_lines(photo, np.random.default_rng(i), amplitude=5.0, vertical=True, period=3.5)
        screen = halftone(photo, period=3.0, angle_deg=15.0, mix=0.5)
        clean, streaked, printed = (estimate(x, IDENTITY * 2, x) for x in (photo, lines, screen))
        assert clean.scores["pattern"] == 0.0 and clean.pattern < 1.7, clean.pattern
        assert streaked.scores["pattern"] == 1.0 and streaked.scores["noise"] == 0.0, (streaked.pattern, streaked.noise)
        assert printed.scores["pattern"] == 1.0 and printed.severity > clean.severity


def test_a_small_face_is_measured_at_its_own_size(clean_faces):
    hq = clean_faces[0]
    # The same face as a 128-pixel photo: its aligned crop is a 4x upscale, which is blurry
    # at 512 but sharp at the photo's own resolution; its size is what counts.
    small = cv2.resize(hq, (128, 128), interpolation=cv2.INTER_AREA)
    affine = np.array([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0]])
    crop = cv2.resize(small, (512, 512), interpolation=cv2.INTER_CUBIC)
    d = estimate(crop, affine, small)
    assert d.native_px == pytest.approx(128.0) and d.face_px == pytest.approx(64.0)
    assert d.sharpness > estimate(crop, IDENTITY, crop).sharpness * 2
    assert d.cause == "face_px" and d.scores["face_px"] > 0.5
    assert estimate(crop, affine, small, upscale=4).scores["face_px"] == 0.0  # 256 px wide in a 4x output


def test_temper_keeps_the_sharper_detail(clean_faces):
    hq = clean_faces[1]
    blurred = cv2.GaussianBlur(hq, (0, 0), 3.0)
    sigma = detail_sigma(512)
    # A blurred "restoration" of a sharp face: the face keeps its own detail...
    kept = temper(hq, blurred, amount=1.0, keep_detail=1.0, sigma=sigma)
    assert _lap_var(kept) > 0.9 * _lap_var(hq)
    assert _lap_var(blurred) < 0.3 * _lap_var(hq)
    # ...and a sharp restoration of a blurred face brings its detail in.
    gained = temper(blurred, hq, amount=1.0, keep_detail=1.0, sigma=sigma)
    assert _lap_var(gained) > 0.8 * _lap_var(hq)
    # Nothing applied: the original, exactly; everything, with no detail kept: the restoration.
    assert np.array_equal(temper(hq, blurred, 0.0, 1.0, sigma), hq)
    assert np.array_equal(temper(hq, blurred, 1.0, 0.0, sigma), blurred)


def test_paste_back_keeps_a_large_faces_own_detail(shared_dir):
    from refrestore.detection import init_detector
    from refrestore.imageio import read_image

    photo = read_image(shared_dir / "data" / "identities" / "paul_rudd" / "facenetpytorch_1.jpg").rgb
    face = init_detector("dlib").detect(photo)[0]
    a = align_face(photo, face)
    assert estimate(a.image, a.affine, photo).native_px > 1000  # twice the crop's resolution
    window = lambda img: photo_window(img, a.affine)  # noqa: E731
    # The crop pasted back as it is: without the photo's own finer detail the face loses
    # most of its Laplacian variance; with it, the photo comes back as it was.
    without = paste_faces(photo, [PasteJob(restored=a.image, original=a.image, affine=a.affine, detail=0.0)])
    with_detail = paste_faces(photo, [PasteJob(restored=a.image, original=a.image, affine=a.affine, detail=1.0)])
    assert _lap_var(window(without)) < 0.6 * _lap_var(window(photo))
    assert _lap_var(window(with_detail)) > 0.97 * _lap_var(window(photo))
    assert np.abs(window(with_detail).astype(int) - window(photo).astype(int)).mean() < 0.5


# Small real photos with one clear face each (sizes 410-900 px), for the noise estimate.
NOISE_PHOTOS = ["scarlett_johansson/deepface_img50.jpg", "clapton/openface_clapton-1.jpg", "adams/openface_adams.jpg",
                "deepface_g9/deepface_img18.jpg", "kit_harington/face_recognition_johnsnow_test1.jpg"]


def _noisy(photo: np.ndarray, sigma: float, enlarged: bool, seed: int) -> np.ndarray:
    """Gaussian noise at the photo's resolution, or added at half size and enlarged 2x
    (noise that was scanned or resized with its photo, smooth at the pixel scale)."""
    rng = np.random.default_rng(seed)
    h, w = photo.shape[:2]
    base = cv2.resize(photo, (w // 2, h // 2), interpolation=cv2.INTER_AREA) if enlarged else photo
    noisy = np.clip(base.astype(np.float32) + rng.normal(0, sigma, base.shape) + 0.5, 0, 255).astype(np.uint8) if sigma else base
    return cv2.resize(noisy, (w, h), interpolation=cv2.INTER_CUBIC) if enlarged else noisy


def test_noise_estimate_orders_clean_and_noisy_real_faces(shared_dir):
    from refrestore.detection import init_detector
    from refrestore.imageio import read_image

    det = init_detector("dlib")
    t = estimate.__defaults__[-1]  # the default Thresholds
    for i, name in enumerate(NOISE_PHOTOS):
        photo = read_image(shared_dir / "data" / "identities" / name).rgb
        face = max(det.detect(photo), key=lambda f: f.width)
        for enlarged in (False, True):
            levels = []
            for sigma in (0, 3, 5, 10):
                img = _noisy(photo, sigma, enlarged, seed=i)
                a = align_face(img, face)
                levels.append(estimate(a.image, a.affine, img).noise)
            assert levels[0] < levels[1] < levels[2] < levels[3], (name, enlarged, levels)
            assert levels[0] < t.noise_ok, (name, levels)  # a clean face is not called noisy
            if not enlarged:  # at the photo's resolution, in units a user can read
                assert 2.5 < levels[2] < 6 and 5 < levels[3] < 9, (name, levels)
            else:  # the old median read 0.247 for every one of these
                assert levels[3] - levels[0] > 1.0, (name, levels)


def test_noise_sigma_is_not_quantised_on_8bit_data():
    # 8-bit pixels give whole-number residuals; a median of them moved in steps of 0.25
    # sigma, so 1.0 and 1.1 read the same. Rounding adds its own 0.29 (1/sqrt(12)) in quadrature.
    rng = np.random.default_rng(3)
    unit = rng.normal(0, 1, (256, 256))
    sigmas = (1.0, 1.1, 1.2, 1.3, 1.4)
    levels = [noise_sigma(np.clip(np.round(128 + s * unit), 0, 255).astype(np.float32)) for s in sigmas]
    assert all(a < b for a, b in zip(levels, levels[1:])), levels
    assert all(abs(v - np.hypot(s, 12 ** -0.5)) < 0.1 for v, s in zip(levels, sigmas)), levels
