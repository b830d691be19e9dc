"""Aggregation over the benchmark tree, checked against trees computed by hand."""

from __future__ import annotations

from types import SimpleNamespace as Row

import pytest

from cortexbox.orchestrator.aggregation import (
    BenchmarkTreeError,
    Leaf,
    aggregate,
    aggregate_all,
    default_tree_spec,
    latest_leaves,
    leaf_weights,
    rank,
    tree_from_spec,
)

# vision -> neural -> {V4: [a, b], IT: [c]}, behaviour -> [d]
SPEC = {"neural": {"V4": ["a", "b"], "IT": ["c"]}, "behaviour": ["d"]}
TREE = tree_from_spec(SPEC, "vision")


def scored(name: str, value: float) -> Leaf:
    return Leaf(name, "scored", min(max(value, 0), 1), value, not 0 <= value <= 1)


def test_complete_tree_is_the_mean_of_children_not_of_leaves():
    leaves = {"a": scored("a", 0.2), "b": scored("b", 0.4), "c": scored("c", 0.6), "d": scored("d", 0.8)}
    root = aggregate(TREE, leaves)
    # V4 = 0.3, IT = 0.6, neural = 0.45, behaviour = 0.8, vision = (0.45 + 0.8) / 2 = 0.625 (mean of leaves: 0.5)
    assert root.find("V4").value == pytest.approx(0.3)
    assert root.find("neural").value == pytest.approx(0.45)
    assert root.value == pytest.approx(0.625)
    assert root.scored_value == pytest.approx(0.625)
    assert root.missing == [] and root.missing_weight == 0 and root.coverage == 1


def test_missing_children_count_as_zero_and_are_marked():
    leaves = {"a": scored("a", 0.2), "c": scored("c", 0.6), "d": scored("d", 0.8)}  # b never scored
    root = aggregate(TREE, leaves)
    v4 = root.find("V4")
    assert v4.value == pytest.approx(0.1)  # (0.2 + 0) / 2
    assert v4.scored_value == pytest.approx(0.2)
    assert v4.missing == ["b"] and v4.missing_weight == pytest.approx(0.5)
    b = root.find("vision/neural/V4/b")
    assert b.value is None and b.leaf.status == "not scored"  # never a real 0
    # neural = (0.1 + 0.6) / 2 = 0.35; vision = (0.35 + 0.8) / 2 = 0.575
    assert root.value == pytest.approx(0.575)
    # scored view: V4 0.2, neural 0.4, vision 0.6
    assert root.scored_value == pytest.approx(0.6)
    # b carries 1/2 * 1/2 * 1/2 of the root
    assert root.missing == ["b"] and root.missing_weight == pytest.approx(0.125)


def test_a_wholly_missing_branch_is_missing_but_counts_as_zero_above():
    leaves = {"a": scored("a", 0.5), "b": scored("b", 0.3)}  # no IT, no behaviour
    root = aggregate(TREE, leaves)
    assert root.find("IT").value is None and root.find("behaviour").value is None
    assert root.find("neural").value == pytest.approx(0.2)  # (0.4 + 0) / 2
    assert root.value == pytest.approx(0.1)  # (0.2 + 0) / 2
    assert root.scored_value == pytest.approx(0.4)
    assert sorted(root.missing) == ["c", "d"] and root.missing_weight == pytest.approx(0.75)
    assert root.n_scored == 2 and root.n_leaves == 4


def test_nothing_scored_is_missing_not_zero():
    root = aggregate(TREE, {})
    assert root.value is None and root.scored_value is None and root.missing_weight == 1


def test_brain_score_value_is_the_weighted_sum_of_scored_leaves():
    weights = leaf_weights(TREE)
    assert weights == pytest.approx({"a": 0.125, "b": 0.125, "c": 0.25, "d": 0.5})
    leaves = {"a": scored("a", 0.9), "c": scored("c", 0.3)}
    root = aggregate(TREE, leaves)
    assert root.value == pytest.approx(0.125 * 0.9 + 0.25 * 0.3)


