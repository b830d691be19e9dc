"""Metrics, ceilings and ceiling normalisation (Brain-Score semantics, array-first implementations).

One way to call every metric::

    from cortexbox.benchmarks.metrics import load_metric, score_assemblies

    metric = load_metric("pls")                     # or "ridge", "rdm_cv", "cka", "i2n", ...
    score = metric(source_assembly, target_assembly)  # -> Score(raw, error, values=per-split, attrs)
    score = score_assemblies("ridge", source, target, ceiling=ceiling, normalization="r2_over_ceiling")

:data:`METRICS` maps Brain-Score's registry names to factories; :data:`CEILINGS` does the same for ceilings.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import xarray as xr

from ..score import Score
from .behavior import Accuracy, AccuracyDistance, ErrorConsistency, I2n, cohens_kappa
from .ceiling import InternalConsistency, ItemStatisticsCeiling, TemporalInternalConsistency, spearman_brown
from .correlation import pearson_r_score
from .cross_validation import (
    CrossValidation,
    InsufficientDataError,
    aggregate_splits,
    make_splits,
    median_over_neuroids,
    shuffle_splits,
)
from .neural_predictivity import CrossRegressedCorrelation, cross_regressed_correlation
from .normalization import NORMALIZATIONS, Normalization, explained_variance, normalize
from .regression import ALPHA_LIST, REGRESSIONS, fit_predict, fit_predict_pls, row_space_coordinates
from .rsa import (
    CKA,
    RDMSimilarity,
    RSACeiling,
    biased_linear_cka,
    gram_matrix,
    rdm,
    rdm_similarity,
    unbiased_linear_cka,
)

__all__ = [
    "ALPHA_LIST",
    "CEILINGS",
    "CKA",
    "METRICS",
    "NORMALIZATIONS",
    "REGRESSIONS",
    "Accuracy",
    "AccuracyDistance",
    "CrossRegressedCorrelation",
    "CrossValidation",
    "ErrorConsistency",
    "I2n",
    "InsufficientDataError",
    "InternalConsistency",
    "ItemStatisticsCeiling",
    "RDMSimilarity",
    "RSACeiling",
    "TemporalInternalConsistency",
    "MetricInputError",
    "UnknownMetric",
    "aggregate_splits",
    "biased_linear_cka",
    "cohens_kappa",
    "cross_regressed_correlation",
    "explained_variance",
    "fit_predict",
    "fit_predict_pls",
    "gram_matrix",
    "load_ceiling",
    "load_metric",
    "make_splits",
    "median_over_neuroids",
    "normalize",
    "parse_params",
    "pearson_r_score",
    "rdm",
    "rdm_similarity",
    "row_space_coordinates",
    "score_assemblies",
    "score_files",
    "shuffle_splits",
    "spearman_brown",
    "unbiased_linear_cka",
]

#: Brain-Score registry name -> factory (keyword parameters as the class takes them).
METRICS: dict[str, Callable[..., Any]] = {
    "pls": lambda **kw: CrossRegressedCorrelation("pls", **kw),
    "ridge": lambda **kw: CrossRegressedCorrelation("ridge", **kw),
    "linear_predictivity": lambda **kw: CrossRegressedCorrelation("linear", **kw),
    "ridgecv": lambda **kw: CrossRegressedCorrelation("ridgecv", **kw),
    "neuron_to_neuron": lambda **kw: CrossRegressedCorrelation("neuron_to_neuron", **kw),
    "rdm": lambda **kw: RDMSimilarity(**kw),
    "rdm_cv": lambda **kw: RDMSimilarity(cross_validate=True, **kw),
    "cka": lambda **kw: CKA(**kw),
    "cka_biased": lambda **kw: CKA(unbiased=False, **kw),
    "cka_cv": lambda **kw: CKA(cross_validate=True, **kw),
    "accuracy": lambda **kw: Accuracy(**kw),
    "accuracy_distance": lambda **kw: AccuracyDistance(**kw),
    "error_consistency": lambda **kw: ErrorConsistency(**kw),
    "i2n": lambda **kw: I2n(**kw),
}

#: Ceiling name -> factory. Behavioural subject-pair ceilings are ``metric.ceiling(target)``.
CEILINGS: dict[str, Callable[..., Any]] = {
    "internal_consistency": lambda **kw: InternalConsistency(**kw),
    "internal_consistency_temporal": lambda **kw: TemporalInternalConsistency(**kw),
    "rsa_ceiling": lambda **kw: RSACeiling(**kw),
    "item_statistics": lambda **kw: ItemStatisticsCeiling(**kw),
}


class UnknownMetric(KeyError):
    """No metric or ceiling has the requested name; the message lists the known ones."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        super().__init__(f"unknown metric {name!r}; known: {', '.join(known)}")

    def __str__(self) -> str:
        return str(self.args[0])


