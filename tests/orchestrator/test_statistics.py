"""Intervals and comparisons: coverage and error rates on synthetic data with a known truth, plus exact cases."""

from __future__ import annotations

from types import SimpleNamespace as Row

import numpy as np
import pytest
from sklearn.model_selection import ShuffleSplit

from cortexbox.orchestrator.statistics import (
    bootstrap_interval,
    bootstrap_neuroids,
    compare_aggregate,
    compare_values,
    corrected_t_interval,
    score_interval,
    weighted_interval,
)

SPLITS = ShuffleSplit(10, train_size=0.9, random_state=1)  # Brain-Score's splits


def _cv_loss(y: np.ndarray) -> list[float]:
    """Per-split test loss of the train-set mean as predictor: its expectation over data sets is known,
    sigma^2 (1 + 1/n_train), and the split values overlap exactly as a benchmark's do."""
    return [float(np.mean((y[te] - y[tr].mean()) ** 2)) for tr, te in SPLITS.split(y)]


def test_corrected_interval_covers_the_truth_and_the_naive_one_does_not():
    rng = np.random.default_rng(0)
    truth = 1.0 * (1 + 1 / 90)
    reps = 1000
    corrected = naive = 0
    for _ in range(reps):
        values = _cv_loss(rng.normal(0, 1, 100))
        c = corrected_t_interval(values)
        u = corrected_t_interval(values, test_over_train=None)
        corrected += c.low <= truth <= c.high
        naive += u.low <= truth <= u.high
    assert 0.92 <= corrected / reps <= 0.98, corrected / reps
    assert naive / reps < 0.88, naive / reps  # overlapping splits: the textbook interval is too narrow


def test_plain_t_interval_covers_for_independent_values():
    rng = np.random.default_rng(1)
    hits = sum(
        (i := corrected_t_interval(rng.normal(0.3, 0.05, 10), test_over_train=None)).low <= 0.3 <= i.high
        for _ in range(2000)
    )
    assert 0.935 <= hits / 2000 <= 0.965


def _two_models(rng, effect: float) -> tuple[list[float], list[float]]:
    """Per-split test correlations of two one-feature linear models; equally good when effect == 0."""
    x = rng.normal(size=(100, 2))
    y = (1 + effect) * x[:, 0] + x[:, 1] + rng.normal(size=100)
    a, b = [], []
    for tr, te in SPLITS.split(y):
        for k, out in ((0, a), (1, b)):
            coef = np.polyfit(x[tr, k], y[tr], 1)
            out.append(float(np.corrcoef(np.polyval(coef, x[te, k]), y[te])[0, 1]))
    return a, b


def test_paired_test_holds_its_level_under_the_null_and_has_power():
    rng = np.random.default_rng(2)
    null = [_two_models(rng, 0.0) for _ in range(300)]
    rejections = np.mean([compare_values(a, b).p_value < 0.05 for a, b in null])
    naive = np.mean([compare_values(a, b, test_over_train=0).p_value < 0.05 for a, b in null])
    assert rejections <= 0.08, rejections
    assert naive > rejections  # the uncorrected test rejects too often
    alt = [_two_models(rng, 1.0) for _ in range(100)]
    power = np.mean([compare_values(a, b).p_value < 0.05 for a, b in alt])
    assert power > 0.5, power
    c = compare_values(*alt[0])
    assert c.difference > 0 and c.cohens_dz > 0 and c.interval.low < c.difference < c.interval.high


def test_comparison_of_identical_models_and_exact_values():
    same = compare_values([0.5] * 10, [0.5] * 10)
    assert same.difference == 0 and same.p_value == 1.0 and not same.significant
    d = np.array([0.02, 0.03, 0.01, 0.04, 0.02, 0.03, 0.02, 0.05, 0.01, 0.02])
    c = compare_values(list(0.5 + d), [0.5] * 10)
    se = np.sqrt((1 / 10 + 0.1 / 0.9) * d.var(ddof=1))
    assert c.t == pytest.approx(d.mean() / se)
    assert c.cohens_dz == pytest.approx(d.mean() / d.std(ddof=1))
    assert c.p_sign_flip == pytest.approx(2 / 1024)  # all ten differences positive: only the all-+/all-- flips
    with pytest.raises(ValueError, match="paired"):
        compare_values([1, 2], [1, 2, 3])