def _rows():
    benchmarks = [
        Row(id=1, identifier="a", version=1),
        Row(id=2, identifier="a", version=2),
        Row(id=3, identifier="b", version=1),
        Row(id=4, identifier="c", version=1),
        Row(id=5, identifier="d", version=1),
    ]
    scores = [
        Row(id=1, model_id=7, benchmark_id=1, raw=0.9, ceiled=0.95, run_id=1),  # old version of a: ignored
        Row(id=2, model_id=7, benchmark_id=2, raw=0.5, ceiled=0.2, run_id=2),
        Row(id=3, model_id=7, benchmark_id=2, raw=0.5, ceiled=0.3, run_id=3),  # newer score on a v2 wins
        Row(id=4, model_id=7, benchmark_id=3, raw=0.9, ceiled=1.4, run_id=4),  # clipped to 1
        Row(id=5, model_id=7, benchmark_id=4, raw=-0.1, ceiled=-0.2, run_id=5),  # clipped to 0: a real, scored 0
        Row(id=6, model_id=8, benchmark_id=1, raw=0.9, ceiled=0.8, run_id=6),  # model 8: only the old version
        Row(id=7, model_id=8, benchmark_id=5, raw=0.4, ceiled=None, run_id=7),  # no ceiling: raw counts
    ]
    runs = [
        Row(id=9, model_id=7, benchmark_id=5, status="failed", failure_class="oom"),
        Row(id=10, model_id=8, benchmark_id=4, status="failed", failure_class="timeout"),
        Row(id=11, model_id=8, benchmark_id=1, status="failed", failure_class="crash"),  # old version: ignored
    ]
    return scores, benchmarks, runs


def test_latest_version_latest_score_clipping_and_failures_from_rows():
    scores, benchmarks, runs = _rows()
    leaves = latest_leaves(scores, benchmarks, runs)
    m7 = leaves[7]
    assert m7["a"].value == pytest.approx(0.3) and m7["a"].version == 2 and m7["a"].score_id == 3
    assert m7["b"].value == 1.0 and m7["b"].clipped and m7["b"].unclipped == pytest.approx(1.4)
    assert m7["c"].value == 0.0 and m7["c"].status == "scored" and m7["c"].clipped
    assert m7["d"].status == "failed" and m7["d"].failure_class == "oom" and m7["d"].value is None
    m8 = leaves[8]
    assert "a" not in m8  # its only score on a is on version 1
    assert m8["d"].value == pytest.approx(0.4)
    assert m8["c"].status == "failed" and m8["c"].failure_class == "timeout"


def test_aggregate_all_by_hand():
    scores, benchmarks, runs = _rows()
    results = aggregate_all(TREE, scores, benchmarks, runs, model_ids=[9])
    # model 7: V4 = (0.3 + 1) / 2 = 0.65, IT = 0, neural = 0.325, behaviour failed -> 0 (missing), vision = 0.1625
    m7 = results[7]
    assert m7.value == pytest.approx(0.1625)
    assert m7.missing == ["d"] and m7.find("behaviour").value is None
    assert m7.find("IT").value == 0.0 and m7.find("IT").missing == []  # clipped real 0 is not missing
    # scored view: neural 0.325, behaviour none -> 0.325
    assert m7.scored_value == pytest.approx(0.325)
    # model 8: neural none (a old version, b none, c failed), behaviour 0.4 -> vision 0.2
    m8 = results[8]
    assert m8.value == pytest.approx(0.2) and m8.scored_value == pytest.approx(0.4)
    assert sorted(m8.missing) == ["a", "b", "c"] and m8.missing_weight == pytest.approx(0.5)
    assert results[9].value is None


def test_default_tree_places_benchmarks_by_region_and_drops_empty_branches():
    rows = [Row(identifier="X.V4-pls", region="V4"), Row(identifier="Y.IT-pls", region="IT"),
            Row(identifier="Z.V4-rdm", region="V4"), Row(identifier="B.i2n", region="")]
    tree = tree_from_spec(default_tree_spec(rows), "vision")
    assert tree.to_dict() == {"name": "vision", "children": [
        {"name": "neural", "children": [
            {"name": "V4", "children": [{"name": "X.V4-pls", "benchmark": "X.V4-pls"}, {"name": "Z.V4-rdm", "benchmark": "Z.V4-rdm"}]},
            {"name": "IT", "children": [{"name": "Y.IT-pls", "benchmark": "Y.IT-pls"}]},
        ]},
        {"name": "behaviour", "children": [{"name": "B.i2n", "benchmark": "B.i2n"}]},
    ]}
    only_v4 = tree_from_spec(default_tree_spec(rows[:1]), "vision")
    assert only_v4.leaves() == ["X.V4-pls"] and [c.name for c in only_v4.children] == ["neural"]


