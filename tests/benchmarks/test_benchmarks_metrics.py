"""Metric tests on synthetic data: PLS projection, parity with Brain-Score's loop, Pearson, ceiling, normalisation."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.stats
import xarray as xr
from sklearn.cross_decomposition import PLSRegression
from sklearn.model_selection import ShuffleSplit

from cortexbox.benchmarks import Score, average_repetition, neuroid_assembly
from cortexbox.benchmarks.metrics import (
    CrossRegressedCorrelation,
    InternalConsistency,
    aggregate_splits,
    cross_regressed_correlation,
    explained_variance,
    fit_predict_pls,
    pearson_r_score,
    row_space_coordinates,
    spearman_brown,
)


def _synthetic(n_stimuli: int, n_features: int, n_neuroids: int, seed: int = 0):
    """Features with a low-rank signal shared with the responses, plus noise (ReLU-like, non-zero mean)."""
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((n_stimuli, 8))
    signal = latent @ rng.standard_normal((8, n_features))
    features = np.maximum(signal + rng.standard_normal((n_stimuli, n_features)), 0)
    responses = latent @ rng.standard_normal((8, n_neuroids)) + 2.0 * rng.standard_normal((n_stimuli, n_neuroids))
    ids = np.array([f"s{i:04d}" for i in range(n_stimuli)], dtype=object)
    return features.astype(np.float32), responses, ids


def _target_assembly(responses: np.ndarray, ids: np.ndarray) -> xr.DataArray:
    return xr.DataArray(
        responses,
        dims=("presentation", "neuroid"),
        coords={
            "stimulus_id": ("presentation", ids),
            "neuroid_id": ("neuroid", np.array([f"n{j}" for j in range(responses.shape[1])], dtype=object)),
        },
    )


def brainscore_pls_reference(features, responses, ids, *, n_components=25, n_splits=10, random_state=1):
    """Brain-Score's CrossRegressedCorrelation(pls) written out with sklearn and scipy, one loop per level."""
    splitter = ShuffleSplit(n_splits=n_splits, train_size=0.9, test_size=None, random_state=random_state)
    per_split = []
    for train, test in splitter.split(np.zeros(len(ids))):
        train = train[np.argsort(ids[train])]  # XarrayRegression.fit sorts by stimulus_id
        regression = PLSRegression(n_components=n_components, scale=False)
        regression.fit(features[train], responses[train])
        prediction = regression.predict(features[test])
        test_order = np.argsort(ids[test])  # XarrayCorrelation sorts by stimulus_id
        rs = [
            scipy.stats.pearsonr(responses[test][test_order, j], prediction[test_order, j])[0]
            for j in range(responses.shape[1])
        ]
        per_split.append(np.median(rs))
    per_split = np.array(per_split)
    return per_split.mean(), per_split.std(ddof=0) / math.sqrt(n_splits), per_split


# --- projection -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["c_float32", "f_float64"])
def test_pls_on_row_space_coordinates_equals_plain_pls(layout):
    features, responses, _ = _synthetic(n_stimuli=80, n_features=700, n_neuroids=6)
    if layout == "f_float64":
        features = np.asfortranarray(features.astype(np.float64))
    coordinates = row_space_coordinates(features, block_size=64)  # several blocks
    assert coordinates.shape == (80, 79)  # centred rows span n - 1 dims
    splitter = ShuffleSplit(n_splits=5, train_size=0.9, test_size=None, random_state=1)
    for train, test in splitter.split(np.zeros(80)):
        plain = fit_predict_pls(features[train], responses[train], features[test], n_components=10)
        projected = fit_predict_pls(coordinates[train], responses[train], coordinates[test], n_components=10)
        np.testing.assert_allclose(projected, plain, rtol=0, atol=1e-6)
        assert np.abs(projected - plain).max() < 1e-6 * np.abs(plain).max()