def test_bootstrap_records_its_seed_and_reproduces():
    values = np.random.default_rng(3).normal(0.4, 0.02, 10)
    a, b = bootstrap_interval(values, seed=7), bootstrap_interval(values, seed=7)
    assert a == b and a.seed == 7 and a.low < values.mean() < a.high
    neuroids = np.random.default_rng(4).normal(0.5, 0.2, size=(10, 80))
    n = bootstrap_neuroids(neuroids, seed=5, n_boot=300)
    assert n.seed == 5 and n.low < n.estimate < n.high


def test_score_interval_maps_through_the_ceiling():
    values = [0.50, 0.52, 0.48, 0.51, 0.49, 0.50, 0.53, 0.47, 0.50, 0.50]
    row = Row(values=values, raw=float(np.mean(values)), ceiling=0.8, ceiled=float(np.mean(values)) ** 2 / 0.8,
              provenance={"metric": {"normalization": "r2_over_ceiling", "train_size": 0.9}})
    out = score_interval(row)
    raw, ceiled = out["raw"], out["ceiled"]
    assert raw["low"] < row.raw < raw["high"]
    assert ceiled["low"] == pytest.approx(raw["low"] ** 2 / 0.8) and ceiled["high"] == pytest.approx(raw["high"] ** 2 / 0.8)
    assert ceiled["se"] == pytest.approx(2 * row.raw / 0.8 * raw["se"], rel=1e-4)
    # a raw interval around 0 maps to [0, max] under r^2 / c
    around_zero = Row(values=[-0.02, 0.03, 0.01, -0.01, 0.0, 0.02, -0.03, 0.01, 0.0, 0.01], raw=0.002, ceiling=0.5,
                      ceiled=0.002**2 / 0.5, provenance={"metric": {"normalization": "r2_over_ceiling"}})
    assert score_interval(around_zero)["ceiled"]["low"] == 0.0
    assert score_interval(Row(values=[0.4], raw=0.4, ceiling=None, ceiled=None, provenance={})) is None


def test_aggregate_comparison_weights_shared_leaves_and_reports_the_rest():
    weights = {"a": 0.25, "b": 0.25, "c": 0.5}
    a = {"a": [0.6] * 5 + [0.7] * 5, "b": [0.5] * 10, "c": [0.9] * 10}
    b = {"a": [0.5] * 10, "b": [1.2] * 10}  # b's values above 1 are clipped as in the aggregate
    comparison, shared, left_out = compare_aggregate(weights, a, b)
    assert shared == ["a", "b"] and left_out == ["c"]
    # per split: 0.25 * (a_a - 0.5) + 0.25 * (0.5 - 1.0)
    assert comparison.difference == pytest.approx(0.25 * 0.15 - 0.125)
    assert compare_aggregate(weights, {"c": [0.1] * 10}, {"a": [0.1] * 10})[0] is None


def test_weighted_interval_of_independent_parts():
    i = weighted_interval([(0.5, 0.4, 0.02), (0.5, 0.6, 0.04)])
    assert i.estimate == pytest.approx(0.5)
    assert i.se == pytest.approx(np.sqrt(0.01**2 + 0.02**2))
    assert weighted_interval([(1.0, 0.4, None)]) is None


# -- paired bootstrap over stored items ------------------------------------------------------------------------------
def _predictivity_scores():
    """Two models' PLS scores on one synthetic recording (120 stimuli, 12 neuroids): per-stimulus items."""
    from cortexbox.benchmarks.metrics import CrossRegressedCorrelation
    from tests.benchmarks.test_bootstrap_intervals import _assemblies

    source_a, target = _assemblies(seed=0)
    source_b, _ = _assemblies(seed=1)  # another model: features of other latents, same stimuli
    source_b = source_b.assign_coords(stimulus_id=source_a.stimulus_id)
    metric = CrossRegressedCorrelation("pls", n_components=5, n_boot=0)
    return metric(source_a, target, bootstrap=True), metric(source_b, target, bootstrap=True)


def _permuted(items, rng):
    """The same items stored in another order (ids, recording rows and held-out rows moved together)."""
    from cortexbox.benchmarks.metrics.items import ItemValues

    p = rng.permutation(items.n_items)
    inverse = np.argsort(p)
    a = dict(items.arrays)
    if items.kind == "predictivity":
        a["target"], a["rows"] = a["target"][p], inverse[a["rows"]].astype(a["rows"].dtype)
    else:
        a["values"] = a["values"][p]
    return ItemValues(items.kind, items.ids[p], a)


