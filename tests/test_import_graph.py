"""How refrestore's modules import each other (issue 24): no circle anywhere, no import from a
higher room into a lower one, the runtime of ``fix`` apart from the training code, every package
of the tree installed, and no module over 600 lines.

The import graph is read from the source with ``ast``: module-level, function-level and
``TYPE_CHECKING`` imports all count (a lazy import is still a dependency a reader must follow),
``from . import x`` is the submodule ``x`` when there is one, else the package itself.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# What ``fix`` may load of refrestore.net: the architecture, reference warping, the weight files,
# crop/tensor conversions, and the embedder behind the ``faceid`` identity model. net/ also holds
# the synthetic degradations and the fixed held-out split, which training and the gallery's
# labelled face sets share: fix loads neither. Nothing of refrestore.training (train loop, losses,
# discriminator, samplers, packs, data folders, real-photo damage, evaluation) may load.
RUNTIME_NET = {"refrestore.net", "refrestore.net.arch", "refrestore.net.warp", "refrestore.net.weights",
               "refrestore.net.tensors", "refrestore.net.embedder"}


def package_modules(root: Path, package: str) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package's ``__init__``) for every module under root/package."""
    modules: dict[str, tuple[Path, bool]] = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        modules[".".join(parts)] = (path, is_package)
    return modules


def import_graph(root: Path, package: str) -> dict[str, dict[str, int]]:
    """module -> {module of the package it imports: line of the first such import}."""
    modules = package_modules(root, package)

    def owner(name: str) -> str | None:  # the module a dotted name lives in
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, dict[str, int]] = {}
    for name, (path, is_package) in modules.items():
        here = name.split(".") if is_package else name.split(".")[:-1]
        edges: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str | None] = []
            if isinstance(node, ast.Import):
                targets = [owner(a.name) for a in node.names if a.name.split(".")[0] == package]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here[: len(here) - (node.level - 1)]
                    full = ".".join(base + ([node.module] if node.module else []))
                else:
                    full = node.module or ""
                if full.split(".")[0] != package:
                    continue
                targets = [f"{full}.{a.name}" if f"{full}.{a.name}" in modules else owner(full) for a in node.names]
            for target in targets:
                if target is not None and target != name:
                    edges.setdefault(target, node.lineno)
        graph[name] = edges
    return graph


def import_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle (first module repeated at the end) for each group of modules that import each
    other round (Tarjan's strongly connected components, then a shortest way round)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    cycles = []
    for group in groups:
        start, members = group[0], set(group)
        came_from: dict[str, str] = {}
        frontier = [start]
        while frontier and start not in came_from:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v]):
                    if w in members and w not in came_from:
                        came_from[w] = v
                        nxt.append(w)
            frontier = nxt
        path = [start]
        while len(path) == 1 or path[-1] != start:
            path.append(came_from[path[-1]])
        cycles.append(path[::-1])
    return cycles


def describe(cycle: list[str], graph: dict[str, dict[str, int]]) -> str:
    return " -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:])) + f" -> {cycle[-1]}"


