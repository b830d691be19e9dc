"""Unigram baseline: a word's surprisal is -log2 of its frequency in English (PyPI ``wordfreq`` 3.1.1), ignoring
all context. The standard zero-parameter baseline predictor of reading times.

Per part: ``surprisal`` = sum over wordfreq's tokens of the part of -log2 frequency (a token wordfreq has never
seen gets the floor frequency 1e-9, about 29.9 bits; a part with no word token, e.g. "--", gets 0 bits);
``next_word`` = "the" (the most frequent English word, whatever the context); layer ``log_frequency``
(shape (1,)) = the same surprisal, so the model can also be scored on neural benchmarks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from cortexbox.sdk import Output, Stimulus, TextModel

FLOOR = 1e-9


class Unigram(TextModel):
    model_id = "unigram-wordfreq"
    model_version = "1"
    description = "Context-free unigram surprisal from wordfreq 3.1.1 (English, 'best' wordlist)."
    max_batch_size = 1024
    max_context_tokens = 1_000_000
    metadata = {"framework": "wordfreq 3.1.1", "licence": "Apache-2.0 (code), CC BY-SA 4.0 (data)"}

    def load(self) -> None:
        import wordfreq

        self.wordfreq = wordfreq
        self.wordfreq.word_frequency("the", "en")  # loads the word list now, not during the first run

    def layers(self) -> Sequence[Output]:
        return [Output("log_frequency", (1,), description="-log2 unigram frequency (bits), summed over the part's words")]

    def behaviour_outputs(self) -> Sequence[Output]:
        return [Output("surprisal", (1,), description="bits, context-free"), Output("next_word", (1,), dtype="str")]

    def count_tokens(self, text: str) -> int | None:
        return len(self.wordfreq.tokenize(text, "en"))

    def surprisal(self, text: str) -> float:
        tokens = self.wordfreq.tokenize(text, "en")
        return float(sum(-math.log2(max(self.wordfreq.word_frequency(t, "en"), FLOOR)) for t in tokens))

    def digest(self, parts: Sequence[Stimulus], layers: Sequence[str], behaviours: Sequence[str]) -> Mapping[str, np.ndarray]:
        values = np.array([[self.surprisal(p.text)] for p in parts], dtype=np.float32)
        out: dict[str, np.ndarray] = {}
        if "log_frequency" in layers:
            out["log_frequency"] = values
        if "surprisal" in behaviours:
            out["surprisal"] = values
        if "next_word" in behaviours:
            out["next_word"] = np.full((len(parts), 1), "the", dtype=object)
        return out
