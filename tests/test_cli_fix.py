"""End to end through the real CLI (subprocesses), on real photos."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from refrestore.align import similarity_transform, template_for
from refrestore.pasteback import PasteJob, paste_faces

ENV_BASE = {"OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}


def run_cli(args: list[str], home: Path, *, user: int | None = None, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, REFRESTORE_HOME=str(home), **ENV_BASE)
    cmd = [sys.executable, "-m", "refrestore", *args]
    if user is not None:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def _rgb(path: Path) -> np.ndarray:
    return np.array(Image.open(path).convert("RGB"))


def _fine(a: np.ndarray) -> float:
    """How much detail finer than a pixel or two."""
    a = a.astype(np.float32)
    return float((a - cv2.GaussianBlur(a, (0, 0), 1)).std())


def _check_face_entry(face: dict, w: int, h: int) -> None:
    assert set(face) >= {"box", "landmarks", "detector_score", "reference", "restorer"}
    x1, y1, x2, y2 = face["box"]
    assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
    assert len(face["landmarks"]) == 5 and all(len(p) == 2 for p in face["landmarks"])
    assert 0 < face["detector_score"] <= 1
    assert face["restorer"]


@pytest.mark.parametrize("detector", ["dlib", "retinaface"])
def test_fix_multi_face_photo_end_to_end(tmp_path, whole_photos, retinaface_store, detector):
    photo = next(p for p in whole_photos if p.name == "codeformer_02.png")
    src = tmp_path / "family photo.png"
    shutil.copyfile(photo, src)
    out, report = tmp_path / "out.png", tmp_path / "report.json"
    args = ["fix", str(src), "-o", str(out), "--upscale", "2", "--json", str(report), "--model", "resample", "--detector", detector,
            "--save-faces"]
    if detector == "retinaface":
        args += ["--weights-dir", str(retinaface_store.directory), "--manifest", str(retinaface_store.manifest.source)]
    proc = run_cli(args, tmp_path / "home")
    assert proc.returncode == 0, proc.stderr
    assert src.read_bytes() == photo.read_bytes()  # the input is untouched

    inp, res = _rgb(src), _rgb(out)
    h, w = inp.shape[:2]
    assert res.shape == (2 * h, 2 * w, 3)

    data = json.loads(report.read_text())
    assert len(data["images"]) == 1
    entry = data["images"][0]
    assert entry["status"] == "ok" and entry["error"] is None
    assert entry["input"] == str(src) and entry["output"] == str(out)
    assert len(entry["faces"]) == 4
    for face in entry["faces"]:
        _check_face_entry(face, w, h)
        assert face["reference"] is None and face["restorer"] == "resample"
        assert face["detector"].startswith(detector)

    up = cv2.resize(inp, (2 * w, 2 * h), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0 : 2 * h, 0 : 2 * w]
    far = np.ones((2 * h, 2 * w), bool)
    jobs: list[PasteJob] = []
    regions = []
    for face in entry["faces"]:
        x1, y1, x2, y2 = (2 * v for v in face["box"])
        cx, cy, size = (x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1)
        far &= np.hypot(xx - cx, yy - cy) > 2.0 * size
        sl = (slice(int(cy - size / 4), int(cy + size / 4)), slice(int(cx - size / 4), int(cx + size / 4)))
        inner, before = res[sl].astype(int), up[sl].astype(int)
        # Each face was restored (the resample restorer's sharpening: more fine detail in the
        # saved restored crop than in the saved input crop) and pasted in place, colour and
        # layout kept (a face pasted off its place, mirrored or recoloured fails).
        crops = out.parent / f"{out.stem}_faces"
        restored, original = (_rgb(crops / f"face{face['index']:02d}_{tag}.png") for tag in ("restored", "input"))
        ratio = _fine(restored) / _fine(original)
        assert ratio > 1.005, ("the restorer must change the face", ratio)  # 1.011-1.10 (adaptive amounts)
        assert (inner != before).any(axis=2).mean() > 0.6, "the face must be pasted here"
        low = [cv2.GaussianBlur(a.astype(np.float32), (0, 0), size / 16) for a in (inner, before)]
        assert np.abs(low[0] - low[1]).mean() < 4.0, np.abs(low[0] - low[1]).mean()
        m = similarity_transform(np.array(face["landmarks"]), template_for(face["landmark_kind"]))
        jobs.append(PasteJob(restored=restored, original=original, affine=m, detail=face["kept_detail"],
                             amount=face["strength"]))
        regions.append(sl)
    # The output is those restored crops pasted back (report landmarks are rounded to 0.01 px: measured
    # 0.00-0.016).
    expected = paste_faces(inp, jobs, upscale=2).astype(int)
    for sl in regions:
        assert np.abs(res[sl].astype(int) - expected[sl]).mean() < 0.3, np.abs(res[sl].astype(int) - expected[sl]).mean()
    assert far.mean() > 0.2
    assert np.abs(res[far].astype(int) - up[far].astype(int)).max() <= 1, "pixels far from faces must not change"


def test_no_face_photo_is_copied_through(tmp_path, shared_dir):
    # A landscape-like picture with no face: the sky/texture from a real photo's corner.
    photo = _rgb(shared_dir / "data" / "real_lq" / "whole" / "gfpgan_00.jpg")[:200, :300]
    src = tmp_path / "noface.png"
    Image.fromarray(np.ascontiguousarray(photo)).save(src)
    report = tmp_path / "r.json"
    proc = run_cli(["fix", str(src), "--json", str(report), "--model", "resample", "--detector", "dlib"], tmp_path / "home")
    assert proc.returncode == 0, proc.stderr
    entry = json.loads(report.read_text())["images"][0]
    assert entry["status"] == "no_faces" and entry["faces"] == []
    assert np.array_equal(_rgb(Path(entry["output"])), photo)


def _world_writable_dir() -> Path:
    d = Path(tempfile.mkdtemp(prefix="refrestore-test-"))
    d.chmod(0o777)
    return d


@pytest.mark.skipif(shutil.which("setpriv") is None or os.geteuid() != 0, reason="needs root and setpriv to run as an unprivileged user")
def test_bad_inputs_each_get_one_line_and_do_not_stop_the_batch(whole_photos):
    """Run as an unprivileged user, so an unreadable folder and a read-only output are real."""
    base = _world_writable_dir()
    try:
        album = base / "album"
        album.mkdir()
        shutil.copyfile(next(p for p in whole_photos if p.name == "codeformer_04.jpg"), album / "good.jpg")
        (album / "empty.jpg").write_bytes(b"")
        good_bytes = (album / "good.jpg").read_bytes()
        (album / "truncated.jpg").write_bytes(good_bytes[: len(good_bytes) // 2])
        (album / "notes.jpg").write_text("this is a text file, not a photo\n")
        locked = album / "locked"
        locked.mkdir()
        shutil.copyfile(album / "good.jpg", locked / "inside.jpg")
        locked.chmod(0o000)
        for p in album.rglob("*"):
            if p != locked and p.parent != locked:
                p.chmod(0o777 if p.is_dir() else 0o666)
        album.chmod(0o777)
        out = base / "restored"
        out.mkdir(mode=0o777)
        out.chmod(0o777)
        report = base / "report.json"
        missing = base / "does-not-exist.jpg"
        proc = run_cli(
            ["fix", str(album), str(missing), "-o", str(out), "--recursive", "--json", str(report), "--model", "resample", "--detector", "dlib"],
            base / "home", user=65534, cwd=base,
        )
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr
        entries = {Path(e["input"]).name: e for e in json.loads(report.read_text())["images"]}
        assert entries["good.jpg"]["status"] == "ok"
        assert Path(entries["good.jpg"]["output"]).is_file()
        for name in ("empty.jpg", "truncated.jpg", "notes.jpg", "does-not-exist.jpg", "locked"):
            e = entries[name]
            assert e["status"] == "error", e
            assert e["error"] and "\n" not in e["error"] and len(e["error"]) < 200, e
        assert "empty" in entries["empty.jpg"]["error"].lower()
        assert "truncat" in entries["truncated.jpg"]["error"].lower()
        assert "not an image" in entries["notes.jpg"]["error"].lower()
        assert "no such" in entries["does-not-exist.jpg"]["error"].lower()
        assert "permission" in entries["locked"]["error"].lower()

        # A read-only output folder stops with a clear message and leaves nothing behind.
        ro = base / "readonly"
        ro.mkdir()
        ro.chmod(0o555)
        proc = run_cli(["fix", str(album / "good.jpg"), "-o", str(ro / "x.jpg"), "--model", "resample", "--detector", "dlib"], base / "home", user=65534, cwd=base)
        assert proc.returncode == 1
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert any("read-only" in ln or "permission" in ln.lower() for ln in lines), proc.stderr
        assert "Traceback" not in proc.stderr
        assert list(ro.iterdir()) == []
    finally:
        for p in base.rglob("*"):
            try:
                p.chmod(0o777)
            except OSError:
                pass
        shutil.rmtree(base, ignore_errors=True)


def test_usage_errors_exit_2(tmp_path, whole_photos):
    src = tmp_path / "a.jpg"
    shutil.copyfile(next(p for p in whole_photos if p.suffix == ".jpg"), src)
    proc = run_cli(["fix", str(src), "--device", "tpu"], tmp_path / "home")
    assert proc.returncode == 2 and "tpu" in proc.stderr
    proc = run_cli(["fix", str(src), "--upscale", "0"], tmp_path / "home")
    assert proc.returncode == 2
    proc = run_cli(["fix", str(tmp_path), "-o", str(tmp_path)], tmp_path / "home")
    assert proc.returncode == 2 and "input folder" in proc.stderr
    proc = run_cli(["fix", str(src), "-o", str(src)], tmp_path / "home")
    assert proc.returncode == 2 and "overwrite" in proc.stderr


def test_fix_download_fetches_the_detector_then_uses_it(tmp_path, whole_photos, shared_dir):
    """fix --download over real HTTP on 127.0.0.1, from a user manifest (the shared RetinaFace
    file is not facexlib's published one, so it comes with a manifest of its own)."""
    from weights_http_server import FaultServer, write_manifest

    from conftest import SHARED_RETINAFACE_SHA256, SHARED_RETINAFACE_SIZE

    server = FaultServer(tmp_path / "served").start()
    try:
        name = "detection_mobilenet0.25_Final.pth"
        server.root.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shared_dir / "weights" / "retinaface" / name, server.root / name)
        manifest = write_manifest(tmp_path / "m.toml", [{
            "name": name, "role": "detector", "models": ["retinaface-mobilenet"], "url": server.url(name),
            "size": SHARED_RETINAFACE_SIZE, "sha256": SHARED_RETINAFACE_SHA256, "license": "MIT",
            "commercial": True, "default": True, "description": "shared test copy",
        }])
        src = tmp_path / "photo.jpg"
        shutil.copyfile(next(p for p in whole_photos if p.name == "codeformer_03.jpg"), src)
        weights = tmp_path / "weights"
        report = tmp_path / "r.json"
        offline = run_cli(["fix", str(src), "--download", "--offline", "--manifest", str(manifest), "--weights-dir", str(weights)], tmp_path / "home")
        assert offline.returncode == 2 and "offline" in offline.stderr
        proc = run_cli(["fix", str(src), "--download", "--manifest", str(manifest), "--weights-dir", str(weights),
                        "--detector", "retinaface", "--json", str(report)], tmp_path / "home")
        assert proc.returncode == 0, proc.stderr
        assert (weights / name).stat().st_size == SHARED_RETINAFACE_SIZE
        data = json.loads(report.read_text())
        assert data["detector"] == "retinaface_mobile0.25"
        assert [r.name for r in server.log if r.status == 200] == [name]
    finally:
        server.stop()
