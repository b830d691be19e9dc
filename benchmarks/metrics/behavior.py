"""Behavioural metrics and their subject-pair ceilings, as Brain-Score's (brain-score/vision ``metrics/accuracy``,
``metrics/accuracy_distance``, ``metrics/error_consistency``, ``metrics/i1i2``).

Behavioural assemblies are 1-D :class:`xarray.DataArray` objects over ``presentation`` whose values are labels
(the choice made): coordinates ``stimulus_id``, and as each metric needs ``truth``, ``subject``, ``condition``,
``sample_obj``, ``dist_obj``. Model outputs are the same over the stimuli (one label per ``stimulus_id``), or for
``i2n`` a ``(presentation, choice)`` assembly of probabilities.

* ``accuracy``: ``mean(source == target)``, error = ``std`` (ddof 0) over trials.
* ``accuracy_distance``: per subject ``1 - |acc_model - acc_subject| / max(acc_subject, 1 - acc_subject)`` (optionally
  the mean over conditions), then ``|mean over subjects|``, error = ``std`` over subjects. Ceiling: the same between
  every pair of subjects.
* ``error_consistency`` (Geirhos et al. 2020): Cohen's kappa of trial-by-trial correctness per (subject, condition),
  ``|mean over conditions, then subjects|``, error = ``std`` over all (subject, condition) values. Ceiling: every
  subject pair, per condition.
* ``i2n`` (Rajalingham et al. 2018): normalised image-by-distractor d' of the model against one random half of the
  human trials, Pearson r over the entries; 2 repetitions with ``RandomState(0)`` (the same halves as the ceiling),
  mean and ``std`` over them. Ceiling: the two halves against each other.

Bootstrap intervals (``attrs["bootstrap"]``, :mod:`.bootstrap`; ``n_boot=0`` turns them off): ``accuracy`` resamples
trials; ``error_consistency`` resamples images, the same resampled images for the model and every subject (the
trial-by-trial pairing the kappa needs is kept), subjects fixed.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.stats
import xarray as xr

from ..dims import PRESENTATION, STIMULUS_ID
from ..score import Score
from .bootstrap import DEFAULT_N_BOOT, DEFAULT_SEED, bootstrap_record, multinomial_counts
from .items import error_consistency_items

__all__ = ["I2n", "Accuracy", "AccuracyDistance", "ErrorConsistency", "cohens_kappa"]


def _coord(assembly: xr.DataArray, name: str) -> np.ndarray:
    if name not in assembly.coords:
        raise ValueError(f"behavioural assembly has no {name!r} coordinate; coords: {sorted(map(str, assembly.coords))}")
    return np.asarray(assembly[name].values)


def _labels(assembly: xr.DataArray, what: str) -> xr.DataArray:
    if not isinstance(assembly, xr.DataArray):
        raise ValueError(f"{what}: expected an xarray.DataArray, got {type(assembly).__name__}")
    if assembly.dims != (PRESENTATION,):
        if set(assembly.dims) - {PRESENTATION} and all(assembly.sizes[d] == 1 for d in assembly.dims if d != PRESENTATION):
            assembly = assembly.squeeze([d for d in assembly.dims if d != PRESENTATION])
        else:
            raise ValueError(f"{what}: expected dims ('presentation',), got {assembly.dims}")
    _coord(assembly, STIMULUS_ID)
    return assembly


def _source_by_stimulus(source: xr.DataArray) -> pd.Series:
    source = _labels(source, "source")
    ids = pd.Index(_coord(source, STIMULUS_ID))
    if not ids.is_unique:
        raise ValueError("source: stimulus_id must be unique (one model answer per stimulus)")
    return pd.Series(np.asarray(source.values), index=ids)


def _lookup(series: pd.Series, ids: np.ndarray) -> np.ndarray:
    missing = pd.Index(ids).difference(series.index)
    if len(missing):
        raise ValueError(
            f"source has no answer for {len(missing)} stimuli of the target, e.g. {missing[:3].tolist()}"
        )
    return series.loc[ids].to_numpy()


class Accuracy:
    """Brain-Score's ``accuracy``: fraction of stimuli where the model's label equals the target label."""

    name = "accuracy"

    def __init__(self, *, n_boot: int = DEFAULT_N_BOOT, seed: int = DEFAULT_SEED) -> None:
        self.n_boot = n_boot
        self.seed = seed

    def get_params(self) -> dict[str, object]:
        return {}

    def __call__(self, source: xr.DataArray, target: xr.DataArray) -> Score:
        target = _labels(target, "target")
        predicted = _lookup(_source_by_stimulus(source), _coord(target, STIMULUS_ID))
        correct = predicted == np.asarray(target.values)
        raw = float(np.mean(correct))
        attrs: dict[str, object] = {
            "metric": self.name, "n_trials": int(correct.size), "error_kind": "std over trials (ddof 0)"
        }
        samples = None
        if self.n_boot and correct.size:
            rng = np.random.default_rng(self.seed)
            samples = multinomial_counts(rng, correct.size, self.n_boot) @ correct.astype(float) / correct.size
            attrs["bootstrap"] = bootstrap_record(
                samples, raw, seed=self.seed, resampled=["trials"], method="percentile bootstrap over trials"
            )
        return Score(
            raw=raw,
            error=float(np.std(correct)),
            values=correct.astype(float).tolist(),
            attrs=attrs,
            bootstrap_samples=samples,
        )


def _subjects(target: xr.DataArray) -> list[object]:
    return sorted(set(_coord(target, "subject").tolist()))


def _accuracy_distance(source_correct: np.ndarray, target_correct: np.ndarray) -> float:
    source_mean = source_correct.sum() / len(source_correct)
    target_mean = target_correct.sum() / len(target_correct)
    return float(1 - abs(source_mean - target_mean) / max(1 - target_mean, target_mean))


class AccuracyDistance:
    """Brain-Score's ``accuracy_distance``; :meth:`ceiling` compares every pair of subjects.

    Parameters
    ----------
    variables : sequence of str, default=()
        Presentation coordinates (e.g. ``("condition",)``) to score each combination separately and average per
        subject.
    """

    name = "accuracy_distance"

    def __init__(self, *, variables: Sequence[str] = ()) -> None:
        self.variables = tuple(variables)

    def get_params(self) -> dict[str, object]:
        return {"variables": list(self.variables)}

    def __call__(self, source: xr.DataArray, target: xr.DataArray) -> Score:
        """``source``: the model's label per stimulus; ``target``: trials with ``subject`` and ``truth``."""
        target = _labels(target, "target")
        answers = _source_by_stimulus(source)
        ids, truth, subjects = _coord(target, STIMULUS_ID), _coord(target, "truth"), _coord(target, "subject")
        responses = np.asarray(target.values)
        model = _lookup(answers, ids)
        per_subject = []
        for subject in _subjects(target):
            mask = subjects == subject
            if not self.variables:
                per_subject.append(_accuracy_distance(model[mask] == truth[mask], responses[mask] == truth[mask]))
                continue
            conditions = [_coord(target, v) for v in self.variables]
            keys = sorted(set(zip(*[c[mask].tolist() for c in conditions])))
            scores = []
            for key in keys:
                cell = mask & np.logical_and.reduce([c == k for c, k in zip(conditions, key)])
                scores.append(_accuracy_distance(model[cell] == truth[cell], responses[cell] == truth[cell]))
            per_subject.append(float(np.mean(scores)))
        return self._aggregate(per_subject, {"subjects": [str(s) for s in _subjects(target)]})

    def _aggregate(self, values: list[float], attrs: dict[str, object]) -> Score:
        array = np.asarray(values, dtype=np.float64)
        return Score(
            raw=float(abs(array.mean())),
            error=float(array.std()),
            values=array.tolist(),
            attrs={"metric": self.name, **self.get_params(), **attrs, "error_kind": "std over subjects (ddof 0)"},
        )

    def ceiling(self, target: xr.DataArray) -> Score:
        """Mean over all subject pairs of the accuracy distance between them (Brain-Score's ceiling)."""
        target = _labels(target, "target")
        ids, truth, subjects = _coord(target, STIMULUS_ID), _coord(target, "truth"), _coord(target, "subject")
        responses = np.asarray(target.values)
        pairs = list(itertools.combinations(_subjects(target), 2))
        if not pairs:
            raise ValueError("a subject-pair ceiling needs at least 2 subjects")
        values = []
        for left, right in pairs:
            a, b = _subject_trials(ids, subjects, left), _subject_trials(ids, subjects, right)
            _check_same_stimuli(ids[a], ids[b], left, right)
            values.append(_accuracy_distance(responses[a] == truth[b], responses[b] == truth[b]))
        score = self._aggregate(values, {"pairs": [[str(x), str(y)] for x, y in pairs]})
        return Score(raw=score.raw, error=score.error, values=score.values, attrs={**score.attrs, "ceiling": "subject_pairs"})


