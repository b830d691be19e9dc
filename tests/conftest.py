"""Shared fixtures: the real data folder, a throwaway registry and cache, and Docker.

Tests that need Docker are marked `docker`. Where no engine is reachable they are skipped
on a developer's machine, but fail in CI (CI=true), where the engine must be there.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

# This test session's containers carry their own scope label, so that the leftover checks
# below never mistake another session's (or a user's) containers on the same engine for ours.
# Subprocesses (the CLI) inherit it.
os.environ["CORTEXBOX_SCOPE"] = f"tests-{secrets.token_hex(6)}"

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("CORTEXBOX_DATA_DIR") or REPO.parent / "shared" / "data")


#: Fixtures that mean a test needs Docker, or reads the shared data folder (directly or through other fixtures).
DOCKER_FIXTURES = {"docker_client", "base_image", "template_image", "hostile_image"}
DATA_FIXTURES = {"data_dir", "bench", "kriegeskorte_data_dir", "geirhos_data_dir"}


def pytest_collection_modifyitems(config, items):
    """Adds the `docker` and `data` markers from each test's fixture closure, so that `-m "not docker"` never starts
    a container even where a test forgot its marker."""
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if used & DOCKER_FIXTURES and not item.get_closest_marker("docker"):
            item.add_marker(pytest.mark.docker)
        if used & DATA_FIXTURES and not item.get_closest_marker("data"):
            item.add_marker(pytest.mark.data)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Every test gets its own registry database and activation cache."""
    home = tmp_path_factory.mktemp("cortexbox-home")
    monkeypatch.setenv("CORTEXBOX_HOME", str(home))
    monkeypatch.delenv("CORTEXBOX_DATABASE_URL", raising=False)
    yield home


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA_DIR.is_dir():
        pytest.fail(f"the shared data folder is missing: {DATA_DIR}")
    return DATA_DIR


@pytest.fixture(scope="session")
def docker_client():
    try:
        import docker

        client = docker.from_env()
        client.ping()
    except Exception as e:  # noqa: BLE001
        if os.environ.get("CI") == "true":
            pytest.fail(f"Docker is not reachable in CI: {e}")
        pytest.skip(f"Docker is not reachable: {e}")
    yield client
    from cortexbox.orchestrator.runtime import scope_filter

    leftovers = client.containers.list(all=True, filters=scope_filter())
    assert not leftovers, f"containers left behind: {[c.name for c in leftovers]}"


@pytest.fixture(scope="session")
def base_image(docker_client) -> str:
    from cortexbox.orchestrator import images

    images.build_base_image(docker_client)
    return "cortexbox/base:bookworm"


@pytest.fixture(scope="session")
def template_image(docker_client, base_image):
    """Builds a template's image once per session (Docker's layer cache makes rebuilds cheap)."""
    from cortexbox.orchestrator import images

    built: dict[str, str] = {}

    def build(name: str) -> str:
        if name not in built:
            built[name] = images.build_model_image(docker_client, REPO / "model_templates" / name).tag
        return built[name]

    return build
