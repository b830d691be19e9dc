"""Fixtures shared by the orchestrator's tests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

#: The hostile model project: one image per attack, chosen by the MODE file (tests/models/hostile).
HOSTILE = Path(__file__).resolve().parents[1] / "models" / "hostile"


@pytest.fixture(scope="session")
def hostile_image(docker_client, base_image, tmp_path_factory):
    """Builds the hostile image for a mode once per test session (one definition here, so that every module
    shares the same builds and the session removes each tag once). The tag names the session's process, so two
    sessions on one engine never remove each other's images (Docker's layer cache makes the second build cheap)."""
    import docker.errors

    from cortexbox.orchestrator import images

    built: dict[str, str] = {}

    def build(mode: str) -> str:
        if mode not in built:
            project = tmp_path_factory.mktemp(f"hostile-{mode}")
            shutil.copytree(HOSTILE, project, dirs_exist_ok=True)
            (project / "MODE").write_text(mode + "\n")
            built[mode] = images.build_model_image(docker_client, project, tag=f"cortexbox-test/hostile:{mode}-{os.getpid()}").tag
        return built[mode]

    yield build
    # The build stage of each image is tagged cortexbox-stage/...:<mode>-<pid> (images.keep_stages): ours, by this pid.
    stages = [f"{images.STAGE_REPOSITORY}/cortexbox-test--hostile--build:{tag.rpartition(':')[2]}" for tag in built.values()]
    for tag in [*built.values(), *stages]:
        try:
            docker_client.images.remove(tag, force=True)
        except docker.errors.ImageNotFound:
            pass


@pytest.fixture(scope="session")
def second_engine(docker_client):
    """A second Docker engine (its own dockerd, data root, exec root and socket; tests/orchestrator/engines.py)
    standing in for another host: it starts with no images. Stopped, and its state removed, at the end of the
    session; a container of ours left on it fails the session, as on the first engine."""
    from cortexbox.orchestrator.runtime import scope_filter
    from tests.orchestrator.engines import DockerEngine, EngineError

    try:
        engine = DockerEngine().start()
    except EngineError as e:
        pytest.fail(f"cannot start a second Docker engine: {e}")
    try:
        yield engine
        leftovers = engine.client.containers.list(all=True, filters=scope_filter())
        assert not leftovers, f"containers left behind on the second engine: {[c.name for c in leftovers]}"
    finally:
        engine.stop()


@pytest.fixture(scope="session")
def image_registry_server(tmp_path_factory):
    """Our image registry (Debian's docker-registry) on a free loopback port with its own storage, for the session."""
    import socket

    from cortexbox.orchestrator.image_registry import RegistryServer

    if shutil.which("docker-registry") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("docker-registry is not installed in CI (scripts/setup.sh installs it)")
        pytest.skip("docker-registry is not installed (scripts/setup.sh installs it)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = RegistryServer(f"127.0.0.1:{port}", tmp_path_factory.mktemp("registry-data")).start()
    try:
        yield server
    finally:
        server.stop()