def _subject_trials(ids: np.ndarray, subjects: np.ndarray, subject: object, extra: np.ndarray | None = None) -> np.ndarray:
    """Indices of one subject's trials sorted by stimulus_id (Brain-Score's ``sortby('stimulus_id')``)."""
    mask = subjects == subject
    if extra is not None:
        mask &= extra
    index = np.nonzero(mask)[0]
    return index[np.argsort(ids[index], kind="stable")]


def _check_same_stimuli(left_ids: np.ndarray, right_ids: np.ndarray, left: object, right: object) -> None:
    if len(left_ids) != len(right_ids) or not (left_ids == right_ids).all():
        raise ValueError(f"subjects {left!r} and {right!r} did not see the same stimuli; cannot compare trial by trial")


def cohens_kappa(expected_consistency: float, observed_consistency: float) -> float:
    """``(observed - expected) / (1 - expected)`` (Cohen 1960); NaN when ``expected == 1``."""
    if not (0.0 <= expected_consistency <= 1.0 and 0.0 <= observed_consistency <= 1.0):
        raise ValueError(f"consistencies must lie in [0, 1], got {expected_consistency}, {observed_consistency}")
    if expected_consistency == 1.0:
        return math.nan
    return (observed_consistency - expected_consistency) / (1.0 - expected_consistency)