def test_paired_item_bootstrap_gives_both_models_the_same_stimuli(monkeypatch):
    """The resampler instrumented: every replicate weights each stimulus id the same for both models, even with
    one model's items stored in another order; the order changes nothing."""
    from cortexbox.benchmarks.metrics.items import ItemValues
    from cortexbox.orchestrator.statistics import ItemSide, compare_items

    a, b = _predictivity_scores()
    b_shuffled = _permuted(b.items, np.random.default_rng(3))
    assert list(b_shuffled.ids) != list(b.items.ids)
    calls = []
    original = ItemValues.replicates

    def recording(self, weights):
        calls.append({i: weights[:, k] for k, i in enumerate(self.ids)})
        return original(self, weights)

    monkeypatch.setattr(ItemValues, "replicates", recording)
    shuffled = compare_items(ItemSide(a.items), ItemSide(b_shuffled), n_boot=300, seed=4)
    resampled = calls[2:]  # after the two observed (all items once) evaluations
    assert len(resampled) == 2
    weights_a, weights_b = resampled
    assert set(weights_a) == set(weights_b) and len(weights_a) == 120
    assert all(np.array_equal(weights_a[i], weights_b[i]) for i in weights_a)  # the same stimuli, id by id
    counts = np.array([weights_a[i] for i in sorted(weights_a)])
    assert (counts.sum(axis=0) == 120).all() and counts.std() > 0  # a real resample of all 120, not the identity
    monkeypatch.setattr(ItemValues, "replicates", original)
    ordered = compare_items(ItemSide(a.items), ItemSide(b.items), n_boot=300, seed=4)
    assert ordered.difference == pytest.approx(shuffled.difference, abs=1e-12)
    assert ordered.interval.low == pytest.approx(shuffled.interval.low, abs=1e-12)
    assert ordered.interval.high == pytest.approx(shuffled.interval.high, abs=1e-12)
    assert ordered.p_value == shuffled.p_value and ordered.basis == "items" and ordered.seed == 4
    assert ordered.difference == pytest.approx(a.raw - b.raw, abs=1e-4)  # the stored scores' difference


def test_identical_items_differ_by_exactly_zero_in_every_resample(monkeypatch):
    from cortexbox.orchestrator import statistics
    from cortexbox.orchestrator.statistics import ItemSide, compare_items

    a, _ = _predictivity_scores()
    seen = []
    original = statistics._bootstrap_comparison

    def recording(observed, diffs, **kwargs):
        seen.append(diffs.copy())
        return original(observed, diffs, **kwargs)

    monkeypatch.setattr(statistics, "_bootstrap_comparison", recording)
    same = compare_items(ItemSide(a.items, 0.6, "r2_over_ceiling"), ItemSide(a.items, 0.6, "r2_over_ceiling"), n_boot=200)
    assert len(seen[0]) == 200 and (seen[0] == 0).all()
    assert same.difference == 0 and same.interval.low == same.interval.high == 0 and same.p_value == 1.0
    reordered = compare_items(ItemSide(a.items), ItemSide(_permuted(a.items, np.random.default_rng(1))), n_boot=200)
    assert np.abs(seen[1]).max() < 1e-12 and not reordered.significant


def test_paired_item_bootstrap_holds_its_level_and_pairing_gives_power():
    """Items with a shared difficulty: under the null (same expected value) p < 0.05 about 5% of the time; with a
    small true difference the paired interval excludes 0 while the two models' own intervals overlap."""
    from cortexbox.benchmarks.metrics.bootstrap import percentile_interval, resampled_means
    from cortexbox.benchmarks.metrics.items import mean_items
    from cortexbox.orchestrator.statistics import ItemSide, compare_items

    rng = np.random.default_rng(0)
    ids = [f"w{i}" for i in range(200)]
    rejections = 0
    reps = 200
    for _ in range(reps):
        difficulty = rng.normal(size=200)
        a, b = difficulty + 0.3 * rng.normal(size=200), difficulty + 0.3 * rng.normal(size=200)
        rejections += compare_items(ItemSide(mean_items(ids, a)), ItemSide(mean_items(ids, b)), n_boot=400,
                                    seed=int(rng.integers(2**31))).p_value < 0.05
    assert 0.01 <= rejections / reps <= 0.10
    difficulty = rng.normal(size=200)
    a, b = difficulty + 0.1 + 0.3 * rng.normal(size=200), difficulty + 0.3 * rng.normal(size=200)
    paired = compare_items(ItemSide(mean_items(ids, a)), ItemSide(mean_items(ids, b)), n_boot=1000)
    assert paired.interval.low > 0 and paired.p_value < 0.01
    own_a = percentile_interval(resampled_means(np.random.default_rng(1), a))
    own_b = percentile_interval(resampled_means(np.random.default_rng(2), b))
    assert own_a[0] < own_b[1]  # unpaired, the two scores' intervals overlap


