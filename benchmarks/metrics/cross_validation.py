"""Splits and split aggregation, as Brain-Score's ``metric_helpers/transformations.py`` (``Split``)."""

from __future__ import annotations

import math

import numpy as np
from sklearn.model_selection import ShuffleSplit

__all__ = ["aggregate_splits", "shuffle_splits"]


def shuffle_splits(
    n_samples: int,
    *,
    n_splits: int = 10,
    train_size: float = 0.9,
    random_state: int = 1,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Brain-Score's unstratified ``Split``: ``ShuffleSplit(n_splits, train_size, test_size=None, random_state)``.

    Parameters
    ----------
    n_samples : int
        Number of values split over (the target's stimulus ids, or the unique repetition values).
    n_splits, train_size, random_state
        As :class:`sklearn.model_selection.ShuffleSplit`; ``test_size`` is the complement.

    Returns
    -------
    list of (train_indices, test_indices)
        Indices into the values in the order given.
    """
    splitter = ShuffleSplit(n_splits=n_splits, train_size=train_size, test_size=None, random_state=random_state)
    return list(splitter.split(np.zeros(n_samples)))


def aggregate_splits(values: np.ndarray) -> tuple[float, float]:
    """Mean over splits and its standard error, as Brain-Score's ``Split.aggregate``.

    ``center = mean(split)``; ``error = std(split, ddof=0) / sqrt(n_splits)``. NaN splits are skipped in the mean and
    std (xarray's ``skipna``) but still counted in ``n_splits``, as in Brain-Score.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0 or np.isnan(values).all():
        return math.nan, math.nan
    center = float(np.nanmean(values))
    error = float(np.nanstd(values) / math.sqrt(len(values)))
    return center, error