def test_the_walker_sees_relative_function_level_and_package_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "toy"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("def make():\n    from .sub import leaf\n    return leaf\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "leaf.py").write_text("from .. import make\n")  # back to the package: a circle
    (pkg / "a.py").write_text("import toy.b\n")
    (pkg / "b.py").write_text("def f():\n    from toy import a\n")  # function-level: a circle too
    (pkg / "c.py").write_text("from . import b\nimport os\n")  # into a circle, not part of one
    graph = import_graph(tmp_path, "toy")
    assert graph["toy"] == {"toy.sub.leaf": 2}
    assert graph["toy.sub.leaf"] == {"toy": 1}
    assert graph["toy.c"] == {"toy.b": 1}
    assert sorted(import_cycles(graph)) == [["toy", "toy.sub.leaf", "toy"], ["toy.a", "toy.b", "toy.a"]]


def test_no_import_cycle_in_refrestore() -> None:
    graph = import_graph(REPO, "refrestore")
    assert len(graph) > 50 and graph["refrestore.restorers.refnet"], "the walker found no modules or imports"
    cycles = import_cycles(graph)
    assert not cycles, "modules that import each other round (move the shared piece below both):\n" + "\n".join(
        describe(c, graph) for c in cycles)


# The rooms of the house from the ground up: a room is a top-level module or a subpackage of
# refrestore (``refrestore`` itself is the package's __init__, which only names the version and
# imports the public names lazily, on first use). A module imports its own room and the rooms
# of the floors below; rooms on one floor are siblings and import none of each other.
ROOMS: list[tuple[str, ...]] = [
    # the face types, paths, the one atomic writer, what a scan's paper is, metadata, cut JPEGs, --device
    ("refrestore", "faces", "paths", "fileio", "paper", "imagemeta", "jpegscan", "devices"),
    ("discover", "weights", "net"),  # the input files; the weight store; the embedded network and warping
    ("imageio", "align"),  # 1 read (and 8 write); 3 align
    # 2 detect; the identity models; face parsing; 5 restore; 7 paste back; how damaged a face is
    ("detection", "identity", "parsing", "restorers", "pasteback", "degradation"),
    ("gallery", "licences", "userweights"),  # 4 the gallery; the models' licences; the user's own weight files
    ("detail", "references"),  # 6 reference detail; the references handed to the pipeline
    ("pipeline",),  # one photo through the steps
    ("api", "report"),  # the steps built by name; the HTML and JSON reports (the engines write them)
    ("engines",),  # albums: the local runner and Ray
    ("batch", "distributed", "training"),  # the album names; fix on a cluster; beside the runtime: training
    ("cli",),
    ("__main__",),
]


def room_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def arrows_against_the_floors(graph: dict[str, dict[str, int]], rooms: list[tuple[str, ...]]) -> list[str]:
    """Every import from a room into a room on its own floor or above, with its line, and every
    room that has no floor."""
    floor = {room: i for i, names in enumerate(rooms) for room in names}
    unplaced = sorted({room_of(m) for m in graph} - set(floor))
    found = [f"{room} has no floor in ROOMS: place it" for room in unplaced]
    for module, targets in sorted(graph.items()):
        a = room_of(module)
        for target, line in sorted(targets.items()):
            b = room_of(target)
            if a == b or a in unplaced or b in unplaced or floor[b] < floor[a]:
                continue
            where = "above" if floor[b] > floor[a] else "beside"
            found.append(f"{module} (line {line}) imports {target}: {b} is {where} {a}")
    return found


def test_the_floor_check_sees_arrows_up_and_sideways() -> None:
    graph = {"p": {}, "p.low": {}, "p.mid": {"p.low": 3, "p.top.x": 7}, "p.side": {"p.mid": 2},
             "p.top.x": {"p.mid": 1, "p.top": 2}, "p.top": {}, "p.new": {}}
    rooms = [("p", "low"), ("mid", "side"), ("top",)]
    assert arrows_against_the_floors(graph, rooms) == [
        "new has no floor in ROOMS: place it",
        "p.mid (line 7) imports p.top.x: top is above mid",
        "p.side (line 2) imports p.mid: mid is beside side",
    ]


def test_no_import_from_a_higher_room_into_a_lower_one() -> None:
    graph = import_graph(REPO, "refrestore")
    found = arrows_against_the_floors(graph, ROOMS)
    assert not found, "imports against the floors (move the shared piece down, or the importer up):\n" + "\n".join(found)


def test_fix_runtime_loads_no_training_code() -> None:
    """A fresh interpreter builds what ``fix`` builds for a matched face: the pipeline and the
    embedded reference-guided restorer (refnet-small, shipped in models/), and restores one face."""
    code = """
import json, sys
import numpy as np, torch
import refrestore.pipeline
from refrestore.restorers.registry import build_restorer, choose_restorer
from refrestore.weights import WeightStore
store = WeightStore()
restorer = build_restorer(choose_restorer("refnet-small", store).spec, store, torch.device("cpu"))
out = restorer.restore([np.full((512, 512, 3), 128, np.uint8)])
assert out[0].shape == (512, 512, 3), out[0].shape
print(json.dumps(sorted(m for m in sys.modules if m.startswith("refrestore"))))
"""
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    loaded = set(json.loads(res.stdout.strip().splitlines()[-1]))
    training = sorted(m for m in loaded if (m.startswith("refrestore.net.") and m not in RUNTIME_NET)
                      or m == "refrestore.training" or m.startswith("refrestore.training."))
    assert not training, f"fix loads training code: {training}"
    assert "refrestore.restorers.refnet" in loaded
    assert "refrestore.cli.train_cmd" not in loaded


def test_every_package_of_the_tree_is_installed() -> None:
    """pyproject lists the packages one by one: a package left out works in an editable install
    and is missing from the wheel."""
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"])
    on_disk = {name for name, (_, is_package) in package_modules(REPO, "refrestore").items() if is_package}
    missing = sorted(on_disk - listed)
    assert not missing, f"packages missing from pyproject.toml [tool.setuptools] packages: {missing}"


MAX_MODULE_LINES = 600  # the developers' guide: small modules with one job each


def test_no_module_over_600_lines() -> None:
    sizes = {str(path.relative_to(REPO)): len(path.read_text(encoding="utf-8").splitlines())
             for path, _ in package_modules(REPO, "refrestore").values()}
    over = {name: n for name, n in sorted(sizes.items()) if n > MAX_MODULE_LINES}
    assert not over, f"modules over {MAX_MODULE_LINES} lines (split them by job): {over}"


if __name__ == "__main__":  # list the cycles and the arrows against the floors: python tests/test_import_graph.py
    g = import_graph(REPO, "refrestore")
    for c in import_cycles(g):
        print(describe(c, g))
    print("\n".join(arrows_against_the_floors(g, ROOMS)))
