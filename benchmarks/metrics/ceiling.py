"""Ceilings: how well the recording predicts itself.

:class:`InternalConsistency` is Brain-Score's ``internal_consistency`` ceiling
(brain-score/vision: ``brainscore_vision/metrics/internal_consistency/ceiling.py``, with ``CrossValidationSingle``
and ``Split`` from ``metric_helpers/transformations.py``):

1. The unique ``repetition`` values are split in halves 10 times:
   ``ShuffleSplit(n_splits=10, train_size=0.5, test_size=None, random_state=1)`` over ``np.unique(repetition)``
   (``unique_split_values=True``, no stratification).
2. Each half keeps the presentations whose repetition is in it and is averaged over repetitions per stimulus
   (``SplitHalfWrapper._average_repetitions``).
3. Pearson r per neuroid between the two halves, across stimuli (``PearsonCorrelation`` -> ``XarrayCorrelation``).
4. Spearman-Brown ``2r / (1 + r)`` is applied to **each neuroid's r, before the median**: ``SplitHalfWrapper``
   returns the corrected per-neuroid values and the ``aggregate`` (median over neuroids) runs on them
   afterwards in ``Transformation.__call__``. (With an even number of neuroids the two orders differ slightly,
   because the median then averages the two middle values.)
5. Median over neuroids per split (NaN skipped), mean over splits, error = ``std(ddof=0) / sqrt(n_splits)``.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import xarray as xr

from ..assemblies import AssemblyValidationError
from ..dims import NEUROID, NEUROID_ID, PRESENTATION, REPETITION, STIMULUS_ID, TIME_BIN, TIME_BIN_END, TIME_BIN_START
from ..score import Score
from .correlation import pearson_r_score
from .cross_validation import InsufficientDataError, aggregate_splits, shuffle_splits

logger = logging.getLogger(__name__)

__all__ = ["InternalConsistency", "ItemStatisticsCeiling", "TemporalInternalConsistency", "spearman_brown"]


def spearman_brown(r: np.ndarray | float, n: float = 2) -> np.ndarray | float:
    """Spearman-Brown prophecy ``n r / (1 + (n - 1) r)``: reliability of ``n`` times the data (here 2 halves)."""
    return n * r / (1 + (n - 1) * r)


def _half_means(
    values: np.ndarray, codes: np.ndarray, mask: np.ndarray, n_stimuli: int
) -> tuple[np.ndarray, np.ndarray]:
    """Mean per stimulus over the presentations in ``mask``; also return how many presentations each got."""
    sums = np.zeros((n_stimuli, values.shape[1]))
    np.add.at(sums, codes[mask], values[mask])
    counts = np.bincount(codes[mask], minlength=n_stimuli)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts[:, None], counts


class InternalConsistency:
    """Split-half consistency over repetitions with Spearman-Brown correction (Brain-Score's ceiling).

    Parameters
    ----------
    n_splits : int, default=10
    train_size : float, default=0.5
        Fraction of the unique repetition values in the first half (the second half is the rest).
    random_state : int, default=1
    """

    name = "internal_consistency"

    def __init__(self, *, n_splits: int = 10, train_size: float = 0.5, random_state: int = 1) -> None:
        self.n_splits = n_splits
        self.train_size = train_size
        self.random_state = random_state

    def get_params(self) -> dict[str, object]:
        """The constructor parameters (JSON-able)."""
        return {"n_splits": self.n_splits, "train_size": self.train_size, "random_state": self.random_state}

    def __call__(self, assembly: xr.DataArray) -> Score:
        """Estimate the ceiling of a raw recording.

        Parameters
        ----------
        assembly : xarray.DataArray
            Dims ``(presentation, neuroid)``; one presentation per trial with coords ``stimulus_id`` and
            ``repetition`` on presentation, ``neuroid_id`` on neuroid. No NaN (drop padded trials first).

        Returns
        -------
        Score
            ``raw`` = mean over splits of the median over neuroids of the Spearman-Brown corrected split-half r.

        Raises
        ------
        ValueError
            Missing coords, NaN values, or a stimulus that has no presentation in one half of a split.
        """
        if set(assembly.dims) != {PRESENTATION, NEUROID}:
            raise AssemblyValidationError(f"expected dims {{presentation, neuroid}}, got {assembly.dims}")
        assembly = assembly.transpose(PRESENTATION, NEUROID)
        for coord in (STIMULUS_ID, REPETITION):
            if coord not in assembly.coords or assembly[coord].dims != (PRESENTATION,):
                raise AssemblyValidationError(f"assembly needs a {coord!r} coordinate on 'presentation'")
        values = np.asarray(assembly.values, dtype=np.float64)
        if not np.isfinite(values).all():
            raise AssemblyValidationError("assembly holds NaN or inf; drop padded (missing) trials first")
        codes, stimulus_ids = pd.factorize(np.asarray(assembly[STIMULUS_ID].values))
        repetitions = np.asarray(assembly[REPETITION].values)
        unique_repetitions = np.unique(repetitions)
        if len(unique_repetitions) < 2:
            raise InsufficientDataError(
                f"a split-half ceiling needs at least 2 repetitions; the assembly has {len(unique_repetitions)}"
                f" ({REPETITION}={unique_repetitions.tolist()}). Pass the per-trial recording, not the average."
            )
        splits = shuffle_splits(
            len(unique_repetitions), n_splits=self.n_splits, train_size=self.train_size, random_state=self.random_state
        )
        n_stimuli = len(stimulus_ids)
        corrected = np.empty((len(splits), values.shape[1]))
        for split, (first, second) in enumerate(splits):
            halves = []
            for half in (first, second):
                mask = np.isin(repetitions, unique_repetitions[half])
                means, counts = _half_means(values, codes, mask, n_stimuli)
                if (counts == 0).any():
                    missing = np.asarray(stimulus_ids)[counts == 0]
                    raise ValueError(
                        f"split {split}: {len(missing)} stimuli have no repetition in half"
                        f" {sorted(unique_repetitions[half].tolist())}, e.g. {missing[:3].tolist()}"
                    )
                halves.append(means)
            r = pearson_r_score(halves[1], halves[0], aggregate="raw_values")
            corrected[split] = spearman_brown(r, n=2)
        per_split = np.array([np.nan if np.isnan(row).all() else np.nanmedian(row) for row in corrected])
        center, error = aggregate_splits(per_split)
        attrs = {
            "ceiling": self.name,
            "split_coord": REPETITION,
            "unique_split_values": True,
            "n_unique_repetitions": int(len(unique_repetitions)),
            "correction": "spearman_brown(n=2), per neuroid before the median",
            "neuroid_aggregation": "median",
            "split_aggregation": "mean; error = std(ddof=0) / sqrt(n_splits)",
            **self.get_params(),
            "n_stimuli": int(n_stimuli),
            "n_presentations": int(values.shape[0]),
            "n_neuroids": int(values.shape[1]),
            "n_nan_correlations": int(np.isnan(corrected).sum()),
            "neuroid_ids": [str(v) for v in assembly[NEUROID_ID].values] if NEUROID_ID in assembly.coords else [],
        }
        return Score(raw=center, error=error, values=per_split.tolist(), attrs=attrs, split_neuroid_values=corrected)


class TemporalInternalConsistency:
    """Brain-Score's ``internal_consistency_temporal``: :class:`InternalConsistency` per time bin.

    The assembly has dims ``(presentation, neuroid, time_bin)``; each bin is scored on its own (same splits, since
    the split is over repetition values). ``raw`` is the mean over bins; ``attrs["time_bins"]`` lists each bin's
    ``time_bin_start``/``time_bin_end`` (when present), ``raw`` and ``error``; ``values`` the per-bin ``raw``.
    """

    name = "internal_consistency_temporal"

    def __init__(self, *, n_splits: int = 10, train_size: float = 0.5, random_state: int = 1) -> None:
        self.n_splits = n_splits
        self.train_size = train_size
        self.random_state = random_state

    def get_params(self) -> dict[str, object]:
        return {"n_splits": self.n_splits, "train_size": self.train_size, "random_state": self.random_state}

    def __call__(self, assembly: xr.DataArray) -> Score:
        if TIME_BIN not in assembly.dims:
            raise AssemblyValidationError(f"expected a {TIME_BIN!r} dim, got dims {assembly.dims}")
        per_bin = InternalConsistency(**self.get_params())  # type: ignore[arg-type]
        bins = []
        for index in range(assembly.sizes[TIME_BIN]):
            ceiling = per_bin(assembly.isel({TIME_BIN: index}, drop=False).drop_vars(
                [c for c in assembly.coords if assembly[c].dims == (TIME_BIN,)]
            ))
            entry: dict[str, object] = {"raw": ceiling.raw, "error": ceiling.error, "values": ceiling.values}
            for coord in (TIME_BIN_START, TIME_BIN_END):
                if coord in assembly.coords:
                    entry[coord] = assembly[coord].values[index].item()
            bins.append(entry)
        raws = np.array([b["raw"] for b in bins], dtype=np.float64)
        attrs = {"ceiling": self.name, **self.get_params(), "time_bins": bins}
        return Score(raw=float(np.nanmean(raws)), error=math.nan, values=raws.tolist(), attrs=attrs)


class ItemStatisticsCeiling:
    """Reliability of per-item means when only means, standard deviations and counts were published.

    With ``m_i`` the mean of ``n_i`` observations with standard deviation ``s_i``, the sampling variance of ``m_i`` is
    ``s_i**2 / n_i``. The reliability of the means (the expected correlation between two independent replications
    of the whole experiment, the quantity a Spearman-Brown corrected split-half estimates) is

        ``rho = 1 - mean_i(s_i**2 / n_i) / var(m)``

    (classical test theory; ``var`` with ``ddof=1``). ``error`` is a delta-method standard error from the
    sampling variance of ``var(m)`` under normality, ``rho_err = (1 - rho) * sqrt(2 / (k - 1))`` for ``k`` items.
    The value is clipped at 0 below (noise larger than the spread gives no usable ceiling).
    """

    name = "item_statistics"

    def get_params(self) -> dict[str, object]:
        return {}

    def __call__(self, means: np.ndarray, stds: np.ndarray, counts: np.ndarray) -> Score:
        """Estimate the ceiling.

        Parameters
        ----------
        means, stds : numpy.ndarray of shape (n_items,)
            Per-item mean and standard deviation (``ddof=1``) of the observations.
        counts : numpy.ndarray of shape (n_items,)
            Observations per item (each > 1).

        Raises
        ------
        ValueError
            Shapes differ, NaN values, fewer than 3 items, or a count below 2.
        """
        means = np.asarray(means, dtype=np.float64)
        stds = np.asarray(stds, dtype=np.float64)
        counts = np.asarray(counts, dtype=np.float64)
        if not (means.shape == stds.shape == counts.shape) or means.ndim != 1:
            raise ValueError(f"means, stds and counts must be 1-D of one length: {means.shape}, {stds.shape}, {counts.shape}")
        if not (np.isfinite(means).all() and np.isfinite(stds).all() and np.isfinite(counts).all()):
            raise ValueError("means, stds and counts must be finite (no NaN)")
        if len(means) < 3:
            raise InsufficientDataError(f"need at least 3 items for a reliability estimate, got {len(means)}")
        if (counts < 2).any():
            raise InsufficientDataError(f"every item needs at least 2 observations; smallest count {counts.min():g}")
        observed = float(np.var(means, ddof=1))
        noise = float(np.mean(stds**2 / counts))
        rho = 1.0 - noise / observed if observed > 0 else math.nan
        error = (1.0 - rho) * math.sqrt(2.0 / (len(means) - 1)) if math.isfinite(rho) else math.nan
        attrs = {
            "ceiling": self.name,
            "formula": "1 - mean(std**2 / count) / var(means, ddof=1)",
            "n_items": int(len(means)),
            "noise_variance": noise,
            "observed_variance": observed,
            "unclipped": rho,
        }
        return Score(raw=max(rho, 0.0) if math.isfinite(rho) else rho, error=error, values=[rho], attrs=attrs)
