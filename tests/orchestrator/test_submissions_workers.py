"""Competition submissions scored by issue 12's Celery workers, on real processes: a real Redis, `cortexbox worker`
processes bound to this machine's Docker engine, the web app with $CORTEXBOX_BROKER_URL set, and a real `docker
save` tarball of the pixels template uploaded through the HTTP API.

* The submission is scored by the worker process (its runs' owner is the worker's pid, the web app's scoring thread
  never starts), ends with its scores on the board, and the same task delivered again (while it runs and after it
  ended) stores nothing twice.
* A worker killed with SIGKILL while its container computes: the attempt is requeued when its lease expires,
  scored once by another worker, the lost run recorded ``lost``; the team's quota counts the submission once, and
  one out of deliveries ends ``platform_failed``, refunded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from cortexbox.registry import Registry, Run, Score
from cortexbox.registry.models import Submission, SubmissionJob, SubmissionRun, utcnow
from tests.orchestrator.test_competitions_helpers import bearer, people, spec
from tests.orchestrator.test_workers import ENGINE, HOST, LEASE_S, own_containers, redis, wait  # noqa: F401 - redis: fixture

SLUG = "wrk-2027"


@pytest.fixture(scope="module")
def pixels_tar(docker_client, template_image, tmp_path_factory):
    """The pixels template saved once; the tags its submissions got are removed at the end."""
    pixels = template_image("pixels")
    path = tmp_path_factory.mktemp("tarballs") / "pixels.tar"
    with open(path, "wb") as f:
        for chunk in docker_client.images.get(pixels).save(chunk_size=1024**2):
            f.write(chunk)
    yield {"path": path, "image_id": docker_client.images.get(pixels).id}
    for image in docker_client.images.list():
        for tag in image.tags:
            if tag.startswith(f"cortexbox-submission/{SLUG}:"):
                docker_client.images.remove(tag)


@pytest.fixture
def stack(redis, tmp_path, data_dir, monkeypatch, docker_client):  # noqa: F811 - redis: the fixture
    """The web app (in this process, with the broker set) over a community registry in the cortexbox home, an open
    competition with a public and a private benchmark, and ``start(name)``: a worker process on this engine (its
    community database: the home's default, the one the app uses). At the end the workers are stopped and no
    container of theirs may be left."""
    from cortexbox.orchestrator.scoring.workers import celery_app
    from cortexbox.orchestrator.web import create_app

    home = tmp_path / "home"
    home.mkdir()
    for name, value in (("CORTEXBOX_HOME", str(home)), ("CORTEXBOX_BROKER_URL", redis.url),
                        ("CORTEXBOX_DATA_DIR", str(data_dir)), ("CORTEXBOX_UPLOAD_DIR", str(tmp_path / "uploads"))):
        monkeypatch.setenv(name, value)
    for name in ("CORTEXBOX_DATABASE_URL", "CORTEXBOX_IMAGE_REGISTRY"):
        monkeypatch.delenv(name, raising=False)
    env = dict(os.environ)
    env.pop("DOCKER_HOST", None)
    community_url = f"sqlite:///{home / 'community.db'}"
    community = Registry(community_url)
    tokens = people(community)
    application = create_app(f"sqlite:///{home / 'registry.db'}", community_url=community_url)
    workers: dict[str, subprocess.Popen] = {}

    def start(name: str) -> subprocess.Popen:
        log = open(tmp_path / f"worker-{name}.log", "ab")
        workers[name] = subprocess.Popen([sys.executable, "-m", "cortexbox.orchestrator.cli", "worker", "--name", name,
                                          "--lease-s", str(LEASE_S), "--engine", ENGINE], env=env, stdout=log,
                                         stderr=subprocess.STDOUT)
        return workers[name]

    def open_competition(quota: int) -> None:
        r = client.post("/api/competitions", json=spec(SLUG, quota=quota, limits={"upload": "1g", "unpacked": "2g"}),
                        headers=bearer(tokens["org"]))
        assert r.status_code == 201, r.text
        r = client.post(f"/api/competitions/{SLUG}/open", headers=bearer(tokens["org"]))
        assert r.status_code == 200, r.text

    broker = celery_app(redis.url)
    with TestClient(application) as client:
        yield {"client": client, "app": application, "community": community, "tokens": tokens, "start": start,
               "workers": workers, "open": open_competition, "logs": tmp_path, "broker": broker}
    broker.close()
    for process in workers.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in workers.values():
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    owners = {f"{HOST}:{p.pid}" for p in workers.values()}
    left = [c.name for c in own_containers(docker_client, owners)]
    for container in own_containers(docker_client, owners):
        container.remove(force=True)
    community.engine.dispose()
    assert not left, f"containers of the workers left behind: {left}"


def submit(stack, path: Path, token: str) -> dict:
    with open(path, "rb") as f:
        r = stack["client"].post(f"/api/competitions/{SLUG}/submissions", content=f, headers=bearer(token))
    assert r.status_code == 202, r.text
    return r.json()


def rows(registry: Registry, table, **where) -> list:
    with registry.session() as s:
        query = select(table)
        for key, value in where.items():
            query = query.where(getattr(table, key) == value)
        return list(s.exec(query.order_by(table.id)))


def ended(registry: Registry, submission_id: int):
    def check():
        (sub,) = rows(registry, Submission, id=submission_id)
        return sub if sub.status not in ("queued", "running") else None
    return check


def deliver_again(stack, submission_id: int, attempt: int = 0) -> None:
    """Sends the attempt's task to the broker once more, as a redelivery would."""
    from cortexbox.orchestrator.community import tasks
    from cortexbox.orchestrator.scoring.workers import QUEUE

    stack["broker"].send_task(tasks.TASK, args=[submission_id, attempt, tasks.masked(stack["community"].url)], queue=QUEUE)


def ignored_deliveries(logs: Path) -> int:
    return sum(p.read_text(errors="replace").count("this delivery does nothing") for p in logs.glob("worker-*.log"))


@pytest.mark.slow
@pytest.mark.docker
@pytest.mark.data
def test_a_submission_is_scored_by_a_worker_once_even_when_delivered_again(stack, pixels_tar):
    """POST a tarball: the worker (not the web process) scores it on both benchmarks, the public board shows it;
    its task delivered again while it runs and twice after it ended: every extra delivery does nothing (one job
    delivery, two runs, two scores). The organiser's rescoring is the same task's attempt 1, on the worker too."""
    community, logs = stack["community"], stack["logs"]
    stack["open"](quota=3)
    worker = stack["start"]("w1")
    t0 = time.monotonic()
    sub = submit(stack, pixels_tar["path"], stack["tokens"]["alice"])
    assert sub["digest"] == pixels_tar["image_id"] and sub["status"] == "queued"
    deliver_again(stack, sub["submission"])  # queued behind the first: delivered while (or after) it runs
    done = wait(ended(community, sub["submission"]), 300, "the submission to be scored", logs)
    scored_s = time.monotonic() - t0
    print(f"submission scored by the worker {scored_s:.1f} s after the upload was accepted")
    assert (done.status, done.failure_class, done.counts_quota) == ("succeeded", None, True)
    assert stack["app"].state.community.queue._thread is None  # the web process scored nothing
    # the web app staged the archive; the worker loaded it into its engine, recorded the image and deleted it
    assert done.image_ref == pixels_tar["image_id"] and not list((logs / "uploads").iterdir())
    (job,) = rows(community, SubmissionJob, submission_id=sub["submission"])
    assert (job.status, job.attempt, job.attempts) == ("succeeded", 0, 1) and job.worker.startswith(f"w1@{HOST}:{worker.pid}")
    srs = rows(community, SubmissionRun, submission_id=sub["submission"])
    assert [(r.benchmark, r.private, r.status) for r in srs] == [("Kriegeskorte2008.hIT-rdm", False, "succeeded"),
                                                                ("Kriegeskorte2008.judgements-rdm", True, "succeeded")]
    for sr in srs:  # each run was scored by the worker process
        first = community.run_events(sr.run_id, -1, 1)[0]
        assert first.kind == "status" and first.data["pid"] == worker.pid != os.getpid()
    assert sorted(s.run_id for s in rows(community, Score)) == sorted(r.run_id for r in srs)
    board = stack["client"].get(f"/api/competitions/{SLUG}/board").json()
    assert [(r["team"], r["submission"]) for r in board["rows"]] == [("red", sub["submission"])]

    wait(lambda: ignored_deliveries(logs) >= 1, 60, "the first extra delivery to be ignored", logs)
    deliver_again(stack, sub["submission"])
    deliver_again(stack, sub["submission"])
    wait(lambda: ignored_deliveries(logs) >= 3, 60, "both later deliveries to be ignored", logs)
    (job,) = rows(community, SubmissionJob, submission_id=sub["submission"])
    assert (job.status, job.attempts) == ("succeeded", 1)
    assert len(rows(community, SubmissionRun)) == 2 and len(rows(community, Run)) == 2 and len(rows(community, Score)) == 2
    # what the team sees: its scores, the private one hidden
    seen = stack["client"].get(f"/api/submissions/{sub['submission']}", headers=bearer(stack["tokens"]["alice"])).json()
    assert seen["status"] == "succeeded" and [("ceiled" in r) for r in seen["runs"]] == [True, False]

    # the organiser's rescoring goes through the same task: attempt 1, scored by the worker, from the digest
    r = stack["client"].post(f"/api/competitions/{SLUG}/rescore", headers=bearer(stack["tokens"]["org"]))
    assert r.status_code == 200 and r.json() == {"rescoring": [sub["submission"]]}, r.text
    again = wait(lambda: [j for j in rows(community, SubmissionJob, attempt=1) if j.status not in ("queued", "running")],
                 300, "the rescoring to end", logs)
    assert [(j.submission_id, j.status, j.attempts) for j in again] == [(sub["submission"], "succeeded", 1)]
    rescored = rows(community, SubmissionRun, submission_id=sub["submission"], attempt=1)
    assert [r.status for r in rescored] == ["succeeded", "succeeded"]
    assert all(community.run_events(r.run_id, -1, 1)[0].data["pid"] == worker.pid for r in rescored)
    assert len(rows(community, Score)) == 4 and rows(community, Submission)[0].status == "succeeded"
    assert stack["app"].state.community.queue._thread is None


@pytest.mark.slow
@pytest.mark.docker
@pytest.mark.data
def test_a_worker_killed_mid_run_is_retried_by_another_and_costs_no_quota(stack, pixels_tar, docker_client):
    """Worker w1 is killed with SIGKILL while its container computes the first benchmark: once its lease expires
    the attempt is requeued and worker w2 scores it (the second delivery), keeping one row per benchmark and one
    score each; the killed run is recorded lost; the team's quota (1 a day) counts the submission once."""
    community, logs, alice = stack["community"], stack["logs"], stack["tokens"]["alice"]
    stack["open"](quota=1)
    w1 = stack["start"]("w1")
    sub = submit(stack, pixels_tar["path"], alice)

    def computing():  # the container is up and has the stimuli: mid-run
        for sr in rows(community, SubmissionRun, submission_id=sub["submission"]):
            if sr.run_id is None:
                continue
            texts = [(e.data or {}).get("text", "") for e in community.run_events(sr.run_id, -1, 100)]
            if any(t.startswith("benchmark:") for t in texts) and not any("scoring layer" in t for t in texts):
                return sr
        return None
    victim = wait(computing, 300, "w1's container to compute", logs, every_s=0.05)
    w1.kill()  # SIGKILL, in the middle of the container's run
    w1.wait(10)
    t_kill = time.monotonic()
    w2 = stack["start"]("w2")
    done = wait(ended(community, sub["submission"]), 300, "the submission to be scored by w2", logs)
    print(f"submission scored by the second worker {time.monotonic() - t_kill:.1f} s after the kill (lease {LEASE_S} s)")
    assert (done.status, done.counts_quota) == ("succeeded", True)
    (job,) = rows(community, SubmissionJob, submission_id=sub["submission"])
    assert (job.status, job.attempts) == ("succeeded", 2) and job.worker.startswith(f"w2@{HOST}:{w2.pid}")
    srs = rows(community, SubmissionRun, submission_id=sub["submission"])
    assert [(r.benchmark, r.status) for r in srs] == [("Kriegeskorte2008.hIT-rdm", "succeeded"),
                                                      ("Kriegeskorte2008.judgements-rdm", "succeeded")]
    lost = community.run(victim.run_id)
    assert lost.status == "failed" and lost.failure_class == "lost"
    assert len(rows(community, Run)) == 3  # the lost run and the two scored ones
    scores = rows(community, Score)
    assert sorted(s.run_id for s in scores) == sorted(r.run_id for r in srs) and victim.run_id not in [s.run_id for s in scores]
    for sr in srs:
        assert community.run_events(sr.run_id, -1, 1)[0].data["pid"] == w2.pid
    quota = stack["client"].get(f"/api/competitions/{SLUG}/quota", headers=bearer(alice)).json()
    assert (quota["used"], quota["left"]) == (1, 0)
    wait(lambda: not own_containers(docker_client, {f"{HOST}:{w1.pid}"}), 60, "w1's container to be reaped", logs)


def test_an_attempt_whose_worker_is_lost_too_often_ends_platform_failed_and_is_refunded(tmp_path):
    """The lease recovery of a job out of deliveries (workers.MAX_ATTEMPTS): the submission ends platform_failed and
    its quota is refunded; a job with deliveries left is queued again (its message published by `dispatch_queued`)."""
    from cortexbox.orchestrator.community import competitions, tasks
    from cortexbox.orchestrator.community.accounts import authenticate
    from cortexbox.orchestrator.scoring.workers import MAX_ATTEMPTS
    from cortexbox.registry.models import Competition

    registry = Registry(f"sqlite:///{tmp_path / 'community.db'}")
    tokens = people(registry)
    comp = competitions.create(registry, spec("lost", quota=2), authenticate(registry, tokens["org"]))
    with registry.session() as s:
        row = s.get(Competition, comp.id)
        row.status = "open"
        s.add(row)
        s.commit()
    red = authenticate(registry, tokens["alice"])
    stale = utcnow() - timedelta(seconds=60)
    with registry.session() as s:
        for digest in ("a", "b"):
            s.add(Submission(competition_id=comp.id, team_id=red.team_id, account_id=red.account_id,
                             digest=f"sha256:{digest * 64}", image_ref=f"sha256:{digest * 64}", status="running"))
        s.commit()
        s.add(SubmissionJob(submission_id=1, status="running", worker="w@gone:1", heartbeat_at=stale, attempts=MAX_ATTEMPTS))
        s.add(SubmissionJob(submission_id=2, status="running", worker="w@gone:1", heartbeat_at=stale, attempts=1))
        s.commit()

    class Broker:
        def __init__(self):
            self.sent: list = []

        def send_task(self, name, args, **kwargs):
            self.sent.append((name, args))

    broker = Broker()
    assert tasks.recover(registry, broker, lease_s=4) == [2]
    out, again = rows(registry, SubmissionJob)
    assert (out.status, out.failure_class) == ("platform_failed", "lost")
    assert (again.status, again.failure_class) == ("queued", "lost") and again.task_id.startswith("cortexbox-submission-2-0-")
    assert broker.sent == [(tasks.TASK, [2, 0, tasks.masked(registry.url)])]
    first, second = rows(registry, Submission)
    assert (first.status, first.counts_quota, second.status, second.counts_quota) == ("platform_failed", False, "running", True)
    quota = competitions.quota(registry, comp, red.team_id)
    assert (quota["used"], quota["refunded_today"]) == (1, 1)
    assert tasks.recover(registry, broker, lease_s=4) == [] and len(broker.sent) == 1  # nothing twice
