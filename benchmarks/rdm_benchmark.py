"""Benchmarks whose target is a set of RDMs (representational dissimilarity matrices), not responses.

When only RDMs are published (Kriegeskorte et al. 2008; Mur et al. 2013), the model side is Brain-Score's ``rdm``
metric, built from :mod:`cortexbox.benchmarks.metrics.rsa`: the layer's RDM ``1 - corrcoef`` across stimuli
(:func:`~cortexbox.benchmarks.metrics.rsa.rdm`) compared with a target RDM by Spearman's rho over the upper triangle
(:func:`~cortexbox.benchmarks.metrics.rsa.rdm_similarity`).

With several subjects the raw score is the mean over subjects of rho(model RDM, subject RDM) (Nili et al. 2014;
Brain-Score's ``RSABenchmark`` also scores each subject and averages), and the ceiling is
:func:`rdm_noise_ceiling`, the computation of :class:`~cortexbox.benchmarks.metrics.rsa.RSACeiling` started from the
subjects' RDMs instead of their response patterns: upper bound = mean over subjects of rho(subject RDM, mean RDM of
all subjects), lower bound = the same against the mean of the *other* subjects. The upper bound is what a model that
reproduced the group-mean RDM exactly would score, so ``raw / upper`` is the normalisation (Brain-Score's RSA
ceiling); the lower bound is recorded in the ceiling's and the score's ``attrs``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import xarray as xr

from .assemblies import check_stimulus_ids_match, validate_assembly
from .base import BenchmarkBase, Kind
from .dims import STIMULUS_ID, TIME_BIN
from .metrics.bootstrap import DEFAULT_N_BOOT, DEFAULT_SEED, bootstrap_record, rdm_bootstrap
from .metrics.cross_validation import InsufficientDataError, aggregate_splits
from .metrics.items import rdm_items
from .metrics.normalization import Normalization, explained_variance
from .metrics.rsa import rdm, rdm_similarity
from .score import Score
from .stimuli import StimulusSet

__all__ = ["DegenerateRDM", "RDMBenchmark", "RDMTarget", "rdm_noise_ceiling"]


class DegenerateRDM(ValueError):
    """The model's RDM cannot be compared: a stimulus with constant features, or the same pattern for all."""


@dataclass(frozen=True)
class RDMTarget:
    """Target RDMs over one set of stimuli.

    Attributes
    ----------
    rdms : numpy.ndarray of shape (n_subjects, n_stimuli, n_stimuli)
        Symmetric, zero diagonal, float64, in ``stimulus_ids`` order (one "subject" for a group RDM).
    subjects : tuple of str
        One name per RDM.
    stimulus_ids : tuple of str
    """

    rdms: np.ndarray
    subjects: tuple[str, ...]
    stimulus_ids: tuple[str, ...]

    def __post_init__(self) -> None:
        rdms = np.asarray(self.rdms, dtype=np.float64)
        n = len(self.stimulus_ids)
        if rdms.shape != (len(self.subjects), n, n):
            raise ValueError(f"rdms of shape {rdms.shape} do not fit {len(self.subjects)} subjects x {n} stimuli")
        if not np.isfinite(rdms).all():
            raise ValueError("target RDMs hold NaN or inf")
        if not np.allclose(rdms, rdms.transpose(0, 2, 1)) or np.abs(np.einsum("kii->ki", rdms)).max() > 1e-6:
            raise ValueError("target RDMs must be symmetric with a zero diagonal")
        object.__setattr__(self, "rdms", rdms)

    @property
    def mean(self) -> np.ndarray:
        """The mean RDM over subjects."""
        return self.rdms.mean(axis=0)


def rdm_noise_ceiling(rdms: np.ndarray, subjects: tuple[str, ...] | list[str]) -> Score:
    """Nili et al. (2014) noise ceiling of per-subject RDMs, as :class:`~.metrics.rsa.RSACeiling` computes it.

    Parameters
    ----------
    rdms : numpy.ndarray of shape (n_subjects, n_stimuli, n_stimuli)
    subjects : sequence of str
        Subject names, one per RDM.

    Returns
    -------
    Score
        ``raw`` = upper bound (mean over subjects of Spearman(subject RDM, mean RDM of all subjects)), ``error`` = its
        standard error over subjects (ddof 0), ``values`` = per-subject upper-bound rhos; ``attrs`` as
        ``RSACeiling``'s (``lower_bound_loo``, ``lower_values``, ``subjects``, ``n_stimuli``).

    Raises
    ------
    InsufficientDataError
        Fewer than 2 subjects.
    """
    rdms = np.asarray(rdms, dtype=np.float64)
    if len(rdms) < 2:
        raise InsufficientDataError(f"a noise ceiling needs at least 2 subjects, got {len(rdms)}")
    mean_all = rdms.mean(axis=0)
    upper, lower = [], []
    for i in range(len(rdms)):
        others = np.delete(rdms, i, axis=0).mean(axis=0)
        upper.append(rdm_similarity(rdms[i], mean_all))
        lower.append(rdm_similarity(rdms[i], others))
    attrs = {
        "ceiling": "rsa_ceiling",
        "lower_bound_loo": float(np.mean(lower)),
        "subjects": [str(s) for s in subjects],
        "lower_values": [float(v) for v in lower],
        "n_stimuli": int(rdms.shape[1]),
    }
    return Score(
        raw=float(np.mean(upper)),
        error=float(np.std(upper) / np.sqrt(len(upper))),
        values=[float(v) for v in upper],
        attrs=attrs,
    )


