"""The metric library: CV machinery, every neural metric against a written-out Brain-Score reference, RSA/CKA,
ceilings, normalisation regimes, behaviour, netCDF, and the errors bad input gets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import xarray as xr
from sklearn.cross_decomposition import PLSRegression
from sklearn.linear_model import LinearRegression, Ridge, RidgeCV
from sklearn.model_selection import GroupKFold, KFold, ShuffleSplit, StratifiedKFold, StratifiedShuffleSplit

from cortexbox.benchmarks import Score, neuroid_assembly
from cortexbox.benchmarks.metrics import (
    ALPHA_LIST,
    CEILINGS,
    METRICS,
    CrossRegressedCorrelation,
    ErrorConsistency,
    I2n,
    InsufficientDataError,
    InternalConsistency,
    ItemStatisticsCeiling,
    RSACeiling,
    TemporalInternalConsistency,
    UnknownMetric,
    cross_regressed_correlation,
    load_metric,
    make_splits,
    normalize,
    score_assemblies,
    unbiased_linear_cka,
)
from cortexbox.benchmarks.netcdf import read_assembly, write_assembly


def _synthetic(n_stimuli=90, n_features=30, n_neuroids=6, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((n_stimuli, 6))
    features = np.maximum(latent @ rng.standard_normal((6, n_features)) + rng.standard_normal((n_stimuli, n_features)), 0)
    responses = latent @ rng.standard_normal((6, n_neuroids)) + 1.5 * rng.standard_normal((n_stimuli, n_neuroids))
    ids = np.array([f"s{i:03d}" for i in rng.permutation(n_stimuli)], dtype=object)
    return features.astype(dtype), responses, ids


def _target(responses, ids, **coords):
    return xr.DataArray(
        responses,
        dims=("presentation", "neuroid"),
        coords={
            "stimulus_id": ("presentation", ids),
            "neuroid_id": ("neuroid", np.array([f"n{j}" for j in range(responses.shape[1])], dtype=object)),
            **coords,
        },
    )


def _reference(kind, features, responses, ids, splitter, labels=None):
    """Brain-Score's CrossRegressedCorrelation written out: fit on id-sorted training rows, scipy r, median, mean."""
    per_split = []
    for train, test in splitter.split(np.zeros(len(ids)), *([] if labels is None else [labels])):
        train = train[np.argsort(ids[train])]
        if kind == "neuron_to_neuron":
            r = np.array([[scipy.stats.pearsonr(features[train, i], responses[train, j])[0]
                           for i in range(features.shape[1])] for j in range(responses.shape[1])])
            prediction = features[test][:, np.nanargmax(r, axis=1)]
        else:
            model = {"ridge": Ridge(alpha=1), "linear": LinearRegression(), "ridgecv": RidgeCV(alphas=ALPHA_LIST),
                     "pls": PLSRegression(n_components=25, scale=False)}[kind]
            prediction = model.fit(features[train], responses[train]).predict(features[test])
        rs = [scipy.stats.pearsonr(responses[test][:, j], prediction[:, j])[0] for j in range(responses.shape[1])]
        per_split.append(np.median(rs))
    per_split = np.array(per_split)
    return per_split.mean(), per_split.std() / math.sqrt(len(per_split))


# --- cross-validation ---------------------------------------------------------------------------------------------


def test_splits_are_sklearns_with_brainscore_defaults():
    labels = np.repeat(["a", "b", "c"], 20)
    groups = np.repeat(np.arange(12), 5)
    dummy = np.zeros(60)
    cases = [
        (make_splits(60), ShuffleSplit(10, train_size=0.9, random_state=1).split(dummy)),
        (make_splits(60, stratify=labels), StratifiedShuffleSplit(10, train_size=0.9, random_state=1).split(dummy, labels)),
        (make_splits(60, kfold=True), KFold(10, shuffle=True, random_state=1).split(dummy)),
        (make_splits(60, test_size=0.9), ShuffleSplit(10, test_size=0.9, random_state=1).split(dummy)),
        (make_splits(60, groups=groups, kfold="group", n_splits=4),
         GroupKFold(4, shuffle=True, random_state=1).split(dummy, groups=groups)),
    ]
    for ours, theirs in cases:
        theirs = list(theirs)
        assert len(ours) == len(theirs)
        for (a, b), (c, d) in zip(ours, theirs):
            np.testing.assert_array_equal(a, c)
            np.testing.assert_array_equal(b, d)