def test_row_space_coordinates_preserve_centred_inner_products():
    features, _, _ = _synthetic(n_stimuli=30, n_features=200, n_neuroids=2)
    centred = features.astype(np.float64) - features.astype(np.float64).mean(0)
    coordinates = row_space_coordinates(features, block_size=50)
    np.testing.assert_allclose(coordinates @ coordinates.T, centred @ centred.T, atol=1e-8)


def test_projected_and_plain_cross_validation_agree():
    features, responses, ids = _synthetic(n_stimuli=90, n_features=400, n_neuroids=7, seed=3)
    plain, info_plain = cross_regressed_correlation(features, responses, ids, n_components=25, project=False)
    projected, info_projected = cross_regressed_correlation(features, responses, ids, n_components=25, project=True)
    assert not info_plain["projected"] and info_projected["projected"]
    np.testing.assert_allclose(projected, plain, atol=1e-6)


# --- parity with Brain-Score's loop -------------------------------------------------------------------------------


@pytest.mark.parametrize("n_features", [40, 600])  # without and with the projection
def test_pls_metric_matches_brainscore_loop(n_features):
    features, responses, ids = _synthetic(n_stimuli=120, n_features=n_features, n_neuroids=9, seed=n_features)
    center, error, per_split = brainscore_pls_reference(features, responses, ids)
    # the model's rows arrive in another order and must be realigned by stimulus_id
    shuffle = np.random.default_rng(7).permutation(len(ids))
    source = neuroid_assembly(features[shuffle], ids[shuffle], layer="fc", model="m")
    score = CrossRegressedCorrelation()(source, _target_assembly(responses, ids))
    assert score.attrs["projected"] == (n_features > 120)
    assert score.raw == pytest.approx(center, abs=1e-9)
    assert score.error == pytest.approx(error, abs=1e-9)
    np.testing.assert_allclose(score.values, per_split, atol=1e-9)
    assert 0.2 < score.raw < 0.95  # the synthetic signal is found, not perfectly


def test_pls_metric_is_deterministic_and_does_not_mutate_inputs():
    features, responses, ids = _synthetic(n_stimuli=60, n_features=30, n_neuroids=4)
    source, target = neuroid_assembly(features, ids, layer="l"), _target_assembly(responses, ids)
    before = (source.values.copy(), target.values.copy())
    first, second = CrossRegressedCorrelation()(source, target), CrossRegressedCorrelation()(source, target)
    assert first.raw == second.raw and first.values == second.values
    np.testing.assert_array_equal(source.values, before[0])
    np.testing.assert_array_equal(target.values, before[1])


# --- pieces -------------------------------------------------------------------------------------------------------


def test_pearson_matches_scipy_and_gives_nan_for_constant_columns():
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.standard_normal((50, 5)), rng.standard_normal((50, 5))
    y_pred[:, 1] += 3 * y_true[:, 1]
    expected = [scipy.stats.pearsonr(y_true[:, j], y_pred[:, j])[0] for j in range(5)]
    np.testing.assert_allclose(pearson_r_score(y_true, y_pred, aggregate="raw_values"), expected, atol=1e-12)
    assert pearson_r_score(y_true, y_pred) == pytest.approx(np.median(expected), abs=1e-12)
    y_pred[:, 0] = 1.0
    r = pearson_r_score(y_true, y_pred, aggregate="raw_values")
    assert np.isnan(r[0]) and not np.isnan(r[1:]).any()
    assert pearson_r_score(y_true, y_pred) == pytest.approx(np.median(r[1:]))  # NaN skipped, as xarray's median


def test_aggregate_splits_is_mean_and_sem_with_ddof0():
    values = np.array([0.2, 0.4, 0.3, 0.5])
    center, error = aggregate_splits(values)
    assert center == pytest.approx(0.35)
    assert error == pytest.approx(np.std(values, ddof=0) / 2)


def test_spearman_brown():
    assert spearman_brown(0.5) == pytest.approx(2 / 3)
    assert spearman_brown(0.5, n=3) == pytest.approx(0.75)


