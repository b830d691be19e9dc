"""Language benchmarks on the real data: the Natural Stories alignment fix, oracle and random scores, ceilings,
SyntaxGym's prediction evaluator, and Brennan2016's ridge metric."""

from __future__ import annotations

import numpy as np
import pytest

from cortexbox.benchmarks import get_benchmark, list_benchmarks, neuroid_assembly
from cortexbox.benchmarks.brennan2016 import ROIS, Brennan2016Ridge
from cortexbox.benchmarks.futrell2018 import Futrell2018Pearsonr, load_reading_times
from cortexbox.benchmarks.language import TextStimulusSet, committed_layer
from cortexbox.benchmarks.syntaxgym import SUITES, SyntaxGymSuite, evaluate_formula


def _assembly(values, ids):
    return neuroid_assembly(np.asarray(values, np.float32).reshape(len(ids), -1), ids, layer="x")


def _length_weights(frame):
    """OLS weights (ms per sd) of mean RT on the lengths of the words at z-2 .. z+2, within stories."""
    length = frame["word"].str.len().astype(float)
    grouped = length.groupby(frame["story"])
    columns = [grouped.shift(-k) for k in (-2, -1, 0, 1, 2)]
    data = np.column_stack([frame["mean_rt"]] + columns)
    data = data[np.isfinite(data).all(axis=1)]
    x = (data[:, 1:] - data[:, 1:].mean(0)) / data[:, 1:].std(0)
    weights, *_ = np.linalg.lstsq(np.column_stack([np.ones(len(x)), x]), data[:, 0], rcond=None)
    return dict(zip(("z-2", "z-1", "z", "z+1", "z+2"), weights[1:]))


def test_natural_stories_statistics_are_one_position_early_and_the_loader_fixes_it(data_dir):
    """Self-paced reading shows one word at a time, so the upcoming words cannot affect a word's reading time."""
    as_listed = _length_weights(load_reading_times(data_dir, shift=0))
    fixed = _length_weights(load_reading_times(data_dir))
    assert as_listed["z+1"] > 6  # the next word "explains" the listed value nearly as much as the word itself
    assert abs(fixed["z+1"]) < 1.5 and abs(fixed["z+2"]) < 1.5  # after the shift, no effect of upcoming words
    assert fixed["z"] > 6 and fixed["z-1"] > 6  # the word itself and the usual spillover from the previous one


def test_futrell2018_oracle_random_and_ceiling(data_dir):
    bench = Futrell2018Pearsonr(data_dir=data_dir)
    assert len(bench.stimulus_set) == 10256 and len(bench.stimulus_set.contexts) == 10
    scored = bench.scored
    assert len(scored) == 9750 and not scored["sentence_initial"].any()
    assert 0.7 < bench.ceiling.raw < 0.9
    ids = bench.stimulus_set.stimulus_ids
    rt = load_reading_times(data_dir).set_index("stimulus_id")["mean_rt"].fillna(0).loc[ids].values
    oracle = bench.score(_assembly(rt, ids))
    assert oracle.raw == pytest.approx(1.0) and oracle.ceiled == 1.0
    random = bench.score(_assembly(np.random.default_rng(0).random(len(ids)), ids))
    assert abs(random.raw) < 0.03 and random.ceiled <= 0.04
    lengths = bench.score(_assembly([len(w) for _, w, _ in bench.stimulus_set.iter_text()], ids))
    assert 0.2 < lengths.raw < 0.45  # word length alone predicts reading times moderately


def test_syntaxgym_formulas_and_suites(data_dir):
    surprisal = {(1, "a"): 1.0, (1, "b"): 2.0, (2, "a"): 5.0}
    assert evaluate_formula("(1;%a%) < (1;%b%)", surprisal)
    assert not evaluate_formula("((1;%a%) < (1;%b%)) & ((2;%a%) < (1;%b%))", surprisal)
    assert evaluate_formula("((1;%b%)-(1;%a%))+(2;%a%)>0", surprisal)
    with pytest.raises(ValueError):
        evaluate_formula("__import__('os')", surprisal)
    assert len(SUITES) == 31 and all(f"syntaxgym-{s}" in list_benchmarks() for s in SUITES)
    bench = SyntaxGymSuite("number_prep", data_dir=data_dir)
    ids = bench.stimulus_set.stimulus_ids
    flat = bench.score(_assembly(np.ones(len(ids)), ids))
    assert flat.raw == 0.0  # equal surprisals satisfy no strict inequality
    rng = np.random.default_rng(0)
    chance = np.mean([bench.score(_assembly(rng.random(len(ids)), ids)).raw for _ in range(5)])
    assert 0.1 < chance < 0.6


def test_brennan2016_ceilings_random_features_and_word_rate(data_dir):
    assert [f"Brennan2016.{roi}-ridge" in list_benchmarks() for roi in ROIS] == [True] * 6
    bench = Brennan2016Ridge("LPTL", data_dir=data_dir)
    assert len(bench.stimulus_set) == 2127 and bench.targets.shape == (362, 27)
    assert 0.3 < bench.ceiling.raw < 0.5  # data.md: LPTL 0.39 for the whole time course
    ids = bench.stimulus_set.stimulus_ids
    random = bench.score(_assembly(np.random.default_rng(0).standard_normal((len(ids), 20)), ids))
    assert abs(random.raw) < 0.1
    rate = bench.score(_assembly(np.ones(len(ids)), ids))  # "a word was heard": the plainest story predictor
    assert rate.raw > random.raw + 0.1 and rate.ceiling == bench.ceiling.raw


