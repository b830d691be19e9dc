"""Data assemblies, stimulus sets, metrics, ceilings and benchmark definitions.

Public API::

    from cortexbox.benchmarks import get_benchmark, list_benchmarks, Score, StimulusSet, neuroid_assembly

    bench = get_benchmark("Cowley2023.V4-pls")
    for stimulus_id, image in bench.stimulus_set.iter_placed(target_visual_degrees=8):
        ...  # run the model, collect activations (n_stimuli, n_features)
    score = bench.score(neuroid_assembly(activations, stimulus_ids, layer="conv3", model="alexnet"))
"""

from .assemblies import AssemblyValidationError, average_repetition, neuroid_assembly, validate_assembly
from .benchmark import NeuralBenchmark
from .data import DATA_DIR_ENV, DataNotFoundError, resolve_data_dir
from .language import LanguageBenchmark, TextStimulusSet, language_tree
from .registry import BENCHMARKS, UnknownBenchmark, get_benchmark, list_benchmarks
from .score import Score
from .stimuli import StimulusSet

__all__ = [
    "BENCHMARKS",
    "DATA_DIR_ENV",
    "AssemblyValidationError",
    "DataNotFoundError",
    "LanguageBenchmark",
    "NeuralBenchmark",
    "Score",
    "StimulusSet",
    "TextStimulusSet",
    "UnknownBenchmark",
    "average_repetition",
    "get_benchmark",
    "language_tree",
    "list_benchmarks",
    "neuroid_assembly",
    "resolve_data_dir",
    "validate_assembly",
]
