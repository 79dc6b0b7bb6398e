"""The Ray engine on a real local Ray: the same bytes and reports as the local engine, and faults.

One in-process Ray (``ray.init(num_cpus=2)``) serves the library-level tests and one
``ray start --head`` in a subprocess serves the command-line tests (``--ray-address``); each
is started once for the module and stopped at its end.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install 'refrestore[ray]'")

from refrestore.distributed import PipelineSpec, RayOptions, fix_dataset  # noqa: E402
from refrestore.fileio import RECORDS  # the records of what refrestore wrote, beside its files

FAST = ["--model", "resample", "--detector", "dlib"]
SPEC = PipelineSpec(model="resample", detector="dlib", device="cpu")
PHOTOS = 6
STORE_BYTES = 200 * 2**20  # object store per Ray: several must fit beside other work


@pytest.fixture(scope="module", autouse=True)
def ray_token(tmp_path_factory: pytest.TempPathFactory):
    """Ray's token authentication (its default) needs one token shared by every process of a
    cluster. ``ray start --head`` makes none, and a fresh machine has no ~/.ray/auth_token, so the
    module makes its own and hands it to the head, the clients and the in-process Ray alike."""
    path = tmp_path_factory.mktemp("ray-auth") / "auth_token"
    path.write_text(secrets.token_hex(32))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_AUTH_TOKEN_PATH", str(path))
        yield path


def _env(home: Path) -> dict:
    # Ray enables token authentication by default; a client must ask for it to connect.
    return dict(os.environ, REFRESTORE_HOME=str(home), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", RAY_AUTH_MODE="token")


def _cli(args: list[str], home: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "refrestore", *args], capture_output=True, text=True, env=_env(home), timeout=timeout)


def _outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != RECORDS}


def _relative_report(report: dict, out: Path) -> dict:
    """The report with outputs relative to their folder (two runs write to two folders)."""
    data = json.loads(json.dumps(report))
    for e in data["images"]:
        if e["output"]:
            e["output"] = os.path.relpath(e["output"], out)
    return data


@pytest.fixture(scope="module")
def album(tmp_path_factory: pytest.TempPathFactory, whole_photos: list[Path]) -> Path:
    """Six real old photos and one text file posing as a JPEG."""
    folder = tmp_path_factory.mktemp("ray") / "album"
    folder.mkdir()
    for p in whole_photos[:PHOTOS]:
        shutil.copyfile(p, folder / p.name)
    (folder / "not_a_photo.jpg").write_text("a letter, not a scan\n")
    return folder


@pytest.fixture(scope="module")
def local_run(album: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The album through ``--engine local``: the outputs and report every Ray run must match."""
    tmp = tmp_path_factory.mktemp("local")
    out, report = tmp / "out", tmp / "report.json"
    proc = _cli(["fix", str(album), "-o", str(out), "--json", str(report), "--engine", "local", *FAST], tmp / "home")
    assert proc.returncode == 1, proc.stderr  # the text file fails, every photo is done
    data = json.loads(report.read_text())
    assert [e["status"] for e in data["images"]].count("ok") == PHOTOS
    return out, data


@pytest.fixture(scope="module")
def ray_session():
    """Ray in this process, as a notebook on a laptop would start it."""
    # address="local": always a new Ray here, even while the head node below is running.
    ray.init(address="local", num_cpus=2, object_store_memory=STORE_BYTES, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory: pytest.TempPathFactory):
    """``ray start --head`` in its own process group; yields the address ``--ray-address`` takes."""
    port = _free_port()
    log = tmp_path_factory.mktemp("head") / "ray-start.log"
    # A temp dir of its own (short: Ray's socket paths must fit 107 bytes), so that the address
    # file `ray start` leaves does not point later runs on this machine at a stopped cluster.
    temp_dir = tempfile.mkdtemp(prefix="rayh", dir="/tmp")
    cmd = [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
           f"--object-store-memory={STORE_BYTES}", "--include-dashboard=false", "--disable-usage-stats",
           f"--temp-dir={temp_dir}"]
    with open(log, "wb") as fh:
        head = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                                env=dict(os.environ, OMP_NUM_THREADS="1", RAY_AUTH_MODE="token"))
    address = f"127.0.0.1:{port}"
    deadline = time.time() + 120
    while b"This command will now block" not in log.read_bytes():
        assert head.poll() is None, log.read_text()
        assert time.time() < deadline, log.read_text()
        time.sleep(0.2)
    yield address
    # SIGTERM to the head alone: an idle head stops what it started in about two seconds.
    # After a job its own shutdown can hang for about 30 s (gcs_server and the monitors stay
    # up), and SIGTERM to the whole group hangs the same way, so what is still there after
    # a few seconds is killed: nothing of this throwaway cluster is kept.
    head.terminate()
    try:
        head.wait(timeout=3)
    except subprocess.TimeoutExpired:
        pass
    _stop_group(head.pid, signal.SIGKILL)
    head.wait(timeout=30)
    # The head is reaped first: until then it is a zombie in its group, which looks alive.
    deadline = time.time() + 30
    while _group_alive(head.pid) and time.time() < deadline:
        time.sleep(0.2)
    shutil.rmtree(temp_dir, ignore_errors=True)


