"""Per-neuroid Pearson correlation, vectorised, with :func:`scipy.stats.pearsonr`'s conventions."""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = ["pearson_r_score"]

Aggregate = Literal["median", "mean", "raw_values"]


def pearson_r_score(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    *,
    aggregate: Aggregate = "median",
) -> float | np.ndarray:
    """Pearson r between matching columns of ``y_true`` and ``y_pred``.

    Equals calling :func:`scipy.stats.pearsonr` on each column (Brain-Score's ``XarrayCorrelation`` loop) up to
    float rounding: the value is clipped to [-1, 1], and a constant column gives NaN.

    Parameters
    ----------
    y_true, y_pred : numpy.ndarray of shape (n_samples, n_outputs) or (n_samples,)
        Recorded and predicted responses, rows aligned.
    aggregate : {"median", "mean", "raw_values"}, default="median"
        ``"raw_values"`` returns the per-column r; ``"median"`` / ``"mean"`` skip NaN like xarray's reductions.

    Returns
    -------
    float or numpy.ndarray of shape (n_outputs,)
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred shapes differ: {y_true.shape} vs {y_pred.shape}")
    if y_true.ndim == 1:
        y_true, y_pred = y_true[:, None], y_pred[:, None]
    if y_true.shape[0] < 2:
        raise ValueError(f"need at least 2 samples for a correlation, got {y_true.shape[0]}")
    true_centred = y_true - y_true.mean(axis=0)
    pred_centred = y_pred - y_pred.mean(axis=0)
    true_norm = np.linalg.norm(true_centred, axis=0)
    pred_norm = np.linalg.norm(pred_centred, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = ((true_centred / true_norm) * (pred_centred / pred_norm)).sum(axis=0)
    r = np.clip(r, -1.0, 1.0)
    r[(true_norm == 0) | (pred_norm == 0)] = np.nan
    if aggregate == "raw_values":
        return r
    if np.isnan(r).all():
        return float("nan")
    if aggregate == "median":
        return float(np.nanmedian(r))
    if aggregate == "mean":
        return float(np.nanmean(r))
    raise ValueError(f"aggregate must be 'median', 'mean' or 'raw_values', got {aggregate!r}")
