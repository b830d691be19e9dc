"""The Open Inference Protocol v2 beside our own service, on the same socket.

In one process (fast): our generated OIP stubs against the SDK server, checked against what a Run of our own protocol
returns for the same stimuli, and every refusal with its status code. Then the real Triton client: against an
in-process server, and (docker) against the pixels template in its sandboxed container. tritonclient's stubs declare the
same protobuf package (`inference`) as ours, so it always runs in a child process (TRITON_CHECK).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from cortexbox.inference.v2 import grpc_predict_v2_pb2 as oip_pb
from cortexbox.inference.v2 import grpc_predict_v2_pb2_grpc as oip_grpc
from cortexbox.orchestrator.client import ModelClient
from cortexbox.sdk import Model, Output, TextModel, oip, serve, wire

REPO = Path(__file__).resolve().parents[2]
#: What a user of tritonclient would do: check, list, call (raw outputs), and two calls that must fail. Prints a JSON
#: report (metadata as tritonclient gives it, timings), saves the outputs. argv: url model stimuli.npy outputs.npz
TRITON_CHECK = r"""
import json, sys, time
import numpy as np
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

url, model, stimuli, outputs = sys.argv[1:5]
client = triton.InferenceServerClient(url=url)
t0 = time.perf_counter()
report = {"live": client.is_server_live(), "ready": client.is_server_ready(), "model_ready": client.is_model_ready(model),
          "server_metadata": client.get_server_metadata(as_json=True),
          "model_metadata": client.get_model_metadata(model, as_json=True)}
report["metadata_s"] = time.perf_counter() - t0
pixels = np.load(stimuli)
image = triton.InferInput("image", list(pixels.shape), "UINT8")
image.set_data_from_numpy(pixels)
names = [o["name"] for o in report["model_metadata"]["outputs"]]
t0 = time.perf_counter()
result = client.infer(model, [image], outputs=[triton.InferRequestedOutput(n) for n in names], request_id="oip-check")
report["infer_s"] = time.perf_counter() - t0
response = result.get_response(as_json=True)
report["response"] = {k: v for k, v in response.items() if k != "raw_output_contents"}
np.savez(outputs, **{n: result.as_numpy(n) for n in names})
four_channels = triton.InferInput("image", [1, 2, 2, 4], "UINT8")
four_channels.set_data_from_numpy(np.zeros((1, 2, 2, 4), np.uint8))
for case, call in (("unknown_model", lambda: client.infer("no-such-model", [image])),
                   ("bad_shape", lambda: client.infer(model, [four_channels]))):
    try:
        call()
        report[case] = None
    except InferenceServerException as e:
        report[case] = [e.status(), e.message()]
