"""The Open Inference Protocol v2 (KServe's "V2 inference protocol", as Triton and MLServer serve it), beside
cortexbox.model.v1 on the same server and socket.

Why: so that a model image can be listed, checked and called with the tools people already have (tritonclient,
grpcurl, KServe's clients). It is for interoperability and checking only: the orchestrator keeps reading through
cortexbox.model.v1, whose validating client (orchestrator/client.py) applies our rules to all it reads. Every call
here goes through the same ModelServicer code as a Run (output names, stimulus decoding and checks, batches of at
most max_batch_size, the per-batch output checks, one computation at a time), so both protocols return the same
numbers and refuse the same things.

The model is named by its ``model_id`` and versioned by its ``model_version`` (an empty version means it). Tensors:

- input ``image`` (image models): UINT8 [N, H, W, 3], RGB, NHWC: N pixel arrays as a Run's stimuli carry them
  (placing them at the model's visual degrees is the caller's job here; the orchestrator does it for a Run);
- input ``text`` (text models): BYTES [N], the N parts of ONE cumulative context, in order (as parts with one
  context_id in a Run); send one request per context;
- outputs: every layer and behaviour under its own name, [N, *shape], in its declared type (FP32, ..., and BYTES for
  strings), always as ``raw_output_contents``; no requested outputs means all of them. The response is one message,
  so its tensors must fit in MAX_RESPONSE_BYTES (ask for fewer outputs or send fewer stimuli).

Inputs come as ``raw_input_contents`` or typed contents (``uint_contents``, ``bytes_contents``). Failures end the
call with the status a Run would end with (INVALID_ARGUMENT, INTERNAL, ...), NOT_FOUND for another model's name.

tritonclient's stubs declare the same protobuf package (``inference``), so one Python process cannot import both
them and this module: serve() imports it only when it starts a server.
"""

from __future__ import annotations

import logging
import math
import time
from typing import NoReturn, Sequence

import grpc
import numpy as np

from cortexbox.inference.v2 import grpc_predict_v2_pb2 as oip
from cortexbox.inference.v2 import grpc_predict_v2_pb2_grpc as oip_grpc
from cortexbox.model.v1 import model_service_pb2 as pb
from cortexbox.sdk import wire
from cortexbox.sdk.model import Stimulus, TextModel
from cortexbox.sdk.server import MAX_CONTEXT_PARTS, ModelServicer, RunAborted, _abort, _as_run_aborted, sdk_version

log = logging.getLogger("cortexbox.sdk")

SERVICE_NAME = oip.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name  # "inference.GRPCInferenceService"
SERVER_NAME = "cortexbox"
PLATFORM = "cortexbox"
#: Input tensor name per modality.
INPUT_NAMES = {"image": "image", "text": "text"}
#: OIP tensor data types of our wire data types.
DATATYPES: dict[int, str] = {
    pb.DATA_TYPE_FLOAT32: "FP32",
    pb.DATA_TYPE_FLOAT16: "FP16",
    pb.DATA_TYPE_FLOAT64: "FP64",
    pb.DATA_TYPE_UINT8: "UINT8",
    pb.DATA_TYPE_INT32: "INT32",
    pb.DATA_TYPE_INT64: "INT64",
    pb.DATA_TYPE_STRING: "BYTES",
}
#: A response is one message: its tensors must fit under the message limit, with room for the framing.
MAX_RESPONSE_BYTES = wire.MAX_MESSAGE_BYTES - (1 << 20)
#: Most images in one request; more belong in a Run, which streams.
MAX_IMAGES = 4096
#: How long a call waits while a Run (or another call) computes before it ends with RESOURCE_EXHAUSTED / BUSY.
LOCK_WAIT_S = 30.0


def _refuse(message: str, reason: str = "BAD_STIMULUS") -> RunAborted:
    return RunAborted(grpc.StatusCode.INVALID_ARGUMENT, reason, message)


