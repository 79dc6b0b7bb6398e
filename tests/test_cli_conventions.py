"""What a new user meets first: version, help, quiet/verbose, honest errors, the summary,
the gallery line and its progress bar, report permissions. Real subprocesses on real photos."""
from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from refrestore import __version__
from terminal import run_on_a_terminal

HELP_ENV = {"COLUMNS": "200", "TERM": "dumb"}


def refrestore(args: list[str], home: Path, *, umask: int | None = None, timeout: int = 300,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full = dict(os.environ, REFRESTORE_HOME=str(home), OMP_NUM_THREADS="1", **HELP_ENV, **(env or {}))
    return subprocess.run([sys.executable, "-m", "refrestore", *args], capture_output=True, text=True, env=full,
                          timeout=timeout, preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)


def command_names() -> list[str]:
    import typer

    from refrestore.cli import build_app

    return sorted(typer.main.get_command(build_app()).commands)  # type: ignore[attr-defined]


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version(tmp_path: Path, flag: str) -> None:
    proc = refrestore([flag], tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == f"refrestore {__version__}"


def test_help_shows_metavars_not_python_types(tmp_path: Path) -> None:
    pages = {"": refrestore(["--help"], tmp_path)}
    for name in command_names():
        pages[name] = refrestore([name, "--help"], tmp_path)
        assert name in pages[""].stdout, f"`refrestore --help` does not list {name}"
    for name, proc in pages.items():
        assert proc.returncode == 0, (name, proc.stderr)
        for odd in ("<bool>", "<list[", "<str>", "<path>", "{inputs}", "<int", "<float"):
            assert odd not in proc.stdout, f"`refrestore {name} --help` shows {odd}"
    assert "refrestore fix [OPTIONS] INPUT..." in re.sub(r"\s+", " ", pages["fix"].stdout.replace("python -m ", ""))


def test_every_option_of_every_command_says_what_it_does() -> None:
    import typer

    from refrestore.cli import build_app

    group = typer.main.get_command(build_app())
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        for param in command.params:
            assert (param.help or "").strip(), f"refrestore {name}: {param.opts or param.name} has no description"


def test_model_help_names_every_restorer(tmp_path: Path) -> None:
    from refrestore.restorers.registry import restorer_names

    text = re.sub(r"\s+", " ", refrestore(["fix", "--help"], tmp_path).stdout.replace("│", " "))
    for name in restorer_names():
        assert name in text, f"fix --help does not name the restorer {name}"
    assert "0 = most detail, 1 = closest to the input" in text


def test_help_imports_nothing_heavy(tmp_path: Path) -> None:
    probe = ("import sys\nfrom refrestore.cli import main\nsys.argv = ['refrestore', 'fix', '--help']\n"
             "try:\n    main()\nexcept SystemExit:\n    pass\n"
             "print('LOADED', sorted(m for m in ('torch', 'numpy', 'cv2', 'dlib', 'requests', 'PIL', 'pydantic') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env=dict(os.environ, **HELP_ENV), timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "LOADED []" in proc.stdout, proc.stdout.splitlines()[-1]


def test_fidelity_reaches_fix_options() -> None:
    from refrestore.cli.fix_cmd import FixRequest, _fix_options

    assert _fix_options(FixRequest(inputs=[Path("a.jpg")], fidelity=0.25)).fidelity == 0.25
    assert _fix_options(FixRequest(inputs=[Path("a.jpg")])).fidelity is None


def test_fidelity_out_of_range_is_a_usage_error(tmp_path: Path, whole_photos) -> None:
    proc = refrestore(["fix", str(whole_photos[0]), "--fidelity", "1.5"], tmp_path)
    assert proc.returncode == 2


def test_missing_input_is_named_and_exits_2(tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent.jpg"
    for extra in ([], ["-o", str(tmp_path / "out")]):
        proc = refrestore(["fix", str(missing), *extra], tmp_path / "home")
        assert proc.returncode == 2, proc.stderr
        assert f"{missing}: no such file or folder" in proc.stderr
        assert "several inputs" not in proc.stderr
        assert not (tmp_path / "out").exists()


def test_missing_input_beside_a_good_one_is_named_in_the_summary(tmp_path: Path, whole_photos) -> None:
    missing = tmp_path / "gone.jpg"
    proc = refrestore(["fix", str(whole_photos[0]), str(missing), "-o", str(tmp_path / "out"),
                       "--model", "resample", "--detector", "dlib"], tmp_path / "home")
    assert proc.returncode == 1, proc.stderr
    assert f"failed (1): no such file or folder: {missing}" in proc.stdout


def test_rerun_says_how_many_were_skipped_and_quiet_prints_only_the_summary(tmp_path: Path, whole_photos) -> None:
    album = tmp_path / "album"
    album.mkdir()
    for p in whole_photos[:2]:
        shutil.copyfile(p, album / p.name)
    args = ["fix", str(album), "-o", str(tmp_path / "out"), "--model", "resample", "--detector", "dlib"]
    first = refrestore([*args, "-q"], tmp_path / "home")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip().splitlines() == ["done 2, skipped 0, no faces 0, failed 0"]
    assert first.stderr == ""
    again = refrestore(args, tmp_path / "home")
    assert again.returncode == 0
    assert "skipped 2: the output exists; --overwrite redoes them" in again.stdout


def test_gallery_line_and_cache(tmp_path: Path, shared_dir: Path) -> None:
    gallery = tmp_path / "gallery" / "00005"
    gallery.mkdir(parents=True)
    for src in sorted((shared_dir / "data" / "refbench" / "hq" / "00005").glob("*.png"))[:3]:
        shutil.copyfile(src, gallery / src.name)
    photo = shared_dir / "data" / "refbench" / "real_lq_no_gt" / "00005_17.png"
    args = ["fix", str(photo), "--refs", str(tmp_path / "gallery"), "--model", "resample", "--detector", "dlib"]
    first = refrestore([*args, "-o", str(tmp_path / "a.png")], tmp_path / "home")
    assert first.returncode == 0, first.stderr
    # The identity model is whichever RefSel uses by default; the line must name it.
    assert re.search(r"gallery: 3 faces of 1 person \(1 folder\) in 3 photos, 0 from the cache, 3 indexed; "
                     r"identity model \S+", first.stderr), first.stderr
    second = refrestore([*args, "-o", str(tmp_path / "b.png")], tmp_path / "home")
    assert "3 from the cache, 0 indexed" in second.stderr


def test_gallery_progress_bar_on_a_terminal(tmp_path: Path, shared_dir: Path) -> None:
    gallery = tmp_path / "gallery" / "00022"
    gallery.mkdir(parents=True)
    for src in sorted((shared_dir / "data" / "refbench" / "hq" / "00022").glob("*.png"))[:2]:
        shutil.copyfile(src, gallery / src.name)
    photo = shared_dir / "data" / "refbench" / "real_lq_no_gt" / "00022_14.png"
    env = dict(os.environ, REFRESTORE_HOME=str(tmp_path / "home"), OMP_NUM_THREADS="1", TERM="xterm", COLUMNS="120")
    # stderr is a real terminal, as for a user at a shell
    proc, shown = run_on_a_terminal([sys.executable, "-m", "refrestore", "fix", str(photo), "--refs",
                                     str(tmp_path / "gallery"), "-o", str(tmp_path / "o.png"), "--model", "resample",
                                     "--detector", "dlib"], env)
    assert proc.returncode == 0, shown
    assert "indexing gallery" in shown
    assert "gallery: 2 faces of 1 person (1 folder) in 2 photos" in shown


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_json_report_respects_the_umask(tmp_path: Path, whole_photos, umask: int, mode: int) -> None:
    report = tmp_path / "r.json"
    proc = refrestore(["fix", str(whole_photos[0]), "-o", str(tmp_path / "o.jpg"), "--model", "resample",
                       "--detector", "dlib", "--json", str(report)], tmp_path / "home", umask=umask)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE(report.stat().st_mode) == mode
    assert json.loads(report.read_text())["images"][0]["status"] == "ok"
