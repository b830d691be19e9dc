"""Bootstrap intervals computed at scoring time, recorded with the score (``Score.attrs["bootstrap"]``).

Every benchmark family resamples the units its score is an average over, with one generator
(:func:`numpy.random.default_rng`) seeded by a recorded seed (default :data:`DEFAULT_SEED`), and reports the
percentile interval of the resampled statistic (``n_boot`` replicates, level 0.95). What is resampled:

* **regression predictivity** (``pls``, ``ridge``, ...): stimuli, jointly (one multinomial draw over all stimuli;
  each split's held-out set takes the counts of its own stimuli, so a stimulus tested in two splits carries the same
  weight in both), and neuroids (one draw per replicate, shared by all splits). Per split the per-neuroid Pearson r
  between the *fitted* mapping's held-out predictions and the recordings is recomputed on the resampled test
  stimuli (weighted moments, no copies), the median over the resampled neuroids taken, and the mean over splits.
  **No refitting**: the interval covers the sampling of the evaluated stimuli and neuroids given the fitted mappings,
  not the variability of the mappings themselves (that would need 10 x n_boot fits).
* **RDM benchmarks**: stimuli (conditions), Nili et al. (2014)'s stimulus bootstrap: the RDMs are re-indexed by the
  resampled conditions and the pairs of a condition with its own copy are left out; the comparison (Spearman over
  the remaining pairs, mean over subjects) is recomputed. The resampled upper triangle is the multiset of original
  pairs ``{u, v}`` with multiplicity ``c_u c_v``, so this is a weighted Spearman on the original pairs.
* **behaviour**: images (accuracy, shape bias; error consistency with the same images for the model and every
  observer, so the trial pairing is kept).
* **language**: Futrell2018 words in contiguous blocks within each story (moving blocks: neighbouring words share
  spillover and context); Brennan2016 contiguous TR blocks within each held-out fold (moving blocks) and subjects;
  SyntaxGym items within each suite.

The interval is computed on the raw scale and mapped through the benchmark's ceiling normalisation by
:func:`~cortexbox.benchmarks.metrics.normalization.explained_variance` (ends mapped; a squared regime maps an
interval containing 0 to ``[0, max]``). It does not include the uncertainty of the ceiling.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_LEVEL",
    "DEFAULT_N_BOOT",
    "DEFAULT_SEED",
    "block_counts",
    "bootstrap_record",
    "correlation_bootstrap",
    "multinomial_counts",
    "percentile_interval",
    "predictivity_bootstrap",
    "rdm_bootstrap",
    "rdm_replicates",
    "rdm_replicates_many",
    "stratified_block_counts",
    "resampled_means",
    "weighted_pearson",
]

DEFAULT_SEED = 0
DEFAULT_N_BOOT = 1000
DEFAULT_LEVEL = 0.95
#: Elements per working array (replicates x units) when processing replicates in chunks.
CHUNK_ELEMENTS = 4_000_000


def percentile_interval(samples: np.ndarray, level: float = DEFAULT_LEVEL) -> tuple[float, float]:
    """The ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the finite replicates (NaN when none)."""
    finite = np.asarray(samples, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if not finite.size:
        return math.nan, math.nan
    lo, hi = np.quantile(finite, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def bootstrap_record(
    samples: np.ndarray,
    estimate: float,
    *,
    seed: Any,
    resampled: Sequence[str],
    method: str,
    level: float = DEFAULT_LEVEL,
    **extra: Any,
) -> dict[str, Any]:
    """The JSON-able record stored in ``Score.attrs["bootstrap"]``: the raw-scale interval (``raw``), the seed,
    ``n_boot``, ``level``, what was resampled and how; ``ceiled`` is filled in by the normalisation."""
    samples = np.asarray(samples, dtype=np.float64)
    lo, hi = percentile_interval(samples, level)
    finite = samples[np.isfinite(samples)]
    se = float(finite.std(ddof=1)) if finite.size > 1 else None
    def number(x: float | None) -> float | None:  # JSON (and PostgreSQL) has no NaN
        return None if x is None or not math.isfinite(x) else float(x)

    return {
        "method": method,
        "resampled": list(resampled),
        "seed": seed,
        "n_boot": int(samples.size),
        "n_finite": int(finite.size),
        "level": level,
        "raw": {"low": number(lo), "high": number(hi), "estimate": number(float(estimate)), "se": number(se)},
        "ceiled": None,
        **extra,
    }


# -- resampling weights ------------------------------------------------------------------------------------------------
def multinomial_counts(rng: np.random.Generator, n: int, n_boot: int) -> np.ndarray:
    """``(n_boot, n)`` counts of an ordinary bootstrap (n draws with replacement) of ``n`` units."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)


