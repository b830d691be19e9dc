"""Where a model server runs: a hardened Docker container, or an endpoint someone else runs.

A `ModelSession` is what the run loop sees either way: a connected, verified client plus
`diagnose()` (turn an error into a failure class using the container's state and log) and
`close()`. Sessions are context managers; every container is removed on every path.

The sandbox settings follow shared/research/competitions.md section 2.4: no network,
read-only root, bounded tmpfs, no capabilities, no-new-privileges, non-root user, pid,
memory and CPU limits, rotated logs, and a per-run unguessable socket folder as the only
mount. Before any stimulus is sent, the socket is lstat-checked and the server must prove
it holds the run's nonce.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import stat
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cortexbox.benchmarks.settings import settings
from cortexbox.orchestrator import budgets, image_registry, owner
from cortexbox.orchestrator.client import ModelClient, ModelDescription
from cortexbox.orchestrator.errors import FailureClass, ModelFailure, UserError
from cortexbox.sdk import wire

log = logging.getLogger("cortexbox.runtime")

SANDBOX_UID = 65534
LABEL_RUN = "cortexbox.run"
LABEL_OWNER = "cortexbox.owner"  # "<hostname>:<pid>" of the orchestrator that started it
#: Groups the containers of one deployment or test session ($CORTEXBOX_SCOPE), so that
#: several users of one Docker engine can tell their containers apart.
LABEL_SCOPE = "cortexbox.scope"


def scope() -> str:
    return settings().scope


def scope_filter() -> dict:
    """docker-py filters for the containers of this scope."""
    return {"label": [LABEL_RUN, f"{LABEL_SCOPE}={scope()}"]}
SOCKET_IN_CONTAINER = "/run/cortexbox/model.sock"
#: Budgets as "key=value,..." over SandboxLimits' defaults, e.g. "pids=96,cpus=1,run_dir_bytes=32m".
ENV_SANDBOX = "CORTEXBOX_SANDBOX"


def host_cpus() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def default_cpus() -> float:
    """Every core but one: a model (or its fork bomb) always leaves one to the orchestrator and the host."""
    return float(max(1, host_cpus() - 1))


#: The pids limit per OCI runtime when none is configured (see SandboxLimits.pids).
DEFAULT_PIDS = {"runc": 128, "runsc": 512}


@dataclass(frozen=True)
class SandboxLimits:
    """Everything a model container may take from the host, in one place: configurable
    ($CORTEXBOX_SANDBOX, `configured`) and recorded with every run (`to_dict`). Defaults fit a
    2-core, 24 GiB machine; the wire's own budgets (message sizes, rates) live with the client."""

    memory_bytes: int = 8 * 1024**3  # RAM + swap; the tmpfs below and the run folder count toward it
    cpus: float = field(default_factory=default_cpus)  # CPU quota (nano_cpus)
    cpu_shares: int = 512  # weight under contention: half an ordinary container's 1024
    #: Processes + threads; None: the runtime's default (`DEFAULT_PIDS`). Under runc a fork bomb stops here (512
    #: drove the load to 101 on 2 cores); under runsc the limit also counts gVisor's own host threads, so 128 kills
    #: the sandbox on 4 ordinary forks, and a fork bomb at 512 still only crashes the sandbox (perf/hostile_zoo.md).
    pids: int | None = None
    tmpfs_bytes: int = 1024**3  # /tmp in the container
    file_bytes: int = 1 << 30  # the fsize ulimit: one file, anywhere
    #: The run folder on the host (the socket's folder, the only mount) is a tmpfs of this many bytes and
    #: inodes (files, folders, so depth too) when the orchestrator is root: a model cannot fill the host's disk.
    run_dir_bytes: int = 16 * 1024**2
    run_dir_inodes: int = 256
    #: How the run folder's total is held: "tmpfs" (the kernel's, when the orchestrator is root; else "watch"),
    #: or "watch": `RunDirWatch` sums the folder every `run_dir_poll_s` and stops the container past the budget.
    run_dir_limit: str = "tmpfs"
    run_dir_poll_s: float = 0.05
    log_file_bytes: int = 5 * 1024**2  # Docker's json-file log, two files of this size
    log_tail_lines: int = 60  # the log tail kept with a failure (stored, shown) ...
    log_tail_bytes: int = 8 * 1024  # ... and its size, bounded when it is read from Docker
    #: `docker build` of a model project (the legacy builder: memory and a cpuset per RUN step, no network;
    #: it has no pids limit or capability settings, see images.py).
    build_memory_bytes: int = 4 * 1024**3
    startup_timeout_s: float = 30.0  # container start until the socket exists
    load_timeout_s: float = 300.0  # socket until health says SERVING
    idle_timeout_s: float = 600.0  # the server exits when nobody talks to it this long
    #: The engine's OCI runtime for the container: "runc", or "runsc" (gVisor: the model's system calls meet
    #: a user-space kernel, not the host's); the engine must know it (dockerd --add-runtime, scripts/setup.sh).
    runtime: str = "runc"

    def __post_init__(self):
        _runtime_name(self.runtime)
        _run_dir_limit(self.run_dir_limit)
        if self.pids is None:
            object.__setattr__(self, "pids", DEFAULT_PIDS.get(self.runtime, DEFAULT_PIDS["runc"]))

    @classmethod
    def configured(cls, **overrides) -> "SandboxLimits":
        """The defaults, then $CORTEXBOX_SANDBOX, then `overrides` (None means: not given)."""
        values = _parse_budgets(settings().sandbox, cls)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)

    def build_container_limits(self) -> dict:
        """docker-py's `container_limits` of a build: memory = memory + swap, and as many cores as `cpus`."""
        cores = sorted(os.sched_getaffinity(0))[: max(1, int(self.cpus))]
        return {"memory": self.build_memory_bytes, "memswap": self.build_memory_bytes,
                "cpusetcpus": ",".join(map(str, cores)), "cpushares": self.cpu_shares}