def test_text_stimulus_sets_and_the_layer_rule():
    with pytest.raises(ValueError, match="not contiguous"):
        TextStimulusSet("x", [("a", "one", "c1"), ("b", "two", "c2"), ("c", "three", "c1")])
    with pytest.raises(ValueError, match="empty text"):
        TextStimulusSet("x", [("a", " ", "c1")])
    assert committed_layer([f"hidden_states.{i}" for i in range(31)]) == "hidden_states.20"
    assert committed_layer(["only"]) == "only"
    assert get_benchmark("Futrell2018-pearsonr").kind == "behaviour"
    assert get_benchmark("Brennan2016.LIFG-ridge").kind == "neural"


def test_brennan2016_ridge_path_equals_sklearn_ridge():
    from sklearn.linear_model import Ridge

    from cortexbox.benchmarks.brennan2016 import ridge_predictions

    rng = np.random.default_rng(1)
    x, y, x_new = rng.standard_normal((40, 60)), rng.standard_normal((40, 3)), rng.standard_normal((7, 60))
    got = ridge_predictions(x, y, x_new, [0.1, 10.0, 1e4])
    for k, alpha in enumerate([0.1, 10.0, 1e4]):
        np.testing.assert_allclose(got[k], Ridge(alpha=alpha).fit(x, y).predict(x_new), atol=1e-8)


def test_brennan2016_alpha_is_chosen_inside_the_training_folds_only(data_dir, monkeypatch):
    import cortexbox.benchmarks.brennan2016 as module

    bench = Brennan2016Ridge("LPTL", data_dir=data_dir)
    bench.n_boot = 0
    ids = bench.stimulus_set.stimulus_ids
    features = _assembly(np.random.default_rng(2).standard_normal((len(ids), 64)) + np.ones((len(ids), 1)), ids)
    seen = []
    choose = module.choose_alpha

    def spy(x_train, y_train, volumes, *args, **kwargs):
        seen.append((np.array(volumes), y_train.copy()))
        return choose(x_train, y_train, volumes, *args, **kwargs)

    monkeypatch.setattr(module, "choose_alpha", spy)
    before = bench.score(features)
    folds = bench.folds
    assert len(seen) == len(folds) == len(before.attrs["alphas"])
    for (volumes, y_seen), (train, test) in zip(seen, folds):
        assert not set(volumes) & set(test)  # the alpha search never gets a test volume ...
        np.testing.assert_array_equal(y_seen, bench.targets[train])  # ... nor any other rows than the training ones
    # scrambling one fold's held-out targets changes that fold's score, never the alpha chosen for it (the other
    # folds train on those rows, so theirs may change)
    train, test = folds[2]
    scrambled = bench.targets.copy()
    scrambled[test] = np.random.default_rng(3).standard_normal((len(test), scrambled.shape[1])) * 100
    monkeypatch.setitem(bench.__dict__, "targets", scrambled)
    after = bench.score(features)
    assert after.attrs["alphas"][2] == before.attrs["alphas"][2]
    assert after.values[2] != before.values[2]
    assert bench.version == 2 and "nested" in bench.description and after.attrs["inner_folds"] == module.INNER_FOLDS


def test_brennan2016_nested_alpha_regularises_wide_noise_and_leaves_inner_gaps():
    from cortexbox.benchmarks.brennan2016 import ALPHAS, choose_alpha

    rng = np.random.default_rng(4)
    volumes = np.r_[np.arange(0, 100), np.arange(150, 290)]
    x = rng.standard_normal((len(volumes), 576))  # wide noise features, as a 576-wide layer on ~290 volumes
    y = np.cumsum(rng.standard_normal((len(volumes), 5)), axis=0)  # autocorrelated targets
    alpha, scores = choose_alpha(x, y, volumes)
    assert len(scores) == len(ALPHAS) and alpha >= 1e4  # nothing to learn: strong shrinkage wins
    signal = x[:, :3] @ np.array([1.0, -1.0, 0.5]) + 0.5 * rng.standard_normal(len(volumes))
    alpha_signal, _ = choose_alpha(x, np.column_stack([signal] * 5), volumes)
    assert alpha_signal < alpha


def test_naturalstories_accuracy_oracle_constant_and_normalisation(data_dir):
    import xarray as xr

    from cortexbox.benchmarks.naturalstories_accuracy import NaturalStoriesAccuracy, normalise_word

    assert normalise_word('"Tulip,') == "tulip" and normalise_word("don't.") == "don't" and normalise_word("--") == ""
    bench = get_benchmark("NaturalStories-accuracy", data_dir=data_dir)
    assert isinstance(bench, NaturalStoriesAccuracy) and bench.kind == "behaviour" and bench.behaviour == "next_word"
    futrell = get_benchmark("Futrell2018-pearsonr", data_dir=data_dir)
    assert bench.stimulus_set.hash == futrell.stimulus_set.hash  # the same contexts as Futrell2018
    parts = bench.stimulus_set.parts
    ids = [p[0] for p in parts]

    def assembly(words):
        return xr.DataArray(np.array(words, dtype=object)[:, None], dims=("presentation", "neuroid"),
                            coords={"stimulus_id": ("presentation", ids)})

    oracle = [parts[i + 1][1].upper() + "!" if i + 1 < len(parts) and parts[i + 1][2] == parts[i][2] else "x"
              for i in range(len(parts))]
    score = bench.score(assembly(oracle))
    assert score.raw == 1.0 and len(score.values) == 10 and score.ceiling is None
    the = bench.score(assembly(["the"] * len(parts)))
    assert 0.02 < the.raw < 0.1 and the.attrs["n_scored"] > 10_000 - 20
    with pytest.raises(ValueError, match="lacks"):
        bench.score(assembly(["the"] * len(parts))[:-1])
