"""Base class for neural-predictivity benchmarks (model features -> recorded neurons)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from functools import cached_property
from pathlib import Path

import xarray as xr

from .base import BenchmarkBase, Kind
from .dims import TIME_BIN
from .metrics.ceiling import InternalConsistency
from .metrics.neural_predictivity import CrossRegressedCorrelation
from .metrics.normalization import Normalization, explained_variance
from .score import Score
from .stimuli import StimulusSet

logger = logging.getLogger(__name__)

__all__ = ["NeuralBenchmark"]

#: Bumped when the ceiling computation changes, so on-disk cached ceilings from older code are not reused.
CEILING_CACHE_VERSION = 1


class NeuralBenchmark(BenchmarkBase):
    """A neural predictivity benchmark: a recording, the images shown, a metric, a ceiling, a normalisation.

    Subclasses set the class attributes and implement the ``_load_*`` methods. Everything is loaded lazily and
    cached on the instance; the ceiling may also be cached on disk under ``cache_dir``.

    Parameters
    ----------
    data_dir : path, optional
        Root of the shared data (see :func:`cortexbox.benchmarks.data.resolve_data_dir`).
    cache_dir : path, optional
        Directory for the on-disk ceiling cache (``<cache_dir>/ceilings/*.json``); no disk cache when ``None``.
    """

    kind: Kind = "neural"
    source_visual_degrees: float
    normalization: Normalization = "r2_over_ceiling"

    @property
    def selection_source(self) -> NeuralBenchmark | None:
        """The benchmark whose selection data (and stored layer choice) this one borrows; None: its own."""
        return None

    def __init__(
        self,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(data_dir=data_dir, cache_dir=cache_dir)
        self.metric = self._make_metric()
        self.ceiling_func = self._make_ceiling()

    # to implement -------------------------------------------------------------------------------------------
    def _make_metric(self) -> CrossRegressedCorrelation:
        return CrossRegressedCorrelation()

    def _make_ceiling(self) -> InternalConsistency:
        return InternalConsistency()

    def _load_target(self) -> xr.DataArray:
        """The scoring target: repeat-averaged ``(presentation, neuroid)`` responses."""
        raise NotImplementedError

    def _load_repetitions(self) -> xr.DataArray:
        """Per-trial responses with a ``repetition`` coordinate, for the ceiling."""
        raise NotImplementedError

    def _load_stimulus_set(self) -> StimulusSet:
        raise NotImplementedError

    def _load_selection(self) -> tuple[StimulusSet, xr.DataArray] | None:
        """Images and responses used to choose a model layer, or ``None``."""
        return None

    # data ---------------------------------------------------------------------------------------------------
    @property
    def metric_name(self) -> str:  # type: ignore[override]
        """The metric library's name of :attr:`metric` (``"pls"``, ``"ridge"``)."""
        return self.metric.name

    @cached_property
    def target_assembly(self) -> xr.DataArray:
        """Repeat-averaged responses, dims ``(presentation, neuroid)``, one presentation per stimulus."""
        return self._load_target()

    @cached_property
    def repetition_assembly(self) -> xr.DataArray:
        """Per-trial responses (one presentation per existing repeat) with a ``repetition`` coordinate."""
        return self._load_repetitions()

    @cached_property
    def stimulus_set(self) -> StimulusSet:
        """The images scored, in the recording's order."""
        return self._load_stimulus_set()

    @cached_property
    def _selection(self) -> tuple[StimulusSet, xr.DataArray] | None:
        return self._load_selection()

    @property
    def selection_stimulus_set(self) -> StimulusSet | None:
        """Images for choosing a model layer; none of them is in :attr:`stimulus_set`."""
        return None if self._selection is None else self._selection[0]

    @property
    def selection_assembly(self) -> xr.DataArray | None:
        """Responses to :attr:`selection_stimulus_set`."""
        return None if self._selection is None else self._selection[1]

    # ceiling ------------------------------------------------------------------------------------------------
    def _ceiling_cache_path(self) -> Path | None:
        if self.cache_dir is None:
            return None
        name = f"{self.identifier}--v{self.version}--{self.data_hash[:16]}--c{CEILING_CACHE_VERSION}.json"
        return self.cache_dir / "ceilings" / name

    def _compute_ceiling(self) -> Score:
        """The ceiling (read from / written to ``cache_dir`` when given)."""
        path = self._ceiling_cache_path()
        if path is not None and path.is_file():
            logger.info("reading cached ceiling of %s from %s", self.identifier, path)
            return Score.from_dict(json.loads(path.read_text()))
        logger.info("computing ceiling of %s", self.identifier)
        ceiling = self._labelled(self.ceiling_func(self.repetition_assembly))
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as handle:
                json.dump(ceiling.to_dict(include_split_neuroid_values=True), handle)
            os.replace(handle.name, path)
        return ceiling

    # scoring ------------------------------------------------------------------------------------------------
    @staticmethod
    def _squeeze_time(assembly: xr.DataArray) -> xr.DataArray:
        if isinstance(assembly, xr.DataArray) and TIME_BIN in assembly.dims and assembly.sizes[TIME_BIN] == 1:
            return assembly.squeeze(TIME_BIN, drop=True)
        return assembly

    def score(self, assembly: xr.DataArray) -> Score:
        """Score a model's activations to :attr:`stimulus_set`.

        Parameters
        ----------
        assembly : xarray.DataArray
            Dims ``(presentation, neuroid)`` (a size-1 ``time_bin`` dim is squeezed), one row per stimulus of
            :attr:`stimulus_set` in any order (matched by ``stimulus_id``), unique ``neuroid_id``, finite values.

        Returns
        -------
        Score
            ``raw`` (mean over splits of the median per-neuroid r), ``error``, ``ceiling``, ``ceiled``, per-split
            ``values``, and ``attrs`` naming the benchmark, metric, normalisation and ceiling error.

        Raises
        ------
        ValueError
            Missing or extra stimulus ids, duplicated ids, NaN/inf, or wrong dims/coords.
        """
        raw = self.metric(self._squeeze_time(assembly), self.target_assembly)
        score = explained_variance(raw, self._ceiling(), regime=self.normalization)
        return dataclasses.replace(score, attrs={**self._provenance(), **score.attrs})

    def score_for_selection(self, assembly: xr.DataArray) -> float:
        """The metric's raw score on the selection data (no ceiling), for choosing a layer.

        Parameters
        ----------
        assembly : xarray.DataArray
            Activations to :attr:`selection_stimulus_set`, in the same format as for :meth:`score`.

        Raises
        ------
        ValueError
            As :meth:`score`; also if the benchmark has no selection data.
        """
        if self.selection_assembly is None:
            raise ValueError(f"{self.identifier} has no selection data")
        score = self.metric(self._squeeze_time(assembly), self.selection_assembly, bootstrap=False)  # no interval needed
        return float(score.raw)

    def info(self) -> dict[str, object]:
        """JSON-able description (identifier, version, region, degrees, sizes, hashes)."""
        target = self.target_assembly
        selection = self.selection_stimulus_set
        return {
            "identifier": self.identifier,
            "version": self.version,
            "region": self.region,
            "description": self.description,
            "citation": self.citation,
            "source_visual_degrees": self.source_visual_degrees,
            "n_stimuli": int(target.sizes["presentation"]),
            "n_neuroids": int(target.sizes["neuroid"]),
            "n_selection_stimuli": None if selection is None else len(selection),
            "metric": self.metric.name,
            "metric_params": self.metric.get_params(),
            "normalization": self.normalization,
            "data_hash": self.data_hash,
            "stimulus_set_hash": self.stimulus_set.hash,
        }
