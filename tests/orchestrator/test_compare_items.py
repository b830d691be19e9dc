"""The compare page and API pair two models on their stored per-item values (score_items), and fall back to the
per-split test for scores stored without them, saying which basis each comparison used."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from cortexbox.benchmarks.metrics import CrossRegressedCorrelation
from cortexbox.benchmarks.metrics.items import mean_items
from cortexbox.benchmarks.metrics.normalization import explained_variance
from cortexbox.benchmarks.score import Score
from cortexbox.registry import Registry
from tests.benchmarks.test_bootstrap_intervals import _assemblies

TREE = {"neural": {"V4": ["Alpha2020.V4-pls"], "IT": ["Beta2021.IT-mean"]}}


def _store(reg, ids, model, bench, score, *, items=True):
    run = reg.start_run(f"cortexbox/{model}", bench.identifier)
    reg.update_run(run, model_id=ids[model], benchmark_id=bench.id)
    reg.add_score(run_id=run.id, model_id=ids[model], benchmark_id=bench.id, raw=score.raw, error=score.error,
                  ceiling=score.ceiling, ceiled=score.ceiled, layer="l", values=list(score.values),
                  provenance={"metric": score.to_dict()["attrs"]}, items=score.items if items else None)
    reg.update_run(run, status="succeeded")


@pytest.fixture
def registry(tmp_path):
    reg = Registry(f"sqlite:///{tmp_path / 'c.db'}")
    v4 = reg.upsert_benchmark("Alpha2020.V4-pls", 1, "a" * 64, region="V4", ceiling=0.95, ceiling_error=0.01)
    it = reg.upsert_benchmark("Beta2021.IT-mean", 1, "b" * 64, region="IT", ceiling=None)
    ids = {name: reg.upsert_model("sha256:" + str(k) * 64, name, "1", f"cortexbox/{name}", {}).id
           for k, name in enumerate(("strong", "weak", "old"), start=1)}
    source, target = _assemblies(seed=0)
    noisy = source + np.random.default_rng(5).normal(scale=3.0, size=source.shape)
    metric = CrossRegressedCorrelation("pls", n_components=5, n_boot=0)
    ceiling = Score(raw=0.95, error=0.01)  # ceiled values stay below 1: not clipped
    for model, features in (("strong", source), ("weak", noisy), ("old", noisy)):
        _store(reg, ids, model, v4, explained_variance(metric(features, target), ceiling), items=model != "old")
    words = [f"w{i}" for i in range(300)]
    rng = np.random.default_rng(1)
    difficulty = rng.uniform(0.3, 0.7, size=300)
    for model, shift in (("strong", 0.05), ("weak", 0.0)):
        values = difficulty + shift + 0.1 * rng.normal(size=300)
        _store(reg, ids, model, it, Score(raw=float(values.mean()), error=0.0, items=mean_items(words, values)))
    yield reg, ids
    reg.engine.dispose()


def test_compare_uses_stored_items_and_says_so(registry):
    from cortexbox.orchestrator.web import data

    reg, ids = registry
    snap = data.load(reg, TREE)
    c = data.compare(snap, ids["strong"], ids["weak"], registry=reg, n_boot=500)
    rows = {r["benchmark"]: r for r in c["benchmarks"]}
    v4 = rows["Alpha2020.V4-pls"]["comparison"]
    assert v4["basis"] == "items" and v4["n_items"] == 120 and v4["n_boot"] == 500 and v4["seed"] is not None
    assert v4["interval"]["low"] <= v4["difference"] <= v4["interval"]["high"] and v4["difference"] > 0
    assert v4["difference"] == pytest.approx(rows["Alpha2020.V4-pls"]["difference"], abs=1e-4)  # the stored scores'
    it = rows["Beta2021.IT-mean"]["comparison"]
    assert it["basis"] == "items" and it["n_items"] == 300 and it["difference"] == pytest.approx(
        rows["Beta2021.IT-mean"]["difference"], abs=1e-6)
    root = c["aggregates"][0]
    assert root["comparison"]["basis"] == "items" and root["shared_leaves"] == ["Alpha2020.V4-pls", "Beta2021.IT-mean"]
    assert root["comparison"]["n_items"] == 420
    assert "paired bootstrap over the stored per-item values" in c["method"]
    # the same seed gives the same numbers; without the registry (no items) the split test is the fallback
    again = data.compare(snap, ids["strong"], ids["weak"], registry=reg, n_boot=500)
    assert again["benchmarks"] == c["benchmarks"]
    splits = data.compare(snap, ids["strong"], ids["weak"])
    assert {r["benchmark"]: r["comparison"]["basis"] for r in splits["benchmarks"] if r["comparison"]} == {
        "Alpha2020.V4-pls": "splits"}


def test_a_score_stored_without_items_falls_back_to_splits(registry):
    from cortexbox.orchestrator.web import data

    reg, ids = registry
    c = data.compare(data.load(reg, TREE), ids["strong"], ids["old"], registry=reg, n_boot=200)
    v4 = [r for r in c["benchmarks"] if r["benchmark"] == "Alpha2020.V4-pls"][0]
    assert v4["comparison"]["basis"] == "splits" and v4["note"].startswith("no stored items")
    assert c["aggregates"][0]["comparison"]["basis"] == "splits"


def test_compare_page_and_api_show_the_basis(registry):
    from cortexbox.orchestrator.web import create_app

    reg, ids = registry
    with TestClient(create_app(str(reg.engine.url), tree=TREE)) as client:
        c = client.get(f"/api/compare?a={ids['strong']}&b={ids['weak']}").json()
        assert {r["comparison"]["basis"] for r in c["benchmarks"] if r["comparison"]} == {"items"}
        html = client.get(f"/compare?a={ids['strong']}&b={ids['weak']}").text
        assert "items: 120 resampled, B=1000" in html and "items: 300 resampled" in html
        html_old = client.get(f"/compare?a={ids['strong']}&b={ids['old']}").text
        assert "splits: 10" in html_old


def test_scoring_stores_per_stimulus_items_and_compare_pairs_the_same_stimuli(tmp_path, monkeypatch, data_dir):
    """The recording path (score_model, no Docker: two model servers in this process) stores each V4 score's
    per-stimulus items beside it, and the compare API pairs the two models on the 640 scored stimuli."""
    from cortexbox.benchmarks.metrics.items import ItemValues
    from cortexbox.orchestrator.scoring import ScoreRequest, score_model
    from cortexbox.orchestrator.web import data
    from cortexbox.sdk import serve
    from tests.orchestrator.test_score_endpoint import TwoLayers

    class NoiseOnly(TwoLayers):
        model_id = "noise-only"

        def layers(self):
            return [layer for layer in super().layers() if layer.name == "noise"]

    monkeypatch.setenv("CORTEXBOX_DATA_DIR", str(data_dir))
    url = f"sqlite:///{tmp_path / 'r.db'}"
    servers, outcomes = [], []
    try:
        for k, model in enumerate((TwoLayers(), NoiseOnly())):
            address = f"unix://{tmp_path}/m{k}.sock"
            servers.append(serve(model, address, block=False)[0])
            outcomes.append(score_model(ScoreRequest(benchmark="Cowley2023.V4-pls", endpoint=address, database_url=url,
                                                     cache_dir=str(tmp_path / "cache"))))
    finally:
        for server in servers:
            server.stop(0)
    reg = Registry(url)
    scores = {model.name: score for score, model, _ in reg.scores()}
    stored = reg.score_items([s.id for s in scores.values()])
    assert len(stored) == 2
    for outcome, score in zip(outcomes, (scores["two-layers"], scores["noise-only"])):
        items = ItemValues.from_bytes(stored[score.id].kind, stored[score.id].payload)
        assert items.kind == "predictivity" and items.n_items == 640 and items.ids[0] == "210325/image0001"
        assert items.estimate() == pytest.approx(outcome.raw, abs=1e-4)  # float16 predictions
        assert score.provenance["items"] == {"kind": "predictivity", "n_items": 640, "bytes": len(stored[score.id].payload)}
    ids = {m.name: m.id for m in reg.models()}
    c = data.compare(data.load(reg), ids["two-layers"], ids["noise-only"], registry=reg, n_boot=300)
    v4 = [r for r in c["benchmarks"] if r["benchmark"] == "Cowley2023.V4-pls"][0]["comparison"]
    assert v4["basis"] == "items" and v4["n_items"] == 640 and v4["items_left_out"] == {"only_a": 0, "only_b": 0}
    assert v4["difference"] == pytest.approx(scores["two-layers"].ceiled - scores["noise-only"].ceiled, abs=1e-4)
    assert v4["interval"]["low"] > 0  # pixels beat noise on V4
    reg.engine.dispose()
