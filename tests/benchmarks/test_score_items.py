"""Per-item values stored with a score (cortexbox.benchmarks.metrics.items): each kind recomputes the point score from
what is stored, a reweighting is the score on resampled items, and the bytes read back are what was written."""

from __future__ import annotations

import io

import numpy as np
import pytest

from cortexbox.benchmarks.metrics import CrossRegressedCorrelation
from cortexbox.benchmarks.metrics.bootstrap import multinomial_counts, rdm_bootstrap, weighted_pearson
from cortexbox.benchmarks.metrics.items import ItemValues, item_values_of, mean_items, rdm_items
from cortexbox.benchmarks.metrics.rsa import rdm, rdm_similarity
from cortexbox.benchmarks.score import Score
from tests.benchmarks.test_bootstrap_intervals import _assemblies


def test_predictivity_items_recompute_the_score_and_a_resample_of_stimuli():
    source, target = _assemblies()
    score = CrossRegressedCorrelation("pls", n_boot=50)(source, target)
    items = score.items
    assert items.kind == "predictivity" and list(items.ids) == [str(s) for s in target.stimulus_id.values]
    assert items.estimate() == pytest.approx(score.raw, abs=1e-4)  # float16 predictions move it ~1e-5
    # a resample: per split, per-neuroid r on the resampled held-out stimuli, median, mean over splits
    counts = multinomial_counts(np.random.default_rng(1), items.n_items, 3)
    a = items.arrays
    bounds = np.r_[0, np.cumsum(a["sizes"])]
    expected = []
    for w in counts:
        per_split = []
        for s in range(len(a["sizes"])):
            rows = a["rows"][bounds[s] : bounds[s + 1]]
            keep = np.repeat(np.arange(len(rows)), w[rows].astype(int))  # the resampled stimuli, copies included
            y, p = a["target"][rows][keep].astype(float), a["predictions"][bounds[s] : bounds[s + 1]][keep].astype(float)
            per_split.append(np.nanmedian(weighted_pearson(np.ones((1, len(keep))), y, p)))
        expected.append(np.mean(per_split))
    assert items.replicates(counts) == pytest.approx(expected, abs=1e-9)
    assert CrossRegressedCorrelation("pls")(source, target, bootstrap=False).items is None  # layer selection: none


def test_rdm_items_store_ranks_and_recompute_the_nili_bootstrap():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(30, 20))
    subjects = np.stack([rdm(features + rng.normal(size=features.shape)) for _ in range(3)])
    subjects[0, 1, 2] = subjects[0, 2, 1] = subjects[0, 1, 3]  # a tie
    model = rdm(features)
    ids = [f"img{i}" for i in range(30)]
    items = rdm_items(ids, model, subjects)
    assert items.arrays["model"].dtype == np.uint16  # 2 x average ranks: exact integers
    assert items.estimate() == pytest.approx(np.mean([rdm_similarity(model, s) for s in subjects]), abs=1e-12)
    expected = rdm_bootstrap(model, subjects, rng=np.random.default_rng(7), n_boot=20)
    counts = multinomial_counts(np.random.default_rng(7), 30, 20)
    assert items.replicates(counts) == pytest.approx(expected, abs=1e-12)


def test_the_simple_form_is_the_mean_of_per_item_values():
    score = Score(raw=2.0, error=0.0, attrs={"item_values": [1.0, 2.0, 3.0], "item_ids": ["w1", "w2", "w3"]})
    items = item_values_of(score)
    assert items.kind == "mean" and items.estimate() == pytest.approx(2.0)
    assert items.replicates(np.array([[2.0, 1.0, 0.0]]))[0] == pytest.approx(4 / 3)
    assert item_values_of(Score(raw=1.0, error=0.0)) is None
    with pytest.raises(ValueError, match="one per item id"):
        item_values_of(Score(raw=1.0, error=0.0, attrs={"item_values": [1.0, np.nan], "item_ids": ["a", "b"]}))


