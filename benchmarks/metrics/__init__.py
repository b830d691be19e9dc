"""Metrics, ceilings and ceiling normalisation (Brain-Score semantics, array-first implementations)."""

from .ceiling import InternalConsistency, spearman_brown
from .correlation import pearson_r_score
from .cross_validation import aggregate_splits, shuffle_splits
from .neural_predictivity import CrossRegressedCorrelation, cross_regressed_correlation
from .normalization import NORMALIZATIONS, explained_variance
from .regression import fit_predict_pls, row_space_coordinates

__all__ = [
    "NORMALIZATIONS",
    "CrossRegressedCorrelation",
    "InternalConsistency",
    "aggregate_splits",
    "cross_regressed_correlation",
    "explained_variance",
    "fit_predict_pls",
    "pearson_r_score",
    "row_space_coordinates",
    "shuffle_splits",
    "spearman_brown",
]
