"""Faults during a run: GPU memory running out, a face that cannot be restored, a full disk."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from refrestore.detection import init_detector
from refrestore.pipeline import FacePipeline, restore_batch
from refrestore.restorers.resample import ResampleRestorer
from tmpfs import tmpfs_prefix
from refrestore.fileio import RECORDS  # the records of what refrestore wrote, beside its files


class OutOfMemoryAbove(ResampleRestorer):
    """The real resampling restorer on a pretend GPU with room for ``limit`` faces at once.

    CUDA cannot run here, so its out-of-memory error is raised where a GPU would raise it.
    """

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.batches: list[int] = []

    def restore(self, faces, references=None, strength=1.0):  # type: ignore[no-untyped-def]
        self.batches.append(len(faces))
        if len(faces) > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (pretend GPU)")
        return super().restore(faces, references, strength)


class FailsOnDarkFaces(ResampleRestorer):
    """The real restorer, except that it refuses faces darker than ``level``."""

    def __init__(self, level: float) -> None:
        super().__init__()
        self.level = level

    def restore(self, faces, references=None, strength=1.0):  # type: ignore[no-untyped-def]
        if any(f.mean() < self.level for f in faces):
            raise RuntimeError("input too dark for this model")
        return super().restore(faces, references, strength)


def _crops(shared_dir: Path, n: int) -> list[np.ndarray]:
    files = sorted((shared_dir / "data" / "real_lq" / "cropped_faces").glob("*.png"))[:n]
    return [np.array(Image.open(f).convert("RGB").resize((512, 512))) for f in files]


def test_out_of_memory_shrinks_the_batch(shared_dir):
    crops = _crops(shared_dir, 5)
    restorer = OutOfMemoryAbove(limit=2)
    warnings: list[str] = []
    out = restore_batch(restorer, crops, [[]] * 5, 1.0, batch_size=8, on_warning=warnings.append)
    assert all(isinstance(o, np.ndarray) for o in out)
    assert restorer.batches == [5, 4, 2, 2, 1]  # halved until it fits, then on through the rest
    assert any("out of memory" in w for w in warnings)
    expected = ResampleRestorer().restore(crops)
    assert all(np.array_equal(a, b) for a, b in zip(out, expected))


def test_a_face_that_fails_is_pasted_back_unrestored_and_marked(whole_photos):
    photo = np.asarray(Image.open(next(p for p in whole_photos if p.name == "codeformer_02.png")).convert("RGB"))
    det = init_detector("dlib")
    faces = det.detect(photo)
    from refrestore.align import align_face

    darkest = min(float(align_face(photo, f).image.mean()) for f in faces)
    pipe = FacePipeline(det, FailsOnDarkFaces(level=darkest + 0.01))
    result = pipe.run(photo)
    failed = [f for f in result.faces if f.error]
    assert len(failed) == 1 and "too dark" in failed[0].error
    assert failed[0].report()["restored"] is False
    assert sum(1 for f in result.faces if f.restored is not None) == len(faces) - 1
    assert any("unrestored" in w for w in result.warnings)
    # The failed face's pixels are the original ones.
    x1, y1, x2, y2 = (int(v) for v in failed[0].face.box)
    assert np.array_equal(result.image[y1:y2, x1:x2], photo[y1:y2, x1:x2])


def test_full_disk_stops_the_run_without_corrupt_files(tmp_path, whole_photos):
    album = tmp_path / "album"
    album.mkdir()
    for p in whole_photos:
        shutil.copyfile(p, album / p.name)
    mnt = tmp_path / "small"
    mnt.mkdir()
    out = mnt / "restored"
    report = tmp_path / "r.json"
    # 1.5 MB holds the first few outputs, not all ten.
    fix = [sys.executable, "-m", "refrestore", "fix", str(album), "-o", str(out), "--json", str(report),
           "--model", "resample", "--detector", "dlib", "--prefetch", "0"]
    # The tmpfs exists only inside the namespace: look at it there, after the run, before it goes.
    probe = ("import os,sys; from PIL import Image; fs=[os.path.join(r,f) for r,_,n in os.walk(sys.argv[1]) "
             f"if {RECORDS!r} not in r for f in n]; "
             "[Image.open(f).load() for f in fs if not os.path.basename(f).startswith('.')]; "
             "print(len(fs), sum(os.path.basename(f).startswith('.') for f in fs))")
    script = f'"$@"; rc=$?; {sys.executable} -c "{probe}" {out}; exit $rc'
    proc = subprocess.run(
        [*tmpfs_prefix(mnt, "size=1536k"), "sh", "-c", script, "sh", *fix],
        capture_output=True, text=True, env=dict(os.environ, REFRESTORE_HOME=str(tmp_path / "home")), timeout=600,
    )
    assert proc.returncode == 1, proc.stderr
    assert "no space left" in proc.stderr and "Traceback" not in proc.stderr
    written, temp_left = (int(x) for x in proc.stdout.strip().splitlines()[-1].split())
    assert temp_left == 0, "no temporary files left behind"
    entries = json.loads(report.read_text())["images"]
    assert entries[-1]["status"] == "error" and "no space left" in entries[-1]["error"]
    assert len(entries) < len(whole_photos), "the run stops at the full disk"
    assert written == sum(1 for e in entries if e["status"] == "ok")  # every output complete (decoded above)


def _noise(path: Path, h: int, w: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize("overwrite", [False, True])
def test_one_images_write_problem_is_that_images_error(tmp_path, overwrite):
    """A folder where an output goes, a WebP wider than 16383 px, a 251-character name: each is
    its own image's error and the album goes on (issue 15, item 4)."""
    album, out = tmp_path / "album", tmp_path / "out"
    album.mkdir()
    _noise(album / "a_folder_in_the_way.png", 40, 60, 1)
    _noise(album / "b_wide.webp", 30, 2100, 2)  # x8: 16800 px wide, past WebP's 16383
    long_name = album / ("c" + "x" * 246 + ".png")  # 251 characters; its output name is too long
    _noise(long_name, 40, 60, 3)
    _noise(album / "d_good.png", 40, 60, 4)
    (out / "a_folder_in_the_way_restored.png").mkdir(parents=True)
    before = {p.name: p.read_bytes() for p in album.iterdir()}
    env = dict(os.environ, OMP_NUM_THREADS="1", REFRESTORE_HOME=str(tmp_path / "home"))
    args = [sys.executable, "-m", "refrestore", "fix", str(album), "-o", str(out), "--upscale", "8",
            "--model", "resample", "--detector", "dlib", "--json", str(tmp_path / "r.json")]
    proc = subprocess.run(args + (["--overwrite"] if overwrite else []), capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "stopped" not in proc.stderr
    images = {Path(i["input"]).name: i for i in json.loads((tmp_path / "r.json").read_text())["images"]}
    assert len(images) == 4
    assert images["a_folder_in_the_way.png"]["status"] == "error"
    assert "is a folder" in images["a_folder_in_the_way.png"]["error"]
    assert images["b_wide.webp"]["status"] == "error" and "16383" in images["b_wide.webp"]["error"]
    assert images[long_name.name]["status"] == "error" and "too long" in images[long_name.name]["error"]
    assert images["d_good.png"]["status"] == "no_faces" and (out / "d_good_restored.png").is_file()
    assert (out / "a_folder_in_the_way_restored.png").is_dir()  # the user's folder is left as it was
    assert sorted(p.name for p in out.iterdir() if p.name != RECORDS) == ["a_folder_in_the_way_restored.png", "d_good_restored.png"]
    assert {p.name: p.read_bytes() for p in album.iterdir()} == before


def _fix(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, OMP_NUM_THREADS="1", REFRESTORE_HOME=str(tmp_path / "home"), **env)
    return subprocess.run([sys.executable, "-m", "refrestore", "fix", *args, "--model", "resample",
                           "--detector", "dlib"], capture_output=True, text=True, env=full_env, timeout=300)


def test_output_pixel_limit_is_checked_before_any_work(tmp_path):
    """--upscale 8 on a 4000x2650 photo would be a 678 MP output: one line naming the largest
    upscale that fits, exit 2, nothing written (issue 15, item 5)."""
    Image.fromarray(np.full((2650, 4000, 3), 120, np.uint8)).save(tmp_path / "big.jpg")
    proc = _fix([str(tmp_path / "big.jpg"), "-o", str(tmp_path / "out.jpg"), "--upscale", "8"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "678.4 MP" in lines[0] and "--upscale 4 is the largest that fits" in lines[0]
    assert not (tmp_path / "out.jpg").exists()


def test_output_pixel_limit_in_an_album_is_that_photos_error(tmp_path):
    album = tmp_path / "album"
    album.mkdir()
    _noise(album / "a_big.png", 300, 400, 1)  # x8: 7.68 MP, over the 1 MP limit
    _noise(album / "b_small.png", 60, 80, 2)  # x8: 0.31 MP
    proc = _fix([str(album), "-o", str(tmp_path / "out"), "--upscale", "8", "--max-pixels", "1000000",
                 "--json", str(tmp_path / "r.json")], tmp_path)
    assert proc.returncode == 1, proc.stderr
    images = {Path(i["input"]).name: i for i in json.loads((tmp_path / "r.json").read_text())["images"]}
    assert images["a_big.png"]["status"] == "error"
    assert "--upscale 2 is the largest that fits" in images["a_big.png"]["error"]
    assert images["b_small.png"]["status"] == "no_faces"
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.name != RECORDS) == ["b_small_restored.png"]


@pytest.mark.parametrize("value", ["1e400", "inf", "nan", "-5"])
def test_a_bad_pixel_limit_in_the_environment_is_a_usage_error(tmp_path, value):
    _noise(tmp_path / "a.png", 40, 60, 1)
    proc = _fix([str(tmp_path / "a.png"), "-o", str(tmp_path / "o.png")], tmp_path, REFRESTORE_MAX_PIXELS=value)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "REFRESTORE_MAX_PIXELS" in proc.stderr
    assert not (tmp_path / "o.png").exists()


def _faces_complete(out: Path, stem: str, n_faces: int) -> bool:
    folder = out / f"{stem}_restored_faces"
    want = {f"face{i:02d}_{tag}.png" for i in range(n_faces) for tag in ("input", "restored")}
    return folder.is_dir() and want <= {p.name for p in folder.iterdir()}


def test_sigkill_during_save_faces_leaves_no_permanent_gap(tmp_path, whole_photos):
    """SIGKILL while the face crops are written: an image whose output exists has all of its
    face crops, and the rerun completes the rest and leaves no temporary file (issue 15, item 8)."""
    import signal
    import time

    photo = next(p for p in whole_photos if p.name == "codeformer_02.png")  # four faces
    album, out = tmp_path / "album", tmp_path / "out"
    album.mkdir()
    for i in range(3):
        shutil.copyfile(photo, album / f"p{i}.png")
    env = dict(os.environ, OMP_NUM_THREADS="1", REFRESTORE_HOME=str(tmp_path / "home"))
    args = [sys.executable, "-m", "refrestore", "fix", str(album), "-o", str(out), "--save-faces",
            "--model", "resample", "--detector", "dlib", "--jobs", "1", "--json", str(tmp_path / "r.json")]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out / "p0_restored_faces").is_dir():
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)  # the first image's crops are being written right now
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    for i in range(3):
        if (out / f"p{i}_restored.png").exists():
            assert _faces_complete(out, f"p{i}", 4), f"p{i}: output written before its face crops"
    rerun = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    for i in range(3):
        assert (out / f"p{i}_restored.png").is_file() and _faces_complete(out, f"p{i}", 4)
    leftovers = [p for p in tmp_path.rglob(".refrestore-*")]
    assert leftovers == []


