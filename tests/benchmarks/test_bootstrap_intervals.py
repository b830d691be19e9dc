"""Bootstrap intervals computed at scoring time: coverage by simulation on data with a known population value, a
check that a wrong interval falls outside the band (so the band can fail), seeds, and the stored score.

Coverage band: 0.88-0.99 for a nominal 95% interval. Each simulation draws fresh data from a population whose value
is known (analytically, or from one very large sample), computes the interval as the benchmark does, and counts how
often it holds the population value.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import xarray as xr
from scipy.signal import lfilter
from sklearn.model_selection import ShuffleSplit

from cortexbox.benchmarks.metrics import Accuracy, CrossRegressedCorrelation
from cortexbox.benchmarks.metrics.bootstrap import (
    block_counts,
    multinomial_counts,
    percentile_interval,
    predictivity_bootstrap,
    rdm_bootstrap,
    weighted_pearson,
)
from cortexbox.benchmarks.metrics.normalization import explained_variance
from cortexbox.benchmarks.metrics.rsa import rdm, rdm_similarity
from cortexbox.benchmarks.score import Score
from cortexbox.orchestrator.statistics import score_interval

BAND = (0.88, 0.99)


def _coverage(results, truth, shrink: float = 1.0) -> float:
    """Share of (low, high, estimate) intervals holding ``truth``; ``shrink`` < 1 narrows them around the estimate
    (a deliberately wrong interval)."""
    hits = [e - shrink * (e - lo) <= truth <= e + shrink * (hi - e) for lo, hi, e in results]
    return float(np.mean(hits))


# -- regression predictivity ---------------------------------------------------------------------------------------------
def _predictivity_rep(rng, splits, n, k, *, neuroids=True):
    """Targets y_j = s + sigma_j e_j with the fitted mapping's prediction s: r_j's population value is
    rho_j = 1 / sqrt(1 + sigma_j^2), and rho_j ~ Uniform(0.3, 0.7) over the population of neuroids, whose median
    (the score's population value) is 0.5."""
    s = rng.normal(size=(n, 1))
    rho = rng.uniform(0.3, 0.7, size=k)
    y = s + np.sqrt(1 / rho**2 - 1) * rng.normal(size=(n, k))
    prediction = np.repeat(s, k, axis=1)
    held_out = [(test, y[test], prediction[test]) for _, test in splits]
    samples = predictivity_bootstrap(held_out, n, n_boot=200, seed=int(rng.integers(2**31)), resample_neuroids=neuroids)
    estimate = np.mean([np.median(weighted_pearson(np.ones((1, len(t))), yt, pt)) for t, yt, pt in held_out])
    return (*percentile_interval(samples), estimate)


def test_predictivity_bootstrap_covers_the_population_score():
    n, k = 300, 30
    splits = list(ShuffleSplit(10, train_size=0.9, random_state=1).split(np.zeros(n)))  # Brain-Score's splits
    rng = np.random.default_rng(0)
    results = [_predictivity_rep(rng, splits, n, k) for _ in range(200)]
    coverage = _coverage(results, 0.5)
    assert BAND[0] <= coverage <= BAND[1], coverage
    # the band can fail: an interval of half the width, or one that ignores the neuroids' sampling, falls outside it
    assert _coverage(results, 0.5, shrink=0.5) < BAND[0]
    stimuli_only = [_predictivity_rep(rng, splits, n, k, neuroids=False) for _ in range(100)]
    assert _coverage(stimuli_only, 0.5) < BAND[0]


# -- RDMs ----------------------------------------------------------------------------------------------------------------
def _conditions(rng, m, d=8, subjects=2, noise=1.0):
    """Conditions with latent features z; a model sees z, each subject z + condition-level noise."""
    z = rng.normal(size=(m, d))
    return z, [z + noise * rng.normal(size=(m, d)) for _ in range(subjects)]


def test_rdm_stimulus_bootstrap_covers_the_population_correlation():
    rng = np.random.default_rng(1)
    z, subjects = _conditions(rng, 2000, subjects=1)
    upper = np.triu_indices(2000, k=1)
    truth = scipy.stats.spearmanr(rdm(z)[upper], rdm(subjects[0])[upper])[0]  # the population's value (~0.45)
    results = []
    for _ in range(150):
        z, subjects = _conditions(rng, 50)
        model, targets = rdm(z), np.stack([rdm(t) for t in subjects])
        samples = rdm_bootstrap(model, targets, rng=np.random.default_rng(int(rng.integers(2**31))), n_boot=200)
        results.append((*percentile_interval(samples), np.mean([rdm_similarity(model, t) for t in targets])))
    coverage = _coverage(results, truth)
    assert BAND[0] <= coverage <= BAND[1], coverage
    assert _coverage(results, truth, shrink=0.5) < BAND[0]


def test_rdm_bootstrap_replicate_equals_the_resampled_rdms_without_self_pairs():
    rng = np.random.default_rng(2)
    model = rdm(rng.normal(size=(15, 6)))
    target = np.round(rdm(rng.normal(size=(15, 6))), 1)  # ties, ranked with average ranks
    replicate = rdm_bootstrap(model, target[None], rng=np.random.default_rng(9), n_boot=1)[0]
    counts = multinomial_counts(np.random.default_rng(9), 15, 1)[0].astype(int)
    index = np.repeat(np.arange(15), counts)
    i, j = np.triu_indices(len(index), k=1)
    keep = index[i] != index[j]  # Nili et al. 2014: a condition's pairs with its own copy are left out
    a, b = index[i[keep]], index[j[keep]]
    assert replicate == pytest.approx(scipy.stats.spearmanr(model[a, b], target[a, b])[0], abs=1e-12)


# -- language: moving blocks of an autocorrelated series ------------------------------------------------------------------
def test_block_bootstrap_covers_a_correlation_of_autocorrelated_series_where_single_rows_do_not():
    """x_t, y_t AR(1) (phi 0.6) with innovations correlated 0.4: corr(x_t, y_t) = 0.4 (as reading times and
    surprisal along a story, or a fMRI time course and its prediction)."""
    rng = np.random.default_rng(3)
    blocks, rows = [], []
    for _ in range(200):
        e = rng.multivariate_normal([0, 0], [[1, 0.4], [0.4, 1]], size=500)
        xy = lfilter([1], [1, -0.6], e, axis=0)
        x, y = xy[:, :1], xy[:, 1:]
        estimate = float(np.corrcoef(x[:, 0], y[:, 0])[0, 1])
        blocks.append((*percentile_interval(weighted_pearson(block_counts(rng, 500, 20, 200), x, y)[:, 0]), estimate))
        rows.append((*percentile_interval(weighted_pearson(multinomial_counts(rng, 500, 200), x, y)[:, 0]), estimate))
    assert BAND[0] <= _coverage(blocks, 0.4) <= BAND[1], _coverage(blocks, 0.4)
    assert _coverage(rows, 0.4) < BAND[0]  # resampling single rows ignores the autocorrelation: too narrow


# -- behaviour -------------------------------------------------------------------------------------------------------------
def _labels(values, ids, **coords):
    return xr.DataArray(np.asarray(values, dtype=object), dims=("presentation",),
                        coords={"stimulus_id": ("presentation", ids), **{k: ("presentation", v) for k, v in coords.items()}})


def test_accuracy_bootstrap_covers_the_true_rate():
    rng = np.random.default_rng(4)
    ids = np.array([f"im{i}" for i in range(160)], dtype=object)
    truth = _labels(["a"] * 160, ids)
    results = []
    for seed in range(200):
        answers = np.where(rng.random(160) < 0.7, "a", "b")
        score = Accuracy(n_boot=300, seed=seed)(_labels(answers, ids), truth)
        interval = score.attrs["bootstrap"]["raw"]
        results.append((interval["low"], interval["high"], score.raw))
    assert BAND[0] <= _coverage(results, 0.7) <= BAND[1], _coverage(results, 0.7)
    assert _coverage(results, 0.7, shrink=0.5) < BAND[0]


# -- seeds, records, the stored score ---------------------------------------------------------------------------------------
def _assemblies(seed=0, n=120, k=12, features=40):
    rng = np.random.default_rng(seed)
    ids = np.array([f"s{i:03d}" for i in range(n)], dtype=object)
    latent = rng.normal(size=(n, 5))
    target = latent @ rng.normal(size=(5, k)) + rng.normal(size=(n, k))
    source = latent @ rng.normal(size=(5, features)) + 0.5 * rng.normal(size=(n, features))

    def assembly(values, prefix):
        return xr.DataArray(values, dims=("presentation", "neuroid"), coords={
            "stimulus_id": ("presentation", ids), "neuroid_id": ("neuroid", [f"{prefix}{j}" for j in range(values.shape[1])])})

    return assembly(source, "f"), assembly(target, "n")


def test_the_seed_is_recorded_and_reproduces_the_interval():
    source, target = _assemblies()
    a = CrossRegressedCorrelation("ridge", n_boot=300, seed=3)(source, target)
    b = CrossRegressedCorrelation("ridge", n_boot=300, seed=3)(source, target)
    c = CrossRegressedCorrelation("ridge", n_boot=300, seed=4)(source, target)
    record = a.attrs["bootstrap"]
    assert record == b.attrs["bootstrap"] and np.array_equal(a.bootstrap_samples, b.bootstrap_samples)
    assert record["seed"] == 3 and record["n_boot"] == 300 and record["level"] == 0.95
    assert record["resampled"] == ["stimuli", "neuroids"] and "no refitting" in record["method"]
    assert record["raw"]["low"] < a.raw < record["raw"]["high"]
    assert c.attrs["bootstrap"]["raw"] != record["raw"] and c.raw == a.raw  # the seed moves only the interval
    assert "bootstrap" not in CrossRegressedCorrelation("ridge")(source, target, bootstrap=False).attrs


def test_the_interval_maps_through_the_ceiling():
    source, target = _assemblies()
    raw = CrossRegressedCorrelation("ridge", n_boot=300)(source, target)
    ceiling = Score(raw=0.8, error=0.01)
    ceiled = explained_variance(raw, ceiling, regime="r2_over_ceiling").attrs["bootstrap"]["ceiled"]
    lo, hi = raw.attrs["bootstrap"]["raw"]["low"], raw.attrs["bootstrap"]["raw"]["high"]
    assert 0 < lo and ceiled["low"] == pytest.approx(lo**2 / 0.8) and ceiled["high"] == pytest.approx(hi**2 / 0.8)
    clipped = explained_variance(raw, Score(raw=raw.raw * 0.9, error=0.0), regime="raw_over_ceiling_clipped")
    assert clipped.ceiled == 1.0 and clipped.attrs["bootstrap"]["ceiled"]["high"] == 1.0
    around_zero = Score(raw=0.01, error=0.0, attrs={"bootstrap": {**raw.attrs["bootstrap"], "raw": {
        "low": -0.05, "high": 0.06, "estimate": 0.01, "se": 0.03}}})
    assert explained_variance(around_zero, ceiling).attrs["bootstrap"]["ceiled"]["low"] == 0.0


def test_the_stored_score_carries_the_interval_and_shows_it(tmp_path):
    """The storage path of ``score_model``: ``provenance["metric"]`` is the benchmark score's ``attrs``."""
    from cortexbox.registry import Registry

    source, target = _assemblies()
    score = explained_variance(CrossRegressedCorrelation("ridge", n_boot=300, seed=5)(source, target),
                               Score(raw=0.8, error=0.01), regime="r2_over_ceiling")
    registry = Registry(f"sqlite:///{tmp_path / 'r.db'}")
    model = registry.upsert_model("sha256:" + "1" * 64, "m", "1", "m:1", {})
    bench = registry.upsert_benchmark("Synthetic-ridge", 1, "0" * 64, region="V4", description="", citation="",
                                      ceiling=0.8, ceiling_error=0.01, definition={"source": "builtin"})
    run = registry.start_run("m:1", "Synthetic-ridge")
    for provenance in ({"metric": score.attrs}, {"metric": {k: v for k, v in score.attrs.items() if k != "bootstrap"}}):
        registry.add_score(run_id=run.id, model_id=model.id, benchmark_id=bench.id, raw=score.raw, error=score.error,
                           ceiling=score.ceiling, ceiled=score.ceiled, layer="l", values=list(score.values),
                           provenance=provenance)
    (new, _, _), (old, _, _) = sorted(registry.scores(), key=lambda row: row[0].id)
    stored = new.provenance["metric"]["bootstrap"]
    assert stored["seed"] == 5 and stored["n_boot"] == 300 and stored["resampled"] == ["stimuli", "neuroids"]
    shown = score_interval(new)
    assert shown["raw"]["method"].startswith("bootstrap over stimuli and neuroids")
    assert shown["raw"]["low"] == stored["raw"]["low"] and shown["ceiled"]["high"] == stored["ceiled"]["high"]
    assert shown["raw"]["seed"] == 5 and shown["ceiled"]["estimate"] == score.ceiled
    assert score_interval(old)["raw"]["method"].startswith("corrected resampled t")  # older scores: the fallback