def block_counts(rng: np.random.Generator, n: int, block: int, n_boot: int) -> np.ndarray:
    """``(n_boot, n)`` counts of a moving block bootstrap (Kuensch 1989) of a series of ``n`` rows: blocks of
    ``block`` contiguous rows starting uniformly in ``[0, n - block]``, concatenated and cut to ``n`` rows."""
    block = max(1, min(block, n))
    n_blocks = math.ceil(n / block)
    starts = rng.integers(0, n - block + 1, size=(n_boot, n_blocks))
    lengths = np.full(n_blocks, block)
    lengths[-1] = n - block * (n_blocks - 1)  # the last block is cut
    diff = np.zeros((n_boot, n + 1))
    replicate = np.repeat(np.arange(n_boot), n_blocks)
    np.add.at(diff, (replicate, starts.ravel()), 1.0)
    np.add.at(diff, (replicate, (starts + lengths).ravel()), -1.0)
    return np.cumsum(diff, axis=1)[:, :n]


def stratified_block_counts(rng: np.random.Generator, lengths: Sequence[int], block: int, n_boot: int) -> np.ndarray:
    """Moving block counts drawn within each stratum (consecutive runs of ``lengths`` rows), concatenated: every
    stratum keeps its size, blocks never cross a stratum's boundary."""
    return np.hstack([block_counts(rng, int(n), block, n_boot) for n in lengths])