@pytest.mark.parametrize("upscale", [1, 2])
def test_strength_zero_returns_the_input_exactly(tmp_path, whole_photos, upscale):
    """--strength 0 keeps every face as it was: not one level changed (issue 15, item 9)."""
    from refrestore.pasteback import upscale_photo

    photo = next(p for p in whole_photos if p.name == "codeformer_02.png")
    proc = _fix([str(photo), "-o", str(tmp_path / "s0.png"), "--strength", "0", "--upscale", str(upscale),
                 "--json", str(tmp_path / "r.json")], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads((tmp_path / "r.json").read_text())["images"][0]["faces"]) == 4
    src = np.asarray(Image.open(photo).convert("RGB"))
    out = np.asarray(Image.open(tmp_path / "s0.png").convert("RGB"))
    diff = np.abs(out.astype(np.int16) - upscale_photo(src, upscale).astype(np.int16))
    assert diff.max() == 0, f"--strength 0 changed {int((diff.max(axis=2) > 0).sum())} pixels by up to {diff.max()} levels"


@pytest.mark.parametrize("keep_detail", [0.0, 0.4, 1.0])
def test_temper_at_strength_zero_is_the_crop_itself(whole_photos, keep_detail):
    """Nothing of the restorer's at strength 0, whatever share of its own detail a face keeps:
    the crop comes back as it was (a blend at zero would still drop part of its detail)."""
    from refrestore.align import align_face
    from refrestore.pasteback import temper

    photo = np.asarray(Image.open(next(p for p in whole_photos if p.name == "codeformer_02.png")).convert("RGB"))
    crop = align_face(photo, init_detector("dlib").detect(photo)[0]).image
    restored = ResampleRestorer().restore([cv2.GaussianBlur(crop, (0, 0), 3.0)])[0]  # unlike the crop
    out = temper(crop, restored, 0.0, keep_detail, 2.0, detail_amount=0.0)
    diff = np.abs(out.astype(np.int16) - crop.astype(np.int16))
    assert diff.max() == 0, f"temper at 0 changed the crop by up to {diff.max()} levels"


