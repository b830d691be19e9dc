"""Neural predictivity: cross-validated regression from model features to neurons, scored by Pearson r.

This is Brain-Score's ``CrossRegressedCorrelation`` (registry names ``pls``, ``ridge``, ``linear_predictivity``,
``neuron_to_neuron``; ``ridgecv`` is the same machinery with ``RidgeCV`` over Brain-Score's ``ALPHA_LIST``). For ``pls``
(brain-score/vision: ``brainscore_vision/metrics/regression_correlation/metric.py``,
``metric_helpers/transformations.py``, ``metric_helpers/xarray_utils.py``):

1. Splits: ``StratifiedShuffleSplit(n_splits=10, train_size=0.9, test_size=None, random_state=1)`` on the target's
   ``object_name`` labels (``Split.Defaults``), or ``ShuffleSplit`` with the same arguments when the target has no
   ``object_name`` (where Brain-Score's default fails, and its benchmarks pass ``stratification_coord=None``), over the
   *target* assembly's ``stimulus_id`` values, in the target's order. The score's ``attrs["cross_validation"]``
   records what was used.
2. Per split: source and target restricted to the training stimuli, sorted by ``stimulus_id``
   (``XarrayRegression.fit``), ``PLSRegression(n_components=25, scale=False).fit``; predict the test stimuli.
3. Pearson r per neuroid between prediction and recording on the test stimuli (``XarrayCorrelation`` with
   ``scipy.stats.pearsonr``), then the median over neuroids (NaN skipped, as xarray's ``median``).
4. Mean over splits; error = ``std(ddof=0) / sqrt(n_splits)``.

Bootstrap interval (``attrs["bootstrap"]``, :mod:`.bootstrap`): the held-out predictions of the fitted mappings are
kept until the end; stimuli are resampled jointly (counts over all stimuli, each split's held-out set takes its own
stimuli's counts) and neuroids too (one draw per replicate, shared by the splits), the per-neuroid r recomputed on the
resampled test stimuli, median over the resampled neuroids, mean over splits. No refitting: it covers the sampling
of the evaluated stimuli and neuroids given the fitted mappings, not the variability of the fits.

When features outnumber stimuli the regression runs on the row-space coordinates of the features
(:func:`~cortexbox.benchmarks.metrics.regression.row_space_coordinates`), which gives the same predictions.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import xarray as xr

from ..assemblies import check_stimulus_ids_match, validate_assembly
from ..dims import NEUROID_ID, STIMULUS_ID
from ..score import Score
from .bootstrap import DEFAULT_N_BOOT, DEFAULT_SEED, bootstrap_record, predictivity_bootstrap
from .correlation import pearson_r_score
from .items import predictivity_items
from .cross_validation import AUTO, CrossValidation, Split, aggregate_splits, make_splits, median_over_neuroids
from .regression import DEFAULT_BLOCK_SIZE, REGRESSIONS, RegressionKind, fit_predict, row_space_coordinates

logger = logging.getLogger(__name__)

__all__ = ["CrossRegressedCorrelation", "cross_regressed_correlation"]


def cross_regressed_correlation(
    source: np.ndarray,
    target: np.ndarray,
    stimulus_ids: np.ndarray,
    *,
    regression: RegressionKind = "pls",
    n_components: int = 25,
    alpha: float = 1.0,
    alphas: list[float] | None = None,
    n_splits: int = 10,
    train_size: float = 0.9,
    random_state: int = 1,
    splits: list[Split] | None = None,
    project: bool | Literal["auto"] = "auto",
    block_size: int = DEFAULT_BLOCK_SIZE,
    source_order: np.ndarray | None = None,
    n_boot: int = 0,
    seed: int | Sequence[int] = DEFAULT_SEED,
    resample_neuroids: bool = True,
    keep_held_out: bool = False,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Per-split, per-neuroid Pearson r of cross-validated predictions (the array form of the metric).

    Parameters
    ----------
    source : numpy.ndarray of shape (n_stimuli, n_features)
        Model features. Rows are in the target's order unless ``source_order`` is given. Never copied whole.
    target : numpy.ndarray of shape (n_stimuli, n_neuroids)
        Recorded responses, rows in the order the splits are drawn over.
    stimulus_ids : numpy.ndarray of shape (n_stimuli,)
        The target rows' ids (training rows are sorted by them before fitting, as Brain-Score).
    regression : {"pls", "ridge", "linear", "ridgecv", "neuron_to_neuron"}, default="pls"
    n_components, alpha, alphas
        Mapping parameters (Brain-Score defaults); see :func:`~cortexbox.benchmarks.metrics.regression.fit_predict`.
    n_splits, train_size, random_state
        Unstratified shuffle splits, used when ``splits`` is not given.
    splits : list of (train_indices, test_indices), optional
        Precomputed splits over the target rows (e.g. from :class:`CrossValidation`).
    project : bool or "auto", default="auto"
        Fit on row-space coordinates instead of the raw features; ``"auto"``: when ``n_features > n_stimuli`` and the
        mapping allows it (not ``neuron_to_neuron``).
    block_size : int
        Columns per float64 block when projecting.
    source_order : numpy.ndarray of shape (n_stimuli,), optional
        ``source[source_order]`` is aligned with ``target``; lets a caller avoid reordering a huge matrix.
    n_boot : int, default=0
        Bootstrap replicates of the score (mean over splits of the median over neuroids) with the fitted mappings
        kept (see the module docstring); 0: none. The replicates are returned as ``info["bootstrap_samples"]``.
    seed : int, default=0
        Seed of the bootstrap's generator.
    resample_neuroids : bool, default=True
        Resample neuroids as well as stimuli.
    keep_held_out : bool, default=False
        Return each split's (held-out rows, predictions) as ``info["held_out"]`` (the per-item values a paired
        comparison of two models resamples, :mod:`.items`).

    Returns
    -------
    values : numpy.ndarray of shape (n_splits, n_neuroids)
    info : dict
        ``{"projected": bool, "n_features": int, "rank": int | None}`` (plus ``"alphas"`` per split for ridgecv, and
        for pls ``"pls_max_iter_reached"``: the ``[split, component]`` pairs whose power method stopped at
        ``max_iter``, kept as sklearn keeps them, see :data:`~.regression.PLS_MAX_ITER_NOTE`).
    """
    if regression not in REGRESSIONS:
        raise ValueError(f"regression must be one of {sorted(REGRESSIONS)}, got {regression!r}")
    n_stimuli, n_features = source.shape
    if target.shape[0] != n_stimuli:
        raise ValueError(f"source has {n_stimuli} rows but target has {target.shape[0]}")
    if project == "auto":
        project = n_features > n_stimuli and regression != "neuron_to_neuron"
    if project and regression == "neuron_to_neuron":
        raise ValueError("neuron_to_neuron maps single source units; it cannot run on projected features")
    order = np.arange(n_stimuli) if source_order is None else np.asarray(source_order)
    rank: int | None = None
    if project:
        coordinates = row_space_coordinates(source, block_size=block_size)
        rank = coordinates.shape[1]
        if regression == "pls" and rank < n_components <= n_features:
            # keep the dimensionality sklearn would see on the raw features (extra null directions)
            coordinates = np.hstack([coordinates, np.zeros((n_stimuli, n_components - rank))])
        design = coordinates[order]
    elif source_order is None:
        design = np.asarray(source)
    else:
        design = np.asarray(source)[order]
    target = np.asarray(target, dtype=np.float64)
    ids = np.asarray(stimulus_ids)
    if splits is None:
        splits = make_splits(
            n_stimuli, n_splits=n_splits, train_size=train_size, random_state=random_state, min_size=2
        )
    values = np.empty((len(splits), target.shape[1]))
    held_out: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (test rows, recording, prediction) per split
    chosen_alphas: list[float] = []
    max_iter_reached: list[list[int]] = []  # [split, component] whose PLS power method stopped at max_iter
    for split, (train, test) in enumerate(splits):
        train = train[np.argsort(ids[train], kind="stable")]
        prediction, fitted = fit_predict(
            regression, design[train], target[train], design[test], n_components=n_components, alpha=alpha,
            alphas=alphas,
        )
        if "alpha" in fitted:
            chosen_alphas.append(fitted["alpha"])
        max_iter_reached.extend([split, component] for component in fitted.get("max_iter_components", ()))
        values[split] = pearson_r_score(target[test], prediction, aggregate="raw_values")
        if n_boot or keep_held_out:
            held_out.append((test, target[test], np.asarray(prediction, dtype=np.float64)))
    info: dict[str, object] = {"projected": bool(project), "n_features": int(n_features), "rank": rank}
    if chosen_alphas:
        info["alphas"] = chosen_alphas
    if regression == "pls":
        # as sklearn's (Brain-Score's) NIPALS, capped components are kept; recorded, not warned about (PLS_MAX_ITER_NOTE)
        info["pls_max_iter_reached"] = max_iter_reached
        if max_iter_reached:
            logger.debug("PLS power method stopped at max_iter for [split, component] %s", max_iter_reached)
    if n_boot:
        info["bootstrap_samples"] = predictivity_bootstrap(
            held_out, n_stimuli, n_boot=n_boot, seed=seed, resample_neuroids=resample_neuroids
        )
    if keep_held_out:
        info["held_out"] = [(test, prediction) for test, _, prediction in held_out]
    return values, info