def test_rank_is_sql_rank():
    assert rank({1: 0.5, 2: 0.7, 3: 0.5, 4: None, 5: 0.1}) == {2: 1, 1: 2, 3: 2, 5: 4, 4: None}


def test_a_provided_tree_is_used_ingested_benchmarks_join_their_region_and_left_out_ones_are_reported(monkeypatch):
    import cortexbox.benchmarks as package
    from cortexbox.orchestrator.aggregation import benchmark_tree, unaggregated

    monkeypatch.setattr(package, "tree", lambda: {"vision": {"neural": {"V4": ["X.V4-pls"], "IT": ["Y.IT-pls"]}, "behaviour": ["B.i2n"]}}, raising=False)
    monkeypatch.setattr(package, "NOT_AGGREGATED", {"X.V4-top1": "engineering"}, raising=False)
    registered = [Row(identifier="X.V4-pls", region="V4"), Row(identifier="Smith2026.V4-pls", region="V4"),
                  Row(identifier="X.V4-top1", region="V4"), Row(identifier="Z.V1-pls", region="V1")]
    tree = benchmark_tree(registered)
    assert tree.name == "vision"
    assert tree.leaves() == ["X.V4-pls", "Smith2026.V4-pls", "Y.IT-pls", "B.i2n"]  # unscored tree leaves stay
    assert unaggregated(tree, registered) == {"X.V4-top1": "engineering", "Z.V1-pls": "not in the benchmark tree"}
    # a tree that cannot be read is an error naming why, never silently replaced by the default tree
    monkeypatch.setattr(package, "tree", lambda: 1 / 0, raising=False)
    with pytest.raises(BenchmarkTreeError, match=r"tree\(\) failed: ZeroDivisionError"):
        benchmark_tree(registered[:2])
    # without a provided tree, the default places the registered benchmarks by region
    monkeypatch.setattr(package, "tree", None, raising=False)
    assert benchmark_tree(registered[:2]).leaves() == ["Smith2026.V4-pls", "X.V4-pls"]


@pytest.mark.parametrize("spec, known, message", [
    ({"neural": {"V4": ["a", "nonexistent"]}}, {"a"}, "the leaf nonexistent under vision/neural/V4 names no known benchmark"),
    ({"neural": {"V4": ["a"], "IT": ["a"]}}, None, "a appears twice, under vision/neural/V4 and vision/neural/IT"),
    ({"neural": {"V4": ["a"], "IT": []}}, None, "vision/neural/IT has no benchmarks below it"),
    ({"neural": {"V4": ["a"], "IT": {}}, "behaviour": ["d"]}, None, "vision/neural/IT has no benchmarks below it"),
    ({"neural": {"V4": ["a", ""]}}, None, "an empty benchmark identifier under vision/neural/V4"),
    ({"neural": {"V4": ["a"], "IT": 3}}, None, "vision/neural/IT is a int"),
    ({"neural": [{"V4": ["a"]}, {"V4": ["b"]}]}, None, "two children named neural"),
])
def test_a_broken_tree_fails_loudly_naming_the_problem(spec, known, message):
    from cortexbox.orchestrator.aggregation import benchmark_tree

    with pytest.raises(BenchmarkTreeError) as info:
        benchmark_tree([], spec, known=known)
    assert message in str(info.value)


def test_a_cycle_in_the_tree_fails_loudly_and_a_leaf_also_left_out_is_refused(monkeypatch):
    import cortexbox.benchmarks as package
    from cortexbox.orchestrator.aggregation import benchmark_tree

    spec: dict = {"neural": {"V4": ["a"]}}
    spec["neural"]["IT"] = spec["neural"]
    with pytest.raises(BenchmarkTreeError, match="a cycle: vision/neural/IT contains itself"):
        benchmark_tree([], spec)
    monkeypatch.setattr(package, "NOT_AGGREGATED", {"a": "scored elsewhere"}, raising=False)
    with pytest.raises(BenchmarkTreeError, match="a is a leaf and also listed as not aggregated"):
        benchmark_tree([], {"neural": {"V4": ["a"]}})


