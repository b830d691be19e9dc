"""Hostile models on the wire (issue 11), each a real image in a real container: a socket swapped
after the handshake, floods of empty messages, silence, slow trickles, float64 outputs far larger
than their float32 results, over-budget shapes, and strings made to hurt a terminal or a
registry. And a model's name on the board is not its own claim (registry identity rules)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from cortexbox.orchestrator.errors import FailureClass, ModelFailure
from cortexbox.orchestrator.runtime import ContainerSession, SandboxLimits, scope_filter
from cortexbox.sdk import Model, Output, serve, wire
from tests.orchestrator.test_sandbox import run_in_sandbox, stimuli


SMALL = SandboxLimits(memory_bytes=512 * 1024**2)


@pytest.fixture
def containers(docker_client):
    """Docker tests: no container of ours may survive any of them."""
    yield docker_client
    left = docker_client.containers.list(all=True, filters=scope_filter())
    assert not left, f"containers left behind: {[c.name for c in left]}"


def timed(docker_client, image: str, **kwargs):
    t0 = time.monotonic()
    outcome = run_in_sandbox(docker_client, image, **kwargs)
    return outcome, time.monotonic() - t0


class Victim(Model):
    """Another server on the host, with the same outputs as the attacker."""

    model_id = "victim"
    batches = 0

    def layers(self):
        return [Output("features", (16,))]

    def activations(self, stimuli, layers):
        Victim.batches += 1
        return {"features": np.full((len(stimuli), 16), 42.0, np.float32)}


@pytest.mark.docker
def test_a_socket_swapped_after_the_handshake_cannot_redirect_the_run(containers, hostile_image, monkeypatch):
    image = hostile_image("swap_socket")
    runs = Path(tempfile.mkdtemp(prefix="cbx-", dir="/tmp"))  # short: a unix socket path has at most 107 bytes
    monkeypatch.delenv(wire.ENV_NONCE, raising=False)
    victim, _ = serve(Victim(), f"unix://{runs}/victim.sock", block=False)
    Victim.batches = 0
    session = ContainerSession(containers, image, limits=SMALL, run_root=runs)
    try:
        time.sleep(1.5)  # what the orchestrator does between GetModelInfo and Run (registry, layer choice)
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


@pytest.mark.docker
def test_a_flood_of_empty_messages_is_a_protocol_violation(containers, hostile_image):
    failure, seconds = timed(containers, hostile_image("flood_progress"), timeout_s=60, limits=SMALL)
    assert isinstance(failure, ModelFailure) and failure.failure == FailureClass.PROTOCOL_VIOLATION, failure
    assert "flood" in failure.message
    assert seconds < 15, f"the flood ran {seconds:.0f} s"  # before the budget: until the 60 s deadline


@pytest.mark.docker
def test_a_silent_model_is_stopped_by_the_watchdog(containers, hostile_image, monkeypatch):
    monkeypatch.setenv("CORTEXBOX_WIRE", "stall_timeout_s=3")
    failure, seconds = timed(containers, hostile_image("hang"), timeout_s=120, limits=SMALL)
    assert isinstance(failure, ModelFailure) and failure.failure == FailureClass.TIMEOUT, failure
    assert "no new output bytes for 3 s" in failure.message
    assert seconds < 20, f"stopped after {seconds:.0f} s"  # the whole-run budget alone: 120 s


@pytest.mark.docker
def test_a_model_too_slow_for_its_deadline_is_stopped_early(containers, hostile_image):
    """0.5 s per batch of 4 is 10 s for 80 stimuli: over a 6 s deadline, which is clear after 1.5 s."""
    failure, seconds = timed(containers, hostile_image("slow"), n=80, timeout_s=6, limits=SMALL)
    assert isinstance(failure, ModelFailure) and failure.failure == FailureClass.TIMEOUT, failure
    assert "at that rate the run needs about" in failure.message
    # the seconds include the container's start (about 1 s); the deadline alone would take 6 s of the run
    assert seconds < 6, f"stopped after {seconds:.1f} s"


MEASURE = r"""
import json, sys
import numpy as np
from cortexbox.orchestrator.runtime import ContainerSession, SandboxLimits, docker_client

def rss(field="VmRSS"):
    return int(next(l for l in open("/proc/self/status") if l.startswith(field)).split()[1]) * 1024

