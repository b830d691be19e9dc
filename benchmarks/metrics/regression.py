"""Mappings from model features to neural responses, and the row-space projection that makes PLS cheap.

Why the projection is exact
---------------------------
sklearn's ``PLSRegression(scale=False)`` centres ``X`` by the training mean and then works only through products
with ``X``: NIPALS weights ``w = Xc^T u / |Xc^T u|``, scores ``t = Xc w``, loadings ``p = Xc^T t / t^T t``, deflation
``Xc -= t p^T``, and predictions ``(x - mean_train) @ coef`` with ``coef = W (P^T W)^-1 Q^T``. If ``V`` (p x r) has
orthonormal columns spanning every training row of ``Xc``, then running the same algorithm on ``Xc V`` gives
``w' = V^T w``, the same scores ``t``, ``coef' = V^T coef`` and the same predictions, because every weight, loading
and coefficient vector lies in the row space of ``Xc`` (``V V^T w = w``). The NIPALS convergence test
``|w_k - w_{k-1}|^2`` is a norm, so it is unchanged too. sklearn's per-component sign flip (by the largest
``|w|`` entry) depends on the basis, but flipping a component's ``w`` and ``c`` together leaves ``coef`` unchanged.

The same holds for ``Ridge`` and ``RidgeCV`` (they see ``X`` only through ``Xc Xc^T`` and ``Xc w`` with ``w`` in the
row space; RidgeCV's leave-one-out errors come from the same Gram matrix, so it picks the same alpha: Brain-Score's
``DualRidgeCVRegression`` relies on this) and for ``LinearRegression`` (its minimum-norm least-squares solution
lies in the row space). ``neuron_to_neuron`` picks raw feature columns, so it never projects.

Which ``V`` works for *every* split: the training rows centred by the training mean,
``x_i - m_train = (x_i - m_all) - (m_train - m_all)``, are combinations of the rows centred by the mean over *all*
stimuli (``m_train - m_all`` is the mean of some of those rows). So the row space of the globally centred matrix
``Xc_all = X - m_all`` (rank <= n - 1) contains every split's centred training rows, and its coordinates
``Z = Xc_all V = U S`` (thin SVD ``Xc_all = U S V^T``) can stand in for ``X`` in every split: ``Z`` is ``n x r``
instead of ``n x p``. (The uncentred row space would also do; centring first removes the large mean direction, which
keeps the Gram matrix better conditioned.)

``Z`` comes from the ``n x n`` Gram matrix ``G = Xc_all Xc_all^T = U S^2 U^T`` (``Z = U S``), accumulated over
column blocks converted to float64 one block at a time: the only full-size array is the caller's own.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, Literal

import numpy as np
import scipy.linalg
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LinearRegression, Ridge, RidgeCV

logger = logging.getLogger(__name__)

__all__ = [
    "ALPHA_LIST",
    "DEFAULT_BLOCK_SIZE",
    "PLS_MAX_ITER_NOTE",
    "REGRESSIONS",
    "RegressionKind",
    "fit_predict",
    "fit_predict_pls",
    "row_space_coordinates",
    "single_unit_mapping",
]

RegressionKind = Literal["pls", "ridge", "linear", "ridgecv", "neuron_to_neuron"]

#: The mappings :func:`fit_predict` knows, with the sklearn estimator each one is (Brain-Score's registry names).
REGRESSIONS: dict[str, str] = {
    "pls": "PLSRegression(n_components=25, scale=False)",
    "ridge": "Ridge(alpha=1)",
    "linear": "LinearRegression()",
    "ridgecv": "RidgeCV(alphas=ALPHA_LIST) (leave-one-out / GCV alpha)",
    "neuron_to_neuron": "each neuroid mapped to the single source unit with the highest training Pearson r",
}

#: Brain-Score's ``ALPHA_LIST`` for ``ridgecv`` (``metrics/regression_correlation/metric.py``): 95 values.
ALPHA_LIST: list[float] = [
    *[0.01, 0.1, 0.5, 1.0],
    *np.linspace(1e1, 1e2, 4, endpoint=False).tolist(),
    *np.linspace(1e2, 1e3, 18, endpoint=False).tolist(),
    *np.linspace(1e3, 1e4, 18, endpoint=False).tolist(),
    *np.linspace(1e4, 1e5, 18, endpoint=False).tolist(),
    *np.linspace(1e5, 1e6, 18, endpoint=False).tolist(),
    *np.linspace(1e6, 1e7, 19).tolist(),
]

#: Why a PLS component whose power method stops at ``max_iter`` is kept, and not warned about, in the metrics.
PLS_MAX_ITER_NOTE = (
    "NIPALS finds each component's weights by power iteration on the residual cross-covariance M = X_k^T Y_k, which"
    " converges at the rate (s2/s1)^2 of its two largest singular values; where they nearly tie (s2/s1 = 0.995-0.997"
    " at components 12-18 of MobileNet layers on Cowley's 300 selection images) 500 iterations cannot meet tol=1e-6"
    " and the weights mix the two directions. Not a data defect: those layers have full rank, no constant column,"
    " X_k and Y_k far from 0. sklearn, so Brain-Score's pls, stops at the same iterate (same max_iter and tol), so the"
    " score is Brain-Score's; iterating to convergence moved a split's median r by at most 4e-4. The affected"
    " [split, component] pairs are in the score's attrs (pls_max_iter_reached)."
)

#: Feature columns converted to float64 at a time when building the Gram matrix (640 x 4096 x 8 B = 21 MB).
DEFAULT_BLOCK_SIZE = 4096


def row_space_coordinates(features: np.ndarray, *, block_size: int = DEFAULT_BLOCK_SIZE) -> np.ndarray:
    """Coordinates of the globally centred rows of ``features`` in an orthonormal basis of their span.

    Parameters
    ----------
    features : numpy.ndarray of shape (n_samples, n_features)
        Any real dtype and memory layout; never copied whole (read ``block_size`` columns at a time).
    block_size : int, default=4096
        Columns per float64 block.

    Returns
    -------
    numpy.ndarray of shape (n_samples, rank)
        ``Z`` with ``Z @ Z.T == (X - X.mean(0)) @ (X - X.mean(0)).T`` (float64). Directions whose eigenvalue is
        below ``n * eps * max eigenvalue`` (numerically null) are dropped. PLS (``scale=False``) fitted and
        evaluated on ``Z`` predicts what it would on ``X`` for any split of the rows (see the module docstring).
    """
    features = np.asarray(features)
    if features.ndim != 2:
        raise ValueError(f"features must be 2-D, got shape {features.shape}")
    n_samples, n_features = features.shape
    gram = np.zeros((n_samples, n_samples))
    for start in range(0, n_features, block_size):
        block = np.array(features[:, start : start + block_size], dtype=np.float64, order="C")
        block -= block.mean(axis=0)
        gram += block @ block.T
    gram = (gram + gram.T) / 2
    eigenvalues, eigenvectors = np.linalg.eigh(gram)
    largest = eigenvalues[-1] if eigenvalues.size else 0.0
    if not largest > 0:
        return np.zeros((n_samples, 0))
    keep = eigenvalues > largest * n_samples * np.finfo(np.float64).eps
    coordinates = eigenvectors[:, keep] * np.sqrt(eigenvalues[keep])
    logger.debug("row space of %d x %d features has rank %d", n_samples, n_features, int(keep.sum()))
    return coordinates[:, ::-1].copy()  # largest first, for readability


def fit_predict_pls(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    *,
    n_components: int = 25,
    max_iter: int = 500,
    tol: float = 1e-06,
    capped: list[int] | None = None,
) -> np.ndarray:
    """``PLSRegression(n_components, scale=False).fit(x_train, y_train).predict(x_test)``, computed faster.

    The same NIPALS algorithm as sklearn's ``_PLS.fit`` (centring, per-component power method with its ``tol`` and
    ``max_iter``, sign flip, deflation of ``X`` and ``Y`` in "regression" mode, ``coef = W (P^T W)^+ Q^T``), with one
    change in how the power method's iterates are computed. sklearn alternates ``X^T s``, ``X w``, ``Y^T t``,
    ``Y c``; every iterate is ``w_{i+1} ~ X^T Y Y^T X w_i``, so with ``M = X_k^T Y_k`` (``n_features x n_targets``,
    formed once per component) each iteration is ``w <- normalise(M (M^T w))``: two products with ``M`` instead of
    four with the data matrices. The iterates, the convergence test on ``|w_i - w_{i-1}|^2`` and so the number of
    iterations are the same up to float rounding (sklearn's ``eps`` guards change values by ~1e-16); the
    y-weights' scale, which this skips, does not enter the predictions. Measured against sklearn: predictions agree
    to ~1e-13 relative.

    Parameters
    ----------
    x_train : numpy.ndarray of shape (n_train, n_features)
    y_train : numpy.ndarray of shape (n_train, n_targets)
    x_test : numpy.ndarray of shape (n_test, n_features)
    n_components : int, default=25
        Brain-Score's ``pls_regression`` default.
    max_iter, tol
        sklearn's power-method defaults.
    capped : list of int, optional
        Where to record the components whose power method stopped at ``max_iter`` (sklearn's ConvergenceWarning
        "Maximum number of iterations reached"); without it they are warned about as sklearn does. The cap is part
        of Brain-Score's ``pls``, so a capped component is kept as it is: see :data:`PLS_MAX_ITER_NOTE`.

    Returns
    -------
    numpy.ndarray of shape (n_test, n_targets)
    """
    xk = np.array(x_train, dtype=np.float64)  # copy: deflated in place
    yk = np.array(y_train, dtype=np.float64)
    if yk.ndim == 1:
        yk = yk[:, None]
    n, p = xk.shape
    q = yk.shape[1]
    if n < 2:
        raise ValueError(f"PLS needs at least 2 training samples, got {n}")
    if n_components > min(n, p):
        raise ValueError(f"`n_components` upper bound is {min(n, p)}. Got {n_components} instead. Reduce `n_components`.")
    x_mean, y_mean = xk.mean(axis=0), yk.mean(axis=0)
    xk -= x_mean
    yk -= y_mean
    weights = np.zeros((p, n_components))
    loadings = np.zeros((p, n_components))
    y_loadings = np.zeros((q, n_components))
    eps = np.finfo(np.float64).eps
    for k in range(n_components):
        yk[:, np.all(np.abs(yk) < 10 * eps, axis=0)] = 0.0
        nonzero = np.flatnonzero(np.any(np.abs(yk) > eps, axis=0))
        if not len(nonzero):
            warnings.warn(f"y residual is constant at iteration {k}", stacklevel=2)
            break
        start = yk[:, nonzero[0]]
        cross = xk.T @ yk  # M = X_k^T Y_k
        w = cross[:, nonzero[0]] / np.dot(start, start)
        w /= np.sqrt(np.dot(w, w)) + eps
        if q > 1:
            for iteration in range(1, max_iter):
                previous = w
                w = cross @ (cross.T @ w)
                w /= np.sqrt(np.dot(w, w)) + eps
                diff = w - previous
                if np.dot(diff, diff) < tol:
                    break
            else:
                if capped is None:
                    warnings.warn("Maximum number of iterations reached", ConvergenceWarning, stacklevel=2)
                else:
                    capped.append(k)
        w *= np.sign(w[np.argmax(np.abs(w))])  # sklearn's _svd_flip_1d (the sign cancels in the coefficients)
        scores = xk @ w
        norm = np.dot(scores, scores)
        x_loading = (scores @ xk) / norm
        xk -= np.outer(scores, x_loading)
        y_loading = (scores @ yk) / norm
        yk -= np.outer(scores, y_loading)
        weights[:, k], loadings[:, k], y_loadings[:, k] = w, x_loading, y_loading
    rotations = weights @ scipy.linalg.pinv(loadings.T @ weights, check_finite=False)
    coef = rotations @ y_loadings.T  # (p, q)
    x_test = np.asarray(x_test)
    centred = x_test - x_mean
    if x_test.dtype in (np.float32, np.float16):
        centred = centred.astype(x_test.dtype)  # sklearn's predict centres float32 rows in place, in float32
    return centred @ coef + y_mean


def fit_predict(
    kind: RegressionKind,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    *,
    n_components: int = 25,
    alpha: float = 1.0,
    alphas: list[float] | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Fit one of Brain-Score's mappings on the training rows and predict the test rows.

    Parameters
    ----------
    kind : {"pls", "ridge", "linear", "ridgecv", "neuron_to_neuron"}
    x_train : numpy.ndarray of shape (n_train, n_features)
    y_train : numpy.ndarray of shape (n_train, n_targets)
    x_test : numpy.ndarray of shape (n_test, n_features)
    n_components : int, default=25
        PLS components.
    alpha : float, default=1.0
        Ridge penalty.
    alphas : list of float, optional
        RidgeCV's grid; default :data:`ALPHA_LIST`.

    Returns
    -------
    prediction : numpy.ndarray of shape (n_test, n_targets)
    info : dict
        ``{"alpha": chosen alpha}`` for ridgecv; ``{"max_iter_components": [...]}`` for pls (the components whose
        power method stopped at ``max_iter``, recorded instead of warned about); else empty.
    """
    if kind == "pls":
        capped: list[int] = []
        prediction = fit_predict_pls(x_train, y_train, x_test, n_components=n_components, capped=capped)
        return prediction, {"max_iter_components": capped}
    if kind == "ridge":
        model = Ridge(alpha=alpha).fit(x_train, y_train)
        return model.predict(x_test), {}
    if kind == "linear":
        model = LinearRegression().fit(x_train, y_train)
        return model.predict(x_test), {}
    if kind == "ridgecv":
        model = RidgeCV(alphas=ALPHA_LIST if alphas is None else alphas).fit(x_train, y_train)
        return model.predict(x_test), {"alpha": float(model.alpha_)}
    if kind == "neuron_to_neuron":
        mapping = single_unit_mapping(x_train, y_train)
        return np.asarray(x_test)[:, mapping], {}
    raise ValueError(f"regression must be one of {sorted(REGRESSIONS)}, got {kind!r}")


def single_unit_mapping(
    x_train: np.ndarray, y_train: np.ndarray, *, block_size: int = DEFAULT_BLOCK_SIZE
) -> np.ndarray:
    """For each target column, the source column with the highest Pearson r on the training rows.

    Brain-Score's ``SingleRegression`` (``neuron_to_neuron``): ``nanargmax`` over source units of the correlation with
    each neuroid, so constant source columns (NaN r) are skipped and ties go to the first unit. Computed a block of
    source columns at a time in float64.

    Returns
    -------
    numpy.ndarray of shape (n_targets,)
        Source column indices.
    """
    y = np.asarray(y_train, dtype=np.float64)
    y = y - y.mean(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        y = y / np.linalg.norm(y, axis=0)
    best = np.full(y.shape[1], -np.inf)
    mapping = np.full(y.shape[1], -1, dtype=np.int64)
    n_features = x_train.shape[1]
    for start in range(0, n_features, block_size):
        block = np.array(x_train[:, start : start + block_size], dtype=np.float64)
        block -= block.mean(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            block /= np.linalg.norm(block, axis=0)
            r = block.T @ y  # (block, n_targets)
        r = np.where(np.isnan(r), -np.inf, r)
        index = np.argmax(r, axis=0)
        value = r[index, np.arange(r.shape[1])]
        better = value > best
        best[better] = value[better]
        mapping[better] = start + index[better]
    if (mapping < 0).any():
        raise ValueError("neuron_to_neuron: every source unit is constant on the training stimuli")
    return mapping
