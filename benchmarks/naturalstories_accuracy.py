"""NaturalStories-accuracy: next-word prediction accuracy on the Natural Stories texts (engineering).

Brain-Score language's ``Wikitext-accuracy`` (``shared/research/brainscore.md`` 4.8: the model reads a text word by
word, its ``next_word`` after each word is compared with the word that follows; engineering, no ceiling) on the
texts cortexbox already holds: the 10 Natural Stories (10,256 words), each read as one cumulative context, exactly
the stimulus set of ``Futrell2018-pearsonr`` (so both read the same contexts).

Score: for every word but the last of its story, the model's ``next_word`` (behaviour, a string: for a causal LM the
most likely next token, decoded) is compared with the next word of the story. Both are compared after stripping
punctuation from their ends and case-folding (the stories attach punctuation to words, "Tulip," and ``"Yes``, which
a token-level prediction cannot carry; Brain-Score's wikitext words are already separated from punctuation); a
next word that is punctuation only is not scored. ``raw`` is the fraction of scored positions whose prediction
matches; ``values`` are the per-story accuracies and ``error`` their standard error. No ceiling: an engineering
benchmark in the ``engineering_language`` root, where the raw score counts.
"""

from __future__ import annotations

import math
import re

import numpy as np
import xarray as xr

from .dims import STIMULUS_ID
from .futrell2018 import _TOKENS, load_reading_times
from .language import LanguageBenchmark, TextStimulusSet
from .score import Score

__all__ = ["NaturalStoriesAccuracy", "normalise_word"]

_EDGES = re.compile(r"^[\W_]+|[\W_]+$", re.UNICODE)


def normalise_word(word: str) -> str:
    """``word`` without punctuation at its ends, case-folded (``'"Tulip,'`` -> ``"tulip"``)."""
    return _EDGES.sub("", str(word).strip()).casefold()


class NaturalStoriesAccuracy(LanguageBenchmark):
    """See the module docstring."""

    identifier = "NaturalStories-accuracy"
    version = 1
    region = "engineering"
    kind = "behaviour"
    behaviour = "next_word"
    description = (
        "Next-word accuracy on the 10 Natural Stories (10,256 words, each story one context, as Futrell2018): the "
        "model's next_word after each word against the following word, punctuation stripped and case-folded; "
        "engineering (Brain-Score's Wikitext-accuracy on these texts), no ceiling."
    )
    citation = (
        "Futrell R, Gibson E, Tily HJ, Blank I, Vishnevetsky A, Piantadosi ST, Fedorenko E (2021). The Natural "
        "Stories corpus. Language Resources and Evaluation 55:63-77."
    )

    def __init__(self, *, data_dir=None, cache_dir=None, stories=None) -> None:
        super().__init__(data_dir=data_dir, cache_dir=cache_dir)
        self.stories = None if stories is None else sorted(int(s) for s in stories)
        if self.stories is not None:
            self.identifier = f"{type(self).identifier}[stories={','.join(map(str, self.stories))}]"

    def _data_files(self) -> list[str]:
        return [_TOKENS]

    def _frame(self):
        frame = load_reading_times(self.data_dir)[["stimulus_id", "story", "word"]]
        if self.stories is not None:
            frame = frame[frame["story"].isin(self.stories)].reset_index(drop=True)
        return frame

    def _load_stimulus_set(self) -> TextStimulusSet:
        frame = self._frame()
        parts = [(sid, word, f"story{story}") for sid, word, story in zip(frame["stimulus_id"], frame["word"], frame["story"])]
        return TextStimulusSet(self.identifier, parts)

    def score(self, assembly: xr.DataArray) -> Score:
        """Score next-word predictions.

        Parameters
        ----------
        assembly : xarray.DataArray
            ``(presentation, neuroid)`` with one neuroid (the predicted next word, a string) and a ``stimulus_id``
            per word of :attr:`stimulus_set`.
        """
        ids = [str(s) for s in assembly[STIMULUS_ID].values]
        values = np.asarray(assembly.values, dtype=object).reshape(len(ids), -1)
        if values.shape[1] != 1:
            raise ValueError(f"expected one value (the next word) per word, got {values.shape[1]}")
        predicted = dict(zip(ids, values[:, 0]))
        frame = self._frame()
        missing = [s for s in frame["stimulus_id"] if s not in predicted]
        if missing:
            raise ValueError(f"the assembly lacks {len(missing)} stimulus ids, e.g. {missing[:3]}")
        per_story, hits, total = {}, 0, 0
        for story, words in frame.groupby("story", sort=True):
            sids, texts = list(words["stimulus_id"]), list(words["word"])
            pairs = [(normalise_word(predicted[s]), normalise_word(t)) for s, t in zip(sids[:-1], texts[1:])]
            pairs = [(p, t) for p, t in pairs if t]
            correct = sum(p == t for p, t in pairs)
            per_story[int(story)] = correct / len(pairs)
            hits, total = hits + correct, total + len(pairs)
        accuracies = list(per_story.values())
        return Score(
            raw=hits / total,
            error=float(np.std(accuracies) / math.sqrt(len(accuracies))) if len(accuracies) > 1 else math.nan,
            values=accuracies,
            attrs={
                "metric": "next_word_accuracy",
                "n_scored": total,
                "per_story": per_story,
                **self._provenance(),
            },
        )
