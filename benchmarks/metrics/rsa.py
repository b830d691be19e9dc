"""Representational similarity: RDMs, RSA (``rdm``, ``rdm_cv``), linear CKA (``cka``, ``cka_biased``, ``cka_cv``) and
the RSA ceiling over subjects.

Brain-Score's definitions (brain-score/vision ``metrics/rdm/metric.py``, ``metrics/cka/metric.py``,
``metrics/rsa_ceiling/ceiling.py``):

* RDM: ``1 - np.corrcoef(X)`` with ``X`` of shape (stimuli, features): 1 - Pearson r between stimuli across features.
* ``rdm``: both assemblies sorted by ``stimulus_id``; Spearman rho between the upper triangles (``k=1``).
* ``rdm_cv`` / ``cka_cv``: the same on the *test* part of 10 splits with ``test_size=0.9`` (``TestOnlyCrossValidation``:
  ``StratifiedShuffleSplit`` on the target's ``object_name`` by default, ``ShuffleSplit`` when it has none, over the
  second assembly's stimulus ids, ``random_state=1``), mean over splits, error = ``std(ddof=0) / sqrt(n_splits)``.
* ``cka``: the unbiased linear CKA (Song et al.'s HSIC U-statistic on ``K = X X^T`` with zeroed diagonal; ``n >= 4``;
  0 when ``HSIC(X, X) * HSIC(Y, Y) <= 0``; ``+1e-12`` in the denominator); ``cka_biased``: the classic centred linear
  CKA ``<HKH, HLH> / (|HKH| |HLH|)``.
* RSA ceiling: per subject (the ``subject`` coordinate on neuroid) an RDM; upper bound = mean over subjects of Spearman
  (subject RDM, mean RDM of all subjects) (Nili et al. 2014); lower bound = the same against the mean of the others.

Everything here runs on ``n x n`` Gram matrices built a block of feature columns at a time in float64, so a
``3200 x 100,000`` float32 model assembly is never copied; a split's RDM (or Gram matrix) is the sub-matrix of the
full one (the row-centring of a correlation is per stimulus), so cross-validation reuses one Gram matrix.
"""

from __future__ import annotations

import logging
import math
from typing import Literal

import numpy as np
import scipy.stats
import xarray as xr

from ..assemblies import check_stimulus_ids_match, validate_assembly
from ..dims import NEUROID, PRESENTATION, STIMULUS_ID
from ..score import Score
from .cross_validation import AUTO, CrossValidation, InsufficientDataError, aggregate_splits
from .regression import DEFAULT_BLOCK_SIZE

logger = logging.getLogger(__name__)

__all__ = [
    "CKA",
    "RDMSimilarity",
    "RSACeiling",
    "biased_linear_cka",
    "gram_matrix",
    "rdm",
    "rdm_similarity",
    "unbiased_linear_cka",
]


Precision = Literal["float64", "mixed", "auto"]

#: Fewest stimuli for which ``precision="auto"`` multiplies float32 features in float32 (see :func:`gram_matrix`).
MIXED_MIN_SAMPLES = 1000


