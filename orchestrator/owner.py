"""Who owns a model container or a run: a process, named so that another process can tell whether it still lives.

A process is ``<namespace>:<pid>``. On a host the namespace is the host name. Inside a container neither says
anything: with host networking every worker container carries the host's name, and each counts its own pids from 1,
so a pid judged from another container (or the host) names some other process. There the namespace names the
container and its start, ``ctr-<id, 12 hex>-<start>``: ``s<digits>`` is the start time the Docker engine reports
(the process found its own container on the engine it talks to, the one its model containers run on), else
``t<ticks>`` is its init's start tick. A pid is judged only from its own namespace; a ``ctr-…-s…`` namespace also by
the engine that holds the container (gone, stopped, or started again since: dead). That is how a worker container
reaps what a dead worker container left on their shared engine, and why no process ever misjudges another's pid.
"""

from __future__ import annotations

import functools
import os
import re
import socket
from typing import Any

#: Mount points Docker fills from /var/lib/docker/containers/<id>/ in every container (host networking too).
_ENGINE_FILES = ("/etc/hostname", "/etc/hosts", "/etc/resolv.conf")
_CONTAINER_DIR = re.compile(r"/containers/([0-9a-f]{64})/")
_CONTAINER_NAMESPACE = re.compile(r"ctr-([0-9a-f]{12})-([st])(\d+)")


@functools.lru_cache(maxsize=1)
def container_id() -> str | None:
    """The Docker container this process runs in (full id), or None on a host."""
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 4 and fields[4] in _ENGINE_FILES and (m := _CONTAINER_DIR.search(fields[3])):
                    return m.group(1)
    except OSError:
        pass
    return None


def _digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


def _started_on_engine(cid: str, client: Any = None) -> str | None:
    """The container's start time as digits, from the engine (``client``, else $DOCKER_HOST's); None if the engine
    cannot be reached or does not hold it."""
    try:
        if client is None:
            import docker

            client = docker.from_env(timeout=10)
        state = client.api.inspect_container(cid)["State"]
    except Exception:  # noqa: BLE001 - no engine here, or another engine: the caller falls back
        return None
    return _digits(state.get("StartedAt") or "") if state.get("Running") else ""


def _init_ticks() -> str:
    """When this pid namespace's init started (clock ticks since boot): changes with every start of the container."""
    try:
        with open("/proc/1/stat") as f:
            return f.read().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        return "0"


@functools.lru_cache(maxsize=1)
def namespace() -> str:
    """Where this process's pid means something: the host name, or ``ctr-<id>-<start>`` in a container."""
    cid = container_id()
    if cid is None:
        return socket.gethostname()
    started = _started_on_engine(cid)
    return f"ctr-{cid[:12]}-s{started}" if started else f"ctr-{cid[:12]}-t{_init_ticks()}"


def tag() -> str:
    """This process: ``<namespace>:<pid>`` (the model containers' owner label, a worker's lease)."""
    return f"{namespace()}:{os.getpid()}"


def alive(space: str, pid: int, client: Any = None) -> bool | None:
    """Whether process ``pid`` of namespace ``space`` lives: True or False where that can be told from here (this
    namespace; this container's earlier start; a container ``client``'s engine holds), None where it cannot."""
    mine = namespace()
    if space == mine:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    theirs, ours = _CONTAINER_NAMESPACE.fullmatch(space), _CONTAINER_NAMESPACE.fullmatch(mine)
    if theirs is None:
        return None  # another host's process
    if ours is not None and ours.group(1) == theirs.group(1) and ours.group(2) == theirs.group(2):
        return False  # this container, an earlier start of it: everything of that start is gone
    if theirs.group(2) != "s" or client is None:
        return None
    import docker.errors

    try:
        matches = client.api.containers(all=True, filters={"id": theirs.group(1)})
    except docker.errors.APIError:
        return None
    if not matches:
        return False  # removed (`docker-compose down`, a scaled-down worker)
    started = _started_on_engine(matches[0]["Id"], client)
    return None if started is None else started == theirs.group(3)


def gone(space: str | None, pid: Any, client: Any = None) -> bool:
    """True only where ``alive`` knows the process is dead."""
    return isinstance(space, str) and isinstance(pid, int) and alive(space, pid, client) is False
