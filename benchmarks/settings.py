"""cortexbox's settings: the one place that reads the environment.

Every ``CORTEXBOX_*`` variable is a field of :class:`Settings`, whose metadata names the variable, its default
and what it is for (``cortexbox settings`` prints them with where each value came from). :func:`settings` reads
the environment again on every call (a few ``os.environ`` lookups and one ``stat``), so a test that
monkeypatches a variable sees it at once and no process caches a stale value. Specs that have an owner are
kept raw here and parsed by it: ``$CORTEXBOX_SANDBOX`` by ``runtime.SandboxLimits``, ``$CORTEXBOX_WIRE`` by
``budgets.WireBudgets``, ``$CORTEXBOX_CACHE_MAX_BYTES`` by ``cache.ActivationCache``.

Why here: like :mod:`.errors`, this is the lowest layer that benchmarks, the registry and the orchestrator all
share, and benchmarks and the registry must not import the orchestrator (which imports both). The module
imports only the standard library and :mod:`.errors`. (Importing it loads the ``benchmarks`` package; every
entry point loads it anyway through the errors.)

No path here is derived from where the code lies: a non-editable install reads the same settings as a checkout.
The data folder's default is the project's documented layout seen from the current directory
(``../shared/data``), not from the package.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .errors import UserError

__all__ = ["DATA_DIR_DEFAULT", "Settings", "describe", "settings"]

#: The data folder when ``$CORTEXBOX_DATA_DIR`` is unset, relative to the current directory (a checkout next
#: to the shared data folder), used when it exists.
DATA_DIR_DEFAULT = Path("..") / "shared" / "data"


def _setting(env: str, default: str, help: str) -> Any:
    """A field's documentation: its variable, its default in words, what it is for."""
    return field(metadata={"env": env, "default": default, "help": help})


