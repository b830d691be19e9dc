"""The broker is configuration: the same `cortexbox worker`, `enqueue` and `queue` over RabbitMQ (Debian's
rabbitmq-server, AMQP on 127.0.0.1) instead of Redis. A real broker node of our own (own node name, ports and
folders, stopped at the end), a real worker process, a real container: one job, one score, the broker's queue
length and the live worker read back through AMQP."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from cortexbox.registry import Registry
from tests.orchestrator.test_workers import cli, jobs, scores, wait

pytestmark = [pytest.mark.slow, pytest.mark.docker, pytest.mark.data]

RABBITMQ = shutil.which("rabbitmq-server") or (os.path.exists("/usr/sbin/rabbitmq-server") and "/usr/sbin/rabbitmq-server")
BENCHMARK = "Kriegeskorte2008.hIT-rdm"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _epmd_running() -> bool:
    return subprocess.run(["pgrep", "-x", "epmd"], capture_output=True).returncode == 0


def _node_processes(node: str) -> list[int]:
    """Processes whose environment names the node (the Erlang VM and its helpers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if f"RABBITMQ_NODENAME={node}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.fixture
def rabbitmq():
    """A RabbitMQ node on 127.0.0.1 in a folder of its own (Debian's script runs it as the rabbitmq user); its AMQP
    URL. Stopped, with the epmd it started, at the end."""
    if not RABBITMQ:
        pytest.skip("rabbitmq-server is not installed (scripts/setup.sh installs it)")
    folder = Path(tempfile.mkdtemp(prefix="cbx-rmq-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "rabbitmq", "rabbitmq")
    port, node = _free_port(), f"cbx-{secrets.token_hex(4)}@localhost"
    epmd_before = _epmd_running()
    env = {**os.environ, "RABBITMQ_MNESIA_BASE": str(folder / "mnesia"), "RABBITMQ_LOG_BASE": str(folder / "log"),
           "RABBITMQ_NODENAME": node, "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1", "RABBITMQ_NODE_PORT": str(port),
           "RABBITMQ_DIST_PORT": str(_free_port()), "RABBITMQ_ENABLED_PLUGINS_FILE": str(folder / "enabled_plugins"),
           "RABBITMQ_CONFIG_FILE": str(folder / "rabbitmq"), "ERL_EPMD_ADDRESS": "127.0.0.1"}
    log = open(folder / "out.log", "ab")
    process = subprocess.Popen([RABBITMQ], env=env, cwd=folder, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    log.close()
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, (folder / "out.log").read_text()[-3000:]
                time.sleep(0.5)
        yield f"amqp://guest:guest@127.0.0.1:{port}//"
    finally:
        # The node runs as the rabbitmq user in a session of its own: stopped by name, then by what is left of it.
        if shutil.which("rabbitmqctl"):
            subprocess.run(["rabbitmqctl", "--node", node, "stop"], capture_output=True, timeout=60)
        for pid in _node_processes(node) + [process.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        process.wait(10)
        if not epmd_before and shutil.which("epmd"):
            subprocess.run(["epmd", "-kill"], capture_output=True, timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


def test_a_worker_scores_a_job_over_rabbitmq(rabbitmq, template_image, data_dir, docker_client, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "CORTEXBOX_HOME": str(home), "CORTEXBOX_BROKER_URL": rabbitmq, "CORTEXBOX_DATA_DIR": str(data_dir)}
    for name in ("CORTEXBOX_DATABASE_URL", "CORTEXBOX_IMAGE_REGISTRY", "DOCKER_HOST"):
        env.pop(name, None)
    image = json.loads(cli(env, "models", "add", template_image("pixels"), "--json").stdout)["digest"]
    worker = subprocess.Popen([sys.executable, "-m", "cortexbox.orchestrator.cli", "worker", "--name", "rabbit"], env=env,
                              stdout=open(tmp_path / "worker-rabbit.log", "ab"), stderr=subprocess.STDOUT)
    try:
        cli(env, "enqueue", "--model", image, "--benchmark", BENCHMARK)
        registry = Registry(f"sqlite:///{home / 'registry.db'}")
        [job] = wait(lambda: [j for j in jobs(registry) if j.status in ("succeeded", "failed")], 240,
                     "the job to end over RabbitMQ", tmp_path)
        assert job.status == "succeeded" and job.attempts == 1, (job.status, job.error)
        [score] = scores(registry)
        assert score.job_id == job.id and 0 < score.ceiled <= 1
        cli(env, "enqueue", "--model", image, "--benchmark", BENCHMARK)  # asked again: nothing new
        report = json.loads(cli(env, "queue", "--json").stdout)
        assert report["broker"]["queue_length"] == 0 and "error" not in report["broker"], report["broker"]
        assert any(w.startswith("rabbit@") for w in report["broker"]["workers_alive"]), report["broker"]
        assert len(jobs(registry)) == 1 and len(scores(registry)) == 1
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(10)
    left = docker_client.containers.list(all=True, filters={"label": f"cortexbox.owner={socket.gethostname()}:{worker.pid}"})
    assert not left, [c.name for c in left]
