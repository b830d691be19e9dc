"""Futrell2018-spillover_dll: the held-out ΔLL against known answers on synthetic stories, folds that are stories,
and the benchmark on the real Natural Stories data with synthetic and precomputed (GPT-3) surprisal."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from cortexbox.benchmarks import get_benchmark, neuroid_assembly
from cortexbox.benchmarks.aggregation import NOT_AGGREGATED, tree_leaves
from cortexbox.benchmarks.futrell2018 import load_reading_times
from cortexbox.benchmarks.reading_times import Futrell2018SpilloverDLL, heldout_delta_loglik, spillover_design
from tests.benchmarks.conftest import require_data

IDENTIFIER = "Futrell2018-spillover_dll"


def _stories(seed=0, n_stories=10, words=400):
    """Synthetic stories: per-word length, log frequency and an independent surprisal (bits)."""
    rng = np.random.default_rng(seed)
    n = n_stories * words
    stories = np.repeat(np.arange(1, n_stories + 1), words)
    length = rng.integers(1, 12, n).astype(float)
    log_frequency = -0.4 * length + rng.normal(0, 2, n)
    surprisal = rng.gamma(2.0, 3.0, n)
    return rng, stories, length, log_frequency, surprisal


def _rt(rng, stories, length, log_frequency, surprisal, weights, noise=40.0):
    """Reading times driven by length and frequency of the current and previous word, plus ``weights[k]`` ms per bit
    of the surprisal ``k`` words back (within the story)."""
    base, full = spillover_design(stories, length, log_frequency, surprisal, spillover=3)
    s = np.nan_to_num(full[:, 8:])
    b = np.nan_to_num(base)
    y = 300 + 8 * b[:, 0] + 4 * b[:, 1] - 5 * b[:, 4] - 2 * b[:, 5] + s @ np.asarray(weights, float)
    return y + rng.normal(0, noise, len(y))


def _delta(stories, length, log_frequency, surprisal, y, spillover=3, folds=None):
    """Per-word held-out ΔLL of the complete rows, the fold details, and the story of each complete row."""
    base, full = spillover_design(stories, length, log_frequency, surprisal, spillover=spillover)
    keep = np.isfinite(full).all(axis=1)
    delta, details = heldout_delta_loglik(y[keep], base[keep], full[keep], (stories if folds is None else folds)[keep])
    return delta, details, stories[keep]


def test_a_surprisal_that_drives_reading_times_with_spillover_gains_the_expected_loglik():
    rng, stories, length, log_frequency, surprisal = _stories()
    weights = [6.0, 4.0, 2.0, 0.0]
    y = _rt(rng, stories, length, log_frequency, surprisal, weights)
    delta, details, _ = _delta(stories, length, log_frequency, surprisal, y)
    # Known answer: with Gaussian noise, ΔLL = 0.5 log(var(residual of baseline) / var(noise)) per word
    added = np.var(surprisal) * sum(w * w for w in weights)
    expected = 0.5 * math.log((40.0**2 + added) / 40.0**2)
    assert delta.mean() == pytest.approx(expected, rel=0.08)
    assert all(d > 0 for d in details["delta_ll"])


def test_spillover_only_surprisal_needs_the_window():
    """Surprisal that slows only the NEXT words: invisible at the current word, found with the spillover window."""
    rng, stories, length, log_frequency, surprisal = _stories(seed=1)
    y = _rt(rng, stories, length, log_frequency, surprisal, [0.0, 5.0, 3.0, 0.0])
    with_window, *_ = _delta(stories, length, log_frequency, surprisal, y, spillover=3)
    current_only, *_ = _delta(stories, length, log_frequency, surprisal, y, spillover=0)
    assert with_window.mean() == pytest.approx(0.5 * math.log(1 + np.var(surprisal) * (5**2 + 3**2) / 40.0**2), rel=0.1)
    assert abs(current_only.mean()) < 0.01  # what Futrell2018-pearsonr's current-word view sees


def test_a_random_surprisal_gains_nothing():
    rng, stories, length, log_frequency, surprisal = _stories(seed=2)
    y = _rt(rng, stories, length, log_frequency, surprisal, [6.0, 4.0, 2.0, 0.0])
    random = np.random.default_rng(3).permutation(surprisal)
    delta, *_ = _delta(stories, length, log_frequency, random, y)
    assert -0.004 < delta.mean() < 0.001  # four useless predictors cost a little held-out likelihood


def test_folds_are_stories_each_held_out_story_scored_by_fits_on_the_others_only():
    """Story 3's per-word ΔLL recomputed by hand from the two regressions fit on the other nine stories."""
    rng, stories, length, log_frequency, surprisal = _stories(seed=4)
    y = _rt(rng, stories, length, log_frequency, surprisal, [6.0, 4.0, 2.0, 0.0])
    delta, details, story = _delta(stories, length, log_frequency, surprisal, y)
    assert details["folds"] == [str(s) for s in range(1, 11)] and details["n_test"] == [397] * 10
    base, full = spillover_design(stories, length, log_frequency, surprisal)
    keep = np.isfinite(full).all(axis=1)
    yk, train = y[keep], story != 3

    def loglik(x):
        x = np.column_stack([np.ones(int(keep.sum())), x[keep]])
        beta = np.linalg.lstsq(x[train], yk[train], rcond=None)[0]
        variance = np.mean((yk[train] - x[train] @ beta) ** 2)
        return -0.5 * (np.log(2 * np.pi * variance) + (yk[~train] - x[~train] @ beta) ** 2 / variance)

    assert np.allclose(delta[story == 3], loglik(full) - loglik(base), rtol=0, atol=1e-9)