def test_a_fifo_given_as_manifest_is_refused_not_read(tmp_path):
    _noise(tmp_path / "a.png", 40, 60, 1)
    os.mkfifo(tmp_path / "fifo")
    proc = _fix([str(tmp_path / "a.png"), "-o", str(tmp_path / "o.png"), "--manifest", str(tmp_path / "fifo")],
                tmp_path)  # a blocking read would hang until the timeout
    assert proc.returncode == 2, proc.stderr
    assert "not a regular file" in proc.stderr and "Traceback" not in proc.stderr


def test_output_names_the_user_meant(tmp_path):
    """-o o4.jpg with the same photo named twice is that photo's output file; -o dir.v2/ (a
    trailing slash) is a folder; -o x.jpg for two photos is refused (issue 15, item 9)."""
    _noise(tmp_path / "a.png", 40, 60, 1)
    _noise(tmp_path / "b.png", 40, 60, 2)
    a = str(tmp_path / "a.png")
    assert _fix([a, a, "-o", str(tmp_path / "o4.jpg")], tmp_path).returncode == 0
    assert (tmp_path / "o4.jpg").is_file()
    assert _fix([a, "-o", str(tmp_path / "restored.v2") + "/"], tmp_path).returncode == 0
    assert (tmp_path / "restored.v2" / "a_restored.png").is_file()
    proc = _fix([a, str(tmp_path / "b.png"), "-o", str(tmp_path / "o5.jpg")], tmp_path)
    assert proc.returncode == 2 and "several photos need a folder" in proc.stderr
    assert not (tmp_path / "o5.jpg").exists()