def _stop_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def _descendants(root: int) -> list[int]:
    """Pids below ``root``, from /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    parents[int(entry)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    below, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        kids = [c for c, p in parents.items() if p == pid]
        below.extend(kids)
        frontier.extend(kids)
    return below


def _map_workers(root: int) -> list[int]:
    """Ray Data's worker processes (their title names the callable class) below ``root``."""
    found = []
    for pid in _descendants(root):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                title = fh.read()
        except OSError:
            continue
        if b"MapWorker" in title and b"PhotoWorker" in title:
            found.append(pid)
    return found


def _assert_like_local(out: Path, report: dict, local_run: tuple[Path, dict]) -> None:
    local_out, local_report = local_run
    assert _outputs(out) == _outputs(local_out)  # byte-identical, the same names
    assert _relative_report(report, out) == _relative_report(local_report, local_out)


def test_cli_local_and_ray_give_identical_outputs_and_reports(ray_head, album, local_run, tmp_path):
    out, report = tmp_path / "out", tmp_path / "report.json"
    proc = _cli(["fix", str(album), "-o", str(out), "--json", str(report), "--engine", "ray", "--ray-address", ray_head,
                 "--workers", "2", *FAST], tmp_path / "home")
    assert proc.returncode == 1, proc.stderr  # the text file
    assert "Traceback" not in proc.stderr + proc.stdout and "error:" not in proc.stderr
    assert "failed 1" in proc.stdout and "not_a_photo.jpg" in proc.stdout
    data = json.loads(report.read_text())
    _assert_like_local(out, data, local_run)
    assert (data["restorer"], data["detector"], data["device"]) == ("resample", "dlib", "cpu")
    assert not [p for p in out.iterdir() if p.name.startswith(".") and p.name != RECORDS], "no temporary files left"


def test_gallery_indexed_on_the_driver_gives_the_local_references(ray_head, shared_dir, whole_photos, tmp_path):
    """--refs: the workers get the driver's gallery and choose the same references."""
    people = shared_dir / "data" / "identities"
    person = max((d for d in people.iterdir() if d.is_dir()), key=lambda d: (len(list(d.glob("*.jpg"))), d.name))
    photos = sorted(person.glob("*.jpg"))
    assert len(photos) >= 3, person
    gallery, album = tmp_path / "gallery", tmp_path / "album"
    (gallery / person.name).mkdir(parents=True)
    album.mkdir()
    for p in photos[1:]:
        shutil.copyfile(p, gallery / person.name / p.name)
    shutil.copyfile(photos[0], album / photos[0].name)  # the person, not in the gallery as this photo
    for p in whole_photos[:2]:
        shutil.copyfile(p, album / p.name)
    runs = {}
    for engine in ("local", "ray"):
        out, report = tmp_path / engine, tmp_path / f"{engine}.json"
        extra = ["--ray-address", ray_head] if engine == "ray" else []
        proc = _cli(["fix", str(album), "--refs", str(gallery), "-o", str(out), "--json", str(report), "--engine", engine, *extra, *FAST],
                    tmp_path / "home")
        assert proc.returncode == 0, proc.stderr
        runs[engine] = (out, json.loads(report.read_text()))
    matched = [f["reference"] for e in runs["local"][1]["images"] for f in e["faces"] if f["reference"]]
    assert matched and all(Path(r["path"]).parent.name == person.name for r in matched)
    # The driver read the gallery from the cache the local run left; no worker indexes it.
    assert f"{len(photos) - 1} from the cache, 0 indexed" in runs["ray"][1].pop("gallery")
    runs["local"][1].pop("gallery")
    _assert_like_local(*runs["ray"], runs["local"])


