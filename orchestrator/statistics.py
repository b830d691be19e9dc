"""Confidence intervals on scores and pairwise comparisons of models -- what they are and what they are not.

What a stored score gives us: ``Score.values``, the metric's value on each of the benchmark's cross-validation
splits (Brain-Score's 10 shuffled 90/10 splits with a fixed ``random_state``), ``raw`` = their mean, and -- for scores
made since the bootstrap was added -- ``provenance["metric"]["bootstrap"]``, an interval computed at scoring time.

**Interval on a score, preferred: the stored bootstrap** (:mod:`cortexbox.benchmarks.metrics.bootstrap`). At scoring
time the benchmark resamples the units its score averages over -- stimuli and neuroids for regression predictivity
(fitted mappings kept, no refitting), conditions for RDM benchmarks (Nili et al. 2014, self-pairs left out), images
for behaviour, word blocks within stories (Futrell2018), TR blocks and subjects (Brennan2016), items (SyntaxGym) --
with a generator seeded by a recorded seed, and stores the 95% percentile interval on the raw scale and mapped
through the ceiling normalisation (``low``, ``high``, ``level``, ``n_boot``, ``seed``, ``resampled``). It covers the
sampling of the recorded stimuli (and neuroids, subjects) as draws from their populations *given the fitted
mappings*; it does not cover the variability of refitting the mappings, the choice of layer, nor the ceiling's
uncertainty (``ceiling_error`` is shown separately). ``tests/orchestrator/test_statistics.py`` checks its coverage by simulation.

**Fallback for older scores: the corrected resampled t** over the split values. The splits' training sets overlap
(any two share ~80% of the stimuli), so the split values are positively correlated and the textbook standard error
``sd / sqrt(J)`` -- the ``error`` Brain-Score reports -- is too small. We use the *corrected resampled t* interval of
Nadeau & Bengio (2003, Machine Learning 52:239): variance ``(1/J + n_test/n_train) * s^2`` with ``J - 1`` degrees of
freedom. With 90/10 splits that widens the naive interval by ``sqrt(1 + J * 0.1/0.9) ~ 1.45``. The interval is
computed on the raw scale and its ends are mapped through the benchmark's ceiling normalisation (monotone for raw
>= 0), so the ceiled interval covers what the ceiled score estimates. It covers split-to-split variation on the
recorded stimuli and neuroids only; the correction assumes the correlation between split values is ``n_test/n``.
``method`` says which interval a score shows.

**Comparison of two models** on a benchmark: the same splits (same stimuli, same ``random_state``, same benchmark
version) are paired, the per-split differences are tested with the corrected resampled paired t-test (two-sided),
and the effect size is Cohen's ``d_z`` = mean difference / sd of differences. ``d_z`` describes how consistently one
model beats the other across splits of *these* stimuli; it is not a population effect size. An exact sign-flip
permutation p-value over the splits is reported too, labelled uncorrected (it ignores the overlap and is
anti-conservative). On an **aggregate**, the per-split differences of every shared leaf are combined with the
leaves' weights in the tree (split ``j`` of each benchmark paired), over the leaves both models have scores on.

**Comparison on stored items, preferred: the paired bootstrap** (:func:`compare_items`,
:func:`compare_items_aggregate`). Scores made since the registry keeps their per-item values (table
``score_items``, :mod:`cortexbox.benchmarks.metrics.items`: per-stimulus held-out predictions and recordings for
regression predictivity, per-pair RDM ranks for RDM benchmarks, per-item values whose mean is the score) are compared
by resampling the **same items for both models**: the two models' items are aligned by id (stimulus ids), one
multinomial draw over the shared items per replicate gives both models the same counts, each model's raw score is
recomputed on them exactly as its point score is defined (per-neuroid r on the resampled held-out stimuli, median
over neuroids, mean over splits; Spearman over the resampled pairs, mean over subjects; the weighted mean), mapped
through its ceiling normalisation (the ceiling fixed), and the replicate's difference taken. The interval is the
percentile interval of ``B`` replicate differences (seed recorded); the p-value is the two-sided bootstrap p
``min(1, 2 min(#(d* <= 0) + 1, #(d* >= 0) + 1) / (B + 1))`` (Davison & Hinkley 1997, the interval inverted), for
H0: no difference on these items' population. Items only one model has are left out (the comparison runs on the
intersection and says how many were dropped; with fewer than 2 shared items it refuses). An aggregate resamples each
shared leaf's items jointly for both models (independent draws across leaves: different recordings) and recomputes
the tree-weighted difference of the clipped ceiled values. Like the score intervals it covers the sampling of the
items given the fitted mappings, not refitting, the layer choice or the ceiling. When either score predates stored
items, the split-based test above is the fallback; ``basis`` says which was used.
"""