def gram_matrix(
    features: np.ndarray,
    *,
    center: Literal["none", "rows"] = "none",
    block_size: int = DEFAULT_BLOCK_SIZE,
    precision: Precision = "float64",
) -> np.ndarray:
    """``X X^T`` accumulated in float64, reading ``block_size`` columns of ``features`` at a time.

    Parameters
    ----------
    features : numpy.ndarray of shape (n_samples, n_features)
    center : {"none", "rows"}
        ``"rows"`` subtracts each row's mean over features first (what a correlation between rows needs).
    precision : {"float64", "mixed", "auto"}, default="float64"
        ``"mixed"``: each block is centred in float64, multiplied in float32 (twice the BLAS speed) and added to the
        float64 total, so rounding stays within one block of ``block_size`` products (relative error ~1e-6 on the
        entries). ``"auto"``: mixed for float32 input with at least :data:`MIXED_MIN_SAMPLES` rows, else float64.
        (A perturbation of 1e-6 swaps the ranks of nearly equal dissimilarities; one swap moves Spearman's rho by
        ~12 / n_pairs**2, so only large RDMs are immune: 1,000 stimuli give 5e5 pairs and a rho error below 1e-8,
        measured 3e-10 at 1,500; 120 stimuli can move it by ~1e-6.)
    """
    if precision == "auto":
        array = np.asarray(features)
        precision = "mixed" if array.dtype == np.float32 and array.shape[0] >= MIXED_MIN_SAMPLES else "float64"
    features = np.asarray(features)
    if features.ndim != 2:
        raise ValueError(f"features must be 2-D, got shape {features.shape}")
    n_samples, n_features = features.shape
    row_means = None
    if center == "rows":
        sums = np.zeros(n_samples)
        for start in range(0, n_features, block_size):
            sums += np.asarray(features[:, start : start + block_size], dtype=np.float64).sum(axis=1)
        row_means = sums / n_features
    gram = np.zeros((n_samples, n_samples))
    for start in range(0, n_features, block_size):
        block = np.array(features[:, start : start + block_size], dtype=np.float64, order="C")
        if row_means is not None:
            block -= row_means[:, None]
        if precision == "mixed":
            block32 = block.astype(np.float32)
            gram += block32 @ block32.T
        else:
            gram += block @ block.T
    return (gram + gram.T) / 2


def rdm(features: np.ndarray, *, block_size: int = DEFAULT_BLOCK_SIZE, precision: Precision = "float64") -> np.ndarray:
    """Representational dissimilarity matrix ``1 - corrcoef(features)`` (rows = stimuli), as Brain-Score's ``RDM``.

    ``precision`` as :func:`gram_matrix` (``"mixed"`` changes RDM entries by ~1e-6 and a Spearman comparison of
    RDMs by ~1e-10).

    Returns
    -------
    numpy.ndarray of shape (n_stimuli, n_stimuli)
        ``NaN`` rows/columns for stimuli whose features are constant (``np.corrcoef`` does the same).
    """
    gram = gram_matrix(features, center="rows", block_size=block_size, precision=precision)
    return _rdm_from_centred_gram(gram)


def _rdm_from_centred_gram(gram: np.ndarray) -> np.ndarray:
    """``1 - gram_ij / sqrt(gram_ii gram_jj)``, overwriting ``gram`` (n x n arrays are the memory that matters)."""
    norms = np.sqrt(np.diag(gram).copy())
    with np.errstate(invalid="ignore", divide="ignore"):
        gram /= norms[:, None]
        gram /= norms[None, :]
    np.clip(gram, -1, 1, out=gram)
    np.subtract(1, gram, out=gram)
    return gram


def _upper_triangle(matrix: np.ndarray) -> np.ndarray:
    return matrix[np.triu(np.ones(matrix.shape, dtype=bool), k=1)]


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rho (average ranks for ties) as scipy's ``spearmanr``; NaN when either input has NaN."""
    if np.isnan(a).any() or np.isnan(b).any():
        return math.nan
    ranks_a = scipy.stats.rankdata(a)
    ranks_a -= ranks_a.mean()
    ranks_b = scipy.stats.rankdata(b)
    ranks_b -= ranks_b.mean()
    denominator = math.sqrt(float(np.dot(ranks_a, ranks_a)) * float(np.dot(ranks_b, ranks_b)))
    return float(np.dot(ranks_a, ranks_b)) / denominator if denominator else math.nan


def rdm_similarity(rdm1: np.ndarray, rdm2: np.ndarray) -> float:
    """Spearman rho between the upper triangles (``k=1``) of two RDMs over the same, same-ordered stimuli.

    The stimulus order does not matter as long as it is the same in both: an RDM is symmetric, so any order's upper
    triangle holds each pair once, and Spearman's rho does not depend on the order of the pairs.
    """
    if rdm1.shape != rdm2.shape or rdm1.ndim != 2 or rdm1.shape[0] != rdm1.shape[1]:
        raise ValueError(f"RDMs must be square and of one shape, got {rdm1.shape} and {rdm2.shape}")
    return _spearman(_upper_triangle(rdm1), _upper_triangle(rdm2))