def test_the_real_tree_names_only_built_in_benchmarks():
    from cortexbox.benchmarks import list_benchmarks
    from cortexbox.orchestrator.aggregation import benchmark_tree

    tree = benchmark_tree([], known=list_benchmarks())
    assert tree.mode == "roots" and len(tree.leaves()) == len(set(tree.leaves())) > 40


# -- several roots: vision and language are separate leaderboards, engineering roots stand apart ------------------
ROOTS_SPEC = {
    "vision": {"neural": {"V4": ["a", "b"], "IT": ["c"]}, "behaviour": ["d"]},
    "language": {"neural": ["n1", "n2"], "behaviour": ["f"]},
    "engineering_vision": ["top1"],
    "engineering_language": {"SyntaxGym": ["s1", "s2"]},
}


def _roots_tree():
    from cortexbox.orchestrator.aggregation import benchmark_tree

    return benchmark_tree([], ROOTS_SPEC)


def test_a_language_model_aggregates_into_the_language_root_and_vision_is_missing_not_zero():
    tree = _roots_tree()
    assert tree.name == "average" and tree.mode == "roots"
    leaves = {"n1": scored("n1", 0.2), "n2": scored("n2", 0.6), "f": scored("f", 0.5),
              "s1": Leaf("s1", "scored", 0.9, 0.9, raw=0.9), "s2": Leaf("s2", "scored", 0.4, 0.4, raw=0.4)}
    root = aggregate(tree, leaves)
    # language: neural = 0.4, behaviour = 0.5 -> 0.45; the aggregate is language alone (no vision row at all)
    assert root.find("average/language").value == pytest.approx(0.45)
    assert root.value == pytest.approx(0.45) and root.scored_value == pytest.approx(0.45)
    assert root.counted == ["language"] and root.missing == [] and root.coverage == 1
    vision = root.find("average/vision")
    assert vision.value is None and vision.scored_value is None and sorted(vision.missing) == ["a", "b", "c", "d"]
    assert root.find("average/vision/neural/V4/a").leaf.status == "not scored"  # never a real 0
    # engineering: a separate root from raw scores, not in the aggregate
    assert root.find("average/engineering_language/SyntaxGym").value == pytest.approx(0.65)
    assert root.find("average/engineering_language").value == pytest.approx(0.65)
    assert root.find("average/engineering_vision").value is None


def test_an_image_model_aggregates_into_vision_and_language_is_missing_not_zero():
    tree = _roots_tree()
    leaves = {"a": scored("a", 0.2), "b": scored("b", 0.4), "c": scored("c", 0.6), "d": scored("d", 0.8),
              "top1": Leaf("top1", "scored", 0.7, 0.7, raw=0.75)}
    root = aggregate(tree, leaves)
    assert root.value == pytest.approx(0.625)  # exactly the vision-only tree's value (first test above)
    assert root.value == aggregate(TREE, leaves).value
    language = root.find("average/language")
    assert language.value is None and sorted(language.missing) == ["f", "n1", "n2"]
    assert root.missing == [] and root.counted == ["vision"]
    assert root.find("average/engineering_vision").value == pytest.approx(0.75)  # the raw score
    # a failed language run makes the model take part in language: the Brain-Score rule (missing = 0) applies there
    leaves["f"] = Leaf("f", "failed", failure_class="crash")
    root = aggregate(tree, leaves)
    assert root.counted == ["vision", "language"] and root.find("average/language").value is None
    assert root.value == pytest.approx(0.625 / 2) and root.scored_value == pytest.approx(0.625)
    assert sorted(root.missing) == ["f", "n1", "n2"] and root.missing_weight == pytest.approx(0.5)