from __future__ import annotations

import itertools
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from cortexbox.benchmarks.metrics import normalization
from cortexbox.benchmarks.metrics.bootstrap import multinomial_counts, rdm_replicates_many
from cortexbox.benchmarks.metrics.items import MIN_ITEMS, ItemValues

__all__ = [
    "Comparison",
    "Interval",
    "ItemSide",
    "ItemsMismatch",
    "PairedReplicates",
    "bootstrap_interval",
    "bootstrap_neuroids",
    "ceil_value",
    "ceiled_split_values",
    "compare_aggregate",
    "compare_items",
    "compare_items_aggregate",
    "compare_values",
    "corrected_t_interval",
    "leaf_seed",
    "score_interval",
    "stored_bootstrap_interval",
    "test_fraction",
    "weighted_interval",
]

LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    estimate: float
    se: float | None
    level: float
    method: str
    n: int
    seed: int | None = None
    test_over_train: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def test_fraction(provenance: Mapping[str, Any] | None) -> tuple[float, float]:
    """(train, test) fractions of a score's cross-validation, from its provenance (Brain-Score's 0.9/0.1 by
    default)."""
    metric = (provenance or {}).get("metric") or {}
    train, test = metric.get("train_size"), metric.get("test_size")
    if isinstance(train, (int, float)) and 0 < train < 1:
        return float(train), float(test) if isinstance(test, (int, float)) and 0 < test < 1 else 1.0 - float(train)
    if isinstance(test, (int, float)) and 0 < test < 1:
        return 1.0 - float(test), float(test)
    return 0.9, 0.1


