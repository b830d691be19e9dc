"""The evil zoo under gVisor (issue 11): one hostile mode per threat class, each through a real container run by
runsc, classified as under runc, and the host clean afterwards. Skipped where the engine has no runsc runtime
(scripts/setup.sh adds it when it starts dockerd; an engine started without it keeps working with runc)."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pytest

from cortexbox.orchestrator.errors import FailureClass, ModelFailure
from cortexbox.orchestrator.runtime import SandboxLimits, scope_filter
from tests.orchestrator.test_sandbox import run_in_sandbox


pytestmark = [pytest.mark.docker, pytest.mark.runsc]

LIMITS = SandboxLimits(memory_bytes=512 * 1024**2, runtime="runsc")


@pytest.fixture
def runsc(docker_client, tmp_path, monkeypatch):
    """The engine, when it has runsc; this test's run folders under its own root, checked empty afterwards."""
    runtimes = docker_client.info().get("Runtimes") or {}
    if "runsc" not in runtimes:
        pytest.skip(f"the Docker engine has no runsc runtime (it has {', '.join(sorted(runtimes))}): "
                    "scripts/setup.sh adds it when it starts dockerd")
    root = tmp_path / "runs"
    monkeypatch.setenv("CORTEXBOX_RUN_DIR", str(root))
    yield docker_client
    assert not docker_client.containers.list(all=True, filters=scope_filter()), "a container survived"
    assert not (root.exists() and list(root.iterdir())), "a run folder survived"
    assert str(root) + os.sep not in Path("/proc/mounts").read_text(), "a run folder's tmpfs survived"


def test_a_well_behaved_model_runs_under_runsc(runsc, hostile_image):
    result = run_in_sandbox(runsc, hostile_image("normal"), limits=LIMITS)
    assert not isinstance(result, ModelFailure), result
    assert result.outputs["features"][:, 0].tolist() == list(range(8))


def test_a_model_that_forks_runs_under_runsc_default_pids(runsc, hostile_image):
    """runsc's default pids limit (512: it counts the Sentry's own threads) leaves room for ordinary forks, which
    killed the sandbox at runc's 128; the fork bomb below still stops at it."""
    assert LIMITS.pids == 512
    result = run_in_sandbox(runsc, hostile_image("spin"), n=1, timeout_s=120, limits=LIMITS)
    assert not isinstance(result, ModelFailure), result
    cpu_s, wall_s = result.outputs["features"][0][:2]
    assert cpu_s > 0 and wall_s >= 3, (cpu_s, wall_s)


def test_the_sandbox_holds_from_inside_under_runsc(runsc, hostile_image):
    """T1, T2, T6: the same facts as under runc (tests/orchestrator/test_sandbox.py), measured inside gVisor's kernel."""
    result = run_in_sandbox(runsc, hostile_image("probe"), n=1, limits=LIMITS)
    assert not isinstance(result, ModelFailure), result
    uid, gid, root_write, tmp_write, interfaces, connect_out, caps, no_new_privs, docker_sock, entries = result.outputs["features"][0][:10]
    assert (uid, gid, root_write, tmp_write) == (65534, 65534, 0, 1)
    assert interfaces == 0 and connect_out == 0 and caps == 0 and no_new_privs == 1 and docker_sock == 0
    assert entries == 1


@pytest.mark.parametrize(
    "mode, limits, timeout_s, failure, words, within_s",
    [
        ("crash_mid_run", LIMITS, 60, FailureClass.CRASH, "code 7", 30),  # T8
        ("oom", SandboxLimits(memory_bytes=384 * 1024**2, runtime="runsc"), 60, FailureClass.OUT_OF_MEMORY, "memory", 60),  # T4
        ("nan", LIMITS, 60, FailureClass.BAD_OUTPUT, "NaN", 30),  # T9
    ],
)
def test_failures_are_classified_under_runsc(runsc, hostile_image, mode, limits, timeout_s, failure, words, within_s):
    t0 = time.monotonic()
    result = run_in_sandbox(runsc, hostile_image(mode), timeout_s=timeout_s, limits=limits)
    seconds = time.monotonic() - t0
    assert isinstance(result, ModelFailure) and result.failure == failure, result
    assert words in f"{result.message}\n{result.log_tail}"
    assert seconds < within_s, f"{mode}: {seconds:.1f} s"


def test_a_silent_model_is_stopped_by_the_watchdog_under_runsc(runsc, hostile_image, monkeypatch):  # T7
    monkeypatch.setenv("CORTEXBOX_WIRE", "stall_timeout_s=3")
    t0 = time.monotonic()
    result = run_in_sandbox(runsc, hostile_image("hang"), timeout_s=120, limits=LIMITS)
    assert isinstance(result, ModelFailure) and result.failure == FailureClass.TIMEOUT, result
    assert time.monotonic() - t0 < 25


