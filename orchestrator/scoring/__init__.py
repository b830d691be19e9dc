"""Scoring as one unit: the job function (`score_model`, job.py), which registered benchmark version a score
belongs to (versions.py), one mapping from a failure to its record (failures.py), and one consumer of queued jobs
(queue.py) that `cortexbox worker`, ingestion and the web app share.

Imports run one way: this package imports the registry, the runtime and the cache; ingest, the web app and the
CLI import it, never the reverse.
"""

from cortexbox.orchestrator.scoring.failures import Failure, failure_of
from cortexbox.orchestrator.scoring.job import EventSink, ScoreOutcome, ScoreRequest, score_model
from cortexbox.orchestrator.scoring.queue import execute, run_queued_jobs
from cortexbox.orchestrator.scoring.versions import register_benchmark, resolve_benchmark, sync_builtins

__all__ = ["EventSink", "Failure", "ScoreOutcome", "ScoreRequest", "execute", "failure_of", "register_benchmark",
           "resolve_benchmark", "run_queued_jobs", "score_model", "sync_builtins"]