def unbiased_linear_cka(gram_x: np.ndarray, gram_y: np.ndarray, *, eps: float = 1e-12) -> float:
    """Unbiased linear CKA from the raw Gram matrices ``X X^T`` and ``Y Y^T`` (Brain-Score's ``unbiased_linear_CKA``).

    Raises
    ------
    InsufficientDataError
        With fewer than 4 stimuli (the estimator divides by ``n - 3``).
    """
    hsic_xy = _unbiased_hsic(gram_x, gram_y)
    prod = _unbiased_hsic(gram_x, gram_x) * _unbiased_hsic(gram_y, gram_y)
    if prod <= 0:
        return 0.0
    return float(hsic_xy / (np.sqrt(prod) + eps))


def _unbiased_hsic(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741 (the usual name for the second kernel)
    n = k.shape[0]
    if n < 4:
        raise InsufficientDataError(f"unbiased CKA needs at least 4 stimuli, got {n}")
    k = k.copy()
    l = l.copy()  # noqa: E741
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(l, 0.0)
    term1 = float((k * l).sum())
    k1, l1 = k.sum(axis=1), l.sum(axis=1)
    term2 = float(k1.sum() * l1.sum())
    term3 = float((k1 * l1).sum())
    return (term1 + term2 / ((n - 1.0) * (n - 2.0)) - 2.0 * term3 / (n - 2.0)) / (n * (n - 3.0))


def biased_linear_cka(gram_x: np.ndarray, gram_y: np.ndarray) -> float:
    """Centred linear CKA ``<HKH, HLH> / (|HKH| |HLH|)`` (Brain-Score's ``linear_CKA``, Kornblith et al. 2019)."""
    kc, lc = _double_centre(gram_x), _double_centre(gram_y)
    hsic = float((kc * lc).sum())
    return hsic / (np.sqrt(float((kc * kc).sum())) * np.sqrt(float((lc * lc).sum())))


def _double_centre(gram: np.ndarray) -> np.ndarray:
    return gram - gram.mean(axis=0, keepdims=True) - gram.mean(axis=1, keepdims=True) + gram.mean()


def _aligned_values(
    source: xr.DataArray, target: xr.DataArray
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
    """Validated values, and the index that puts the source's rows in the target's order (``None``: already are).

    The source is not reordered here: a model's features can be gigabytes, and everything downstream works on
    ``n x n`` matrices that are cheap to permute.
    """
    source = validate_assembly(source)
    target = validate_assembly(target)
    target_ids = np.asarray(target[STIMULUS_ID].values)
    order: np.ndarray | None = check_stimulus_ids_match(source[STIMULUS_ID].values, target_ids, what="source")
    if order is not None and (order == np.arange(len(order))).all():
        order = None
    return np.asarray(source.values), order, np.asarray(target.values), target_ids


class _SimilarityMetric:
    """Shared machinery: Gram matrices once, then the whole set or the test part of each split."""

    name = ""

    def __init__(
        self,
        *,
        cross_validate: bool = False,
        n_splits: int = 10,
        test_size: float = 0.9,
        stratification_coord: str | None = AUTO,
        random_state: int = 1,
    ) -> None:
        self.cross_validate = cross_validate
        self.n_splits = n_splits
        self.test_size = test_size
        self.stratification_coord = stratification_coord
        self.random_state = random_state

    def get_params(self) -> dict[str, object]:
        if not self.cross_validate:
            return {}
        return {
            "n_splits": self.n_splits,
            "test_size": self.test_size,
            "stratification_coord": self.stratification_coord,
            "random_state": self.random_state,
        }

    def _prepare(self, values: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _compare(self, prepared_source: np.ndarray, prepared_target: np.ndarray) -> float:
        raise NotImplementedError

    def _condense(self, prepared: np.ndarray) -> np.ndarray:
        """What a whole-set comparison needs of a prepared matrix (default: all of it)."""
        return prepared

    def _compare_all(self, prepared_source: np.ndarray, prepared_target: np.ndarray, order: np.ndarray) -> float:
        """Compare over all stimuli, in stimulus_id order (Brain-Score sorts before comparing)."""
        return self._compare(prepared_source[np.ix_(order, order)], prepared_target[np.ix_(order, order)])

    def __call__(self, source: xr.DataArray, target: xr.DataArray) -> Score:
        """Compare ``source`` and ``target`` (both ``(presentation, neuroid)``, matched by ``stimulus_id``)."""
        source_values, source_order, target_values, ids = _aligned_values(source, target)
        order = np.argsort(ids, kind="stable")  # Brain-Score sorts by stimulus_id before comparing
        prepared_source = self._prepare(source_values)
        if source_order is not None:
            prepared_source = prepared_source[np.ix_(source_order, source_order)]
        attrs: dict[str, object] = {"metric": self.name, **self.get_params(), "n_stimuli": len(ids)}
        if not self.cross_validate:
            prepared_source = self._condense(prepared_source)  # the n x n matrix is freed here
            prepared_target = self._condense(self._prepare(target_values))
            value = self._compare_all(prepared_source, prepared_target, order)
            return Score(raw=value, error=math.nan, values=[value], attrs=attrs)  # one comparison: no error
        prepared_target = self._prepare(target_values)
        cross_validation = CrossValidation(
            n_splits=self.n_splits,
            train_size=None,
            test_size=self.test_size,
            stratification_coord=self.stratification_coord,
            random_state=self.random_state,
        )
        target = _validated(target)
        splits = cross_validation.splits(target, min_size=1)
        attrs["stratification_coord"] = cross_validation.stratification(target)  # effective ("auto" resolved)
        attrs["cross_validation"] = cross_validation.describe(target)
        per_split = []
        for _, test in splits:
            test = test[np.argsort(ids[test], kind="stable")]
            per_split.append(self._compare(prepared_source[np.ix_(test, test)], prepared_target[np.ix_(test, test)]))
        center, error = aggregate_splits(np.array(per_split))
        return Score(raw=center, error=error, values=per_split, attrs=attrs)


def _validated(target: xr.DataArray) -> xr.DataArray:
    return validate_assembly(target, require_finite=False)


class RDMSimilarity(_SimilarityMetric):
    """Brain-Score's ``rdm`` (``cross_validate=False``) and ``rdm_cv`` metrics: Spearman between RDM upper triangles.

    Parameters
    ----------
    cross_validate : bool, default=False
        ``rdm_cv``: score the test part (``test_size=0.9``) of ``n_splits`` shuffle splits and average.
    n_splits, test_size, stratification_coord, random_state
        Split parameters for ``rdm_cv`` (Brain-Score's: 10, 0.9, ``"auto"`` = ``object_name`` when the target has
        it, 1).
    precision : {"auto", "float64", "mixed"}, default="auto"
        How the stimulus-by-stimulus Gram matrix is multiplied (see :func:`gram_matrix`): ``"auto"`` uses float32
        products for float32 features (a model's activations) of at least 1,000 stimuli, float64 otherwise.
    """

    def __init__(self, *, precision: Precision = "auto", **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.precision = precision

    def get_params(self) -> dict[str, object]:
        return {"precision": self.precision, **super().get_params()}

    @property
    def name(self) -> str:  # type: ignore[override]
        return "rdm_cv" if self.cross_validate else "rdm"

    def _prepare(self, values: np.ndarray) -> np.ndarray:
        return rdm(values, precision=self.precision, block_size=1024)  # small blocks: less transient memory

    def _compare(self, prepared_source: np.ndarray, prepared_target: np.ndarray) -> float:
        return rdm_similarity(prepared_source, prepared_target)

    def _condense(self, prepared: np.ndarray) -> np.ndarray:
        return _upper_triangle(prepared)  # the stimulus order is irrelevant (see rdm_similarity)

    def _compare_all(self, prepared_source: np.ndarray, prepared_target: np.ndarray, order: np.ndarray) -> float:
        return _spearman(prepared_source, prepared_target)


class CKA(_SimilarityMetric):
    """Brain-Score's ``cka`` (unbiased, default), ``cka_biased`` and ``cka_cv`` metrics (linear kernel).

    Parameters
    ----------
    unbiased : bool, default=True
    cross_validate : bool, default=False
    n_splits, test_size, stratification_coord, random_state
        Split parameters for ``cka_cv`` (as ``rdm_cv``'s).
    """

    def __init__(self, *, unbiased: bool = True, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.unbiased = unbiased

    @property
    def name(self) -> str:  # type: ignore[override]
        base = "cka" if self.unbiased else "cka_biased"
        return base + ("_cv" if self.cross_validate else "")

    def get_params(self) -> dict[str, object]:
        return {"unbiased": self.unbiased, **super().get_params()}

    def _prepare(self, values: np.ndarray) -> np.ndarray:
        return gram_matrix(values)

    def _compare(self, prepared_source: np.ndarray, prepared_target: np.ndarray) -> float:
        if self.unbiased:
            return unbiased_linear_cka(prepared_source, prepared_target)
        return biased_linear_cka(prepared_source, prepared_target)


class RSACeiling:
    """Brain-Score's ``rsa_ceiling``: inter-subject RDM consistency (Spearman), no Spearman-Brown.

    ``raw`` is the upper bound (each subject's RDM against the mean RDM of all subjects, Nili et al. 2014);
    ``attrs["lower_bound_loo"]`` the leave-one-out lower bound. ``values`` holds the per-subject upper-bound
    correlations; ``error`` is their standard error (ddof 0), which Brain-Score does not report.

    Parameters
    ----------
    subject_coord : str, default="subject"
        Coordinate on ``neuroid`` naming each neuroid's subject.
    """

    name = "rsa_ceiling"

    def __init__(self, *, subject_coord: str = "subject") -> None:
        self.subject_coord = subject_coord

    def get_params(self) -> dict[str, object]:
        return {"subject_coord": self.subject_coord}

    def __call__(self, assembly: xr.DataArray) -> Score:
        """Estimate the ceiling of a ``(presentation, neuroid)`` recording with a subject coordinate on neuroid.

        Raises
        ------
        ValueError
            Missing subject coordinate, fewer than 2 subjects, or NaN values.
        """
        assembly = validate_assembly(assembly)
        if self.subject_coord not in assembly.coords or assembly[self.subject_coord].dims != (NEUROID,):
            raise ValueError(f"the RSA ceiling needs a {self.subject_coord!r} coordinate on {NEUROID!r}")
        subject_labels = np.asarray(assembly[self.subject_coord].values)
        subjects = np.unique(subject_labels)
        if len(subjects) < 2:
            raise InsufficientDataError(f"the RSA ceiling needs at least 2 subjects, got {len(subjects)}")
        values = np.asarray(assembly.values)
        rdms = np.array([rdm(values[:, subject_labels == subject]) for subject in subjects])
        mean_all = rdms.mean(axis=0)
        upper_index = np.triu_indices(mean_all.shape[0], k=1)
        upper, lower = [], []
        for i in range(len(subjects)):
            triangle = rdms[i][upper_index]
            others = np.delete(rdms, i, axis=0).mean(axis=0)
            lower.append(scipy.stats.spearmanr(triangle, others[upper_index])[0])
            upper.append(scipy.stats.spearmanr(triangle, mean_all[upper_index])[0])
        center, error = float(np.mean(upper)), float(np.std(upper) / np.sqrt(len(upper)))
        attrs = {
            "ceiling": self.name,
            "lower_bound_loo": float(np.mean(lower)),
            "subjects": [str(s) for s in subjects],
            "lower_values": [float(v) for v in lower],
            "n_stimuli": int(assembly.sizes[PRESENTATION]),
        }
        return Score(raw=center, error=error, values=[float(v) for v in upper], attrs=attrs)
