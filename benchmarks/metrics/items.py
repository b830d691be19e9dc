"""Per-item values a score was built from, stored with it so that two models can be compared on the same items.

A score's bootstrap interval (:mod:`.bootstrap`) is computed at scoring time, for one model. A *paired* comparison of
two models has to resample the same items for both, later, from what the registry holds; so every score also keeps,
compactly, enough to recompute its raw value on any reweighting of its items (``weights`` of shape ``(b, n_items)``,
one row per bootstrap replicate, a row of ones giving the point score):

``kind="mean"``
    ``values`` (one per item): the score is their (weighted) mean. The simple form a benchmark can set itself as
    ``Score.attrs["item_values"]`` and ``Score.attrs["item_ids"]`` (e.g. per-word reading-time values).
``kind="predictivity"``
    Regression predictivity (``pls``, ``ridge``, ...): the recording ``target`` ``(n_stimuli, n_neuroids)`` and,
    per cross-validation split, its held-out stimulus rows and the fitted mapping's predictions. The score is the
    mean over splits of the median over neuroids of Pearson r on the held-out stimuli, each weighted by its count;
    as the point score's definition, the mappings stay fitted (no refitting).
``kind="rdm"``
    RDM comparison: the ranks (``2 x`` average ranks, exact integers) of the model RDM's upper triangle and of each
    subject's. A replicate is Nili et al. (2014)'s stimulus bootstrap: pair ``{u, v}`` weighted ``c_u c_v``, the
    mean over subjects of the weighted Spearman rho (:func:`.bootstrap.rdm_replicates`). Spearman depends only on
    the ranks, so storing ranks loses nothing.
``kind="error_consistency"``
    Geirhos et al.'s error consistency: per (subject, condition) cell, each trial's image (a row of ``ids``) and
    whether the model and the subject were correct. A replicate weights every trial by its image's count (the trial
    pairing kept), recomputes each cell's kappa, and takes ``|mean over subjects of mean over conditions|``, as
    :class:`~.behavior.ErrorConsistency`.
``kind="mean_of"``
    The unweighted mean of several parts' scores over disjoint items (e.g. four recording sessions, each its own
    predictivity items): :func:`mean_of_items`. Each part's arrays are stored under ``<k>.<name>``.

Metrics put them in ``Score.items`` (never serialised with the score; a score built from several, such as a mean over
sessions, has none unless it builds its own). Items are named by stimulus ids (``ids``) so that two models' items
align by id whatever their order. Arrays are stored as float32 (predictions as float16 where that holds them to 1e-3
of their scale; integers for ranks and rows) in a compressed ``.npz``, read back without pickle.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .bootstrap import correlation_bootstrap, rdm_replicates

__all__ = ["KINDS", "ItemValues", "item_values_of", "SIMPLE_ATTRS", "error_consistency_items", "mean_items", "mean_of_items", "predictivity_items", "rdm_items"]

KINDS = ("mean", "predictivity", "rdm", "error_consistency", "mean_of")
#: The attrs keys of the simple form a benchmark may set itself (JSON lists; the recording path moves them out).
SIMPLE_ATTRS = ("item_values", "item_ids")
#: Fewest items a resample can be drawn over.
MIN_ITEMS = 2
#: Largest stored payload accepted back (compressed bytes), so a corrupt row cannot make a reader allocate without end.
MAX_PAYLOAD_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True, eq=False)
class ItemValues:
    """What a score was built from, per item (see the module docstring)."""

    kind: str
    ids: np.ndarray  # (n_items,) str
    arrays: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"item kind must be one of {KINDS}, got {self.kind!r}")
        ids = np.asarray(self.ids)
        if ids.ndim != 1 or len(ids) < 1:
            raise ValueError(f"item ids must be a non-empty 1-D array, got shape {ids.shape}")
        if len(np.unique(ids)) != len(ids):
            raise ValueError("item ids must be unique")
        object.__setattr__(self, "ids", ids.astype(str))
        self._check()

    def __repr__(self) -> str:  # attrs are written as JSON elsewhere: keep this short
        return f"ItemValues({self.kind}, {self.n_items} items)"

    __str__ = __repr__

    @property
    def n_items(self) -> int:
        return len(self.ids)

    def _check(self) -> None:
        n, a = self.n_items, self.arrays
        if self.kind == "mean":
            if a["values"].shape != (n,):
                raise ValueError(f"mean items: {n} ids but values of shape {a['values'].shape}")
        elif self.kind == "predictivity":
            target, rows, sizes, predictions = a["target"], a["rows"], a["sizes"], a["predictions"]
            if target.ndim != 2 or target.shape[0] != n:
                raise ValueError(f"predictivity items: {n} ids but a target of shape {target.shape}")
            if sizes.sum() != len(rows) or predictions.shape != (len(rows), target.shape[1]):
                raise ValueError("predictivity items: split sizes, rows and predictions disagree")
            if len(rows) and (rows.min() < 0 or rows.max() >= n):
                raise ValueError("predictivity items: a held-out row outside the items")
        elif self.kind == "mean_of":
            self._parts()  # each part checks itself
        elif self.kind == "error_consistency":
            rows, sizes, shape = a["rows"], a["sizes"], a["shape"]
            if sizes.sum() != len(rows) or a["source"].shape != rows.shape or a["target"].shape != rows.shape:
                raise ValueError("error consistency items: cell sizes, rows and correctness disagree")
            if len(shape) != 2 or int(np.prod(shape)) != len(sizes) or (len(rows) and (rows.min() < 0 or rows.max() >= n)):
                raise ValueError("error consistency items: cells do not fill the (subject, condition) grid")
        else:
            m = n * (n - 1) // 2
            if a["model"].shape != (m,) or a["subjects"].ndim != 2 or a["subjects"].shape[1] != m:
                raise ValueError(f"rdm items: {n} ids need {m} pairs, got {a['model'].shape} and {a['subjects'].shape}")

    # -- the score on reweighted items ------------------------------------------------------------------------------
    def replicates(self, weights: np.ndarray) -> np.ndarray:
        """The raw score with item ``i`` counted ``weights[r, i]`` times, for each row ``r``: ``(b,)``."""
        w = np.asarray(weights, dtype=np.float64)
        if w.ndim != 2 or w.shape[1] != self.n_items:
            raise ValueError(f"weights must be (b, {self.n_items}), got {w.shape}")
        a = self.arrays
        if self.kind == "mean":
            with np.errstate(invalid="ignore", divide="ignore"):
                return (w @ a["values"].astype(np.float64)) / w.sum(axis=1)
        if self.kind == "predictivity":
            bounds = np.r_[0, np.cumsum(a["sizes"])]
            target = a["target"].astype(np.float64)
            tests = []
            for s in range(len(a["sizes"])):
                rows = a["rows"][bounds[s] : bounds[s + 1]]
                tests.append((rows, target[rows], a["predictions"][bounds[s] : bounds[s + 1]].astype(np.float64)))
            return correlation_bootstrap(
                tests, row_counts=lambda first, b: [w[first : first + b][:, rows] for rows, _, _ in tests],
                n_columns=target.shape[1], resample_columns=False, rng=np.random.default_rng(0), n_boot=len(w),
            )
        if self.kind == "error_consistency":
            return _error_consistency(w, a)
        if self.kind == "mean_of":
            bounds = np.r_[0, np.cumsum([part.n_items for part in self._parts()])]
            return np.mean([part.replicates(w[:, bounds[k] : bounds[k + 1]]) for k, part in enumerate(self._parts())],
                           axis=0)
        return rdm_replicates(a["model"], a["subjects"], w)

    def estimate(self) -> float:
        """The raw score recomputed from the stored items (every item once)."""
        return float(self.replicates(np.ones((1, self.n_items)))[0])

    def _parts(self) -> list[ItemValues]:
        """The parts of a ``mean_of`` (their items in order: ``ids`` is their concatenation)."""
        kinds, sizes = self.arrays["part_kinds"], self.arrays["part_sizes"]
        if len(kinds) != len(sizes) or int(np.sum(sizes)) != self.n_items or "mean_of" in kinds.tolist():
            raise ValueError("mean_of items: part kinds, sizes and ids disagree")
        bounds = np.r_[0, np.cumsum(sizes)]
        return [ItemValues(str(kind), self.ids[bounds[k] : bounds[k + 1]],
                           {name.split(".", 1)[1]: v for name, v in self.arrays.items() if name.startswith(f"{k}.")})
                for k, kind in enumerate(kinds)]

    # -- storage ------------------------------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """A compressed ``.npz`` of ``ids`` and the arrays (no pickled objects)."""
        buffer = io.BytesIO()
        arrays = {"ids": self.ids.astype(str), **{k: np.asarray(v) for k, v in self.arrays.items()}}
        np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]  # numpy stubs type **kwds as allow_pickle
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, kind: str, payload: bytes) -> ItemValues:
        """Reads what :meth:`to_bytes` wrote; ``ValueError`` for anything else."""
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise ValueError(f"stored items of {len(payload)} bytes exceed {MAX_PAYLOAD_BYTES}")
        try:
            with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (OSError, ValueError, EOFError) as error:
            raise ValueError(f"stored items cannot be read: {error}") from error
        ids = arrays.pop("ids", None)
        if ids is None:
            raise ValueError("stored items have no ids")
        try:
            return cls(kind, ids, arrays)
        except KeyError as error:
            raise ValueError(f"stored {kind} items lack the array {error}") from error


# -- builders --------------------------------------------------------------------------------------------------------
def mean_items(ids: Sequence[Any] | np.ndarray, values: Sequence[float] | np.ndarray) -> ItemValues:
    """Items whose mean is the score (e.g. per-word values)."""
    return ItemValues("mean", np.asarray(ids).astype(str), {"values": np.asarray(values, dtype=np.float32)})


def predictivity_items(
    ids: Sequence[Any] | np.ndarray, target: np.ndarray, held_out: Sequence[tuple[np.ndarray, np.ndarray]]
) -> ItemValues:
    """Regression items: ``target`` ``(n_stimuli, n_neuroids)`` in ``ids`` order and, per split, (held-out rows,
    predictions ``(n_test, n_neuroids)``)."""
    rows = np.concatenate([np.asarray(r) for r, _ in held_out]) if held_out else np.zeros(0)
    index = np.int16 if len(ids) < 2**15 else np.int32
    return ItemValues("predictivity", np.asarray(ids).astype(str), {
        "target": np.asarray(target, dtype=np.float32),
        "rows": rows.astype(index),
        "sizes": np.array([len(r) for r, _ in held_out], dtype=np.int32),
        "predictions": _half_if_close(np.concatenate([np.asarray(p, dtype=np.float32) for _, p in held_out]))
        if held_out else np.zeros((0, np.asarray(target).shape[1]), dtype=np.float32),
    })


def _half_if_close(values: np.ndarray) -> np.ndarray:
    """float16 when it holds every column of ``values`` to 1e-3 of that column's largest magnitude (the predictions
    are most of a predictivity payload: V4's 161 kB become 103 kB, the score recomputed from them moves ~5e-6), else
    float32."""
    with np.errstate(over="ignore"):
        half = values.astype(np.float16)
    if not np.isfinite(half).all():
        return values
    error = np.abs(half.astype(np.float32) - values).max(axis=0, initial=0.0)
    return half if (error <= 1e-3 * np.abs(values).max(axis=0, initial=0.0)).all() else values


def _doubled_ranks(values: np.ndarray) -> np.ndarray:
    """``2 x`` the average ranks (ties shared) of ``values``: integers, so stored exactly."""
    import scipy.stats

    doubled = np.rint(2 * scipy.stats.rankdata(values)).astype(np.int64)
    return doubled.astype(np.uint16 if doubled.max(initial=0) < 2**16 else np.uint32)


def rdm_items(ids: Sequence[Any] | np.ndarray, model_rdm: np.ndarray, subject_rdms: np.ndarray) -> ItemValues:
    """RDM items: the model's and each subject's RDM over the stimuli ``ids``, stored as ranks of the upper triangle."""
    n = len(ids)
    iu, ju = np.triu_indices(n, k=1)
    return ItemValues("rdm", np.asarray(ids).astype(str), {
        "model": _doubled_ranks(np.asarray(model_rdm)[iu, ju]),
        "subjects": np.stack([_doubled_ranks(np.asarray(r)[iu, ju]) for r in subject_rdms]),
    })


def mean_of_items(parts: Sequence[ItemValues]) -> ItemValues:
    """Items of a score that is the unweighted mean of the parts' scores (their item ids must not overlap)."""
    arrays: dict[str, np.ndarray] = {"part_kinds": np.array([p.kind for p in parts]),
                                     "part_sizes": np.array([p.n_items for p in parts], dtype=np.int64)}
    for k, part in enumerate(parts):
        arrays.update({f"{k}.{name}": v for name, v in part.arrays.items()})
    return ItemValues("mean_of", np.concatenate([p.ids for p in parts]), arrays)