def _parse_budgets(text: str, cls=SandboxLimits) -> dict:
    return budgets.parse(text, cls, variable=ENV_SANDBOX, example="pids=96,cpus=1,run_dir_bytes=32m",
                         strings={"runtime": lambda raw: _runtime_name(raw), "run_dir_limit": _run_dir_limit})


def _run_dir_limit(value: str) -> str:
    if value not in ("tmpfs", "watch"):
        raise UserError(f"run_dir_limit={value!r} is neither tmpfs nor watch", "e.g. run_dir_limit=watch")
    return value


def _runtime_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
        raise UserError(f"{name!r} is not a container runtime's name", "e.g. runtime=runc or runtime=runsc")
    return name


def check_runtime(docker, name: str) -> None:
    """A UserError unless the engine knows the OCI runtime `name` (runc always is)."""
    if name == "runc":
        return
    known = set((docker.info().get("Runtimes") or {}).keys())
    if name not in known:
        hint = ("scripts/setup.sh installs gVisor and starts dockerd with --add-runtime runsc=/usr/local/bin/cortexbox-runsc "
                "(runsc --network=none --host-uds=all) when the engine is not running" if name == "runsc"
                else "register it with dockerd --add-runtime")
        raise UserError(f"the Docker engine has no runtime {name!r} (it has {', '.join(sorted(known))})", hint)


def docker_client():
    """A Docker client, or a UserError that says how to start the engine."""
    try:
        import docker
    except ImportError as e:  # pragma: no cover - a dependency of ours
        raise UserError("the Docker SDK for Python is not installed", "pip install docker") from e
    try:
        client = docker.from_env(timeout=120)
        client.ping()
        return client
    except Exception as e:  # noqa: BLE001 - docker raises many kinds here
        raise UserError(
            f"cannot reach the Docker engine ({type(e).__name__})",
            "start it, e.g. `sudo dockerd > /tmp/dockerd.log 2>&1 &` (or `sudo systemctl start docker`), "
            "or score a running model server with --endpoint",
        ) from None