def test_child_shares_follow_the_counted_roots_and_the_view():
    from cortexbox.orchestrator.aggregation import child_shares

    tree = _roots_tree()
    root = aggregate(tree, {"a": scored("a", 0.5), "n1": scored("n1", 0.1)})
    assert [(c.name, w) for c, w in child_shares(root)] == [("vision", 0.5), ("language", 0.5)]
    vision = root.find("average/vision")
    assert [(c.name, w) for c, w in child_shares(vision)] == [("neural", 0.5), ("behaviour", 0.5)]
    assert [(c.name, w) for c, w in child_shares(vision, "scored")] == [("neural", 1.0)]
    nothing = aggregate(tree, {})
    assert nothing.value is None and nothing.missing_weight == 1 and nothing.n_leaves == 7


def test_the_web_leaderboard_has_a_language_column_and_never_shows_a_missing_domain_as_zero(tmp_path):
    pytest.importorskip("fastapi")
    from cortexbox.orchestrator.web import data
    from cortexbox.registry import Registry

    reg = Registry(f"sqlite:///{tmp_path / 'lb.db'}")
    v4 = reg.upsert_benchmark("Cowley2023.V4-sessions-pls", 1, "a" * 64, region="V4", ceiling=0.5)
    futrell = reg.upsert_benchmark("Futrell2018-pearsonr", 1, "b" * 64, region="reading_times", ceiling=0.79)
    suite = reg.upsert_benchmark("syntaxgym-cleft", 1, "c" * 64, region="engineering", ceiling=None)
    image = reg.upsert_model("sha256:" + "1" * 64, "pixels", "1", "cortexbox/pixels", {}).id
    text = reg.upsert_model("sha256:" + "2" * 64, "unigram", "1", "cortexbox/unigram", {}).id
    for model, bench, raw, ceiled in ((image, v4, 0.4, 0.32), (text, futrell, 0.3, 0.38), (text, suite, 0.6, None)):
        run = reg.start_run("m", bench.identifier)
        reg.update_run(run, model_id=model, benchmark_id=bench.id)
        reg.add_score(run_id=run.id, model_id=model, benchmark_id=bench.id, raw=raw, error=0.01, ceiling=bench.ceiling,
                      ceiled=ceiled, layer=None, values=[raw] * 10, provenance={})
        reg.update_run(run, status="succeeded")
    board = data.leaderboard(data.load(reg))
    assert board["root"] == "average"
    top = {c["path"]: c for c in board["columns"] if c["depth"] == 0}
    assert list(top) == ["average/vision", "average/language", "average/engineering_vision", "average/engineering_language"]
    rows = {r["model"]: r for r in board["rows"]}
    px, uni = rows["pixels"], rows["unigram"]
    # vision: V4 = 0.32 -> neural 0.16 -> vision 0.08 (IT, behaviour missing); language: behaviour 0.38 -> 0.19
    assert px["aggregate"]["value"] == pytest.approx(px["nodes"]["average/vision"]["value"]) == pytest.approx(0.08)
    assert uni["aggregate"]["value"] == pytest.approx(uni["nodes"]["average/language"]["value"]) == pytest.approx(0.19)
    assert px["nodes"]["average/language"]["value"] is None and uni["nodes"]["average/vision"]["value"] is None
    assert uni["nodes"]["average/engineering_language/SyntaxGym"]["value"] == pytest.approx(0.6 / 31)  # 30 suites missing
    assert not any("Brennan" in m or "Futrell" in m for m in px["aggregate"]["missing"])
    from fastapi.testclient import TestClient

    from cortexbox.orchestrator.web import create_app

    with TestClient(create_app(f"sqlite:///{tmp_path / 'lb.db'}")) as client:
        page = client.get("/")
        assert page.status_code == 200 and ">language<" in page.text and ">engineering_language<" in page.text
        # one board per domain, as Brain-Score keeps vision and language apart: only the domain's models, ranked by it
        vision = client.get("/api/leaderboard?domain=vision").json()
        assert [(r["model"], r["rank"]) for r in vision["rows"]] == [("pixels", 1)]
        assert vision["rows"][0]["ranked_by"]["value"] == pytest.approx(0.08)
        language = client.get("/api/leaderboard?domain=language").json()
        assert [(r["model"], r["rank"], r["domains"]) for r in language["rows"]] == [("unigram", 1, ["language"])]
        assert client.get("/api/leaderboard?domain=engineering_language").status_code == 422
        page = client.get("/?domain=language")
        assert page.status_code == 200 and "unigram" in page.text and "/models/" + str(image) not in page.text
