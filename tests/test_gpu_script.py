"""The lent-GPU training path: data packs, an entry point with no heavy imports, the script."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from refrestore.training.data import FaceBank, read_rgb
from refrestore.training.pack import pack_faces, read_pack
from refrestore.net.split import is_held_out

ROOT = Path(__file__).resolve().parents[1]


def _folder(shared_dir: Path, tmp_path: Path, people: tuple[str, ...], n: int = 3) -> Path:
    root = tmp_path / "faces"
    for p in people:
        (root / p).mkdir(parents=True)
        for f in sorted((shared_dir / "data" / "faces" / p).glob("*.jpg"))[:n]:
            os.symlink(f.resolve(), root / p / f.name)
    return root


def _people(shared_dir: Path) -> tuple[str, str, str]:
    names = sorted(d.name for d in (shared_dir / "data" / "faces").iterdir() if d.is_dir())
    train = [p for p in names if not is_held_out(p)]
    held = [p for p in names if is_held_out(p)]
    return train[0], train[1], held[0]


def test_pack_holds_training_people_only_and_decodes_close_to_the_photos(shared_dir: Path, tmp_path: Path) -> None:
    a, b, held = _people(shared_dir)
    root = _folder(shared_dir, tmp_path, (a, b, held))
    info = pack_faces(root, tmp_path / "p.npz", 256, quality=90)
    assert info.people == 2 and info.photos == 6
    size, people = read_pack(tmp_path / "p.npz")
    assert size == 256 and set(people) == {a, b}  # the held-out person is never packed
    orig = read_rgb(sorted((root / a).glob("*.jpg"))[0])
    diff = np.abs(people[a][0].astype(int) - orig.astype(int)).mean()
    assert 0 < diff < 3
    bank = FaceBank(tmp_path / "p.npz", size=256)
    assert sorted(bank.images) == sorted([a, b]) and len(bank) == 6


def test_training_entry_point_imports_only_torch_numpy_opencv() -> None:
    code = ("import sys, refrestore.training.train, refrestore.training.pack; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'dlib', 'facexlib', 'spandrel', 'typer', "
            "'rich', 'requests', 'face_recognition_models', 'platformdirs'}))")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_gpu_script_trains_from_packs_and_brings_the_run_back(shared_dir: Path, tmp_path: Path) -> None:
    a, b, _ = _people(shared_dir)
    packs = tmp_path / "packs"
    pack_faces(_folder(shared_dir, tmp_path, (a, b)), packs / "faces256.npz", 256)
    pack_faces(shared_dir / "data" / "refbench", packs / "refbench512.npz", 512, max_per_person=3)
    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out), PACK_DIR=str(packs), DEVICE="cpu", BATCH="2", WORKERS="1",
               CONFIG="tiny", GPU_TRAIN_SECONDS="8", OMP_NUM_THREADS="1")
    res = subprocess.run(["bash", str(ROOT / "tools" / "gpu_train.sh")], env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    summary = json.loads([ln for ln in res.stdout.splitlines() if ln.startswith("{")][-1])
    assert summary["step"] >= 1
    run = out / "refnet-gpu"
    assert (run / "last.pth").is_file() and (run / "export.pth").is_file() and (run / "train.log").is_file()
    from refrestore.training.train import load_weights

    model = load_weights(run / "export.pth")
    assert model.cfg.fidelity and model.cfg.hr_head and model.cfg.hr_dim == 32