class CrossRegressedCorrelation:
    """Brain-Score's cross-validated regression metrics scored by the median per-neuroid Pearson r.

    ``regression="pls"`` is Brain-Score's ``pls`` metric; ``"ridge"``, ``"linear"`` (``linear_predictivity``),
    ``"ridgecv"`` and ``"neuron_to_neuron"`` are its siblings. The splits are drawn over the target's stimulus ids
    (:class:`~cortexbox.benchmarks.metrics.cross_validation.CrossValidation`).

    Parameters
    ----------
    regression : {"pls", "ridge", "linear", "ridgecv", "neuron_to_neuron"}, default="pls"
    n_components : int, default=25
        PLS components.
    alpha : float, default=1.0
        Ridge penalty.
    alphas : list of float, optional
        RidgeCV grid (default Brain-Score's ``ALPHA_LIST``).
    n_splits : int, default=10
    train_size : float, optional
        Default 0.9 (when ``test_size`` is not given either).
    test_size : float, optional
    stratification_coord : str or None, default="auto"
        Target ``presentation`` coordinate to stratify on; ``"auto"`` (Brain-Score's default): ``object_name`` when the
        target has it; ``None``: plain shuffle splits.
    kfold : bool or "group", default=False
    group_coord : str, optional
        Coordinate for ``kfold="group"`` (e.g. ``story``).
    random_state : int, default=1
    project : bool or "auto", default="auto"
        See :func:`cross_regressed_correlation`.
    n_boot : int, default=1000
        Bootstrap replicates for the interval in ``attrs["bootstrap"]`` (0: none); see the module docstring.
    seed : int, default=0
        The bootstrap generator's seed (recorded).

    Examples
    --------
    >>> metric = CrossRegressedCorrelation()
    >>> score = metric(model_assembly, neural_assembly)  # doctest: +SKIP
    >>> score.raw, score.error  # doctest: +SKIP
    """

    _NAMES = {
        "pls": "pls",
        "ridge": "ridge",
        "linear": "linear_predictivity",
        "ridgecv": "ridgecv",
        "neuron_to_neuron": "neuron_to_neuron",
    }

    def __init__(
        self,
        regression: RegressionKind = "pls",
        *,
        n_components: int = 25,
        alpha: float = 1.0,
        alphas: list[float] | None = None,
        n_splits: int = 10,
        train_size: float | None = None,
        test_size: float | None = None,
        stratification_coord: str | None = AUTO,
        kfold: bool | Literal["group"] = False,
        group_coord: str | None = None,
        random_state: int = 1,
        project: bool | Literal["auto"] = "auto",
        n_boot: int = DEFAULT_N_BOOT,
        seed: int = DEFAULT_SEED,
    ) -> None:
        self.regression = regression
        self.n_boot = n_boot
        self.seed = seed
        self.n_components = n_components
        self.alpha = alpha
        self.alphas = alphas
        self.n_splits = n_splits
        self.train_size = train_size
        self.test_size = test_size
        self.stratification_coord = stratification_coord
        self.kfold = kfold
        self.group_coord = group_coord
        self.random_state = random_state
        self.project = project

    @property
    def name(self) -> str:
        return self._NAMES.get(self.regression, str(self.regression))

    def get_params(self) -> dict[str, object]:
        """The constructor parameters (JSON-able)."""
        params: dict[str, object] = {
            "n_splits": self.n_splits,
            "train_size": 0.9 if self.train_size is None and self.test_size is None else self.train_size,
            "random_state": self.random_state,
        }
        if self.regression == "pls":
            params = {"n_components": self.n_components, **params}
        else:
            params = {"regression": self.regression, **params}
        if self.regression == "ridge":
            params["alpha"] = self.alpha
        if self.regression == "ridgecv" and self.alphas is not None:
            params["alphas"] = list(self.alphas)
        params["stratification_coord"] = self.stratification_coord
        for key in ("test_size", "group_coord"):
            if getattr(self, key) is not None:
                params[key] = getattr(self, key)
        if self.kfold:
            params["kfold"] = self.kfold
        return params

    def cross_validation(self) -> CrossValidation:
        return CrossValidation(
            n_splits=self.n_splits,
            train_size=self.train_size,
            test_size=self.test_size,
            stratification_coord=self.stratification_coord,
            group_coord=self.group_coord,
            kfold=self.kfold,
            random_state=self.random_state,
        )

    def __call__(
        self, source: xr.DataArray, target: xr.DataArray, *, bootstrap: bool = True, seed: int | Sequence[int] | None = None
    ) -> Score:
        """Score ``source`` (model features) against ``target`` (recording); both ``(presentation, neuroid)``.

        ``source`` rows may come in any order; they are matched to ``target`` by ``stimulus_id``. With
        ``bootstrap`` (and ``n_boot > 0``) the score carries a bootstrap interval in ``attrs["bootstrap"]`` and its
        replicates in ``bootstrap_samples``; ``seed`` overrides the metric's (e.g. ``[seed, session]``).

        Raises
        ------
        ValueError
            Bad dims or coords, NaN/inf, stimulus ids that do not match the target's, or too few stimuli for the
            splits.
        """
        source = validate_assembly(source)
        target = validate_assembly(target)
        target_ids = np.asarray(target[STIMULUS_ID].values)
        order: np.ndarray | None = check_stimulus_ids_match(source[STIMULUS_ID].values, target_ids, what="source")
        if order is not None and (order == np.arange(len(order))).all():
            order = None
        cross_validation = self.cross_validation()
        splits = cross_validation.splits(target)
        values, info = cross_regressed_correlation(
            np.asarray(source.values),
            np.asarray(target.values),
            target_ids,
            regression=self.regression,
            n_components=self.n_components,
            alpha=self.alpha,
            alphas=self.alphas,
            splits=splits,
            project=self.project,
            source_order=order,
            n_boot=self.n_boot if bootstrap else 0,
            seed=self.seed if seed is None else seed,
            keep_held_out=bootstrap,
        )
        samples = info.pop("bootstrap_samples", None)
        held_out = info.pop("held_out", None)
        per_split = median_over_neuroids(values)
        n_nan = int(np.isnan(values).sum())
        if n_nan:
            logger.warning(
                "%d of %d per-neuroid correlations are NaN (constant prediction or response)", n_nan, values.size
            )
        center, error = aggregate_splits(per_split)
        attrs = {
            "metric": self.name,
            "regression": REGRESSIONS[self.regression],
            "correlation": "pearson_r",
            "neuroid_aggregation": "median",
            "split_aggregation": "mean; error = std(ddof=0) / sqrt(n_splits)",
            **self.get_params(),
            "stratification_coord": cross_validation.stratification(target),  # effective ("auto" resolved)
            "cross_validation": cross_validation.describe(target),
            "n_stimuli": int(len(target_ids)),
            "n_neuroids": int(values.shape[1]),
            "n_nan_correlations": n_nan,
            **info,
            "neuroid_ids": [str(v) for v in target[NEUROID_ID].values],
        }
        if samples is not None:
            attrs["bootstrap"] = bootstrap_record(
                samples, center, seed=self.seed if seed is None else seed, resampled=["stimuli", "neuroids"],
                method="percentile bootstrap over held-out stimuli (joint over splits) and neuroids, fitted mappings"
                " fixed (no refitting)",
            )
        return Score(
            raw=center,
            error=error,
            values=per_split.tolist(),
            attrs=attrs,
            split_neuroid_values=values,
            bootstrap_samples=samples,
            # per-stimulus values for paired comparisons of two models (stored apart by the registry)
            items=None if held_out is None else predictivity_items(target_ids, target.values, held_out),
        )
