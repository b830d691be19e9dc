"""Chaos on real processes: Celery workers (`cortexbox worker`) over a real Redis (appendonly), real containers.

A worker killed with SIGKILL in the middle of a container run: the job finishes on the other worker, exactly one
score, no container left. Redis killed and restarted with jobs queued: none lost. Each asserts the registry's final
state. The workers share this machine's Docker engine (a second engine, when the fixture for one exists, changes
only their --engine)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from sqlmodel import select

from cortexbox.registry import Registry, Score, ScoreJob

pytestmark = [pytest.mark.slow, pytest.mark.docker, pytest.mark.data]

REDIS = shutil.which("redis-server")
#: One cheap benchmark per job: pixels on 92 images (a container run of a few seconds).
BENCHMARK = "Kriegeskorte2008.hIT-rdm"
LEASE_S = 4
#: The engine both workers own (the same one here; a second dockerd's socket for the second worker when available).
ENGINE = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


class RedisServer:
    """redis-server on a unix socket in its own folder, appendonly with fsync on every write."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.socket = folder / "redis.sock"
        self.url = f"redis+socket://{self.socket}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [REDIS, "--port", "0", "--unixsocket", str(self.socket), "--dir", str(self.folder), "--appendonly", "yes",
             "--appendfsync", "always", "--save", "", "--daemonize", "no"],
            stdout=open(self.folder / "redis.log", "ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while not self._answers():
            assert time.monotonic() < deadline and self.process.poll() is None, (self.folder / "redis.log").read_text()
            time.sleep(0.05)

    def _answers(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(1)
                s.connect(str(self.socket))
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def redis(tmp_path):
    if REDIS is None:
        pytest.skip("redis-server is not installed (scripts/setup.sh installs it)")
    folder = Path(tempfile.mkdtemp(prefix="cbx-redis-"))  # short: a unix socket's path stays under 108 bytes
    server = RedisServer(folder)
    server.start()
    yield server
    server.kill()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def cluster(redis, tmp_path, template_image, data_dir, docker_client):
    """Environment of the workers and the CLI (own registry and cache), the pixels model registered."""
    image = template_image("pixels")
    env = {**os.environ, "CORTEXBOX_HOME": str(tmp_path / "home"), "CORTEXBOX_BROKER_URL": redis.url,
           "CORTEXBOX_DATA_DIR": str(data_dir)}
    env.pop("CORTEXBOX_DATABASE_URL", None)
    added = _cli(env, "models", "add", image, "--json")
    workers: dict[str, subprocess.Popen] = {}

    def start(name: str) -> subprocess.Popen:
        log = open(tmp_path / f"worker-{name}.log", "ab")
        workers[name] = subprocess.Popen([sys.executable, "-m", "cortexbox.orchestrator.cli", "worker", "--name", name,
                                          "--lease-s", str(LEASE_S), "--engine", ENGINE], env=env, stdout=log, stderr=subprocess.STDOUT)
        return workers[name]

    yield {"env": env, "start": start, "workers": workers, "digest": json.loads(added.stdout)["digest"],
           "registry": Registry(f"sqlite:///{tmp_path / 'home' / 'registry.db'}"), "logs": tmp_path}
    for process in workers.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in workers.values():
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    owners = {f"{socket.gethostname()}:{p.pid}" for p in workers.values()}
    left = [c.name for c in docker_client.containers.list(all=True, filters={"label": "cortexbox.owner"})
            if c.labels.get("cortexbox.owner") in owners]
    for name in left:
        docker_client.containers.get(name).remove(force=True)
    assert not left, f"containers of the workers left behind: {left}"


def _cli(env, *args, timeout=600):
    done = subprocess.run([sys.executable, "-m", "cortexbox.orchestrator.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _jobs(registry: Registry) -> list[ScoreJob]:
    with registry.session() as s:
        return list(s.exec(select(ScoreJob).order_by(ScoreJob.id)))


def _scores(registry: Registry) -> list[Score]:
    with registry.session() as s:
        return list(s.exec(select(Score).order_by(Score.id)))


def _wait(condition, timeout_s: float, what: str, logs: Path | None = None):
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            tails = "".join(f"\n--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(logs.glob("worker-*.log"))) if logs else ""
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}{tails}")
        time.sleep(0.1)


def test_a_worker_killed_mid_run_its_job_is_scored_once_by_the_other(cluster, docker_client):
    registry, logs = cluster["registry"], cluster["logs"]
    a, b = cluster["start"]("a"), cluster["start"]("b")
    (job,) = json.loads(_cli(cluster["env"], "enqueue", "-m", cluster["digest"], "-b", BENCHMARK, "--json").stdout)
    owners = {f"{socket.gethostname()}:{p.pid}": (name, p) for name, p in (("a", a), ("b", b))}

    def running_container():
        for c in docker_client.containers.list(filters={"label": "cortexbox.owner"}):
            if c.labels.get("cortexbox.owner") in owners:
                return c
        return None

    container = _wait(running_container, 300, "a worker's model container", logs)
    victim_name, victim = owners[container.labels["cortexbox.owner"]]
    victim.kill()  # SIGKILL, in the middle of the container's run
    victim.wait(10)
    t_kill = time.monotonic()

    def ended():
        (row,) = _jobs(registry)
        return row if row.status not in ("queued", "running") else None

    row = _wait(ended, 240, "the job to end on the other worker", logs)
    recovered_s = time.monotonic() - t_kill
    survivor = "b" if victim_name == "a" else "a"
    assert row.id == job["job_id"] and row.status == "succeeded", (row.status, row.error)
    assert row.worker.startswith(f"{survivor}@") and row.attempts == 2
    scores = _scores(registry)
    assert len(scores) == 1 and scores[0].job_id == row.id and scores[0].run_id == row.run_id
    # the killed worker's run ended as lost, the survivor's run holds the score
    runs = {r.id: r for r in registry.runs(10)}
    assert len(runs) == 2 and runs[row.run_id].status == "succeeded"
    (lost,) = [r for r in runs.values() if r.id != row.run_id]
    assert lost.status == "failed" and lost.failure_class == "lost"
    # no container of the killed worker is left (the survivor reaped it)
    victim_owner = f"{socket.gethostname()}:{victim.pid}"
    _wait(lambda: not docker_client.containers.list(all=True, filters={"label": f"cortexbox.owner={victim_owner}"}), 30,
          "the killed worker's container to be reaped", logs)
    assert recovered_s < 240


def test_redis_killed_and_restarted_with_jobs_queued_loses_none(cluster, redis):
    registry, env = cluster["registry"], cluster["env"]
    # jobs queued while no worker runs: they wait in Redis
    enqueued = json.loads(_cli(env, "enqueue", "-m", cluster["digest"], "-b", BENCHMARK, "-b", "Kriegeskorte2008.mIT-rdm",
                               "--json").stdout)
    assert [j["status"] for j in enqueued] == ["queued", "queued"] and all(j["task_id"] for j in enqueued)
    redis.kill()  # SIGKILL: only what the append-only file holds survives
    redis.start()
    cluster["start"]("a")

    def all_ended():
        rows = _jobs(registry)
        return rows if all(r.status not in ("queued", "running") for r in rows) else None

    rows = _wait(all_ended, 300, "both jobs to end", cluster["logs"])
    assert [(r.id, r.status, r.attempts) for r in rows] == [(j["job_id"], "succeeded", 1) for j in enqueued]
    assert sorted(s.job_id for s in _scores(registry)) == [j["job_id"] for j in enqueued]
    # asking again adds nothing: the jobs are scored
    again = json.loads(_cli(env, "enqueue", "-m", cluster["digest"], "-b", BENCHMARK, "--json").stdout)
    assert again == [{"job_id": enqueued[0]["job_id"], "status": "succeeded", "task_id": enqueued[0]["task_id"]}]
    assert len(_scores(registry)) == 2