def test_stratified_metric_uses_the_targets_coordinate():
    features, responses, ids = _synthetic(seed=4)
    labels = np.array([f"o{i % 3}" for i in range(len(ids))], dtype=object)
    score = load_metric("ridge", stratification_coord="object_name")(
        neuroid_assembly(features, ids, layer="l"), _target(responses, ids, object_name=("presentation", labels))
    )
    center, error = _reference("ridge", features, responses, ids, StratifiedShuffleSplit(10, train_size=0.9, random_state=1), labels)
    assert score.raw == pytest.approx(center, abs=1e-10) and score.error == pytest.approx(error, abs=1e-10)
    assert score.attrs["stratification_coord"] == "object_name"


# --- Brain-Score's defaults (Split.Defaults: stratified on object_name, 10 splits, train 0.9, random_state 1) -------

_KINDS = {"pls": "pls", "ridge": "ridge", "linear_predictivity": "linear", "ridgecv": "ridgecv",
          "neuron_to_neuron": "neuron_to_neuron"}


def _objects(n, k=4):
    """Unbalanced object labels in no particular order, so stratified and plain splits differ."""
    rng = np.random.default_rng(11)
    return np.array([f"obj{i}" for i in rng.choice(k, size=n, p=[0.4, 0.3, 0.2, 0.1][:k])], dtype=object)


@pytest.mark.parametrize("name", sorted(_KINDS))
def test_default_splits_stratify_on_object_name_when_the_target_has_it(name):
    features, responses, ids = _synthetic(seed=12)  # ids in shuffled order: the splits follow the target's order
    labels = _objects(len(ids))
    target = _target(responses, ids, object_name=("presentation", labels))
    score = load_metric(name)(neuroid_assembly(features, ids, layer="l"), target)
    center, error = _reference(_KINDS[name], features, responses, ids,
                               StratifiedShuffleSplit(10, train_size=0.9, random_state=1), labels)
    assert score.raw == pytest.approx(center, abs=1e-9) and score.error == pytest.approx(error, abs=1e-9)
    plain, _ = _reference(_KINDS[name], features, responses, ids, ShuffleSplit(10, train_size=0.9, random_state=1))
    assert abs(plain - center) > 1e-4  # the default decides the score: plain splits would give another one
    assert score.attrs["stratification_coord"] == "object_name"
    assert score.attrs["cross_validation"] == {
        "splitter": "StratifiedShuffleSplit", "split_coord": "stimulus_id", "stratification_coord": "object_name",
        "stratification_requested": "auto", "group_coord": None, "n_splits": 10, "train_size": 0.9, "test_size": None,
        "random_state": 1,
    }


def test_a_target_without_object_name_gets_plain_shuffle_splits():
    features, responses, ids = _synthetic(seed=12)
    labels = _objects(len(ids))
    source = neuroid_assembly(features, ids, layer="l")
    without = load_metric("ridge")(source, _target(responses, ids))
    center, _ = _reference("ridge", features, responses, ids, ShuffleSplit(10, train_size=0.9, random_state=1))
    assert without.raw == pytest.approx(center, abs=1e-10)
    assert without.attrs["stratification_coord"] is None and without.attrs["cross_validation"]["splitter"] == "ShuffleSplit"
    # stratification_coord=None (as Brain-Score's benchmarks without object labels pass) turns the default off
    off = load_metric("ridge", stratification_coord=None)(source, _target(responses, ids, object_name=("presentation", labels)))
    assert off.values == without.values and off.attrs["cross_validation"]["stratification_requested"] is None
    with pytest.raises(ValueError, match="no stratification coordinate 'object_name'"):  # asked for explicitly
        load_metric("ridge", stratification_coord="object_name")(source, _target(responses, ids))


def test_default_kfold_is_stratified_kfold():
    features, responses, ids = _synthetic(seed=12)
    labels = np.random.default_rng(3).permutation(np.repeat(np.array(["a", "b", "c"], dtype=object), 30))
    score = load_metric("ridge", kfold=True)(neuroid_assembly(features, ids, layer="l"),
                                             _target(responses, ids, object_name=("presentation", labels)))
    center, _ = _reference("ridge", features, responses, ids, StratifiedKFold(10, shuffle=True, random_state=1), labels)
    assert score.raw == pytest.approx(center, abs=1e-10)
    assert score.attrs["cross_validation"]["splitter"] == "StratifiedKFold"


