"""Neural predictivity: cross-validated regression from model features to neurons, scored by Pearson r.

This is Brain-Score's ``CrossRegressedCorrelation`` with the ``pls`` regression
(brain-score/vision: ``brainscore_vision/metrics/regression_correlation/metric.py``,
``metric_helpers/transformations.py``, ``metric_helpers/xarray_utils.py``):

1. Splits: ``ShuffleSplit(n_splits=10, train_size=0.9, test_size=None, random_state=1)`` over the *target*
   assembly's ``stimulus_id`` values, in the target's order (no stratification coordinate here).
2. Per split: source and target restricted to the training stimuli, sorted by ``stimulus_id``
   (``XarrayRegression.fit``), ``PLSRegression(n_components=25, scale=False).fit``; predict the test stimuli.
3. Pearson r per neuroid between prediction and recording on the test stimuli (``XarrayCorrelation`` with
   ``scipy.stats.pearsonr``), then the median over neuroids (NaN skipped, as xarray's ``median``).
4. Mean over splits; error = ``std(ddof=0) / sqrt(n_splits)``.

When features outnumber stimuli the regression runs on the row-space coordinates of the features
(:func:`~cortexbox.benchmarks.metrics.regression.row_space_coordinates`), which gives the same predictions.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import xarray as xr

from ..assemblies import check_stimulus_ids_match, validate_assembly
from ..dims import NEUROID_ID, STIMULUS_ID
from ..score import Score
from .correlation import pearson_r_score
from .cross_validation import aggregate_splits, shuffle_splits
from .regression import DEFAULT_BLOCK_SIZE, fit_predict_pls, row_space_coordinates

logger = logging.getLogger(__name__)

__all__ = ["CrossRegressedCorrelation", "cross_regressed_correlation"]


def cross_regressed_correlation(
    source: np.ndarray,
    target: np.ndarray,
    stimulus_ids: np.ndarray,
    *,
    n_components: int = 25,
    n_splits: int = 10,
    train_size: float = 0.9,
    random_state: int = 1,
    project: bool | Literal["auto"] = "auto",
    block_size: int = DEFAULT_BLOCK_SIZE,
    source_order: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, object]]:
    """Per-split, per-neuroid Pearson r of PLS predictions (the array form of :class:`CrossRegressedCorrelation`).

    Parameters
    ----------
    source : numpy.ndarray of shape (n_stimuli, n_features)
        Model features. Rows are in the target's order unless ``source_order`` is given. Never copied whole.
    target : numpy.ndarray of shape (n_stimuli, n_neuroids)
        Recorded responses, rows in the order the splits are drawn over.
    stimulus_ids : numpy.ndarray of shape (n_stimuli,)
        The target rows' ids (training rows are sorted by them before fitting, as Brain-Score).
    n_components, n_splits, train_size, random_state
        PLS and split parameters (Brain-Score defaults).
    project : bool or "auto", default="auto"
        Fit on row-space coordinates instead of the raw features; ``"auto"``: when ``n_features > n_stimuli``.
    block_size : int
        Columns per float64 block when projecting.
    source_order : numpy.ndarray of shape (n_stimuli,), optional
        ``source[source_order]`` is aligned with ``target``; lets a caller avoid reordering a huge matrix.

    Returns
    -------
    values : numpy.ndarray of shape (n_splits, n_neuroids)
    info : dict
        ``{"projected": bool, "n_features": int, "rank": int | None}``.
    """
    n_stimuli, n_features = source.shape
    if target.shape[0] != n_stimuli:
        raise ValueError(f"source has {n_stimuli} rows but target has {target.shape[0]}")
    if project == "auto":
        project = n_features > n_stimuli
    order = np.arange(n_stimuli) if source_order is None else np.asarray(source_order)
    rank: int | None = None
    if project:
        coordinates = row_space_coordinates(source, block_size=block_size)
        rank = coordinates.shape[1]
        if rank < n_components <= n_features:
            # keep the dimensionality sklearn would see on the raw features (extra null directions)
            coordinates = np.hstack([coordinates, np.zeros((n_stimuli, n_components - rank))])
        design = coordinates[order]
    else:
        design = np.asarray(source)[order]
    target = np.asarray(target, dtype=np.float64)
    ids = np.asarray(stimulus_ids)
    splits = shuffle_splits(n_stimuli, n_splits=n_splits, train_size=train_size, random_state=random_state)
    values = np.empty((len(splits), target.shape[1]))
    for split, (train, test) in enumerate(splits):
        train = train[np.argsort(ids[train], kind="stable")]
        prediction = fit_predict_pls(design[train], target[train], design[test], n_components=n_components)
        values[split] = pearson_r_score(target[test], prediction, aggregate="raw_values")
    return values, {"projected": bool(project), "n_features": int(n_features), "rank": rank}


class CrossRegressedCorrelation:
    """Brain-Score's ``pls`` metric: cross-validated PLS regression scored by the median per-neuroid Pearson r.

    Parameters
    ----------
    n_components : int, default=25
    n_splits : int, default=10
    train_size : float, default=0.9
    random_state : int, default=1
    project : bool or "auto", default="auto"
        See :func:`cross_regressed_correlation`.

    Examples
    --------
    >>> metric = CrossRegressedCorrelation()
    >>> score = metric(model_assembly, neural_assembly)  # doctest: +SKIP
    >>> score.raw, score.error  # doctest: +SKIP
    """

    name = "pls"

    def __init__(
        self,
        *,
        n_components: int = 25,
        n_splits: int = 10,
        train_size: float = 0.9,
        random_state: int = 1,
        project: bool | Literal["auto"] = "auto",
    ) -> None:
        self.n_components = n_components
        self.n_splits = n_splits
        self.train_size = train_size
        self.random_state = random_state
        self.project = project

    def get_params(self) -> dict[str, object]:
        """The constructor parameters (JSON-able)."""
        return {
            "n_components": self.n_components,
            "n_splits": self.n_splits,
            "train_size": self.train_size,
            "random_state": self.random_state,
        }

    def __call__(self, source: xr.DataArray, target: xr.DataArray) -> Score:
        """Score ``source`` (model features) against ``target`` (recording); both ``(presentation, neuroid)``.

        ``source`` rows may come in any order; they are matched to ``target`` by ``stimulus_id``.

        Raises
        ------
        ValueError
            Bad dims or coords, NaN/inf, or stimulus ids that do not match the target's.
        """
        source = validate_assembly(source)
        target = validate_assembly(target)
        target_ids = np.asarray(target[STIMULUS_ID].values)
        order = check_stimulus_ids_match(source[STIMULUS_ID].values, target_ids, what="source")
        values, info = cross_regressed_correlation(
            np.asarray(source.values),
            np.asarray(target.values),
            target_ids,
            n_components=self.n_components,
            n_splits=self.n_splits,
            train_size=self.train_size,
            random_state=self.random_state,
            project=self.project,
            source_order=order,
        )
        per_split = np.array(
            [np.nan if np.isnan(row).all() else np.nanmedian(row) for row in values], dtype=np.float64
        )
        n_nan = int(np.isnan(values).sum())
        if n_nan:
            logger.warning(
                "%d of %d per-neuroid correlations are NaN (constant prediction or response)", n_nan, values.size
            )
        center, error = aggregate_splits(per_split)
        attrs = {
            "metric": self.name,
            "regression": "sklearn.cross_decomposition.PLSRegression(scale=False)",
            "correlation": "pearson_r",
            "neuroid_aggregation": "median",
            "split_aggregation": "mean; error = std(ddof=0) / sqrt(n_splits)",
            **self.get_params(),
            "n_stimuli": int(len(target_ids)),
            "n_neuroids": int(values.shape[1]),
            "n_nan_correlations": n_nan,
            **info,
            "neuroid_ids": [str(v) for v in target[NEUROID_ID].values],
        }
        return Score(
            raw=center,
            error=error,
            values=per_split.tolist(),
            attrs=attrs,
            split_neuroid_values=values,
        )
