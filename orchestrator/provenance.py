"""The code version and library versions that a score depends on."""

from __future__ import annotations

import functools
import importlib.metadata
import platform
import subprocess
import tomllib
from pathlib import Path


def checkout_root() -> Path | None:
    """The source checkout this package runs from (editable install or ``PYTHONPATH``): the folder above it when
    that holds cortexbox's ``pyproject.toml``; ``None`` for an installed distribution, whose folder may well lie in
    someone's git repository (a ``.venv`` inside a checkout) without being that repository's code."""
    root = Path(__file__).resolve().parents[1]
    try:
        with open(root / "pyproject.toml", "rb") as f:
            name = tomllib.load(f).get("project", {}).get("name")
    except (OSError, tomllib.TOMLDecodeError):
        return None
    return root if name == "cortexbox" else None


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """cortexbox's version, plus, in a checkout, its git commit ("+dirty" when it has uncommitted changes), so a
    score can be traced to the exact code. An installed distribution is its version alone."""
    try:
        version = importlib.metadata.version("cortexbox")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    repo = checkout_root()
    if repo is None:
        return version
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "describe", "--always", "--dirty", "--abbrev=12"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{version}+{commit}" if commit else version


@functools.lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("numpy", "scipy", "scikit-learn", "xarray"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions
