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


# --- every benchmark satisfies its Protocol -------------------------------------------------------------------------

import json  # noqa: E402
from functools import cached_property  # noqa: E402

from cortexbox.benchmarks import BENCHMARKS, get_benchmark  # noqa: E402
from cortexbox.benchmarks.base import BenchmarkBase  # noqa: E402
from cortexbox.benchmarks.interface import (  # noqa: E402
    PROTOCOLS,
    BehaviouralImageBenchmark,
    BehaviouralTextBenchmark,
    NeuralImageBenchmark,
    NeuralTextBenchmark,
    contract_problems,
    protocol_for,
)
from cortexbox.benchmarks.language import TextStimulusSet  # noqa: E402
from cortexbox.benchmarks.recordings import RecordedBenchmark  # noqa: E402
from cortexbox.benchmarks.score import Score  # noqa: E402
from cortexbox.benchmarks.stimuli import StimulusSet  # noqa: E402
from cortexbox.benchmarks.text_recordings import RecordedTextBenchmark  # noqa: E402

LAZY = {"data_hash", "stimulus_set", "ceiling", "target", "target_assembly", "repetition_assembly", "_selection"}


@pytest.mark.parametrize("identifier", sorted(BENCHMARKS))
def test_every_builtin_benchmark_satisfies_its_protocol_without_loading_data(identifier, tmp_path):
    bench = BENCHMARKS[identifier](data_dir=tmp_path / "empty")  # a folder without data: loading anything fails
    assert contract_problems(bench) == []
    assert bench.identifier == identifier and bench.recording_folder is None
    assert not LAZY & set(vars(bench)), "the check loaded data"


def test_the_builtins_cover_the_four_protocols(tmp_path):
    by_protocol: dict[type, list[str]] = {}
    for identifier, factory in BENCHMARKS.items():
        by_protocol.setdefault(protocol_for(factory(data_dir=tmp_path)), []).append(identifier)
    assert set(by_protocol) == set(PROTOCOLS.values())
    assert "Cowley2023.V4-pls" in by_protocol[NeuralImageBenchmark]
    assert "Kriegeskorte2008.judgements-rdm" in by_protocol[NeuralImageBenchmark]
    assert "Geirhos2019.edges-top1" in by_protocol[BehaviouralImageBenchmark]
    assert "Brennan2016.LIFG-ridge" in by_protocol[NeuralTextBenchmark]
    assert {"Futrell2018-pearsonr", "syntaxgym2020", "NaturalStories-accuracy"} <= set(by_protocol[BehaviouralTextBenchmark])
    assert sum(map(len, by_protocol.values())) == len(BENCHMARKS)


def test_ingested_recordings_satisfy_their_protocols(tmp_path):
    """The two benchmarks opened from an ingested recording's folder (definition.json is all they read at first)."""
    for name, modality in (("image", "image"), ("text", "text")):
        folder = tmp_path / name
        folder.mkdir()
        definition = {"identifier": f"Smith2026.{name}", "version": 3, "region": "V4" if name == "image" else "language",
                      "visual_degrees": 8, "data_hash": "a" * 64, "modality": modality}
        (folder / "definition.json").write_text(json.dumps(definition))
        bench = (RecordedBenchmark if modality == "image" else RecordedTextBenchmark)(folder)
        assert contract_problems(bench) == [], name
        assert protocol_for(bench) is (NeuralImageBenchmark if modality == "image" else NeuralTextBenchmark)
        assert bench.recording_folder == folder and bench.data_hash == "a" * 64
    assert RecordedBenchmark(tmp_path / "image").metric_name == "pls"
    assert RecordedTextBenchmark(tmp_path / "text").metric_name == "linear_predictivity"


class _Broken(BenchmarkBase):
    """A neural image benchmark with one mistake of each sort the check must find."""

    identifier = "Broken.V4"
    version = "2"  # not an int
    kind = "neural"
    region = "V4"
    description = citation = ""
    source_visual_degrees = 8.0
    selection_source = None

    @cached_property
    def stimulus_set(self) -> TextStimulusSet:  # text, for an image benchmark
        raise AssertionError("loaded")

    @property
    def ceiling(self):  # no declared type
        raise AssertionError("loaded")

    def score(self) -> Score:  # takes no assembly
        raise AssertionError("called")

    # no selection_stimulus_set, no score_for_selection


def test_contract_problems_names_every_mistake(tmp_path):
    problems = contract_problems(_Broken(data_dir=tmp_path))
    assert {p.split(":")[0] for p in problems} == {
        "version", "stimulus_set", "ceiling", "score", "selection_stimulus_set", "score_for_selection",
    }, problems
    assert protocol_for(_Broken(data_dir=tmp_path)) is NeuralImageBenchmark
    odd = _Broken(data_dir=tmp_path)
    odd.kind = "reading"
    assert contract_problems(odd) == [f"{odd!r}: kind 'reading' and modality 'image' name no benchmark protocol"]


def test_every_protocol_member_is_documented():
    tree = ast.parse((BENCHMARKS_DIR / "interface.py").read_text())
    protocols = [n for n in tree.body if isinstance(n, ast.ClassDef) and any(
        getattr(b, "id", "") in ("Protocol", "Benchmark") for b in n.bases)]
    assert {p.name for p in protocols} == {"Benchmark", *(p.__name__ for p in PROTOCOLS.values())}
    undocumented = []
    for protocol in protocols:
        body = protocol.body
        for i, node in enumerate(body):
            if isinstance(node, ast.AnnAssign):
                following = body[i + 1] if i + 1 < len(body) else None
                if not (isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)):
                    undocumented.append(f"{protocol.name}.{node.target.id}")
            elif isinstance(node, ast.FunctionDef) and not ast.get_docstring(node):
                undocumented.append(f"{protocol.name}.{node.name}")
    assert not undocumented


@pytest.mark.data
@pytest.mark.parametrize("identifier", [
    "Kriegeskorte2008.mIT-rdm", "Geirhos2019.edges-top1", "Brennan2016.LATL-ridge", "Futrell2018-pearsonr",
])
def test_loaded_members_have_their_declared_types(identifier, data_dir):
    """One benchmark per Protocol, its lazy members loaded from the real data: the values are what is declared."""
    bench = get_benchmark(identifier, data_dir=data_dir)
    protocol = protocol_for(bench)
    stimuli = TextStimulusSet if bench.modality == "text" else StimulusSet
    assert isinstance(bench.stimulus_set, stimuli) and len(bench.stimulus_set) > 0
    assert isinstance(bench.data_hash, str) and len(bench.data_hash) == 64 and int(bench.data_hash, 16) >= 0
    assert bench.ceiling is None or isinstance(bench.ceiling, Score)
    assert (bench.ceiling is None) == (identifier == "Kriegeskorte2008.mIT-rdm")
    if protocol is NeuralImageBenchmark:
        assert isinstance(bench.selection_stimulus_set, StimulusSet)
        assert not set(bench.selection_stimulus_set.stimulus_ids) - set(bench.stimulus_set.stimulus_ids)
    info = bench.info()
    assert info["identifier"] == identifier and info["data_hash"] == bench.data_hash
