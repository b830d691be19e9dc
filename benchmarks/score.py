"""The :class:`Score` a metric, a ceiling or a benchmark returns.

A score is a small frozen dataclass, not an xarray object with conventions in ``attrs`` (Brain-Score's ``Score``
subclasses ``DataArray``; cortexbox does not).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Score"]


def _jsonable(value: Any) -> Any:
    """Turn ``value`` into something :func:`json.dumps` writes as standard JSON (NaN and inf become ``None``)."""
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, np.ndarray):
        return [_jsonable(item) for item in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


@dataclass(frozen=True)
class Score:
    """Result of a metric, a ceiling estimate, or a benchmark run.

    Parameters
    ----------
    raw : float
        The unnormalised value, e.g. the mean over cross-validation splits of the median Pearson r over neuroids.
    error : float
        Standard error of ``raw``: the standard deviation over splits (``ddof=0``) divided by ``sqrt(n_splits)``,
        as Brain-Score's ``Split.aggregate``.
    ceiling : float or None
        The ceiling ``raw`` is normalised by, or ``None`` for unceiled scores (and for a ceiling itself).
    ceiled : float or None
        The ceiling-normalised value; how it was obtained is named in ``attrs["normalization"]``.
    values : list of float
        The per-split values ``raw`` is the mean of.
    attrs : dict
        JSON-able metadata: metric name, ``n_splits``, ``random_state``, the normalisation regime, the ceiling's
        error, ...
    split_neuroid_values : numpy.ndarray or None
        Optional ``(n_splits, n_neuroids)`` array of the per-neuroid values before the median (Brain-Score keeps
        these as ``attrs['raw']``). Left out of :meth:`to_dict` unless asked for.
    bootstrap_samples : numpy.ndarray or None
        Optional bootstrap replicates of ``raw`` (see :mod:`cortexbox.benchmarks.metrics.bootstrap`), kept so that
        scores can be combined replicate by replicate (e.g. a mean over sessions); never serialised. The interval
        itself is in ``attrs["bootstrap"]``.
    items : cortexbox.benchmarks.metrics.items.ItemValues or None
        Optional per-item values the score was built from (per-stimulus held-out predictions, RDM ranks, ...), which
        the registry stores apart so that two models can be compared on the same resampled items; never serialised
        here, and dropped by anything that builds a new score from several (it would not describe the combination).
    """

    raw: float
    error: float
    ceiling: float | None = None
    ceiled: float | None = None
    values: list[float] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)
    split_neuroid_values: np.ndarray | None = field(default=None, repr=False, compare=False)
    bootstrap_samples: np.ndarray | None = field(default=None, repr=False, compare=False)
    items: Any = field(default=None, repr=False, compare=False)

    @property
    def value(self) -> float:
        """The headline number: ``ceiled`` when the score was normalised, else ``raw``."""
        return self.raw if self.ceiled is None else self.ceiled

    def to_dict(self, *, include_split_neuroid_values: bool = False) -> dict[str, Any]:
        """Return a JSON-able dict (NaN and infinities become ``None``).

        Parameters
        ----------
        include_split_neuroid_values : bool, default=False
            Whether to add the ``(n_splits, n_neuroids)`` per-neuroid values as nested lists.
        """
        out: dict[str, Any] = {
            "raw": _jsonable(float(self.raw)),
            "error": _jsonable(float(self.error)),
            "ceiling": None if self.ceiling is None else _jsonable(float(self.ceiling)),
            "ceiled": None if self.ceiled is None else _jsonable(float(self.ceiled)),
            "values": _jsonable([float(v) for v in self.values]),
            "attrs": _jsonable(self.attrs),
        }
        if include_split_neuroid_values and self.split_neuroid_values is not None:
            out["split_neuroid_values"] = _jsonable(self.split_neuroid_values)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Score:
        """Rebuild a score written by :meth:`to_dict` (``None`` numbers come back as NaN)."""

        def number(value: Any) -> float:
            return math.nan if value is None else float(value)

        split_values = data.get("split_neuroid_values")
        return cls(
            raw=number(data["raw"]),
            error=number(data["error"]),
            ceiling=None if data.get("ceiling") is None else float(data["ceiling"]),
            ceiled=None if data.get("ceiled") is None else float(data["ceiled"]),
            values=[number(v) for v in data.get("values", [])],
            attrs=dict(data.get("attrs", {})),
            split_neuroid_values=None
            if split_values is None
            else np.array([[number(v) for v in row] for row in split_values]),
        )
