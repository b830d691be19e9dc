"""Futrell2018-spillover_dll: reading times as the psycholinguistics literature measures them, beside Brain-Score's r.

``Futrell2018-pearsonr`` correlates only the current word's surprisal with its reading time, and a frequency model
ties with a language model there (about .25 each), partly because self-paced reading spills over: a hard word slows
the next few words, and surprisal shares much of its variance with word length and frequency. The literature's
measure (Goodkind & Bicknell 2018; Wilcox et al. 2020) is instead the gain in held-out log-likelihood (ΔLL) of a
linear regression of reading times when the model's surprisal is added to a baseline of word length and frequency,
each predictor entered for the current word and the previous words.

The measure
-----------
* Words, alignment and exclusions are exactly those of :class:`~.futrell2018.Futrell2018Pearsonr` (its docstring:
  the statistics listed at zone ``z - 1`` belong to the word at zone ``z``; words without a reading time and
  sentence-initial words are not scored), and the model output is the same per-word surprisal (bits, summed over
  the word's tokens, each story one cumulative context), so any model that runs Futrell2018-pearsonr runs this.
* Target: the word's mean reading time over readers (ms).
* Baseline predictors, for the current word and the :data:`SPILLOVER` = 3 previous words of the same story (a
  window commonly used for self-paced reading, e.g. by Smith & Levy 2013; fixed before any model was scored):
  length (characters as displayed) and log frequency. Full model: the baseline plus the model's surprisal at the same four positions.
  A preceding word may be sentence-initial (reading runs on across sentences); a window that reaches before the
  story's first word has no predictor and its row is excluded.
* Frequency, from the orchestrator's side, never the model's: the Google Books counts that the Natural Stories
  release ships for this purpose (``naturalstories/freqs/freqs-1.tsv``, code ``<story>.<zone>.word``: the displayed
  word without punctuation; a hyphenated or clitic word, e.g. ``eighty-six-year-old``, is counted as the whole
  sequence of its parts). The file is in the data hash. A word without a count (``Mr.`` and ``Dr.`` are not
  listed) or with a count of 0 (eight rare compounds and names) has no frequency, and rows whose window holds one
  are excluded; every exclusion is counted in ``attrs["excluded"]``. Why not ``wordfreq`` (PyPI; the unigram
  template's source): it estimates a multi-token word from its parts (``1 / f = sum 1 / f_i``, about the rarest
  part's frequency: ``eighty-six-year-old`` gets 17.5 bits), which makes the 51 hyphenated compounds, read slowly,
  look common; with that baseline the unigram model's summed part surprisals "explained" them and 3/4 of its ΔLL
  came from the 2% of words with a compound in their window (checked when this benchmark was defined).
* Cross-validation by story (leave one of the 10 stories out): both regressions (ordinary least squares with an
  intercept) are fit on the other stories, and their residual variance is the training mean squared residual (the
  Gaussian maximum-likelihood estimate). Each held-out word's ΔLL is ``log N(y; full) - log N(y; baseline)``, in
  nats.
* Score: the mean ΔLL per held-out word (``raw``, nats per word), no ceiling and no clipping: it is not bounded
  to [0, 1] (0 is "adds nothing to length and frequency"; it is negative when the surprisal's fitted weights do
  not carry over to the held-out story). ``values``: the mean per held-out story (``raw`` is their word-weighted
  mean); ``attrs["item_values"]`` and ``attrs["item_ids"]`` (``"<story>:<zone>"``): every scored word's ΔLL, for
  paired comparisons that resample the same words for two models.

Bootstrap interval
------------------
``attrs["bootstrap"]``: the moving block bootstrap of Futrell2018-pearsonr, here of the per-word held-out ΔLL:
blocks of :data:`~.futrell2018.BLOCK_WORDS` consecutive scored words drawn within each story, each story keeping
its length. Blocks because neighbouring words share spillover (each word's predictors overlap its three
neighbours') and context, so their ΔLL values are not independent; not stories, because a percentile interval from
10 clusters is unreliable. The regressions are not refit (as for every bootstrap here): the interval covers the
sampling of the scored words given the fitted regressions, not the variability of the fits.

Where it sits: beside the benchmark tree (:data:`~.aggregation.NOT_AGGREGATED`), because the tree clips every leaf
to [0, 1] and averages it with ceiled scores, and a ΔLL in nats per word has neither that range nor a ceiling.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import xarray as xr

from .dims import STIMULUS_ID
from .futrell2018 import BLOCK_WORDS, load_reading_times
from .language import LanguageBenchmark, TextStimulusSet, values_by_stimulus
from .metrics.bootstrap import DEFAULT_N_BOOT, DEFAULT_SEED, bootstrap_record, grouped_block_replicates
from .score import Score

__all__ = ["SPILLOVER", "Futrell2018SpilloverDLL", "heldout_delta_loglik", "load_frequencies", "spillover_design"]

_FOLDER = "naturalstories/naturalstories_RTS"
_TOKENS = f"{_FOLDER}/all_stories.tok"
_WORDINFO = f"{_FOLDER}/processed_wordinfo.tsv"
_FREQS = "naturalstories/freqs/freqs-1.tsv"
#: Previous words whose predictors enter with the current word's (self-paced reading spills over several words).
SPILLOVER = 3


def load_frequencies(data_dir) -> pd.DataFrame:
    """Google Books counts of the displayed words without punctuation (``<story>.<zone>.word`` codes).

    Returns
    -------
    pandas.DataFrame
        Columns ``story``, ``zone``, ``count`` (one row per listed word; words not listed are absent).
    """
    freqs = pd.read_csv(
        data_dir / _FREQS, sep="\t", header=None, names=["code", "order", "token", "count", "context"],
        keep_default_na=False, dtype=str,
    )
    freqs = freqs[freqs["code"].str.endswith(".word")]
    parts = freqs["code"].str.split(".", expand=True)
    return pd.DataFrame(
        {"story": parts[0].astype(int).values, "zone": parts[1].astype(int).values,
         "count": pd.to_numeric(freqs["count"], errors="coerce").values}
    )


def spillover_design(
    stories: np.ndarray, length: np.ndarray, log_frequency: np.ndarray, surprisal: np.ndarray, spillover: int = SPILLOVER
) -> tuple[np.ndarray, np.ndarray]:
    """Baseline and full predictors of every word in reading order, with lags ``0 .. spillover`` within each story.

    Parameters
    ----------
    stories : (n,) array
        Story of each word; the words of a story contiguous and in reading order.
    length, log_frequency, surprisal : (n,) arrays
        Per-word predictors (NaN: unknown).

    Returns
    -------
    baseline, full : (n, 2 (spillover + 1)) and (n, 3 (spillover + 1)) float arrays
        Columns ``length_0 .. length_S, logfreq_0 .. logfreq_S`` (+ ``surprisal_0 .. surprisal_S``), no intercept;
        NaN where a lag reaches before the story's first word or a predictor is unknown.
    """
    stories = np.asarray(stories)
    n = len(stories)

    def lagged(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        out = np.full((n, spillover + 1), np.nan)
        for k in range(spillover + 1):
            out[k:, k] = x[: n - k]
            out[k:, k][stories[k:] != stories[: n - k]] = np.nan  # never across stories
        return out

    baseline = np.hstack([lagged(length), lagged(log_frequency)])
    return baseline, np.hstack([baseline, lagged(surprisal)])


def _gaussian_loglik(y: np.ndarray, mean: np.ndarray, variance: float) -> np.ndarray:
    return -0.5 * (math.log(2 * math.pi * variance) + (y - mean) ** 2 / variance)


def heldout_delta_loglik(
    y: np.ndarray, baseline: np.ndarray, full: np.ndarray, folds: np.ndarray
) -> tuple[np.ndarray, dict[str, object]]:
    """Per-row held-out ΔLL (nats) of the full over the baseline regression, each fold held out in turn.

    Both are OLS regressions with an intercept, fit on the rows of the other folds; a regression's residual
    variance is its training mean squared residual. Rows must be complete (no NaN).

    Returns
    -------
    delta : (n,) array
        ``log N(y_i; x_full_i b_full, s2_full) - log N(y_i; x_base_i b_base, s2_base)`` for every row, each from the
        fit without its fold.
    details : dict
        Per fold (in sorted order): ``folds``, ``n_test``, ``delta_ll`` (mean), ``loglik_baseline`` and
        ``loglik_full`` (mean held-out log-likelihood per row).
    """
    y = np.asarray(y, dtype=np.float64)
    folds = np.asarray(folds)
    designs = [np.column_stack([np.ones(len(y)), np.asarray(x, dtype=np.float64)]) for x in (baseline, full)]
    if not all(np.isfinite(x).all() for x in designs) or not np.isfinite(y).all():
        raise ValueError("held-out ΔLL needs complete rows (exclude rows with missing values first)")
    labels = np.unique(folds)
    if len(labels) < 2:
        raise ValueError("cross-validation by story needs at least 2 stories")
    loglik = np.empty((2, len(y)))
    for label in labels:
        test = folds == label
        for i, x in enumerate(designs):
            beta, *_ = np.linalg.lstsq(x[~test], y[~test], rcond=None)
            variance = float(np.mean((y[~test] - x[~test] @ beta) ** 2))
            loglik[i, test] = _gaussian_loglik(y[test], x[test] @ beta, variance)
    delta = loglik[1] - loglik[0]
    per_fold = [folds == label for label in labels]
    details: dict[str, object] = {
        "folds": [str(label) for label in labels],
        "n_test": [int(m.sum()) for m in per_fold],
        "delta_ll": [float(delta[m].mean()) for m in per_fold],
        "loglik_baseline": [float(loglik[0, m].mean()) for m in per_fold],
        "loglik_full": [float(loglik[1, m].mean()) for m in per_fold],
    }
    return delta, details


class Futrell2018SpilloverDLL(LanguageBenchmark):
    """See the module docstring. ``stories`` restricts the benchmark to some stories (tests; at least 2, since the
    folds are stories; the registered benchmark uses all 10)."""

    identifier = "Futrell2018-spillover_dll"
    version = 1
    region = "reading_times"
    kind = "behaviour"
    behaviour = "surprisal"
    metric_name = "spillover_delta_loglik"
    description = (
        "Natural Stories self-paced reading (10 stories): held-out gain in log-likelihood per word (nats; no ceiling) "
        "of a linear regression of mean reading times when the model's surprisal of the current and 3 previous words "
        "is added to their length and log frequency (Google Books counts shipped with the corpus), leave-one-story-out "
        "(Goodkind & Bicknell 2018; Wilcox et al. 2020). Words, alignment and exclusions as Futrell2018-pearsonr. "
        "Not averaged into the language tree: an unbounded ΔLL cannot be clipped to [0, 1] and averaged with ceiled scores."
    )
    citation = (
        "Futrell R, Gibson E, Tily HJ, Blank I, Vishnevetsky A, Piantadosi ST, Fedorenko E (2021). The Natural "
        "Stories corpus. Language Resources and Evaluation 55:63-77. Measure: Goodkind A, Bicknell K (2018), "
        "Predictive power of word surprisal for reading times is a linear function of language model quality, CMCL; "
        "Wilcox EG, Gauthier J, Hu J, Qian P, Levy R (2020), On the predictive power of neural language models for "
        "human real-time comprehension behavior, CogSci."
    )

    #: Bootstrap (:mod:`.metrics.bootstrap`): replicates and the generator's seed.
    n_boot = DEFAULT_N_BOOT
    seed = DEFAULT_SEED
    spillover = SPILLOVER

    def __init__(self, *, data_dir=None, cache_dir=None, stories: Sequence[int] | None = None) -> None:
        super().__init__(data_dir=data_dir, cache_dir=cache_dir)
        self.stories = None if stories is None else sorted(int(s) for s in stories)
        if self.stories is not None:
            if len(self.stories) < 2:
                raise ValueError("cross-validation by story needs at least 2 stories")
            self.identifier = f"{type(self).identifier}[stories={','.join(map(str, self.stories))}]"

    def _data_files(self) -> list[str]:
        return [_TOKENS, _WORDINFO, _FREQS]

    @property
    def words(self) -> pd.DataFrame:
        """Every displayed word in reading order (:func:`~.futrell2018.load_reading_times`), with ``length`` and
        ``log_frequency`` (natural log of the Google Books count; NaN where there is none or it is 0)."""
        frame = load_reading_times(self.data_dir)
        if self.stories is not None:
            frame = frame[frame["story"].isin(self.stories)].reset_index(drop=True)
        counts = load_frequencies(self.data_dir)
        frame = frame.merge(counts, on=["story", "zone"], how="left", validate="one_to_one")
        frame["length"] = frame["word"].str.len().astype(float)
        with np.errstate(divide="ignore"):
            frame["log_frequency"] = np.log(frame["count"].where(frame["count"] > 0)).astype(float)
        return frame

    def _load_stimulus_set(self) -> TextStimulusSet:
        frame = load_reading_times(self.data_dir)
        if self.stories is not None:
            frame = frame[frame["story"].isin(self.stories)].reset_index(drop=True)
        parts = [(sid, word, f"story{story}") for sid, word, story in zip(frame["stimulus_id"], frame["word"], frame["story"])]
        return TextStimulusSet(self.identifier, parts)

    def _surprisal(self, assembly: xr.DataArray, stimulus_ids: Sequence[str]) -> np.ndarray:
        """Surprisal per word of ``stimulus_ids`` (NaN for a word the assembly lacks; non-finite values raise)."""
        if STIMULUS_ID not in assembly.coords:
            raise ValueError("the assembly has no stimulus_id coordinate")
        present = set(str(s) for s in assembly[STIMULUS_ID].values)
        have = [s for s in stimulus_ids if s in present]
        values = values_by_stimulus(assembly, have)
        if values.shape[1] != 1:
            raise ValueError(f"expected one value (surprisal) per word, got {values.shape[1]}")
        lookup = dict(zip(have, values[:, 0]))
        return np.array([lookup.get(s, np.nan) for s in stimulus_ids], dtype=np.float64)

    def score(self, assembly: xr.DataArray) -> Score:
        """Score per-word surprisal.

        Parameters
        ----------
        assembly : xarray.DataArray
            ``(presentation, neuroid)`` with one neuroid (the surprisal) and a ``stimulus_id`` per word of
            :attr:`stimulus_set`. A word it lacks has no surprisal: the rows whose window holds it are excluded.
        """
        words = self.words
        surprisal = self._surprisal(assembly, list(words["stimulus_id"]))
        baseline, full = spillover_design(
            words["story"].to_numpy(), words["length"].to_numpy(), words["log_frequency"].to_numpy(), surprisal,
            self.spillover,
        )
        s = self.spillover + 1
        # exclusions, each row counted once under the first reason that applies
        reasons = {
            "no_reading_time": words["mean_rt"].isna().to_numpy(),
            "sentence_initial": words["sentence_initial"].to_numpy(),
            "window_before_story_start": np.isnan(baseline[:, 0:s]).any(axis=1),
            "no_frequency_in_window": np.isnan(baseline[:, s:]).any(axis=1),
            "no_surprisal_in_window": np.isnan(full[:, 2 * s :]).any(axis=1),
        }
        keep = np.ones(len(words), dtype=bool)
        excluded: dict[str, int] = {}
        for reason, mask in reasons.items():
            excluded[reason] = int((keep & mask).sum())
            keep &= ~mask
        rows = np.flatnonzero(keep)
        stories = words["story"].to_numpy()[rows]
        y = words["mean_rt"].to_numpy(dtype=np.float64)[rows]
        delta, details = heldout_delta_loglik(y, baseline[rows], full[rows], stories)
        raw = float(delta.mean())
        n_test = np.asarray(details["n_test"], dtype=np.float64)
        per_story = np.asarray(details["delta_ll"], dtype=np.float64)
        weights = n_test / n_test.sum()
        error = math.sqrt(float(weights @ (per_story - raw) ** 2) / len(per_story))
        item_ids = [f"{story}:{zone}" for story, zone in zip(stories, words["zone"].to_numpy()[rows])]
        attrs: dict[str, object] = {
            "metric": "spillover_delta_loglik",
            "unit": "nats per word",
            "n_words": int(len(rows)),
            "n_stories": len(per_story),
            "spillover": self.spillover,
            "predictors": {
                "baseline": [f"{p}_{k}" for p in ("length", "log_frequency") for k in range(s)],
                "added": [f"surprisal_{k}" for k in range(s)],
                "lag": "k = words before the current one, within the story",
            },
            "frequency_source": f"Google Books counts, {_FREQS} (<story>.<zone>.word codes), natural log",
            "excluded": excluded,
            "cross_validation": "leave one story out; OLS with intercept; residual variance = training mean squared residual",
            "folds": details,
            **self._provenance(),
            "alignment": "statistics listed at zone z-1 assigned to the word at zone z",
            "item_values": delta.tolist(),  # plain floats: attrs are stored as JSON with the score
            "item_ids": item_ids,
        }
        samples = None
        if self.n_boot:
            samples = self._bootstrap(stories, delta)
            attrs["bootstrap"] = bootstrap_record(
                samples, raw, seed=self.seed, resampled=["words"], block_words=BLOCK_WORDS,
                method=f"percentile moving block bootstrap of the held-out per-word ΔLL ({BLOCK_WORDS}-word blocks within "
                "each story, each story keeping its length); regressions not refit; stories fixed",
            )
        return Score(raw=raw, error=error, values=per_story.tolist(), attrs=attrs, bootstrap_samples=samples)

    def _bootstrap(self, stories: np.ndarray, delta: np.ndarray) -> np.ndarray:
        """Replicates of the mean per-word ΔLL under a moving block bootstrap of words within stories."""
        return grouped_block_replicates(stories, BLOCK_WORDS, self.n_boot, self.seed,
                                        lambda counts: counts @ delta / counts.sum(axis=1))
