"""The database of models, benchmarks, layer commitments, runs and their events, and scores (sqlmodel)."""

from cortexbox.registry.models import Benchmark, LayerCommitment, Model, Run, RunEvent, Score, ScoreJob
from cortexbox.registry.store import LeaderboardRow, Registry, default_url

__all__ = ["Benchmark", "LayerCommitment", "Model", "Run", "RunEvent", "Score", "ScoreJob", "LeaderboardRow", "Registry", "default_url"]