def test_a_second_sigterm_does_not_lose_the_report(tmp_path, whole_photos):
    import signal
    import time

    photo = next(p for p in whole_photos if p.name == "codeformer_02.png")
    album, out = tmp_path / "album", tmp_path / "out"
    album.mkdir()
    for i in range(4):
        shutil.copyfile(photo, album / f"p{i}.png")
    env = dict(os.environ, OMP_NUM_THREADS="1", REFRESTORE_HOME=str(tmp_path / "home"))
    proc = subprocess.Popen([sys.executable, "-m", "refrestore", "fix", str(album), "-o", str(out), "--upscale", "4",
                             "--model", "resample", "--detector", "dlib", "--json", str(tmp_path / "r.json")],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out.is_dir() and any(out.iterdir())):
        time.sleep(0.005)  # the first output is being encoded
    # Impatient: SIGTERM again and again until it exits. Two signals before Python runs the
    # handler count as one (a single 50 ms apart did not test anything: the first one waits
    # for detection's C code to return), so keep sending: later ones then land while the
    # write in flight finishes and while the report is written, and must not cut either short.
    stop = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < stop:
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.01)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and (tmp_path / "r.json").is_file(), err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["interrupted"] is True
    written = {p.name for p in out.iterdir() if p.name != RECORDS}
    assert {Path(i["output"]).name for i in report["images"] if i["output"]} == written