def _owner_tag() -> str:
    return owner.tag()


def reap_orphans(client) -> int:
    """Removes containers of ours whose orchestrator process is known to be gone (orchestrator/owner.py: one of
    this host or container, or a worker container on this engine), e.g. after a SIGKILL. Returns how many."""
    removed = 0
    for container in client.containers.list(all=True, filters={"label": LABEL_OWNER}):
        space, _, pid = container.labels.get(LABEL_OWNER, "").rpartition(":")
        if not pid.isdigit() or not owner.gone(space, int(pid), client):
            continue
        container.remove(force=True)
        removed += 1
    return removed


def runs_root() -> Path:
    """Where the per-run folders live: $CORTEXBOX_RUN_DIR, else <tmp>/cortexbox-runs."""
    return settings().run_dir


_MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MNT_DETACH = 2, 4, 8, 2


def _libc():
    import ctypes
    import ctypes.util

    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def mount_run_tmpfs(path: Path, limits: SandboxLimits) -> bool:
    """Mounts a tmpfs of `run_dir_bytes` and `run_dir_inodes` over `path`, owned by the sandbox user:
    the model's only writable host folder then has a total size, a file count and so a depth, and its
    pages count toward the container's memory. Needs root (else False: a plain folder, per-file limit
    only). Docker must share our mount namespace (dockerd started from a shell or plain systemd)."""
    if os.geteuid() != 0:
        return False
    import ctypes

    options = (f"size={limits.run_dir_bytes},nr_inodes={limits.run_dir_inodes},mode=0700,"
               f"uid={SANDBOX_UID},gid={SANDBOX_UID}")
    if _libc().mount(b"tmpfs", os.fsencode(path), b"tmpfs", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, options.encode()) != 0:
        log.warning("no tmpfs for the run folder %s (%s): it has no total size", path, os.strerror(ctypes.get_errno()))
        return False
    return True