@pytest.mark.parametrize("name", ["pls", "ridge", "rdm_cv", "cka_cv"])
def test_the_order_of_the_models_presentations_does_not_change_the_score(name):
    features, responses, ids = _synthetic(n_features=40, seed=13)
    target = _target(responses, ids, object_name=("presentation", _objects(len(ids))))
    metric = load_metric(name)
    reference = metric(neuroid_assembly(features, ids, layer="l"), target)
    for seed in (1, 2):
        shuffle = np.random.default_rng(seed).permutation(len(ids))
        shuffled = metric(neuroid_assembly(features[shuffle], ids[shuffle], layer="l"), target)
        np.testing.assert_allclose(shuffled.values, reference.values, rtol=0, atol=1e-10)
        assert shuffled.raw == pytest.approx(reference.raw, abs=1e-10)


@pytest.mark.parametrize("name", ["rdm_cv", "cka_cv"])
def test_rdm_cv_and_cka_cv_default_to_stratified_test_parts(name):
    features, responses, ids = _synthetic(n_stimuli=60, seed=14)
    labels = _objects(len(ids))
    target = _target(responses, ids, object_name=("presentation", labels))
    score = load_metric(name)(neuroid_assembly(features, ids, layer="l"), target)
    per_split = []
    for _, test in StratifiedShuffleSplit(10, test_size=0.9, random_state=1).split(np.zeros(len(ids)), labels):
        test = test[np.argsort(ids[test])]
        part = load_metric(name.removesuffix("_cv"))  # the whole-set metric on the test part
        per_split.append(part(neuroid_assembly(features[test], ids[test], layer="l"), _target(responses[test], ids[test])).raw)
    np.testing.assert_allclose(score.values, per_split, atol=1e-12)
    assert score.attrs["cross_validation"]["splitter"] == "StratifiedShuffleSplit"
    assert score.attrs["cross_validation"]["test_size"] == 0.9 and score.attrs["cross_validation"]["train_size"] is None
    plain = load_metric(name, stratification_coord=None)(neuroid_assembly(features, ids, layer="l"), target)
    assert plain.attrs["cross_validation"]["splitter"] == "ShuffleSplit" and plain.values != score.values


def test_an_object_with_one_image_gets_a_hint_to_turn_stratification_off():
    features, responses, ids = _synthetic(seed=15)
    labels = np.array(["lonely"] + ["crowd"] * (len(ids) - 1), dtype=object)
    with pytest.raises(InsufficientDataError, match="stratified on 'object_name'; stratification_coord=None"):
        load_metric("pls")(neuroid_assembly(features, ids, layer="l"), _target(responses, ids, object_name=("presentation", labels)))


# --- neural predictivity ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ridge", "linear", "ridgecv", "neuron_to_neuron"])
def test_regression_metrics_match_the_brainscore_loop(kind):
    features, responses, ids = _synthetic(seed=1)
    shuffle = np.random.default_rng(5).permutation(len(ids))  # model rows arrive in another order
    source = neuroid_assembly(features[shuffle], ids[shuffle], layer="l")
    score = CrossRegressedCorrelation(kind)(source, _target(responses, ids))
    center, error = _reference(kind, features, responses, ids, ShuffleSplit(10, train_size=0.9, random_state=1))
    assert score.raw == pytest.approx(center, abs=1e-10)
    assert score.error == pytest.approx(error, abs=1e-10)
    assert len(score.values) == 10 and score.split_neuroid_values.shape == (10, 6)
    assert 0.2 < score.raw < 0.99


@pytest.mark.parametrize("kind", ["pls", "ridge", "ridgecv", "linear"])
def test_row_space_projection_gives_the_plain_fits_numbers(kind):
    features, responses, ids = _synthetic(n_stimuli=60, n_features=150, seed=2)
    plain, _ = cross_regressed_correlation(features, responses, ids, regression=kind, project=False)
    projected, info = cross_regressed_correlation(features, responses, ids, regression=kind, project=True)
    assert info["projected"] and info["rank"] == 59
    np.testing.assert_allclose(projected, plain, atol=1e-8)


