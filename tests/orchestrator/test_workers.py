"""Distributed scoring on real processes: Celery workers (`cortexbox worker`) over a real Redis (appendonly), each
bound to its own Docker engine (this machine's, and a second dockerd standing in for another host), models that
travel through our image registry by digest, real containers.

This module holds the cluster (the fixtures test_workers_chaos.py shares) and the control of jobs: a running job
cancelled from the CLI (its container killed within seconds, recorded cancelled, never retried), a model's own
failure never retried, a worker's engine restarted under a run (transient: retried after its backoff, scored once),
`cortexbox queue` showing the live workers and their jobs. Each asserts the registry's final state; every wait is
bounded.
"""

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

from cortexbox.registry import Registry, Run, Score, ScoreJob

pytestmark = [pytest.mark.slow, pytest.mark.docker, pytest.mark.data]

REDIS = shutil.which("redis-server")
#: One cheap benchmark per job: pixels on 92 images (a container run of a few seconds).
BENCHMARK = "Kriegeskorte2008.hIT-rdm"
LEASE_S = 4
#: The first worker's engine: this machine's. The second worker owns the `second_engine` fixture's dockerd.
ENGINE = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
HOST = socket.gethostname()


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


@pytest.fixture(scope="module")
def pushed(docker_client, template_image, image_registry_server):
    """The pixels template in our image registry (what `models add` pushes; pushed once here so each test's push
    uploads nothing)."""
    from cortexbox.orchestrator.image_registry import push

    image = push(docker_client, template_image("pixels"), registry=image_registry_server.address)
    yield image
    try:  # only the local tag the push made; the image keeps its own
        docker_client.images.remove(f"{image_registry_server.address}/cortexbox/pixels:id-{image.image_id.split(':')[1][:40]}")
    except Exception:  # noqa: BLE001 - another module's fixture removed it first
        pass


def forget_on(engine, reference: str) -> None:
    """Removes an image from the second engine (ours alone), so a worker there must pull it from the registry."""
    import docker.errors

    try:
        engine.client.images.remove(reference, force=True)
    except docker.errors.ImageNotFound:
        pass


def own_containers(client, owners) -> list:
    return [c for c in client.containers.list(all=True, filters={"label": "cortexbox.owner"})
            if c.labels.get("cortexbox.owner") in owners]


