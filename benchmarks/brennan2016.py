"""Brennan2016.<ROI>-ridge: story-listening fMRI ("Alice", ch. 1) predicted from a language model's word features.

Data (``shared/data/brennan2016_alice_fmri``, CC BY 4.0): 2,127 words with hand-corrected onsets (TextGrid, audio
time, 20 s of silence first); per subject 362 volumes (TR 2 s; row ``r`` is acquired at ``20 + 2 r`` s of audio
time) of 6 ROI time courses (10 mm spheres: LATL RATL LPTL LIPL LPreM LIFG); 28 subjects, ``s33`` is all zeros and
is excluded, leaving 27.

Model features: the model reads the chapter as one context, word by word, and returns the committed layer's
representation at each word's last token (``kind = "neural"``; the layer comes from the model's own
``region_layers["language"]`` or the fixed relative-depth rule of :func:`cortexbox.benchmarks.language.committed_layer`,
never from the scored data).

Metric (Blank2014/Pereira style, adapted to time series):

1. every feature is an impulse at its word's onset, convolved with the SPM canonical HRF (double gamma, peak 6 s,
   undershoot 16 s, ratio 1/6) and sampled at the volume times: ``X[r] = sum_w hrf(t_r - onset_w) * f_w``;
2. targets: each subject's ROI time course, linearly detrended and z-scored;
3. 5-fold cross-validation over contiguous blocks of volumes; the training side drops 5 volumes (10 s) on each
   side of the test block against autocorrelation leaking across the boundary; features are z-scored on the
   training rows; ridge (with intercept) whose penalty is chosen by NESTED cross-validation inside the training
   rows only: the training volumes are cut into :data:`INNER_FOLDS` contiguous blocks, each block in turn is
   validated on a ridge fitted on the other training volumes (again :data:`GAP_VOLUMES` dropped on each side of the
   validation block, features z-scored on the inner training rows), and the alpha of the grid :data:`ALPHAS`
   (``10**(-1, -0.5, ..., 7)``, a ``RidgeCV``-like grid) with the highest mean over inner blocks of the median
   Pearson r over subjects wins (ties: the larger alpha); the test block never enters that choice. All 27 subjects
   share the alpha and are fitted at once (one regression, 27 targets). (Version 1 chose alpha by RidgeCV's
   efficient leave-one-out, which on autocorrelated volumes lets a volume's neighbours validate it and picked
   penalties far too small for 576-wide layers on ~290 volumes.);
4. per fold, Pearson r between prediction and each subject's held-out time course; the fold value is the median
   over subjects; ``raw`` is the mean over folds (``error`` their standard error).

Ceiling: leave-one-subject-out inter-subject correlation, on the same folds: per fold, Pearson r between each
subject's held-out block and the mean of the other 26 subjects' blocks, median over subjects, mean over folds
(``shared/research/data.md`` 2.5 reports .12-.39 for the full time courses). ``ceiled = clip(raw / ceiling, 0, 1)``.

Bootstrap interval (``attrs["bootstrap"]``): the fitted ridge's held-out predictions are kept; within each fold's
held-out block, volumes are resampled as a moving block bootstrap (blocks of :data:`BLOCK_VOLUMES` contiguous TRs:
fMRI time courses are autocorrelated, single volumes are not independent), and subjects are resampled with
replacement (one draw per replicate, shared by the folds); median over the resampled subjects, mean over folds. No
refitting; the ceiling's uncertainty is not included.
"""

from __future__ import annotations

import dataclasses
import math
import re
from functools import cached_property

import numpy as np
import xarray as xr
from scipy.signal import detrend
from scipy.stats import gamma

from .language import LanguageBenchmark, TextStimulusSet, values_by_stimulus
from .metrics import pearson_r_score
from .metrics.bootstrap import DEFAULT_N_BOOT, DEFAULT_SEED, block_counts, bootstrap_record, correlation_bootstrap
from .metrics.normalization import explained_variance
from .score import Score