def corrected_t_interval(
    values: Sequence[float], *, test_over_train: float | None = 0.1 / 0.9, level: float = LEVEL
) -> Interval:
    """Nadeau-Bengio corrected resampled t interval for the mean of per-split values; ``test_over_train=None``
    gives the plain (uncorrected) t interval, right only for independent values."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    j = len(x)
    if j < 2:
        m = float(x.mean()) if j else math.nan
        return Interval(m, m, m, None, level, "none (fewer than 2 splits)", j)
    m = float(x.mean())
    factor = 1.0 / j + (test_over_train or 0.0)
    se = math.sqrt(factor * float(x.var(ddof=1)))
    half = float(stats.t.ppf(0.5 + level / 2, df=j - 1)) * se
    method = "corrected resampled t (Nadeau & Bengio 2003)" if test_over_train else "t over independent values"
    return Interval(m - half, m + half, m, se, level, method, j, test_over_train=test_over_train)


def bootstrap_interval(values: Sequence[float], *, seed: int = 0, n_boot: int = 10_000, level: float = LEVEL) -> Interval:
    """Percentile bootstrap of the mean over splits, seed recorded. With ~10 overlapping splits it is too narrow
    (like the uncorrected t); kept for comparison and for benchmarks whose values are independent."""
    x = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)
    lo, hi = np.quantile(means, [0.5 - level / 2, 0.5 + level / 2])
    return Interval(float(lo), float(hi), float(x.mean()), float(means.std(ddof=1)), level, "percentile bootstrap over splits", len(x), seed=seed)


def bootstrap_neuroids(split_neuroid_values: np.ndarray, *, seed: int = 0, n_boot: int = 2_000, level: float = LEVEL) -> Interval:
    """Bootstrap over neuroids of Brain-Score's score (mean over splits of the median over neuroids), for an
    ``(n_splits, n_neuroids)`` array of per-neuroid values; the seed is recorded."""
    a = np.asarray(split_neuroid_values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    estimate = float(np.median(a, axis=1).mean())
    boots = np.empty(n_boot)
    for i in range(n_boot):
        idx = rng.integers(0, a.shape[1], size=a.shape[1])
        boots[i] = np.median(a[:, idx], axis=1).mean()
    lo, hi = np.quantile(boots, [0.5 - level / 2, 0.5 + level / 2])
    return Interval(float(lo), float(hi), estimate, float(boots.std(ddof=1)), level, "percentile bootstrap over neuroids", a.shape[1], seed=seed)


# -- ceiling normalisation of split values and interval ends -----------------------------------------------------------
def ceil_value(raw: float, ceiling: float | None, regime: str | None) -> float:
    """``raw`` normalised as the benchmark's regime does (r²/ceiling when none is recorded); ``raw`` itself when the
    benchmark has no ceiling."""
    if ceiling is None:
        return raw
    return normalization.ceil_value(raw, ceiling, regime or "r2_over_ceiling")


def _map_interval(lo: float, hi: float, ceiling: float | None, regime: str | None) -> tuple[float, float]:
    if ceiling is None:
        return lo, hi
    return normalization.ceil_interval(lo, hi, ceiling, regime or "r2_over_ceiling")


def _regime(score: Any) -> str | None:
    return ((getattr(score, "provenance", None) or {}).get("metric") or {}).get("normalization")


def ceiled_split_values(score: Any) -> list[float]:
    """Per-split values on the ceiled scale (raw where the benchmark has no ceiling)."""
    metric = (getattr(score, "provenance", None) or {}).get("metric") or {}
    if metric.get("ceiled_values"):
        return [float(v) for v in metric["ceiled_values"]]
    if score.ceiled is None or score.ceiling is None:
        return [float(v) for v in score.values]
    return [ceil_value(float(v), score.ceiling, _regime(score)) for v in score.values]


def stored_bootstrap_interval(score: Any) -> dict[str, Any] | None:
    """The bootstrap interval recorded at scoring time (``provenance["metric"]["bootstrap"]``) as ``raw`` and
    ``ceiled`` :class:`Interval` dicts, or None for scores made before it existed."""
    record = (((getattr(score, "provenance", None) or {}).get("metric") or {}).get("bootstrap"))
    if not isinstance(record, dict) or not isinstance(record.get("raw"), dict):
        return None
    raw = record["raw"]
    if raw.get("low") is None or raw.get("high") is None:
        return None
    resampled = " and ".join(record.get("resampled") or [])
    method = f"bootstrap over {resampled} (at scoring time)" if resampled else "bootstrap (at scoring time)"
    common = {"level": record.get("level", LEVEL), "method": method, "n": record.get("n_boot"),
              "seed": record.get("seed"), "test_over_train": None}
    out: dict[str, Any] = {
        "raw": {"low": raw["low"], "high": raw["high"], "estimate": score.raw, "se": raw.get("se"), **common},
        "ceiled": None,
        "bootstrap": {k: record[k] for k in ("method", "resampled", "seed", "n_boot", "level") if k in record},
    }
    ceiled = record.get("ceiled")
    if score.ceiled is not None and isinstance(ceiled, dict) and ceiled.get("low") is not None:
        out["ceiled"] = {"low": ceiled["low"], "high": ceiled["high"], "estimate": score.ceiled, "se": ceiled.get("se"),
                         **common, "method": method + ", ends mapped through the ceiling normalisation"}
    return out


def score_interval(score: Any, *, level: float = LEVEL) -> dict[str, Any] | None:
    """The intervals of a Score row: ``raw`` and ``ceiled`` (each an :class:`Interval` as a dict). The bootstrap
    interval stored at scoring time when there is one (at the default level), else the corrected resampled t over the
    split values; None when neither exists (no bootstrap and fewer than two split values)."""
    if level == LEVEL:
        stored = stored_bootstrap_interval(score)
        if stored is not None:
            if score.ceiled is not None and stored["ceiled"] is None:
                fallback = _split_interval(score, level=level)
                stored["ceiled"] = None if fallback is None else fallback["ceiled"]
            return stored
    return _split_interval(score, level=level)


def _split_interval(score: Any, *, level: float = LEVEL) -> dict[str, Any] | None:
    """The corrected resampled t interval over the split values (see the module docstring)."""
    values = list(score.values or [])
    if len(values) < 2:
        return None
    train, test = test_fraction(getattr(score, "provenance", None))
    raw = corrected_t_interval(values, test_over_train=test / train, level=level)
    out: dict[str, Any] = {"raw": raw.to_dict(), "ceiled": None}
    if score.ceiled is not None and score.ceiling is not None:
        regime = _regime(score)
        if regime == "per_split_over_sqrt_ceiling":
            ceiled = corrected_t_interval(ceiled_split_values(score), test_over_train=test / train, level=level)
            out["ceiled"] = {**ceiled.to_dict(), "estimate": score.ceiled}
        else:
            lo, hi = _map_interval(raw.low, raw.high, score.ceiling, regime)
            # delta method for the standard error on the ceiled scale, used when combining leaves
            eps = 1e-6
            slope = abs(ceil_value(raw.estimate + eps, score.ceiling, regime) - ceil_value(raw.estimate - eps, score.ceiling, regime)) / (2 * eps)
            se = None if raw.se is None else slope * raw.se
            out["ceiled"] = {**raw.to_dict(), "low": lo, "high": hi, "estimate": score.ceiled, "se": se,
                             "method": raw.method + ", ends mapped through the ceiling normalisation"}
    return out


def weighted_interval(parts: Sequence[tuple[float, float, float | None]], *, level: float = LEVEL) -> Interval | None:
    """Interval of ``sum(w * v)`` from (weight, value, se) parts, assuming independent benchmarks (different
    recordings) and normal errors; None when any part lacks a standard error."""
    if not parts or any(se is None for _, _, se in parts):
        return None
    estimate = sum(w * v for w, v, _ in parts)
    se = math.sqrt(sum((w * se) ** 2 for w, _, se in parts))  # type: ignore[operator]
    z = float(stats.norm.ppf(0.5 + level / 2))
    return Interval(estimate - z * se, estimate + z * se, estimate, se, level, "normal, independent benchmarks, weights of the tree", len(parts))


# -- comparisons -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Comparison:
    difference: float  # mean over splits of (a - b)
    interval: Interval
    t: float | None
    df: int
    p_value: float | None  # corrected resampled paired t-test, two-sided
    p_sign_flip: float | None  # exact sign-flip permutation over splits (uncorrected)
    cohens_dz: float | None
    n_splits: int
    method: str
    significant: bool
    basis: str = "splits"  # "splits" (per-split values) or "items" (paired bootstrap over stored items)
    n_items: int | None = None  # items resampled (summed over leaves for an aggregate)
    n_boot: int | None = None
    seed: Any = None  # an int, or [seed, leaf] for a leaf's own stream
    items_left_out: dict[str, int] | None = None  # items only A / only B has, left out of the paired resample

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["interval"] = self.interval.to_dict()
        return d


def _sign_flip_p(d: np.ndarray) -> float:
    observed = abs(d.mean())
    if len(d) <= 16:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(d))))
    else:
        signs = np.random.default_rng(0).choice((1.0, -1.0), size=(65536, len(d)))
    means = np.abs((signs * d).mean(axis=1))
    return float(np.mean(means >= observed - 1e-12))


def compare_values(
    a: Sequence[float], b: Sequence[float], *, test_over_train: float = 0.1 / 0.9, level: float = LEVEL, alpha: float = 0.05
) -> Comparison:
    """Paired comparison of two models' per-split values on the same splits (see the module docstring)."""
    if len(a) != len(b):
        raise ValueError(f"paired splits needed: {len(a)} vs {len(b)} split values")
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    j = len(d)
    interval = corrected_t_interval(d, test_over_train=test_over_train, level=level)
    sd = float(d.std(ddof=1)) if j > 1 else math.nan
    if j < 2:
        t = p = dz = None
    elif sd == 0:
        t, dz = (None, None)
        p = 1.0 if d.mean() == 0 else 0.0
    else:
        t = float(d.mean() / interval.se)
        p = float(2 * stats.t.sf(abs(t), df=j - 1))
        dz = float(d.mean() / sd)
    return Comparison(
        difference=float(d.mean()) if j else math.nan,
        interval=interval,
        t=t,
        df=max(j - 1, 0),
        p_value=p,
        p_sign_flip=_sign_flip_p(d) if j >= 2 else None,
        cohens_dz=dz,
        n_splits=j,
        method="corrected resampled paired t-test (Nadeau & Bengio 2003), two-sided; Cohen's d_z over splits",
        significant=p is not None and p < alpha,
    )


