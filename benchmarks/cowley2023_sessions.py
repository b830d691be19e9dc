"""Cowley et al. 2023 V4 over the authors' four held-out test sessions: ``Cowley2023.V4-sessions-{pls,ridge}``.

New identifiers, so that ``Cowley2023.V4-pls`` (version 1, session 210325 only) keeps its meaning and its scores.

* Sessions 190923 (monkey WE, 33 neurons x 1200 images), 201025 (PE, 89 x 1200), 210225 (PE, 55 x 1200) and 210325
  (PE, 50 x 640): the sessions the authors held out from training their models. Neurons and images differ across
  sessions, so each session is scored on its own: one :class:`~.metrics.CrossRegressedCorrelation` over that
  session's images and neurons (10 shuffle splits 90/10 of its images, ``random_state=1``, median over its neurons,
  mean over splits).
* Combination: ``raw`` = unweighted mean over the 4 sessions of their raw r; ``values`` = the 4 per-session raws;
  ``error`` = ``sqrt(sum(error_s**2)) / 4``, the standard error of a mean of 4 independent estimates (each
  ``error_s`` the session's standard error over splits). The spread between sessions is in
  ``attrs["between_session_std"]``; each session's full score in ``attrs["sessions"]``. Bootstrap interval
  (``attrs["bootstrap"]``): each session's stimuli and neurons resampled on their own stream (``[seed, k]``), the
  replicates averaged over sessions.
* Ceiling: only session 210325 has per-repeat responses; its internal consistency (split-half over repetitions,
  Spearman-Brown, Brain-Score's ``internal_consistency``, 0.759) is BORROWED for all four sessions, an approximation
  (other sessions differ in monkey, array and image type). ``ceiled = raw**2 / ceiling`` as ``Cowley2023.V4-pls``;
  per-session ``raw_s**2 / ceiling`` are in ``attrs["sessions"]``.
* Stimulus set: the union of the four sessions' images (4240), ids ``"<session>/imageNNNN"`` in session order.
* Layer selection: the V4 layer committed by ``Cowley2023.V4-pls`` (PLS on 300 fixed images of the validation
  session 210224, never scored) is used, as Brain-Score commits one layer per region for all its benchmarks:
  ``selection_source`` names that benchmark, and the orchestrator reuses its stored choice.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from functools import cached_property

import numpy as np
import xarray as xr

from .assemblies import check_stimulus_ids_match, validate_assembly
from .benchmark import NeuralBenchmark
from .cowley2023 import (
    CITATION,
    SELECTION_SESSION,
    SELECTION_SIZE,
    SOURCE_VISUAL_DEGREES,
    SOURCE_VISUAL_DEGREES_SOURCE,
    TEST_SESSION,
    _relative_files,
    load_raw_assembly,
    load_session_assembly,
    load_stimulus_set,
    selection_stimulus_indices,
)
from .dims import PRESENTATION, STIMULUS_ID
from .metrics.bootstrap import bootstrap_record
from .metrics.ceiling import InternalConsistency
from .metrics.items import mean_of_items
from .metrics.neural_predictivity import CrossRegressedCorrelation
from .metrics.normalization import explained_variance
from .recordings import Cowley2023V4PLSRecording
from .score import Score
from .shared import shared_instance
from .stimuli import StimulusSet

__all__ = ["TEST_SESSIONS", "Cowley2023V4SessionsPLS", "Cowley2023V4SessionsRidge"]

#: The authors' held-out test sessions, in the order of the stimulus set.
TEST_SESSIONS: tuple[str, ...] = ("190923", "201025", "210225", "210325")


class _BorrowedCeiling:
    """Internal consistency of session 210325, labelled as applying to every test session."""

    def __init__(self) -> None:
        self.inner = InternalConsistency()

    def __call__(self, assembly: xr.DataArray) -> Score:
        ceiling = self.inner(assembly)
        attrs = {
            **ceiling.attrs,
            "ceiling_session": TEST_SESSION,
            "applies_to_sessions": list(TEST_SESSIONS),
            "rule": f"borrowed: only session {TEST_SESSION} has per-repeat responses",
        }
        return dataclasses.replace(ceiling, attrs=attrs)


class _Cowley2023V4Sessions(NeuralBenchmark):
    version = 2  # v2: 11.2 degrees (SOURCE_VISUAL_DEGREES_SOURCE), v1 assumed 8
    region = "V4"
    source_visual_degrees = SOURCE_VISUAL_DEGREES
    citation = CITATION
    regression: str

    def _make_metric(self) -> CrossRegressedCorrelation:
        return CrossRegressedCorrelation(self.regression)  # type: ignore[arg-type]

    def _make_ceiling(self) -> Callable[[xr.DataArray], Score]:  # type: ignore[override]
        return _BorrowedCeiling()

    def _data_files(self) -> list[str]:
        files = [f for s in TEST_SESSIONS for f in _relative_files(s, raw=s == TEST_SESSION)]
        return files + _relative_files(SELECTION_SESSION, raw=False)

    def _load_target(self) -> xr.DataArray:
        raise NotImplementedError(f"{self.identifier} has one target per session: see session_assemblies")

    @property
    def target_assembly(self) -> xr.DataArray:  # type: ignore[override]
        raise AttributeError(f"{self.identifier} has one target per session: see session_assemblies")

    def _load_repetitions(self) -> xr.DataArray:
        return load_raw_assembly(self.data_dir, TEST_SESSION)

    @property
    def session_assemblies(self) -> dict[str, xr.DataArray]:
        """Repeat-averaged ``(presentation, neuroid)`` responses per test session."""
        return self._sessions[0]

    @cached_property
    def _sessions(self) -> tuple[dict[str, xr.DataArray], dict[str, slice]]:
        """The per-session targets and each session's rows in :attr:`stimulus_set`."""
        assemblies = {s: load_session_assembly(self.data_dir, s) for s in TEST_SESSIONS}
        spans, start = {}, 0
        for session, assembly in assemblies.items():
            spans[session] = slice(start, start + assembly.sizes[PRESENTATION])
            start = spans[session].stop
        return assemblies, spans

    def _load_stimulus_set(self) -> StimulusSet:
        images: dict[str, bytes] = {}
        for session, assembly in self.session_assemblies.items():
            stimuli = load_stimulus_set(self.data_dir, session, visual_degrees=self.source_visual_degrees)
            if stimuli.stimulus_ids != [str(s) for s in assembly[STIMULUS_ID].values]:
                raise ValueError(f"Cowley2023 {session}: images and responses do not line up")
            images.update(stimuli.iter_bytes())
        return StimulusSet.from_bytes("Cowley2023.test_sessions", images, visual_degrees=self.source_visual_degrees)

    @property
    def selection_source(self) -> NeuralBenchmark:
        """The benchmark whose selection data and metric commit the V4 layer (``Cowley2023.V4-pls``, the registry's
        shared instance for this data folder)."""
        return shared_instance(Cowley2023V4PLSRecording, data_dir=self.data_dir)

    def score_for_selection(self, assembly: xr.DataArray) -> float:
        return self.selection_source.score_for_selection(assembly)

    def _load_selection(self) -> tuple[StimulusSet, xr.DataArray]:
        assembly = load_session_assembly(self.data_dir, SELECTION_SESSION)
        assembly = assembly.isel({PRESENTATION: selection_stimulus_indices(assembly.sizes[PRESENTATION])})
        full = load_stimulus_set(self.data_dir, SELECTION_SESSION, visual_degrees=self.source_visual_degrees)
        ids = [str(s) for s in assembly[STIMULUS_ID].values]
        return full.subset(ids, identifier=f"Cowley2023.{SELECTION_SESSION}.selection{SELECTION_SIZE}"), assembly

    def score(self, assembly: xr.DataArray) -> Score:
        """Score activations to the union of the four sessions' images (see the module docstring).

        Parameters
        ----------
        assembly : xarray.DataArray
            Dims ``(presentation, neuroid)`` (a size-1 ``time_bin`` dim is squeezed), one row per stimulus of
            :attr:`stimulus_set` in any order (matched by ``stimulus_id``), unique ``neuroid_id``, finite values.

        Raises
        ------
        ValueError
            Missing, extra or duplicated stimulus ids, NaN/inf, or wrong dims/coords.
        """
        assembly = validate_assembly(self._squeeze_time(assembly))
        order = check_stimulus_ids_match(
            assembly[STIMULUS_ID].values, self.stimulus_set.stimulus_ids, what="model assembly"
        )
        targets, spans = self._sessions
        per_session: dict[str, Score] = {}
        for k, (session, target) in enumerate(targets.items()):
            rows = order[spans[session]]
            contiguous = len(rows) and (rows == np.arange(rows[0], rows[0] + len(rows))).all()
            selector = slice(int(rows[0]), int(rows[0]) + len(rows)) if contiguous else rows  # a view when in order
            # an independent bootstrap stream per session (sessions are independent recordings)
            per_session[session] = self.metric(
                assembly.isel({PRESENTATION: selector}), target, seed=[self.metric.seed, k]
            )
        raws = np.array([s.raw for s in per_session.values()])
        errors = np.array([s.error for s in per_session.values()])
        raw = float(raws.mean())
        error = float(math.sqrt(float((errors**2).sum())) / len(errors))
        ceiling = self._ceiling()
        sessions_attrs = {
            session: {
                "raw": s.raw,
                "error": s.error,
                "ceiled": s.raw**2 / ceiling.raw,
                "values": s.values,
                "n_stimuli": s.attrs["n_stimuli"],
                "n_neuroids": s.attrs["n_neuroids"],
                "n_nan_correlations": s.attrs["n_nan_correlations"],
            }
            for session, s in per_session.items()
        }
        first = next(iter(per_session.values()))
        metric_attrs = {
            k: v for k, v in first.attrs.items() if k not in ("neuroid_ids", "n_stimuli", "n_neuroids", "bootstrap")
        }
        samples = None
        if all(s.bootstrap_samples is not None for s in per_session.values()):
            samples = np.mean([np.asarray(s.bootstrap_samples) for s in per_session.values()], axis=0)  # replicate by replicate
            metric_attrs["bootstrap"] = bootstrap_record(
                samples, raw, seed=self.metric.seed, resampled=["stimuli", "neuroids"],
                method=first.attrs["bootstrap"]["method"] + "; each session resampled on its own (generator seeded"
                " [seed, session index]), replicates averaged over sessions",
            )
        combined = Score(
            raw=raw,
            error=error,
            values=raws.tolist(),
            attrs={
                **metric_attrs,
                "session_aggregation": "raw = unweighted mean over sessions; values = per-session raw",
                "error_combination": "sqrt(sum of squared per-session errors) / n_sessions",
                "between_session_std": float(raws.std()),
                "sessions": sessions_attrs,
            },
            bootstrap_samples=samples,
            # every session's per-stimulus items, their mean being raw: paired comparisons resample them all
            items=mean_of_items([s.items for s in per_session.values()])
            if all(s.items is not None for s in per_session.values()) else None,
        )
        score = explained_variance(combined, ceiling, regime=self.normalization)
        attrs = {
            "benchmark": self.identifier,
            "benchmark_version": self.version,
            "data_hash": self.data_hash,
            "stimulus_set_hash": self.stimulus_set.hash,
            "ceiling_rule": f"borrowed from session {TEST_SESSION} for all sessions",
            **score.attrs,
        }
        return dataclasses.replace(score, attrs=attrs)

    def info(self) -> dict[str, object]:
        """JSON-able description (identifier, version, kind, region, degrees, sizes per session, hashes)."""
        selection = self.selection_stimulus_set
        return {
            "identifier": self.identifier,
            "version": self.version,
            "kind": self.kind,
            "region": self.region,
            "description": self.description,
            "citation": self.citation,
            "source_visual_degrees": self.source_visual_degrees,
            "n_stimuli": len(self.stimulus_set),
            "sessions": {s: dict(a.sizes) for s, a in self.session_assemblies.items()},
            "n_selection_stimuli": None if selection is None else len(selection),
            "metric": self.metric.name,
            "metric_params": self.metric.get_params(),
            "normalization": self.normalization,
            "data_hash": self.data_hash,
            "stimulus_set_hash": self.stimulus_set.hash,
        }


