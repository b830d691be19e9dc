"""What the orchestrator may rely on in a benchmark object: one Protocol per kind and modality.

Every benchmark satisfies :class:`Benchmark`; by its ``kind`` (``"neural"``: layer activations, ``"behaviour"``: a
model output such as logits) and ``modality`` (``"image"``, ``"text"``) it also satisfies one of
:class:`NeuralImageBenchmark`, :class:`BehaviouralImageBenchmark`, :class:`NeuralTextBenchmark`,
:class:`BehaviouralTextBenchmark` (:func:`protocol_for` says which). These are structural types: the built-in
benchmarks inherit the scaffolding from :class:`~cortexbox.benchmarks.base.BenchmarkBase`, not from them, and
:func:`contract_problems` checks an object against its Protocol without loading its data (the lazily loaded members,
``data_hash``, ``stimulus_set``, ``ceiling``, are checked by their declared types).

* ``score`` takes a ``(presentation, neuroid)`` assembly with a ``stimulus_id`` coordinate
  (:func:`~cortexbox.benchmarks.neuroid_assembly`): a layer's activations (neural) or the behaviour named by
  ``behaviour`` (``neuroid_assembly(values, ids, layer="logits")``).
* Neural image benchmarks commit a layer to ``region``: the model's own choice, else one chosen on
  ``selection_stimulus_set`` with ``score_for_selection`` (never on the scored data); neural text benchmarks commit
  the layer at a fixed relative depth (:func:`~cortexbox.benchmarks.language.committed_layer`).
* ``ceiling`` ``None``: no ceiling; the scores then have ``ceiling`` and ``ceiled`` ``None`` and report ``raw``.
"""

from __future__ import annotations

import inspect
import types
import typing
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, Protocol, Union

import xarray as xr

from .base import Kind, Modality
from .language import TextStimulusSet
from .score import Score
from .stimuli import StimulusSet

__all__ = [
    "Benchmark",
    "BehaviouralImageBenchmark",
    "BehaviouralTextBenchmark",
    "Kind",
    "Modality",
    "NeuralImageBenchmark",
    "NeuralTextBenchmark",
    "PROTOCOLS",
    "contract_problems",
    "protocol_for",
]

class Benchmark(Protocol):
    """Every benchmark."""

    identifier: str
    """Unique name, e.g. ``"Cowley2023.V4-pls"``; the registry's key."""
    version: int
    """The code's version: bumped when a change to the benchmark's code changes its scores."""
    kind: Kind
    """``"neural"``: ``score`` takes a committed layer's activations; ``"behaviour"``: a model output."""
    modality: Modality
    """What the model is sent: ``"image"`` (placed images) or ``"text"`` (text parts in cumulative contexts)."""
    region: str
    """Brain region a neural benchmark's layer is committed to (``"V4"``, ``"IT"``, ``"language"``); behavioural
    benchmarks name what they measure (``"reading_times"``, ``"engineering"``) or ``""``."""
    description: str
    """What is scored and how (data, metric, ceiling, normalisation), for people; shown on the benchmark's page."""
    citation: str
    """The data's reference."""
    metric_name: str
    """The metric library's name of the metric, recorded in the registered definition; ``""`` where the benchmark
    uses no named library metric."""
    recording_folder: Path | None
    """The folder of the ingested recording this benchmark was opened from; ``None`` for a built-in."""

    @property
    def data_hash(self) -> str:
        """SHA-256 (hex) over the exact data the benchmark reads: new data make a new registered version."""
        ...

    @property
    def stimulus_set(self) -> StimulusSet | TextStimulusSet:
        """The stimuli scored, in the order they are sent."""
        ...

    @property
    def ceiling(self) -> Score | None:
        """The data's ceiling (``None``: no ceiling, scores report ``raw``)."""
        ...

    def score(self, assembly: xr.DataArray) -> Score:
        """The model's score: ``raw``, ``ceiling``, ``ceiled``, per-split ``values`` and provenance ``attrs``."""
        ...

    def info(self) -> dict[str, object]:
        """JSON-able facts (sizes, metric, hashes) for the benchmark's page; may load the data."""
        ...


class NeuralImageBenchmark(Benchmark, Protocol):
    """Layer activations to images (recordings, RDMs)."""

    kind: Literal["neural"]
    """Always ``"neural"``."""
    modality: Literal["image"]
    """Always ``"image"``."""
    source_visual_degrees: float
    """Degrees of visual angle the images spanned in the experiment: they are placed at this size."""
    selection_source: NeuralImageBenchmark | None
    """The benchmark whose selection data (and stored layer choice) commits this one's layer; ``None``: its own."""

    @property
    def stimulus_set(self) -> StimulusSet:
        """The images scored."""
        ...

    @property
    def selection_stimulus_set(self) -> StimulusSet | None:
        """Images a layer is chosen on, none of them scored; ``None``: the model must commit the layer itself."""
        ...

    def score_for_selection(self, assembly: xr.DataArray) -> float:
        """A candidate layer's raw score on the selection data (NaN: it cannot be chosen)."""
        ...


class BehaviouralImageBenchmark(Benchmark, Protocol):
    """A model output (``behaviour``) to images."""

    kind: Literal["behaviour"]
    """Always ``"behaviour"``."""
    modality: Literal["image"]
    """Always ``"image"``."""
    behaviour: str
    """The model output ``score`` takes (``"logits"``)."""
    source_visual_degrees: float | None
    """Degrees the images are placed at; ``None``: sent as stored, filling the model's input."""

    @property
    def stimulus_set(self) -> StimulusSet:
        """The images scored."""
        ...