__all__ = ["ROIS", "Brennan2016Ridge", "canonical_hrf", "hrf_design"]

ROIS = ("LATL", "RATL", "LPTL", "LIPL", "LPreM", "LIFG")
_FOLDER = "brennan2016_alice_fmri"
_TEXTGRID = f"{_FOLDER}/alice_stim_shared/DownTheRabbitHoleFinal_exp120_pad_1.TextGrid"
SUBJECTS = tuple(
    f"s{n}" for n in (18, 22, 23, 24, 26, 28, 30, 31, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53)
)  # s33 is all zeros (PROVENANCE.md)
TR_S = 2.0
FIRST_VOLUME_S = 20.0
N_VOLUMES = 362
N_FOLDS = 5
GAP_VOLUMES = 5
#: The ridge penalties nested cross-validation chooses from (a RidgeCV-like log grid, z-scored features).
ALPHAS = [float(10.0**k) for k in np.arange(-1.0, 7.01, 0.5)]
#: Contiguous blocks of the training volumes the inner (alpha-choosing) cross-validation uses.
INNER_FOLDS = 4
#: TRs per block of the bootstrap (20 s: longer than the HRF's main lobe, so within-block autocorrelation is kept).
BLOCK_VOLUMES = 10


def canonical_hrf(t: np.ndarray) -> np.ndarray:
    """SPM's canonical HRF at times ``t`` (s): gamma(6) - gamma(16)/6, zero for t <= 0, peak normalised to 1."""
    t = np.asarray(t, dtype=np.float64)
    h = gamma.pdf(t, 6) - gamma.pdf(t, 16) / 6.0
    h[t <= 0] = 0.0
    return h / 0.17544116219546385  # the peak value, gamma.pdf(5, 6) - gamma.pdf(5, 16) / 6 at t = 5 s


def hrf_design(features: np.ndarray, onsets_s: np.ndarray, times_s: np.ndarray) -> np.ndarray:
    """``(n_times, n_features)``: each word's features as an impulse at its onset, convolved with the HRF, sampled."""
    kernel = canonical_hrf(times_s[:, None] - onsets_s[None, :])
    return kernel @ np.asarray(features, dtype=np.float64)


def _read_textgrid(path) -> list[tuple[float, str]]:
    text = path.read_text()
    intervals = re.findall(r'xmin = ([0-9.]+)\s+xmax = [0-9.]+\s+text = "((?:[^"]|"")*)"', text)
    words = [(float(onset), label.replace('""', '"')) for onset, label in intervals]
    return [(onset, label) for onset, label in words if label.strip() and label.strip() != "sp"]


def _contiguous_folds(n: int, k: int, gap: int) -> list[tuple[np.ndarray, np.ndarray]]:
    edges = np.linspace(0, n, k + 1).round().astype(int)
    folds = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        test = np.arange(lo, hi)
        train = np.r_[np.arange(0, max(lo - gap, 0)), np.arange(min(hi + gap, n), n)]
        folds.append((train, test))
    return folds


