"""The shared-memory transport (capability "transport.shared_memory"), in one process over a real unix socket.

The SDK server and the orchestrator's client negotiate it per run; every tensor that fits the area travels
as a block of a sealed memfd instead of chunks. These pin: the same values either way, for every dtype; the
fall-back to chunks when either side lacks it; the ring (a small area, waits for releases, a tensor larger
than the area chunked); the stall watchdog when nothing is released; and every lie a model can tell about
its blocks (tests/models/hostile/wire_attacks.py's shm_liar, the same code the hostile image runs).
"""

from __future__ import annotations

import errno
import importlib.util
import os
import threading
from pathlib import Path

import grpc
import numpy as np
import pytest

from cortexbox.model.v1 import model_service_pb2_grpc as pb_grpc
from cortexbox.orchestrator.budgets import WireBudgets
from cortexbox.orchestrator.client import ModelClient, SharedArea
from cortexbox.orchestrator.errors import FailureClass, ModelFailure
from cortexbox.sdk import Model, Output, serve, wire

HOSTILE = Path(__file__).resolve().parents[1] / "models" / "hostile" / "wire_attacks.py"


def _wire_attacks():
    spec = importlib.util.spec_from_file_location("hostile_wire_attacks", HOSTILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Mixed(Model):
    """Outputs of every numeric dtype; values derived from the stimulus so rows can be told apart."""

    model_id = "mixed"
    max_batch_size = 4

    def __init__(self, nan_at: str | None = None):
        self.nan_at = nan_at

    def layers(self):
        return [
            Output("f32", (1000,)),
            Output("f16", (7, 3), dtype="float16"),
            Output("f64", (33,), dtype="float64"),
            Output("i32", (5,), dtype="int32"),
            Output("wide", (300_000,)),  # 1.2 MB a stimulus: larger than a small area
        ]

    def activations(self, stimuli, layers):
        v = np.array([float(s.pixels[0, 0, 0]) for s in stimuli])
        out = {
            "f32": (v[:, None] + np.arange(1000) / 8).astype(np.float32),
            "f16": (v[:, None, None] + np.zeros((7, 3))).astype(np.float16),
            "f64": v[:, None] + np.arange(33) * 1e-3,
            "i32": (v[:, None] * 3 + np.arange(5)).astype(np.int32),
            "wide": np.repeat(v[:, None], 300_000, axis=1).astype(np.float32),
        }
        if self.nan_at is not None:
            for i, s in enumerate(stimuli):
                if s.id == self.nan_at:
                    out["f32"][i, 7] = np.nan
        return {name: out[name] for name in layers}


def images(n: int):
    ids = [f"img{i:03d}" for i in range(n)]
    return ids, [(sid, np.full((4, 4, 3), i % 200, np.uint8)) for i, sid in enumerate(ids)]


@pytest.fixture
def served(tmp_path, monkeypatch):
    monkeypatch.delenv(wire.ENV_NONCE, raising=False)
    servers = []

    def start(model: Model, **kwargs):
        address = f"unix://{tmp_path}/m{len(servers)}.sock"
        server, servicer = serve(model, address, block=False, **kwargs)
        servers.append(server)
        return address, servicer

    yield start
    for s in servers:
        s.stop(0)


def run(address: str, layers, n: int = 10, budgets: WireBudgets | None = None, **kwargs):
    with ModelClient(address, budgets=budgets or WireBudgets()) as client:
        client.wait_until_serving(10)
        info = client.info()
        ids, stimuli = images(n)
        return info, client.run(info, stimuli, ids, layers=layers, timeout_s=60, **kwargs)


LAYERS = ["f32", "f16", "f64", "i32"]


def test_every_dtype_arrives_the_same_through_the_area_as_through_chunks(served):
    address, _ = served(Mixed())
    info, shared = run(address, LAYERS, n=10)
    assert wire.CAPABILITY_SHARED_MEMORY in info.raw.capabilities and info.raw.protocol_version == "1.2"
    assert shared.shared_memory_bytes == shared.bytes_received == 10 * (1000 * 4 + 21 * 2 + 33 * 8 + 5 * 4)
    _, chunked = run(address, LAYERS, n=10, budgets=WireBudgets(shared_memory_bytes=0))
    assert chunked.shared_memory_bytes == 0 and chunked.bytes_received == shared.bytes_received
    for name in LAYERS:
        assert shared.outputs[name].dtype == np.float32
        np.testing.assert_array_equal(shared.outputs[name], chunked.outputs[name])
    np.testing.assert_array_equal(shared.outputs["f64"][:, 1], (np.arange(10) + 1e-3).astype(np.float32))
    np.testing.assert_array_equal(shared.outputs["i32"][3], [9, 10, 11, 12, 13])


def test_a_server_without_the_capability_is_chunked(served):
    """An image built with an older SDK lists no "transport.shared_memory": the client offers nothing."""
    address, _ = served(Mixed(), shared_memory=False)
    info, result = run(address, ["f32"])
    assert wire.CAPABILITY_SHARED_MEMORY not in info.raw.capabilities
    assert result.shared_memory_bytes == 0
    np.testing.assert_array_equal(result.outputs["f32"][:, 0], np.arange(10))


def test_a_server_that_cannot_reach_the_handover_chunks_instead(served, caplog):
    address, servicer = served(Mixed())
    servicer.socket_dir = "/nonexistent-cortexbox-folder"  # as a sandbox where the hand-over socket is not visible
    _, result = run(address, ["f32"])
    assert result.shared_memory_bytes == 0
    np.testing.assert_array_equal(result.outputs["f32"][:, 0], np.arange(10))
    assert "chunks its tensors" in caplog.text


def test_the_ring_reuses_released_space_and_chunks_what_does_not_fit(served):
    """An area of 60 KiB after its control page holds three 16 KB blocks: 40 batches go round it many times;
    `wide` (4.8 MB a batch) never fits and is chunked in the same run."""
    address, _ = served(Mixed())
    _, result = run(address, ["f32", "wide"], n=160, budgets=WireBudgets(shared_memory_bytes=64 * 1024))
    assert result.shared_memory_bytes == 160 * 1000 * 4
    assert result.bytes_received == 160 * (1000 + 300_000) * 4
    np.testing.assert_array_equal(result.outputs["f32"][:, 0], np.arange(160) % 200)
    np.testing.assert_array_equal(result.outputs["f32"][:, 999], np.arange(160) % 200 + 999 / 8)
    np.testing.assert_array_equal(result.outputs["wide"][:, -1], np.arange(160) % 200)


def test_nan_in_a_block_is_bad_output(served):
    address, _ = served(Mixed(nan_at="img005"))
    with pytest.raises(ModelFailure) as e:
        run(address, ["f32"])
    assert e.value.failure == FailureClass.BAD_OUTPUT and "NaN" in e.value.message


class Huge(Model):
    """One 4.8 MB block per batch (several of the client's pieces), of values near float32's largest: their sum
    overflows to inf although every value is finite. `bad` = (stimulus id, feature, value) puts one value in."""

    model_id = "huge"
    max_batch_size = 4
    features = 300_000

    def __init__(self, bad: tuple[str, int, float] | None = None):
        self.bad = bad

    def layers(self):
        return [Output("big", (self.features,))]

    def activations(self, stimuli, layers):
        out = np.full((len(stimuli), self.features), 3e38, np.float32)
        out[:, 0] = [float(s.pixels[0, 0, 0]) for s in stimuli]
        for i, s in enumerate(stimuli):
            if self.bad is not None and s.id == self.bad[0]:
                out[i, self.bad[1]] = self.bad[2]
        return {"big": out}


def test_a_block_whose_sum_overflows_is_accepted_and_a_late_nan_or_inf_is_caught(served):
    """The finiteness check of each piece is exact: values whose sum overflows float32 are finite and accepted (a
    check by summing would have to fall back); a NaN or -inf in the last piece of a block (past 4 MB, in the last
    stimulus of a batch) is bad output, reported at the piece that holds it."""
    address, _ = served(Huge())
    _, result = run(address, ["big"], n=8)
    assert result.shared_memory_bytes == 8 * Huge.features * 4
    assert (result.outputs["big"][:, 1:] == np.float32(3e38)).all()
    np.testing.assert_array_equal(result.outputs["big"][:, 0], np.arange(8))
    for value in (np.nan, -np.inf):
        address, _ = served(Huge(bad=("img007", Huge.features - 1, value)))
        with pytest.raises(ModelFailure) as e:
            run(address, ["big"], n=8)
        assert e.value.failure == FailureClass.BAD_OUTPUT, e.value
        assert "1 NaN or infinite values" in e.value.message and "of 4800000" in e.value.message
        piece_start = int(e.value.message.split("in bytes ")[1].split("..")[0])
        assert 4_000_000 <= piece_start < 4_800_000


def test_a_run_delivers_into_the_arrays_the_caller_gives(served):
    """`out`: a caller that keeps its result buffers across runs gets its values in them, through the area as
    through chunks; an array of the wrong shape, dtype or name is refused before the run starts."""
    address, _ = served(Mixed())
    for budgets in (WireBudgets(), WireBudgets(shared_memory_bytes=0)):
        given = {"f32": np.full((10, 1000), -1, np.float32), "wide": np.full((10, 300_000), -1, np.float32)}
        _, result = run(address, ["f32", "f16", "wide"], n=10, budgets=budgets, out=given)
        assert result.outputs["f32"] is given["f32"] and result.outputs["wide"] is given["wide"]
        assert (result.shared_memory_bytes > 0) == (budgets.shared_memory_bytes > 0)
        np.testing.assert_array_equal(given["f32"][:, 999], np.arange(10) + 999 / 8)
        np.testing.assert_array_equal(given["wide"][:, 0], np.arange(10))
        np.testing.assert_array_equal(result.outputs["f16"][:, 0], np.arange(10))
    for bad, message in [
        ({"f32": np.zeros((10, 999), np.float32)}, "must be a writeable C-contiguous float32 array of shape"),
        ({"f32": np.zeros((10, 1000), np.float64)}, "must be a writeable C-contiguous float32 array of shape"),
        ({"f32": np.zeros((1000, 10), np.float32).T}, "must be a writeable C-contiguous float32 array of shape"),
        ({"i32": np.zeros((10, 5), np.float32)}, "not a requested numeric output"),
    ]:
        with pytest.raises(ValueError, match=message):
            run(address, ["f32"], n=10, out=bad)


def test_a_model_that_gets_no_releases_is_stopped_by_the_stall_watchdog(served, monkeypatch):
    """The client never releases a block: the server waits for space (bounded by the run's cancellation),
    the client sees no new bytes, and the watchdog ends the run; the server is free for the next run."""
    address, servicer = served(Mixed())
    monkeypatch.setattr(SharedArea, "release", lambda self: None)
    with pytest.raises(ModelFailure) as e:
        run(address, ["f32"], n=40, budgets=WireBudgets(shared_memory_bytes=64 * 1024, stall_timeout_s=1.5))
    assert e.value.failure == FailureClass.TIMEOUT and "no new output bytes" in e.value.message
    monkeypatch.undo()
    _, result = run(address, ["f32"], n=40, budgets=WireBudgets(shared_memory_bytes=64 * 1024))
    assert result.shared_memory_bytes == 40 * 4000


# -- lies about blocks ----------------------------------------------------------------------------------------


@pytest.fixture
def liar(tmp_path):
    from concurrent import futures

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_ModelServiceServicer_to_server(_wire_attacks().shm_liar(str(tmp_path), None), server)
    address = f"unix://{tmp_path}/liar.sock"
    server.add_insecure_port(address)
    server.start()
    yield address
    server.stop(0)


def tell(address: str, lie: str, budgets: WireBudgets | None = None, **kwargs):
    with ModelClient(address, budgets=budgets or WireBudgets()) as client:
        info = client.info()
        ids, stimuli = images(8)
        return client.run(info, stimuli, ids, timeout_s=20, run_id=lie, **kwargs)


@pytest.mark.parametrize(
    ("lie", "message"),
    [
        ("outside", "is not an aligned block of the area"),
        ("control_page", "is not an aligned block of the area"),
        ("misaligned", "is not an aligned block of the area"),
        ("short", "its shared-memory block has 508 bytes; the header says 512"),
        ("rewrite", "does not match its checksum: it was written again after it was announced"),
    ],
)
def test_a_lie_about_a_block_is_a_protocol_violation(liar, lie, message):
    with pytest.raises(ModelFailure) as e:
        tell(liar, lie, layers=["features"])
    assert e.value.failure == FailureClass.PROTOCOL_VIOLATION, e.value
    assert message in e.value.message


def test_a_block_in_a_run_that_offered_no_area_is_a_protocol_violation(liar):
    with pytest.raises(ModelFailure) as e:
        tell(liar, "unoffered", budgets=WireBudgets(shared_memory_bytes=0), layers=["features"])
    assert e.value.failure == FailureClass.PROTOCOL_VIOLATION
    assert "announced in a shared-memory area, but this run offered none" in e.value.message


def test_a_string_tensor_in_the_area_is_a_protocol_violation(liar):
    with pytest.raises(ModelFailure) as e:
        tell(liar, "string", behaviours=["word"])
    assert e.value.failure == FailureClass.PROTOCOL_VIOLATION and "strings are chunked" in e.value.message


def test_the_area_cannot_be_shrunk_or_grown_by_the_model(liar):
    """A shrunk memfd would crash our mapping's reader with SIGBUS: the seals refuse both sizes (EPERM)."""
    result = tell(liar, "resize", layers=["features"])
    values = result.outputs["features"]
    assert (values[:, :2] == errno.EPERM).all() and (values[:, 2:] == 1.5).all()
    assert result.shared_memory_bytes == 8 * 16 * 4


def test_the_handover_only_serves_the_owner_uid(tmp_path):
    """A peer of another uid gets no memfd from a session's hand-over socket (it is refused and the socket
    keeps waiting for the model); the owner gets the area."""
    from cortexbox.orchestrator.client import _Handover

    area = SharedArea(64 * 1024)
    handover = _Handover(str(tmp_path), area, owner_uid=12345)  # not our uid
    handover.start()
    try:
        with pytest.raises((OSError, ValueError)):
            wire.receive_area(str(tmp_path), handover.name, 1.0)
        assert handover.is_alive()
    finally:
        handover.close()
        area.close()
    assert not (tmp_path / handover.name).exists()
    ours = SharedArea(64 * 1024)
    handover = _Handover(str(tmp_path), ours, owner_uid=None)
    handover.start()
    got: list[int] = []
    t = threading.Thread(target=lambda: got.append(wire.receive_area(str(tmp_path), handover.name, 2.0)))
    t.start()
    t.join(5)
    handover.close()
    assert len(got) == 1 and os.fstat(got[0]).st_size == 64 * 1024
    os.close(got[0])
    ours.close()


def test_the_area_budget_is_configurable_and_zero_turns_it_off():
    from cortexbox.orchestrator.errors import UserError

    assert WireBudgets().shared_memory_bytes == 256 * 1024**2
    assert WireBudgets.from_env({"CORTEXBOX_WIRE": "shared_memory_bytes=64m"}).shared_memory_bytes == 64 * 1024**2
    assert WireBudgets.from_env({"CORTEXBOX_WIRE": "shared_memory_bytes=0"}).shared_memory_bytes == 0
    with pytest.raises(UserError, match="must be positive"):  # 0 means off only where it says so
        WireBudgets.from_env({"CORTEXBOX_WIRE": "stall_timeout_s=0"})


def test_the_ring_never_hands_out_a_block_the_client_still_holds():
    """Equal blocks that fill the ring exactly: after a wrap the newest block ends where the oldest live one starts.
    The next block must wait for a release, not go on top of the oldest (a run under load saw its block "written
    again after it was announced")."""
    import mmap

    from cortexbox.model.v1 import model_service_pb2 as pb
    from cortexbox.sdk.server import _SharedRing

    block, control = 4096, wire.SHM_CONTROL_BYTES
    area = mmap.mmap(-1, control + 3 * block)
    token = os.urandom(wire.SHM_TOKEN_BYTES)
    area[: wire.SHM_TOKEN_BYTES] = token
    ring = _SharedRing(area, pb.SharedMemoryOffer(area_bytes=len(area), control_bytes=control,
                                                  alignment_bytes=wire.SHM_ALIGNMENT, token=token))
    released = np.frombuffer(area, np.uint8)[wire.SHM_RELEASED_OFFSET : wire.SHM_RELEASED_OFFSET + 8].view("<u8")
    stop = threading.Event()
    payload = memoryview(bytes(block))
    held: list[tuple[int, int]] = []  # (block index, offset) the client has not released

    def write() -> int | None:
        stop.clear()
        timer = threading.Timer(0.2, stop.set)  # a write that must wait is stopped instead
        timer.start()
        try:
            got = ring.write(payload, stop)
        finally:
            timer.cancel()
        if got is not None:
            assert all(not (got.offset < off + block and off < got.offset + block) for _, off in held), (got, held)
            held.append((ring.announced - 1, got.offset))
        return None if got is None else got.offset

    assert [write(), write(), write()] == [control, control + block, control + 2 * block]
    assert write() is None  # full
    released[0] = 1
    held.pop(0)
    assert write() == control  # wrapped into the released space
    assert write() is None  # full again: the newest ends where the oldest live block starts
    released[0] = 2
    held.pop(0)
    assert write() == control + block