class NeuralTextBenchmark(Benchmark, Protocol):
    """Layer activations to text (the layer at a fixed relative depth)."""

    kind: Literal["neural"]
    """Always ``"neural"``."""
    modality: Literal["text"]
    """Always ``"text"``."""

    @property
    def stimulus_set(self) -> TextStimulusSet:
        """The text parts scored, grouped into contexts."""
        ...


class BehaviouralTextBenchmark(Benchmark, Protocol):
    """A model output (``behaviour``) to text."""

    kind: Literal["behaviour"]
    """Always ``"behaviour"``."""
    modality: Literal["text"]
    """Always ``"text"``."""
    behaviour: str
    """The model output ``score`` takes (``"surprisal"``, ``"next_word"``)."""

    @property
    def stimulus_set(self) -> TextStimulusSet:
        """The text parts scored, grouped into contexts."""
        ...


#: (kind, modality) -> the Protocol a benchmark of that kind and modality satisfies.
PROTOCOLS: dict[tuple[str, str], type] = {
    ("neural", "image"): NeuralImageBenchmark,
    ("behaviour", "image"): BehaviouralImageBenchmark,
    ("neural", "text"): NeuralTextBenchmark,
    ("behaviour", "text"): BehaviouralTextBenchmark,
}


def protocol_for(bench: Any) -> type:
    """The Protocol ``bench`` must satisfy, by its ``kind`` and ``modality``.

    Raises
    ------
    ValueError
        A kind or modality outside :data:`Kind` and :data:`Modality`.
    """
    key = (getattr(bench, "kind", None), getattr(bench, "modality", None))
    if key not in PROTOCOLS:
        raise ValueError(f"{bench!r}: kind {key[0]!r} and modality {key[1]!r} name no benchmark protocol")
    return PROTOCOLS[key]


def _members(protocol: type) -> dict[str, Any]:
    """Name -> declared type (data attributes) or declaring function (properties, methods), over the Protocol's MRO."""
    members: dict[str, Any] = {}
    for cls in reversed(protocol.__mro__):
        if not getattr(cls, "_is_protocol", False) or cls is Protocol:
            continue
        members.update(typing.get_type_hints(cls, globalns=globals()))
        for name, value in vars(cls).items():
            if isinstance(value, property):
                members[name] = value.fget
            elif inspect.isfunction(value) and not name.startswith("_"):
                members[name] = value
    return members


def _is_property(protocol: type, name: str) -> bool:
    return any(isinstance(vars(cls).get(name), property) for cls in protocol.__mro__)


def _options(hint: Any) -> tuple[Any, ...]:
    """The alternatives of a union (``X | None``); a plain type: itself."""
    if typing.get_origin(hint) in (Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _is_protocol(hint: Any) -> bool:
    return isinstance(hint, type) and getattr(hint, "_is_protocol", False)


def _accepts(hint: Any, value: Any) -> bool:
    """Whether ``value`` is of type ``hint`` (classes, unions, ``Literal``, Protocols checked structurally)."""
    for option in _options(hint):
        if typing.get_origin(option) is Literal:
            ok = value in typing.get_args(option)
        elif option is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif _is_protocol(option):
            ok = value is not None and not contract_problems(value, option)
        else:
            ok = isinstance(value, typing.get_origin(option) or option)
        if ok:
            return True
    return False


def _fits(declared: Any, required: Any) -> bool:
    """Whether every alternative of an implementation's declared return type is one the Protocol allows (a class
    fits a Protocol when it has all of the Protocol's members)."""

    def fits(option: Any, allowed: Any) -> bool:
        if option == allowed:
            return True
        if not isinstance(option, type):
            return False
        if _is_protocol(allowed):
            names = set(dir(option)).union(*(getattr(c, "__annotations__", {}) for c in option.__mro__))
            return set(_members(allowed)) <= names
        return isinstance(allowed, type) and issubclass(option, allowed)

    return all(any(fits(option, allowed) for allowed in _options(required)) for option in _options(declared))


def contract_problems(bench: Any, protocol: type | None = None) -> list[str]:
    """Every way ``bench`` fails its Protocol (empty: it conforms), found without loading its data.

    Plain attributes are read and checked against their declared types; members the class computes lazily
    (properties, cached properties) must declare a return type the Protocol allows; methods must take the Protocol's
    arguments. ``protocol`` defaults to :func:`protocol_for`'s choice.
    """
    if protocol is None:
        try:
            protocol = protocol_for(bench)
        except ValueError as e:
            return [str(e)]
    problems = []
    for name, spec in _members(protocol).items():
        try:
            found = inspect.getattr_static(bench, name)
        except AttributeError:
            problems.append(f"{name}: missing")
            continue
        if inspect.isfunction(spec) and not _is_property(protocol, name):  # a method
            arguments = [None] * (len(inspect.signature(spec).parameters) - 1)
            try:
                inspect.signature(getattr(bench, name)).bind(*arguments)
            except (TypeError, ValueError):
                problems.append(f"{name}: not a method taking {len(arguments)} argument(s)")
            continue
        required = typing.get_type_hints(spec, globalns=globals())["return"] if inspect.isfunction(spec) else spec
        if isinstance(found, (property, cached_property)):
            getter = found.fget if isinstance(found, property) else found.func
            try:
                declared = typing.get_type_hints(getter).get("return")
            except Exception as e:  # noqa: BLE001 - an unresolvable annotation is a problem to report
                problems.append(f"{name}: its return annotation cannot be resolved ({e})")
                continue
            if declared is None:
                problems.append(f"{name}: computed lazily without a declared return type")
            elif not _fits(declared, required):
                problems.append(f"{name}: declared {declared}, the protocol requires {required}")
        elif not _accepts(required, getattr(bench, name)):
            problems.append(f"{name}: {getattr(bench, name)!r} is not {required}")
    return problems
