"""Data assemblies, stimulus sets, metrics, ceilings and benchmark definitions."""

from .assemblies import AssemblyValidationError, average_repetition, neuroid_assembly, validate_assembly
from .score import Score

__all__ = ["AssemblyValidationError", "Score", "average_repetition", "neuroid_assembly", "validate_assembly"]