def test_design_lags_stay_within_stories():
    stories = np.array([1, 1, 1, 2, 2])
    base, full = spillover_design(stories, np.arange(5.0), np.arange(5.0) * 10, np.arange(5.0) * 100, spillover=2)
    assert np.array_equal(base[:, :3], [[0, np.nan, np.nan], [1, 0, np.nan], [2, 1, 0], [3, np.nan, np.nan], [4, 3, np.nan]],
                          equal_nan=True)
    assert np.array_equal(full[:, 6:], [[0, np.nan, np.nan], [100, 0, np.nan], [200, 100, 0], [300, np.nan, np.nan],
                                        [400, 300, np.nan]], equal_nan=True)
    with pytest.raises(ValueError, match="complete rows"):
        heldout_delta_loglik(np.ones(5), base, full, stories)
    with pytest.raises(ValueError, match="at least 2 stories"):
        Futrell2018SpilloverDLL(stories=[1])


def test_registered_beside_the_tree_with_the_pearsonr_stimuli():
    assert IDENTIFIER in NOT_AGGREGATED and IDENTIFIER not in tree_leaves()
    assert "Futrell2018-pearsonr" in tree_leaves()
    bench = Futrell2018SpilloverDLL()
    assert bench.kind == "behaviour" and bench.behaviour == "surprisal" and bench.modality == "text"


# -- the real data ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def natural_stories():
    return require_data("naturalstories")


def _gpt3_surprisal(data_dir, words: pd.DataFrame) -> np.ndarray:
    """GPT-3 davinci's per-word surprisal (bits, summed over the tokens that start in the word) from the corpus's
    ``probs/all_stories_gpt3.csv`` (character offsets into each story's words joined by spaces); the first word of
    each story has none (0 here)."""
    probs = pd.read_csv(data_dir / "naturalstories/probs/all_stories_gpt3.csv", keep_default_na=False, dtype={"token": str})
    logprob = pd.to_numeric(probs["logprob"], errors="coerce").fillna(0.0).to_numpy()
    out = np.zeros(len(words))
    for story, rows in probs.groupby("story").indices.items():
        index = np.flatnonzero(words["story"].to_numpy() == story + 1)
        starts = np.cumsum([0] + [len(w) + 1 for w in words["word"].to_numpy()[index][:-1]])
        tokens = probs["token"].to_numpy()[rows]
        first = probs["offset"].to_numpy()[rows] + np.array([len(t) - len(t.lstrip(" ")) for t in tokens])
        np.add.at(out, index[np.searchsorted(starts, first, side="right") - 1], -logprob[rows] / math.log(2))
    return out


@pytest.mark.slow
def test_real_data_oracle_random_collinear_and_gpt3(natural_stories):
    bench = get_benchmark(IDENTIFIER, data_dir=natural_stories)
    pearsonr = get_benchmark("Futrell2018-pearsonr", data_dir=natural_stories)
    assert bench.stimulus_set.hash == pearsonr.stimulus_set.hash  # same words, same cached surprisal
    assert bench.ceiling is None
    words = bench.words
    ids = list(words["stimulus_id"])

    def score(values):
        return bench.score(neuroid_assembly(np.asarray(values, np.float32).reshape(-1, 1), ids, layer="surprisal"))

    gpt3 = score(_gpt3_surprisal(natural_stories, words))
    # every word accounted for: scored, or excluded for one counted reason
    assert gpt3.attrs["n_words"] + sum(gpt3.attrs["excluded"].values()) == len(words) == 10256
    assert gpt3.attrs["excluded"]["sentence_initial"] == 496 and gpt3.attrs["excluded"]["window_before_story_start"] == 20
    assert gpt3.attrs["n_words"] > 9600 and gpt3.ceiling is None and gpt3.ceiled is None
    items, item_ids = np.asarray(gpt3.attrs["item_values"]), gpt3.attrs["item_ids"]
    assert items.shape == (gpt3.attrs["n_words"],) and items.mean() == pytest.approx(gpt3.raw)
    json.dumps(gpt3.attrs)  # stored as JSON with the score, as it is
    assert len(set(item_ids)) == len(item_ids) and item_ids[0] == "1:4"  # zone 1 has no RT, zones 2-3 lack three previous words
    assert len(gpt3.values) == 10 and np.average(gpt3.values, weights=gpt3.attrs["folds"]["n_test"]) == pytest.approx(gpt3.raw)
    low, high = gpt3.attrs["bootstrap"]["raw"]["low"], gpt3.attrs["bootstrap"]["raw"]["high"]
    assert 0.005 < low < gpt3.raw < high < 0.04  # a real LM's surprisal predicts reading beyond length and frequency

    random = score(np.random.default_rng(0).gamma(2.0, 4.0, len(ids)))
    assert -0.002 < random.raw < 0.0005 and random.attrs["bootstrap"]["raw"]["low"] < 0.0005
    # a "surprisal" that is the word's length is already in the baseline: exactly nothing gained
    assert score(words["length"]).raw == pytest.approx(0.0, abs=1e-9)
    # the reading time itself (shifted by the loader's alignment) predicts it far better
    rt = load_reading_times(natural_stories).set_index("stimulus_id")["mean_rt"].fillna(0).loc[ids].to_numpy()
    assert score(rt).raw > 1.0