def _raw_repeats(n_stimuli=40, n_neuroids=6, max_repeats=10, seed=0):
    rng = np.random.default_rng(seed)
    signal = rng.gamma(2.0, 2.0, size=(n_stimuli, n_neuroids))
    trials = rng.poisson(np.repeat(signal[:, :, None], max_repeats, axis=2)).astype(float)
    n_repeats = rng.integers(6, max_repeats + 1, size=n_stimuli)
    for i, k in enumerate(n_repeats):
        trials[i, :, k:] = np.nan
    return trials  # (stimuli, neuroids, repeats), NaN padded


def _repetition_assembly(trials: np.ndarray) -> xr.DataArray:
    stimulus, repetition = np.nonzero(~np.isnan(trials[:, 0, :]))
    return xr.DataArray(
        trials[stimulus, :, repetition],
        dims=("presentation", "neuroid"),
        coords={
            "stimulus_id": ("presentation", np.array([f"s{i:03d}" for i in stimulus], dtype=object)),
            "repetition": ("presentation", repetition),
            "neuroid_id": ("neuroid", np.array([f"n{j}" for j in range(trials.shape[1])], dtype=object)),
        },
    )


def internal_consistency_reference(trials: np.ndarray) -> tuple[float, float]:
    """Brain-Score's internal consistency written out: split unique repetitions, average halves, r, SB, median."""
    repetitions = np.arange(trials.shape[2])
    splitter = ShuffleSplit(n_splits=10, train_size=0.5, test_size=None, random_state=1)
    per_split = []
    for first, second in splitter.split(np.zeros(len(repetitions))):
        half1 = np.nanmean(trials[:, :, repetitions[first]], axis=2)
        half2 = np.nanmean(trials[:, :, repetitions[second]], axis=2)
        rs = np.array([scipy.stats.pearsonr(half1[:, j], half2[:, j])[0] for j in range(trials.shape[1])])
        per_split.append(np.median(2 * rs / (1 + rs)))
    per_split = np.array(per_split)
    return per_split.mean(), per_split.std() / math.sqrt(10)


def test_internal_consistency_matches_reference_and_corrects_before_the_median():
    trials = _raw_repeats()
    assembly = _repetition_assembly(trials)
    # presentation order must not matter
    assembly = assembly.isel(presentation=np.random.default_rng(1).permutation(assembly.sizes["presentation"]))
    ceiling = InternalConsistency()(assembly)
    center, error = internal_consistency_reference(trials)
    assert ceiling.raw == pytest.approx(center, abs=1e-12)
    assert ceiling.error == pytest.approx(error, abs=1e-12)
    # correcting the median instead of each neuroid gives a different number (6 neuroids: median averages two)
    r = ceiling.split_neuroid_values / (2 - ceiling.split_neuroid_values)  # invert 2r/(1+r)
    corrected_after = np.mean([spearman_brown(np.median(row)) for row in r])
    assert abs(corrected_after - ceiling.raw) > 1e-6


def test_internal_consistency_needs_every_stimulus_in_both_halves():
    trials = _raw_repeats(n_stimuli=10)
    trials[0, :, 1:] = np.nan  # one stimulus shown once: it cannot be in both halves
    with pytest.raises(ValueError, match="no repetition in half"):
        InternalConsistency()(_repetition_assembly(trials))


@pytest.mark.parametrize(
    ("regime", "expected"),
    [("r2_over_ceiling", 0.25 / 0.8), ("r_over_ceiling_squared", (0.5 / 0.8) ** 2), ("r_over_ceiling", 0.5 / 0.8)],
)
def test_explained_variance_regimes_keep_the_error_unscaled(regime, expected):
    ceiled = explained_variance(Score(raw=0.5, error=0.01), Score(raw=0.8, error=0.002), regime=regime)
    assert ceiled.ceiled == pytest.approx(expected)
    assert ceiled.error == 0.01 and ceiled.raw == 0.5 and ceiled.ceiling == 0.8
    assert ceiled.attrs["normalization"] == regime and ceiled.attrs["ceiling_error"] == 0.002


