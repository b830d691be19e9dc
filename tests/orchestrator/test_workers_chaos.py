"""Chaos on real processes (issue 12): two Celery workers on two Docker engines (this machine's and a second
dockerd), a real Redis, our image registry, real containers; the cluster of test_workers.py.

A worker killed with SIGKILL in the middle of a container run: the job finishes on the other worker's engine,
exactly one score, no container left on either engine. Redis killed and restarted with jobs queued: none lost. The
registry stopped under a worker's pull: the pull resumes when it is back. The web app killed while a job it
enqueued runs: nothing lost. Each asserts the registry's final state; every wait is bounded.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.orchestrator import test_workers
from tests.orchestrator.test_workers import (
    BENCHMARK,
    HOST,
    LEASE_S,
    add_pixels,
    cli,
    ended,
    forget_on,
    jobs,
    own_containers,
    running_container,
    runs,
    scores,
    wait,
)

# The cluster's fixtures (test_workers.py).
cluster, redis, pushed = test_workers.cluster, test_workers.redis, test_workers.pushed

pytestmark = [pytest.mark.slow, pytest.mark.docker, pytest.mark.data]


def test_a_worker_killed_mid_run_its_job_is_scored_once_on_the_other_engine(cluster, second_engine):
    """Worker b (second engine) pulls the model by digest and starts its container; b is killed with SIGKILL;
    worker a (first engine) takes the job when b's lease expires and stores the one score; b's container, on an
    engine a cannot reach, is reaped by the next worker that starts on that engine."""
    registry, logs, reference, pushed_image = cluster["registry"], cluster["logs"], add_pixels(cluster), cluster["pushed"]
    forget_on(second_engine, reference)  # b's engine must get the image through the registry
    b = cluster["start"]("b", "b")
    (job,) = json.loads(cli(cluster["env"], "enqueue", "-m", reference, "-b", BENCHMARK, "--json").stdout)
    engine, container = wait(lambda: running_container(cluster["clients"], {f"{HOST}:{b.pid}"}), 300,
                             "b's model container", logs)
    assert engine == "b" and second_engine.client.images.get(reference).id == pushed_image.image_id
    a = cluster["start"]("a", "a")  # idle on the other engine
    b.kill()  # SIGKILL, in the middle of the container's run
    b.wait(10)
    t_kill = time.monotonic()
    (row,) = wait(ended(registry), 240, "the job to end on the other worker", logs)
    recovered_s = time.monotonic() - t_kill
    print(f"job rescored on the other engine {recovered_s:.1f} s after the kill (lease {LEASE_S} s)")
    assert row.id == job["job_id"] and row.status == "succeeded", (row.status, row.error)
    assert row.worker == f"a@{HOST}:{a.pid}" and row.attempts == 2
    (score,) = scores(registry)
    assert score.job_id == row.id and score.run_id == row.run_id
    assert score.provenance["registry_digest"] == pushed_image.digest  # the same bytes on either engine
    assert score.provenance["image_digest"] == pushed_image.image_id
    # b's run ended as lost; a's run holds the score
    by_id = {r.id: r for r in runs(registry)}
    assert len(by_id) == 2 and by_id[row.run_id].status == "succeeded"
    (lost,) = [r for r in by_id.values() if r.id != row.run_id]
    assert lost.status == "failed" and lost.failure_class == "lost"
    # b's container is on the second engine, which a does not own; a worker starting there reaps it
    victim = {f"{HOST}:{b.pid}"}
    cluster["start"]("b2", "b")
    wait(lambda: not own_containers(second_engine.client, victim), 60, "b's container to be reaped on its engine", logs)
    assert not own_containers(cluster["clients"]["a"], victim)
    (still,) = jobs(registry)
    assert (still.status, still.attempts) == ("succeeded", 2) and len(scores(registry)) == 1


def test_redis_killed_and_restarted_with_jobs_queued_loses_none(cluster, redis):
    registry, env, reference = cluster["registry"], cluster["env"], add_pixels(cluster)
    # jobs queued while no worker runs: they wait in Redis
    enqueued = json.loads(cli(env, "enqueue", "-m", reference, "-b", BENCHMARK, "-b", "Kriegeskorte2008.mIT-rdm",
                              "--json").stdout)
    assert [j["status"] for j in enqueued] == ["queued", "queued"] and all(j["task_id"] for j in enqueued)
    redis.kill()  # SIGKILL: only what the append-only file holds survives
    redis.start()
    cluster["start"]("a", "a")
    cluster["start"]("b", "b")
    rows = wait(ended(registry, 2), 300, "both jobs to end", cluster["logs"])
    assert [(r.id, r.status, r.attempts) for r in rows] == [(j["job_id"], "succeeded", 1) for j in enqueued]
    assert sorted(s.job_id for s in scores(registry)) == [j["job_id"] for j in enqueued]
    # asking again adds nothing: the jobs are scored
    again = json.loads(cli(env, "enqueue", "-m", reference, "-b", BENCHMARK, "--json").stdout)
    assert again == [{"job_id": enqueued[0]["job_id"], "status": "succeeded", "task_id": enqueued[0]["task_id"]}]
    assert len(scores(registry)) == 2


def test_a_pull_while_the_registry_is_down_resumes_when_it_is_back(cluster, second_engine, image_registry_server):
    """Worker b's engine lacks the model; the registry is stopped; b takes the job and its pull retries until the
    registry is started again (same storage, same port), then scores it at the first attempt."""
    import docker.errors

    registry, logs, reference = cluster["registry"], cluster["logs"], add_pixels(cluster)
    forget_on(second_engine, reference)
    image_registry_server.stop()
    try:
        cluster["start"]("b", "b")
        (job,) = json.loads(cli(cluster["env"], "enqueue", "-m", reference, "-b", BENCHMARK, "--json").stdout)
        wait(lambda: jobs(registry)[0].status == "running", 120, "b to take the job", logs)
        time.sleep(3)  # b's pull is retrying against the stopped registry
        (row,) = jobs(registry)
        assert row.status == "running" and row.run_id is None  # still resolving its image: no run yet
        with pytest.raises(docker.errors.ImageNotFound):
            second_engine.client.images.get(reference)
    finally:
        image_registry_server.start()  # same storage, same port
    (row,) = wait(ended(registry), 240, "the job to end after the registry came back", logs)
    assert (row.id, row.status, row.attempts) == (job["job_id"], "succeeded", 1), row.error
    assert row.worker.startswith("b@")
    (score,) = scores(registry)
    assert score.job_id == row.id and score.provenance["registry_digest"] == cluster["pushed"].digest
    assert second_engine.client.images.get(reference).id == cluster["pushed"].image_id


def _web(cluster, port: int):
    """`cortexbox web` (uvicorn) in its own process, with the cluster's broker and registry; waits until it answers."""
    import subprocess
    import sys
    import urllib.request

    log = open(cluster["logs"] / "worker-web.log", "ab")  # worker-*: shown with the workers' logs on a timeout
    web = subprocess.Popen([sys.executable, "-m", "cortexbox.orchestrator.cli", "web", "--port", str(port)],
                           env=cluster["env"], stdout=log, stderr=subprocess.STDOUT)
    cluster["workers"][f"web-{port}-{len(cluster['workers'])}"] = web  # stopped (and checked) with the workers

    def answers():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/queue", timeout=5) as r:
                return r.status == 200
        except OSError:
            assert web.poll() is None, (cluster["logs"] / "worker-web.log").read_text()[-3000:]
            return False
    wait(answers, 60, "the web app to answer", cluster["logs"], every_s=0.2)
    return web