def test_library_call_with_a_list_of_paths_reports_the_bad_file(ray_session, album, local_run, tmp_path):
    listing = tmp_path / "scans.csv"
    listing.write_text("path,box\n" + "".join(f"{p},1\n" for p in sorted(album.iterdir())))
    out = tmp_path / "out"
    seen: list[str] = []
    run = fix_dataset([listing], out, spec=SPEC, cluster=RayOptions(workers=2), on_done=lambda t, r: seen.append(r.status))
    statuses = {Path(r.input).name: r.status for r in run.summary.images}
    assert statuses.pop("not_a_photo.jpg") == "error"
    assert set(statuses.values()) == {"ok"} and len(statuses) == PHOTOS
    assert sorted(seen) == sorted(r.status for r in run.summary.images)  # progress heard of every image
    bad = next(r for r in run.summary.images if r.status == "error")
    assert bad.output is None and "not an image" in bad.error
    report = {"images": [r.to_json() for r in run.summary.images], "interrupted": False,
              "restorer": run.restorer, "detector": run.detector, "device": run.device}
    local_out, local_report = local_run
    assert _outputs(out) == _outputs(local_out)
    assert _relative_report(report, out) == {k: v for k, v in _relative_report(local_report, local_out).items() if k in report}


def test_pyarrow_filesystem_uris_in_and_out(ray_session, album, local_run, tmp_path):
    """file:// goes through pyarrow's filesystem layer, as s3:// and gs:// do."""
    out = tmp_path / "out"
    run = fix_dataset([f"file://{album}"], f"file://{out}", spec=SPEC, cluster=RayOptions(workers=2))
    by_name = {r.input.rsplit("/", 1)[-1]: r for r in run.summary.images}
    assert all(r.input.startswith("file://") for r in run.summary.images)
    bad = by_name.pop("not_a_photo.jpg")
    assert bad.status == "error" and "not an image" in bad.error and "refrestore-ray-" not in bad.error
    assert {r.status for r in by_name.values()} == {"ok"} and len(by_name) == PHOTOS
    assert all(r.output == f"file://{out}/{Path(r.input).stem}_restored{Path(r.input).suffix}" for r in by_name.values())
    assert _outputs(out) == _outputs(local_run[0])
    again = fix_dataset([f"file://{album}"], f"file://{out}", spec=SPEC, cluster=RayOptions(workers=1))
    assert sorted(r.status for r in again.summary.images) == ["error"] + ["skipped"] * PHOTOS


def test_a_worker_killed_mid_run_still_leaves_every_output_complete(ray_session, album, local_run, tmp_path):
    out = tmp_path / "out"
    killed: list[int] = []
    at_kill: list[int] = []

    def killer() -> None:
        deadline = time.time() + 300
        while time.time() < deadline:
            done = [p for p in out.glob("*") if not p.name.startswith(".")] if out.exists() else []
            workers = _map_workers(os.getpid())
            if done and workers:
                at_kill.append(len(done))
                os.kill(workers[0], signal.SIGKILL)
                killed.append(workers[0])
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=killer, daemon=True)
    watcher.start()
    # One worker, one photo a batch: the kill lands with photos still to do.
    run = fix_dataset([album], out, spec=SPEC, cluster=RayOptions(workers=1, photos_per_batch=1))
    watcher.join(timeout=10)
    assert killed, "no worker was killed"
    assert at_kill[0] < PHOTOS, "the run finished before the worker was killed"
    assert run.summary.fatal is None
    statuses = sorted(r.status for r in run.summary.images)
    assert statuses == ["error"] + ["ok"] * PHOTOS
    local_out, _ = local_run
    assert _outputs(out) == _outputs(local_out)
    assert not [p for p in out.iterdir() if p.name.startswith(".") and p.name != RECORDS]