def test_bytes_round_trip_and_refuse_what_is_not_items():
    items = mean_items(["b", "a", "c"], [0.5, 0.25, 1.0])
    back = ItemValues.from_bytes("mean", items.to_bytes())
    assert list(back.ids) == ["b", "a", "c"] and back.estimate() == pytest.approx(items.estimate())
    buffer = io.BytesIO()
    np.savez(buffer, ids=np.array(["a"], dtype=object), values=np.zeros(1))  # an object array needs pickle
    with pytest.raises(ValueError, match="cannot be read"):
        ItemValues.from_bytes("mean", buffer.getvalue())
    with pytest.raises(ValueError, match="lack the array"):
        ItemValues.from_bytes("rdm", items.to_bytes())
    with pytest.raises(ValueError, match="unique"):
        mean_items(["a", "a"], [1.0, 2.0])
    with pytest.raises(ValueError, match="outside"):
        ItemValues("predictivity", np.array(["a", "b"]), {"target": np.zeros((2, 1)), "rows": np.array([0, 5]),
                                                         "sizes": np.array([2]), "predictions": np.zeros((2, 1))})


def test_error_consistency_items_recompute_the_score_and_its_image_bootstrap():
    import xarray as xr

    from cortexbox.benchmarks.metrics import ErrorConsistency

    rng = np.random.default_rng(0)
    n = 40
    ids = np.array([f"img{i:02d}" for i in range(n)], dtype=object)
    truth = rng.choice(["a", "b"], size=n).astype(object)
    conditions = np.array(["c1", "c2"] * (n // 2), dtype=object)

    def answers(p_correct):
        return np.where(rng.random(n) < p_correct, truth, np.where(truth == "a", "b", "a")).astype(object)

    def trials(values, **coords):
        return xr.DataArray(values, dims=("presentation",),
                            coords={k: ("presentation", np.asarray(v, dtype=object)) for k, v in coords.items()})

    model = trials(answers(0.7), stimulus_id=ids, truth=truth, condition=conditions)
    human = xr.concat([trials(answers(0.6), stimulus_id=ids, truth=truth, condition=conditions, subject=[s] * n)
                       for s in ("x", "y", "z")], "presentation")
    metric = ErrorConsistency(n_boot=50, seed=3)
    score = metric(model, human)
    items = score.items
    assert items.kind == "error_consistency" and items.n_items == n and items.estimate() == pytest.approx(score.raw, abs=1e-12)
    counts = multinomial_counts(np.random.default_rng(3), n, 50)  # the metric's own draw
    assert items.replicates(counts) == pytest.approx(score.bootstrap_samples, abs=1e-12, nan_ok=True)
    back = ItemValues.from_bytes("error_consistency", items.to_bytes())
    assert back.estimate() == pytest.approx(score.raw, abs=1e-12)


def test_predictions_are_halved_only_where_float16_holds_them():
    from cortexbox.benchmarks.metrics.items import predictivity_items

    target = np.random.default_rng(0).normal(size=(4, 2))
    rows = np.array([0, 1, 2, 3])
    assert predictivity_items(list("abcd"), target, [(rows, target * 3)]).arrays["predictions"].dtype == np.float16
    huge = predictivity_items(list("abcd"), target, [(rows, target * 1e6)])  # past float16's range
    wide = predictivity_items(list("abcd"), target, [(rows, np.c_[target[:, 0] * 1e-7, target[:, 1] * 10])])
    assert huge.arrays["predictions"].dtype == wide.arrays["predictions"].dtype == np.float32


def test_a_mean_over_sessions_keeps_every_sessions_items():
    from cortexbox.benchmarks.metrics.items import mean_of_items

    metric = CrossRegressedCorrelation("pls", n_components=5, n_boot=0)
    parts = []
    for seed, prefix in ((0, "s1/"), (1, "s2/")):
        source, target = _assemblies(seed=seed, n=60 + 20 * seed)
        ids = [prefix + str(i) for i in target.stimulus_id.values]
        source, target = source.assign_coords(stimulus_id=("presentation", ids)), target.assign_coords(stimulus_id=("presentation", ids))
        parts.append(metric(source, target, bootstrap=True))
    items = mean_of_items([p.items for p in parts])
    back = ItemValues.from_bytes("mean_of", items.to_bytes())
    assert back.n_items == 140 and back.estimate() == pytest.approx(np.mean([p.raw for p in parts]), abs=1e-4)
    w = multinomial_counts(np.random.default_rng(0), 140, 4)
    expected = (parts[0].items.replicates(w[:, :60]) + parts[1].items.replicates(w[:, 60:])) / 2
    assert back.replicates(w) == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match="unique"):
        mean_of_items([parts[0].items, parts[0].items])
