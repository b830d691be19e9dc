"""Dimension and coordinate names used by every assembly in :mod:`cortexbox.benchmarks`.

Assemblies are plain :class:`xarray.DataArray` objects. Neural and model assemblies have the dims
``(PRESENTATION, NEUROID)``; the presentation dim carries a ``STIMULUS_ID`` coordinate (and ``REPETITION`` for
raw per-trial recordings), the neuroid dim carries a unique ``NEUROID_ID`` coordinate. The names follow
Brain-Score's ``metric_helpers.Defaults`` so assemblies travel between the two without renaming.
"""

from __future__ import annotations

PRESENTATION = "presentation"
NEUROID = "neuroid"
TIME_BIN = "time_bin"

STIMULUS_ID = "stimulus_id"
NEUROID_ID = "neuroid_id"
REPETITION = "repetition"
TIME_BIN_START = "time_bin_start"
TIME_BIN_END = "time_bin_end"

#: Dims a neural or model assembly must have (in any order; validation transposes to this order).
EXPECTED_DIMS: tuple[str, str] = (PRESENTATION, NEUROID)

__all__ = [
    "EXPECTED_DIMS",
    "NEUROID",
    "NEUROID_ID",
    "PRESENTATION",
    "REPETITION",
    "STIMULUS_ID",
    "TIME_BIN",
    "TIME_BIN_END",
    "TIME_BIN_START",
]