@pytest.fixture
def cluster(redis, tmp_path, pushed, image_registry_server, second_engine, data_dir, docker_client):
    """Environment of the workers and the CLI (own registry and cache, our image registry configured);
    ``add(image)`` registers a model (pushed, by its registry reference), ``start(name, engine)`` starts a worker
    bound to ``engine`` ("a": this machine's, "b": the second dockerd). At the end the workers are stopped and no
    container of theirs may be left on either engine. (A benchmark's first job queues jobs for every other model
    registered then, so each test registers only the models it scores.)"""
    env = {**os.environ, "CORTEXBOX_HOME": str(tmp_path / "home"), "CORTEXBOX_BROKER_URL": redis.url,
           "CORTEXBOX_DATA_DIR": str(data_dir), "CORTEXBOX_IMAGE_REGISTRY": image_registry_server.address}
    env.pop("CORTEXBOX_DATABASE_URL", None)
    env.pop("DOCKER_HOST", None)
    (tmp_path / "home").mkdir()
    engines = {"a": ENGINE, "b": second_engine.host}
    clients = {"a": docker_client, "b": second_engine.client}
    workers: dict[str, subprocess.Popen] = {}

    def start(name: str, engine: str) -> subprocess.Popen:
        log = open(tmp_path / f"worker-{name}.log", "ab")
        workers[name] = subprocess.Popen([sys.executable, "-m", "cortexbox.orchestrator.cli", "worker", "--name", name,
                                          "--lease-s", str(LEASE_S), "--engine", engines[engine]], env=env, stdout=log,
                                         stderr=subprocess.STDOUT)
        return workers[name]

    def add(image: str) -> str:
        """Registers another image (pushed to the registry, as `models add` does); returns its reference."""
        return json.loads(cli(env, "models", "add", image, "--json").stdout)["reference"]

    yield {"env": env, "start": start, "add": add, "workers": workers, "pushed": pushed, "clients": clients, "engines": engines,
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
    import docker.errors

    # `models add` of a hostile image left a local tag of its registry reference: untag it (the image keeps its own).
    for image in docker_client.images.list():
        for tag in image.tags:
            if tag.startswith(f"{image_registry_server.address}/cortexbox-test/"):
                try:
                    docker_client.images.remove(tag)
                except docker.errors.ImageNotFound:
                    pass
    owners = {f"{HOST}:{p.pid}" for p in workers.values()}
    left = []
    for client in clients.values():
        for container in own_containers(client, owners):
            left.append(container.name)
            container.remove(force=True)
    assert not left, f"containers of the workers left behind: {left}"


def add_pixels(cluster) -> str:
    """Registers the pixels template (in the registry already: nothing to upload); returns its reference."""
    reference = cluster["add"](cluster["pushed"].image_id)
    assert reference == cluster["pushed"].reference
    return reference


def cli(env, *args, timeout=600):
    done = subprocess.run([sys.executable, "-m", "cortexbox.orchestrator.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def jobs(registry: Registry) -> list[ScoreJob]:
    with registry.session() as s:
        return list(s.exec(select(ScoreJob).order_by(ScoreJob.id)))


def scores(registry: Registry) -> list[Score]:
    with registry.session() as s:
        return list(s.exec(select(Score).order_by(Score.id)))


def runs(registry: Registry) -> list[Run]:
    with registry.session() as s:
        return list(s.exec(select(Run).order_by(Run.id)))


def wait(condition, timeout_s: float, what: str, logs: Path | None = None, every_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            tails = "".join(f"\n--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(logs.glob("worker-*.log"))) if logs else ""
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}{tails}")
        time.sleep(every_s)


def ended(registry: Registry, n: int = 1):
    """The jobs, once all ``n`` have ended (none queued or running)."""
    def check():
        rows = jobs(registry)
        return rows if len(rows) == n and all(r.status not in ("queued", "running") for r in rows) else None
    return check


def running_container(clients: dict, owners: dict):
    """(engine name, container) of a running model container of one of ``owners`` (host:pid), on any engine."""
    for engine, client in clients.items():
        for c in client.containers.list(filters={"label": "cortexbox.owner"}):
            if c.labels.get("cortexbox.owner") in owners:
                return engine, c
    return None


# -- control: cancel, retry classes, the queue -------------------------------------------------------------------
def test_a_running_job_cancelled_from_the_cli_is_killed_within_seconds_and_never_retried(cluster, hostile_image):
    """Its container ends within seconds of `cortexbox cancel RUN`; the run and the job are recorded cancelled (not
    the model's failure); nothing retries it. While it runs, `cortexbox queue` shows both live workers and the job
    on its worker's row."""
    registry, env, logs = cluster["registry"], cluster["env"], cluster["logs"]
    reference = cluster["add"](hostile_image("hang"))  # computes nothing, ever: runs until killed
    a, b = cluster["start"]("a", "a"), cluster["start"]("b", "b")
    owners = {f"{HOST}:{p.pid}": name for name, p in (("a", a), ("b", b))}
    (job,) = json.loads(cli(env, "enqueue", "-m", reference, "-b", BENCHMARK, "--json").stdout)
    engine, container = wait(lambda: running_container(cluster["clients"], owners), 300, "the model's container", logs)
    worker = owners[container.labels["cortexbox.owner"]]
    row = wait(lambda: (r := jobs(registry)[0]).run_id and r, 30, "the job's run", logs)
    assert row.status == "running" and row.worker.startswith(f"{worker}@") and row.attempts == 1

    # `cortexbox queue`: both workers answer the broker; the running job sits on its worker's row.
    def both_alive():
        report = json.loads(cli(env, "queue", "--json").stdout)
        return report if len(report["broker"]["workers_alive"]) == 2 else None
    report = wait(both_alive, 60, "both workers to answer a ping", logs, every_s=1)
    assert sorted(name.split("@")[0] for name in report["broker"]["workers_alive"]) == ["a", "b"]
    assert report["counts"] == {"running": 1} and report["broker"]["queue_length"] == 0
    (item,) = report["workers"][row.worker]
    assert (item["job_id"], item["status"], item["run_id"]) == (job["job_id"], "running", row.run_id)
    assert item["heartbeat_age_s"] < LEASE_S
    text = cli({**env, "COLUMNS": "250"}, "queue").stdout
    assert "jobs: 1 running" in text and "workers alive: " in text and row.worker in text and BENCHMARK in text

    t0 = time.monotonic()
    done = cli(env, "cancel", str(row.run_id))
    assert done.stdout.strip() == f"run {row.run_id}: running"  # flagged; its worker kills the container
    client = cluster["clients"][engine]

    def stopped():
        try:
            return client.containers.get(container.id).status != "running"
        except Exception:  # noqa: BLE001 - removed already
            return True
    wait(stopped, 15, "the cancelled container to stop", logs, every_s=0.05)
    killed_s = time.monotonic() - t0
    print(f"cancel: container stopped {killed_s:.1f} s after `cortexbox cancel` was started")
    assert killed_s < 10
    (final,) = wait(ended(registry), 30, "the job to end", logs)
    assert (final.status, final.failure_class, final.attempts, final.cancel_requested) == ("cancelled", "cancelled", 1, True)
    run = registry.run(row.run_id)
    assert run.status == "failed" and run.failure_class == "cancelled"  # not the model's fault
    time.sleep(8)  # past the first retry's backoff (5 s): nothing took it again
    (still,) = jobs(registry)
    assert (still.status, still.attempts) == ("cancelled", 1)
    assert len(runs(registry)) == 1 and scores(registry) == []
    wait(lambda: not own_containers(client, owners), 30, "the container to be removed", logs)


def test_a_models_own_failure_is_never_retried(cluster, hostile_image):
    """A deterministic failure (the model sends NaN: bad_output) ends the job at its first attempt, stored with its
    class; the same job is not delivered again."""
    registry, env, logs = cluster["registry"], cluster["env"], cluster["logs"]
    reference = cluster["add"](hostile_image("nan"))
    cluster["start"]("a", "a")
    (job,) = json.loads(cli(env, "enqueue", "-m", reference, "-b", BENCHMARK, "--json").stdout)
    (row,) = wait(ended(registry), 300, "the job to fail", logs)
    assert (row.id, row.status, row.failure_class, row.attempts) == (job["job_id"], "failed", "bad_output", 1)
    time.sleep(8)  # past the first retry's backoff (5 s)
    (still,) = jobs(registry)
    assert (still.status, still.attempts, still.run_id) == ("failed", 1, row.run_id)
    (run,) = runs(registry)
    assert run.status == "failed" and run.failure_class == "bad_output" and scores(registry) == []


def restart_engine(engine) -> None:
    """Stops the second dockerd as a host's restart does (SIGTERM: it stops its containers and its containerd) and
    starts it again on the same data root and socket."""
    engine.process.terminate()
    engine.process.wait(60)
    engine.client.close()
    engine.process = engine.client = None
    if getattr(engine, "_bridge_made", False):  # start() makes the engine's bridge again
        subprocess.run(["ip", "link", "del", engine.bridge], capture_output=True, timeout=30)
        engine._bridge_made = False
    engine.start()


def test_an_engine_restarted_mid_run_is_retried_with_backoff_and_scored_once(cluster, second_engine):
    """Worker b's engine (the second dockerd) restarts while b's container computes: the container dies with it,
    which is not the model's failure: the run is recorded lost (transient), the job retried after its backoff on
    the engine that came back, and scored once; no container is left."""
    registry, env, logs = cluster["registry"], cluster["env"], cluster["logs"]
    reference = add_pixels(cluster)
    b = cluster["start"]("b", "b")
    (job,) = json.loads(cli(env, "enqueue", "-m", reference, "-b", BENCHMARK, "--json").stdout)

    def computing():  # the container is up and has the stimuli: mid-run
        row = jobs(registry)[0]
        texts = [(e.data or {}).get("text", "") for e in registry.run_events(row.run_id, -1, 50)] if row.run_id else []
        return any(t.startswith("benchmark:") for t in texts) and not any("scoring layer" in t for t in texts)
    wait(computing, 300, "b's container to compute", logs, every_s=0.05)
    t0 = time.monotonic()
    restart_engine(second_engine)
    cluster["clients"]["b"] = second_engine.client
    print(f"second engine restarted in {time.monotonic() - t0:.1f} s")
    (row,) = wait(ended(registry), 300, "the job to end after the restart", logs)
    assert (row.id, row.status, row.attempts, row.worker) == (job["job_id"], "succeeded", 2, f"b@{HOST}:{b.pid}"), row.error
    (score,) = scores(registry)
    assert score.job_id == row.id and score.run_id == row.run_id
    first, second = runs(registry)
    assert (first.status, first.failure_class) == ("failed", "lost") and "Docker engine went away" in first.error
    assert second.id == row.run_id and second.status == "succeeded"
    gap_s = (second.started_at - first.finished_at).total_seconds()
    print(f"retried {gap_s:.1f} s after the lost run ended (backoff 5 s)")
    assert gap_s >= 4.5  # the backoff (5 s; the stored times are the runs', not the broker's)
    wait(lambda: not own_containers(second_engine.client, {f"{HOST}:{b.pid}"}), 30, "no container of b's", logs)
