"""Ceiling normalisation of neural predictivity scores.

Brain-Score's ``explained_variance`` (brain-score/vision: ``brainscore_vision/benchmark_helpers/neural_common.py``)
has used three regimes; a benchmark version fixes one:

* ``"r2_over_ceiling"``: ``raw**2 / ceiling``, current since 2026-01 (PR brain-score/vision#2169, per
  ``shared/research/brainscore.md`` section 4.4; the stored snapshot of ``neural_common.py`` available here still
  shows the previous regime).
* ``"r_over_ceiling_squared"``: ``(raw / ceiling)**2``, Brain-Score 1.0 (2020) to 2025.
* ``"r_over_ceiling"``: ``raw / ceiling``, Brain-Score 0.2 (2018 paper).

In every regime the error is copied unscaled from the raw score, as Brain-Score does. No clipping: a squared
regime maps a negative ``raw`` to a positive value and can exceed 1, exactly as Brain-Score's formula does
(its website clips to [0, 1] only when aggregating).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

from ..score import Score

__all__ = ["NORMALIZATIONS", "Normalization", "explained_variance"]

Normalization = Literal["r2_over_ceiling", "r_over_ceiling_squared", "r_over_ceiling"]

NORMALIZATIONS: dict[str, str] = {
    "r2_over_ceiling": "raw**2 / ceiling",
    "r_over_ceiling_squared": "(raw / ceiling)**2",
    "r_over_ceiling": "raw / ceiling",
}


def explained_variance(score: Score, ceiling: Score, *, regime: Normalization = "r2_over_ceiling") -> Score:
    """Return ``score`` with ``ceiling`` and ``ceiled`` filled in under the given regime.

    Parameters
    ----------
    score : Score
        Raw (unceiled) score.
    ceiling : Score
        The benchmark's ceiling; its ``raw`` value is used.
    regime : {"r2_over_ceiling", "r_over_ceiling_squared", "r_over_ceiling"}, default="r2_over_ceiling"

    Returns
    -------
    Score
        A copy with ``ceiling``, ``ceiled`` and ``attrs["normalization"]``, ``attrs["ceiling_error"]`` set; ``error``
        unchanged.
    """
    raw, c = float(score.raw), float(ceiling.raw)
    if regime == "r2_over_ceiling":
        ceiled = raw**2 / c if c else math.nan
    elif regime == "r_over_ceiling_squared":
        ceiled = (raw / c) ** 2 if c else math.nan
    elif regime == "r_over_ceiling":
        ceiled = raw / c if c else math.nan
    else:
        raise ValueError(f"regime must be one of {sorted(NORMALIZATIONS)}, got {regime!r}")
    attrs = {
        **score.attrs,
        "normalization": regime,
        "normalization_formula": NORMALIZATIONS[regime],
        "ceiling_error": float(ceiling.error),
    }
    return dataclasses.replace(score, ceiling=c, ceiled=ceiled, attrs=attrs)
