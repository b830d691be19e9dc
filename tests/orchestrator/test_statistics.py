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
