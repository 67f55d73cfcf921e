"""The floor plan holds: no import loops, and layers import one way (contract → components → stages →
orchestration → CLI), so a new stage plugs into the contract instead of into a tangle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "edgekd"
# Layer of each top-level module or package; an import may go to the same layer or any layer below.
LAYERS = {
    **dict.fromkeys(("errors", "io", "onnxfile", "registry", "results", "recipe", "rundir"), 0),
    **dict.fromkeys(("data", "models", "tasks"), 2),
    **dict.fromkeys(("context", "engine"), 3),
    **dict.fromkeys(("teacher", "sparsify", "prune", "distill", "export", "profile", "latency", "report"), 4),
    "run": 5,
    "cli": 6,
    "__main__": 7,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """``module -> edgekd modules it imports`` (top-level, function-level and TYPE_CHECKING imports alike)."""
    files = {module_name(f): f for f in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parents = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parents, base] if base else parents)
                targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            for target in targets:
                while target and target not in files:
                    target = target.rsplit(".", 1)[0] if "." in target else ""
                if target and target != name:
                    graph[name].add(target)
    return graph


def loops(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            visit(v)
    return found


def top(module: str) -> str:
    return module.split(".")[1] if "." in module else module


def test_no_import_loop_spans_two_packages():
    """A package's ``__init__`` importing its own modules, which register into the package's registry, is
    the registration pattern (as timm's); a loop through two packages is a tangle."""
    assert [loop for loop in loops(import_graph()) if len({top(m) for m in loop}) > 1] == []


def test_every_top_level_module_has_a_layer():
    unplaced = {top(m) for m in import_graph() if m != "edgekd"} - set(LAYERS)
    assert not unplaced, f"add {sorted(unplaced)} to LAYERS"


def test_layers_import_one_way():
    upward = [
        f"{m} -> {t}"
        for m, targets in import_graph().items()
        for t in targets
        if m != "edgekd" and t != "edgekd" and LAYERS[top(t)] > LAYERS[top(m)]
    ]
    assert upward == []


def test_the_checks_see_a_loop_and_an_upward_import():
    """Guard: the checks above can fail."""
    assert loops({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]
    graph = import_graph()
    assert "edgekd.context" in graph["edgekd.prune.stage"]  # the graph sees imports at all
    assert LAYERS["run"] > LAYERS["prune"]


@pytest.mark.parametrize("chunk", [0, 1])
def test_each_package_imports_first_in_a_fresh_interpreter(chunk):
    """A runtime loop (package A's import starts B, whose import needs A half-initialised) shows only when A is
    the first thing imported: import every package first, each in its own interpreter."""
    packages = sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py"))[chunk::2]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", f"import edgekd.{p}"], cwd=REPO, stderr=subprocess.PIPE, text=True
        )
        for p in packages
    ]
    failed = {p: proc.communicate()[1][-500:] for p, proc in zip(packages, procs, strict=True) if proc.wait()}
    assert failed == {}
