"""Control of scoring from the web app: with a broker (a real Redis) `POST /api/runs` queues one job per (model
build, benchmark version) and the live batch follows the run a worker makes of it; cancel from the web takes the
CLI's path; without a broker a run started here stops when cancelled. Plus who owns a process
(orchestrator/owner.py), which tells the reapers a dead worker container's leftovers from a live one's.
"""

from __future__ import annotations

import json
import os
import threading
import time

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from cortexbox.orchestrator import owner
from cortexbox.registry import Registry, ScoreJob

BENCHMARK = "Kriegeskorte2008.hIT-rdm"
OTHER = "Kriegeskorte2008.mIT-rdm"


def _sse(text: str) -> list[tuple[str, dict]]:
    out = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            out.append((fields["event"], json.loads(fields["data"])))
    return out


def _wait(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


# -- who owns a process ----------------------------------------------------------------------------------------------
def test_a_host_process_is_named_by_host_and_pid_and_judged_only_here(monkeypatch):
    import socket
    import subprocess
    import sys

    assert owner.container_id() is None  # the test suite runs on the host
    assert owner.namespace() == socket.gethostname() and owner.tag() == f"{socket.gethostname()}:{os.getpid()}"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert owner.alive(owner.namespace(), os.getpid()) is True
    assert owner.alive(owner.namespace(), dead.pid) is False and owner.gone(owner.namespace(), dead.pid)
    assert owner.alive("another-host", dead.pid) is None and not owner.gone("another-host", dead.pid)
    # A worker container's pid means nothing here, and without an engine to ask it is never declared gone.
    assert owner.alive("ctr-0123456789ab-s2026", 7) is None and not owner.gone("ctr-0123456789ab-s2026", 7)
    # Inside a container, an earlier start of the same container is dead, whatever its pid.
    monkeypatch.setattr(owner, "namespace", lambda: "ctr-0123456789ab-s2027")
    assert owner.alive("ctr-0123456789ab-s2026", 1) is False
    assert owner.alive("ctr-0123456789ab-t55", 1) is None  # a token of the other kind: cannot tell
    assert owner.alive("ctr-ba9876543210-s2026", 1) is None


@pytest.mark.docker
def test_the_engine_judges_a_worker_container_and_reap_removes_only_a_dead_ones_leftovers(docker_client, base_image):
    """A model container whose owner is a worker container on the same engine is removed once that container is
    gone or started again, and kept while it runs (the label a worker container writes: ctr-<id>-s<start>:<pid>)."""
    from cortexbox.orchestrator.runtime import LABEL_OWNER, reap_orphans

    tag = f"cbx-owner-test-{os.getpid()}"
    made = []

    def run(name: str, **labels):
        c = docker_client.containers.run(base_image, ["sleep", "60"], name=f"{tag}-{name}", detach=True, labels=labels,
                                         network_mode="none")
        made.append(c)
        return c

    def space(c) -> str:
        c.reload()
        return f"ctr-{c.id[:12]}-s{''.join(ch for ch in c.attrs['State']['StartedAt'] if ch.isdigit())}"

    try:
        live_worker, dead_worker, restarted_worker = run("w1"), run("w2"), run("w3")
        spaces = {c.name: space(c) for c in (live_worker, dead_worker, restarted_worker)}
        assert owner.alive(spaces[live_worker.name], 7, docker_client) is True
        kept = run("m1", **{LABEL_OWNER: f"{spaces[live_worker.name]}:7"})
        orphan = run("m2", **{LABEL_OWNER: f"{spaces[dead_worker.name]}:7"})
        orphan2 = run("m3", **{LABEL_OWNER: f"{spaces[restarted_worker.name]}:7"})
        dead_worker.remove(force=True)
        restarted_worker.restart(timeout=0)
        assert owner.alive(spaces[dead_worker.name], 7, docker_client) is False
        assert owner.alive(spaces[restarted_worker.name], 7, docker_client) is False
        reap_orphans(docker_client)
        names = {c.name for c in docker_client.containers.list(all=True, filters={"name": tag})}
        assert kept.name in names and orphan.name not in names and orphan2.name not in names
    finally:
        for c in made:
            try:
                c.remove(force=True)
            except Exception:  # noqa: BLE001 - reaped by the test already
                pass


# -- the web app with a broker ---------------------------------------------------------------------------------------
@pytest.fixture
def broker(monkeypatch):
    import shutil
    import tempfile
    from pathlib import Path

    from tests.orchestrator.test_workers import REDIS, RedisServer

    if REDIS is None:
        pytest.skip("redis-server is not installed (scripts/setup.sh installs it)")
    folder = Path(tempfile.mkdtemp(prefix="cbx-redis-"))
    server = RedisServer(folder)
    server.start()
    monkeypatch.setenv("CORTEXBOX_BROKER_URL", server.url)
    yield server
    server.kill()
    shutil.rmtree(folder, ignore_errors=True)


def _fake_worker_score(request, *, registry, events=None, **_):
    """Stands in for score_model in a worker: a run linked to its job, its events stored as score_model stores them."""
    from cortexbox.orchestrator.run_events import RunEventLog, owner as run_owner
    from cortexbox.orchestrator.scoring.job import ScoreOutcome, _link_job

    run = registry.start_run(request.image, request.benchmark)
    _link_job(registry, request.job_id, run.id)
    log = RunEventLog(registry, run.id, events, benchmark=request.benchmark, min_interval=0)
    log("status", {"status": "running", **run_owner()})
    for done in (46, 92):
        time.sleep(0.3)
        log("progress", {"done": done, "total": 92, "label": "benchmark"})
    outcome = ScoreOutcome(run_id=run.id, model="pixels-fake", digest="sha256:" + "1" * 64, benchmark=request.benchmark,
                           benchmark_version=registry.benchmark_versions(request.benchmark)[-1].version, raw=0.2, error=0.01, ceiling=0.8, ceiled=0.25, layer="l1",
                           from_cache=False, timings={}, provenance={})
    log.finish("succeeded", ("score", {k: v for k, v in outcome.to_dict().items() if k != "provenance"}))
    registry.update_run(run, status="succeeded")
    return outcome


@pytest.mark.data
def test_post_runs_enqueues_once_the_batch_follows_the_workers_run_and_cancel_takes_the_clis_path(
        tmp_path, broker, data_dir, monkeypatch):
    from cortexbox.orchestrator.scoring import job as job_module
    from cortexbox.orchestrator.scoring import workers
    from cortexbox.orchestrator.web import create_app

    url = f"sqlite:///{tmp_path / 'web.db'}"
    registry = Registry(url)
    registry.upsert_model("sha256:" + "1" * 64, "pixels-fake", "1", "cortexbox/pixels-fake", {"modality": "image"})
    with TestClient(create_app(url)) as client:
        assert client.post("/api/runs", json={"model": "nobody", "benchmark": BENCHMARK}).status_code == 422
        refused = client.post("/api/runs", json={"model": "pixels-fake", "benchmark": BENCHMARK, "use_cache": False})
        assert refused.status_code == 422 and "--no-cache" in refused.json()["detail"]

        started = client.post("/api/runs", json={"model": "pixels-fake", "benchmark": BENCHMARK})
        assert started.status_code == 202, started.text
        live = started.json()
        (job,) = live["jobs"]
        assert job["status"] == "queued" and job["benchmark"] == BENCHMARK
        again = client.post("/api/runs", json={"model": "cortexbox/pixels-fake", "benchmark": BENCHMARK}).json()
        assert [j["job_id"] for j in again["jobs"]] == [job["job_id"]]  # idempotent: the same job
        report = client.get("/api/queue").json()
        assert report["counts"] == {"queued": 1} and report["broker"]["queue_length"] == 1  # one message, not two

        # A worker (here: its task function, with a stand-in for score_model) takes the job; the batch follows it.
        monkeypatch.setattr(job_module, "score_model", _fake_worker_score)
        worker = threading.Thread(target=workers.run_job, args=(Registry(url), job["job_id"]),
                                  kwargs={"worker": "w1@elsewhere:7", "lease_s": 30})
        worker.start()
        text = client.get(live["events_url"]).text  # ends with the batch's done
        worker.join(30)
        events = _sse(text)
        names = [e for e, _ in events]
        assert names[0] == "status" and names[-1] == "done" and events[-1][1]["status"] == "succeeded"
        (run,) = [d for e, d in events if e == "run"]
        assert run["job_id"] == job["job_id"] and run["worker"] == "w1@elsewhere:7"
        assert names.count("progress") == 2 and [d["ceiled"] for e, d in events if e == "score"] == [0.25]
        assert client.get(f"/api/live/{live['live_id']}").json()["run_ids"] == [run["run_id"]]
        # Its run page follows the same run, and the batch of the second request ends the same way.
        assert [e for e, _ in _sse(client.get(f"/api/runs/{run['run_id']}/events").text)][-1] == "done"
        assert _sse(client.get(again["events_url"]).text)[-1][1]["status"] == "succeeded"

        # A second benchmark's job, cancelled from the web before a worker took it: it never starts.
        other = client.post("/api/runs", json={"model": "pixels-fake", "benchmark": OTHER}).json()
        (queued,) = other["jobs"]
        assert client.post(f"/api/jobs/{queued['job_id']}/cancel").json() == {"job_id": queued["job_id"], "status": "cancelled"}
        events = _sse(client.get(other["events_url"]).text)
        assert [e for e, _ in events] == ["status", "failed", "done"]
        assert events[1][1]["failure_class"] == "cancelled" and events[-1][1]["status"] == "failed"
        assert workers.run_job(Registry(url), queued["job_id"], worker="w1@elsewhere:7")["status"] == "cancelled"
        # The batch's cancel button asks the same for each of its jobs; one that ended stays as it ended.
        assert client.post(f"/api/live/{live['live_id']}/cancel").json()["jobs"] == {str(job["job_id"]): "succeeded"}
        assert client.post("/api/jobs/999/cancel").status_code == 404
        assert client.post("/api/runs/999/cancel").status_code == 404
        # Asked again, a cancelled job is queued again (as `cortexbox enqueue`).
        assert client.post("/api/runs", json={"model": "pixels-fake", "benchmark": OTHER}).json()["jobs"][0]["status"] == "queued"

    with Registry(url).session() as s:
        rows = list(s.exec(select(ScoreJob)))
    assert [(r.status, r.worker) for r in rows] == [("succeeded", "w1@elsewhere:7"), ("queued", None)]


def _endless_score(request, *, registry, events=None, **_):
    """Stands in for score_model without a broker: progress until interrupted, then stored as score_model stores it."""
    from cortexbox.orchestrator.run_events import RunEventLog
    from cortexbox.orchestrator.scoring import failure_of

    run = registry.start_run(request.image, request.benchmark)
    log = RunEventLog(registry, run.id, events, benchmark=request.benchmark, min_interval=0)
    try:
        for done in range(1, 600):
            log("progress", {"done": done, "total": 600, "label": "benchmark"})
            time.sleep(0.05)
        raise AssertionError("never cancelled")
    except BaseException as e:
        failure = failure_of(e)
        log.finish("failed", ("failed", failure.event()))
        registry.update_run(run, **failure.run_fields())
        raise


def test_without_a_broker_a_run_started_here_is_cancelled_from_the_web(tmp_path, monkeypatch):
    from cortexbox.orchestrator.web import create_app

    monkeypatch.delenv("CORTEXBOX_BROKER_URL", raising=False)
    url = f"sqlite:///{tmp_path / 'web.db'}"
    with TestClient(create_app(url, score=_endless_score)) as client:
        live = client.post("/api/runs", json={"model": "cortexbox/endless", "benchmarks": ["A2020.V4-x", "B2020.V4-x"]}).json()
        assert live["jobs"] == []  # scored here, not queued
        (run_id,) = _wait(lambda: client.get(f"/api/live/{live['live_id']}").json()["run_ids"], 10, "the run")
        assert client.get(f"/runs/{run_id}/live").text.count(f"/api/runs/{run_id}/cancel") == 1  # the page's button
        assert client.post(f"/api/runs/{run_id}/cancel").json() == {"run_id": run_id, "status": "cancelling"}
        events = _sse(client.get(live["events_url"]).text)
        run = client.get(f"/api/runs/{run_id}").json()
    assert run["status"] == "failed" and run["failure_class"] == "cancelled"
    failed = [d for e, d in events if e == "failed"]
    assert [d["benchmark"] for d in failed] == ["A2020.V4-x", "B2020.V4-x"]  # the second never started
    assert failed[1]["error"] == "cancelled before it started" and events[-1][1]["status"] == "failed"
