"""The few things a model author writes: a Model subclass with load() and activations().

Everything else (the gRPC server, chunking, health, cancellation, error mapping) belongs to
the SDK, so that every model speaks the protocol the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np


@dataclass(frozen=True)
class Output:
    """One output the model produces per stimulus: a layer or a behaviour.

    `shape` is the per-stimulus shape (no batch dimension), e.g. (256, 13, 13) for a
    convolutional layer or (1001,) for logits.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("an output needs a name")
        shape = tuple(int(s) for s in self.shape)
        if not shape or any(s <= 0 for s in shape):
            raise ValueError(f"output {self.name!r}: shape must be non-empty and positive, got {self.shape}")
        object.__setattr__(self, "shape", shape)
        np.dtype(self.dtype)  # raises on nonsense


@dataclass(frozen=True)
class Stimulus:
    """One stimulus as the model receives it.

    Image models get `pixels`: height x width x 3 uint8 RGB, already placed at the model's
    visual degrees by the orchestrator. Text models get `text`, and `context_id` groups the
    parts of one cumulative context.
    """

    id: str
    pixels: np.ndarray | None = None
    text: str | None = None
    context_id: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)


class StimulusError(ValueError):
    """Raise from model code when a stimulus cannot be processed (maps to BAD_STIMULUS)."""

    def __init__(self, stimulus_id: str, message: str):
        super().__init__(f"stimulus {stimulus_id!r}: {message}")
        self.stimulus_id = stimulus_id


class Model:
    """Base class for a model served by cortexbox.

    Subclasses set the class attributes and implement `load`, `layers` and `activations`;
    `behaviours` and `behaviour_outputs` are optional. The SDK calls `load` once, in the
    background, before reporting SERVING; then `activations` / `behaviours` once per batch,
    from a single worker thread.
    """

    #: Identity shown on the leaderboard (the image digest identifies the exact build).
    model_id: str = "unnamed-model"
    model_version: str = "0"
    description: str = ""
    #: "image" or "text".
    modality: str = "image"
    #: Degrees of visual angle the model's input spans (Brain-Score's default is 8).
    visual_degrees: float = 8.0
    #: Commitments of layers to regions, e.g. {"V4": "features.8"}; others are chosen for you.
    region_layers: Mapping[str, str] = {}
    #: Layers worth considering when the orchestrator commits a layer to a region that
    #: `region_layers` leaves open (e.g. block outputs); empty means every layer.
    commitment_layers: Sequence[str] = ()
    #: Most stimuli per forward pass; keep a batch under about a second of compute so that
    #: cancellation is prompt.
    max_batch_size: int = 32
    #: Text models: the longest context in tokens.
    max_context_tokens: int = 0
    #: Free-form facts: framework, weights checksum, licence, paper.
    metadata: Mapping[str, str] = {}

    def load(self) -> None:
        """Load weights. Runs once before the server reports SERVING."""

    def layers(self) -> Sequence[Output]:
        """Every internal representation the model exposes (may use loaded weights)."""
        raise NotImplementedError

    def activations(self, stimuli: Sequence[Stimulus], layers: Sequence[str]) -> Mapping[str, np.ndarray]:
        """Return {layer: array of shape (len(stimuli), *Output.shape)} for each requested layer."""
        raise NotImplementedError

    def behaviour_outputs(self) -> Sequence[Output]:
        """Behavioural readouts the model offers, e.g. Output("logits", (1001,))."""
        return ()

    def behaviours(self, stimuli: Sequence[Stimulus], names: Sequence[str]) -> Mapping[str, np.ndarray]:
        """Return {behaviour: array of shape (len(stimuli), *Output.shape)}."""
        raise NotImplementedError


class TextModel(Model):
    """Base class for a language model: the SDK hands it one whole context at a time.

    A run streams text parts; parts with the same `context_id` form one cumulative context
    (Brain-Score's `digest_text` semantics: state carries across the parts of one context,
    never across contexts). The SDK collects the parts of a context, checks them (non-empty,
    no part longer than `max_context_tokens` by `count_tokens`), and calls `digest` once with
    all of them, in order (or `digest_batch` with up to `max_batch_contexts` whole contexts), so that the model can run one pass over the context (a causal LM:
    one forward pass, or a KV cache) instead of recomputing the growing context per part.

    Conventions every cortexbox text model follows (and the benchmarks rely on):

    * parts are words or regions without surrounding spaces; the model joins them with one
      space and tokenises them itself;
    * a layer's value for a part is the representation at the part's last token;
    * behaviour ``surprisal`` (shape (1,), float32) is -log2 p(part | earlier parts), summed
      over the part's tokens, in bits; behaviour ``next_word`` (shape (1,), dtype "str") is the
      model's most likely next word after the part.
    """

    modality: str = "text"
    #: The longest context in the model's own tokens (required for text models).
    max_context_tokens: int = 0
    #: Most whole contexts the SDK hands to `digest_batch` at once. 1 (the default): `digest`
    #: is called once per context as soon as the context ends. More lets a model run many short
    #: contexts (one sentence each) in one padded pass; the SDK then waits for that many
    #: contexts (or the end of the run) before computing.
    max_batch_contexts: int = 1

    def count_tokens(self, text: str) -> int | None:
        """Tokens of one part as the model would tokenise it (used to refuse parts longer than
        the context with a clear BAD_STIMULUS); None when unknown."""
        return None

    def digest(
        self, parts: Sequence[Stimulus], layers: Sequence[str], behaviours: Sequence[str]
    ) -> Mapping[str, np.ndarray]:
        """One context, all its parts in order -> {output: array (len(parts), *Output.shape)}
        for every requested layer and behaviour."""
        raise NotImplementedError

    def digest_batch(
        self, contexts: Sequence[Sequence[Stimulus]], layers: Sequence[str], behaviours: Sequence[str]
    ) -> Sequence[Mapping[str, np.ndarray]]:
        """Several whole contexts (at most `max_batch_contexts`) -> one `digest` result per
        context, in order. Each context is independent (no state carries between them); the
        results must equal `digest` on each context alone. The default calls `digest` per
        context; override it to batch."""
        return [self.digest(parts, layers, behaviours) for parts in contexts]

    def activations(self, stimuli: Sequence[Stimulus], layers: Sequence[str]) -> Mapping[str, np.ndarray]:
        return self.digest(stimuli, layers, ())

    def behaviours(self, stimuli: Sequence[Stimulus], names: Sequence[str]) -> Mapping[str, np.ndarray]:
        return self.digest(stimuli, (), names)
