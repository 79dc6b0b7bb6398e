"""The README's first command is a fair demo: every photo it restores is of a person in its
gallery, never with that same photo in the gallery, and it keeps one stranger."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def first_fix_command() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Two commands.*?```bash\n(.*?)\n```", text, re.S)
    assert block, "the README's Two commands section has no bash block"
    command = block.group(1).split("&&")[-1]
    args = shlex.split(command)
    assert args[:2] == ["refrestore", "fix"], command
    return args[2:]


def test_readme_demo_restores_gallery_people_from_other_photos_and_one_stranger(shared_dir: Path) -> None:
    args = first_fix_command()
    assert "--html" in args and "--json" in args
    refs = [Path(args[i + 1]) for i, a in enumerate(args) if a == "--refs"]
    assert refs == [Path("../shared/data/refbench/hq")]
    inputs = []
    i = 0
    while i < len(args) and not args[i].startswith("-"):
        inputs.append(Path(args[i]))
        i += 1
    assert inputs
    def real(path: Path) -> Path:  # the README says ../shared; tests may keep it elsewhere
        parts = path.parts
        return shared_dir.joinpath(*parts[2:]) if parts[:2] == ("..", "shared") else REPO / path

    gallery = real(refs[0])
    people = {p.name for p in gallery.iterdir() if p.is_dir()}
    photos = [p for item in map(real, inputs) for p in (sorted(item.iterdir()) if item.is_dir() else [item])]
    known = [p for p in photos if p.stem.rsplit("_", 1)[0] in people]
    strangers = [p for p in photos if p not in known]
    assert len(known) >= 5 and len(strangers) >= 1
    for p in known:
        person, n = p.stem.rsplit("_", 1)
        assert not (gallery / person / f"{n}.png").exists(), f"{p.name}: its own clean photo is in the gallery"
        assert len(list((gallery / person).glob("*.png"))) >= 3