class InferenceServicer(oip_grpc.GRPCInferenceServiceServicer):
    """Serves the Model of one ModelServicer (`runtime`) over the OIP; shares its readiness, checks and lock."""

    def __init__(self, runtime: ModelServicer):
        self.runtime = runtime

    # -- readiness and metadata -----------------------------------------------------------
    def ServerLive(self, request: oip.ServerLiveRequest, context: grpc.ServicerContext) -> oip.ServerLiveResponse:
        return oip.ServerLiveResponse(live=True)

    def ServerReady(self, request: oip.ServerReadyRequest, context: grpc.ServicerContext) -> oip.ServerReadyResponse:
        return oip.ServerReadyResponse(ready=self.runtime.ready.is_set())

    def ModelReady(self, request: oip.ModelReadyRequest, context: grpc.ServicerContext) -> oip.ModelReadyResponse:
        self._check_model(request.name, request.version, context)
        return oip.ModelReadyResponse(ready=self.runtime.ready.is_set())

    def ServerMetadata(self, request: oip.ServerMetadataRequest, context: grpc.ServicerContext) -> oip.ServerMetadataResponse:
        return oip.ServerMetadataResponse(name=SERVER_NAME, version=sdk_version())

    def ModelMetadata(self, request: oip.ModelMetadataRequest, context: grpc.ServicerContext) -> oip.ModelMetadataResponse:
        self.runtime.last_activity = time.monotonic()
        self._check_model(request.name, request.version, context)
        info = self._loaded_info(context)
        model = self.runtime.model
        if model.modality == "image":
            inputs = [oip.ModelMetadataResponse.TensorMetadata(name=INPUT_NAMES["image"], datatype="UINT8", shape=[-1, -1, -1, 3])]
        else:
            inputs = [oip.ModelMetadataResponse.TensorMetadata(name=INPUT_NAMES["text"], datatype="BYTES", shape=[-1])]
        outputs = [
            oip.ModelMetadataResponse.TensorMetadata(name=spec.name, datatype=DATATYPES[spec.data_type], shape=[-1, *spec.shape])
            for spec in list(info.layers) + list(info.behaviours)
        ]
        return oip.ModelMetadataResponse(
            name=model.model_id, versions=[str(model.model_version)], platform=PLATFORM, inputs=inputs, outputs=outputs
        )

    # -- inference ------------------------------------------------------------------------
    def ModelInfer(self, request: oip.ModelInferRequest, context: grpc.ServicerContext) -> oip.ModelInferResponse:
        runtime = self.runtime
        runtime.last_activity = time.monotonic()
        self._check_model(request.model_name, request.model_version, context)
        self._loaded_info(context)
        try:
            names, config = self._outputs(request)
            messages = self._stimuli(request)
            self._check_response_size(names, len(messages))
        except RunAborted as e:
            _fail(context, e)
        wait = LOCK_WAIT_S
        remaining = context.time_remaining()
        if remaining is not None:
            wait = max(0.0, min(wait, remaining))
        if not runtime._run_lock.acquire(timeout=wait):
            _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, "BUSY", "another run or inference is in progress; try again later")
        failure: RunAborted | None = None
        try:
            seen: set[str] = set()
            stimuli = [runtime._decode(message, seen) for message in messages]
            outputs = self._compute(stimuli, config, context)
        except BaseException as e:  # noqa: BLE001 - mapped as a Run maps it (and model tracebacks logged)
            failure = _as_run_aborted(e)
        finally:
            runtime.last_activity = time.monotonic()
            runtime._run_lock.release()
        if failure is not None:
            _fail(context, failure)
        model = runtime.model
        response = oip.ModelInferResponse(model_name=model.model_id, model_version=str(model.model_version), id=request.id)
        for name in names:
            array = outputs[name]
            data_type = wire.data_type_of(runtime._outputs[name][0].dtype)
            raw = wire.encode_strings(array) if data_type == pb.DATA_TYPE_STRING else array.tobytes()
            response.outputs.add(name=name, datatype=DATATYPES[data_type], shape=list(array.shape))
            response.raw_output_contents.append(raw)
        return response

    def _outputs(self, request: oip.ModelInferRequest) -> tuple[list[str], pb.RunConfig]:
        """The requested output names (all, in ModelInfo's order, when none are named) and the RunConfig that asks
        for them, checked by the Run's own config check."""
        runtime = self.runtime
        names = [o.name for o in request.outputs] or list(runtime._outputs)
        behaviours = [n for n in names if runtime._outputs.get(n, (None, None))[1] == pb.OUTPUT_KIND_BEHAVIOUR]
        layers = [n for n in names if n not in behaviours]
        config = pb.RunConfig(run_id=request.id, layers=layers, behaviours=behaviours)
        return names, runtime._read_config(iter([pb.RunRequest(config=config)]))

    def _stimuli(self, request: oip.ModelInferRequest) -> list[pb.Stimulus]:
        """The input tensor as the Stimulus messages a Run would carry (ids "0", "1", ...); the Run's decoder checks
        them under the lock."""
        modality = self.runtime.model.modality
        name = INPUT_NAMES.get(modality, modality)
        if len(request.inputs) != 1 or request.inputs[0].name != name:
            got = [i.name for i in request.inputs]
            raise _refuse(f"this {modality} model takes exactly one input {name!r}, got {got}")
        if request.raw_input_contents and len(request.raw_input_contents) != len(request.inputs):
            raise _refuse("raw_input_contents must hold one entry per input")
        tensor = request.inputs[0]
        raw = request.raw_input_contents[0] if request.raw_input_contents else None
        shape = list(tensor.shape)
        if modality == "image":
            if tensor.datatype != "UINT8" or len(shape) != 4 or shape[3] != 3 or min(shape) <= 0:
                raise _refuse(f"input 'image' must be UINT8 [N, H, W, 3] (RGB, NHWC), got {tensor.datatype} {shape}")
            n, height, width = shape[:3]
            if n > MAX_IMAGES:
                raise _refuse(f"{n} images in one request; at most {MAX_IMAGES} (a Run streams more)")
            size = height * width * 3
            data = raw if raw is not None else _typed_uint8(tensor.contents.uint_contents)
            if len(data) != n * size:
                raise _refuse(f"input 'image' carries {len(data)} bytes; UINT8 {shape} needs {n * size}")
            return [
                pb.Stimulus(id=str(i), pixels=pb.Tensor(data_type=pb.DATA_TYPE_UINT8, shape=[height, width, 3], data=data[i * size : (i + 1) * size]))
                for i in range(n)
            ]
        if tensor.datatype != "BYTES" or len(shape) != 1 or shape[0] <= 0:
            raise _refuse(f"input 'text' must be BYTES [N] (the parts of one context), got {tensor.datatype} {shape}")
        n = shape[0]
        if n > MAX_CONTEXT_PARTS:
            raise _refuse(f"a context of {n} parts; at most {MAX_CONTEXT_PARTS}")
        try:
            texts = list(wire.decode_strings(raw, n)) if raw is not None else _typed_strings(tensor.contents.bytes_contents, n)
        except ValueError as e:
            raise _refuse(f"input 'text': {e}") from None
        return [pb.Stimulus(id=str(i), text=text, context_id="0") for i, text in enumerate(texts)]

    def _check_response_size(self, names: Sequence[str], n: int) -> None:
        """Refuses, before any compute, a response that could not fit in one message (strings at their longest)."""
        total = 0
        for name in names:
            output = self.runtime._outputs[name][0]
            if wire.data_type_of(output.dtype) == pb.DATA_TYPE_STRING:
                itemsize = 4 + wire.MAX_STRING_BYTES
            else:
                itemsize = np.dtype(output.dtype).itemsize
            total += n * math.prod(output.shape) * itemsize
        if total > MAX_RESPONSE_BYTES:
            raise RunAborted(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "BAD_CONFIG",
                f"the outputs of {n} stimuli take up to {total} bytes, one response carries at most {MAX_RESPONSE_BYTES}: "
                "ask for fewer outputs or send fewer stimuli",
            )

    def _compute(self, stimuli: list[Stimulus], config: pb.RunConfig, context: grpc.ServicerContext) -> dict[str, np.ndarray]:
        """The model's checked outputs: a text model's context in one digest, images in batches of max_batch_size."""
        runtime = self.runtime
        if runtime.model.modality == "text" and isinstance(runtime.model, TextModel):
            return runtime._call_text([stimuli], config)
        limit = runtime._limits().max_batch_size
        parts = []
        for start in range(0, len(stimuli), limit):
            if not context.is_active():
                raise RunAborted(grpc.StatusCode.CANCELLED, "ERROR_REASON_UNSPECIFIED", "the client cancelled the call")
            parts.append(runtime._call_model(stimuli[start : start + limit], config))
        if len(parts) == 1:
            return parts[0]
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

    # -- checks -----------------------------------------------------------------------------
    def _check_model(self, name: str, version: str, context: grpc.ServicerContext) -> None:
        model = self.runtime.model
        if name != model.model_id:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no model {name[:200]!r} here; this server serves {model.model_id!r}")
        if version and version != str(model.model_version):
            context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"model {model.model_id!r} has no version {version[:200]!r}; it has {str(model.model_version)!r}",
            )

    def _loaded_info(self, context: grpc.ServicerContext) -> pb.ModelInfo:
        if not self.runtime.ready.is_set() or self.runtime._info is None:
            _abort(context, grpc.StatusCode.UNAVAILABLE, "NOT_READY", "the model is still loading")
        assert self.runtime._info is not None
        return self.runtime._info