def _kappa(correct_source: np.ndarray, correct_target: np.ndarray) -> float:
    accuracy_source, accuracy_target = float(np.mean(correct_source)), float(np.mean(correct_target))
    expected = accuracy_source * accuracy_target + (1 - accuracy_source) * (1 - accuracy_target)
    observed = float((correct_source == correct_target).sum() / len(correct_target))
    return cohens_kappa(expected, observed)


class ErrorConsistency:
    """Brain-Score's ``error_consistency`` (Geirhos et al. 2020); :meth:`ceiling` compares every subject pair."""

    name = "error_consistency"

    def __init__(self, *, n_boot: int = DEFAULT_N_BOOT, seed: int = DEFAULT_SEED) -> None:
        self.n_boot = n_boot
        self.seed = seed

    def get_params(self) -> dict[str, object]:
        return {}

    def __call__(self, source: xr.DataArray, target: xr.DataArray) -> Score:
        """``source``: model labels with ``truth`` and ``condition``; ``target``: trials with ``subject`` too."""
        source = _labels(source, "source")
        target = _labels(target, "target")
        source_ids, source_truth, source_conditions = (
            _coord(source, STIMULUS_ID), _coord(source, "truth"), _coord(source, "condition"),
        )
        ids, truth, subjects, conditions = (
            _coord(target, STIMULUS_ID), _coord(target, "truth"), _coord(target, "subject"), _coord(target, "condition"),
        )
        source_values, responses = np.asarray(source.values), np.asarray(target.values)
        grid = []
        cells = []  # (stimulus ids, source correct, subject correct) per (subject, condition), for the bootstrap
        for subject in _subjects(target):
            row = []
            for condition in sorted(set(conditions.tolist())):
                s = np.nonzero(source_conditions == condition)[0]
                s = s[np.argsort(source_ids[s], kind="stable")]
                t = _subject_trials(ids, subjects, subject, conditions == condition)
                if len(s) != len(t) or not (source_ids[s] == ids[t]).all():
                    raise ValueError(
                        f"source and subject {subject!r} differ in the stimuli of condition {condition!r}"
                    )
                row.append(_kappa(source_values[s] == source_truth[s], responses[t] == truth[t]))
                cells.append((ids[t], source_values[s] == source_truth[s], responses[t] == truth[t]))
            grid.append(row)
        score = self._aggregate(np.asarray(grid), {"subjects": [str(s) for s in _subjects(target)]})
        # per-image values for paired comparisons of two models (stored apart by the registry)
        score = dataclasses.replace(score, items=error_consistency_items(cells, np.asarray(grid).shape))
        if not self.n_boot:
            return score
        samples = self._bootstrap(cells, np.asarray(grid).shape)
        attrs = {**score.attrs, "bootstrap": bootstrap_record(
            samples, score.raw, seed=self.seed, resampled=["images"],
            method="percentile bootstrap over images (the same resampled images for the model and every subject,"
            " trial pairing kept); subjects fixed",
        )}
        return Score(raw=score.raw, error=score.error, values=score.values, attrs=attrs, bootstrap_samples=samples,
                     items=score.items)

    def _bootstrap(self, cells: list[tuple[np.ndarray, np.ndarray, np.ndarray]], shape: tuple[int, int]) -> np.ndarray:
        """Replicates of ``|mean over subjects of mean over conditions of kappa|`` with images resampled."""
        images, inverse = np.unique(np.concatenate([c[0] for c in cells]), return_inverse=True)
        counts = multinomial_counts(np.random.default_rng(self.seed), len(images), self.n_boot)
        kappas = np.empty((len(cells), self.n_boot))
        start = 0
        for k, (cell_ids, source_correct, target_correct) in enumerate(cells):
            w = counts[:, inverse[start : start + len(cell_ids)]]
            start += len(cell_ids)
            n = w.sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                acc_s, acc_t = w @ source_correct / n, w @ target_correct / n
                observed = w @ (source_correct == target_correct) / n
                expected = acc_s * acc_t + (1 - acc_s) * (1 - acc_t)
                kappas[k] = np.where(expected < 1, (observed - expected) / (1 - expected), np.nan)
        per_subject = kappas.reshape(shape[0], shape[1], self.n_boot).mean(axis=1)
        return np.abs(per_subject.mean(axis=0))

    def _aggregate(self, grid: np.ndarray, attrs: dict[str, object]) -> Score:
        per_row = grid.mean(axis=1)
        return Score(
            raw=float(abs(per_row.mean())),
            error=float(grid.std()),
            values=per_row.tolist(),
            attrs={
                "metric": self.name,
                **attrs,
                "per_condition": grid.tolist(),
                "error_kind": "std over (subject, condition) (ddof 0)",
            },
        )

    def ceiling(self, target: xr.DataArray) -> Score:
        """Mean over subject pairs and conditions of the kappa between two subjects (Brain-Score's ceiling)."""
        target = _labels(target, "target")
        ids, truth, subjects, conditions = (
            _coord(target, STIMULUS_ID), _coord(target, "truth"), _coord(target, "subject"), _coord(target, "condition"),
        )
        responses = np.asarray(target.values)
        pairs = list(itertools.combinations(_subjects(target), 2))
        if not pairs:
            raise ValueError("a subject-pair ceiling needs at least 2 subjects")
        grid = []
        for left, right in pairs:
            row = []
            for condition in sorted(set(conditions.tolist())):
                a = _subject_trials(ids, subjects, left, conditions == condition)
                b = _subject_trials(ids, subjects, right, conditions == condition)
                _check_same_stimuli(ids[a], ids[b], left, right)
                row.append(_kappa(responses[a] == truth[a], responses[b] == truth[b]))
            grid.append(row)
        score = self._aggregate(np.asarray(grid), {"pairs": [[str(x), str(y)] for x, y in pairs]})
        return Score(raw=score.raw, error=score.error, values=score.values, attrs={**score.attrs, "ceiling": "subject_pairs"})