def test_average_repetition_equals_nanmean_over_padded_repeats():
    trials = _raw_repeats(n_stimuli=12)
    assembly = _repetition_assembly(trials)
    assembly = assembly.isel(presentation=np.random.default_rng(2).permutation(assembly.sizes["presentation"]))
    averaged = average_repetition(assembly).sortby("stimulus_id")
    assert averaged.sizes == {"presentation": 12, "neuroid": 6}
    assert "repetition" not in averaged.coords
    np.testing.assert_allclose(averaged.values, np.nanmean(trials, axis=2), atol=1e-12)


def _near_tie(delta: float = 0.002, n: int = 60, extra: int = 6, seed: int = 0):
    """Features and responses whose cross-covariance ``X^T Y`` has two top singular values ``1`` and ``1 - delta``,
    with sklearn's start vector (the first response column's weights) almost orthogonal to the top direction: the
    condition under which NIPALS's power method cannot meet tol=1e-6 in 500 iterations (as at components 12-18 of
    MobileNet layers in V4 layer selection, s2/s1 = 0.995-0.997). ``extra`` held-out rows follow the ``n`` training
    rows."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((n + extra, 9)))
    basis = basis[:, 1:] - basis[:, 1:][:n].mean(axis=0)  # centred on the training rows
    q, _ = np.linalg.qr(basis[:n])
    x = np.vstack([q, basis[n:] @ np.linalg.pinv(basis[:n]) @ q])  # training rows orthonormal: X^T X = I
    u, _ = np.linalg.qr(rng.standard_normal((8, 4)))
    first = np.array([0.01, 1.0, 0.0, 0.0]) / np.hypot(0.01, 1.0)  # start: mostly the second direction
    v, _ = np.linalg.qr(np.column_stack([first, rng.standard_normal((4, 3))]))
    v[:, 0] = first
    cross = u @ np.diag([1.0, 1.0 - delta, 0.3, 0.2]) @ v.T  # X^T Y for Y = X B
    y = x @ cross
    return x, y + 1e-3 * rng.standard_normal(y.shape)


def test_pls_max_iter_is_brainscores_and_recorded_not_warned():
    """Why sklearn's ConvergenceWarning appeared in layer selection, reproduced: two nearly tied singular values of
    the cross-covariance. sklearn (so Brain-Score) stops at max_iter and keeps that iterate; the metric does the same,
    records where, and prints nothing."""
    from sklearn.exceptions import ConvergenceWarning

    x, y = _near_tie()
    train, test = np.arange(60), np.arange(60, 66)
    with pytest.warns(ConvergenceWarning, match="Maximum number of iterations"):
        expected = PLSRegression(n_components=1, scale=False).fit(x[train], y[train]).predict(x[test])
    capped: list[int] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        ours = fit_predict_pls(x[train], y[train], x[test], n_components=1, capped=capped)
        values, info = cross_regressed_correlation(x, y, np.array([f"s{i:02d}" for i in range(66)], dtype=object),
                                                   regression="pls", n_components=1, splits=[(train, test)])
    assert capped == [0]  # the first component's power method hit the cap
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-10)  # the same (unconverged) iterate as sklearn's
    assert info["pls_max_iter_reached"] == [[0, 0]]
    # the capped weights are not the converged ones, so keeping sklearn's cap matters (with all 4 components the
    # predictions would not depend on it: they span the same space)
    converged = fit_predict_pls(x[train], y[train], x[test], n_components=1, max_iter=100_000, tol=1e-20, capped=[])
    assert np.abs(converged - expected).max() > 1e-4
    with pytest.warns(ConvergenceWarning):  # called directly without `capped`, it warns as sklearn does
        fit_predict_pls(x[train], y[train], x[test], n_components=1)


def test_pls_attrs_record_no_capped_component_on_ordinary_data():
    features, responses, ids = _synthetic(n_stimuli=90, n_features=60, n_neuroids=5, seed=4)
    score = CrossRegressedCorrelation(n_boot=0)(neuroid_assembly(features, ids, layer="l"), _target_assembly(responses, ids))
    assert score.attrs["pls_max_iter_reached"] == []