@pytest.mark.parametrize("name", ["pls", "ridge", "linear_predictivity", "ridgecv", "rdm", "rdm_cv", "cka", "cka_biased", "cka_cv"])
def test_identical_inputs_score_near_one_and_noise_near_zero(name):
    _, responses, ids = _synthetic(n_stimuli=80, n_neuroids=30, seed=3)  # PLS needs >= 25 features
    target = _target(responses, ids)
    same = load_metric(name)(neuroid_assembly(responses, ids, layer="copy"), target)
    noise = np.random.default_rng(9).standard_normal(responses.shape)
    unrelated = load_metric(name)(neuroid_assembly(noise, ids, layer="noise"), target)
    assert same.raw > 0.95
    assert abs(unrelated.raw) < 0.3
    assert same.attrs["metric"] == name


def test_neuron_to_neuron_finds_the_copied_unit():
    _, responses, ids = _synthetic(n_stimuli=70, n_neuroids=4, seed=6)
    noise = np.random.default_rng(0).standard_normal((70, 20))
    features = np.hstack([noise, responses[:, ::-1]])
    score = load_metric("neuron_to_neuron")(neuroid_assembly(features, ids, layer="l"), _target(responses, ids))
    assert score.raw == pytest.approx(1.0)


# --- rdm / cka ----------------------------------------------------------------------------------------------------


def test_rdm_and_cka_match_their_definitions():
    features, responses, ids = _synthetic(n_stimuli=40, n_features=25, seed=7)
    order = np.argsort(ids)
    source, target = neuroid_assembly(features, ids, layer="l"), _target(responses, ids)
    rdm1, rdm2 = 1 - np.corrcoef(features[order]), 1 - np.corrcoef(responses[order])
    upper = np.triu_indices(40, k=1)
    expected = scipy.stats.spearmanr(rdm1[upper], rdm2[upper])[0]
    assert load_metric("rdm")(source, target).raw == pytest.approx(expected, abs=1e-12)

    def centre(k):
        h = np.eye(len(k)) - 1 / len(k)
        return h @ k @ h

    kx, ky = centre(features @ features.T), centre(responses @ responses.T)
    biased = (kx * ky).sum() / np.sqrt((kx * kx).sum() * (ky * ky).sum())
    assert load_metric("cka_biased")(source, target).raw == pytest.approx(biased, abs=1e-12)
    # the unbiased estimator is the HSIC U-statistic; for a copy it is 1, and it is invariant to feature scaling
    assert load_metric("cka")(source, neuroid_assembly(features * 3.0, ids, layer="x")).raw == pytest.approx(1.0)
    with pytest.raises(InsufficientDataError, match="at least 4"):
        unbiased_linear_cka(np.eye(3), np.eye(3))


def test_rdm_cv_scores_the_test_part_of_each_split():
    features, responses, ids = _synthetic(n_stimuli=50, seed=8)
    score = load_metric("rdm_cv")(neuroid_assembly(features, ids, layer="l"), _target(responses, ids))
    expected = []
    for _, test in ShuffleSplit(10, test_size=0.9, random_state=1).split(np.zeros(50)):
        test = test[np.argsort(ids[test])]
        upper = np.triu_indices(len(test), k=1)
        expected.append(scipy.stats.spearmanr((1 - np.corrcoef(features[test]))[upper], (1 - np.corrcoef(responses[test]))[upper])[0])
    np.testing.assert_allclose(score.values, expected, atol=1e-12)
    assert score.error == pytest.approx(np.std(expected) / math.sqrt(10))


# --- ceilings -----------------------------------------------------------------------------------------------------


def _repetitions(n_stimuli=30, n_neuroids=5, n_reps=6, seed=0):
    rng = np.random.default_rng(seed)
    signal = rng.gamma(2.0, 2.0, size=(n_stimuli, n_neuroids))
    stim, rep = np.meshgrid(np.arange(n_stimuli), np.arange(n_reps), indexing="ij")
    values = rng.poisson(signal[stim.ravel()]).astype(float)
    return _target(values, np.array([f"s{i:02d}" for i in stim.ravel()], dtype=object), repetition=("presentation", rep.ravel()))


def test_temporal_ceiling_is_the_ceiling_of_each_time_bin():
    first, second = _repetitions(seed=1), _repetitions(seed=2)
    assembly = xr.concat([first, second.assign_coords(stimulus_id=first.stimulus_id)], dim="time_bin").transpose(
        "presentation", "neuroid", "time_bin"
    ).assign_coords(time_bin_start=("time_bin", [70, 170]), time_bin_end=("time_bin", [170, 270]))
    ceiling = TemporalInternalConsistency()(assembly)
    expected = [InternalConsistency()(first).raw, InternalConsistency()(second.assign_coords(stimulus_id=first.stimulus_id)).raw]
    np.testing.assert_allclose(ceiling.values, expected, atol=1e-12)
    assert [b["time_bin_start"] for b in ceiling.attrs["time_bins"]] == [70, 170]