def error_consistency_items(
    cells: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], shape: tuple[int, int]
) -> ItemValues:
    """Error-consistency items from (trial image ids, model correct, subject correct) per (subject, condition)
    cell, cells in row-major ``shape`` order; the items are the images."""
    images, inverse = np.unique(np.concatenate([np.asarray(c[0]).astype(str) for c in cells]), return_inverse=True)
    return ItemValues("error_consistency", images, {
        "rows": inverse.astype(np.int32),
        "sizes": np.array([len(c[0]) for c in cells], dtype=np.int32),
        "source": np.concatenate([np.asarray(c[1], dtype=bool) for c in cells]),
        "target": np.concatenate([np.asarray(c[2], dtype=bool) for c in cells]),
        "shape": np.asarray(shape, dtype=np.int32),
    })


def _error_consistency(w: np.ndarray, a: Mapping[str, np.ndarray]) -> np.ndarray:
    bounds = np.r_[0, np.cumsum(a["sizes"])]
    kappas = np.empty((len(a["sizes"]), len(w)))
    for k in range(len(a["sizes"])):
        cell = slice(bounds[k], bounds[k + 1])
        weights = w[:, a["rows"][cell]]
        source, target = a["source"][cell].astype(np.float64), a["target"][cell].astype(np.float64)
        n = weights.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            acc_s, acc_t = weights @ source / n, weights @ target / n
            observed = weights @ (source == target).astype(np.float64) / n
            expected = acc_s * acc_t + (1 - acc_s) * (1 - acc_t)
            kappas[k] = np.where(expected < 1, (observed - expected) / (1 - expected), np.nan)
    subjects, conditions = (int(x) for x in a["shape"])
    return np.abs(kappas.reshape(subjects, conditions, len(w)).mean(axis=1).mean(axis=0))


def item_values_of(score: Any) -> ItemValues | None:
    """A score's items: its ``items`` (set by the metrics here), else the simple form ``attrs["item_values"]`` +
    ``attrs["item_ids"]`` (their mean is the score); None when it has neither. ``ValueError`` for a malformed simple
    form."""
    items = getattr(score, "items", None)
    if isinstance(items, ItemValues):
        return items
    attrs = getattr(score, "attrs", None) or {}
    values, ids = attrs.get("item_values"), attrs.get("item_ids")
    if values is None or ids is None:
        return None
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or len(values) != len(ids) or not np.isfinite(values).all():
        raise ValueError(f"item_values must be finite and one per item id: {values.shape} values, {len(ids)} ids")
    return mean_items(ids, values)
