"""The benchmark contract: imports run one way, and every built-in benchmark satisfies its Protocol.

In the spirit of scikit-learn's ``check_estimator``: each registered benchmark is checked against the Protocol of its
kind and modality (:mod:`cortexbox.benchmarks.interface`), on the class and on a fresh instance, without loading its
data.
"""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

BENCHMARKS_DIR = Path(__file__).resolve().parents[2] / "benchmarks"


def _sibling_imports(path: Path, modules: set[str]) -> tuple[set[str], list[str]]:
    """(modules of the package imported at module level, "line: module" of imports inside functions or classes)."""
    tree = ast.parse(path.read_text())

    def targets(node: ast.AST) -> set[str]:
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                return {node.module.split(".")[0]}
            return {alias.name for alias in node.names}
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cortexbox.benchmarks."):
            return {node.module.split(".")[2]}
        if isinstance(node, ast.Import):
            return {a.name.split(".")[2] for a in node.names if a.name.startswith("cortexbox.benchmarks.")}
        return set()

    top = set().union(*(targets(node) for node in tree.body)) & modules
    nested = [
        f"{node.lineno}: {name}"
        for outer in tree.body
        if isinstance(outer, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        for node in ast.walk(outer)
        for name in sorted(targets(node) & modules)
    ]
    return top, nested


def test_benchmark_modules_import_each_other_one_way_at_module_level():
    """No import hidden in a function, and the module graph has no cycle (``__init__`` and the metrics package,
    which has its own owner, aside)."""
    paths = {p.stem: p for p in BENCHMARKS_DIR.glob("*.py") if p.stem != "__init__"}
    modules = set(paths) | {"metrics"}
    graph, hidden = {}, {}
    for name, path in paths.items():
        graph[name], nested = _sibling_imports(path, modules)
        if nested:
            hidden[name] = nested
    assert not hidden, f"imports inside functions (they hide cycles): {hidden}"
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as e:  # pragma: no cover - the failure message
        pytest.fail(f"import cycle among cortexbox.benchmarks modules: {e.args[1]}")
    # the direction the contract relies on: benchmarks below the registry and the tree, language.py below its users
    assert order.index("language") < order.index("brennan2016") < order.index("aggregation")
    assert order.index("recordings") < order.index("cowley2023_sessions") < order.index("registry")
    assert "registry" not in set().union(*(graph[m] for m in graph if m != "registry"))