def test_rsa_ceiling_upper_and_leave_one_out_bounds():
    rng = np.random.default_rng(3)
    shared = rng.standard_normal((25, 4))
    blocks = [shared @ rng.standard_normal((4, 8)) + rng.standard_normal((25, 8)) for _ in range(3)]
    values = np.hstack(blocks)
    assembly = _target(values, np.array([f"s{i}" for i in range(25)], dtype=object),
                       subject=("neuroid", np.repeat(["a", "b", "c"], 8).astype(object)))
    ceiling = RSACeiling()(assembly)
    rdms = [1 - np.corrcoef(b) for b in blocks]
    upper = np.triu_indices(25, k=1)
    mean_all = np.mean(rdms, axis=0)
    expected_upper = np.mean([scipy.stats.spearmanr(r[upper], mean_all[upper])[0] for r in rdms])
    expected_lower = np.mean([scipy.stats.spearmanr(rdms[i][upper], np.mean([rdms[j] for j in range(3) if j != i], axis=0)[upper])[0]
                              for i in range(3)])
    assert ceiling.raw == pytest.approx(expected_upper, abs=1e-12)
    assert ceiling.attrs["lower_bound_loo"] == pytest.approx(expected_lower, abs=1e-12)
    assert ceiling.attrs["lower_bound_loo"] < ceiling.raw


def test_item_statistics_ceiling_predicts_the_replication_correlation():
    rng = np.random.default_rng(0)
    true = rng.normal(size=400)
    counts = rng.integers(5, 15, size=400)
    noise_sd = 2.0
    replications = []
    for _ in range(2):
        samples = [true[i] + noise_sd * rng.standard_normal(counts[i]) for i in range(400)]
        replications.append((np.array([s.mean() for s in samples]), np.array([s.std(ddof=1) for s in samples])))
    (means, stds), (means2, _) = replications
    ceiling = ItemStatisticsCeiling()(means, stds, counts)
    observed = np.corrcoef(means, means2)[0, 1]
    assert ceiling.raw == pytest.approx(observed, abs=0.08)  # measured 0.72 vs 0.73
    assert 0.5 < ceiling.raw < 0.9 and ceiling.error > 0
    with pytest.raises(InsufficientDataError, match="at least 2 observations"):
        ItemStatisticsCeiling()(means, stds, np.ones(400))


# --- normalisation ------------------------------------------------------------------------------------------------


def test_clipped_and_per_split_regimes():
    clipped = normalize(Score(raw=0.9, error=0.01), Score(raw=0.6, error=0.0), regime="raw_over_ceiling_clipped")
    assert clipped.ceiled == 1.0 and clipped.attrs["original_out_of_range_score"] == pytest.approx(1.5)
    low = normalize(Score(raw=-0.1, error=0.01), Score(raw=0.5, error=0.0), regime="raw_over_ceiling_clipped")
    assert low.ceiled == 0.0
    split = normalize(Score(raw=0.3, error=0.0, values=[0.2, 0.4]), Score(raw=0.5, error=0.0, values=[0.25, 0.64]),
                      regime="per_split_over_sqrt_ceiling")
    assert split.ceiled == pytest.approx((0.2 / 0.5 + 0.4 / 0.8) / 2)
    assert split.error == pytest.approx(np.std([0.4, 0.5]))
    with pytest.raises(ValueError, match="as many score splits"):
        normalize(Score(raw=0.3, error=0.0, values=[0.2]), Score(raw=0.5, error=0.0, values=[0.2, 0.3]),
                  regime="per_split_over_sqrt_ceiling")