def test_items_align_by_id_on_the_intersection_and_refuse_without_one():
    from cortexbox.benchmarks.metrics.items import mean_items
    from cortexbox.orchestrator.statistics import ItemSide, ItemsMismatch, compare_items

    a = mean_items(["x", "y", "z", "extra"], [1.0, 2.0, 3.0, 100.0])
    b = mean_items(["z", "y", "x"], [3.0, 2.0, 1.0])
    c = compare_items(ItemSide(a), ItemSide(b), n_boot=100)
    assert c.difference == 0 and c.n_items == 3 and c.items_left_out == {"only_a": 1, "only_b": 0}
    with pytest.raises(ItemsMismatch, match="share 1 item ids"):
        compare_items(ItemSide(a), ItemSide(mean_items(["x", "q"], [1.0, 2.0])))


def test_aggregate_item_bootstrap_resamples_each_leaf_and_weights_clipped_differences():
    from cortexbox.benchmarks.metrics.items import mean_items
    from cortexbox.orchestrator.statistics import ItemSide, compare_items_aggregate

    ids = [f"s{i}" for i in range(50)]
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.6, size=50)
    a = {"V4": ItemSide(mean_items(ids, base + 0.1)), "IT": ItemSide(mean_items(ids, base)),
         "only-a": ItemSide(mean_items(ids, base))}
    b = {"V4": ItemSide(mean_items(ids, base)), "IT": ItemSide(mean_items(ids, base))}
    weights = {"V4": 0.25, "IT": 0.25, "only-a": 0.5}
    c, shared, left_out = compare_items_aggregate(weights, a, b, n_boot=300, seed=2)
    assert shared == ["IT", "V4"] and left_out == ["only-a"]
    assert c.basis == "items" and c.n_items == 100 and c.seed == 2
    assert c.difference == pytest.approx(0.25 * 0.1, abs=1e-6)  # float32 storage
    assert c.interval.low == pytest.approx(0.025, abs=1e-6) and c.interval.high == pytest.approx(0.025, abs=1e-6)
    clipped = {"V4": ItemSide(mean_items(ids, base + 5.0)), "IT": a["IT"]}  # a ceiled value above 1 counts as 1
    c2, _, _ = compare_items_aggregate(weights, clipped, b, n_boot=50)
    assert c2.difference == pytest.approx(0.25 * (1 - base.mean()), abs=1e-6)
    assert compare_items_aggregate(weights, {}, b)[0] is None


def test_rdm_pairs_share_the_subjects_ranks_and_give_the_same_replicates(monkeypatch):
    from cortexbox.benchmarks.metrics.items import rdm_items
    from cortexbox.benchmarks.metrics.rsa import rdm
    from cortexbox.orchestrator import statistics
    from cortexbox.orchestrator.statistics import ItemSide, PairedReplicates

    rng = np.random.default_rng(0)
    latent = rng.normal(size=(25, 10))
    subjects = np.stack([rdm(latent + rng.normal(size=latent.shape)) for _ in range(3)])
    ids = [f"c{i}" for i in range(25)]
    a = ItemSide(rdm_items(ids, rdm(latent + 0.5 * rng.normal(size=latent.shape)), subjects), 0.7, "r_over_ceiling")
    b = ItemSide(rdm_items(ids, rdm(rng.normal(size=latent.shape)), subjects), 0.7, "r_over_ceiling")
    shared = PairedReplicates(a, b, n_boot=200, seed=1)
    monkeypatch.setattr(statistics, "_same_rdm_subjects", lambda *args: False)
    separate = PairedReplicates(a, b, n_boot=200, seed=1)
    assert shared.a == pytest.approx(separate.a, abs=1e-12) and shared.b == pytest.approx(separate.b, abs=1e-12)
    assert shared.a.std() > 0 and (shared.a > shared.b).mean() > 0.9