session = ContainerSession(docker_client(), sys.argv[1], limits=SandboxLimits(memory_bytes=2 * 1024**3))
try:
    n = int(sys.argv[2])
    ids = [f"s{i:03d}" for i in range(n)]
    items = [(sid, np.full((16, 16, 3), i, np.uint8)) for i, sid in enumerate(ids)]
    before = rss()
    out = session.client.run(session.description, items, ids, layers=["features"], timeout_s=300).outputs["features"]
    expected = np.arange(n, dtype=np.float32)[:, None] + 0.5
    # VmHWM, this process's own peak: ru_maxrss would carry the forking parent's RSS over exec (Linux keeps the
    # larger of the two), i.e. the whole pytest process's size in a full suite run
    print(json.dumps({"before": before, "peak": rss("VmHWM"),
                      "held": out.nbytes, "dtype": str(out.dtype), "exact": bool((out == expected).all())}))
finally:
    session.close()
"""


@pytest.mark.docker
def test_float64_outputs_are_converted_while_streaming(containers, hostile_image):
    """One tensor of 64 stimuli x 2**20 float64 values (512 MiB on the wire, 256 MiB of float32
    results). Buffered whole and converted at the end, the orchestrator's peak grew by about
    1.1 GiB; converted chunk by chunk, by little more than the results themselves."""
    image = hostile_image("float64_wide")
    done = subprocess.run([sys.executable, "-c", MEASURE, image, "64"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    m = json.loads(done.stdout.strip().splitlines()[-1])
    assert m["exact"] and m["dtype"] == "float32" and m["held"] == 64 * 2**20 * 4
    grown = m["peak"] - m["before"]
    assert grown < m["held"] + 160 * 2**20, f"peak RSS grew by {grown / 2**20:.0f} MiB for {m['held'] / 2**20:.0f} MiB of results"


@pytest.mark.docker
def test_an_over_budget_output_shape_is_a_classified_failure(containers, hostile_image):
    """50M float64 features a stimulus is within the per-stimulus ceiling; 64 stimuli of it
    (25.6 GB on the wire) is not a run: refused before anything is allocated."""
    failure, seconds = timed(containers, hostile_image("over_budget"), n=64, limits=SMALL)
    assert isinstance(failure, ModelFailure) and failure.failure == FailureClass.PROTOCOL_VIOLATION, failure
    assert "GiB; the budget is" in failure.message and "per run" in failure.message


@pytest.mark.docker
def test_a_model_id_with_a_terminal_escape_is_refused(containers, hostile_image):
    with pytest.raises(ModelFailure) as e:
        ContainerSession(containers, hostile_image("evil_id"), limits=SMALL)
    assert e.value.failure == FailureClass.PROTOCOL_VIOLATION
    assert "model_id" in e.value.message and "\x1b" not in e.value.message


@pytest.mark.docker
def test_free_text_from_a_model_is_cut_and_cleaned(containers, hostile_image, tmp_path):
    from cortexbox.registry import Registry

    session = ContainerSession(containers, hostile_image("evil_text"), limits=SMALL)
    try:
        info = session.description.to_dict()
        registry = Registry(f"sqlite:///{tmp_path / 'r.db'}")
        row = registry.upsert_model(session.image_id, info["model_id"], info["model_version"], "evil", info)
        ids, items = stimuli(4)
        with pytest.raises(ModelFailure) as e:
            session.client.run(session.description, items, ids, layers=["features"], timeout_s=30)
    finally:
        session.close()
    stored = registry.model_by_digest(row.digest).info
    assert len(stored["description"]) <= 4000 + len(" [cut]") and stored["description"].endswith("[cut]")
    assert "\x1b" not in stored["description"] and "\x1b" not in stored["metadata"]["note"]
    assert len(stored["metadata"]["note"]) <= 1000 + len(" [cut]")
    assert e.value.failure == FailureClass.MODEL_ERROR
    assert "\x1b" not in e.value.message and "\x07" not in e.value.message and len(e.value.message) < 2200


# -- identity: a name on the board belongs to its first owner --------------------------------------


def test_a_name_belongs_to_the_owner_who_registered_it_first(tmp_path):
    from sqlalchemy.exc import IntegrityError

    from cortexbox.registry import Registry
    from cortexbox.registry.models import Model as ModelRow
    from cortexbox.registry.store import NameTaken

    registry = Registry(f"sqlite:///{tmp_path / 'r.db'}")
    first = registry.upsert_model("sha256:" + "1" * 64, "alexnet", "1", "cortexbox/pytorch-vision", {})
    rebuilt = registry.upsert_model("sha256:" + "2" * 64, "alexnet", "2", "cortexbox/pytorch-vision", {})
    assert first.owner == rebuilt.owner == "local"  # the operator's own builds are versions of the model
    with pytest.raises(NameTaken, match="belongs to another owner"):
        registry.upsert_model("sha256:" + "3" * 64, "alexnet", "9", "mallory/alexnet", {}, owner="mallory")
    with pytest.raises(NameTaken, match="registered by another owner"):
        registry.upsert_model("sha256:" + "1" * 64, "alexnet-by-mallory", "1", "x", {}, owner="mallory")
    assert sorted(m.digest[7:8] for m in registry.models() if m.name == "alexnet") == ["1", "2"]
    assert registry.upsert_model("sha256:" + "3" * 64, "mallory-net", "1", "x", {}, owner="mallory").owner == "mallory"
    # the database holds the rule itself, whatever code writes to it
    with registry.session() as s, pytest.raises(IntegrityError):
        s.add(ModelRow(digest="sha256:" + "4" * 64, name="alexnet", owner="mallory"))
        s.commit()
    registry.engine.dispose()


def test_names_registered_before_owners_go_to_the_local_operator(tmp_path):
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine, text

    from cortexbox.registry import Registry
    from cortexbox.registry.store import MIGRATIONS

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = conn
        command.upgrade(config, "0002")
        for i, name in enumerate(["pixels", "pixels", "alexnet"]):
            conn.execute(text("INSERT INTO model (digest, name, version, image_ref, created_at) "
                              f"VALUES ('sha256:{i}', '{name}', '1', '', CURRENT_TIMESTAMP)"))
    engine.dispose()
    registry = Registry(url)
    assert {(m.digest, m.owner) for m in registry.models()} == {("sha256:0", "local"), ("sha256:1", "local"), ("sha256:2", "local")}
    with registry.engine.connect() as conn:
        names = conn.execute(text("SELECT name, owner, digest FROM model_name ORDER BY name")).all()
    assert [tuple(r) for r in names] == [("alexnet", "local", "sha256:2"), ("pixels", "local", "sha256:0")]
    registry.engine.dispose()


# -- the shared-memory transport (issue 14): the area crosses the sandbox, lies about it do not ------------------


@pytest.mark.docker
def test_a_container_writes_its_tensors_into_the_shared_memory_area(containers, hostile_image, monkeypatch):
    """The SDK in a sandboxed container takes the run's memfd through the run folder (no other mount, no
    shared IPC namespace) and every tensor arrives through it, with the values chunks would carry; with the
    area turned off ($CORTEXBOX_WIRE) the same image chunks."""
    image = hostile_image("normal")
    shared = run_in_sandbox(containers, image, n=12, limits=SMALL)
    assert not isinstance(shared, ModelFailure), shared
    assert shared.shared_memory_bytes == shared.bytes_received == 12 * 16 * 4
    monkeypatch.setenv("CORTEXBOX_WIRE", "shared_memory_bytes=0")
    chunked = run_in_sandbox(containers, image, n=12, limits=SMALL)
    assert not isinstance(chunked, ModelFailure), chunked
    assert chunked.shared_memory_bytes == 0
    np.testing.assert_array_equal(shared.outputs["features"], chunked.outputs["features"])
    np.testing.assert_array_equal(shared.outputs["features"][:, 0], np.arange(12))


@pytest.mark.docker
def test_lies_about_shared_memory_blocks_are_protocol_violations(containers, hostile_image):
    """One container tells every lie of wire_attacks.SHM_LIES, one per run; each is caught as a protocol
    violation, and the sealed area can be neither shrunk nor grown from inside the sandbox (EPERM)."""
    import errno

    from cortexbox.orchestrator.budgets import WireBudgets

    session = ContainerSession(containers, hostile_image("shm_liar"), limits=SMALL)
    outcomes = {}
    try:
        ids, items = stimuli(8)
        for lie in ("outside", "control_page", "misaligned", "short", "rewrite", "string", "unoffered"):
            if lie == "unoffered":
                session.client.budgets = WireBudgets(shared_memory_bytes=0)
            try:
                kind = {"behaviours": ["word"]} if lie == "string" else {"layers": ["features"]}
                session.client.run(session.description, items, ids, timeout_s=30, run_id=lie, **kind)
                outcomes[lie] = "accepted"
            except ModelFailure as e:
                outcomes[lie] = session.diagnose(e).failure
        session.client.budgets = WireBudgets()
        resized = session.client.run(session.description, items, ids, layers=["features"], timeout_s=30, run_id="resize")
    finally:
        session.close()
    assert outcomes == dict.fromkeys(outcomes, FailureClass.PROTOCOL_VIOLATION), outcomes
    assert (resized.outputs["features"][:, :2] == errno.EPERM).all() and resized.shared_memory_bytes == 8 * 16 * 4
