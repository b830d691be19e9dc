"""What language benchmarks share: text stimulus sets and the benchmark base class.

A language benchmark streams text parts (words or regions) grouped into contexts (a story, a sentence): parts with
the same ``context_id`` form one cumulative context, sent contiguously and in order (Brain-Score's ``digest_text``
semantics). Words are the benchmark's business; tokens are the model's.

Every language benchmark exposes, besides ``identifier``, ``version``, ``region``, ``description``, ``citation``,
``data_hash``, ``ceiling`` (a :class:`Score` or ``None``) and ``score(assembly)``:

* ``modality = "text"`` and ``stimulus_set``, a :class:`TextStimulusSet`;
* ``kind``: ``"behaviour"`` with ``behaviour`` naming the model output it scores (``"surprisal"``), or
  ``"neural"``, where the orchestrator commits a layer by :func:`committed_layer` (never by selecting on the
  scored data).

The language benchmarks import this module, never the other way round: the registry lists them
(:func:`cortexbox.benchmarks.registry.language_benchmarks`) and the aggregation tree places them
(:func:`cortexbox.benchmarks.aggregation.language_tree`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from functools import cached_property

import numpy as np
import xarray as xr

from .base import BenchmarkBase, Kind, Modality
from .dims import STIMULUS_ID

__all__ = [
    "LANGUAGE_LAYER_DEPTH",
    "LanguageBenchmark",
    "TextStimulusSet",
    "committed_layer",
]

#: Relative depth of the layer committed to a language region when the model commits none itself: the layer at
#: ``round((n_layers - 1) * 2/3)`` of its candidate layers, in the order the model lists them. Intermediate-to-late
#: layers of transformer LMs predict language-network fMRI best (Schrimpf et al. 2021, PNAS; Caucheteux & King
#: 2022), and a fixed depth is a rule decided before any scoring, as Brain-Score language's fixed
#: ``region_layer_mapping`` is.
LANGUAGE_LAYER_DEPTH = 2 / 3


def committed_layer(candidates: Sequence[str], depth: float = LANGUAGE_LAYER_DEPTH) -> str:
    """The layer at relative ``depth`` of ``candidates`` (listed input to output); see :data:`LANGUAGE_LAYER_DEPTH`."""
    if not candidates:
        raise ValueError("the model exposes no layer to commit")
    return list(candidates)[int(round((len(candidates) - 1) * depth))]


class TextStimulusSet:
    """Text parts, each ``(stimulus_id, text, context_id)``, in the order they are streamed.

    Parameters
    ----------
    identifier : str
    parts : sequence of (str, str, str)
        Unique stimulus ids; non-empty texts; the parts of a context contiguous and in reading order.

    Raises
    ------
    ValueError
        Duplicate ids, an empty text, or a context that is interrupted by another.
    """

    def __init__(self, identifier: str, parts: Sequence[tuple[str, str, str]]) -> None:
        self.identifier = identifier
        self.parts = [(str(s), str(t), str(c)) for s, t, c in parts]
        ids = [p[0] for p in self.parts]
        if len(set(ids)) != len(ids):
            raise ValueError(f"{identifier}: stimulus ids must be unique")
        closed: set[str] = set()
        previous = None
        for sid, text, context in self.parts:
            if not text.strip():
                raise ValueError(f"{identifier}: stimulus {sid!r} has empty text")
            if context != previous:
                if context in closed:
                    raise ValueError(f"{identifier}: context {context!r} is not contiguous (at {sid!r})")
                if previous is not None:
                    closed.add(previous)
                previous = context

    def __len__(self) -> int:
        return len(self.parts)

    def __repr__(self) -> str:
        return f"TextStimulusSet({self.identifier!r}, {len(self)} parts, {len(self.contexts)} contexts)"

    @property
    def stimulus_ids(self) -> list[str]:
        return [p[0] for p in self.parts]

    @cached_property
    def contexts(self) -> list[str]:
        return list(dict.fromkeys(p[2] for p in self.parts))

    @cached_property
    def hash(self) -> str:
        """SHA-256 (hex) over every (id, text, context) in order: the activation cache's key for the stimuli."""
        digest = hashlib.sha256(b"cortexbox-text-v1\n")
        for part in self.parts:
            digest.update("\0".join(part).encode("utf-8") + b"\n")
        return digest.hexdigest()

    def placement_key(self, target_visual_degrees: float | None = None) -> str:
        """Text is never placed on a screen; the key only says so (the cache key's placement part)."""
        return "text"

    def iter_text(self) -> Iterator[tuple[str, str, str]]:
        yield from self.parts

    def iter_placed(self, target_visual_degrees: float | None = None) -> Iterator[tuple[str, str, str]]:
        """The same as :meth:`iter_text`; lets the orchestrator stream text and images alike."""
        return self.iter_text()

    def subset(self, contexts: Sequence[str], identifier: str | None = None) -> TextStimulusSet:
        keep = set(contexts)
        return TextStimulusSet(identifier or f"{self.identifier}[{','.join(contexts)}]", [p for p in self.parts if p[2] in keep])


def values_by_stimulus(assembly: xr.DataArray, stimulus_ids: Sequence[str]) -> np.ndarray:
    """The ``(presentation, neuroid)`` values of ``assembly`` in the order of ``stimulus_ids`` (float64).

    Raises
    ------
    ValueError
        An id missing from the assembly, duplicated ids, or non-finite values.
    """
    if STIMULUS_ID not in assembly.coords:
        raise ValueError("the assembly has no stimulus_id coordinate")
    ids = [str(s) for s in assembly[STIMULUS_ID].values]
    index = {sid: i for i, sid in enumerate(ids)}
    if len(index) != len(ids):
        raise ValueError("the assembly repeats stimulus ids")
    missing = [s for s in stimulus_ids if s not in index]
    if missing:
        raise ValueError(f"the assembly lacks {len(missing)} stimulus ids, e.g. {missing[:3]}")
    values = np.asarray(assembly.values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    values = values[[index[s] for s in stimulus_ids]]
    if not np.isfinite(values).all():
        raise ValueError("the assembly has NaN or infinite values")
    return values


class LanguageBenchmark(BenchmarkBase):
    """Base of the text benchmarks (see the module docstring). Subclasses set the class attributes and implement
    :meth:`_data_files`, :meth:`_load_stimulus_set`, :meth:`_compute_ceiling` and :meth:`score`."""

    kind: Kind = "behaviour"
    behaviour: str | None = "surprisal"
    modality: Modality = "text"
    selection_stimulus_set = None

    def _load_stimulus_set(self) -> TextStimulusSet:
        raise NotImplementedError

    @cached_property
    def stimulus_set(self) -> TextStimulusSet:
        """The text parts, in the order they are sent (:meth:`_load_stimulus_set`)."""
        return self._load_stimulus_set()

    def info(self) -> dict[str, object]:
        return {
            "identifier": self.identifier,
            "version": self.version,
            "region": self.region,
            "kind": self.kind,
            "behaviour": self.behaviour,
            "modality": self.modality,
            "description": self.description,
            "citation": self.citation,
            "n_stimuli": len(self.stimulus_set),
            "n_contexts": len(self.stimulus_set.contexts),
            "data_hash": self.data_hash,
            "stimulus_set_hash": self.stimulus_set.hash,
        }