def test_a_swapped_socket_cannot_redirect_the_run_under_runsc(runsc, hostile_image, monkeypatch):  # T11, finding 1
    """As tests/orchestrator/test_hostile_wire.py under runc: the socket becomes a link to another server's socket after the
    handshake; that server must never answer, and the run is a protocol violation."""
    import shutil
    import tempfile

    from cortexbox.orchestrator.runtime import ContainerSession
    from cortexbox.sdk import serve, wire
    from tests.orchestrator.test_hostile_wire import Victim
    from tests.orchestrator.test_sandbox import stimuli

    image = hostile_image("swap_socket")
    runs = Path(tempfile.mkdtemp(prefix="cbx-", dir="/tmp"))  # short: a unix socket path has at most 107 bytes
    monkeypatch.delenv(wire.ENV_NONCE, raising=False)
    victim, _ = serve(Victim(), f"unix://{runs}/victim.sock", block=False)
    Victim.batches = 0
    session = ContainerSession(runsc, image, limits=LIMITS, run_root=runs)
    try:
        time.sleep(1.5)  # what the orchestrator does between GetModelInfo and Run
        assert (session.run_dir / "model.sock").is_symlink(), "the attack did not happen"
        ids, items = stimuli(8)
        with pytest.raises(ModelFailure) as e:
            session.client.run(session.description, items, ids, layers=["features"], timeout_s=30)
        failure = session.diagnose(e.value)
    finally:
        session.close()
        victim.stop(0)
        shutil.rmtree(runs, ignore_errors=True)
    assert Victim.batches == 0, "another server on the host answered this run"
    assert failure.failure == FailureClass.PROTOCOL_VIOLATION, failure
    assert "replaced its socket" in failure.message


def test_host_attacks_are_contained_under_runsc(runsc, hostile_image):
    """T3: under runsc the pids limit holds the sandbox's own threads (the Sentry's) too: the fork bomb takes the
    whole sandbox down at the limit (exit 2, a crash; under runc the model's fork fails with EAGAIN instead).
    T5: the run folder's tmpfs is full at its size."""
    t0 = time.monotonic()
    result = run_in_sandbox(runsc, hostile_image("fork_bomb"), n=1, timeout_s=120, limits=LIMITS)
    assert isinstance(result, ModelFailure) and result.failure == FailureClass.CRASH, result
    assert time.monotonic() - t0 < 30
    if os.geteuid() != 0:
        return  # the run folder is a tmpfs only when the orchestrator is root
    kib, err, _ = run_in_sandbox(runsc, hostile_image("fill_run_folder"), n=1, timeout_s=120, limits=LIMITS).outputs["features"][0][:3]
    assert kib * 1024 <= LIMITS.run_dir_bytes and err == errno.ENOSPC, (kib, err)


# -- the fair-scoring attackers, the shared-memory liar, the metadata liars and the watched run folder ---------------
from tests.orchestrator.test_hostile_fair import BENCHMARK as FAIR_BENCHMARK  # noqa: E402
from tests.orchestrator.test_hostile_fair import gamer, stored_answers  # noqa: E402,F401 - fixtures
from tests.orchestrator.test_hostile_liar import LIES  # noqa: E402


def test_the_gaming_attackers_are_caught_under_runsc(runsc, gamer, stored_answers):  # noqa: F811 - fixtures
    """T12: answers stored per benchmark id, or per exact pixels: the job's random ids and repeat probes catch both
    (`inconsistent`, no score) as under runc (test_hostile_fair)."""
    from cortexbox.orchestrator.scoring import ScoreRequest, score_model
    from cortexbox.registry import Registry

    for mode, key in (("id_keyed", "by_id"), ("lookup", "by_pixels")):
        image = gamer(mode, stored_answers[key])
        t0 = time.monotonic()
        with pytest.raises(ModelFailure) as caught:
            score_model(ScoreRequest(benchmark=FAIR_BENCHMARK, image=image, limits=LIMITS))
        assert caught.value.failure == FailureClass.INCONSISTENT, f"{mode}: {caught.value}"
        assert time.monotonic() - t0 < 120
    assert list(Registry().scores()) == []


def test_the_shared_memory_liar_gets_no_area_under_runsc(runsc, hostile_image):
    """Under runsc no shared-memory area is offered (whether gVisor shares a host memfd is not tested), so every lie
    about a block is a block that was never offered: protocol_violation, as each lie is under runc."""
    from cortexbox.orchestrator.runtime import ContainerSession
    from tests.orchestrator.test_sandbox import stimuli

    session = ContainerSession(runsc, hostile_image("shm_liar"), limits=LIMITS)
    outcomes = {}
    try:
        ids, items = stimuli(8)
        for lie in ("outside", "control_page", "misaligned", "short", "rewrite", "unoffered", "string", "resize"):
            kind = {"behaviours": ["word"]} if lie == "string" else {"layers": ["features"]}
            try:
                session.client.run(session.description, items, ids, timeout_s=30, run_id=lie, **kind)
                outcomes[lie] = "accepted"
            except ModelFailure as e:
                outcomes[lie] = session.diagnose(e).failure
    finally:
        session.close()
    assert outcomes == dict.fromkeys(outcomes, FailureClass.PROTOCOL_VIOLATION), outcomes


@pytest.mark.parametrize("mode", list(LIES))
def test_a_liar_is_refused_under_runsc(runsc, hostile_image, mode, data_dir):
    """T10 under runsc: the conformance run refuses each liar before hIT is scored, naming the lie."""
    from cortexbox.orchestrator.scoring import ScoreRequest, score_model

    with pytest.raises(ModelFailure) as caught:
        score_model(ScoreRequest(benchmark="Kriegeskorte2008.hIT-rdm", image=hostile_image(mode), limits=LIMITS))
    assert caught.value.failure == FailureClass.NONCONFORMANT, caught.value
    assert all(words in caught.value.message for words in LIES[mode]), caught.value.message


def test_the_watched_run_folder_stops_a_filler_under_runsc(runsc, hostile_image):
    """Finding 4 without a tmpfs, under runsc (--host-uds=all: the model writes the host's folder through the gofer)."""
    from tests.orchestrator.test_hostile_host import attack_watched

    failure, seen = attack_watched(runsc, hostile_image("fill_run_folder"), runtime="runsc")
    print(f"fill_run_folder watched under runsc: {failure}; {seen}")
    assert failure.failure == FailureClass.OUT_OF_DISK and not seen["left"] and seen["disk_mib"] < 64
