"""The deployment stack of docker-compose.yml: a PostgreSQL registry and the web app, built offline.

Both images start from the same offline base as the model images (``cortexbox/base:bookworm``,
made by :func:`cortexbox.orchestrator.images.build_base_image`), and nothing is pulled:

* ``cortexbox/registry-db`` (``registry/db-image``): Debian's PostgreSQL 15 from the apt mirror,
  listening only on a unix socket in a folder it shares with the host and the web container.
* ``cortexbox/web`` (``orchestrator/web-image``): ``cortexbox web`` in a venv installed with ``pip --no-index``
  from a build context holding a wheel of this checkout's cortexbox package, the SDK wheel and
  exactly the wheels their dependencies resolve to from the host's wheelhouse.

Compose cannot run the host-side wheelhouse step, so ``cortexbox image stack`` (:func:`build_stack`)
builds both images under the tags docker-compose.yml names, and ``docker-compose up -d`` then starts
them.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from cortexbox.orchestrator import images
from cortexbox.orchestrator.images import BuiltImage, ImageBuildError, Log
from cortexbox.orchestrator.provenance import checkout_root

logger = logging.getLogger(__name__)

REPO_ROOT = images.REPO_ROOT
DB_IMAGE_DIR = REPO_ROOT / "registry" / "db-image"
WEB_IMAGE_DIR = REPO_ROOT / "orchestrator" / "web-image"
DB_IMAGE = "cortexbox/registry-db:latest"
WEB_IMAGE = "cortexbox/web:latest"
#: The web image's database driver (a dev extra on the host, a requirement in the image).
DB_DRIVER = "psycopg2-binary"
#: The broker's client (celery[redis]'s, named so that it is pinned to the version here like the rest), and what only
#: the image's Python needs: wheels are selected with the host's Python markers, and redis wants async-timeout below
#: Python 3.11.3, which bookworm's 3.11.2 is.
IMAGE_PYTHON_REQUIREMENTS = ["redis", "async-timeout>=4.0.3"]
#: What goes into the cortexbox wheel: the package folders of pyproject's package-dir, and pyproject itself.
_PACKAGE_SOURCES = ("pyproject.toml", "orchestrator", "benchmarks", "registry")
_LOG_TAIL = 40
#: Fixed file times (1980-01-01, as in images.py), so unchanged sources give a byte-identical wheel.
_SOURCE_DATE_EPOCH = "315532800"


@dataclass(frozen=True)
class Stack:
    """The two images of the compose stack."""

    db: BuiltImage
    web: BuiltImage


def _project_metadata() -> dict:
    with open(REPO_ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0]


def _pinned(requirement: str) -> str:
    """`requirement` pinned to the version installed here, when one is installed, so the image runs
    what this checkout's tests ran with; otherwise the requirement as declared."""
    name = _name(requirement)
    try:
        version = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return requirement
    if "+" in version:  # a local build (e.g. +cpu) may exist only here
        return requirement
    extras = re.match(r"\s*[^\s<>=!~;\[(]+\s*(\[[^\]]*\])?", requirement).group(1) or ""  # celery[redis]: the redis client
    return f"{name}{extras}=={version}"


def web_requirements() -> list[str]:
    """The web image's third-party requirements: cortexbox's and the SDK's dependencies plus the
    PostgreSQL driver, each pinned to the version installed in this environment where there is one."""
    declared = [r for r in _project_metadata()["dependencies"] if _name(r) != "cortexbox-sdk"]
    declared += images.sdk_requirements() + [DB_DRIVER] + IMAGE_PYTHON_REQUIREMENTS
    seen: dict[str, str] = {}
    for requirement in declared:
        seen.setdefault(_name(requirement).lower().replace("_", "-"), _pinned(requirement))
    return sorted(seen.values(), key=str.lower)


