"""The database of models, benchmarks, runs and scores."""
