"""The one consumer of scoring jobs: `execute` runs one job and turns its end into one result record, whoever asked
for it (`cortexbox worker`, an ingestion or `benchmarks sync` scoring what it queued, the web app's runs).

A job is a ScoreRequest, and optionally the registry's ScoreJob row it came from (with its model and benchmark
version). Scoring always uses a benchmark's latest version, so a job queued for an older version is marked
``superseded`` instead of being scored (the newer version queued its own job for the model when it was
registered), and a job whose scoring registered a newer version on the way is marked ``superseded`` with that run:
a job never claims a score that belongs to another version.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from cortexbox.orchestrator import image_registry
from cortexbox.orchestrator.scoring import job as job_module
from cortexbox.orchestrator.scoring.failures import failure_of
from cortexbox.orchestrator.scoring.job import DuplicateScore, EventSink, ScoreRequest
from cortexbox.registry import Benchmark, Model, Registry, ScoreJob
from cortexbox.registry.models import utcnow

#: A queued job as the registry lists it (Registry.queued_jobs).
QueuedJob = tuple[ScoreJob, Model, Benchmark]
#: score_model's signature (replaceable in tests).
ScoreFunction = Callable[..., Any]

logger = logging.getLogger(__name__)


def execute(request: ScoreRequest, *, registry: Registry, events: EventSink | None = None, queued: QueuedJob | None = None,
            score: ScoreFunction | None = None, claimed: bool = False) -> dict[str, Any]:
    """Scores ``request`` and returns its result record: ``status`` succeeded | superseded | failed, with ``run_id``,
    ``scored_version``, ``raw`` and ``ceiled``, or the failure (``failure``: scoring/failures.py's record, and
    ``error``). A queued job's row follows (running, unless a worker ``claimed`` it already; then its end, except a
    claimed job's failure, which its worker records: cancelled, queued again or failed, in one write). Any
    Exception is a failed result, so one job never stops the others; an interrupt puts a queued job back in the
    queue and is raised."""
    score = score or job_module.score_model
    result: dict[str, Any] = {"model": request.image or request.endpoint, "benchmark": request.benchmark}
    if queued is not None:
        row, model, bench = queued
        result |= {"model": model.name, "version": bench.version}
        if not claimed:
            registry.update_job(row, status="running", started_at=utcnow())
    try:
        outcome = score(request, registry=registry, events=events)
    except KeyboardInterrupt:
        if queued is not None:
            registry.update_job(queued[0], status="queued")
        raise
    except Exception as e:  # noqa: BLE001 - recorded with its class; the consumer goes on
        failure = failure_of(e)
        if failure.kind == "internal":  # a bug or the platform: its traceback goes to this process's log
            logger.exception("scoring %s on %s failed", result["model"], request.benchmark)
        run_id = getattr(e, "run_id", None)
        if isinstance(e, DuplicateScore):  # another delivery of this job stored its score: the job stands
            return result | {"status": "succeeded", "duplicate": True, "run_id": run_id}
        if queued is not None and not claimed:
            registry.update_job(queued[0], status="failed", failure_class=failure.failure_class, error=failure.error,
                                finished_at=utcnow(), **({"run_id": run_id} if run_id else {}))
        return result | {"status": "failed", "failure": failure.to_dict(),
                         "error": f"{failure.failure_class}: {failure.error}" if failure.failure_class else failure.error}
    status = "succeeded"
    if queued is not None and outcome.benchmark_version != queued[2].version:
        status = "superseded"
    if queued is not None:
        registry.update_job(queued[0], status=status, run_id=outcome.run_id, finished_at=utcnow())
    return result | {"status": status, "run_id": outcome.run_id, "scored_version": outcome.benchmark_version,
                     "raw": outcome.raw, "ceiled": outcome.ceiled}


def run_queued_jobs(registry: Registry | None = None, events: EventSink | None = None, *,
                    score: ScoreFunction | None = None) -> list[dict[str, Any]]:
    """Scores every queued job of the registry, oldest first, with `execute`; one failure does not stop the others.
    A job of an older benchmark version is marked ``superseded`` (``by_version``) without being scored."""
    registry = registry or Registry()
    results = []
    for queued in registry.queued_jobs():
        row, model, bench = queued
        latest = max(b.version for b in registry.benchmark_versions(bench.identifier))
        if bench.version != latest:
            registry.update_job(row, status="superseded")
            results.append({"model": model.name, "benchmark": bench.identifier, "version": bench.version,
                            "status": "superseded", "by_version": latest})
            continue
        # A model pushed to our registry is run by its reference by digest, so a worker on another engine pulls it.
        image = model.image_ref if image_registry.is_digest_reference(model.image_ref) else model.digest
        request = ScoreRequest(benchmark=bench.identifier, image=image, database_url=registry.url)
        results.append(execute(request, registry=registry, events=events, queued=queued, score=score))
    return results
