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
    language_tree,
    tree,
    tree_leaves,
)

VISION_PREFIXES = ("Cowley2023.", "Kriegeskorte2008.", "Geirhos2019.")
VISION = sorted(name for name in BENCHMARKS if name.startswith(VISION_PREFIXES))


def test_tree_shape_and_leaves():
    spec = tree()
    assert list(spec) == ["vision", "language", "engineering_vision", "engineering_language"]
    assert list(spec["vision"]) == ["neural", "behaviour"]
    assert list(spec["vision"]["neural"]) == ["V4", "IT"]
    assert spec["vision"]["neural"]["IT"] == ["Kriegeskorte2008.hIT-rdm"]
    assert list(spec["language"]) == ["neural", "behaviour"]
    assert spec["language"]["behaviour"] == ["Futrell2018-pearsonr"] and len(spec["language"]["neural"]) == 6
    assert spec["engineering_vision"] == ENGINEERING
    assert len(spec["engineering_language"]["SyntaxGym"]) == 31
    assert spec["engineering_language"]["next_word"] == ["NaturalStories-accuracy"]
    spec["vision"]["neural"]["V4"].append("mutated")  # a copy: the constant is unchanged
    assert "mutated" not in tree_leaves()
    leaves = tree_leaves()
    assert len(leaves) == len(set(leaves)) == 5 + 7 + 2 + 31 + 1
    assert len(tree_leaves(BENCHMARK_TREE["vision"])) == 5
    assert tree_leaves(BENCHMARK_TREE["vision"]["behaviour"]) == BENCHMARK_TREE["vision"]["behaviour"]
    assert language_tree() == {root: spec[root] for root in ("language", "engineering_language")}


def test_every_benchmark_is_either_aggregated_or_says_why_not():
    leaves = set(tree_leaves())
    assert leaves <= set(BENCHMARKS) and set(NOT_AGGREGATED) <= set(BENCHMARKS)
    assert not leaves & set(NOT_AGGREGATED)
    assert set(BENCHMARKS) == leaves | set(NOT_AGGREGATED)
    assert all(NOT_AGGREGATED.values())
    assert set(VISION) <= leaves | set(NOT_AGGREGATED) and len(VISION) == 11


def test_orchestrator_reads_the_tree():
    aggregation = pytest.importorskip("cortexbox.orchestrator.aggregation")
    built = aggregation.benchmark_tree([], tree())
    assert built.name == "average" and built.mode == "roots"
    assert [c.name for c in built.children] == ["vision", "language", "engineering_vision", "engineering_language"]
    assert set(built.leaves()) == set(tree_leaves())
    vision = built.children[0]
    weights = aggregation.leaf_weights(vision)
    # parents average their direct children: V4 and IT each weigh 1/4, each behaviour leaf 1/6
    assert weights["Cowley2023.V4-sessions-pls"] == pytest.approx(0.25)
    assert weights["Kriegeskorte2008.judgements-rdm"] == pytest.approx(1 / 6)
    # at the top: each brain root weighs as if it were the only one, engineering not at all
    top = aggregation.leaf_weights(built)
    assert top["Cowley2023.V4-sessions-pls"] == pytest.approx(0.25)
    assert top["Futrell2018-pearsonr"] == pytest.approx(0.5) and top["Brennan2016.LIFG-ridge"] == pytest.approx(1 / 12)
    assert top["Geirhos2019.edges-top1"] == 0 and top["syntaxgym-cleft"] == 0 and top["NaturalStories-accuracy"] == 0


@pytest.mark.data
@pytest.mark.parametrize("identifier", VISION)
def test_benchmark_interface(identifier, data_dir, kriegeskorte_data_dir, geirhos_data_dir):
    bench = get_benchmark(identifier, data_dir=data_dir)
    assert bench.identifier == identifier and bench.version >= 1  # Geirhos top1 and shape bias are at v2
    assert bench.kind in ("neural", "behaviour")
    assert len(bench.description) > 200 and "@" in bench.citation
    assert re.fullmatch(r"[0-9a-f]{64}", bench.data_hash)
    assert isinstance(bench.stimulus_set, StimulusSet) and len(bench.stimulus_set) > 0
    if bench.source_visual_degrees is None:  # v2 top1 / shape bias: images sent as stored, never placed
        assert bench.stimulus_set.placement_key(8) == bench.stimulus_set.placement_key(3) == type(bench.stimulus_set).PLACEMENT
    else:
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
