"""Futrell2018-pearsonr: per-word surprisal against mean self-paced reading times of the Natural Stories corpus.

Brain-Score language's ``Futrell2018-pearsonr`` (``shared/research/brainscore.md`` 4.8): the model reads each of the
10 stories as one cumulative context, word by word, and returns the surprisal of every word (bits, summed over its
tokens); the score is the Pearson r between surprisal and the per-word mean reading time over readers, with the
first word of every sentence excluded, divided by a ceiling and clipped to [0, 1].

Alignment fix (data version 2025-05-13, ``shared/research/data.md`` 2.4)
-------------------------------------------------------------------------
``processed_wordinfo.tsv`` lists its per-word statistics one position early: the value on the row of zone ``z``
belongs to the word at zone ``z + 1``. Evidence, checked by ``tests/benchmarks/test_benchmarks_futrell2018.py``:
regressing the listed mean RT on the lengths of the words at ``z-2 .. z+2`` gives the *next* word's length about
the same weight as the current word's, which word-by-word self-paced reading (no preview) cannot produce; after
shifting the statistics one position later within each story the weights of the upcoming words vanish. The loader
therefore gives the word at zone ``z`` the row listed at ``z - 1`` (mean, sd and reader count together); the
first word of each story has no reading time and is dropped with the other sentence-initial words.

Ceiling
-------
The per-subject reading times are not in the data snapshot, so Brain-Score's split-half ceiling (.858) cannot be
recomputed. The ceiling is the reliability of the per-word means from their standard deviations and reader counts
(:class:`~cortexbox.benchmarks.metrics.ItemStatisticsCeiling`: ``1 - mean(sd**2 / n) / var(mean)``, over the
scored words), the same quantity a Spearman-Brown corrected split-half estimates. ``ceiled = clip(r / ceiling, 0,
1)`` as in Brain-Score language.

Bootstrap interval
------------------
``attrs["bootstrap"]``: a moving block bootstrap of the scored words, blocks of :data:`BLOCK_WORDS` consecutive words
drawn within each story (each story keeps its length; blocks never cross stories). Why blocks and not single
words: neighbouring words share spillover and sentence context, so their reading times are not independent, and
single-word resampling would be too narrow. Why not stories: with 10 stories a cluster bootstrap has 10 units and
its percentile interval is unreliable, and the score is one pooled correlation whose stories are the benchmark's
fixed material. The interval therefore covers new word sequences from these texts, not new texts.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
import xarray as xr

from .language import LanguageBenchmark, TextStimulusSet, values_by_stimulus
from .metrics import ItemStatisticsCeiling, pearson_r_score
from .metrics.bootstrap import (
    DEFAULT_N_BOOT,
    DEFAULT_SEED,
    bootstrap_record,
    grouped_block_replicates,
    weighted_pearson,
)
from .metrics.normalization import explained_variance
from .score import Score

__all__ = ["Futrell2018Pearsonr", "load_reading_times"]

_FOLDER = "naturalstories/naturalstories_RTS"
_TOKENS = f"{_FOLDER}/all_stories.tok"
_WORDINFO = f"{_FOLDER}/processed_wordinfo.tsv"
#: A word that ends a sentence: final . ! or ?, possibly followed by closing quotes or brackets.
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*$")
#: Words per block of the moving block bootstrap (about n ** (1/3) for the ~9,000 scored words; a sentence or two).
BLOCK_WORDS = 20


def load_reading_times(data_dir, *, shift: int = 1) -> pd.DataFrame:
    """One row per displayed word of the 10 stories, in reading order, with the aligned statistics.

    Parameters
    ----------
    data_dir : path
        The shared data folder.
    shift : int, default=1
        Positions the listed statistics are moved later within each story (1 is the fix described in the module
        docstring; 0 reads them as listed, for the alignment test).

    Returns
    -------
    pandas.DataFrame
        Columns ``stimulus_id`` (``"<story>.<zone>"``), ``story``, ``zone``, ``word``, ``sentence_initial``,
        ``mean_rt``, ``sd_rt``, ``n_readers`` (NaN where no reading time belongs to the word).
    """
    tokens = pd.read_csv(data_dir / _TOKENS, sep="\t", keep_default_na=False, dtype={"word": str})
    info = pd.read_csv(data_dir / _WORDINFO, sep="\t", keep_default_na=False, dtype={"word": str})
    tokens = tokens.sort_values(["item", "zone"]).reset_index(drop=True)
    info = info.sort_values(["item", "zone"]).reset_index(drop=True)
    if not (tokens[["item", "zone", "word"]].values == info[["item", "zone", "word"]].values).all():
        raise ValueError("all_stories.tok and processed_wordinfo.tsv list different words")
    grouped = info.groupby("item")
    frame = pd.DataFrame(
        {
            "stimulus_id": [f"{i}.{z}" for i, z in zip(tokens["item"], tokens["zone"])],
            "story": tokens["item"].astype(int),
            "zone": tokens["zone"].astype(int),
            "word": tokens["word"],
            "mean_rt": grouped["meanItemRT"].shift(shift),
            "sd_rt": grouped["sdItemRT"].shift(shift),
            "n_readers": grouped["nItem"].shift(shift),
        }
    )
    previous = frame.groupby("story")["word"].shift(1)
    frame["sentence_initial"] = previous.isna() | previous.fillna("").str.contains(_SENTENCE_END)
    return frame


class Futrell2018Pearsonr(LanguageBenchmark):
    """See the module docstring. ``stories`` restricts the benchmark to some stories (tests; the registered
    benchmark uses all 10)."""

    identifier = "Futrell2018-pearsonr"
    version = 1
    region = "reading_times"
    kind = "behaviour"
    behaviour = "surprisal"
    description = (
        "Natural Stories self-paced reading (10 stories, 10,256 words): Pearson r of per-word surprisal with mean "
        "reading times (statistics re-aligned one position; sentence-initial words excluded), over a reliability "
        "ceiling from per-word SDs and reader counts."
    )
    citation = (
        "Futrell R, Gibson E, Tily HJ, Blank I, Vishnevetsky A, Piantadosi ST, Fedorenko E (2021). The Natural "
        "Stories corpus. Language Resources and Evaluation 55:63-77."
    )

    #: Bootstrap (:mod:`.metrics.bootstrap`): replicates and the generator's seed.
    n_boot = DEFAULT_N_BOOT
    seed = DEFAULT_SEED

    def __init__(self, *, data_dir=None, cache_dir=None, stories: Sequence[int] | None = None) -> None:
        super().__init__(data_dir=data_dir, cache_dir=cache_dir)
        self.stories = None if stories is None else sorted(int(s) for s in stories)
        if self.stories is not None:
            self.identifier = f"{type(self).identifier}[stories={','.join(map(str, self.stories))}]"

    def _data_files(self) -> list[str]:
        return [_TOKENS, _WORDINFO]

    @property
    def words(self) -> pd.DataFrame:
        frame = load_reading_times(self.data_dir)
        if self.stories is not None:
            frame = frame[frame["story"].isin(self.stories)].reset_index(drop=True)
        return frame

    def _load_stimulus_set(self) -> TextStimulusSet:
        frame = self.words
        parts = [(sid, word, f"story{story}") for sid, word, story in zip(frame["stimulus_id"], frame["word"], frame["story"])]
        return TextStimulusSet(self.identifier, parts)

    @property
    def scored(self) -> pd.DataFrame:
        """The words scored: with a reading time, not sentence-initial."""
        frame = self.words
        return frame[frame["mean_rt"].notna() & ~frame["sentence_initial"]].reset_index(drop=True)

    def _compute_ceiling(self) -> Score:
        scored = self.scored
        ceiling = ItemStatisticsCeiling()(scored["mean_rt"].values, scored["sd_rt"].values, scored["n_readers"].values)
        return dataclasses.replace(ceiling, attrs={**ceiling.attrs, "benchmark": self.identifier})

    def score(self, assembly: xr.DataArray) -> Score:
        """Score per-word surprisal.

        Parameters
        ----------
        assembly : xarray.DataArray
            ``(presentation, neuroid)`` with one neuroid (the surprisal) and a ``stimulus_id`` per word of
            :attr:`stimulus_set` (sentence-initial words may be absent; they are not scored).
        """
        scored = self.scored
        values = values_by_stimulus(assembly, list(scored["stimulus_id"]))
        if values.shape[1] != 1:
            raise ValueError(f"expected one value (surprisal) per word, got {values.shape[1]}")
        r = float(pearson_r_score(scored["mean_rt"].values, values[:, 0]))
        n = len(scored)
        error = math.sqrt(max(1 - r * r, 0.0) / (n - 2)) if math.isfinite(r) else math.nan
        raw = Score(
            raw=r,
            error=error,
            values=[r],
            attrs={
                "metric": "pearsonr",
                "n_words": n,
                **self._provenance(),
                "alignment": "statistics listed at zone z-1 assigned to the word at zone z",
            },
        )
        if self.n_boot:
            samples = self._bootstrap(scored["story"].to_numpy(), scored["mean_rt"].to_numpy(), values[:, 0])
            raw = dataclasses.replace(raw, bootstrap_samples=samples, attrs={**raw.attrs, "bootstrap": bootstrap_record(
                samples, r, seed=self.seed, resampled=["words"], block_words=BLOCK_WORDS,
                method=f"percentile moving block bootstrap of words ({BLOCK_WORDS}-word blocks within each story,"
                " each story keeping its length); stories fixed",
            )})
        return explained_variance(raw, self._ceiling(), regime="raw_over_ceiling_clipped")

    def _bootstrap(self, stories: np.ndarray, reading_times: np.ndarray, surprisal: np.ndarray) -> np.ndarray:
        """Replicates of Pearson r(reading time, surprisal) under a moving block bootstrap of words within stories."""
        return grouped_block_replicates(
            stories, BLOCK_WORDS, self.n_boot, self.seed,
            lambda counts: weighted_pearson(counts, reading_times[:, None], surprisal[:, None])[:, 0])