def compare_aggregate(
    weights: Mapping[str, float], a: Mapping[str, Sequence[float]], b: Mapping[str, Sequence[float]], *,
    test_over_train: float = 0.1 / 0.9, level: float = LEVEL,
) -> tuple[Comparison | None, list[str], list[str]]:
    """Compares two models on an aggregate: ``weights`` are the leaves' weights in the node (from
    :func:`~cortexbox.orchestrator.aggregation.leaf_weights`), ``a`` and ``b`` the per-split ceiled values of each
    model's leaves (clipped to [0, 1] here, as the aggregate does). Returns (comparison, shared leaves, leaves left
    out because only one model, or a different number of splits, has them)."""
    shared = sorted(k for k in weights if k in a and k in b and len(a[k]) == len(b[k]) and len(a[k]) >= 2)
    left_out = sorted(k for k in weights if k not in shared and (k in a or k in b))
    if not shared or len({len(a[k]) for k in shared}) != 1:
        return None, shared, left_out
    diff = sum(weights[k] * (np.clip(a[k], 0, 1) - np.clip(b[k], 0, 1)) for k in shared)
    comparison = compare_values(list(diff), [0.0] * len(diff), test_over_train=test_over_train, level=level)
    return comparison, shared, left_out


# -- paired bootstrap over stored items ---------------------------------------------------------------------------------
N_BOOT_ITEMS = 1000  # as the scoring-time intervals (bootstrap.DEFAULT_N_BOOT)
#: Replicates per chunk x items: bounds the weight arrays of long item lists (e.g. words).
_CHUNK_ELEMENTS = 4_000_000