def build_package_wheel(dest: str | Path) -> Path:
    """Builds a wheel of this checkout's cortexbox package (not the SDK) into `dest` and returns its path.

    Only the package's own folders are copied out first (so the checkout gets no ``build/`` and its
    ``.venv`` stays out), and file times are fixed, so unchanged sources give a byte-identical wheel.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cortexbox-pkg-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for name in _PACKAGE_SOURCES:
            path = REPO_ROOT / name
            if path.is_dir():
                shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
            else:
                shutil.copyfile(path, src / name)
        env = dict(os.environ, SOURCE_DATE_EPOCH=_SOURCE_DATE_EPOCH)
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-w", tmp, str(src)]
        done = subprocess.run([*cmd, "--no-build-isolation"], capture_output=True, text=True, env=env)
        if done.returncode != 0:
            done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise ImageBuildError(
                "building the cortexbox wheel failed", (done.stdout + done.stderr).splitlines()[-_LOG_TAIL:]
            )
        (wheel,) = Path(tmp).glob("cortexbox-*.whl")
        target = dest / wheel.name
        shutil.copyfile(wheel, target)
    return target


def assemble_web_context(context_dir: str | Path, *, wheelhouse: str | Path | None = None, log: Log = logger.info) -> Path:
    """Fills `context_dir` with ``orchestrator/web-image``'s Dockerfile, ``own/`` (wheels of this checkout's cortexbox
    package and SDK) and ``wheels/`` (exactly the wheels :func:`web_requirements` resolve to, downloaded
    into the shared wheelhouse first where missing). They are apart so that the image's dependency layers
    stay cached while cortexbox's own code changes."""
    context = Path(context_dir)
    shutil.copytree(WEB_IMAGE_DIR, context, dirs_exist_ok=True, ignore=shutil.ignore_patterns("wheels", "own"))
    wheels = context / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    own = [build_package_wheel(context / "own"), images.build_sdk_wheel(context / "own")]
    requirements = web_requirements()
    house = Path(wheelhouse) if wheelhouse is not None else images.default_wheelhouse()
    with images.locked(house):  # other builds share the wheelhouse; pip writes into it in place
        images.ensure_wheelhouse(requirements, house, log=log)
        selected = images.select_wheels(requirements, house, wheels)
    size = sum(p.stat().st_size for p in selected)
    log(f"{len(selected)} wheels ({size / 1e6:.0f} MB) incl. {', '.join(p.name for p in own)} in the build context")
    return context


def build_stack(
    client: docker.DockerClient,
    *,
    base_image: str = images.DEFAULT_BASE_IMAGE,
    db_tag: str = DB_IMAGE,
    web_tag: str = WEB_IMAGE,
    wheelhouse: str | Path | None = None,
    nocache: bool = False,
    log: Log = logger.info,
) -> Stack:
    """Builds the images docker-compose.yml runs: the base image first if it is missing (debootstrap,
    needs root; only for the default tag), then the PostgreSQL image and the web image.

    Raises
    ------
    ImageBuildError
        A missing base image that cannot be built, an unresolvable requirement or a failed build step; or no
        checkout to package (an installed cortexbox lacks the image folders and pyproject.toml).
    """
    if checkout_root() is None:
        raise ImageBuildError("the compose stack is built from a source checkout of cortexbox, and this one is installed",
                              hint="run cortexbox image stack from a clone (pip install -e .)")
    try:
        client.images.get(base_image)
    except docker.errors.ImageNotFound:
        if base_image != images.DEFAULT_BASE_IMAGE:
            raise ImageBuildError(f"base image {base_image} is not present and cannot be pulled here") from None
        images.build_base_image(client, base_image, log=log)
    # Our own Dockerfiles, whose apt steps reach the mirror on the host's network: no bridge needed (the stack
    # itself never uses one, and an engine may have none).
    db = images.build_image(client, DB_IMAGE_DIR, db_tag, base_image=base_image, nocache=nocache, network_mode="host",
                            log=log)
    with tempfile.TemporaryDirectory(prefix="cortexbox-web-context-") as tmp:
        context = assemble_web_context(Path(tmp) / "context", wheelhouse=wheelhouse, log=log)
        web = images.build_image(client, context, web_tag, base_image=base_image, nocache=nocache, network_mode="host",
                                 log=log)
    return Stack(db=db, web=web)
