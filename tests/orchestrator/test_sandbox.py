"""Real containers that misbehave on purpose: the sandbox holds, every failure gets its class
and the container's log, and no container survives, whether the run ends, fails or is killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cortexbox.orchestrator.errors import FailureClass, ModelFailure
from cortexbox.orchestrator.runtime import ContainerSession, SandboxLimits, scope_filter

pytestmark = pytest.mark.docker



@pytest.fixture(autouse=True)
def no_container_survives(docker_client):
    yield
    left = docker_client.containers.list(all=True, filters=scope_filter())
    assert not left, f"containers left behind: {[c.name for c in left]}"


def stimuli(n: int):
    ids = [f"s{i:03d}" for i in range(n)]
    return ids, [(sid, np.full((16, 16, 3), i, np.uint8)) for i, sid in enumerate(ids)]


def run_in_sandbox(docker_client, image: str, n: int = 8, timeout_s: float = 60, limits: SandboxLimits | None = None):
    """Runs `n` stimuli through a fresh sandboxed container; returns the result or the
    diagnosed failure."""
    session = None
    try:
        session = ContainerSession(docker_client, image, limits=limits or SandboxLimits(memory_bytes=512 * 1024**2))
        ids, items = stimuli(n)
        return session.client.run(session.description, items, ids, layers=["features"], timeout_s=timeout_s)
    except ModelFailure as e:
        return session.diagnose(e) if session is not None else e
    finally:
        if session is not None:
            session.close()


def test_a_well_behaved_model_runs(docker_client, hostile_image):
    result = run_in_sandbox(docker_client, hostile_image("normal"))
    assert not isinstance(result, ModelFailure), result
    np.testing.assert_array_equal(result.outputs["features"][:, 0], np.arange(8))


def test_the_sandbox_holds_from_inside(docker_client, hostile_image):
    result = run_in_sandbox(docker_client, hostile_image("probe"), n=1)
    assert not isinstance(result, ModelFailure), result
    facts = result.outputs["features"][0]
    uid, gid, root_write, tmp_write, interfaces, connect_out, caps, no_new_privs, docker_sock, mount_entries = facts[:10]
    assert (uid, gid) == (65534, 65534)
    assert root_write == 0 and tmp_write == 1
    assert interfaces == 0 and connect_out == 0
    assert caps == 0 and no_new_privs == 1
    assert docker_sock == 0
    assert mount_entries == 1  # the socket folder holds the socket and nothing else


@pytest.mark.parametrize(
    "mode, limits, timeout_s, failure, words",
    [
        ("crash_on_load", None, 60, FailureClass.CRASH, "weights are corrupt"),
        ("crash_mid_run", None, 60, FailureClass.CRASH, "code 7"),
        ("oom", SandboxLimits(memory_bytes=384 * 1024**2), 60, FailureClass.OUT_OF_MEMORY, "memory"),
        ("hang", None, 4, FailureClass.TIMEOUT, "DEADLINE_EXCEEDED"),
        ("nan", None, 60, FailureClass.BAD_OUTPUT, "NaN"),
    ],
)
def test_failures_are_classified_with_the_log(docker_client, hostile_image, mode, limits, timeout_s, failure, words):
    result = run_in_sandbox(docker_client, hostile_image(mode), timeout_s=timeout_s, limits=limits)
    assert isinstance(result, ModelFailure), "the run should have failed"
    assert result.failure == failure, result
    assert words in f"{result.message}\n{result.log_tail}"
    if mode == "crash_on_load":
        assert "Traceback" in result.log_tail


def cortexbox_score(image: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "cortexbox.orchestrator.cli", "score", "--model", image, "--benchmark", "Cowley2023.V4-pls"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env},
    )


def wait_for_container(docker_client, timeout_s: float = 60):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        running = docker_client.containers.list(filters=scope_filter())
        if running:
            return running[0]
        time.sleep(0.2)
    raise AssertionError("no model container appeared")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupting_a_run_removes_its_container(docker_client, hostile_image, tmp_path, sig):
    image = hostile_image("slow")
    proc = cortexbox_score(image, {"CORTEXBOX_HOME": str(tmp_path)})
    try:
        wait_for_container(docker_client)
        time.sleep(3)  # midway through the run
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert not docker_client.containers.list(all=True, filters=scope_filter())
    runs = json.loads(
        subprocess.run([sys.executable, "-m", "cortexbox.orchestrator.cli", "runs", "--json"], capture_output=True, text=True,
                       env={**os.environ, "CORTEXBOX_HOME": str(tmp_path)}).stdout
    )
    assert runs[0]["status"] == "failed" and runs[0]["failure_class"] == "cancelled"


def test_a_killed_orchestrator_leaves_nothing_after_gc(docker_client, hostile_image, tmp_path):
    image = hostile_image("slow")
    runs_dir = tmp_path / "run-folders"
    proc = cortexbox_score(image, {"CORTEXBOX_HOME": str(tmp_path), "CORTEXBOX_RUN_DIR": str(runs_dir)})
    try:
        container = wait_for_container(docker_client)
        proc.send_signal(signal.SIGKILL)  # no chance to clean up
        proc.wait(30)
    finally:
        proc.kill()
    assert docker_client.containers.list(all=True, filters=scope_filter()), "the orphan should still exist"
    assert len(list(runs_dir.iterdir())) == 1, "its run folder should still exist"
    env = {**os.environ, "CORTEXBOX_HOME": str(tmp_path), "CORTEXBOX_RUN_DIR": str(runs_dir)}
    runs = json.loads(subprocess.run([sys.executable, "-m", "cortexbox.orchestrator.cli", "runs", "--json"],
                                     capture_output=True, text=True, env=env).stdout)
    assert runs[0]["status"] == "running", "the killed process could not finish its run"
    gc = subprocess.run([sys.executable, "-m", "cortexbox.orchestrator.cli", "gc"], capture_output=True, text=True, timeout=60, env=env)
    assert gc.returncode == 0 and "removed 1 orphaned container(s)" in gc.stdout, gc.stdout + gc.stderr
    assert "removed 1 run folder(s) of dead processes" in gc.stdout, gc.stdout
    assert not list(runs_dir.iterdir()) and str(runs_dir) not in Path("/proc/mounts").read_text()
    assert f"marked 1 run(s) of dead processes as lost: {runs[0]['id']}" in gc.stdout, gc.stdout
    assert not docker_client.containers.list(all=True, filters=scope_filter())
    with pytest.raises(Exception):
        container.reload()
    runs = json.loads(subprocess.run([sys.executable, "-m", "cortexbox.orchestrator.cli", "runs", "--json"],
                                     capture_output=True, text=True, env=env).stdout)
    assert runs[0]["status"] == "failed" and runs[0]["failure_class"] == "lost" and "died" in runs[0]["error"]