def test_driver_killed_then_the_same_command_finishes_identically(ray_head, album, local_run, tmp_path):
    out = tmp_path / "out"
    cmd = ["fix", str(album), "-o", str(out), "--engine", "ray", "--ray-address", ray_head, "--workers", "1", *FAST]
    driver = subprocess.Popen([sys.executable, "-m", "refrestore", *cmd], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              env=_env(tmp_path / "home"))
    deadline = time.time() + 300
    while time.time() < deadline and driver.poll() is None:
        if out.exists() and len([p for p in out.iterdir() if not p.name.startswith(".")]) >= 2:
            break
        time.sleep(0.02)
    assert driver.poll() is None, "the run finished before the driver could be killed: " + driver.stderr.read().decode()
    driver.kill()  # SIGKILL: no handler runs, no report is written
    driver.wait(timeout=60)
    partial = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert 2 <= len(partial) < PHOTOS

    report = tmp_path / "again.json"
    proc = _cli([*cmd, "--json", str(report)], tmp_path / "home")
    assert proc.returncode == 1, proc.stderr  # only the text file fails
    entries = json.loads(report.read_text())["images"]
    skipped = {Path(e["output"]).name for e in entries if e["status"] == "skipped"}
    # A worker may finish the photo in its hands after the driver died: skipped too, then.
    assert set(partial) <= skipped
    assert [e["status"] for e in entries].count("ok") == PHOTOS - len(skipped) > 0
    local_out, _ = local_run
    assert _outputs(out) == _outputs(local_out)
    assert not [p for p in out.iterdir() if p.name.startswith(".") and p.name != RECORDS], "temporary files of the killed run are gone"


def test_gpus_per_worker_on_a_cluster_without_gpus_is_one_clear_line(ray_head, album, tmp_path):
    proc = _cli(["fix", str(album), "-o", str(tmp_path / "out"), "--engine", "ray", "--ray-address", ray_head,
                 "--gpus-per-worker", "0.5", *FAST], tmp_path / "home")
    assert proc.returncode == 1
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert errors == ["error: the Ray cluster has 0 GPUs, too few for workers of 0.5 GPU; "
                      "give --workers N to wait for an autoscaler to add them"], proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


def test_without_ray_the_engine_says_what_to_install(album, tmp_path):
    # A real interpreter in which `import ray` fails, as in an install without the extra.
    blocker = tmp_path / "noray"
    (blocker / "ray").mkdir(parents=True)
    (blocker / "ray" / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    env = dict(_env(tmp_path / "home"), PYTHONPATH=str(blocker))
    proc = subprocess.run([sys.executable, "-m", "refrestore", "fix", str(album), "-o", str(tmp_path / "out"), "--engine", "ray", *FAST],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: --engine ray needs Ray: pip install 'refrestore[ray]'"
    assert not (tmp_path / "out").exists()


def test_fix_help_names_the_extra_and_the_ray_flags(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "refrestore", "fix", "--help"], capture_output=True, text=True,
                          env=dict(_env(tmp_path / "home"), COLUMNS="200"), timeout=120)
    assert proc.returncode == 0, proc.stderr
    for flag in ("--engine", "--ray-address", "--workers", "--gpus-per-worker"):
        assert flag in proc.stdout
    assert "pip install 'refrestore[ray]'" in proc.stdout  # rich markup must not eat "[ray]"


def test_cli_takes_uris_of_pyarrow_filesystems(ray_head, album, local_run, tmp_path):
    """`fix file://... -o file://... --engine ray` (s3:// and gs:// take the same path); URIs
    without --engine ray are a usage error."""
    out = tmp_path / "out"
    proc = _cli(["fix", f"file://{album}", "-o", f"file://{out}", "--engine", "ray", "--ray-address", ray_head,
                 "--workers", "1", *FAST], tmp_path / "home")
    assert proc.returncode == 1, proc.stderr  # the text file
    assert "Traceback" not in proc.stderr + proc.stdout and "not_a_photo.jpg" in proc.stdout
    assert _outputs(out) == _outputs(local_run[0])
    local = _cli(["fix", f"file://{album}", "-o", str(tmp_path / "x"), *FAST], tmp_path / "home")
    assert local.returncode == 2 and "--engine ray" in local.stderr and len(local.stderr.strip().splitlines()) == 1
