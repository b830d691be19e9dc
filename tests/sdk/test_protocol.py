"""The SDK server and the orchestrator's client, in one process, over a real unix socket.

No Docker here: these pin the wire contract itself (chunking, validation, cancellation,
errors, health, handshake). Hostile servers are written against the generated stubs
directly, since the SDK would never send such messages.
"""

from __future__ import annotations

import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cortexbox.model.v1 import model_service_pb2 as pb
from cortexbox.model.v1 import model_service_pb2_grpc as pb_grpc
from cortexbox.orchestrator.client import ModelClient
from cortexbox.orchestrator.errors import FailureClass, ModelFailure
from cortexbox.sdk import Model, Output, serve, wire


class Toy(Model):
    model_id = "toy"
    max_batch_size = 4

    def __init__(self, load_delay: float = 0.0, compute_delay: float = 0.0, fail_on: str | None = None):
        self.load_delay = load_delay
        self.compute_delay = compute_delay
        self.fail_on = fail_on
        self.batches = 0

    def load(self):
        time.sleep(self.load_delay)

    def layers(self):
        return [Output("mean", (3,)), Output("wide", (300_000,))]

    def behaviour_outputs(self):
        return [Output("logits", (10,))]

    def activations(self, stimuli, layers):
        self.batches += 1
        time.sleep(self.compute_delay)
        if self.fail_on and any(s.id == self.fail_on for s in stimuli):
            raise RuntimeError("boom on purpose")
        out = {}
        if "mean" in layers:
            out["mean"] = np.stack([s.pixels.reshape(-1, 3).mean(axis=0) for s in stimuli])
        if "wide" in layers:
            out["wide"] = np.stack([np.full(300_000, float(s.pixels[0, 0, 0]), np.float32) for s in stimuli])
        return out

    def behaviours(self, stimuli, names):
        return {"logits": np.stack([np.arange(10, dtype=np.float32) + s.pixels[0, 0, 0] for s in stimuli])}


def images(n: int, size: int = 8):
    ids = [f"img{i:03d}" for i in range(n)]
    return ids, [(sid, np.full((size, size, 3), i % 256, np.uint8)) for i, sid in enumerate(ids)]


@pytest.fixture
def served(tmp_path, monkeypatch):
    servers = []

    def start(model: Model, nonce: str | None = None):
        if nonce:
            monkeypatch.setenv(wire.ENV_NONCE, nonce)
        else:
            monkeypatch.delenv(wire.ENV_NONCE, raising=False)
        address = f"unix://{tmp_path}/m{len(servers)}.sock"
        server, _ = serve(model, address, block=False)
        servers.append(server)
        return address

    yield start
    for s in servers:
        s.stop(0)


def test_run_returns_every_output_in_stimulus_order(served):
    address = served(Toy())
    with ModelClient(address) as client:
        client.wait_until_serving(5)
        info = client.info()
        assert info.layers == ["mean", "wide"] and info.behaviours == ["logits"]
        ids, stimuli = images(10)
        progress = []
        result = client.run(
            info, stimuli, ids, layers=["mean", "wide"], behaviours=["logits"], timeout_s=30,
            on_progress=lambda done, total: progress.append(done),
        )
    assert result.outputs["mean"].shape == (10, 3)
    np.testing.assert_array_equal(result.outputs["mean"][:, 0], np.arange(10))
    np.testing.assert_array_equal(result.outputs["wide"][:, 123], np.arange(10))
    np.testing.assert_array_equal(result.outputs["logits"][3], np.arange(10) + 3)
    # 1.2 MB per stimulus of "wide" must have been chunked below the 1 MiB default
    assert result.bytes_received == 10 * (3 + 300_000 + 10) * 4
    assert progress[-1] == 10 and progress == sorted(progress)
    assert result.summary.stimuli == 10


