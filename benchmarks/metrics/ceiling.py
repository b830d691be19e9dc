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

import numpy as np
import pandas as pd
import xarray as xr

from ..assemblies import AssemblyValidationError
from ..dims import NEUROID, NEUROID_ID, PRESENTATION, REPETITION, STIMULUS_ID
from ..score import Score
from .correlation import pearson_r_score
from .cross_validation import aggregate_splits, shuffle_splits

logger = logging.getLogger(__name__)

__all__ = ["InternalConsistency", "spearman_brown"]


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
