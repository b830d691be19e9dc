"""What the orchestrator may rely on in every benchmark object (a structural type; nothing inherits from it).

Every benchmark has ``identifier``, ``version``, ``kind``, ``description``, ``citation``, ``data_hash``,
``stimulus_set`` (a :class:`~cortexbox.benchmarks.StimulusSet` carrying the experiment's ``visual_degrees``),
``source_visual_degrees``, ``region``, ``ceiling`` and ``score(assembly) -> Score``.

* ``ceiling`` is a :class:`~cortexbox.benchmarks.Score`, or ``None`` for a benchmark without one (its scores then
  have ``ceiling`` and ``ceiled`` ``None`` and report ``raw``).
* ``kind == "neural"``: ``score`` takes a model layer's activations, a ``(presentation, neuroid)`` assembly with a
  ``stimulus_id`` coordinate (:func:`~cortexbox.benchmarks.neuroid_assembly`). ``region`` names the brain region
  the layer is committed to (``"V4"``, ``"IT"``); ``selection_stimulus_set`` (or ``None``) and
  ``score_for_selection(assembly) -> float`` choose that layer without the scored data.
* ``kind == "behaviour"``: ``behaviour`` names the model output needed (``"logits"``); ``score`` takes it as a
  ``(presentation, neuroid)`` assembly (``neuroid_assembly(values, ids, layer="logits")``). ``region`` is ``""``.
"""

from __future__ import annotations

from typing import Literal, Protocol

import xarray as xr

from .score import Score
from .stimuli import StimulusSet

__all__ = ["Benchmark", "Kind"]

Kind = Literal["neural", "behaviour"]


class Benchmark(Protocol):
    identifier: str
    version: int
    kind: str
    region: str
    description: str
    citation: str
    source_visual_degrees: float

    @property
    def data_hash(self) -> str: ...

    @property
    def stimulus_set(self) -> StimulusSet: ...

    @property
    def ceiling(self) -> Score | None: ...

    def score(self, assembly: xr.DataArray) -> Score: ...
