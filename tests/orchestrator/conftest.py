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
    for tag in built.values():
        try:
            docker_client.images.remove(tag, force=True)
        except docker.errors.ImageNotFound:
            pass
