"""The benchmark tree, and the interface every vision benchmark offers the orchestrator."""

from __future__ import annotations

import re

import pytest

from cortexbox.benchmarks import (
    BENCHMARK_TREE,
    BENCHMARKS,
    ENGINEERING,
    NOT_AGGREGATED,
    Score,
    StimulusSet,
    get_benchmark,
    tree,
    tree_leaves,
)

VISION_PREFIXES = ("Cowley2023.", "Kriegeskorte2008.", "Geirhos2019.")
VISION = sorted(name for name in BENCHMARKS if name.startswith(VISION_PREFIXES))


def test_tree_shape_and_leaves():
    spec = tree()
    assert list(spec) == ["vision"] and list(spec["vision"]) == ["neural", "behaviour"]
    assert list(spec["vision"]["neural"]) == ["V4", "IT"]
    assert spec["vision"]["neural"]["IT"] == ["Kriegeskorte2008.hIT-rdm"]
    spec["vision"]["neural"]["V4"].append("mutated")  # a copy: the constant is unchanged
    assert "mutated" not in tree_leaves()
    leaves = tree_leaves()
    assert len(leaves) == len(set(leaves)) == 5
    assert tree_leaves(BENCHMARK_TREE["vision"]["behaviour"]) == BENCHMARK_TREE["vision"]["behaviour"]


def test_every_vision_benchmark_is_either_aggregated_or_says_why_not():
    leaves = set(tree_leaves())
    assert leaves <= set(BENCHMARKS) and set(NOT_AGGREGATED) <= set(BENCHMARKS)
    assert not leaves & set(NOT_AGGREGATED)
    assert set(VISION) == leaves | set(NOT_AGGREGATED)
    assert set(ENGINEERING) <= set(NOT_AGGREGATED) and all(NOT_AGGREGATED.values())
    assert len(VISION) == 11


def test_orchestrator_reads_the_tree():
    aggregation = pytest.importorskip("cortexbox.orchestrator.aggregation")
    built = aggregation.tree_from_spec(tree(), "vision")
    if len(built.children) == 1:
        built = built.children[0]
    assert built.name == "vision" and set(built.leaves()) == set(tree_leaves())
    weights = aggregation.leaf_weights(built)
    # parents average their direct children: V4 and IT each weigh 1/4, each behaviour leaf 1/6
    assert weights["Cowley2023.V4-sessions-pls"] == pytest.approx(0.25)
    assert weights["Kriegeskorte2008.judgements-rdm"] == pytest.approx(1 / 6)


@pytest.mark.data
@pytest.mark.parametrize("identifier", VISION)
def test_benchmark_interface(identifier, data_dir, kriegeskorte_data_dir, geirhos_data_dir):
    bench = get_benchmark(identifier, data_dir=data_dir)
    assert bench.identifier == identifier and bench.version == 1
    assert bench.kind in ("neural", "behaviour")
    assert len(bench.description) > 200 and "@" in bench.citation
    assert re.fullmatch(r"[0-9a-f]{64}", bench.data_hash)
    assert isinstance(bench.stimulus_set, StimulusSet) and len(bench.stimulus_set) > 0
    assert bench.stimulus_set.visual_degrees == bench.source_visual_degrees > 0
    assert bench.stimulus_set.placement_key(8) == f"target8.00--source{bench.source_visual_degrees:.2f}"
    ceiling = bench.ceiling
    assert ceiling is None or (isinstance(ceiling, Score) and 0 < ceiling.raw <= 1)
    assert callable(bench.score)
    if bench.kind == "neural":
        assert bench.region in ("V4", "IT")
        assert bench.selection_stimulus_set is not None and callable(bench.score_for_selection)
    else:
        assert bench.behaviour == "logits" and bench.region == ""
