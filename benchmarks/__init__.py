"""Data assemblies, stimulus sets, metrics, ceilings and benchmark definitions.

Public API::

    from cortexbox.benchmarks import get_benchmark, list_benchmarks, Score, StimulusSet, neuroid_assembly

    bench = get_benchmark("Cowley2023.V4-pls")
    for stimulus_id, image in bench.stimulus_set.iter_placed(target_visual_degrees=8):
        ...  # run the model, collect activations (n_stimuli, n_features)
    score = bench.score(neuroid_assembly(activations, stimulus_ids, layer="conv3", model="alexnet"))

Benchmarks are ``kind == "neural"`` (layer activations) or ``"behaviour"`` (a model output such as ``"logits"``),
of ``modality`` ``"image"`` or ``"text"``: :mod:`cortexbox.benchmarks.interface` has a Protocol for each, and
:func:`contract_problems` checks a benchmark against its own without loading data. :func:`tree` gives the
aggregation tree (parents average their children).
"""

from .aggregation import BENCHMARK_TREE, ENGINEERING, NOT_AGGREGATED, language_tree, tree, tree_leaves
from .assemblies import AssemblyValidationError, average_repetition, neuroid_assembly, validate_assembly
from .base import BenchmarkBase
from .benchmark import NeuralBenchmark
from .data import DATA_DIR_ENV, DataNotFoundError, resolve_data_dir
from .interface import (
    BehaviouralImageBenchmark,
    BehaviouralTextBenchmark,
    Benchmark,
    NeuralImageBenchmark,
    NeuralTextBenchmark,
    contract_problems,
    protocol_for,
)
from .language import LanguageBenchmark, TextStimulusSet
from .rdm_benchmark import RDMBenchmark
from .registry import BENCHMARKS, UnknownBenchmark, get_benchmark, list_benchmarks
from .score import Score
from .stimuli import StimulusSet

__all__ = [
    "BENCHMARKS",
    "BENCHMARK_TREE",
    "DATA_DIR_ENV",
    "ENGINEERING",
    "NOT_AGGREGATED",
    "AssemblyValidationError",
    "BehaviouralImageBenchmark",
    "BehaviouralTextBenchmark",
    "Benchmark",
    "BenchmarkBase",
    "DataNotFoundError",
    "LanguageBenchmark",
    "NeuralBenchmark",
    "NeuralImageBenchmark",
    "NeuralTextBenchmark",
    "RDMBenchmark",
    "Score",
    "StimulusSet",
    "TextStimulusSet",
    "UnknownBenchmark",
    "average_repetition",
    "contract_problems",
    "get_benchmark",
    "language_tree",
    "list_benchmarks",
    "neuroid_assembly",
    "protocol_for",
    "resolve_data_dir",
    "tree",
    "tree_leaves",
    "validate_assembly",
]