class ItemsMismatch(ValueError):
    """The two models' items cannot be paired (fewer than 2 shared item ids)."""


@dataclass(frozen=True)
class ItemSide:
    """One model's stored items on one benchmark, and how its raw score is ceiled (the ceiling held fixed)."""

    items: ItemValues
    ceiling: float | None = None
    regime: str | None = None

    @classmethod
    def of(cls, score: Any, items: ItemValues) -> ItemSide | None:
        """The side of a Score row; None when its normalisation cannot be recomputed from a raw value
        (``per_split_over_sqrt_ceiling``)."""
        regime = _regime(score)
        if regime == "per_split_over_sqrt_ceiling":
            return None
        ceiled = score.ceiled is not None and score.ceiling is not None
        return cls(items, float(score.ceiling) if ceiled else None, regime if ceiled else None)

    def ceiled(self, raw: np.ndarray) -> np.ndarray:
        if self.ceiling is None:
            return np.asarray(raw, dtype=np.float64)
        return np.array([ceil_value(float(v), self.ceiling, self.regime) if math.isfinite(v) else math.nan for v in raw])


def _align(a: ItemValues, b: ItemValues) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Positions of the shared item ids in ``a`` and in ``b`` (in sorted id order) and the counts left out."""
    _, ia, ib = np.intersect1d(a.ids, b.ids, assume_unique=True, return_indices=True)
    if len(ia) < MIN_ITEMS:
        raise ItemsMismatch(f"the two scores share {len(ia)} item ids ({a.n_items} vs {b.n_items} items); at least"
                            f" {MIN_ITEMS} are needed for a paired resample")
    return ia, ib, {"only_a": a.n_items - len(ia), "only_b": b.n_items - len(ib)}


def _weights(counts: np.ndarray, positions: np.ndarray, n: int) -> np.ndarray:
    w = np.zeros((len(counts), n))
    w[:, positions] = counts
    return w


class PairedReplicates:
    """Two models' ceiled scores on the same resampled items of one benchmark: ``a`` and ``b`` ``(n_boot,)``, the
    observed values (every shared item once), the number of shared items ``m``, the items left out, the seed."""

    def __init__(self, a: ItemSide, b: ItemSide, *, n_boot: int = N_BOOT_ITEMS, seed: Any = 0) -> None:
        ia, ib, self.left_out = _align(a.items, b.items)
        self.m, self.n_boot, self.seed = len(ia), n_boot, seed
        ones = np.ones((1, self.m))
        self.observed = (float(a.ceiled(a.items.replicates(_weights(ones, ia, a.items.n_items)))[0]),
                         float(b.ceiled(b.items.replicates(_weights(ones, ib, b.items.n_items)))[0]))
        rng = np.random.default_rng(seed)
        ra, rb = [], []
        shared_subjects = _same_rdm_subjects(a.items, b.items, ia, ib)
        for size in _chunks(n_boot, max(a.items.n_items, b.items.n_items)):
            counts = multinomial_counts(rng, self.m, size)  # one draw over the shared items, applied to both
            if shared_subjects:  # the subjects' weighted ranks once for both models (same pairs, same order)
                both = rdm_replicates_many(np.stack([a.items.arrays["model"], b.items.arrays["model"]]),
                                           a.items.arrays["subjects"], _weights(counts, ia, a.items.n_items))
                ra.append(a.ceiled(both[0]))
                rb.append(b.ceiled(both[1]))
                continue
            ra.append(a.ceiled(a.items.replicates(_weights(counts, ia, a.items.n_items))))
            rb.append(b.ceiled(b.items.replicates(_weights(counts, ib, b.items.n_items))))
        self.a, self.b = np.concatenate(ra), np.concatenate(rb)
        self.kind = a.items.kind


def _same_rdm_subjects(a: ItemValues, b: ItemValues, ia: np.ndarray, ib: np.ndarray) -> bool:
    """Two RDM item sets over the same stimuli in the same order, against the same subjects."""
    return (a.kind == b.kind == "rdm" and np.array_equal(a.ids, b.ids) and np.array_equal(ia, ib)
            and np.array_equal(a.arrays["subjects"], b.arrays["subjects"]))


def leaf_seed(seed: int, identifier: str) -> list[int]:
    """A leaf's own stream (``[seed, crc32(identifier)]``): its resample is the same in every node it counts in."""
    return [int(seed), zlib.crc32(identifier.encode())]