def load_metric(name: str, **params: Any) -> Any:
    """Build the metric registered as ``name`` (Brain-Score's names) with the given parameters."""
    if name not in METRICS:
        raise UnknownMetric(name, sorted(METRICS))
    return METRICS[name](**params)


def load_ceiling(name: str, **params: Any) -> Any:
    """Build the ceiling registered as ``name``."""
    if name not in CEILINGS:
        raise UnknownMetric(name, sorted(CEILINGS))
    return CEILINGS[name](**params)


def score_assemblies(
    name: str,
    source: xr.DataArray,
    target: xr.DataArray,
    *,
    ceiling: Score | None = None,
    normalization: Normalization | None = None,
    **params: Any,
) -> Score:
    """Score two precomputed assemblies with metric ``name``; optionally normalise by a ceiling.

    Parameters
    ----------
    name : str
        A key of :data:`METRICS`.
    source, target : xarray.DataArray
        Model and recording (or behaviour) assemblies, matched by ``stimulus_id``.
    ceiling : Score, optional
        The target's ceiling; with it ``normalization`` is applied (default ``"r2_over_ceiling"`` for the regression
        metrics, ``"r_over_ceiling"`` for rdm/cka, ``"per_split_over_sqrt_ceiling"`` for i2n and
        ``"raw_over_ceiling_clipped"`` for the other behavioural metrics).
    normalization : str, optional
        One of :data:`NORMALIZATIONS`.
    **params
        Passed to the metric's constructor.

    Returns
    -------
    Score
        ``raw``, ``error``, per-split ``values``, ``attrs`` (metric, parameters, normalisation) and, with a ceiling,
        ``ceiling`` and ``ceiled``.
    """
    metric = load_metric(name, **params)
    score = metric(source, target)
    if ceiling is None:
        return score
    if normalization is None:
        normalization = _default_normalization(name)
    return normalize(score, ceiling, regime=normalization)


def _default_normalization(name: str) -> Normalization:
    if name in {"pls", "ridge", "linear_predictivity", "ridgecv", "neuron_to_neuron"}:
        return "r2_over_ceiling"
    if name == "i2n":
        return "per_split_over_sqrt_ceiling"
    if name in {"accuracy", "accuracy_distance", "error_consistency"}:
        return "raw_over_ceiling_clipped"
    return "r_over_ceiling"


class MetricInputError(ValueError):
    """Files or parameters given to :func:`score_files` cannot be scored; ``hint`` says what to do."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


def parse_params(pairs: Sequence[str]) -> dict[str, Any]:
    """``["key=value", ...]`` -> dict; values are read as JSON when they parse (numbers, true, null, lists)."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise MetricInputError(f"bad parameter {pair!r}", hint="write parameters as key=value")
        try:
            params[key] = json.loads(text)
        except json.JSONDecodeError:
            params[key] = text
    return params


def score_files(
    name: str,
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    params: dict[str, Any] | None = None,
) -> Score:
    """Score two Brain-Score netCDF assemblies on disk with metric ``name`` (no model involved).

    Raises
    ------
    MetricInputError
        Unknown metric or parameter, unreadable file, or assemblies the metric cannot score (the message names the
        problem: misaligned stimulus ids, NaN, too few stimuli, ...).
    """
    from ..netcdf import read_assembly

    if name not in METRICS:
        raise MetricInputError(f"unknown metric {name!r}", hint=f"known metrics: {', '.join(sorted(METRICS))}")
    try:
        metric = load_metric(name, **(params or {}))
    except TypeError as error:
        raise MetricInputError(f"bad parameters for {name}: {error}", hint="see the metric's docstring") from error
    assemblies = []
    for role, path in (("source", source), ("target", target)):
        try:
            assemblies.append(read_assembly(path))
        except (OSError, ValueError) as error:
            raise MetricInputError(
                f"cannot read the {role} assembly {os.fspath(path)}: {error}",
                hint="pass a netCDF file written by Brain-Score's write_netcdf or cortexbox's write_assembly",
            ) from error
    try:
        return metric(*assemblies)
    except ValueError as error:
        raise MetricInputError(
            f"{name} cannot score these assemblies: {error}",
            hint="the source must cover the target's stimulus_ids; recordings must be finite",
        ) from error