class I2n:
    """Rajalingham et al. 2018 ``i2n`` as Brain-Score computes it (``metrics/i1i2/metric.py``, ``I2n``).

    Parameters
    ----------
    repetitions : int, default=2
        Random trial halves (``RandomState(0)``, shared by score and ceiling).
    """

    name = "i2n"

    def __init__(self, *, repetitions: int = 2) -> None:
        self.repetitions = repetitions

    def get_params(self) -> dict[str, object]:
        return {"repetitions": self.repetitions}

    # --- response matrices -------------------------------------------------------------------------------------
    @staticmethod
    def _source_false_alarms(probabilities: xr.DataArray, truth_of: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if set(probabilities.dims) != {PRESENTATION, "choice"}:
            raise ValueError(f"source probabilities need dims ('presentation', 'choice'), got {probabilities.dims}")
        probabilities = probabilities.transpose(PRESENTATION, "choice")
        ids = _coord(probabilities, STIMULUS_ID)
        choices = np.asarray(probabilities["choice"].values)
        truth = _lookup(truth_of, ids)
        values = np.asarray(probabilities.values, dtype=np.float64)
        column = {c: i for i, c in enumerate(choices.tolist())}
        missing = set(truth.tolist()) - set(column)
        if missing:
            raise ValueError(f"source probabilities lack choices {sorted(map(str, missing))}")
        p_truth = values[np.arange(len(ids)), [column[t] for t in truth.tolist()]]
        with np.errstate(invalid="ignore", divide="ignore"):
            false_alarms = values / (values + p_truth[:, None])
        false_alarms[truth[:, None] == choices[None, :]] = np.nan
        return false_alarms, ids, choices

    @staticmethod
    def _target_false_alarms(trials: xr.DataArray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        ids, truth = _coord(trials, STIMULUS_ID), _coord(trials, "truth")
        sample, distractor = _coord(trials, "sample_obj"), _coord(trials, "dist_obj")
        chosen = np.asarray(trials.values)
        images, first = np.unique(ids, return_index=True)
        choices = np.unique(chosen)
        image_index = {s: i for i, s in enumerate(images.tolist())}
        choice_index = {c: j for j, c in enumerate(choices.tolist())}
        n_chosen = np.zeros((len(images), len(choices)))
        n_offered = np.zeros((len(images), len(choices)))
        rows = np.array([image_index[s] for s in ids.tolist()])
        for values, counts in ((chosen, n_chosen), (sample, n_offered), (distractor, n_offered)):
            cols = np.array([choice_index.get(v, -1) for v in values.tolist()])
            keep = cols >= 0
            np.add.at(counts, (rows[keep], cols[keep]), 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            false_alarms = np.where(n_offered > 0, n_chosen / np.where(n_offered > 0, n_offered, 1), np.nan)
        image_truth = truth[first]
        false_alarms[image_truth[:, None] == choices[None, :]] = np.nan
        return false_alarms, images, choices, image_truth

    @staticmethod
    def _normalized_dprimes(false_alarms: np.ndarray, truth: np.ndarray, choices: np.ndarray, cap: float = 5) -> np.ndarray:
        """Image-by-choice d' (hit rate = 1 - FA; object FA = mean of the inverse pair), clipped, minus group means."""
        object_false_alarms = {}
        for t in np.unique(truth).tolist():
            rows = truth == t
            for j, c in enumerate(choices.tolist()):
                values = false_alarms[rows, j]
                object_false_alarms[(t, c)] = np.nanmean(values) if np.isfinite(values).any() else np.nan
        dprimes = np.full(false_alarms.shape, np.nan)
        for j, c in enumerate(choices.tolist()):
            for t in np.unique(truth).tolist():
                rows = truth == t
                if (c, t) not in object_false_alarms:
                    raise ValueError(f"no images of object {c!r}: cannot form the object false-alarm rate for ({c}, {t})")
                with np.errstate(invalid="ignore", divide="ignore"):
                    dprimes[rows, j] = scipy.stats.norm.ppf(1 - false_alarms[rows, j]) - scipy.stats.norm.ppf(
                        object_false_alarms[(c, t)]
                    )
        dprimes = np.clip(dprimes, -cap, cap)
        for t in np.unique(truth).tolist():
            rows = truth == t
            for j in range(len(choices)):
                group = dprimes[rows, j]
                if np.isfinite(group).any():
                    dprimes[rows, j] = group - np.nanmean(group)
        return dprimes

    def _target_dprimes(self, trials: xr.DataArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        false_alarms, images, choices, truth = self._target_false_alarms(trials)
        return self._normalized_dprimes(false_alarms, truth, choices), images, choices

    @staticmethod
    def _correlate(source: tuple[np.ndarray, np.ndarray, np.ndarray], target: tuple[np.ndarray, np.ndarray, np.ndarray], *, skipna: bool = False) -> float:
        (s_values, s_ids, s_choices), (t_values, t_ids, t_choices) = source, target
        s_rows, t_rows = np.argsort(s_ids, kind="stable"), np.argsort(t_ids, kind="stable")
        s_cols, t_cols = np.argsort(s_choices, kind="stable"), np.argsort(t_choices, kind="stable")
        if len(s_ids) != len(t_ids) or not (s_ids[s_rows] == t_ids[t_rows]).all():
            raise ValueError("i2n: model and human response matrices cover different stimuli")
        if len(s_choices) != len(t_choices) or not (s_choices[s_cols] == t_choices[t_cols]).all():
            raise ValueError(
                f"i2n: model choices {sorted(map(str, s_choices))} differ from the human choices {sorted(map(str, t_choices))}"
            )
        s_flat = s_values[np.ix_(s_rows, s_cols)].ravel()
        t_flat = t_values[np.ix_(t_rows, t_cols)].ravel()
        keep = ~np.isnan(t_flat)
        if skipna:
            keep &= ~np.isnan(s_flat)
        s_flat, t_flat = s_flat[keep], t_flat[keep]
        if np.isnan(s_flat).any():
            raise ValueError("i2n: the first response matrix has NaN where the second has values")
        return float(scipy.stats.pearsonr(s_flat, t_flat)[0])

    def _halves(self, trials: xr.DataArray, random_state: np.random.RandomState) -> tuple[xr.DataArray, xr.DataArray]:
        indices = list(range(trials.sizes[PRESENTATION]))
        random_state.shuffle(indices)
        half = int(len(indices) / 2)
        return trials.isel({PRESENTATION: indices[:half]}), trials.isel({PRESENTATION: indices[half:]})

    def _aggregate(self, values: list[float], attrs: dict[str, object]) -> Score:
        array = np.asarray(values, dtype=np.float64)
        return Score(
            raw=float(array.mean()),
            error=float(array.std()),
            values=array.tolist(),
            attrs={"metric": self.name, **self.get_params(), **attrs, "error_kind": "std over repetitions (ddof 0)"},
        )

    def __call__(self, source: xr.DataArray, target: xr.DataArray) -> Score:
        """``source``: ``(presentation, choice)`` probabilities; ``target``: human trials (``truth``, ``sample_obj``,
        ``dist_obj``, ``stimulus_id``; values = the object chosen)."""
        target = _labels(target, "target")
        truth_of = pd.Series(_coord(target, "truth"), index=_coord(target, STIMULUS_ID))
        truth_of = truth_of[~truth_of.index.duplicated()]
        false_alarms, ids, choices = self._source_false_alarms(source, truth_of)
        source_dprimes = (self._normalized_dprimes(false_alarms, _lookup(truth_of, ids), choices), ids, choices)
        random_state = np.random.RandomState(seed=0)
        values = []
        for _ in range(self.repetitions):
            half, _other = self._halves(target, random_state)
            values.append(self._correlate(source_dprimes, self._target_dprimes(half)))
        return self._aggregate(values, {})

    def ceiling(self, target: xr.DataArray, *, skipna: bool = False) -> Score:
        """Correlation between the d' matrices of two random trial halves, per repetition."""
        target = _labels(target, "target")
        random_state = np.random.RandomState(seed=0)
        values = []
        for _ in range(self.repetitions):
            first, second = self._halves(target, random_state)
            values.append(self._correlate(self._target_dprimes(first), self._target_dprimes(second), skipna=skipna))
        score = self._aggregate(values, {"skipna": skipna})
        return Score(raw=score.raw, error=score.error, values=score.values, attrs={**score.attrs, "ceiling": "split_half_trials"})