@dataclass(frozen=True)
class Settings:
    """The effective settings of this process; build them with :meth:`from_env` (or :func:`settings`)."""

    home: Path = _setting(
        "CORTEXBOX_HOME", "~/.cortexbox",
        "state: the SQLite registry, the activation cache (activations/), ingested recordings (benchmarks/)")
    database_url: str | None = _setting(
        "CORTEXBOX_DATABASE_URL", "SQLite file <home>/registry.db",
        "the registry's SQLAlchemy URL, e.g. PostgreSQL of docker-compose.yml")
    community_database_url: str | None = _setting(
        "CORTEXBOX_COMMUNITY_URL", "SQLite file <home>/community.db",
        "the community registry's SQLAlchemy URL (accounts, competitions, submissions): a database of its own, which "
        "the web app and every worker that scores submissions must share")
    data_dir: Path | None = _setting(
        "CORTEXBOX_DATA_DIR", "../shared/data from the current directory, when it exists",
        "benchmark data and model weights, read in place, never copied into the repository")
    run_dir: Path = _setting(
        "CORTEXBOX_RUN_DIR", "<tmp>/cortexbox-runs",
        "per-run folders on the host (a model container's socket, its only mount)")
    scope: str = _setting(
        "CORTEXBOX_SCOPE", "default",
        "label that groups the containers of one deployment or test session on a shared Docker engine")
    sandbox: str = _setting(
        "CORTEXBOX_SANDBOX", "SandboxLimits' defaults",
        "container budgets over SandboxLimits' defaults, key=value,... e.g. pids=96,cpus=1,run_dir_bytes=32m")
    wire: str = _setting(
        "CORTEXBOX_WIRE", "WireBudgets' defaults",
        "wire budgets over WireBudgets' defaults, key=value,... e.g. stall_timeout_s=30,output_bytes_per_run=2g")
    endpoint_timeout_s: float = _setting(
        "CORTEXBOX_ENDPOINT_TIMEOUT_S", "60",
        "seconds `score --endpoint` waits for a server you run yourself to say SERVING")
    cache_max_bytes: str = _setting(
        "CORTEXBOX_CACHE_MAX_BYTES", "min(32 GiB, half of the cache plus free disk)",
        "the activation cache's cap, e.g. 20g, 500m or bytes")
    asset_roots: tuple[Path, ...] = _setting(
        "CORTEXBOX_ASSET_ROOTS", "only the data folder's weight folders",
        f"more read-only folders of model weights that a cortexbox.toml's [assets] may copy, {os.pathsep}-separated")
    wheelhouse: Path = _setting(
        "CORTEXBOX_WHEELHOUSE", "$XDG_CACHE_HOME/cortexbox/wheelhouse (~/.cache/...)",
        "host-side cache of the wheels that model images install offline")
    image_registry: str | None = _setting(
        "CORTEXBOX_IMAGE_REGISTRY", "none: images stay on the engine that built them",
        "HOST:PORT of our image registry (`cortexbox registry serve`, e.g. 127.0.0.1:5000): models add pushes there, workers pull by digest")
    upload_dir: Path = _setting(
        "CORTEXBOX_UPLOAD_DIR", "<home>/uploads",
        "where the web app keeps submitted image tarballs until a worker loads them: with a broker, a folder the "
        "web app writes and every worker that scores submissions reads (docker-compose.yml: a shared volume)")
    broker_url: str | None = _setting(
        "CORTEXBOX_BROKER_URL", "none: jobs run in the process that asks for them",
        "Celery broker of `cortexbox worker`: redis://127.0.0.1:6379/0, redis+socket:///path.sock, or amqp://... (RabbitMQ)")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        """The settings of `environ` (default ``os.environ``); an empty variable counts as unset.

        Raises
        ------
        UserError
            A variable whose value is not of its kind (here: a timeout that is not a number).
        """
        env = os.environ if environ is None else environ

        def get(name: str) -> str:
            return (env.get(name) or "").strip()

        home = Path(get("CORTEXBOX_HOME") or Path.home() / ".cortexbox")
        if get("CORTEXBOX_DATA_DIR"):
            data_dir: Path | None = Path(get("CORTEXBOX_DATA_DIR")).expanduser().resolve()
        else:
            data_dir = DATA_DIR_DEFAULT.resolve() if DATA_DIR_DEFAULT.is_dir() else None
        timeout = get("CORTEXBOX_ENDPOINT_TIMEOUT_S") or "60"
        try:
            endpoint_timeout_s = float(timeout)
        except ValueError:
            raise UserError(f"CORTEXBOX_ENDPOINT_TIMEOUT_S={timeout!r} is not a number of seconds",
                            "write e.g. CORTEXBOX_ENDPOINT_TIMEOUT_S=120, or unset it (60)") from None
        cache = Path(get("XDG_CACHE_HOME") or Path.home() / ".cache")
        return cls(
            home=home,
            database_url=get("CORTEXBOX_DATABASE_URL") or None,
            community_database_url=get("CORTEXBOX_COMMUNITY_URL") or None,
            data_dir=data_dir,
            run_dir=Path(get("CORTEXBOX_RUN_DIR") or Path(tempfile.gettempdir()) / "cortexbox-runs"),
            scope=get("CORTEXBOX_SCOPE") or "default",
            sandbox=get("CORTEXBOX_SANDBOX"),
            wire=get("CORTEXBOX_WIRE"),
            endpoint_timeout_s=endpoint_timeout_s,
            cache_max_bytes=get("CORTEXBOX_CACHE_MAX_BYTES"),
            asset_roots=tuple(Path(p) for p in get("CORTEXBOX_ASSET_ROOTS").split(os.pathsep) if p),
            wheelhouse=Path(get("CORTEXBOX_WHEELHOUSE") or cache / "cortexbox" / "wheelhouse"),
            image_registry=get("CORTEXBOX_IMAGE_REGISTRY") or None,
            broker_url=get("CORTEXBOX_BROKER_URL") or None,
            upload_dir=Path(get("CORTEXBOX_UPLOAD_DIR") or home / "uploads"),
        )

    @property
    def registry_url(self) -> str:
        """The registry's URL: ``database_url``, else the SQLite file in ``home``."""
        return self.database_url or f"sqlite:///{self.home / 'registry.db'}"


def settings() -> Settings:
    """The settings of the environment as it is now (read on every call, cheap)."""
    return Settings.from_env()


def _hide_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def describe(environ: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """One row per setting: ``name``, ``env`` (its variable), ``value`` (effective; a password in a URL shown
    as ``***``; ``None``: not set and no default found), ``source`` (``"env"`` or ``"default"``), ``default``
    and ``help``. What ``cortexbox settings`` prints."""
    env = os.environ if environ is None else environ
    current = Settings.from_env(env)
    rows = []
    for f in dataclasses.fields(Settings):
        value: Any = getattr(current, f.name)
        if f.name == "database_url":
            value = _hide_password(current.registry_url)
        elif f.name == "broker_url" and value:
            value = _hide_password(value)
        elif isinstance(value, tuple):
            value = os.pathsep.join(map(str, value))
        elif isinstance(value, Path):
            value = str(value)
        rows.append({"name": f.name, "env": f.metadata["env"], "value": value,
                     "source": "env" if (env.get(f.metadata["env"]) or "").strip() else "default",
                     "default": f.metadata["default"], "help": f.metadata["help"]})
    return rows