client.close()
print(json.dumps(report))
"""


class Toy(Model):
    model_id = "toy"
    model_version = "3"
    max_batch_size = 4

    def __init__(self, load_delay: float = 0.0, mode: str = ""):
        self.load_delay = load_delay
        self.mode = mode
        self.batches: list[int] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def load(self):
        time.sleep(self.load_delay)

    def layers(self):
        return [Output("mean", (3,)), Output("grid", (2, 5), dtype="float64"), Output("wide", (300_000,))]

    def behaviour_outputs(self):
        return [Output("logits", (10,))]

    def activations(self, stimuli, layers):
        self.batches.append(len(stimuli))
        if self.mode == "block":
            self.entered.set()
            self.release.wait(10)
        if self.mode == "raise":
            raise RuntimeError("boom on purpose")
        out = {}
        if "mean" in layers:
            out["mean"] = np.stack([s.pixels.reshape(-1, 3).mean(axis=0) for s in stimuli])
            if self.mode == "bad_shape":
                out["mean"] = out["mean"][:, :2]
        if "grid" in layers:
            out["grid"] = np.stack([np.arange(10.0).reshape(2, 5) * s.pixels[0, 0, 0] + s.pixels.shape[0] for s in stimuli])
        if "wide" in layers:
            out["wide"] = np.stack([np.full(300_000, float(s.pixels[-1, -1, 2]), np.float32) for s in stimuli])
        return out

    def behaviours(self, stimuli, names):
        return {"logits": np.stack([np.arange(10, dtype=np.float32) * s.pixels[0, 0, 1] for s in stimuli])}


class Words(TextModel):
    """Layer = [position in context, context length, characters]; next word = the part reversed."""

    model_id = "words"
    max_context_tokens = 8

    def __init__(self):
        self.calls: list[list[str]] = []

    def layers(self):
        return [Output("position", (3,))]

    def behaviour_outputs(self):
        return [Output("next_word", (1,), dtype="str")]

    def digest(self, parts, layers, behaviours):
        self.calls.append([p.text for p in parts])
        out = {}
        if "position" in layers:
            out["position"] = np.array([[i, len(parts), len(p.text)] for i, p in enumerate(parts)], np.float32)
        if "next_word" in behaviours:
            out["next_word"] = np.array([[p.text[::-1]] for p in parts], dtype=object)
        return out


@pytest.fixture
def served(tmp_path, monkeypatch):
    monkeypatch.delenv(wire.ENV_NONCE, raising=False)
    servers, channels = [], []

    def start(model: Model) -> tuple[str, oip_grpc.GRPCInferenceServiceStub]:
        address = f"unix://{tmp_path}/m{len(servers)}.sock"
        server, _ = serve(model, address, block=False)
        servers.append(server)
        channel = grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", wire.MAX_MESSAGE_BYTES)])
        channels.append(channel)
        return address, oip_grpc.GRPCInferenceServiceStub(channel)

    yield start
    for channel in channels:
        channel.close()
    for server in servers:
        server.stop(0)


def _wait_ready(stub, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not stub.ServerReady(oip_pb.ServerReadyRequest(), timeout=2).ready:
        assert time.monotonic() < deadline, "the server never became ready"
        time.sleep(0.02)


def _images(n: int, height: int = 6, width: int = 5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, height, width, 3), dtype=np.uint8)


def _infer_request(pixels: np.ndarray, outputs=(), **fields) -> oip_pb.ModelInferRequest:
    request = oip_pb.ModelInferRequest(model_name="toy", **fields)
    request.inputs.add(name="image", datatype="UINT8", shape=list(pixels.shape))
    request.raw_input_contents.append(pixels.tobytes())
    for name in outputs:
        request.outputs.add(name=name)
    return request


def _as_numpy(response: oip_pb.ModelInferResponse) -> dict[str, np.ndarray]:
    dtypes = {"FP32": "<f4", "FP64": "<f8"}
    arrays = {}
    for tensor, raw in zip(response.outputs, response.raw_output_contents):
        if tensor.datatype == "BYTES":
            arrays[tensor.name] = wire.decode_strings(raw, int(np.prod(tensor.shape))).reshape(tuple(tensor.shape))
        else:
            arrays[tensor.name] = np.frombuffer(raw, dtypes[tensor.datatype]).reshape(tuple(tensor.shape))
    return arrays


def _our_run(address: str, stimuli, **kwargs):
    with ModelClient(address) as client:
        client.wait_until_serving(5)
        info = client.info()
        return client.run(info, stimuli, [s[0] for s in stimuli], timeout_s=20, **kwargs)


def _code(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code(), caught.value.details()


# -- in one process -------------------------------------------------------------------------------------------------
def test_liveness_readiness_and_metadata(served):
    _, stub = served(Toy())
    _wait_ready(stub)
    assert stub.ServerLive(oip_pb.ServerLiveRequest()).live
    assert stub.ModelReady(oip_pb.ModelReadyRequest(name="toy")).ready
    assert stub.ModelReady(oip_pb.ModelReadyRequest(name="toy", version="3")).ready
    server = stub.ServerMetadata(oip_pb.ServerMetadataRequest())
    assert server.name == "cortexbox" and server.version
    meta = stub.ModelMetadata(oip_pb.ModelMetadataRequest(name="toy"))
    assert (meta.name, list(meta.versions), meta.platform) == ("toy", ["3"], "cortexbox")
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("image", "UINT8", [-1, -1, -1, 3])]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [
        ("mean", "FP32", [-1, 3]), ("grid", "FP64", [-1, 2, 5]), ("wide", "FP32", [-1, 300_000]), ("logits", "FP32", [-1, 10]),
    ]
    code, details = _code(lambda: stub.ModelMetadata(oip_pb.ModelMetadataRequest(name="other")))
    assert code == grpc.StatusCode.NOT_FOUND and "'toy'" in details
    code, details = _code(lambda: stub.ModelReady(oip_pb.ModelReadyRequest(name="toy", version="2")))
    assert code == grpc.StatusCode.NOT_FOUND and "no version '2'" in details


def test_not_ready_while_the_model_loads(served):
    _, stub = served(Toy(load_delay=1.5))
    assert stub.ServerLive(oip_pb.ServerLiveRequest()).live
    assert not stub.ServerReady(oip_pb.ServerReadyRequest()).ready
    assert not stub.ModelReady(oip_pb.ModelReadyRequest(name="toy")).ready
    code, _ = _code(lambda: stub.ModelInfer(_infer_request(_images(1))))
    assert code == grpc.StatusCode.UNAVAILABLE
    _wait_ready(stub)
    assert stub.ModelReady(oip_pb.ModelReadyRequest(name="toy")).ready


def test_infer_returns_what_our_protocol_returns_in_batches_of_max_batch_size(served):
    model = Toy()
    address, stub = served(model)
    _wait_ready(stub)
    pixels = _images(10)
    response = stub.ModelInfer(_infer_request(pixels, id="req-7"))
    assert model.batches == [4, 4, 2]  # max_batch_size 4, as a Run would batch
    assert (response.model_name, response.model_version, response.id) == ("toy", "3", "req-7")
    assert [(t.name, t.datatype, list(t.shape)) for t in response.outputs] == [
        ("mean", "FP32", [10, 3]), ("grid", "FP64", [10, 2, 5]), ("wide", "FP32", [10, 300_000]), ("logits", "FP32", [10, 10]),
    ]
    ours = _our_run(address, [(f"s{i}", p) for i, p in enumerate(pixels)], layers=["mean", "grid", "wide"], behaviours=["logits"])
    for name, array in _as_numpy(response).items():
        assert array.dtype == (np.float64 if name == "grid" else np.float32)
        np.testing.assert_array_equal(array.reshape(10, -1), ours.outputs[name], err_msg=name)
    assert np.abs(_as_numpy(response)["logits"]).max() > 0  # not all zeros by accident


def test_requested_outputs_come_in_the_requested_order_and_typed_contents_work(served):
    _, stub = served(Toy())
    _wait_ready(stub)
    pixels = _images(3, seed=1)
    raw = _as_numpy(stub.ModelInfer(_infer_request(pixels, outputs=["logits", "mean"])))
    assert list(raw) == ["logits", "mean"]
    typed = oip_pb.ModelInferRequest(model_name="toy", model_version="3")
    tensor = typed.inputs.add(name="image", datatype="UINT8", shape=list(pixels.shape))
    tensor.contents.uint_contents.extend(pixels.reshape(-1).tolist())
    typed.outputs.add(name="mean")
    np.testing.assert_array_equal(_as_numpy(stub.ModelInfer(typed))["mean"], raw["mean"])


@pytest.mark.parametrize(
    "change, code, words",
    [
        (lambda r: setattr(r, "model_name", "resnet"), grpc.StatusCode.NOT_FOUND, "no model 'resnet'"),
        (lambda r: setattr(r, "model_version", "9"), grpc.StatusCode.NOT_FOUND, "no version '9'"),
        (lambda r: r.outputs.add(name="fc9"), grpc.StatusCode.INVALID_ARGUMENT, "unknown layer 'fc9'"),
        (lambda r: r.outputs.add(name="mean"), grpc.StatusCode.INVALID_ARGUMENT, "names an output twice"),
        (lambda r: setattr(r.inputs[0], "name", "pixels"), grpc.StatusCode.INVALID_ARGUMENT, "one input 'image'"),
        (lambda r: setattr(r.inputs[0], "datatype", "FP32"), grpc.StatusCode.INVALID_ARGUMENT, "UINT8 [N, H, W, 3]"),
        (lambda r: r.inputs[0].shape.__setitem__(3, 4), grpc.StatusCode.INVALID_ARGUMENT, "UINT8 [N, H, W, 3]"),
        (lambda r: r.inputs[0].shape.__setitem__(1, 7), grpc.StatusCode.INVALID_ARGUMENT, "needs"),
        (lambda r: r.raw_input_contents.append(b"x"), grpc.StatusCode.INVALID_ARGUMENT, "one entry per input"),
        (lambda r: r.inputs[0].shape.__setitem__(0, 0), grpc.StatusCode.INVALID_ARGUMENT, "UINT8 [N, H, W, 3]"),
    ],
)
def test_refusals_carry_proper_status_codes(served, change, code, words):
    model = Toy()
    _, stub = served(model)
    _wait_ready(stub)
    request = _infer_request(_images(2), outputs=["mean"])
    change(request)
    got, details = _code(lambda: stub.ModelInfer(request))
    assert got == code and words in details, details
    assert model.batches == []  # refused before the model saw anything


def test_a_response_that_cannot_fit_one_message_is_refused_before_compute(served):
    model = Toy()
    _, stub = served(model)
    _wait_ready(stub)
    code, details = _code(lambda: stub.ModelInfer(_infer_request(_images(60), outputs=["wide"])))  # 60 x 1.2 MB
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "fewer" in details
    assert model.batches == []


@pytest.mark.parametrize(
    "mode, code, words",
    [("raise", grpc.StatusCode.INTERNAL, "RuntimeError: boom on purpose"), ("bad_shape", grpc.StatusCode.INTERNAL, "declared (4, 3)")],
)
def test_model_failures_map_as_in_a_run(served, mode, code, words):
    _, stub = served(Toy(mode=mode))
    _wait_ready(stub)
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(_infer_request(_images(4), outputs=["mean"]))
    assert caught.value.code() == code and words in caught.value.details()
    reasons = dict(caught.value.trailing_metadata())
    assert reasons[wire.ERROR_REASON_KEY] == ("MODEL_ERROR" if mode == "raise" else "BAD_OUTPUT")


def test_one_computation_at_a_time_with_a_run(served, monkeypatch):
    monkeypatch.setattr(oip, "LOCK_WAIT_S", 0.3)
    model = Toy(mode="block")
    address, stub = served(model)
    _wait_ready(stub)
    results = []
    run = threading.Thread(target=lambda: results.append(_our_run(address, [("a", _images(1)[0])], layers=["mean"])))
    run.start()
    try:
        assert model.entered.wait(5)
        code, details = _code(lambda: stub.ModelInfer(_infer_request(_images(1), outputs=["mean"])))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "in progress" in details
    finally:
        model.release.set()
        run.join(10)
    assert len(results) == 1 and results[0].outputs["mean"].shape == (1, 3)
    stub.ModelInfer(_infer_request(_images(1), outputs=["mean"]))  # the lock is free again


def test_text_parts_are_one_context_and_strings_are_bytes(served):
    model = Words()
    address, stub = served(model)
    _wait_ready(stub)
    meta = stub.ModelMetadata(oip_pb.ModelMetadataRequest(name="words"))
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("text", "BYTES", [-1])]
    assert [(t.name, t.datatype) for t in meta.outputs] == [("position", "FP32"), ("next_word", "BYTES")]
    parts = ["the", "cät", "sat"]
    request = oip_pb.ModelInferRequest(model_name="words")
    request.inputs.add(name="text", datatype="BYTES", shape=[3])
    request.raw_input_contents.append(wire.encode_strings(np.array(parts, dtype=object)))
    got = _as_numpy(stub.ModelInfer(request))
    assert model.calls == [parts]  # one digest: the parts form one context
    ours = _our_run(address, [(f"w{i}", p, "ctx") for i, p in enumerate(parts)], layers=["position"], behaviours=["next_word"])
    np.testing.assert_array_equal(got["position"], ours.outputs["position"])
    assert got["next_word"].reshape(-1).tolist() == ours.outputs["next_word"].reshape(-1).tolist() == ["eht", "täc", "tas"]
    # Our validation rules apply: an empty part is refused as in a Run.
    request.raw_input_contents[0] = wire.encode_strings(np.array(["the", " "], dtype=object))
    request.inputs[0].shape[0] = 2
    code, details = _code(lambda: stub.ModelInfer(request))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "empty text part" in details
    request.raw_input_contents[0] = b"\x05\x00\x00\x00ab"  # a length past the end
    code, details = _code(lambda: stub.ModelInfer(request))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "runs past" in details


def test_the_orchestrator_side_never_loads_the_oip_descriptors():
    """tritonclient declares the same protobuf package as ours, so the orchestrator's client (which imports the SDK)
    must not load ours: both import side by side."""
    code = (
        "import sys, cortexbox.orchestrator.client, tritonclient.grpc\n"
        "print('cortexbox.inference.v2.grpc_predict_v2_pb2' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr[-2000:]


# -- the real Triton client -----------------------------------------------------------------------------------------
def _triton(address: str, model: str, pixels: np.ndarray, tmp_path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    np.save(tmp_path / "stimuli.npy", pixels)
    done = subprocess.run(
        [sys.executable, "-c", TRITON_CHECK, address, model, str(tmp_path / "stimuli.npy"), str(tmp_path / "outputs.npz")],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(tmp_path / "outputs.npz") as arrays:
        return json.loads(done.stdout), {name: arrays[name] for name in arrays.files}


def test_our_messages_match_tritonclients_field_numbers():
    """Wire compatibility: every field we declare has the number and type of Triton's own stubs (read in a child
    process, since both declare `inference`)."""
    code = (
        "import json; from tritonclient.grpc import service_pb2 as s\n"
        "def walk(d, out):\n"
        "    out[d.full_name] = {f.name: [f.number, f.type, f.is_repeated] for f in d.fields}\n"
        "    [walk(n, out) for n in d.nested_types]\n"
        "out = {}; [walk(d, out) for d in s.DESCRIPTOR.message_types_by_name.values()]\n"
        "svc = s.DESCRIPTOR.services_by_name['GRPCInferenceService']\n"
        "out['rpcs'] = {m.name: [m.input_type.full_name, m.output_type.full_name] for m in svc.methods}\n"
        "print(json.dumps(out))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    theirs = json.loads(done.stdout)
    ours: dict = {}

    def walk(d):
        ours[d.full_name] = {f.name: [f.number, f.type, f.is_repeated] for f in d.fields}
        for nested in d.nested_types:
            walk(nested)

    for message in oip_pb.DESCRIPTOR.message_types_by_name.values():
        walk(message)
    ours.pop("inference.InferParameter")  # Triton's has two more choices (double, uint64); the three here match:
    assert all(theirs["inference.InferParameter"][k] == v for k, v in
               {f.name: [f.number, f.type, f.is_repeated] for f in oip_pb.InferParameter.DESCRIPTOR.fields}.items())
    for name, fields in ours.items():
        if name.endswith("Entry"):
            continue
        assert fields == {k: v for k, v in theirs[name].items() if k in fields} and set(fields) <= set(theirs[name]), name
    service = oip_pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == oip.SERVICE_NAME == "inference.GRPCInferenceService"
    for method in service.methods:
        assert theirs["rpcs"][method.name] == [method.input_type.full_name, method.output_type.full_name]


def test_tritonclient_lists_and_calls_an_in_process_server(served, tmp_path):
    address, stub = served(Toy())
    _wait_ready(stub)
    pixels = _images(5, seed=3)
    report, arrays = _triton(address, "toy", pixels, tmp_path)
    assert report["live"] and report["ready"] and report["model_ready"]
    assert report["model_metadata"]["inputs"] == [{"name": "image", "datatype": "UINT8", "shape": ["-1", "-1", "-1", "3"]}]
    assert report["unknown_model"][0] == "StatusCode.NOT_FOUND"
    assert report["bad_shape"][0] == "StatusCode.INVALID_ARGUMENT"
    expected = _as_numpy(stub.ModelInfer(_infer_request(pixels)))
    assert sorted(arrays) == sorted(expected)
    for name in expected:
        np.testing.assert_array_equal(arrays[name], expected[name], err_msg=name)


@pytest.fixture(scope="module")
def oip_pixels_image(docker_client, base_image):
    """The pixels template built with this checkout's SDK under a tag of our own (the demo's cortexbox/pixels may
    predate the OIP); removed afterwards."""
    import docker.errors

    from cortexbox.orchestrator import images

    tag = "cortexbox-test/oip-pixels:latest"
    built = images.build_model_image(docker_client, REPO / "model_templates" / "pixels", tag=tag)
    yield built.tag
    for name in (built.tag, f"{images.STAGE_REPOSITORY}/cortexbox-test--oip-pixels--build:latest"):
        try:
            docker_client.images.remove(name)  # a tag that another tag shares is only untagged
        except docker.errors.ImageNotFound:
            pass


@pytest.mark.docker
def test_tritonclient_lists_and_calls_the_pixels_template_container(docker_client, oip_pixels_image, tmp_path):
    from cortexbox.orchestrator.runtime import ContainerSession

    pixels = _images(4, height=96, width=128, seed=4)
    t0 = time.perf_counter()
    with ContainerSession(docker_client, oip_pixels_image) as session:
        started_s = time.perf_counter() - t0
        ids = [f"s{i}" for i in range(len(pixels))]
        ours = session.client.run(session.description, list(zip(ids, pixels)), ids, layers=["pixels"], timeout_s=60)
        report, arrays = _triton(f"unix://{session.socket_path}", "pixels", pixels, tmp_path)
    print(json.dumps({"container_start_s": round(started_s, 2), "our_run_s": round(ours.wall_s, 3), **report}, indent=1))
    assert report["live"] and report["ready"] and report["model_ready"]
    assert report["server_metadata"]["name"] == "cortexbox"
    assert report["model_metadata"]["outputs"] == [{"name": "pixels", "datatype": "FP32", "shape": ["-1", "256", "256", "3"]}]
    assert report["unknown_model"][0] == "StatusCode.NOT_FOUND"
    assert report["bad_shape"][0] == "StatusCode.INVALID_ARGUMENT"
    assert arrays["pixels"].shape == (4, 256, 256, 3) and arrays["pixels"].dtype == np.float32
    np.testing.assert_array_equal(arrays["pixels"].reshape(4, -1), ours.outputs["pixels"])
    assert arrays["pixels"].std() > 10  # real images, not a constant