def _typed_uint8(values: Sequence[int]) -> bytes:
    array = np.asarray(values, dtype=np.int64)
    if array.size and (array.min() < 0 or array.max() > 255):
        raise _refuse("input 'image': uint_contents outside 0-255")
    return array.astype(np.uint8).tobytes()


def _typed_strings(values: Sequence[bytes], n: int) -> list[str]:
    if len(values) != n:
        raise ValueError(f"bytes_contents holds {len(values)} elements, the shape says {n}")
    texts = []
    for i, value in enumerate(values):
        if len(value) > wire.MAX_STRING_BYTES:
            raise ValueError(f"element {i} has {len(value)} bytes; at most {wire.MAX_STRING_BYTES}")
        try:
            texts.append(value.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise ValueError(f"element {i} is not valid UTF-8: {e.reason}") from None
    return texts


def _fail(context: grpc.ServicerContext, error: RunAborted) -> NoReturn:
    _abort(context, error.code, error.reason, error.message)
    raise AssertionError("unreachable: context.abort raises")


def add_to_server(runtime: ModelServicer, server: grpc.Server) -> InferenceServicer:
    """Registers the OIP service for `runtime`'s model on `server` (before it starts)."""
    servicer = InferenceServicer(runtime)
    oip_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    return servicer
