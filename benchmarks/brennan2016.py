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
   training rows; ridge with its penalty chosen by efficient leave-one-out (``RidgeCV``, alphas ``10**(-1..6)``)
   on the training rows; all 27 subjects are fitted at once (one regression, 27 targets);
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
from .metrics.regression import fit_predict
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
ALPHAS = [10.0**k for k in range(-1, 7)]
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


class Brennan2016Ridge(LanguageBenchmark):
    """One ROI; see the module docstring."""

    #: Bootstrap (:mod:`.metrics.bootstrap`): replicates and the generator's seed.
    n_boot = DEFAULT_N_BOOT
    seed = DEFAULT_SEED
    version = 1
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
            "features, ridge over 5 contiguous folds, median Pearson r over subjects, over a leave-one-subject-out "
            "ceiling."
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
            mean, std = x[train].mean(axis=0), x[train].std(axis=0)
            std[std == 0] = 1.0
            prediction, info = fit_predict("ridgecv", (x[train] - mean) / std, y[train], (x[test] - mean) / std, alphas=ALPHAS)
            values.append(float(np.nanmedian(pearson_r_score(y[test], prediction, aggregate="raw_values"))))
            alphas.append(info.get("alpha"))
            held_out.append((test, y[test], prediction))
        raw = Score(
            raw=float(np.mean(values)),
            error=float(np.std(values) / math.sqrt(len(values))),
            values=values,
            attrs={
                "metric": "ridgecv_pearsonr_contiguous_folds",
                "roi": self.roi,
                "n_folds": N_FOLDS,
                "gap_volumes": GAP_VOLUMES,
                "alphas": alphas,
                "n_features": int(features.shape[1]),
                "benchmark": self.identifier,
                "benchmark_version": self.version,
                "data_hash": self.data_hash,
                "stimulus_set_hash": self.stimulus_set.hash,
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
        return explained_variance(raw, self.ceiling, regime="raw_over_ceiling_clipped")