def test_score_assemblies_records_the_regime():
    features, responses, ids = _synthetic(seed=11)
    score = score_assemblies("ridge", neuroid_assembly(features, ids, layer="l"), _target(responses, ids),
                             ceiling=Score(raw=0.8, error=0.01))
    assert score.attrs["normalization"] == "r2_over_ceiling" and score.ceiled == pytest.approx(score.raw**2 / 0.8)
    old = score_assemblies("ridge", neuroid_assembly(features, ids, layer="l"), _target(responses, ids),
                           ceiling=Score(raw=0.8, error=0.01), normalization="r_over_ceiling_squared")
    assert old.ceiled == pytest.approx((old.raw / 0.8) ** 2)
    with pytest.raises(KeyError) as caught:
        load_metric("pls2")
    assert isinstance(caught.value, UnknownMetric) and "ridgecv" in str(caught.value)
    assert {"pls", "ridge", "linear_predictivity", "ridgecv", "neuron_to_neuron", "rdm", "rdm_cv", "cka",
            "cka_biased", "accuracy", "accuracy_distance", "error_consistency", "i2n"} <= set(METRICS)
    assert {"internal_consistency", "internal_consistency_temporal", "rsa_ceiling", "item_statistics"} <= set(CEILINGS)


# --- behaviour ----------------------------------------------------------------------------------------------------


def _trials(values, **coords):
    return xr.DataArray(np.asarray(values, dtype=object), dims=("presentation",),
                        coords={k: ("presentation", np.asarray(v, dtype=object)) for k, v in coords.items()})


def test_error_consistency_is_cohens_kappa_per_subject_and_condition():
    truth = ["a", "b", "a", "b", "a", "b", "a", "b"]
    ids = [f"s{i}" for i in range(8)]
    model = _trials(["a", "b", "b", "b", "a", "a", "a", "b"], stimulus_id=ids, truth=truth, condition=["c"] * 8)
    human = _trials(["a", "b", "b", "a", "a", "a", "b", "b"], stimulus_id=ids, truth=truth, condition=["c"] * 8, subject=["x"] * 8)
    # correctness: model 1,1,0,1,1,0,1,1 (acc .75); human 1,1,0,0,1,0,0,1 (acc .5); agreement 6/8
    expected = (6 / 8 - (0.75 * 0.5 + 0.25 * 0.5)) / (1 - (0.75 * 0.5 + 0.25 * 0.5))
    assert ErrorConsistency()(model, human).raw == pytest.approx(expected)
    pair = xr.concat([human, human.assign_coords(subject=("presentation", np.array(["y"] * 8, dtype=object)))], "presentation")
    assert ErrorConsistency().ceiling(pair).raw == pytest.approx(1.0)


def test_accuracy_and_accuracy_distance():
    ids = [f"s{i}" for i in range(4)]
    model = _trials(["a", "b", "a", "a"], stimulus_id=ids)
    assert load_metric("accuracy")(model, _trials(["a", "b", "b", "a"], stimulus_id=ids)).raw == 0.75
    humans = _trials(["a", "b", "b", "b"] * 2, stimulus_id=ids * 2, truth=["a", "b", "b", "a"] * 2,
                     subject=["x"] * 4 + ["y"] * 4)
    # model accuracy .75, each subject .75 -> distance 1
    assert load_metric("accuracy_distance")(model, humans).raw == pytest.approx(1.0)
    assert load_metric("accuracy_distance").ceiling(humans).raw == pytest.approx(1.0)


def test_i2n_of_the_human_choice_rates_is_high_and_the_ceiling_is_consistent():
    rng = np.random.default_rng(0)
    objects = np.array(["a", "b", "c", "d"], dtype=object)
    images = np.array([f"im{i:02d}" for i in range(24)], dtype=object)
    truth = objects[np.arange(24) % 4]
    p_correct = rng.uniform(0.55, 0.95, size=24)
    rows = {"stimulus_id": [], "truth": [], "sample_obj": [], "dist_obj": [], "choice": []}
    for i in range(24):
        for distractor in objects[objects != truth[i]]:
            for _ in range(40):
                rows["stimulus_id"].append(images[i])
                rows["truth"].append(truth[i])
                rows["sample_obj"].append(truth[i])
                rows["dist_obj"].append(distractor)
                rows["choice"].append(truth[i] if rng.random() < p_correct[i] else distractor)
    trials = _trials(rows.pop("choice"), **rows)
    logits = np.log(np.where(truth[:, None] == objects[None, :], p_correct[:, None], (1 - p_correct[:, None]) / 1))
    probabilities = xr.DataArray(np.exp(logits), dims=("presentation", "choice"),
                                 coords={"stimulus_id": ("presentation", images), "choice": objects})
    metric = I2n()
    score, ceiling = metric(probabilities, trials), metric.ceiling(trials)
    assert len(score.values) == len(ceiling.values) == 2
    # the true choice rates against one noisy half beat one half against the other (measured 0.68 vs 0.42)
    assert score.raw > 0.5 and score.raw > ceiling.raw > 0.2
    ceiled = normalize(score, ceiling, regime="per_split_over_sqrt_ceiling")
    assert ceiled.ceiled == pytest.approx(np.mean(np.array(score.values) / np.sqrt(ceiling.values)))