def _bootstrap_comparison(observed: float, diffs: np.ndarray, *, n_items: int, n_boot: int, seed: Any, level: float,
                          alpha: float, left_out: dict[str, int], method: str) -> Comparison:
    finite = diffs[np.isfinite(diffs)]
    if finite.size:
        lo, hi = (float(x) for x in np.quantile(finite, [(1 - level) / 2, (1 + level) / 2]))
        se: float | None = float(finite.std(ddof=1)) if finite.size > 1 else None
        p: float | None = min(1.0, 2 * min(int((finite <= 0).sum()) + 1, int((finite >= 0).sum()) + 1) / (finite.size + 1))
    else:
        lo = hi = math.nan
        se = p = None
    interval = Interval(lo, hi, observed, se, level, "percentile bootstrap of the paired difference", n_items)
    return Comparison(
        difference=observed, interval=interval, t=None, df=0, p_value=p, p_sign_flip=None, cohens_dz=None,
        n_splits=0, method=method, significant=p is not None and p < alpha, basis="items", n_items=n_items,
        n_boot=n_boot, seed=seed, items_left_out=left_out,
    )


def _chunks(n_boot: int, n_items: int) -> list[int]:
    size = max(1, min(n_boot, _CHUNK_ELEMENTS // max(1, n_items)))
    return [min(size, n_boot - start) for start in range(0, n_boot, size)]


def compare_items(
    a: ItemSide, b: ItemSide, *, n_boot: int = N_BOOT_ITEMS, seed: Any = 0, level: float = LEVEL,
    alpha: float = 0.05, replicates: PairedReplicates | None = None,
) -> Comparison:
    """Paired bootstrap comparison of two models on one benchmark over their stored items (see the module
    docstring): the difference of the ceiled scores (A - B) recomputed on the shared items, its percentile
    interval and two-sided bootstrap p over ``n_boot`` replicates drawn with ``seed`` (or the ``replicates``
    already drawn). Raises :class:`ItemsMismatch` when fewer than 2 item ids are shared."""
    r = replicates or PairedReplicates(a, b, n_boot=n_boot, seed=seed)
    return _bootstrap_comparison(
        r.observed[0] - r.observed[1], r.a - r.b, n_items=r.m, n_boot=r.n_boot, seed=r.seed, level=level,
        alpha=alpha, left_out=r.left_out,
        method=f"paired bootstrap over the {r.m} shared items ({r.kind}): the same resampled items for both"
        " models, each score recomputed as defined and ceiled (ceiling fixed); percentile interval, two-sided"
        " bootstrap p",
    )


def compare_items_aggregate(
    weights: Mapping[str, float], a: Mapping[str, ItemSide], b: Mapping[str, ItemSide], *,
    n_boot: int = N_BOOT_ITEMS, seed: int = 0, level: float = LEVEL, alpha: float = 0.05,
    replicates: dict[str, PairedReplicates] | None = None,
) -> tuple[Comparison | None, list[str], list[str]]:
    """Paired bootstrap of an aggregate's difference: every leaf both models have items on resamples its shared
    items jointly for both (each leaf on its own stream, :func:`leaf_seed`; leaves are different recordings); a
    replicate is ``sum(w * (clip(ceiled_a) - clip(ceiled_b)))`` over those leaves, as the aggregate's tree weights
    and [0, 1] clipping. ``replicates``: leaves already drawn (filled in as a cache). Returns (comparison, shared
    leaves, leaves left out: only one model has items there, or the items cannot be paired)."""
    cache = {} if replicates is None else replicates
    shared, left_out = [], []
    for k in sorted(weights):
        if k in a and k in b:
            try:
                if k not in cache or cache[k].n_boot != n_boot:
                    cache[k] = PairedReplicates(a[k], b[k], n_boot=n_boot, seed=leaf_seed(seed, k))
                shared.append(k)
                continue
            except ItemsMismatch:
                pass
        if k in a or k in b:
            left_out.append(k)
    if not shared:
        return None, shared, left_out
    diffs = sum(weights[k] * (np.clip(cache[k].a, 0, 1) - np.clip(cache[k].b, 0, 1)) for k in shared)
    observed = sum(weights[k] * (clip01(cache[k].observed[0]) - clip01(cache[k].observed[1])) for k in shared)
    dropped = {"only_a": sum(cache[k].left_out["only_a"] for k in shared),
               "only_b": sum(cache[k].left_out["only_b"] for k in shared)}
    comparison = _bootstrap_comparison(
        float(observed), np.asarray(diffs), n_items=sum(cache[k].m for k in shared), n_boot=n_boot, seed=seed,
        level=level, alpha=alpha, left_out=dropped,
        method=f"paired bootstrap over the stored items of {len(shared)} leaf benchmark(s), each leaf's items"
        " resampled jointly for both models (own stream per leaf: [seed, crc32(leaf)]); tree-weighted difference of"
        " clipped ceiled scores; percentile interval, two-sided bootstrap p",
    )
    return comparison, shared, left_out


def clip01(x: float) -> float:
    return min(max(x, 0.0), 1.0) if math.isfinite(x) else x