def remove_run_dir(path: Path) -> bool:
    """Removes a run folder whatever the model left in it, never raising: its tmpfs is detached (which
    frees it all at once, no walk); what is left is removed by rm's fts, which goes to any depth without
    recursion, never follows a symlink and never crosses into another file system. True when it is gone."""
    import ctypes

    try:
        if os.path.ismount(path) and _libc().umount2(os.fsencode(path), _MNT_DETACH) != 0:
            log.warning("could not unmount the run folder %s: %s", path, os.strerror(ctypes.get_errno()))
        done = subprocess.run(["rm", "-rf", "--one-file-system", "--", str(path)], capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            log.warning("could not remove the run folder %s: %s", path, done.stderr.strip()[-500:])
    except (OSError, subprocess.SubprocessError) as e:
        log.warning("could not remove the run folder %s: %s", path, e)
    return not os.path.lexists(path)


class RunDirWatch:
    """The run folder's total without root (no tmpfs): a thread sums the folder every `run_dir_poll_s` with
    os.scandir, never following a link, counting at most `run_dir_inodes` + 1 entries (files, folders, links: so
    depth too), and bytes as allocated (st_blocks: a sparse file counts what it takes). Past either budget, or on
    a folder it may not read (the model hid something), it seals the folder (mode 0555: the folder is ours, so no
    new file in it) and kills the container once (`stop`), and keeps the reason; the session then reports
    `out_of_disk`. The overshoot is what the model writes between two looks and, into files already open or its
    own sub-folders, until the kill lands (the fsize ulimit bounds each file; perf/hostile_zoo.md)."""

    def __init__(self, path: Path, limits: SandboxLimits, stop):
        import threading

        self.path, self.limits, self.stop = path, limits, stop
        self.reason: str | None = None
        self.peak_bytes = 0
        self.peak_entries = 0
        self._done = threading.Event()
        self._lock = threading.Lock()  # the thread and the session's diagnosis both look
        self._thread = threading.Thread(target=self._loop, name="run-dir-watch", daemon=True)

    def start(self) -> "RunDirWatch":
        self._thread.start()
        return self

    def measure(self) -> tuple[int, int, str | None]:
        """(bytes, entries, why it is over or None), walking no more than the entry budget allows."""
        cap = self.limits.run_dir_inodes
        total, entries, todo = 0, 0, [str(self.path)]
        while todo:
            try:
                with os.scandir(todo.pop()) as listing:
                    for entry in listing:
                        entries += 1
                        if entries > cap:
                            return total, entries, f"more than {cap} files and folders"
                        st = entry.stat(follow_symlinks=False)
                        total += st.st_blocks * 512
                        if stat.S_ISDIR(st.st_mode):
                            todo.append(entry.path)
            except FileNotFoundError:
                continue  # removed while we looked
            except PermissionError:
                return total, entries, "a folder the host may not read"
        if total > self.limits.run_dir_bytes:
            return total, entries, f"{total / 2**20:.1f} MiB, over its {self.limits.run_dir_bytes / 2**20:.0f} MiB"
        return total, entries, None

    def check(self) -> str | None:
        """One look: the reason (and the container stopped) when the folder is over a budget."""
        with self._lock:
            return self._check()

    def _check(self) -> str | None:
        if self.reason is None:
            total, entries, why = self.measure()
            self.peak_bytes, self.peak_entries = max(self.peak_bytes, total), max(self.peak_entries, entries)
            if why is not None:
                self.reason = f"the model's run folder held {why}"
                try:  # no new file in the folder from now on (ours, so the model cannot undo it), then the kill
                    os.chmod(self.path, 0o555)
                except OSError as e:
                    log.warning("could not seal the run folder %s: %s", self.path, e)
                try:
                    self.stop()
                except Exception as e:  # noqa: BLE001 - gone already, or the engine is away: close() removes it
                    log.warning("could not stop the container over its run folder's budget: %s", e)
        return self.reason

    def _loop(self) -> None:
        while not self._done.wait(self.limits.run_dir_poll_s):
            try:
                if self.check() is not None:
                    return
            except OSError as e:  # never a reason to leave the run unwatched silently
                log.warning("run folder watch: %s", e)

    def close(self) -> None:
        """Stops looking (the container is gone by now) and unseals the folder, so that its owner can empty it."""
        self._done.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        if self.reason is not None:
            try:
                os.chmod(self.path, 0o700)
            except OSError:
                pass


def _run_dir_owner(name: str) -> int | None:
    """The orchestrator pid that a run folder's name starts with ("<pid>-<token>..."), if any."""
    pid, sep, _ = name.partition("-")
    return int(pid) if sep and pid.isdigit() else None


def remove_orphaned_run_dirs(root: Path | None = None) -> list[Path]:
    """Removes the run folders (and their tmpfs) of orchestrator processes on this host that no longer
    exist, e.g. after a SIGKILL; the folders of live processes stay. Returns what was removed."""
    root = root or runs_root()
    removed = []
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return removed
    for entry in entries:
        pid = _run_dir_owner(entry.name)
        if pid is None or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            os.kill(pid, 0)
            continue  # still alive
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        if remove_run_dir(Path(entry.path)):
            removed.append(Path(entry.path))
    return removed


def check_socket(path: Path) -> bool:
    """Whether the model's socket exists, checked with lstat, never stat: it must be a real
    socket owned by the sandbox user, not a symlink the container planted to send us to
    another run's socket. False while it does not exist yet."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISSOCK(st.st_mode):
        raise ModelFailure(FailureClass.PROTOCOL_VIOLATION, "the model's socket path is not a plain socket")
    if os.geteuid() == 0 and st.st_uid != SANDBOX_UID:
        raise ModelFailure(FailureClass.PROTOCOL_VIOLATION, f"the model's socket is owned by uid {st.st_uid}")
    return True


def bound_log(raw: bytes, lines: int, size: int) -> str:
    """The end of a log, at most `lines` lines and `size` bytes (UTF-8, a marker included), starting at a
    line where one starts near the cut: what a model prints is stored and shown only this big."""
    parts = raw.splitlines(keepends=True)
    kept = b"".join(parts[max(0, len(parts) - lines) :])
    if len(kept) == len(raw) and len(kept) <= size:
        return kept.decode("utf-8", "replace")
    marker = "[... {} bytes of earlier log cut ...]\n"
    room = max(0, size - len(marker) - 20)
    if len(kept) > room:
        kept = kept[len(kept) - room :]
        newline = kept.find(b"\n", 0, 1024)
        if 0 <= newline < len(kept) - 1:
            kept = kept[newline + 1 :]
    return marker.format(len(raw) - len(kept)) + kept.decode("utf-8", "replace")


class ModelSession:
    """A verified connection to one model server."""

    client: ModelClient
    description: ModelDescription
    image_id: str | None = None  # the content-addressed image id, when we started it
    sandbox: dict | None = None  # the budgets it runs under (SandboxLimits.to_dict()), for provenance

    def diagnose(self, error: ModelFailure) -> ModelFailure:
        return error

    def check_budgets(self) -> None:
        """Raises the failure of a budget the host watches (not the kernel) that a run passed, even one that
        finished before the container could be stopped (ContainerSession: the run folder's RunDirWatch)."""

    def log_tail(self) -> str:
        return ""

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "ModelSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class EndpointSession(ModelSession):
    """A model server that is already running (an author iterating on a model): no Docker,
    no sandbox, no nonce."""

    def __init__(self, endpoint: str, load_timeout_s: float | None = None):
        if load_timeout_s is None:
            load_timeout_s = settings().endpoint_timeout_s
        target = endpoint
        if endpoint.startswith("unix:") and not endpoint.startswith("unix://"):
            target = "unix://" + endpoint[len("unix:") :]
        if target.startswith("unix://") and not os.path.exists(target[len("unix://") :]):
            raise UserError(f"no usable model server at {endpoint}: the socket does not exist",
                            "start one with `python -m cortexbox.sdk serve module:Class --address " + target + "`")
        self.client = ModelClient(target)
        try:
            self.client.wait_until_serving(load_timeout_s)
            self.description = self.client.info()
        except ModelFailure as e:
            self.client.close()
            raise UserError(f"no usable model server at {endpoint}: {e}", "is the server running? (python -m cortexbox.sdk serve ...)") from None


class ContainerSession(ModelSession):
    """Starts `image` in the sandbox, waits for it, verifies it; removes it on close()."""

    def __init__(self, docker, image: str, *, limits: SandboxLimits | None = None, run_root: Path | None = None):
        import docker as docker_sdk

        self.docker = docker
        self.limits = limits or SandboxLimits()
        self.container = None
        self.run_dir: Path | None = None
        self.watch: RunDirWatch | None = None
        # A reference by digest that names our registry is pulled when this engine lacks it, and checked.
        self.image_id = image_registry.local_image(docker, image).id
        check_runtime(docker, self.limits.runtime)
        try:
            self._start(docker_sdk, run_root)
            self._connect()
        except BaseException:
            self.close()
            raise

    def _start(self, docker_sdk, run_root: Path | None) -> None:
        from docker.types import LogConfig, Ulimit

        root = Path(run_root) if run_root else runs_root()
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(root, 0o711)  # others may traverse to their own folder but not list
        # Unguessable per-run folder; the container sees it at /run/cortexbox and nothing else. The name
        # starts with our pid, so that `cortexbox gc` can tell the folders of dead processes.
        # In a container our pid means nothing to `cortexbox gc` elsewhere: no pid in the name, never taken for dead.
        pid = os.getpid() if owner.container_id() is None else "c"
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"{pid}-{secrets.token_hex(16)}-", dir=root))
        # A tmpfs (root) holds the folder's total in the kernel, owned by the sandbox user, 0700; else RunDirWatch.
        tmpfs = self.limits.run_dir_limit == "tmpfs" and mount_run_tmpfs(self.run_dir, self.limits)
        if not tmpfs and os.geteuid() == 0 and self.limits.run_dir_limit == "tmpfs":  # the mount failed
            os.chown(self.run_dir, SANDBOX_UID, SANDBOX_UID)
            os.chmod(self.run_dir, 0o700)
        elif not tmpfs:
            os.chmod(self.run_dir, 0o777)
        self.sandbox = {**self.limits.to_dict(), "run_dir": "tmpfs" if tmpfs else "watched"}
        self.socket_path = self.run_dir / "model.sock"
        self.nonce = secrets.token_hex(32)
        self.run_id = secrets.token_hex(8)
        lim = self.limits
        # Created, then started: a container that cannot start (say, its runtime refuses it) is still ours to remove.
        self.container = self.docker.containers.create(
            self.image_id,
            runtime=lim.runtime,
            detach=True,
            auto_remove=False,  # keep it until we have read its state and log
            network_mode="none",
            read_only=True,
            tmpfs={"/tmp": f"rw,noexec,nosuid,nodev,size={lim.tmpfs_bytes}"},
            cap_drop=["ALL"],
            security_opt=["no-new-privileges:true"],
            user=f"{SANDBOX_UID}:{SANDBOX_UID}",
            pids_limit=lim.pids,
            mem_limit=lim.memory_bytes,
            memswap_limit=lim.memory_bytes,
            nano_cpus=int(lim.cpus * 1e9),
            cpu_shares=lim.cpu_shares,
            ipc_mode="private",
            shm_size="256m",
            ulimits=[
                Ulimit(name="nofile", soft=4096, hard=4096),
                Ulimit(name="core", soft=0, hard=0),
                Ulimit(name="fsize", soft=lim.file_bytes, hard=lim.file_bytes),
            ],
            init=True,
            log_config=LogConfig(type="json-file", config={"max-size": str(lim.log_file_bytes), "max-file": "2"}),
            environment={
                wire.ENV_SOCKET: SOCKET_IN_CONTAINER,
                wire.ENV_NONCE: self.nonce,
                wire.ENV_IDLE_TIMEOUT: str(int(lim.idle_timeout_s)),
                "HOME": "/tmp",
                "XDG_CACHE_HOME": "/tmp/.cache",
                "OMP_NUM_THREADS": str(max(1, int(lim.cpus))),
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
            },
            volumes={str(self.run_dir): {"bind": os.path.dirname(SOCKET_IN_CONTAINER), "mode": "rw"}},
            labels={LABEL_RUN: self.run_id, LABEL_OWNER: _owner_tag(), LABEL_SCOPE: scope()},
            hostname="model",
            stop_signal="SIGTERM",
        )
        if not tmpfs:
            self.watch = RunDirWatch(self.run_dir, lim, self._stop_container).start()
        try:
            self.container.start()
        except docker_sdk.errors.APIError as e:
            raise ModelFailure(FailureClass.CRASH, f"the container did not start: {e.explanation or e}") from None

    def _connect(self) -> None:
        deadline = time.monotonic() + self.limits.startup_timeout_s
        while True:
            self._raise_if_exited("while starting")
            if self._socket_ready():
                break
            if time.monotonic() > deadline:
                raise self._failure(
                    FailureClass.TIMEOUT, f"no model socket appeared within {self.limits.startup_timeout_s:.0f} s"
                )
            time.sleep(0.1)
        try:
            # Pinned by inode: no reconnection can reach another server than the one that passed the handshake.
            # The shared-memory transport (a memfd handed over in the run folder, no new mount) only under runc:
            # whether gVisor passes a host memfd into its sandbox as shared memory is not tested.
            self.client = ModelClient.for_socket(
                self.socket_path, nonce=self.nonce, owner_uid=SANDBOX_UID if os.geteuid() == 0 else None,
                shared_memory=self.limits.runtime == "runc",
            )
            self.client.wait_until_serving(self.limits.load_timeout_s, lambda: self._raise_if_exited("while loading"))
            self.client.handshake()
            self.description = self.client.info()
        except ModelFailure as e:
            raise self.diagnose(e) from None

    def _socket_ready(self) -> bool:
        try:
            return check_socket(self.socket_path)
        except ModelFailure as e:
            raise self._failure(e.failure, e.message) from None

    def _state(self) -> dict:
        try:
            self.container.reload()
            return self.container.attrs.get("State", {})
        except Exception:  # noqa: BLE001 - the container may be gone
            return {}

    def _stop_container(self) -> None:
        self.docker.api.kill(self.container.id)  # one call: every write until it lands is overshoot

    def _over_disk(self) -> ModelFailure | None:
        reason = self.watch.check() if self.watch is not None else None
        return None if reason is None else self._failure(FailureClass.OUT_OF_DISK, reason)

    def check_budgets(self) -> None:
        if (over := self._over_disk()) is not None:
            raise over

    def _raise_if_exited(self, when: str) -> None:
        if (over := self._over_disk()) is not None:
            raise over
        state = self._state()
        if state.get("Status") in ("exited", "dead"):
            if state.get("OOMKilled"):
                raise self._failure(FailureClass.OUT_OF_MEMORY, f"the container was killed for memory {when}")
            raise self._failure(FailureClass.CRASH, f"the container exited with code {state.get('ExitCode')} {when}")

    def log_tail(self) -> str:
        if self.container is None:
            return ""
        try:
            # Docker splits lines at 16 KiB, so this reads at most lines x 16 KiB; bound_log cuts it to size.
            raw = self.container.logs(tail=self.limits.log_tail_lines)
        except Exception:  # noqa: BLE001
            return ""
        return bound_log(raw, self.limits.log_tail_lines, self.limits.log_tail_bytes)

    def _failure(self, failure: FailureClass, message: str) -> ModelFailure:
        return ModelFailure(failure, message, log_tail=self.log_tail())

    def diagnose(self, error: ModelFailure) -> ModelFailure:
        """Refines a failure seen on the wire with what the container's state says: a broken
        stream is a crash, or an OOM kill; a hang is a timeout."""
        if self.container is None:
            return error
        if (over := self._over_disk()) is not None:  # stopped for its run folder: whatever the wire saw after
            return over
        if error.failure in (FailureClass.CRASH, FailureClass.PROTOCOL_VIOLATION, FailureClass.TIMEOUT):
            # A dying server breaks the stream first and exits a moment later.
            for _ in range(20):
                if self._state().get("Status") in ("exited", "dead"):
                    break
                if error.failure != FailureClass.CRASH:
                    break
                time.sleep(0.1)
        state = self._state()
        failure, message = error.failure, error.message
        if state.get("OOMKilled"):
            failure, message = FailureClass.OUT_OF_MEMORY, f"the container was killed for memory ({message})"
        elif state.get("Status") in ("exited", "dead") and error.failure in (FailureClass.CRASH, FailureClass.PROTOCOL_VIOLATION):
            failure, message = FailureClass.CRASH, f"the container exited with code {state.get('ExitCode')} ({message})"
        return ModelFailure(failure, message, log_tail=error.log_tail or self.log_tail(), reason=error.reason)

    def close(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            client.close()
        if self.container is not None:
            try:
                self.container.remove(force=True)
            except Exception as e:  # noqa: BLE001
                if "No such container" not in str(e):
                    log.warning("could not remove container %s: %s", self.container.id[:12], e)
            self.container = None
        if self.watch is not None:
            self.watch.close()
        if self.run_dir is not None:
            remove_run_dir(self.run_dir)
            self.run_dir = None


def open_session(
    *, image: str | None = None, endpoint: str | None = None, limits: SandboxLimits | None = None
) -> ModelSession:
    """A session on a sandboxed container of `image`, or on an existing `endpoint`."""
    if (image is None) == (endpoint is None):
        raise UserError("give exactly one of --model IMAGE and --endpoint ADDRESS")
    if endpoint is not None:
        return EndpointSession(endpoint)
    docker = docker_client()
    reap_orphans(docker)
    return ContainerSession(docker, image, limits=limits)


