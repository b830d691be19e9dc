"""The deployment stack, for real: `cortexbox image stack` builds the PostgreSQL and web images from the
offline base, `docker-compose up` starts them, a score made on the host with `cortexbox score` lands in
that PostgreSQL through the shared unix socket, and the web container serves it on 127.0.0.1. With two workers
(`--scale worker=2`), a model pushed to the stack's image registry is scored from the web API by a worker container
and followed live, and `down`/`up` keeps everything.

Every run uses its own compose project, socket folder, run folder and ports, and ends with `down -v`, so nothing
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
#: What the workers score from the web: pixels on 92 images, a container run of a few seconds.
BENCHMARK_QUEUED = "Kriegeskorte2008.hIT-rdm"


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
        self.run_dir = tempfile.mkdtemp(prefix="cbx-runs-", dir="/tmp")  # the workers' run folders, same path inside
        self.port = _free_port()
        self.registry_port = _free_port()
        self.env = {**os.environ, "CORTEXBOX_DB_SOCKET_DIR": self.socket_dir, "CORTEXBOX_WEB_PORT": str(self.port),
                    "CORTEXBOX_REGISTRY_PORT": str(self.registry_port), "CORTEXBOX_WORKER_RUN_DIR": self.run_dir,
                    "CORTEXBOX_DATA_DIR": str((REPO / ".." / "shared" / "data").resolve())}
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
        shutil.rmtree(project.run_dir, ignore_errors=True)
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


def _services(compose: Compose, docker_client) -> dict[str, list]:
    found: dict[str, list] = {}
    for c in docker_client.containers.list(filters={"label": f"com.docker.compose.project={compose.project}"}):
        found.setdefault(c.labels["com.docker.compose.service"], []).append(c)
    return found


def _wait(predicate, timeout_s: float, what: str, compose: Compose):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            logs = subprocess.run([*compose.command, "-p", compose.project, "logs", "--tail", "30"],
                                  capture_output=True, text=True, env=compose.env).stdout
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}; logs:\n{logs[-5000:]}")
        time.sleep(0.5)


def _post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _follow(url: str, timeout_s: float) -> list[tuple[str, dict]]:
    """The server-sent events of ``url`` until its stream ends (a batch's stream ends after its ``done``)."""
    events: list[tuple[str, dict]] = []
    deadline = time.monotonic() + timeout_s
    kind = None
    with urllib.request.urlopen(url, timeout=60) as response:
        for raw in response:
            assert time.monotonic() < deadline, f"the stream of {url} ran past {timeout_s} s: {events[-5:]}"
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind:
                events.append((kind, json.loads(line[6:])))
                kind = None
    return events


@pytest.mark.slow
@pytest.mark.data
def test_compose_workers_score_what_the_web_queues_and_down_up_keeps_it(compose, stack_images, template_image,
                                                                        docker_client, data_dir):
    import psycopg2

    from cortexbox.orchestrator.image_registry import split_reference

    start = time.monotonic()
    compose("up", "-d", "--scale", "worker=2")
    compose.wait_for_web()
    services = _services(compose, docker_client)
    workers = services["worker"]
    print(f"stack with 2 workers up in {time.monotonic() - start:.1f} s")
    assert len(workers) == 2
    assert services["broker"][0].attrs["HostConfig"]["NetworkMode"] == "none"
    appendonly = services["broker"][0].exec_run(["redis-cli", "-s", "/run/cortexbox-db/redis.sock", "config", "get", "appendonly"])
    assert appendonly.output.decode().split() == ["appendonly", "yes"]
    for worker in workers:
        host = worker.attrs["HostConfig"]
        assert host["NetworkMode"] == "host" and host["ReadonlyRootfs"] and host["CapDrop"] == ["ALL"]
        assert f"{compose.run_dir}:{compose.run_dir}:rw" in host["Binds"]  # the same path on both sides
        assert any(b.endswith(":/var/run/docker.sock:rw") for b in host["Binds"])
    # Both workers answer the broker's ping, each under its own name (the replicas share the host's name).
    alive = _wait(lambda: len(w := json.loads(_get(compose.url + "/api/queue")[1])["broker"]["workers_alive"]) == 2 and w,
                  90, "two workers answering the broker", compose)
    assert all(name.startswith("compose@ctr-") for name in alive)

    # A model pushed to the stack's image registry and registered by its reference by digest.
    env = {"CORTEXBOX_DATABASE_URL": compose.database_url, "CORTEXBOX_IMAGE_REGISTRY": f"127.0.0.1:{compose.registry_port}"}
    added = cortexbox("models", "add", template_image("pixels"), "--json", env=env, timeout=300)
    assert added.returncode == 0, added.stderr[-3000:]
    model = json.loads(added.stdout)
    assert split_reference(model["reference"])[0] == f"127.0.0.1:{compose.registry_port}"

    # Scored from the web API: queued, taken by a worker container, followed live from the web container.
    t0 = time.monotonic()
    status, started = _post(compose.url + "/api/runs", {"model": model["model"], "benchmark": BENCHMARK_QUEUED})
    assert status == 202, started
    (job,) = started["jobs"]
    events = _follow(compose.url + started["events_url"], 600)
    print(f"queued and scored by a worker in {time.monotonic() - t0:.1f} s, {len(events)} events")
    names = [kind for kind, _ in events]
    assert names[0] == "status" and names[-1] == "done" and events[-1][1]["status"] == "succeeded", events[-5:]
    (run,) = [data for kind, data in events if kind == "run"]
    assert run["job_id"] == job["job_id"] and run["worker"].startswith("compose@ctr-")
    assert "progress" in names and [d["benchmark"] for k, d in events if k == "score"] == [BENCHMARK_QUEUED]
    # The run's own page and stream, as any web process shows a run scored elsewhere; its scorer is a worker container.
    run_events = _follow(compose.url + f"/api/runs/{run['run_id']}/events", 60)
    assert run_events[0][1]["host"].startswith("ctr-")
    assert run_events[-1][0] == "done" and run_events[-1][1]["status"] == "succeeded"
    assert _get(compose.url + f"/runs/{run['run_id']}/live")[0] == 200

    # Asking again adds nothing: the same job, scored once.
    status, again = _post(compose.url + "/api/runs", {"model": model["model"], "benchmark": BENCHMARK_QUEUED})
    assert status == 202 and [(j["job_id"], j["status"]) for j in again["jobs"]] == [(job["job_id"], "succeeded")]

    def registry_state():
        with psycopg2.connect(host=compose.socket_dir, user="cortexbox", dbname="cortexbox") as conn, conn.cursor() as cur:
            cur.execute("SELECT j.id, j.status, j.worker, s.ceiled, s.provenance::text FROM score_job j "
                        "JOIN score s ON s.job_id = j.id")
            rows = cur.fetchall()
            cur.execute("SELECT count(*) FROM score")
            (scores,) = cur.fetchone()
        conn.close()
        return rows, scores

    rows, scores = registry_state()
    assert scores == 1 and len(rows) == 1
    job_id, job_status, worker, ceiled, provenance = rows[0]
    assert (job_id, job_status) == (job["job_id"], "succeeded") and worker == run["worker"]
    assert split_reference(model["reference"])[2] in provenance  # the score names the registry digest

    # down/up keeps everything (PostgreSQL's and Redis's volumes); the new containers serve the same score.
    owners = {f"ctr-{w.id[:12]}" for w in workers}
    compose("down", "-t", "10")
    compose("up", "-d", "--scale", "worker=2")
    compose.wait_for_web()
    status, body = _get(compose.url + "/api/leaderboard")
    assert status == 200, body
    assert _leaderboard_cell(json.loads(body), model["model"], BENCHMARK_QUEUED)["value"] == pytest.approx(ceiled, rel=1e-12)
    assert registry_state() == (rows, 1)
    assert json.loads(_get(compose.url + "/api/queue")[1])["counts"] == {"succeeded": 1}
    owners |= {f"ctr-{w.id[:12]}" for w in _services(compose, docker_client)["worker"]}

    compose("down", "-t", "10")
    assert not docker_client.containers.list(all=True, filters={"label": f"com.docker.compose.project={compose.project}"})
    left = [c.name for c in docker_client.containers.list(all=True, filters={"label": "cortexbox.owner"})
            if c.labels["cortexbox.owner"].split("-s")[0] in owners]
    assert not left, f"model containers of the workers left behind: {left}"
    try:  # the local tag the push made on this engine (the image keeps its own)
        docker_client.images.remove(f"127.0.0.1:{compose.registry_port}/cortexbox/pixels:id-{model['digest'].split(':')[1][:40]}")
    except Exception:  # noqa: BLE001 - another name, or gone
        pass
    print(f"whole test {time.monotonic() - start:.1f} s")


@pytest.mark.slow
@pytest.mark.data
def test_compose_a_team_uploads_a_tarball_to_the_web_container_and_a_worker_container_loads_pushes_and_scores_it(
        compose, stack_images, template_image, docker_client, data_dir, tmp_path):
    """The competition flow on the stack: the organiser, a team and an open competition made from the host in the
    stack's community database (PostgreSQL cortexbox_community, through the socket folder); the team uploads a real
    `docker save` tarball of the pixels template over HTTP to the web container, which has no engine socket; a worker
    container loads it into the host's engine, pushes it to the stack's image registry and scores it by that
    reference by digest; the staged archive is gone from the uploads volume."""
    from sqlmodel import select

    from cortexbox.orchestrator.image_registry import split_reference
    from cortexbox.registry import Registry
    from cortexbox.registry.models import Submission, SubmissionRun
    from tests.orchestrator.test_competitions_helpers import spec

    slug = f"cmp-{compose.project[-8:]}"
    pushed_repository = f"127.0.0.1:{compose.registry_port}/cortexbox-submission/{slug}"
    start = time.monotonic()
    compose("up", "-d")
    compose.wait_for_web()
    services = _services(compose, docker_client)
    (web,), (worker,) = services["web"], services["worker"]
    print(f"stack with 1 worker up in {time.monotonic() - start:.1f} s")
    # The web container has no engine: no socket mounted, none inside, no DOCKER_HOST.
    assert not any("docker.sock" in m["Source"] + m["Destination"] for m in web.attrs["Mounts"])
    assert web.exec_run(["test", "-e", "/var/run/docker.sock"]).exit_code != 0
    assert not any(e.startswith("DOCKER_HOST=") for e in web.attrs["Config"]["Env"])
    uploads = [m for m in web.attrs["Mounts"] if m["Destination"] == "/var/lib/cortexbox/uploads"]
    assert len(uploads) == 1 and uploads[0]["Type"] == "volume"

    # The organiser, a team and an open competition, from the host.
    community_url = f"postgresql+psycopg2://cortexbox@/cortexbox_community?host={compose.socket_dir}"
    env = {"CORTEXBOX_COMMUNITY_URL": community_url}
    t0 = time.monotonic()
    tokens = {}
    for name, extra in (("org", ["--admin"]), ("alice", [])):
        done = cortexbox("users", "add", name, *extra, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        tokens[name] = done.stdout.strip().splitlines()[-1]
    done = cortexbox("teams", "add", "red", "--user", "alice", env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec(slug, quota=2, limits={"upload": "1g", "unpacked": "2g"})))
    for args in (("competitions", "create", str(spec_path), "--organiser", "org"), ("competitions", "open", slug)):
        done = cortexbox(*args, env=env, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    print(f"organiser, team and open competition made from the host in {time.monotonic() - t0:.1f} s")

    pixels = template_image("pixels")
    tarball = tmp_path / "pixels.tar"
    with open(tarball, "wb") as f:
        for chunk in docker_client.images.get(pixels).save(chunk_size=1024**2):
            f.write(chunk)
    image_id = docker_client.images.get(pixels).id
    community = Registry(community_url)
    try:
        t0 = time.monotonic()
        with open(tarball, "rb") as f:
            request = urllib.request.Request(f"{compose.url}/api/competitions/{slug}/submissions", data=f, method="POST",
                                             headers={"Authorization": f"Bearer {tokens['alice']}",
                                                      "Content-Type": "application/x-tar",
                                                      "Content-Length": str(tarball.stat().st_size)})
            with urllib.request.urlopen(request, timeout=300) as response:
                assert response.status == 202
                sub = json.loads(response.read())
        print(f"{tarball.stat().st_size / 1e6:.0f} MB tarball accepted by the web container in {time.monotonic() - t0:.1f} s")
        assert sub["digest"] == image_id and sub["status"] == "queued"

        def ended():
            view = json.loads(_get_auth(f"{compose.url}/api/submissions/{sub['submission']}", tokens["alice"]))
            return view if view["status"] not in ("queued", "running") else None

        view = _wait(ended, 600, "the submission to be scored by the worker container", compose)
        print(f"loaded, pushed and scored by the worker container {time.monotonic() - t0:.1f} s after the upload")
        assert (view["status"], view["failure_class"], view["counts_quota"]) == ("succeeded", None, True), view
        assert [(r["benchmark"], r["status"]) for r in view["runs"]] == [("Kriegeskorte2008.hIT-rdm", "succeeded"),
                                                                        ("Kriegeskorte2008.judgements-rdm", "succeeded")]
        with community.session() as s:
            row = s.get(Submission, sub["submission"])
            runs = s.exec(select(SubmissionRun).where(SubmissionRun.submission_id == row.id)).all()
        registry_host, repository, digest = split_reference(row.image_ref)
        assert f"{registry_host}/{repository}" == pushed_repository and digest == row.registry_digest
        assert view["registry_digest"] == row.registry_digest
        for sr in runs:  # scored in the worker container (its host is the container's: ctr-<id>)
            first = community.run_events(sr.run_id, -1, 1)[0]
            assert first.data["host"].startswith(f"ctr-{worker.id[:12]}"), first.data
        assert worker.exec_run(["ls", "-A", "/var/lib/cortexbox/uploads"]).output == b""  # the archive was deleted
        board = json.loads(_get(f"{compose.url}/api/competitions/{slug}/board")[1])
        assert [(r["team"], r["submission"]) for r in board["rows"]] == [("red", sub["submission"])]
    finally:
        community.engine.dispose()
        for image in docker_client.images.list():
            for tag in image.tags:
                if tag.startswith((f"cortexbox-submission/{slug}:", f"{pushed_repository}:")):
                    docker_client.images.remove(tag)
    print(f"whole test {time.monotonic() - start:.1f} s")


def _get_auth(url: str, token: str) -> str:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read().decode()