class RDMBenchmark(BenchmarkBase):
    """A ``kind="neural"`` benchmark comparing a model layer's RDM with target RDMs.

    Subclasses set the class attributes and implement :meth:`_data_files`, :meth:`_load_stimulus_set`,
    :meth:`_load_target` and optionally :meth:`_load_selection`. Same interface as
    :class:`~cortexbox.benchmarks.NeuralBenchmark`: ``stimulus_set``, ``ceiling`` (a :class:`Score`, or ``None`` for
    a single group RDM), ``score``, ``selection_stimulus_set``, ``score_for_selection``, ``info``.

    Parameters
    ----------
    data_dir : path, optional
        Root of the shared data (see :func:`cortexbox.benchmarks.data.resolve_data_dir`).
    cache_dir : path, optional
        Accepted for the registry's uniform constructor; unused (the RDM ceilings take milliseconds).
    """

    kind: Kind = "neural"
    source_visual_degrees: float
    normalization: Normalization = "r_over_ceiling"

    @property
    def selection_source(self) -> RDMBenchmark | None:
        """The benchmark whose selection data (and stored layer choice) this one borrows; None: its own."""
        return None
    #: Bootstrap of the score over stimuli (Nili et al. 2014; see :func:`~.metrics.bootstrap.rdm_bootstrap`).
    n_boot: int = DEFAULT_N_BOOT
    seed: int = DEFAULT_SEED

    # to implement -------------------------------------------------------------------------------------------
    def _load_stimulus_set(self) -> StimulusSet:
        raise NotImplementedError

    def _load_target(self) -> RDMTarget:
        raise NotImplementedError

    def _load_selection(self) -> tuple[StimulusSet, RDMTarget] | None:
        """Images and a target RDM for choosing a model layer, or ``None``."""
        return None

    # data ---------------------------------------------------------------------------------------------------
    @cached_property
    def stimulus_set(self) -> StimulusSet:
        return self._load_stimulus_set()

    @cached_property
    def target(self) -> RDMTarget:
        target = self._load_target()
        if list(target.stimulus_ids) != self.stimulus_set.stimulus_ids:
            raise ValueError(f"{self.identifier}: the target RDMs and the stimulus set do not list the same stimuli")
        return target

    @cached_property
    def _selection(self) -> tuple[StimulusSet, RDMTarget] | None:
        return self._load_selection()

    @property
    def selection_stimulus_set(self) -> StimulusSet | None:
        """Images for choosing a model layer (see the benchmark's description for the rule)."""
        return None if self._selection is None else self._selection[0]

    @property
    def selection_target(self) -> RDMTarget | None:
        """The RDM a layer is selected on."""
        return None if self._selection is None else self._selection[1]

    # ceiling ------------------------------------------------------------------------------------------------
    def _compute_ceiling(self) -> Score | None:
        """:func:`rdm_noise_ceiling` of the target's subjects; ``None`` for a single (group) RDM."""
        target = self.target
        if len(target.subjects) < 2:
            return None
        return self._labelled(rdm_noise_ceiling(target.rdms, target.subjects))

    # scoring ------------------------------------------------------------------------------------------------
    def _model_rdm(self, assembly: xr.DataArray, stimulus_ids: tuple[str, ...]) -> np.ndarray:
        """The layer's RDM in ``stimulus_ids`` order; :class:`DegenerateRDM` when it cannot be ranked."""
        if isinstance(assembly, xr.DataArray) and TIME_BIN in assembly.dims and assembly.sizes[TIME_BIN] == 1:
            assembly = assembly.squeeze(TIME_BIN, drop=True)
        assembly = validate_assembly(assembly)
        order = check_stimulus_ids_match(assembly[STIMULUS_ID].values, stimulus_ids, what="model assembly")
        values = np.asarray(assembly.values)
        if not (order == np.arange(len(order))).all():
            values = values[order]
        model_rdm = rdm(values)
        undefined = np.isnan(np.diag(model_rdm))
        if undefined.any():
            examples = [stimulus_ids[i] for i in np.nonzero(undefined)[0][:5]]
            raise DegenerateRDM(
                f"the model's features are constant across units for {int(undefined.sum())} stimuli (e.g."
                f" {examples}); their correlation distance is undefined"
            )
        upper = model_rdm[np.triu_indices(len(model_rdm), k=1)]
        if np.ptp(upper) == 0:
            raise DegenerateRDM("the model's RDM is constant (every stimulus has the same activation pattern)")
        return model_rdm

    def score(self, assembly: xr.DataArray) -> Score:
        """Score a model layer's activations to :attr:`stimulus_set`.

        Parameters
        ----------
        assembly : xarray.DataArray
            Dims ``(presentation, neuroid)`` (a size-1 ``time_bin`` dim is squeezed), one row per stimulus of
            :attr:`stimulus_set` in any order (matched by ``stimulus_id``), unique ``neuroid_id``, finite values.

        Returns
        -------
        Score
            ``raw`` = mean over the target's subjects of Spearman(model RDM, subject RDM); ``values`` per subject;
            ``error`` = their standard error (ddof 0; NaN for one group RDM); ``ceiling``/``ceiled`` =
            ``raw / ceiling`` when the benchmark has a ceiling, else ``None``. ``attrs["bootstrap"]``: the interval of
            Nili et al. (2014)'s stimulus bootstrap (conditions resampled, a condition's pairs with its own copies
            left out; the subjects kept), raw and ceiled, with its seed. ``items``: the RDMs' ranks per stimulus pair
            (:func:`~.metrics.items.rdm_items`), for paired comparisons over the same stimuli.

        Raises
        ------
        ValueError
            Missing, extra or duplicated stimulus ids, NaN/inf, wrong dims/coords; :class:`DegenerateRDM` (a
            ``ValueError``) for a stimulus whose features are all equal or a layer that is the same for every
            stimulus.
        """
        target = self.target
        model_rdm = self._model_rdm(assembly, target.stimulus_ids)
        per_subject = [rdm_similarity(model_rdm, subject_rdm) for subject_rdm in target.rdms]
        if len(per_subject) > 1:
            raw, error = aggregate_splits(np.asarray(per_subject))
        else:
            raw, error = per_subject[0], math.nan
        attrs: dict[str, object] = {
            **self._provenance(),
            "metric": "rdm",
            "comparison": "spearman over the upper triangle of 1 - pearson RDMs",
            "subjects": list(target.subjects),
            "subject_aggregation": "mean; error = std(ddof=0) / sqrt(n_subjects)" if len(per_subject) > 1 else "none",
            "n_stimuli": len(target.stimulus_ids),
        }
        if len(per_subject) > 1:
            attrs["group_rdm_spearman"] = rdm_similarity(model_rdm, target.mean)
        samples = None
        if self.n_boot:
            samples = rdm_bootstrap(model_rdm, target.rdms, rng=np.random.default_rng(self.seed), n_boot=self.n_boot)
            attrs["bootstrap"] = bootstrap_record(
                samples, float(raw), seed=self.seed, resampled=["stimuli"],
                method="percentile bootstrap over stimuli (Nili et al. 2014: RDMs re-indexed by resampled conditions,"
                " pairs of a condition with its own copy left out); subjects fixed",
            )
        score = Score(raw=float(raw), error=float(error), values=[float(v) for v in per_subject], attrs=attrs,
                      bootstrap_samples=samples, items=rdm_items(target.stimulus_ids, model_rdm, target.rdms))
        ceiling = self.ceiling
        if ceiling is None:
            return dataclasses.replace(score, attrs={**attrs, "normalization": None})
        score = explained_variance(score, ceiling, regime=self.normalization)
        lower = float(ceiling.attrs["lower_bound_loo"])
        extra = {"ceiling_lower_bound": lower, "ceiled_by_lower_bound": float(raw) / lower if lower else math.nan}
        return dataclasses.replace(score, attrs={**score.attrs, **extra})

    def score_for_selection(self, assembly: xr.DataArray) -> float:
        """Spearman(model RDM, selection RDM) on :attr:`selection_stimulus_set`, for choosing a layer.

        Returns NaN for a layer whose RDM is undefined or constant (see :class:`DegenerateRDM`): such a layer
        cannot be the IT layer, and one degenerate candidate must not stop the selection.

        Raises
        ------
        ValueError
            Misaligned ids, NaN/inf or wrong dims/coords (as :meth:`score`); no selection data.
        """
        selection = self.selection_target
        if selection is None:
            raise ValueError(f"{self.identifier} has no selection data")
        try:
            model_rdm = self._model_rdm(assembly, selection.stimulus_ids)
        except DegenerateRDM:
            return math.nan
        return float(np.mean([rdm_similarity(model_rdm, subject_rdm) for subject_rdm in selection.rdms]))

    def info(self) -> dict[str, object]:
        """JSON-able description (identifier, version, kind, region, degrees, sizes, hashes)."""
        target = self.target
        selection = self.selection_stimulus_set
        return {
            "identifier": self.identifier,
            "version": self.version,
            "kind": self.kind,
            "region": self.region,
            "description": self.description,
            "citation": self.citation,
            "source_visual_degrees": self.source_visual_degrees,
            "n_stimuli": len(target.stimulus_ids),
            "n_subjects": len(target.subjects),
            "n_selection_stimuli": None if selection is None else len(selection),
            "metric": "rdm",
            "normalization": self.normalization if self.ceiling is not None else None,
            "data_hash": self.data_hash,
            "stimulus_set_hash": self.stimulus_set.hash,
        }