# --- bad input ----------------------------------------------------------------------------------------------------


def test_bad_input_gets_a_clear_error():
    features, responses, ids = _synthetic(n_stimuli=30)
    target = _target(responses, ids)
    with pytest.raises(ValueError, match=r"1 missing: 's"):
        load_metric("ridge")(neuroid_assembly(features[1:], ids[1:], layer="l"), target)
    with pytest.raises(ValueError, match="unexpected"):
        load_metric("rdm")(neuroid_assembly(features, ["x", *ids[1:]], layer="l"), target)
    nan = responses.copy()
    nan[3, 2] = np.nan
    with pytest.raises(ValueError, match="non-finite.*presentation 3"):
        load_metric("pls")(neuroid_assembly(features, ids, layer="l"), _target(nan, ids))
    with pytest.raises(InsufficientDataError, match="1 test values; each side needs at least 2"):
        load_metric("ridge")(neuroid_assembly(features[:10], ids[:10], layer="l"), _target(responses[:10], ids[:10]))
    with pytest.raises(InsufficientDataError, match="at least 2 repetitions"):
        InternalConsistency()(_target(responses, ids, repetition=("presentation", np.zeros(30, dtype=int))))
    with pytest.raises(InsufficientDataError, match="at least 2 values"):
        make_splits(1)
    with pytest.raises(InsufficientDataError, match="cannot build the splits"):
        make_splits(12, stratify=["a"] * 11 + ["b"])


# --- netCDF -------------------------------------------------------------------------------------------------------


def test_netcdf_round_trip_flattens_brainscore_multiindexes(tmp_path):
    _, responses, ids = _synthetic(n_stimuli=12, n_neuroids=3)
    assembly = _target(responses, ids, object_name=("presentation", np.array(["o"] * 12, dtype=object)))
    assembly.attrs = {"identifier": "test", "stimulus_set": None, "flag": True}
    multi = assembly.set_index(presentation=["stimulus_id", "object_name"])  # Brain-Score's in-memory layout
    write_assembly(multi, tmp_path / "a.nc")
    back = read_assembly(tmp_path / "a.nc")
    assert not any(isinstance(i, type(multi.indexes["presentation"])) for i in back.indexes.values())
    np.testing.assert_array_equal(back.values, responses)
    assert list(back.stimulus_id.values) == list(ids) and list(back.object_name.values) == ["o"] * 12
    assert back.attrs == {"identifier": "test", "flag": 1}
    legacy = assembly.rename(stimulus_id="image_id")
    write_assembly(legacy, tmp_path / "legacy.nc")
    assert list(read_assembly(tmp_path / "legacy.nc").stimulus_id.values) == list(ids)


# --- fast paths keep sklearn's numbers ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_pls_power_method_in_cross_covariance_form_matches_sklearn(dtype):
    from sklearn.cross_decomposition import PLSRegression

    from cortexbox.benchmarks.metrics import fit_predict_pls

    features, responses, _ = _synthetic(n_stimuli=150, n_features=60, n_neuroids=40, seed=12, dtype=dtype)
    train, test = np.arange(130), np.arange(130, 150)
    expected = PLSRegression(n_components=25, scale=False).fit(features[train], responses[train]).predict(features[test])
    actual = fit_predict_pls(features[train], responses[train], features[test], n_components=25)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-10 * np.abs(expected).max())


def test_mixed_precision_rdm_keeps_the_score():
    from cortexbox.benchmarks.metrics import rdm, rdm_similarity

    features, responses, _ = _synthetic(n_stimuli=120, n_features=3000, seed=13, dtype=np.float32)
    exact, mixed = rdm(features, precision="float64"), rdm(features, precision="mixed", block_size=1000)
    assert 0 < np.abs(exact - mixed).max() < 1e-5
    target = rdm(responses)
    # 7,140 pairs: a few rank swaps move rho by ~1e-7 (measured 2.5e-7), so "auto" keeps float64 below 1,000 stimuli
    assert rdm_similarity(mixed, target) == pytest.approx(rdm_similarity(exact, target), abs=1e-6)
    np.testing.assert_array_equal(rdm(features, precision="auto"), exact)