def test_health_is_not_serving_until_loaded(served):
    address = served(Toy(load_delay=1.0))
    channel = grpc.insecure_channel(address)
    health = health_pb2_grpc.HealthStub(channel)
    first = health.Check(health_pb2.HealthCheckRequest(service=wire.SERVICE_NAME), timeout=5)
    assert first.status == health_pb2.HealthCheckResponse.NOT_SERVING
    with pytest.raises(grpc.RpcError) as e:
        pb_grpc.ModelServiceStub(channel).GetModelInfo(pb.GetModelInfoRequest(), timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert dict(e.value.trailing_metadata())[wire.ERROR_REASON_KEY] == "NOT_READY"
    ModelClient(address).wait_until_serving(10)
    channel.close()


def test_reflection_lists_the_services(served):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    address = served(Toy())
    with grpc.insecure_channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
        names = {s.name for r in responses for s in r.list_services_response.service}
    assert {wire.SERVICE_NAME, "grpc.health.v1.Health"} <= names


def test_handshake_proves_the_nonce(served):
    address = served(Toy(), nonce="the-right-nonce")
    with ModelClient(address, nonce="the-right-nonce") as good:
        good.wait_until_serving(5)
        good.handshake()
    with ModelClient(address, nonce="another-run's-nonce") as bad:
        with pytest.raises(ModelFailure) as e:
            bad.handshake()
    assert e.value.failure == FailureClass.HANDSHAKE_FAILED


def test_model_exception_is_reported_as_model_error(served):
    address = served(Toy(fail_on="img005"))
    with ModelClient(address) as client:
        client.wait_until_serving(5)
        ids, stimuli = images(8)
        with pytest.raises(ModelFailure) as e:
            client.run(client.info(), stimuli, ids, layers=["mean"], timeout_s=30)
    assert e.value.failure == FailureClass.MODEL_ERROR
    assert "boom on purpose" in e.value.message


def test_unknown_layer_is_rejected_by_the_server(served):
    address = served(Toy())
    ModelClient(address).wait_until_serving(5)
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.ModelServiceStub(channel)
        with pytest.raises(grpc.RpcError) as e:
            list(stub.Run(iter([pb.RunRequest(config=pb.RunConfig(layers=["nope"]))]), timeout=10))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(e.value.trailing_metadata())[wire.ERROR_REASON_KEY] == "UNKNOWN_OUTPUT"


def test_bad_pixels_are_rejected(served):
    address = served(Toy())
    ModelClient(address).wait_until_serving(5)
    bad = pb.Stimulus(id="x", pixels=pb.Tensor(data_type=pb.DATA_TYPE_UINT8, shape=[4, 4, 3], data=b"\0" * 47))
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.ModelServiceStub(channel)
        with pytest.raises(grpc.RpcError) as e:
            list(stub.Run(iter([pb.RunRequest(config=pb.RunConfig(layers=["mean"])), pb.RunRequest(stimulus=bad)]), timeout=10))
    assert dict(e.value.trailing_metadata())[wire.ERROR_REASON_KEY] == "BAD_STIMULUS"
    assert "47 bytes" in e.value.details()


def test_cancelling_a_run_stops_the_model_between_batches(served):
    model = Toy(compute_delay=0.2)
    address = served(model)
    with ModelClient(address) as client:
        client.wait_until_serving(5)
        ids, stimuli = images(400)
        with pytest.raises(ModelFailure) as e:
            client.run(client.info(), stimuli, ids, layers=["mean"], timeout_s=1.0)
        assert e.value.failure == FailureClass.TIMEOUT
        stopped_at = model.batches
        time.sleep(1.0)
        # at most the batch in flight (and one queued) completes after the deadline
        assert model.batches - stopped_at <= 2
        assert model.batches < 100
        # and the server accepts the next run right away
        ids, stimuli = images(3)
        assert client.run(client.info(), stimuli, ids, layers=["mean"], timeout_s=10).outputs["mean"].shape == (3, 3)


# -- hostile servers ----------------------------------------------------------------------------

INFO = pb.ModelInfo(
    protocol_version="1.0",
    model_id="hostile",
    modality=pb.MODALITY_IMAGE,
    layers=[pb.OutputSpec(name="f", kind=pb.OUTPUT_KIND_LAYER, data_type=pb.DATA_TYPE_FLOAT32, shape=[4])],
    visual_degrees=8,
    limits=pb.Limits(max_batch_size=8, max_chunk_bytes=1024),
)


class Scripted(pb_grpc.ModelServiceServicer):
    """Reads the whole run, then answers with `script(stimulus_ids)`."""

    def __init__(self, script):
        self.script = script

    def GetModelInfo(self, request, context):
        return INFO

    def Run(self, request_iterator, context):
        ids = [r.stimulus.id for r in request_iterator if r.WhichOneof("item") == "stimulus"]
        yield from self.script(ids)


def header(ids, byte_size=None, name="f", tensor_id=0, shape=None):
    shape = shape or [len(ids), 4]
    return pb.RunResponse(
        header=pb.TensorHeader(
            tensor_id=tensor_id, name=name, kind=pb.OUTPUT_KIND_LAYER, stimulus_ids=ids,
            data_type=pb.DATA_TYPE_FLOAT32, shape=shape,
            byte_size=byte_size if byte_size is not None else len(ids) * 16,
        )
    )


def chunk(data, offset=0, tensor_id=0):
    return pb.RunResponse(chunk=pb.TensorChunk(tensor_id=tensor_id, offset=offset, data=data))


def summary(n):
    return pb.RunResponse(summary=pb.RunSummary(stimuli=n))


def good(ids):
    yield header(ids)
    yield chunk(np.ones((len(ids), 4), "<f4").tobytes())
    yield summary(len(ids))


HOSTILE = {
    "byte size disagrees with shape": (lambda ids: iter([header(ids, byte_size=999)]), FailureClass.PROTOCOL_VIOLATION, "announces"),
    "wrong shape": (lambda ids: iter([header(ids, shape=[len(ids), 5], byte_size=len(ids) * 20)]), FailureClass.PROTOCOL_VIOLATION, "shape"),
    "unrequested output": (lambda ids: iter([header(ids, name="secret")]), FailureClass.PROTOCOL_VIOLATION, "not requested"),
    "unknown stimulus": (lambda ids: iter([header(["intruder"], byte_size=16, shape=[1, 4])]), FailureClass.PROTOCOL_VIOLATION, "not sent"),
    "repeated stimulus": (lambda ids: iter([header([ids[0], ids[0]], shape=[2, 4])]), FailureClass.PROTOCOL_VIOLATION, "repeats"),
    "chunk overflows": (
        lambda ids: iter([header(ids[:1], shape=[1, 4]), chunk(b"\0" * 8), chunk(b"\0" * 16, offset=8)]),
        FailureClass.PROTOCOL_VIOLATION, "overflows",
    ),
    "chunk out of order": (lambda ids: iter([header(ids[:1], shape=[1, 4]), chunk(b"\0" * 8, offset=8)]), FailureClass.PROTOCOL_VIOLATION, "offset"),
    "chunk too large": (lambda ids: iter([header(ids[:1], shape=[1, 4]), chunk(b"\0" * 2048)]), FailureClass.PROTOCOL_VIOLATION, "allowed"),
    "chunk without header": (lambda ids: iter([chunk(b"\0" * 8)]), FailureClass.PROTOCOL_VIOLATION, "without a TensorHeader"),
    "NaN values": (
        lambda ids: iter([header(ids), chunk(np.full((len(ids), 4), np.nan, "<f4").tobytes())]),
        FailureClass.BAD_OUTPUT, "NaN",
    ),
    "missing stimuli": (
        lambda ids: iter([header(ids[:1], shape=[1, 4]), chunk(b"\0" * 16), summary(len(ids))]),
        FailureClass.PROTOCOL_VIOLATION, "missing",
    ),
    "no summary": (lambda ids: iter([header(ids), chunk(b"\0" * 16 * len(ids))]), FailureClass.CRASH, "RunSummary"),
    "tensor cut short": (lambda ids: iter([header(ids), chunk(b"\0" * 8), summary(len(ids))]), FailureClass.PROTOCOL_VIOLATION, "ended after"),
    "message after summary": (lambda ids: iter([*good(ids), summary(len(ids))]), FailureClass.PROTOCOL_VIOLATION, "after the RunSummary"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_responses_are_caught(tmp_path, case):
    script, failure, words = HOSTILE[case]
    from concurrent import futures

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_ModelServiceServicer_to_server(Scripted(script), server)
    address = f"unix://{tmp_path}/h.sock"
    server.add_insecure_port(address)
    server.start()
    try:
        with ModelClient(address) as client:
            ids, stimuli = images(3)
            with pytest.raises(ModelFailure) as e:
                client.run(client.info(), stimuli, ids, layers=["f"], timeout_s=10)
        assert e.value.failure == failure, e.value
        assert words in e.value.message
    finally:
        server.stop(0)


def test_scripted_good_server_passes(tmp_path):
    """The hostile cases above differ from this one only in what they break."""
    from concurrent import futures

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_ModelServiceServicer_to_server(Scripted(good), server)
    address = f"unix://{tmp_path}/g.sock"
    server.add_insecure_port(address)
    server.start()
    try:
        with ModelClient(address) as client:
            ids, stimuli = images(3)
            result = client.run(client.info(), stimuli, ids, layers=["f"], timeout_s=10)
        np.testing.assert_array_equal(result.outputs["f"], np.ones((3, 4)))
    finally:
        server.stop(0)


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("protocol_version", "2.0", "protocol version"),
        ("visual_degrees", 0.0, "visual_degrees"),
    ],
)
def test_invalid_model_info_is_refused(field, value, words):
    from cortexbox.orchestrator.client import validate_model_info
    from cortexbox.orchestrator.errors import ProtocolViolation

    info = pb.ModelInfo()
    info.CopyFrom(INFO)
    setattr(info, field, value)
    with pytest.raises(ProtocolViolation, match=words):
        validate_model_info(info)


def test_invalid_output_shape_is_refused():
    from cortexbox.orchestrator.client import validate_model_info
    from cortexbox.orchestrator.errors import ProtocolViolation

    info = pb.ModelInfo()
    info.CopyFrom(INFO)
    info.layers[0].shape[:] = [4, 0]
    with pytest.raises(ProtocolViolation, match="invalid shape"):
        validate_model_info(info)


# -- the hand-framed chunk path -------------------------------------------------------------------


@pytest.mark.parametrize("tensor_id, offset, size", [(0, 0, 1), (7, 123456789, 1000), (2**31, 2**40, 0)])
def test_hand_framed_chunks_are_plain_protobuf(tensor_id, offset, size):
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    framed = wire.encode_chunk(tensor_id, offset, memoryview(data))
    parsed = pb.RunResponse.FromString(framed)
    assert parsed.WhichOneof("item") == "chunk"
    assert (parsed.chunk.tensor_id, parsed.chunk.offset, parsed.chunk.data) == (tensor_id, offset, data)
    view = wire.decode_run_response(parsed.SerializeToString())
    assert isinstance(view, wire.ChunkView)
    assert (view.tensor_id, view.offset, bytes(view.data)) == (tensor_id, offset, data)


@pytest.mark.parametrize(
    "garbage",
    [b"\x12", b"\x12\x05\x08", b"\x12\x03\x1a\x09ab", b"\x12\x02\x0f\x00", b"\xff\xff\xff", b"\x12\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"],
)
def test_malformed_responses_are_rejected_not_crashed_on(garbage):
    from cortexbox.orchestrator.client import RunReceiver, validate_model_info

    decoded = wire.decode_run_response(garbage)
    receiver = RunReceiver(validate_model_info(INFO), ["f"], {"a": 0}, {"f": np.empty((1, 4), np.float32)})
    from cortexbox.orchestrator.errors import ProtocolViolation

    with pytest.raises(ProtocolViolation):
        receiver.accept(decoded, sent_count=1)


def test_socket_checks_refuse_symlinks_and_plain_files(tmp_path):
    import socket as socketlib

    from cortexbox.orchestrator.runtime import check_socket

    path = tmp_path / "model.sock"
    assert check_socket(path) is False  # not there yet
    path.symlink_to(tmp_path / "another-runs.sock")
    with pytest.raises(ModelFailure) as e:
        check_socket(path)
    assert e.value.failure == FailureClass.PROTOCOL_VIOLATION
    path.unlink()
    path.write_text("not a socket")
    with pytest.raises(ModelFailure):
        check_socket(path)
    path.unlink()
    with socketlib.socket(socketlib.AF_UNIX) as s:
        s.bind(str(path))
        import os

        if os.geteuid() == 0:  # as root the socket must belong to the sandbox user
            with pytest.raises(ModelFailure, match="owned by uid 0"):
                check_socket(path)
            os.chown(path, 65534, 65534)
        assert check_socket(path) is True


# -- streaming conversion and budgets, on the receiver itself ------------------------------------


def _receiver(dtype: int, ids: list[str], features: int = 6, max_chunk: int = 1024, budgets=None):
    from cortexbox.orchestrator.client import RunReceiver, validate_model_info

    info = pb.ModelInfo()
    info.CopyFrom(INFO)
    info.layers[0].data_type = dtype
    info.layers[0].shape[:] = [features]
    info.limits.max_chunk_bytes = max_chunk
    results = {"f": np.full((len(ids), features), -1.0, np.float32)}
    return RunReceiver(validate_model_info(info), ["f"], {sid: i for i, sid in enumerate(ids)}, results, budgets=budgets), results


def _tensor_header(ids, data_type, nbytes, features=6):
    return pb.RunResponse(header=pb.TensorHeader(tensor_id=0, name="f", kind=pb.OUTPUT_KIND_LAYER, stimulus_ids=ids,
                                                 data_type=data_type, shape=[len(ids), features], byte_size=nbytes))


@pytest.mark.parametrize("data_type, dtype", [(pb.DATA_TYPE_FLOAT64, "<f8"), (pb.DATA_TYPE_FLOAT16, "<f2"),
                                              (pb.DATA_TYPE_INT64, "<i8"), (pb.DATA_TYPE_FLOAT32, "<f4")])
@pytest.mark.parametrize("order", ["consecutive", "shuffled"])
def test_outputs_are_converted_chunk_by_chunk_whatever_the_chunk_boundaries(data_type, dtype, order):
    """Chunks that split elements (odd sizes) and rows, into consecutive or scattered rows."""
    ids = [f"s{i}" for i in range(5)]
    sent = ids if order == "consecutive" else ["s3", "s0", "s4", "s1"]
    values = (np.arange(len(sent) * 6).reshape(len(sent), 6) + 0.5 * (dtype[1] == "f")).astype(dtype)
    data = values.tobytes()
    receiver, results = _receiver(data_type, ids)
    receiver.accept(_tensor_header(sent, data_type, len(data)), sent_count=5)
    pos = 0
    for size in [3, 7, 1, 13, 5, 11] * 100:
        if pos >= len(data):
            break
        receiver.accept(wire.ChunkView(0, pos, memoryview(data[pos : pos + size])), sent_count=5)
        pos += size
    assert receiver.header is None, "the tensor should be complete"
    rows = [ids.index(sid) for sid in sent]
    np.testing.assert_array_equal(results["f"][rows], values.astype(np.float32))
    untouched = [i for i in range(5) if i not in rows]
    assert (results["f"][untouched] == -1).all()


def test_a_nan_in_a_later_chunk_stops_the_tensor_there():
    from cortexbox.orchestrator.errors import BadOutput

    ids = ["a", "b"]
    values = np.ones((2, 6), "<f8")
    values[1, 4] = np.nan
    data = values.tobytes()
    receiver, _ = _receiver(pb.DATA_TYPE_FLOAT64, ids)
    receiver.accept(_tensor_header(ids, pb.DATA_TYPE_FLOAT64, len(data)), sent_count=2)
    receiver.accept(wire.ChunkView(0, 0, memoryview(data[:48])), sent_count=2)  # the first row is fine
    with pytest.raises(BadOutput, match="NaN"):
        receiver.accept(wire.ChunkView(0, 48, memoryview(data[48:])), sent_count=2)


def test_float64_beyond_float32s_range_is_bad_output():
    from cortexbox.orchestrator.errors import BadOutput

    data = np.full((1, 6), 1e300, "<f8").tobytes()
    receiver, _ = _receiver(pb.DATA_TYPE_FLOAT64, ["a"])
    receiver.accept(_tensor_header(["a"], pb.DATA_TYPE_FLOAT64, len(data)), sent_count=1)
    with pytest.raises(BadOutput, match="beyond float32"):
        receiver.accept(wire.ChunkView(0, 0, memoryview(data)), sent_count=1)


def test_messages_without_new_bytes_have_a_budget():
    from cortexbox.orchestrator.budgets import WireBudgets
    from cortexbox.orchestrator.errors import ProtocolViolation

    budgets = WireBudgets(idle_messages=10, idle_messages_per_output=2)
    receiver, _ = _receiver(pb.DATA_TYPE_FLOAT32, ["a", "b"], budgets=budgets)  # 10 + 2 x 2 stimuli x 1 output
    empty = pb.RunResponse(progress=pb.Progress())
    for _ in range(14):
        receiver.accept(empty, sent_count=2)
    with pytest.raises(ProtocolViolation, match="flood"):
        receiver.accept(empty, sent_count=2)
    # tiny chunks that do not end their tensor count too: 1-byte chunks cannot stand in for progress
    receiver, _ = _receiver(pb.DATA_TYPE_FLOAT32, ["a", "b"], budgets=budgets)
    receiver.accept(_tensor_header(["a", "b"], pb.DATA_TYPE_FLOAT32, 48), sent_count=2)
    with pytest.raises(ProtocolViolation, match="flood"):
        for offset in range(47):
            receiver.accept(wire.ChunkView(0, offset, memoryview(b"\0")), sent_count=2)


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("model_id", "alexnet\x1b[2J", "not allowed"),
        ("model_id", "two words", "not allowed"),
        ("model_id", "m" * 129, "at most 128"),
        ("model_version", "1\u202e", "not allowed"),  # a right-to-left override
        ("limits.max_chunk_bytes", 16, "out of range"),
    ],
)
def test_model_strings_and_chunk_sizes_are_bounded(field, value, words):
    from cortexbox.orchestrator.client import validate_model_info
    from cortexbox.orchestrator.errors import ProtocolViolation

    info = pb.ModelInfo()
    info.CopyFrom(INFO)
    target, _, name = field.rpartition(".")
    setattr(info.limits if target else info, name, value)
    with pytest.raises(ProtocolViolation, match=words):
        validate_model_info(info)


def test_free_text_is_cut_and_cleaned_not_refused():
    from cortexbox.orchestrator.client import validate_model_info

    info = pb.ModelInfo()
    info.CopyFrom(INFO)
    info.description = "line one\n\x1b]0;title\x07" + "x" * 10_000
    info.metadata["note"] = "\x9b31m red"
    d = validate_model_info(info).to_dict()
    assert d["description"].startswith("line one\n\ufffd]0;title\ufffd") and d["description"].endswith(" [cut]")
    assert len(d["description"]) == 4000 + len(" [cut]")
    assert d["metadata"]["note"] == "\ufffd31m red"
