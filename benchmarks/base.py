"""The scaffolding every benchmark class shares (data folders, data hash, stimulus set, ceiling, provenance)."""

from __future__ import annotations

import dataclasses
import os
from functools import cached_property
from pathlib import Path
from typing import Literal

import xarray as xr

from .data import configured_data_dir, files_hash, resolve_data_dir
from .score import Score

__all__ = ["BenchmarkBase", "Kind", "Modality"]

#: ``"neural"``: scores a committed layer's activations; ``"behaviour"``: a model output such as logits.
Kind = Literal["neural", "behaviour"]
#: What the model is sent: placed images or text parts.
Modality = Literal["image", "text"]


class BenchmarkBase:
    """Base of the benchmark classes (:class:`~.NeuralBenchmark`, :class:`~.RDMBenchmark`, the Geirhos benchmarks,
    :class:`~.LanguageBenchmark`): what :mod:`.interface` asks of every benchmark and each of them used to repeat.

    Subclasses set the class attributes and implement :meth:`_data_files`, ``stimulus_set`` (a cached property
    with its type: images or text), :meth:`score` and :meth:`info`, and :meth:`_compute_ceiling` where the data
    have a ceiling. The data hash and ceiling are computed once per instance, when first read.

    Parameters
    ----------
    data_dir : path, optional
        Root of the shared data (see :func:`cortexbox.benchmarks.data.resolve_data_dir`).
    cache_dir : path, optional
        Folder for on-disk caches; benchmarks that need none accept it for the registry's uniform constructor.
    """

    identifier: str
    version: int
    kind: Kind
    modality: Modality = "image"
    region: str
    description: str
    citation: str
    #: The metric library's name of the metric (``""``: none); the registered definition records it.
    metric_name: str = ""
    #: The ingested recording's folder; ``None`` for a built-in benchmark.
    recording_folder: Path | None = None

    def __init__(
        self,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self._data_dir = configured_data_dir(data_dir)
        self.cache_dir = None if cache_dir is None else Path(cache_dir)

    @property
    def data_dir(self) -> Path:
        """The data folder; without one configured, reading it raises ``DataNotFoundError`` (so a benchmark can be
        made and described where there is no data, e.g. in the web image)."""
        return resolve_data_dir(self._data_dir)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(identifier={self.identifier!r}, version={self.version})"

    # to implement -------------------------------------------------------------------------------------------
    def _data_files(self) -> list[str]:
        """Paths, relative to ``data_dir``, of every file the benchmark reads."""
        raise NotImplementedError

    def _compute_ceiling(self) -> Score | None:
        """The ceiling; ``None`` (the default): the benchmark has none."""
        return None

    def score(self, assembly: xr.DataArray) -> Score:
        raise NotImplementedError

    def info(self) -> dict[str, object]:
        raise NotImplementedError

    # shared -------------------------------------------------------------------------------------------------
    @cached_property
    def data_hash(self) -> str:
        """SHA-256 (hex) over the exact files the benchmark reads (:func:`~cortexbox.benchmarks.data.files_hash`)."""
        return files_hash(self.data_dir, self._data_files())

    @cached_property
    def ceiling(self) -> Score | None:
        """:meth:`_compute_ceiling`, once per instance."""
        return self._compute_ceiling()

    def _ceiling(self) -> Score:
        """The ceiling, for a family that always has one (its scores are normalised by it)."""
        ceiling = self.ceiling
        if ceiling is None:
            raise ValueError(f"{self.identifier} has no ceiling to normalise by")
        return ceiling

    def _provenance(self) -> dict[str, object]:
        """The attrs every score carries: which benchmark, code version, data and stimuli it was computed on."""
        return {
            "benchmark": self.identifier,
            "benchmark_version": self.version,
            "data_hash": self.data_hash,
            "stimulus_set_hash": self.stimulus_set.hash,  # type: ignore[attr-defined]  # each family's, typed
        }

    def _labelled(self, ceiling: Score) -> Score:
        """``ceiling`` with attrs naming this benchmark and its data."""
        return dataclasses.replace(ceiling, attrs={**ceiling.attrs, "benchmark": self.identifier, "data_hash": self.data_hash})