def _zscore_on(x_fit: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    mean, std = x_fit.mean(axis=0), x_fit.std(axis=0)
    std[std == 0] = 1.0
    return [(a - mean) / std for a in (x_fit, *others)]


def ridge_predictions(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, alphas) -> np.ndarray:
    """``(len(alphas), n_test, n_targets)``: ridge with intercept (sklearn ``Ridge(alpha)``, centred on the training
    rows) for every alpha, from one SVD of the centred training features."""
    x_mean, y_mean = x_train.mean(axis=0), y_train.mean(axis=0)
    u, sv, vt = np.linalg.svd(x_train - x_mean, full_matrices=False)
    uty = u.T @ (y_train - y_mean)
    projected = (x_test - x_mean) @ vt.T  # (n_test, rank)
    out = np.empty((len(alphas), x_test.shape[0], y_train.shape[1]))
    for k, alpha in enumerate(alphas):
        out[k] = projected @ ((sv / (sv**2 + alpha))[:, None] * uty) + y_mean
    return out


def _median_r(y: np.ndarray, prediction: np.ndarray) -> float:
    return float(np.nanmedian(pearson_r_score(y, prediction, aggregate="raw_values")))


def choose_alpha(
    x_train: np.ndarray, y_train: np.ndarray, volumes: np.ndarray, alphas=ALPHAS, n_inner: int = INNER_FOLDS,
    gap: int = GAP_VOLUMES,
) -> tuple[float, list[float]]:
    """The ridge penalty by nested cross-validation over contiguous blocks of the TRAINING volumes only.

    Parameters
    ----------
    x_train, y_train : the outer training rows (raw features; z-scored here on each inner training side)
    volumes : the volume index of each training row (sorted); inner blocks are contiguous in it, and inner training
        rows within ``gap`` volumes of the validation block are dropped

    Returns
    -------
    (alpha, mean inner score per alpha): the alpha with the highest mean over inner blocks of the median Pearson r
    over targets; ties go to the larger alpha.
    """
    edges = np.linspace(0, len(volumes), n_inner + 1).round().astype(int)
    scores = np.zeros((n_inner, len(alphas)))
    for k, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        first, last = volumes[lo], volumes[hi - 1]
        fit = (volumes < first - gap) | (volumes > last + gap)
        xf, xv = _zscore_on(x_train[fit], x_train[lo:hi])
        predictions = ridge_predictions(xf, y_train[fit], xv, alphas)
        scores[k] = [_median_r(y_train[lo:hi], p) for p in predictions]
    mean = np.nan_to_num(scores.mean(axis=0), nan=-np.inf).tolist()
    best = max(range(len(alphas)), key=lambda a: (mean[a], alphas[a]))
    return float(alphas[best]), mean


class Brennan2016Ridge(LanguageBenchmark):
    """One ROI; see the module docstring."""

    #: Bootstrap (:mod:`.metrics.bootstrap`): replicates and the generator's seed.
    n_boot = DEFAULT_N_BOOT
    seed = DEFAULT_SEED
    #: 2: ridge penalty by nested contiguous-block cross-validation inside each training fold (1: RidgeCV leave-one-out)
    version = 2
    kind = "neural"
    behaviour = None
    region = "language"
    citation = (
        "Brennan JR, Stabler EP, Van Wagenen SE, Luh W-M, Hale JT (2016). Abstract linguistic structure correlates "
        "with temporal activity during naturalistic comprehension. Brain and Language 157-158:81-94."
    )

    def __init__(self, roi: str, *, data_dir=None, cache_dir=None, sphere: str = "10mm") -> None:
        if roi not in ROIS:
            raise ValueError(f"unknown ROI {roi!r}; known: {', '.join(ROIS)}")
        super().__init__(data_dir=data_dir, cache_dir=cache_dir)
        self.roi = roi
        self.sphere = sphere
        self.identifier = f"Brennan2016.{roi}-ridge"
        self.description = (
            f"Alice story-listening fMRI, {roi} ({sphere} sphere, 27 subjects, 362 TRs): HRF-convolved word "
            "features, ridge over 5 contiguous folds (10 s gaps), its penalty chosen per fold by nested "
            f"cross-validation over {INNER_FOLDS} contiguous blocks of the training volumes only (alphas "
            "10^-1..10^7), median Pearson r over subjects, over a leave-one-subject-out ceiling."
        )

    def _data_files(self) -> list[str]:
        return [_TEXTGRID] + [f"{_FOLDER}/alice_data_shared/{self.sphere}/{s}-timecourses.txt" for s in SUBJECTS]

    @cached_property
    def words(self) -> list[tuple[float, str]]:
        return _read_textgrid(self.data_dir / _TEXTGRID)

    @property
    def onsets_s(self) -> np.ndarray:
        return np.array([onset for onset, _ in self.words])

    @property
    def times_s(self) -> np.ndarray:
        return FIRST_VOLUME_S + TR_S * np.arange(N_VOLUMES)

    def _load_stimulus_set(self) -> TextStimulusSet:
        return TextStimulusSet("Brennan2016.alice", [(f"alice.{i}", word, "alice") for i, (_, word) in enumerate(self.words)])

    @cached_property
    def targets(self) -> np.ndarray:
        """``(n_volumes, n_subjects)``: the ROI's time course per subject, linearly detrended and z-scored."""
        column = ROIS.index(self.roi)
        series = []
        for subject in SUBJECTS:
            data = np.loadtxt(self.data_dir / _FOLDER / "alice_data_shared" / self.sphere / f"{subject}-timecourses.txt")
            y = detrend(data[:, column])
            series.append((y - y.mean()) / y.std())
        return np.column_stack(series)

    @property
    def folds(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return _contiguous_folds(N_VOLUMES, N_FOLDS, GAP_VOLUMES)

    def _compute_ceiling(self) -> Score:
        y = self.targets
        n = y.shape[1]
        values = []
        for _, test in self.folds:
            block = y[test]
            others = (block.sum(axis=1, keepdims=True) - block) / (n - 1)
            values.append(float(np.median(pearson_r_score(block, others, aggregate="raw_values"))))
        return Score(
            raw=float(np.mean(values)),
            error=float(np.std(values) / math.sqrt(len(values))),
            values=values,
            attrs={"ceiling": "leave_one_subject_out", "roi": self.roi, "n_subjects": n, "benchmark": self.identifier},
        )

    def design(self, features: np.ndarray) -> np.ndarray:
        return hrf_design(features, self.onsets_s, self.times_s)

    def score(self, assembly: xr.DataArray) -> Score:
        """Score per-word features.

        Parameters
        ----------
        assembly : xarray.DataArray
            ``(presentation, neuroid)``, one row per word of :attr:`stimulus_set` (matched by ``stimulus_id``).
        """
        features = values_by_stimulus(assembly, self.stimulus_set.stimulus_ids)
        x = self.design(features)
        y = self.targets
        values, alphas = [], []
        held_out = []
        for train, test in self.folds:
            alpha, _ = choose_alpha(x[train], y[train], train)  # sees the training rows only
            x_train, x_test = _zscore_on(x[train], x[test])
            prediction = ridge_predictions(x_train, y[train], x_test, [alpha])[0]
            values.append(_median_r(y[test], prediction))
            alphas.append(alpha)
            held_out.append((test, y[test], prediction))
        raw = Score(
            raw=float(np.mean(values)),
            error=float(np.std(values) / math.sqrt(len(values))),
            values=values,
            attrs={
                "metric": "ridge_nestedcv_pearsonr_contiguous_folds",
                "inner_folds": INNER_FOLDS,
                "alpha_grid": ALPHAS,
                "roi": self.roi,
                "n_folds": N_FOLDS,
                "gap_volumes": GAP_VOLUMES,
                "alphas": alphas,
                "n_features": int(features.shape[1]),
                **self._provenance(),
            },
        )
        if self.n_boot:
            rng = np.random.default_rng(self.seed)
            samples = correlation_bootstrap(
                held_out, row_counts=lambda first, b: [block_counts(rng, len(t), BLOCK_VOLUMES, b) for t, _, _ in held_out],
                n_columns=y.shape[1], resample_columns=True, rng=rng, n_boot=self.n_boot,
            )
            raw = dataclasses.replace(raw, bootstrap_samples=samples, attrs={**raw.attrs, "bootstrap": bootstrap_record(
                samples, raw.raw, seed=self.seed, resampled=["volumes", "subjects"], block_volumes=BLOCK_VOLUMES,
                method=f"percentile moving block bootstrap of volumes ({BLOCK_VOLUMES}-TR blocks within each held-out"
                " fold) and subjects (shared by the folds), fitted ridge fixed (no refitting)",
            )})
        return explained_variance(raw, self._ceiling(), regime="raw_over_ceiling_clipped")
