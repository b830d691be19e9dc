"""A second Docker engine for tests: a ``dockerd`` of our own that stands in for another host.

It has its own data root (so it holds none of the first engine's images), exec root (its own containerd), pid
file, config file and unix socket, a bridge of its own and no iptables rules (model containers have no network
anyway, and the host's firewall stays as it was). Not ``--bridge=none``: a dockerd started so deletes the host's
``docker0`` (both engines share the network namespace), and the first engine's builds then fail. Everything it leaves is removed at :meth:`DockerEngine.stop`; every wait is
bounded.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path


class EngineError(RuntimeError):
    pass


class DockerEngine:
    """``with DockerEngine() as engine: engine.client ...``: a running second engine, removed on exit."""

    def __init__(self, prefix: str = "cbx-engine-"):
        # Short paths under /tmp: the socket and containerd's sockets in the exec root must fit in 108 bytes.
        self.root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
        self.socket = self.root / "docker.sock"
        self.host = f"unix://{self.socket}"
        self.process: subprocess.Popen | None = None
        self.client = None
        self.bridge = "cbx" + os.urandom(5).hex()  # interface names have at most 15 characters
        self._bridge_made = False

    def start(self, timeout_s: float = 60.0) -> "DockerEngine":
        import docker

        if shutil.which("dockerd") is None:
            raise EngineError("dockerd is not installed")
        made = subprocess.run(["ip", "link", "add", self.bridge, "type", "bridge"], capture_output=True, text=True,
                              timeout=30)
        if made.returncode != 0:
            raise EngineError(f"cannot create the bridge {self.bridge}: {made.stderr.strip()}")
        self._bridge_made = True
        config = self.root / "daemon.json"
        config.write_text("{}\n")  # not /etc/docker/daemon.json: the first engine's settings stay its own
        log = open(self.root / "dockerd.log", "ab")
        try:
            self.process = subprocess.Popen(
                ["dockerd", "--config-file", str(config), "--data-root", str(self.root / "data"),
                 "--exec-root", str(self.root / "exec"), "--pidfile", str(self.root / "docker.pid"), "-H", self.host,
                 f"--bridge={self.bridge}", "--iptables=false", "--ip-masq=false", "--ip-forward=false"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                tail = self.log_tail()
                self.stop()
                raise EngineError(f"the second dockerd exited at start: {tail}")
            try:
                client = docker.DockerClient(base_url=self.host, timeout=120)
                client.ping()
                self.client = client
                return self
            except Exception:  # noqa: BLE001 - not up yet
                if time.monotonic() > deadline:
                    self.stop()
                    raise EngineError(f"the second dockerd did not answer within {timeout_s:.0f} s") from None
                time.sleep(0.2)

    def log_tail(self, size: int = 2000) -> str:
        try:
            return (self.root / "dockerd.log").read_bytes()[-size:].decode("utf-8", "replace")
        except OSError:
            return ""

    def _containerd_pid(self) -> int | None:
        """The containerd this dockerd started (its pid file in our exec root), if it still runs ours."""
        try:
            pid = int((self.root / "exec" / "containerd" / "containerd.pid").read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode("utf-8", "replace")
        except (OSError, ValueError):
            return None
        return pid if str(self.root / "exec") in cmdline else None

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stops dockerd (SIGTERM, SIGKILL after `timeout_s`) and its containerd, unmounts what it left mounted
        under our root and removes the root."""
        containerd = self._containerd_pid()
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None
        if containerd is not None and self._containerd_pid() == containerd:  # dockerd was killed before stopping it
            os.kill(containerd, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while Path(f"/proc/{containerd}").exists() and time.monotonic() < deadline:
                time.sleep(0.1)
        for mount in reversed(self._mounts()):
            subprocess.run(["umount", "-l", mount], capture_output=True, timeout=30)
        if self._bridge_made:
            subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, timeout=30)
            self._bridge_made = False
        shutil.rmtree(self.root, ignore_errors=True)

    def _mounts(self) -> list[str]:
        try:
            lines = Path("/proc/self/mountinfo").read_text().splitlines()
        except OSError:
            return []
        root = str(self.root)
        return [p for p in (line.split()[4] for line in lines) if p == root or p.startswith(root + "/")]

    def __enter__(self) -> "DockerEngine":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
