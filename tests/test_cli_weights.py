"""`refrestore models` and `refrestore download-weights` through the real command line."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from refrestore.cli import build_app
from weights_http_server import FaultServer, make_file, write_manifest

SIZE = 300_000


@pytest.fixture
def setup(tmp_path: Path, server: FaultServer):
    """Four served files and a private manifest whose URLs point at an unreachable https host
    (so only --mirror can fetch them), plus an embedded file beside the manifest."""
    shas = {}
    for name in ("det.pth", "fast_det.pth", "resto.pth", "nc_resto.pth"):
        _, shas[name] = make_file(server.root, name, SIZE)
    mdir = tmp_path / "private"
    common = {"size": SIZE, "license": "MIT"}
    manifest = write_manifest(mdir / "manifest.toml", [
        {"name": "det.pth", "role": "detector", "models": ["det"], "url": "https://unreachable.invalid/det.pth",
         "sha256": shas["det.pth"], "default": True, **common},
        {"name": "fast_det.pth", "role": "detector", "models": ["fast-det"],
         "url": "https://unreachable.invalid/fast_det.pth", "sha256": shas["fast_det.pth"], **common},
        {"name": "resto.pth", "role": "restorer", "models": ["resto"],
         "url": "https://unreachable.invalid/resto.pth", "sha256": shas["resto.pth"], "default": True, **common},
        {"name": "own.pth", "role": "restorer", "models": ["own"], "embedded": True, "license": "CC BY-NC-SA 4.0",
         "commercial": False},
        {"name": "nc_resto.pth", "role": "restorer", "models": ["nc-resto"],
         "url": "https://unreachable.invalid/nc_resto.pth", "sha256": shas["nc_resto.pth"],
         "size": SIZE, "license": "S-Lab License 1.0 (non-commercial)", "commercial": False,
         "on_request_only": True},
    ])
    (mdir / "own.pth").write_bytes(b"embedded weights")
    return manifest, tmp_path / "weights", shas


def cli(*args: str):
    return CliRunner().invoke(build_app(), list(args))


def test_download_default_set_from_an_http_mirror(setup, server: FaultServer) -> None:
    manifest, weights, _shas = setup
    result = cli("download-weights", "--manifest", str(manifest), "--dir", str(weights),
                 "--mirror", server.base + "/files")
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in weights.glob("*.pth")) == ["det.pth", "resto.pth"]
    assert "plain http" in result.stderr  # the user is warned about http
    assert f"ok  det.pth  {weights / 'det.pth'}" in result.stdout
    assert [r.name for r in server.log] == ["det.pth", "resto.pth"]


def test_download_by_model_name_all_and_on_request(setup, server: FaultServer) -> None:
    manifest, weights, _ = setup
    base = ["--manifest", str(manifest), "--dir", str(weights), "--mirror", server.base + "/files"]
    assert cli("download-weights", "fast-det", *base).exit_code == 0
    assert sorted(p.name for p in weights.glob("*.pth")) == ["fast_det.pth"]
    result = cli("download-weights", "--all", *base)
    assert result.exit_code == 0, result.stderr
    # --all leaves out the on-request-only model...
    assert sorted(p.name for p in weights.glob("*.pth")) == ["det.pth", "fast_det.pth", "resto.pth"]
    assert "already present" in result.stderr
    result = cli("download-weights", "nc-resto", *base)
    assert result.exit_code == 0, result.stderr
    # ...which is fetched when named, with its licence pointed out.
    assert (weights / "nc_resto.pth").is_file()
    assert "not for commercial use" in result.stderr


def test_private_manifest_urls_are_used_without_a_mirror(tmp_path: Path, server: FaultServer) -> None:
    _, sha = make_file(server.root, "priv.pth", SIZE)
    manifest = write_manifest(tmp_path / "m.toml", [
        {"name": "priv.pth", "role": "restorer", "models": ["priv"], "url": server.url("priv.pth"),
         "size": SIZE, "sha256": sha, "license": "proprietary"},
    ])
    result = cli("download-weights", "priv", "--manifest", str(manifest), "--dir", str(tmp_path / "w"))
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "w" / "priv.pth").stat().st_size == SIZE


def test_hash_mismatch_fails_in_one_line_and_installs_nothing(setup, server: FaultServer) -> None:
    # (Also the downloader's own check: test_download.py has no copy of this test.)
    manifest, weights, _ = setup
    server.plan["det.pth"] = ["wrong"]
    result = cli("download-weights", "det", "--manifest", str(manifest), "--dir", str(weights),
                 "--mirror", server.base + "/files")
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "det.pth: downloaded file does not match its sha256" in errors[0]
    assert errors[0].endswith("nothing was installed")
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in weights.iterdir() if not p.name.endswith(".lock")) == []
    assert len(server.requests_for("det.pth")) == 1  # a bad body is not fetched again and again


def test_usage_errors_exit_2(setup, tmp_path: Path) -> None:
    manifest, _weights, _ = setup
    result = cli("download-weights", "nope", "--manifest", str(manifest))
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "unknown weights file or model 'nope'" in result.stderr
    bad = write_manifest(tmp_path / "bad.toml", [{"name": "../evil.pth", "role": "restorer", "models": ["x"],
                                                  "url": "https://example.org/x", "size": 1, "license": "MIT"}])
    for command in ("download-weights", "models"):
        result = cli(command, "--manifest", str(bad))
        assert result.exit_code == 2
        assert "invalid weights file name '../evil.pth'" in result.stderr
        assert result.stderr.count("\n") == 1


def test_offline_refuses_to_download(setup, server: FaultServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # (Also the downloader's own `offline`: test_download.py has no copy of this test.)
    manifest, weights, _ = setup
    args = ["download-weights", "--manifest", str(manifest), "--dir", str(weights), "--mirror", server.base + "/files"]
    result = cli(*args, "--offline")
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(
        "error: offline mode (--offline or REFRESTORE_OFFLINE=1) forbids downloading det.pth, resto.pth; "
        f"copy the files into {weights}")
    monkeypatch.setenv("REFRESTORE_OFFLINE", "1")
    result = cli(*args)
    assert result.exit_code == 1 and "REFRESTORE_OFFLINE" in result.stderr
    assert server.log == []  # not one request
    assert not weights.exists()  # nor a folder made for files that cannot come


def table_rows(stdout: str) -> dict[str, list[str]]:
    """The rows of `refrestore models`'s table as model -> [role, status, size, licence, fix]
    (the path column may fold onto more lines; those lines have no model)."""
    rows: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) == 7 and cells[0]:
            rows[cells[0]] = cells[1:6]
    return rows


def test_models_lists_state_sizes_licences_and_choices(setup, server: FaultServer) -> None:
    from refrestore.restorers.registry import choose_restorer
    from refrestore.weights import WeightStore, load_manifest

    manifest, weights, _shas = setup
    # A private file for a detector model `fix` knows: once present, fix would use it.
    _, rf_sha = make_file(server.root, "rf.pth", SIZE)
    with manifest.open("a", encoding="utf-8") as handle:
        handle.write(f'[[file]]\nname = "rf.pth"\nrole = "detector"\nmodels = ["retinaface-mobilenet"]\n'
                     f'url = "https://unreachable.invalid/rf.pth"\nsize = {SIZE}\nsha256 = "{rf_sha}"\n'
                     'license = "MIT"\n')
    base = ["--manifest", str(manifest), "--dir", str(weights)]
    # The registry decides the restorer (none of this manifest's restorers is one it knows).
    restorer = choose_restorer("auto", WeightStore(weights, load_manifest(manifest))).spec.info.name
    mit, own_licence = "MIT", "CC BY-NC-SA 4.0 (non-commercial)"
    nc_licence = "S-Lab License 1.0 (non-commercial)"

    result = cli("models", "--json", *base)
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert {f["name"]: (f["status"], f["size"]) for f in report["files"]} == {
        "det.pth": ("missing", SIZE), "fast_det.pth": ("missing", SIZE), "resto.pth": ("missing", SIZE),
        "own.pth": ("present", len(b"embedded weights")), "nc_resto.pth": ("missing", SIZE),
        "rf.pth": ("missing", SIZE)}
    assert report["fix_uses"] == {"detector": "dlib", "parser": "ellipse", "restorer": restorer}
    assert not any(m["used_by_fix"] for m in report["models"])
    table = cli("models", *base)
    assert table.exit_code == 0
    assert table_rows(table.stdout) == {
        "det": ["detector", "missing", "0.3 MB", mit, ""],
        "fast-det": ["detector", "missing", "0.3 MB", mit, ""],
        "resto": ["restorer", "missing", "0.3 MB", mit, ""],
        "own": ["restorer", "present (embedded)", "0.0 MB", own_licence, ""],
        "nc-resto": ["restorer", "missing", "0.3 MB", nc_licence, "only when named"],
        "retinaface-mobilenet": ["detector", "missing", "0.3 MB", mit, ""],
    }
    assert f"fix would use: detector dlib (built in), parser ellipse (built in), restorer {restorer}\n" in table.stdout
    assert "missing from the default set: det.pth, resto.pth; run `refrestore download-weights`" in table.stdout

    assert cli("download-weights", "fast-det", "resto", "nc-resto", "retinaface-mobilenet", *base,
               "--mirror", server.base + "/files").exit_code == 0
    (weights / "det.pth").write_bytes(b"\0" * SIZE)  # right size, wrong bytes
    result = cli("models", "--json", *base)
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    files = {f["name"]: f for f in report["files"]}
    assert {name: f["status"] for name, f in files.items()} == {
        "det.pth": "corrupt", "fast_det.pth": "present", "resto.pth": "present", "own.pth": "present",
        "nc_resto.pth": "present", "rf.pth": "present"}
    assert "--force det.pth" in files["det.pth"]["problem"]
    assert files["resto.pth"]["path"] == str(weights / "resto.pth") and files["resto.pth"]["size"] == SIZE
    assert files["own.pth"]["embedded"] and files["own.pth"]["path"] == str(manifest.parent / "own.pth")
    assert files["nc_resto.pth"]["license"] == nc_licence and not files["nc_resto.pth"]["commercial"]
    assert files["nc_resto.pth"]["on_request_only"] and files["resto.pth"]["commercial"]
    # Fix now takes the present RetinaFace file; nothing else of this manifest.
    assert report["fix_uses"] == {"detector": "retinaface-mobilenet", "parser": "ellipse", "restorer": restorer}
    models = {m["name"]: m for m in report["models"]}
    assert {name: m["status"] for name, m in models.items()} == {
        "det": "corrupt", "fast-det": "present", "resto": "present", "own": "present", "nc-resto": "present",
        "retinaface-mobilenet": "present"}
    assert [name for name, m in models.items() if m["used_by_fix"]] == ["retinaface-mobilenet"]

    table = cli("models", *base)
    assert table.exit_code == 0
    assert table_rows(table.stdout) == {
        "det": ["detector", "corrupt", "0.3 MB", mit, ""],
        "fast-det": ["detector", "present", "0.3 MB", mit, ""],
        "resto": ["restorer", "present", "0.3 MB", mit, ""],
        "own": ["restorer", "present (embedded)", "0.0 MB", own_licence, ""],
        "nc-resto": ["restorer", "present", "0.3 MB", nc_licence, "only when named"],
        "retinaface-mobilenet": ["detector", "present", "0.3 MB", mit, "yes"],
    }
    assert (f"fix would use: detector retinaface-mobilenet, parser ellipse (built in), restorer {restorer}\n"
            in table.stdout)
    assert f"weights folder: {weights}" in table.stdout
    problems = [line for line in table.stdout.splitlines() if line.startswith("problem:")]
    assert len(problems) == 1 and "det.pth does not match its sha256" in problems[0]
    assert "missing from the default set" not in table.stdout


def test_packaged_models_listing_through_a_real_process(tmp_path: Path) -> None:
    """The installed entry point, the packaged manifest, and an empty weights folder."""
    env = {"REFRESTORE_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "refrestore", "models", "--json"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["weights_dir"] == str(tmp_path / "home" / "weights")
    by_name = {f["name"]: f for f in report["files"]}
    assert by_name["GFPGANv1.4.pth"]["status"] == "missing"
    assert by_name["codeformer.pth"]["on_request_only"]
    refnet = by_name["refnet_small.pth"]
    assert refnet["embedded"]
    assert refnet["status"] == ("present" if Path(refnet["path"]).is_file() else "missing")
    assert not (tmp_path / "home" / "weights").exists()  # listing creates nothing


def test_interrupted_download_keeps_its_part_and_resumes(setup, server: FaultServer, tmp_path: Path,
                                                         until) -> None:
    """Ctrl-C (a real SIGINT) half-way: exit 130, nothing installed, and the next run resumes."""
    manifest, weights, _shas = setup
    server.plan["resto.pth"] = ["hold"]
    cmd = [sys.executable, "-m", "refrestore", "download-weights", "resto", "--manifest", str(manifest),
           "--dir", str(weights), "--mirror", server.base + "/files"]
    env = {"REFRESTORE_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    part = weights / "resto.pth.part"
    try:
        assert server.holding.wait(120), "the download never got half-way"
        # The half the server sent has reached the disk (the downloader writes each chunk through).
        until(lambda: part.exists() and part.stat().st_size == SIZE // 2, 120,
              f"{part} never held the {SIZE // 2} bytes the server sent")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        server.gate.set()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert not (weights / "resto.pth").exists()
    assert part.stat().st_size == SIZE // 2
    result = cli("download-weights", "resto", "--manifest", str(manifest), "--dir", str(weights),
                 "--mirror", server.base + "/files")
    assert result.exit_code == 0, result.stderr
    assert "resuming at" in result.stderr
    assert [r.range for r in server.requests_for("resto.pth")] == [None, f"bytes={SIZE // 2}-"]


def test_fix_choices_with_a_real_detector_file(retinaface_store) -> None:
    from refrestore.cli.weights_cmd import fix_choices

    choices = fix_choices(retinaface_store)
    assert choices["detector"] == "retinaface-mobilenet"
    assert choices["parser"] == "ellipse"  # no ParseNet in that store