def grouped_block_replicates(groups: np.ndarray, block: int, n_boot: int, seed: int, statistic) -> np.ndarray:
    """``n_boot`` replicates of ``statistic(counts)`` (counts: replicates x rows, returning one value per replicate)
    under a moving block bootstrap within each run of equal ``groups`` (e.g. words within stories), drawn in chunks
    that keep the count matrix under :data:`CHUNK_ELEMENTS`."""
    change = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1], True])
    lengths = np.diff(change).tolist()
    rng = np.random.default_rng(seed)
    out = np.empty(n_boot)
    chunk = max(1, CHUNK_ELEMENTS // len(groups))
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        out[start : start + b] = statistic(stratified_block_counts(rng, lengths, block, b))
    return out


# -- weighted statistics -----------------------------------------------------------------------------------------------
def weighted_pearson(weights: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r of the columns of ``x`` and ``y`` (``(n, k)``) over rows repeated ``weights`` times, for each row of
    ``weights`` (``(b, n)``): ``(b, k)``. NaN where a resampled column is constant."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    x = x - x.mean(axis=0)  # centring first keeps the moments well conditioned
    y = y - y.mean(axis=0)
    total = weights.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx, my = (weights @ x) / total, (weights @ y) / total
        cov = (weights @ (x * y)) / total - mx * my
        vx = (weights @ (x * x)) / total - mx * mx
        vy = (weights @ (y * y)) / total - my * my
        r = cov / np.sqrt(vx * vy)
    bad = (vx <= 1e-12 * np.maximum((x * x).mean(axis=0), 1e-300)) | (vy <= 1e-12 * np.maximum((y * y).mean(axis=0), 1e-300))
    r[bad] = np.nan
    return np.clip(r, -1.0, 1.0)


def _nanmedian_rows(a: np.ndarray) -> np.ndarray:
    """Median over the last axis, NaN skipped (NaN where all are NaN), fast when nothing is NaN."""
    if not np.isnan(a).any():
        return np.median(a, axis=-1)
    with np.errstate(invalid="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmedian(a, axis=-1)


def _nanmean(a: np.ndarray, axis: int) -> np.ndarray:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(a, axis=axis)


def correlation_bootstrap(
    tests: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    *,
    row_counts: Callable[[int, int], list[np.ndarray]],
    n_columns: int,
    resample_columns: bool,
    rng: np.random.Generator,
    n_boot: int = DEFAULT_N_BOOT,
) -> np.ndarray:
    """Replicates of ``mean over splits of median over columns of Pearson r(held-out recording, prediction)``.

    Parameters
    ----------
    tests : list of (rows, y_true, y_pred)
        Per split: the held-out rows (indices the caller's ``row_counts`` understands), recordings and the fitted
        mapping's predictions, ``(n_test, n_columns)``.
    row_counts : callable (first replicate, number of replicates) -> list of (b, n_test) count arrays, one per split
        How the held-out rows are resampled (joint multinomial over stimuli, moving blocks, ...).
    resample_columns : bool
        Also resample the columns (neuroids, subjects) with replacement, one draw per replicate shared by all splits.

    Returns
    -------
    numpy.ndarray of shape (n_boot,)
    """
    largest = max(len(rows) for rows, _, _ in tests)
    chunk = max(1, min(n_boot, CHUNK_ELEMENTS // max(1, len(tests) * max(n_columns, largest))))
    out = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        counts = row_counts(start, b)
        columns = rng.integers(0, n_columns, size=(b, n_columns)) if resample_columns else None
        per_split = np.empty((len(tests), b))
        for s, ((_, y_true, y_pred), w) in enumerate(zip(tests, counts)):
            r = weighted_pearson(w, y_true, y_pred)  # (b, n_columns)
            if columns is not None:
                r = np.take_along_axis(r, columns, axis=1)
            per_split[s] = _nanmedian_rows(r)
        out[start : start + b] = _nanmean(per_split, axis=0)
    return out


def predictivity_bootstrap(
    held_out: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    n_stimuli: int,
    *,
    n_boot: int = DEFAULT_N_BOOT,
    seed: Any = DEFAULT_SEED,
    resample_neuroids: bool = True,
) -> np.ndarray:
    """Replicates of a cross-validated predictivity score given the fitted mappings' held-out predictions.

    ``held_out``: per split ``(test rows, recording, prediction)`` with rows indexing ``n_stimuli`` stimuli. Each
    replicate draws ``n_stimuli`` stimuli with replacement once (a split's held-out set takes the counts of its own
    stimuli) and, with ``resample_neuroids``, the neuroids once (shared by all splits); then per split the median
    over neuroids of the Pearson r on the resampled test stimuli, and the mean over splits. No refitting.
    """
    rng = np.random.default_rng(seed)
    n_columns = held_out[0][1].shape[1]

    def joint_counts(first: int, b: int) -> list[np.ndarray]:
        counts = multinomial_counts(rng, n_stimuli, b)
        return [counts[:, rows] for rows, _, _ in held_out]

    return correlation_bootstrap(
        held_out, row_counts=joint_counts, n_columns=n_columns, resample_columns=resample_neuroids, rng=rng,
        n_boot=n_boot,
    )


# -- RDMs ----------------------------------------------------------------------------------------------------------------
def _tie_groups(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Sort order of ``values``, each sorted element's group of equal values, and the groups' first positions
    (``None`` when there are no ties)."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    new_group = np.r_[True, sorted_values[1:] != sorted_values[:-1]]
    starts = None if new_group.all() else np.flatnonzero(new_group)
    return order, np.cumsum(new_group) - 1, starts


def _weighted_midranks(weights_sorted: np.ndarray, groups: np.ndarray, starts: np.ndarray | None) -> np.ndarray:
    """Average ranks (ties shared) of sorted values repeated ``weights`` times, ``(b, n)`` in sorted order."""
    group_weight = weights_sorted if starts is None else np.add.reduceat(weights_sorted, starts, axis=1)
    ranks = np.cumsum(group_weight, axis=1) - (group_weight - 1.0) / 2.0  # = before + (g + 1) / 2
    return ranks if starts is None else ranks[:, groups]


def rdm_bootstrap(
    model_rdm: np.ndarray,
    subject_rdms: np.ndarray,
    *,
    rng: np.random.Generator,
    n_boot: int = DEFAULT_N_BOOT,
) -> np.ndarray:
    """Replicates of ``mean over subjects of Spearman(model RDM, subject RDM)`` (upper triangles) under Nili et al.
    (2014)'s stimulus bootstrap: conditions drawn with replacement, pairs of a condition with its own copy left out.

    Pair ``{u, v}`` of the original conditions appears ``c_u c_v`` times in a replicate (``c`` the counts), so the
    replicate is Spearman's rho (average ranks for ties) on the original pairs weighted by ``c_u c_v``: no resampled
    RDM is built (:func:`rdm_replicates`).
    """
    n = model_rdm.shape[0]
    iu, ju = np.triu_indices(n, k=1)
    model = np.asarray(model_rdm)[iu, ju]
    subjects = np.stack([np.asarray(r)[iu, ju] for r in subject_rdms])
    chunk = max(1, min(n_boot, CHUNK_ELEMENTS // max(1, len(iu))))
    out = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        out[start : start + b] = rdm_replicates(model, subjects, multinomial_counts(rng, n, b))
    return out


def rdm_replicates(model: np.ndarray, subjects: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``mean over subjects of Spearman(model, subject)`` over the pairs ``{u, v}`` (``u < v``) of the conditions,
    pair weighted ``counts[r, u] * counts[r, v]``, for each row ``r`` of ``counts`` ``(b, n)``: ``(b,)``.

    ``model`` ``(n_pairs,)`` and ``subjects`` ``(n_subjects, n_pairs)`` are condensed upper triangles (row-major
    ``triu_indices(n, 1)`` order), or anything with the same order (e.g. their ranks). A row of ones is the plain
    Spearman rho (average ranks for ties).
    """
    return rdm_replicates_many(np.asarray(model)[None], subjects, counts)[0]


def rdm_replicates_many(models: np.ndarray, subjects: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """:func:`rdm_replicates` of several models ``(n_models, n_pairs)`` against the same subjects on the same
    counts: ``(n_models, b)``. The subjects' weighted ranks are computed once for all models (a paired comparison
    of two models on one RDM benchmark costs little more than one)."""
    counts = np.asarray(counts, dtype=np.float64)
    b, n = counts.shape
    iu, ju = np.triu_indices(n, k=1)
    models = np.asarray(models)
    if models.shape[1] != len(iu):
        raise ValueError(f"{n} conditions have {len(iu)} pairs, got {models.shape[1]}")
    sorted_models = [_tie_groups(m) for m in models]
    sorted_subjects = [_tie_groups(np.asarray(r)) for r in subjects]
    chunk = max(1, min(b, CHUNK_ELEMENTS // max(1, len(iu))))
    out = np.empty((len(models), b))
    for start in range(0, b, chunk):
        c = counts[start : start + chunk]
        w = c[:, iu] * c[:, ju]  # multiplicity of each original pair
        total = w.sum(axis=1, keepdims=True)
        centred, variances = [], []
        for order, groups, starts in sorted_models:
            ranked = np.empty_like(w)
            ranked[:, order] = _weighted_midranks(w[:, order], groups, starts)
            with np.errstate(invalid="ignore", divide="ignore"):
                ranked -= (w * ranked).sum(axis=1, keepdims=True) / total
            centred.append(ranked)
            variances.append((w * ranked * ranked).sum(axis=1))
        rhos = np.empty((len(models), len(sorted_subjects), len(c)))
        for k, (order, groups, starts) in enumerate(sorted_subjects):
            w_sorted = w[:, order]  # work in the subject's sorted order: no scatter
            ranks = _weighted_midranks(w_sorted, groups, starts)
            with np.errstate(invalid="ignore", divide="ignore"):
                ranks -= (w_sorted * ranks).sum(axis=1, keepdims=True) / total
                weighted = w_sorted * ranks
                subject_var = (weighted * ranks).sum(axis=1)
                for j, ranked in enumerate(centred):
                    rhos[j, k] = (weighted * ranked[:, order]).sum(axis=1) / np.sqrt(variances[j] * subject_var)
        out[:, start : start + len(c)] = rhos.mean(axis=1)
    return out


# -- proportions over resampled units -----------------------------------------------------------------------------------
def resampled_means(rng: np.random.Generator, values: np.ndarray, n_boot: int = DEFAULT_N_BOOT) -> np.ndarray:
    """Replicates of the mean of ``values`` (one per unit) under an ordinary bootstrap of the units."""
    values = np.asarray(values, dtype=np.float64)
    return multinomial_counts(rng, len(values), n_boot) @ values / len(values)
