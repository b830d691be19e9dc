"""Splits and split aggregation with Brain-Score's semantics (``metric_helpers/transformations.py``, ``Split``).

Brain-Score builds splits on the *target* assembly's ``stimulus_id`` values, in the target's order:

* no stratification coordinate: ``ShuffleSplit(n_splits, train_size, test_size, random_state)``;
* with one (``object_name`` by default, ``Split.Defaults.stratification_coord``): ``StratifiedShuffleSplit`` on that
  coordinate's labels;
* ``kfold=True``: ``KFold(n_splits, shuffle=True, random_state)``, or ``StratifiedKFold`` with a stratification coord;
* language's ``kfold="group"``: ``GroupKFold(n_splits, shuffle=True, random_state)`` on a group coordinate (e.g.
  ``story``; brain-score/language ``utils/transformations.py``).

Defaults: 10 splits, ``train_size=0.9`` when neither size is given, ``random_state=1``, stratified on ``object_name``.
Brain-Score stratifies on ``object_name`` unless a benchmark passes ``stratification_coord=None`` (and fails on a
target without it); :class:`CrossValidation`'s default ``"auto"`` stratifies on it exactly when the target has that
coordinate, so ``load_metric("pls")`` splits as Brain-Score's does wherever Brain-Score's can run. Per split the metric's
aggregate runs (e.g. median over neuroids); then :func:`aggregate_splits` takes the mean over splits and the standard
error ``std(ddof=0) / sqrt(n_splits)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import xarray as xr
from sklearn.model_selection import GroupKFold, KFold, ShuffleSplit, StratifiedKFold, StratifiedShuffleSplit

__all__ = [
    "AUTO",
    "DEFAULT_STRATIFICATION_COORD",
    "CrossValidation",
    "InsufficientDataError",
    "aggregate_splits",
    "make_splits",
    "median_over_neuroids",
    "shuffle_splits",
]

Split = tuple[np.ndarray, np.ndarray]

#: Brain-Score's ``Split.Defaults.stratification_coord`` ("cross-validation across images, balancing objects").
DEFAULT_STRATIFICATION_COORD = "object_name"
#: ``stratification_coord`` default: :data:`DEFAULT_STRATIFICATION_COORD` when the target has it, else none.
AUTO = "auto"


class InsufficientDataError(ValueError):
    """Too few stimuli (or repetitions, subjects, groups) for the requested splits."""


def shuffle_splits(
    n_samples: int,
    *,
    n_splits: int = 10,
    train_size: float = 0.9,
    random_state: int = 1,
) -> list[Split]:
    """Brain-Score's unstratified ``Split``: ``ShuffleSplit(n_splits, train_size, test_size=None, random_state)``.

    Parameters
    ----------
    n_samples : int
        Number of values split over (the target's stimulus ids, or the unique repetition values).
    n_splits, train_size, random_state
        As :class:`sklearn.model_selection.ShuffleSplit`; ``test_size`` is the complement.

    Returns
    -------
    list of (train_indices, test_indices)
        Indices into the values in the order given.
    """
    return make_splits(n_samples, n_splits=n_splits, train_size=train_size, random_state=random_state)


def make_splits(
    n_samples: int,
    *,
    n_splits: int = 10,
    train_size: float | None = None,
    test_size: float | None = None,
    stratify: Sequence[object] | np.ndarray | None = None,
    groups: Sequence[object] | np.ndarray | None = None,
    kfold: bool | Literal["group"] = False,
    random_state: int = 1,
    min_size: int = 1,
) -> list[Split]:
    """Train/test index pairs over ``n_samples`` values, exactly as Brain-Score's ``Split.build_splits``.

    Parameters
    ----------
    n_samples : int
        Number of values (stimulus ids) split over, in the order the indices refer to.
    n_splits : int, default=10
    train_size, test_size : float, optional
        Fractions; when both are ``None`` ``train_size`` is 0.9 (Brain-Score's default). Ignored by k-fold.
    stratify : array-like of shape (n_samples,), optional
        Labels to stratify on (``StratifiedShuffleSplit`` / ``StratifiedKFold``).
    groups : array-like of shape (n_samples,), optional
        Group labels for ``kfold="group"`` (``GroupKFold(shuffle=True)``).
    kfold : bool or "group", default=False
    random_state : int, default=1
    min_size : int, default=1
        Fewest values each side of every split must have (2 where a correlation runs on the test side).

    Returns
    -------
    list of (train_indices, test_indices)

    Raises
    ------
    InsufficientDataError
        When there are too few values (or groups, or members of a stratum) for the splits.
    """
    if train_size is None and test_size is None:
        train_size = 0.9
    if n_samples < 2:
        raise InsufficientDataError(f"need at least 2 values to split, got {n_samples}")
    dummy = np.zeros(n_samples)
    if kfold == "group":
        if groups is None:
            raise ValueError("kfold='group' needs group labels (e.g. the 'story' coordinate)")
        groups = np.asarray(groups)
        n_groups = len(np.unique(groups))
        if n_groups < n_splits:
            raise InsufficientDataError(f"{n_splits} group folds need at least {n_splits} groups, got {n_groups}")
        splitter = GroupKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
        splits = [(train, test) for train, test in splitter.split(dummy, groups=groups)]
    elif kfold:
        if n_samples < n_splits:
            raise InsufficientDataError(f"{n_splits} folds need at least {n_splits} stimuli, got {n_samples}")
        if stratify is not None:
            stratified = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
            splits = _checked(lambda: list(stratified.split(dummy, np.asarray(stratify))))
        else:
            splits = list(KFold(n_splits=n_splits, shuffle=True, random_state=random_state).split(dummy))
    elif stratify is not None:
        shuffled = StratifiedShuffleSplit(
            n_splits=n_splits, train_size=train_size, test_size=test_size, random_state=random_state
        )
        splits = _checked(lambda: list(shuffled.split(dummy, np.asarray(stratify))))
    else:
        plain = ShuffleSplit(n_splits=n_splits, train_size=train_size, test_size=test_size, random_state=random_state)
        splits = _checked(lambda: list(plain.split(dummy)))
    for train, test in splits:
        if len(train) < min_size or len(test) < min_size:
            raise InsufficientDataError(
                f"{n_samples} values give splits of {len(train)} train / {len(test)} test values; each side needs"
                f" at least {min_size}"
            )
    return splits


def _checked(build: Callable[[], list[Split]]) -> list[Split]:
    try:
        return build()
    except ValueError as error:  # sklearn's messages for too few samples or too small classes
        raise InsufficientDataError(f"cannot build the splits: {error}") from error


class CrossValidation:
    """Brain-Score's split configuration, applied to a target's stimulus ids.

    Parameters
    ----------
    n_splits : int, default=10
    train_size, test_size : float, optional
        Default ``train_size=0.9``.
    stratification_coord : str or None, default="auto"
        A ``presentation`` coordinate of the target to stratify on; ``None``: no stratification; ``"auto"``
        (Brain-Score's default): ``object_name`` when the target has it, else none. Never used with group k-fold.
    group_coord : str, optional
        With ``kfold="group"``: the coordinate whose values are kept together (e.g. ``story``).
    kfold : bool or "group", default=False
    random_state : int, default=1
    """

    def __init__(
        self,
        *,
        n_splits: int = 10,
        train_size: float | None = None,
        test_size: float | None = None,
        stratification_coord: str | None = AUTO,
        group_coord: str | None = None,
        kfold: bool | Literal["group"] = False,
        random_state: int = 1,
    ) -> None:
        self.n_splits = n_splits
        self.train_size = train_size
        self.test_size = test_size
        self.stratification_coord = stratification_coord
        self.group_coord = group_coord
        self.kfold = kfold
        self.random_state = random_state

    def get_params(self) -> dict[str, object]:
        return {
            "n_splits": self.n_splits,
            "train_size": self.train_size,
            "test_size": self.test_size,
            "stratification_coord": self.stratification_coord,
            "group_coord": self.group_coord,
            "kfold": self.kfold,
            "random_state": self.random_state,
        }

    def stratification(self, target: xr.DataArray) -> str | None:
        """The coordinate the splits over ``target`` are stratified on (``"auto"`` resolved), or ``None``."""
        if self.kfold == "group":
            return None
        if self.stratification_coord == AUTO:
            return DEFAULT_STRATIFICATION_COORD if DEFAULT_STRATIFICATION_COORD in target.coords else None
        return self.stratification_coord or None

    def describe(self, target: xr.DataArray) -> dict[str, object]:
        """The effective split settings over ``target`` (JSON-able, for a score's attrs): the sklearn splitter, the
        coordinates, sizes and seed actually used."""
        stratification = self.stratification(target)
        train_size, test_size = self.train_size, self.test_size
        if train_size is None and test_size is None:
            train_size = 0.9
        if self.kfold == "group":
            splitter, train_size, test_size = "GroupKFold(shuffle=True)", None, None
        elif self.kfold:
            splitter, train_size, test_size = "StratifiedKFold" if stratification else "KFold", None, None
        else:
            splitter = "StratifiedShuffleSplit" if stratification else "ShuffleSplit"
        return {
            "splitter": splitter,
            "split_coord": "stimulus_id",
            "stratification_coord": stratification,
            "stratification_requested": self.stratification_coord,
            "group_coord": self.group_coord if self.kfold == "group" else None,
            "n_splits": self.n_splits,
            "train_size": train_size,
            "test_size": test_size,
            "random_state": self.random_state,
        }

    def splits(self, target: xr.DataArray, *, min_size: int = 2) -> list[Split]:
        """Splits over the rows of ``target`` (an assembly with dim ``presentation``), in the target's order.

        Raises
        ------
        ValueError
            A stratification or group coordinate the target lacks; :class:`InsufficientDataError` for too few
            stimuli (each side of a split needs ``min_size``).
        """
        n = target.sizes["presentation"]
        labels = None
        groups = None
        stratification = self.stratification(target)
        if stratification:
            if stratification not in target.coords:
                raise ValueError(
                    f"the target has no stratification coordinate {stratification!r};"
                    f" coords present: {sorted(map(str, target.coords))}"
                )
            labels = np.asarray(target[stratification].values)
        if self.kfold == "group":
            if not self.group_coord or self.group_coord not in target.coords:
                raise ValueError(f"kfold='group' needs a group coordinate on the target, got {self.group_coord!r}")
            groups = np.asarray(target[self.group_coord].values)
        try:
            return make_splits(
                n,
                n_splits=self.n_splits,
                train_size=self.train_size,
                test_size=self.test_size,
                stratify=labels,
                groups=groups,
                kfold=self.kfold,
                random_state=self.random_state,
                min_size=min_size,
            )
        except InsufficientDataError as error:
            if labels is None:
                raise
            raise InsufficientDataError(
                f"{error} (stratified on {stratification!r}; stratification_coord=None splits without it)"
            ) from error


def aggregate_splits(values: np.ndarray) -> tuple[float, float]:
    """Mean over splits and its standard error, as Brain-Score's ``Split.aggregate``.

    ``center = mean(split)``; ``error = std(split, ddof=0) / sqrt(n_splits)``. NaN splits are skipped in the mean and
    std (xarray's ``skipna``) but still counted in ``n_splits``, as in Brain-Score.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0 or np.isnan(values).all():
        return math.nan, math.nan
    center = float(np.nanmean(values))
    error = float(np.nanstd(values) / math.sqrt(len(values)))
    return center, error


def median_over_neuroids(values: np.ndarray) -> np.ndarray:
    """Per-split median over neuroids of a ``(n_splits, n_neuroids)`` array, NaN skipped (xarray's ``median``)."""
    values = np.asarray(values, dtype=np.float64)
    return np.array([np.nan if np.isnan(row).all() else np.nanmedian(row) for row in values], dtype=np.float64)
