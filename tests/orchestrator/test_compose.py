"""The deployment stack, for real: `cortexbox image stack` builds the PostgreSQL and web images from the
offline base, `docker-compose up` starts them, a score made on the host with `cortexbox score` lands in
that PostgreSQL through the shared unix socket, and the web container serves it on 127.0.0.1.

Every run uses its own compose project, socket folder and port, and ends with `down -v`, so nothing
(container, network, volume) survives it, whatever happened. First build of the web image: about a
minute with a warm wheelhouse; later runs reuse Docker's layer cache (seconds, or ~20 s when
cortexbox's own code changed).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest

from tests.conftest import REPO
from tests.orchestrator.test_cli import cortexbox

pytestmark = pytest.mark.docker

BENCHMARK = "Cowley2023.V4-pls"


def _compose_command() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    message = "neither docker-compose nor `docker compose` is installed (scripts/setup.sh installs docker-compose)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 10) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class Compose:
    """One compose project of docker-compose.yml with its own socket folder and port."""

    def __init__(self):
        self.command = _compose_command()
        self.project = f"cbxtest{secrets.token_hex(4)}"
        self.socket_dir = tempfile.mkdtemp(prefix="cbx-db-", dir="/tmp")  # short: a socket path has ~100 bytes
        self.port = _free_port()
        self.env = {**os.environ, "CORTEXBOX_DB_SOCKET_DIR": self.socket_dir, "CORTEXBOX_WEB_PORT": str(self.port)}
        self.url = f"http://127.0.0.1:{self.port}"
        self.database_url = f"postgresql+psycopg2://cortexbox@/cortexbox?host={self.socket_dir}"

    def __call__(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [*self.command, "-f", str(REPO / "docker-compose.yml"), "-p", self.project, *args],
            capture_output=True, text=True, env=self.env, timeout=timeout,
        )
        assert done.returncode == 0, f"compose {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        return done

    def wait_for_web(self, timeout_s: float = 120) -> float:
        """Seconds until the web app answers; fails with both services' logs when it does not in time."""
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            try:
                if _get(self.url + "/api", timeout=3)[0] == 200:
                    return time.monotonic() - start
            except OSError:
                pass
            time.sleep(0.5)
        logs = subprocess.run([*self.command, "-p", self.project, "logs", "--tail", "40"],
                              capture_output=True, text=True, env=self.env).stdout
        pytest.fail(f"the web app did not answer on {self.url} within {timeout_s} s; logs:\n{logs[-4000:]}")

    def leftovers(self, docker_client) -> list[str]:
        label = {"label": f"com.docker.compose.project={self.project}"}
        return ([c.name for c in docker_client.containers.list(all=True, filters=label)]
                + [v.name for v in docker_client.volumes.list(filters=label)]
                + [n.name for n in docker_client.networks.list(filters=label)])


@pytest.fixture(scope="module")
def stack_images(docker_client, base_image):
    from cortexbox.orchestrator import deploy

    start = time.monotonic()
    stack = deploy.build_stack(docker_client, base_image=base_image)
    print(f"stack images built in {time.monotonic() - start:.1f} s: {stack}")
    return stack


@pytest.fixture
def compose(stack_images, docker_client):
    project = Compose()
    try:
        yield project
    finally:
        subprocess.run([*project.command, "-f", str(REPO / "docker-compose.yml"), "-p", project.project,
                        "down", "-v", "--remove-orphans", "-t", "10"], capture_output=True, env=project.env, timeout=180)
        shutil.rmtree(project.socket_dir, ignore_errors=True)
    assert not project.leftovers(docker_client), "compose left things behind"


def _leaderboard_cell(board: dict, model: str, benchmark: str) -> dict:
    (row,) = [r for r in board["rows"] if r["model"] == model]
    (node,) = [n for n in row["nodes"].values() if (n.get("leaf") or {}).get("benchmark") == benchmark]
    return node


def test_compose_serves_scores_stored_in_postgresql(compose, stack_images, template_image, docker_client):
    start = time.monotonic()
    compose("up", "-d")
    waited = compose.wait_for_web()
    print(f"stack up in {time.monotonic() - start:.1f} s (web answering {waited:.1f} s after `up` returned)")

    # Locked down as docker-compose.yml says: no network for the database, loopback only for the web app.
    containers = {c.labels["com.docker.compose.service"]: c for c in docker_client.containers.list(
        filters={"label": f"com.docker.compose.project={compose.project}"})}
    db, web = containers["registry-db"].attrs["HostConfig"], containers["web"].attrs
    assert db["NetworkMode"] == "none" and db["ReadonlyRootfs"]
    assert web["HostConfig"]["ReadonlyRootfs"] and web["Config"]["User"] == "65534:65534"
    assert web["HostConfig"]["CapDrop"] == ["ALL"]

    # An empty registry first: the web app made the schema in PostgreSQL (migrations on open).
    status, body = _get(compose.url + "/api/leaderboard")
    assert status == 200, body
    assert json.loads(body)["rows"] == []

    # A real score, made on the host, stored through the shared socket.
    image = template_image("pixels")
    result = cortexbox("score", "--model", image, "--benchmark", BENCHMARK, "--json",
                       env={"CORTEXBOX_DATABASE_URL": compose.database_url}, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout)

    status, body = _get(compose.url + "/api/leaderboard")
    assert status == 200, body
    cell = _leaderboard_cell(json.loads(body), outcome["model"], BENCHMARK)
    assert cell["leaf"]["status"] == "scored"
    assert cell["value"] == pytest.approx(outcome["ceiled"], rel=1e-12)
    status, page = _get(compose.url + "/")
    assert status == 200
    assert f">{outcome['model']}</a>" in page and f'data-v="{cell["value"]}"' in page

    # The rows really are in PostgreSQL (not a SQLite file somewhere): read them with psycopg2 directly.
    import psycopg2

    with psycopg2.connect(host=compose.socket_dir, user="cortexbox", dbname="cortexbox") as conn, conn.cursor() as cur:
        cur.execute("SELECT version()")
        assert cur.fetchone()[0].startswith("PostgreSQL 15")
        cur.execute("SELECT m.name, b.identifier, s.ceiled FROM score s JOIN model m ON m.id = s.model_id "
                    "JOIN benchmark b ON b.id = s.benchmark_id")
        rows = cur.fetchall()
    conn.close()
    assert [(name, identifier) for name, identifier, _ in rows] == [(outcome["model"], BENCHMARK)]
    assert rows[0][2] == pytest.approx(outcome["ceiled"], rel=1e-12)

    # The data live in the compose volume: a new pair of containers serves the same score.
    compose("down", "-t", "10")
    compose("up", "-d")
    compose.wait_for_web()
    status, body = _get(compose.url + "/api/leaderboard")
    assert status == 200, body
    assert _leaderboard_cell(json.loads(body), outcome["model"], BENCHMARK)["value"] == cell["value"]
