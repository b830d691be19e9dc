"""Data assemblies, stimulus sets, metrics, ceilings and benchmark definitions."""
