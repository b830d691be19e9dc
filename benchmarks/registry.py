"""The benchmarks cortexbox knows, in one explicit dict (no discovery by import side effects)."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from typing import cast

from .brennan2016 import ROIS, Brennan2016Ridge
from .cowley2023_sessions import Cowley2023V4SessionsPLS, Cowley2023V4SessionsRidge
from .futrell2018 import Futrell2018Pearsonr
from .geirhos2019 import (
    Geirhos2019CueConflictShapeBias,
    Geirhos2019EdgesErrorConsistency,
    Geirhos2019EdgesTop1,
    Geirhos2019SilhouettesErrorConsistency,
    Geirhos2019SilhouettesTop1,
)
from .interface import Benchmark
from .kriegeskorte2008 import Kriegeskorte2008HumanIT, Kriegeskorte2008Judgements, Kriegeskorte2008MonkeyIT
from .language import LanguageBenchmark
from .naturalstories_accuracy import NaturalStoriesAccuracy
from .reading_times import Futrell2018SpilloverDLL
from .recordings import Cowley2023V4PLSRecording
from .shared import shared_instance
from .syntaxgym import SUITES, SyntaxGym2020, SyntaxGymSuite

__all__ = ["BENCHMARKS", "UnknownBenchmark", "get_benchmark", "language_benchmarks", "list_benchmarks"]


def language_benchmarks() -> dict[str, Callable[..., LanguageBenchmark]]:
    """identifier -> factory (called with ``data_dir`` and ``cache_dir``) of every registered language benchmark."""
    return {
        Futrell2018Pearsonr.identifier: Futrell2018Pearsonr,
        Futrell2018SpilloverDLL.identifier: Futrell2018SpilloverDLL,
        NaturalStoriesAccuracy.identifier: NaturalStoriesAccuracy,
        **{f"Brennan2016.{roi}-ridge": partial(Brennan2016Ridge, roi) for roi in ROIS},
        SyntaxGym2020.identifier: SyntaxGym2020,
        **{f"syntaxgym-{suite}": partial(SyntaxGymSuite, suite) for suite in SUITES},
    }


#: identifier -> benchmark class (constructed with ``data_dir`` and ``cache_dir``); see :mod:`.interface`.
BENCHMARKS: dict[str, Callable[..., Benchmark]] = {
    cls.identifier: cast("Callable[..., Benchmark]", cls)  # conformance: tests/benchmarks/test_benchmarks_contract.py
    for cls in (
        Cowley2023V4PLSRecording,  # Cowley2023.V4-pls, through read_recording (see .recordings)
        Cowley2023V4SessionsPLS,
        Cowley2023V4SessionsRidge,
        Kriegeskorte2008HumanIT,
        Kriegeskorte2008MonkeyIT,
        Kriegeskorte2008Judgements,
        Geirhos2019EdgesErrorConsistency,
        Geirhos2019SilhouettesErrorConsistency,
        Geirhos2019EdgesTop1,
        Geirhos2019SilhouettesTop1,
        Geirhos2019CueConflictShapeBias,
    )
}

# Language benchmarks (text models): Futrell2018, Brennan2016 ROIs, SyntaxGym 2020; see .language.
BENCHMARKS.update(language_benchmarks())


class UnknownBenchmark(KeyError):
    """No benchmark has the requested identifier; the message lists the known ones."""

    def __init__(self, identifier: str) -> None:
        self.identifier = identifier
        self.known = list_benchmarks()
        super().__init__(f"unknown benchmark {identifier!r}; known benchmarks: {', '.join(self.known)}")

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


def list_benchmarks() -> list[str]:
    """Identifiers of all registered benchmarks, sorted."""
    return sorted(BENCHMARKS)


def get_benchmark(
    identifier: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Benchmark:
    """Return the benchmark ``identifier`` (one shared instance per identifier, data_dir and cache_dir).

    Sharing the instance means its ceiling, data hash and loaded assemblies are computed once per process.

    Raises
    ------
    UnknownBenchmark
        A ``KeyError`` whose message lists the known identifiers.
    """
    if identifier not in BENCHMARKS:
        raise UnknownBenchmark(identifier)
    return shared_instance(BENCHMARKS[identifier], identifier, data_dir=data_dir, cache_dir=cache_dir)