def _api(port: int, path: str, body: dict | None = None) -> dict:
    import urllib.request

    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method="POST" if body is not None else "GET",
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.loads(r.read())


def test_the_web_app_killed_while_a_job_it_enqueued_runs_loses_nothing(cluster):
    """POST /api/runs queues two jobs for the workers; the web process is killed with SIGKILL while the first one's
    container runs; both jobs are scored once each, at their first attempt, and a web app started again shows them."""
    import socket as socket_module

    registry, logs, reference = cluster["registry"], cluster["logs"], add_pixels(cluster)
    a, b = cluster["start"]("a", "a"), cluster["start"]("b", "b")
    with socket_module.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    web = _web(cluster, port)
    batch = _api(port, "/api/runs", {"model": reference, "benchmarks": [BENCHMARK, "Kriegeskorte2008.mIT-rdm"]})
    assert [j["status"] for j in batch["jobs"]] == ["queued", "queued"]
    owners = {f"{HOST}:{p.pid}" for p in (a, b)}
    wait(lambda: running_container(cluster["clients"], owners), 300, "a worker's model container", logs)
    web.kill()  # SIGKILL, while a job it enqueued runs
    web.wait(10)
    rows = wait(ended(registry, 2), 300, "both jobs to end", logs)
    assert [(r.id, r.status, r.attempts) for r in rows] == [(j["job_id"], "succeeded", 1) for j in batch["jobs"]]
    assert sorted(s.job_id for s in scores(registry)) == [j["job_id"] for j in batch["jobs"]]
    assert [r.status for r in runs(registry)] == ["succeeded", "succeeded"]
    # a web app started again reads the same state
    _web(cluster, port)
    report = _api(port, "/api/queue")
    assert report["counts"] == {"succeeded": 2} and report["broker"]["queue_length"] == 0
    assert sorted(n.split("@")[0] for n in report["broker"]["workers_alive"]) == ["a", "b"]
