"""The registry's side of distributed scoring (orchestrator/scoring/workers.py), without a broker or Docker: claims,
leases, recovery of lost workers, cancel, retry classes, the queue report."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from cortexbox.orchestrator.errors import FailureClass, ModelFailure
from cortexbox.orchestrator.scoring import failure_of
from cortexbox.orchestrator.scoring import workers
from cortexbox.registry import Benchmark, Registry
from cortexbox.registry.models import utcnow


@pytest.fixture
def jobs(tmp_path):
    registry = Registry(f"sqlite:///{tmp_path / 'r.db'}")
    model = registry.upsert_model("sha256:" + "1" * 64, "good", "1", "cortexbox/good", {"modality": "image"})
    _, rows = registry.register_benchmark_with_jobs(Benchmark(identifier="Smith2026.V4-pls", version=1, data_hash="a" * 64), [model.id])
    return registry, rows[0].id, model


def test_one_job_per_build_and_version(jobs):
    from sqlalchemy.exc import IntegrityError

    registry, _, model = jobs
    bench = registry.benchmark_versions("Smith2026.V4-pls")[0]
    with pytest.raises(IntegrityError):
        registry.register_benchmark_with_jobs(Benchmark(identifier="Other2026.V4-pls", version=1, data_hash="b" * 64),
                                              [model.id, model.id])
    assert [b.identifier for b in registry.benchmarks()] == [bench.identifier]  # all or nothing


def test_of_two_claims_one_wins_and_a_stale_lease_can_be_taken(jobs):
    registry, job_id, _ = jobs
    assert workers.claim(registry, job_id, "a@h:1", lease_s=60)
    assert not workers.claim(registry, job_id, "b@h:2", lease_s=60)  # held, heartbeat fresh
    workers._update(registry, job_id, heartbeat_at=utcnow() - timedelta(seconds=61))
    assert workers.claim(registry, job_id, "b@h:2", lease_s=60)
    row = workers.job_row(registry, job_id)[0]
    assert (row.worker, row.attempts, row.status) == ("b@h:2", 2, "running")


def test_an_expired_lease_is_requeued_then_failed_as_lost(jobs):
    registry, job_id, _ = jobs
    assert workers.claim(registry, job_id, "a@h:1", lease_s=5)
    assert workers.recover(registry, None, lease_s=5) == []  # fresh
    workers._update(registry, job_id, heartbeat_at=utcnow() - timedelta(seconds=6))
    assert workers.recover(registry, None, lease_s=5) == [job_id]
    row = workers.job_row(registry, job_id)[0]
    assert (row.status, row.failure_class, row.task_id) == ("queued", "lost", None)
    workers._update(registry, job_id, status="running", attempts=workers.MAX_ATTEMPTS, heartbeat_at=utcnow() - timedelta(seconds=6))
    assert workers.recover(registry, None, lease_s=5) == []
    assert workers.job_row(registry, job_id)[0].status == "failed"  # lost too often: final


def test_cancel_of_a_queued_job_ends_it_and_a_delivery_skips_it(jobs):
    registry, job_id, _ = jobs
    assert workers.request_cancel(registry, job_id) == "cancelled"
    assert workers.run_job(registry, job_id, worker="a@h:1", lease_s=5)["status"] == "cancelled"
    assert workers.job_row(registry, job_id)[0].attempts == 0  # never claimed


def test_retries_by_failure_class():
    def policy(e):
        return workers.retry_policy(failure_of(e))

    assert policy(ModelFailure(FailureClass.LOST, "worker gone")) == "transient"
    assert policy(ConnectionRefusedError("docker.sock")) == "transient"  # the engine restarted
    for c in (FailureClass.MODEL_ERROR, FailureClass.BAD_OUTPUT, FailureClass.PROTOCOL_VIOLATION, FailureClass.CRASH):
        assert policy(ModelFailure(c, "x")) == "never"
    assert policy(ModelFailure(FailureClass.OUT_OF_MEMORY, "x")) == "out_of_memory"  # stored, not retried
    assert policy(ValueError("a bug")) == "never"
    assert [workers.backoff_s(n) for n in (1, 2, 3, 10)] == [5, 10, 20, 300]


def test_the_queue_report_on_the_web(jobs):
    from cortexbox.orchestrator.web import create_app

    registry, job_id, _ = jobs
    workers.claim(registry, job_id, "a@h:1", lease_s=60)
    with TestClient(create_app(registry.url)) as client:
        report = client.get("/api/queue").json()
    assert report["broker"] is None and report["counts"] == {"running": 1}
    (item,) = report["workers"]["a@h:1"]
    assert item["job_id"] == job_id and item["status"] == "running" and 0 <= item["heartbeat_age_s"] < 30