_DESCRIPTION = (
    "Macaque V4 (Utah arrays) spike counts from Cowley et al. 2023, the authors' four held-out test sessions: "
    "190923 (monkey WE, 33 neurons x 1200 images), 201025 (PE, 89 x 1200), 210225 (PE, 55 x 1200), all colour "
    "natural photographs, and 210325 (PE, 50 x 640, Bashivan et al. 2019 rendered objects); repeat-averaged. "
    "Each session is scored on its own with Brain-Score '{metric}' ({regression}, 10 shuffle splits 90/10 of the "
    "session's images, random_state=1, Pearson r per neuron, median over neurons, mean over splits); raw = "
    "unweighted mean over the 4 sessions; error = sqrt(sum of squared per-session errors) / 4. Ceiling: only 210325 "
    "has per-repeat responses, so its split-half internal consistency (Spearman-Brown) is BORROWED for all four "
    "sessions (an approximation). Ceiled = raw**2 / ceiling; per-session values in the score's attrs. Layer "
    "selection: 300 fixed images of the validation session 210224, never scored. Stimulus set: the union of the "
    "four sessions' 4240 images. Images: " + SOURCE_VISUAL_DEGREES_SOURCE + "."
)


class Cowley2023V4SessionsPLS(_Cowley2023V4Sessions):
    """``Cowley2023.V4-sessions-pls``: PLS (25 components) per test session, averaged."""

    identifier = "Cowley2023.V4-sessions-pls"
    regression = "pls"
    description = _DESCRIPTION.format(metric="pls", regression="PLSRegression(25, scale=False)")


class Cowley2023V4SessionsRidge(_Cowley2023V4Sessions):
    """``Cowley2023.V4-sessions-ridge``: ridge regression (alpha 1) per test session, averaged."""

    identifier = "Cowley2023.V4-sessions-ridge"
    regression = "ridge"
    description = _DESCRIPTION.format(metric="ridge", regression="Ridge(alpha=1)")
