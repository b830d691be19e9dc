"""Ceiling normalisation of neural predictivity scores.

Brain-Score's ``explained_variance`` (brain-score/vision: ``brainscore_vision/benchmark_helpers/neural_common.py``)
has used three regimes; a benchmark version fixes one:

* ``"r2_over_ceiling"``: ``raw**2 / ceiling``, current since 2026-01 (PR brain-score/vision#2169, per
  ``shared/research/brainscore.md`` section 4.4; the stored snapshot of ``neural_common.py`` available here still
  shows the previous regime).
* ``"r_over_ceiling_squared"``: ``(raw / ceiling)**2``, Brain-Score 1.0 (2020) to 2025.
* ``"r_over_ceiling"``: ``raw / ceiling``, Brain-Score 0.2 (2018 paper); also RSA benchmarks.
* ``"raw_over_ceiling_clipped"``: ``raw / ceiling`` clipped to [0, 1], the unclipped value kept in
  ``attrs["original_out_of_range_score"]`` (brain-score/language ``utils/ceiling.py`` ``ceiling_normalize``; behaviour
  benchmarks' ``ceil_score`` + ``bound_score``).
* ``"per_split_over_sqrt_ceiling"``: Rajalingham 2018 (i2n): ``mean_k(score_k / sqrt(ceiling_k))`` over the paired
  splits ``k`` of score and ceiling; the error becomes ``std_k(score_k / sqrt(ceiling_k))`` (ddof 0), as
  ``brainscore_vision/benchmarks/rajalingham2018/benchmarks/benchmark.py``.

In every regime but the last the error is copied unscaled from the raw score, as Brain-Score does. No clipping: a squared
regime maps a negative ``raw`` to a positive value and can exceed 1, exactly as Brain-Score's formula does
(its website clips to [0, 1] only when aggregating).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import numpy as np

from ..score import Score

__all__ = ["NORMALIZATIONS", "Normalization", "ceil_interval", "ceil_value", "explained_variance", "normalize"]

Normalization = Literal[
    "r2_over_ceiling",
    "r_over_ceiling_squared",
    "r_over_ceiling",
    "raw_over_ceiling_clipped",
    "per_split_over_sqrt_ceiling",
]

NORMALIZATIONS: dict[str, str] = {
    "r2_over_ceiling": "raw**2 / ceiling",
    "r_over_ceiling_squared": "(raw / ceiling)**2",
    "r_over_ceiling": "raw / ceiling",
    "raw_over_ceiling_clipped": "clip(raw / ceiling, 0, 1)",
    "per_split_over_sqrt_ceiling": "mean_k(values_k / sqrt(ceiling.values_k))",
}


def ceil_value(raw: float, ceiling: float, regime: str) -> float:
    """``raw`` normalised by ``ceiling`` under ``regime`` (any regime but ``per_split_over_sqrt_ceiling``)."""
    if not ceiling:
        return math.nan
    if regime == "r2_over_ceiling":
        return raw**2 / ceiling
    if regime == "r_over_ceiling_squared":
        return (raw / ceiling) ** 2
    if regime == "raw_over_ceiling_clipped":
        return min(max(raw / ceiling, 0.0), 1.0)
    return raw / ceiling


def ceil_interval(low: float, high: float, ceiling: float, regime: str) -> tuple[float, float]:
    """An interval of ``raw`` mapped through the normalisation: the ends are mapped; a squared regime (monotone on
    either side of 0) maps an interval containing 0 to ``[0, max]``."""
    ends = [ceil_value(low, ceiling, regime), ceil_value(high, ceiling, regime)]
    if regime in ("r2_over_ceiling", "r_over_ceiling_squared") and low <= 0 <= high:
        return 0.0, max(ends)
    return min(ends), max(ends)


def _ceiled_bootstrap(score: Score, c: float, regime: str) -> dict[str, Any] | None:
    """``attrs["bootstrap"]`` with its ``ceiled`` interval filled in (ends of the raw interval mapped)."""
    record = score.attrs.get("bootstrap")
    if not isinstance(record, dict) or not isinstance(record.get("raw"), dict):
        return None
    raw = record["raw"]
    if regime == "per_split_over_sqrt_ceiling" or raw.get("low") is None or raw.get("high") is None or not c:
        return {**record, "ceiled": None}
    low, high = ceil_interval(float(raw["low"]), float(raw["high"]), c, regime)
    se = None
    if score.bootstrap_samples is not None:
        mapped = np.array([ceil_value(float(v), c, regime) for v in score.bootstrap_samples if math.isfinite(v)])
        se = float(mapped.std(ddof=1)) if mapped.size > 1 else None
    ceiled = {"low": low, "high": high, "estimate": None, "se": se, "mapping": "raw interval's ends through " + regime}
    return {**record, "ceiled": ceiled}


def explained_variance(score: Score, ceiling: Score, *, regime: Normalization = "r2_over_ceiling") -> Score:
    """Return ``score`` with ``ceiling`` and ``ceiled`` filled in under the given regime.

    Parameters
    ----------
    score : Score
        Raw (unceiled) score.
    ceiling : Score
        The benchmark's ceiling; its ``raw`` value is used.
    regime : str, default="r2_over_ceiling"
        One of :data:`NORMALIZATIONS`.

    Returns
    -------
    Score
        A copy with ``ceiling``, ``ceiled`` and ``attrs["normalization"]``, ``attrs["ceiling_error"]`` set; ``error``
        unchanged (except for ``per_split_over_sqrt_ceiling``). A bootstrap interval in ``attrs["bootstrap"]`` gets its
        ``ceiled`` interval (the raw ends mapped; not for ``per_split_over_sqrt_ceiling``).
    """
    raw, c = float(score.raw), float(ceiling.raw)
    error = float(score.error)
    extra: dict[str, object] = {}
    if regime == "per_split_over_sqrt_ceiling":
        if len(score.values) != len(ceiling.values) or not score.values:
            raise ValueError(
                f"per-split normalisation needs as many score splits as ceiling splits:"
                f" {len(score.values)} vs {len(ceiling.values)}"
            )
        with np.errstate(invalid="ignore", divide="ignore"):
            per_split = np.asarray(score.values, dtype=np.float64) / np.sqrt(np.asarray(ceiling.values, dtype=np.float64))
        ceiled = float(np.mean(per_split))
        error = float(np.std(per_split))
        extra["ceiled_values"] = per_split.tolist()
    elif regime == "raw_over_ceiling_clipped":
        ceiled = raw / c if c else math.nan
        if math.isfinite(ceiled) and not 0 <= ceiled <= 1:
            extra["original_out_of_range_score"] = ceiled
            ceiled = min(max(ceiled, 0.0), 1.0)
    elif regime == "r2_over_ceiling":
        ceiled = raw**2 / c if c else math.nan
    elif regime == "r_over_ceiling_squared":
        ceiled = (raw / c) ** 2 if c else math.nan
    elif regime == "r_over_ceiling":
        ceiled = raw / c if c else math.nan
    else:
        raise ValueError(f"regime must be one of {sorted(NORMALIZATIONS)}, got {regime!r}")
    bootstrap = _ceiled_bootstrap(score, c, regime)
    if bootstrap is not None and bootstrap["ceiled"] is not None:
        bootstrap["ceiled"]["estimate"] = ceiled if math.isfinite(ceiled) else None
    if bootstrap is not None:
        extra["bootstrap"] = bootstrap
    attrs = {
        **score.attrs,
        "normalization": regime,
        "normalization_formula": NORMALIZATIONS[regime],
        "ceiling_error": float(ceiling.error),
        **extra,
    }
    return dataclasses.replace(score, ceiling=c, ceiled=ceiled, error=error, attrs=attrs)


#: ``normalize`` is the general name; ``explained_variance`` the one Brain-Score uses for the neural regimes.
normalize = explained_variance
