"""The orchestrator's side of cortexbox.model.v1: a client that trusts nothing it receives.

Every message from a model is checked against the contract before it touches memory:
declared outputs and shapes, byte counts, chunk order and size, stimulus ids, NaN and inf.
Outputs are written straight into one preallocated float32 array per output (stimuli x
features), so a run holds one copy of its results plus at most one batch in flight.
"""

from __future__ import annotations

import math
import secrets
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cortexbox.model.v1 import model_service_pb2 as pb
from cortexbox.model.v1 import model_service_pb2_grpc as pb_grpc
from cortexbox.orchestrator.errors import (
    BadOutput,
    FailureClass,
    ModelFailure,
    ProtocolViolation,
)
from cortexbox.sdk import wire

#: Upper bounds on what a model may declare, so a hostile ModelInfo cannot make us allocate
#: absurd amounts or loop forever.
MAX_OUTPUTS = 10_000
MAX_FEATURES_PER_STIMULUS = 50_000_000
#: Default cap on the results of one run held in memory (float32), across all outputs.
DEFAULT_MAX_RESULT_BYTES = 8 * 1024**3

_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", wire.MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", wire.MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.enable_retries", 0),
]


@dataclass(frozen=True)
class OutputInfo:
    name: str
    kind: int
    dtype: np.dtype
    shape: tuple[int, ...]

    @property
    def features(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class ModelDescription:
    """A validated ModelInfo."""

    raw: pb.ModelInfo
    outputs: dict[str, OutputInfo]

    @property
    def layers(self) -> list[str]:
        return [o.name for o in self.outputs.values() if o.kind == pb.OUTPUT_KIND_LAYER]

    @property
    def behaviours(self) -> list[str]:
        return [o.name for o in self.outputs.values() if o.kind == pb.OUTPUT_KIND_BEHAVIOUR]

    @property
    def modality(self) -> str:
        return {pb.MODALITY_IMAGE: "image", pb.MODALITY_TEXT: "text"}[self.raw.modality]

    def to_dict(self) -> dict:
        r = self.raw
        return {
            "model_id": r.model_id,
            "model_version": r.model_version,
            "description": r.description,
            "protocol_version": r.protocol_version,
            "modality": self.modality,
            "visual_degrees": r.visual_degrees,
            "region_layers": dict(r.region_layers),
            "commitment_layers": list(r.commitment_layers),
            "layers": {o.name: list(o.shape) for o in self.outputs.values() if o.kind == pb.OUTPUT_KIND_LAYER},
            "behaviours": {o.name: list(o.shape) for o in self.outputs.values() if o.kind == pb.OUTPUT_KIND_BEHAVIOUR},
            "max_batch_size": r.limits.max_batch_size,
            "capabilities": list(r.capabilities),
            "metadata": dict(r.metadata),
        }


def validate_model_info(info: pb.ModelInfo) -> ModelDescription:
    """Checks a ModelInfo against the contract; ProtocolViolation names the first problem."""
    major = info.protocol_version.split(".")[0]
    if major != wire.PROTOCOL_VERSION.split(".")[0]:
        raise ProtocolViolation(f"protocol version {info.protocol_version!r} is not 1.x")
    if info.modality not in (pb.MODALITY_IMAGE, pb.MODALITY_TEXT):
        raise ProtocolViolation(f"unknown modality {info.modality}")
    if len(info.layers) + len(info.behaviours) > MAX_OUTPUTS:
        raise ProtocolViolation(f"more than {MAX_OUTPUTS} outputs declared")
    outputs: dict[str, OutputInfo] = {}
    for spec, kind in [(s, pb.OUTPUT_KIND_LAYER) for s in info.layers] + [
        (s, pb.OUTPUT_KIND_BEHAVIOUR) for s in info.behaviours
    ]:
        if not spec.name or len(spec.name) > 512 or spec.name in outputs:
            raise ProtocolViolation(f"output name {spec.name[:80]!r} is empty, too long or repeated")
        if spec.kind != kind:
            raise ProtocolViolation(f"output {spec.name!r} is listed as the wrong kind")
        try:
            dtype = wire.numpy_dtype(spec.data_type)
        except ValueError as e:
            raise ProtocolViolation(f"output {spec.name!r}: {e}") from None
        shape = tuple(spec.shape)
        if not shape or any(s <= 0 for s in shape) or math.prod(shape) > MAX_FEATURES_PER_STIMULUS:
            raise ProtocolViolation(f"output {spec.name!r} declares an invalid shape {list(shape)}")
        outputs[spec.name] = OutputInfo(spec.name, kind, dtype, shape)
    for region, layer in info.region_layers.items():
        if layer not in outputs or outputs[layer].kind != pb.OUTPUT_KIND_LAYER:
            raise ProtocolViolation(f"region {region!r} is committed to unknown layer {layer!r}")
    for layer in info.commitment_layers:
        if layer not in outputs or outputs[layer].kind != pb.OUTPUT_KIND_LAYER:
            raise ProtocolViolation(f"commitment layer {layer!r} is not a declared layer")
    limits = info.limits
    if not 1 <= limits.max_batch_size <= 100_000:
        raise ProtocolViolation(f"max_batch_size {limits.max_batch_size} out of range")
    if not 1 <= limits.max_chunk_bytes <= wire.MAX_CHUNK_BYTES:
        raise ProtocolViolation(f"max_chunk_bytes {limits.max_chunk_bytes} out of range (1..{wire.MAX_CHUNK_BYTES})")
    if info.modality == pb.MODALITY_IMAGE and not (0 < info.visual_degrees <= 360 and math.isfinite(info.visual_degrees)):
        raise ProtocolViolation(f"visual_degrees {info.visual_degrees} out of range")
    return ModelDescription(info, outputs)


@dataclass
class RunResult:
    """Outputs of one run: `outputs[name]` is (n_stimuli, features) float32, rows in the
    order of `stimulus_ids`."""

    stimulus_ids: list[str]
    outputs: dict[str, np.ndarray]
    summary: pb.RunSummary
    wall_s: float
    bytes_received: int = 0
    timings_s: dict[str, float] = field(default_factory=dict)


ProgressCallback = Callable[[int, int], None]  # (stimuli_done, n_stimuli)


def _failure_from_rpc_error(e: grpc.RpcError, what: str) -> ModelFailure:
    code = e.code() if hasattr(e, "code") else None
    details = (e.details() if hasattr(e, "details") else str(e)) or ""
    reason = ""
    for key, value in (e.trailing_metadata() or ()) if hasattr(e, "trailing_metadata") else ():
        if key == wire.ERROR_REASON_KEY:
            reason = str(value)
    by_reason = {
        "MODEL_ERROR": FailureClass.MODEL_ERROR,
        "OUT_OF_MEMORY": FailureClass.OUT_OF_MEMORY,
        "BAD_OUTPUT": FailureClass.BAD_OUTPUT,
        "BAD_STIMULUS": FailureClass.REJECTED,
        "BAD_CONFIG": FailureClass.REJECTED,
        "UNKNOWN_OUTPUT": FailureClass.REJECTED,
        "UNSUPPORTED": FailureClass.REJECTED,
        "NOT_READY": FailureClass.CRASH,
        "BUSY": FailureClass.REJECTED,
    }
    if reason in by_reason:
        failure = by_reason[reason]
    elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
        failure = FailureClass.TIMEOUT
    elif code == grpc.StatusCode.CANCELLED:
        failure = FailureClass.CANCELLED
    elif code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        failure = FailureClass.PROTOCOL_VIOLATION  # a message over our size limit
    else:
        failure = FailureClass.CRASH
    name = code.name if code is not None else "UNKNOWN"
    return ModelFailure(failure, f"{what}: {name}: {details[:2000]}", reason=reason)


class ModelClient:
    """Talks to one model server. Every call has a deadline."""

    def __init__(self, target: str, *, nonce: str | None = None, call_timeout_s: float = 10.0):
        self.target = target
        self.nonce = nonce
        self.call_timeout_s = call_timeout_s
        self.channel = grpc.insecure_channel(target, options=_CHANNEL_OPTIONS)
        self.stub = pb_grpc.ModelServiceStub(self.channel)
        # Run's chunks are parsed by hand, without copying their payload (wire.decode_run_response).
        self._run = self.channel.stream_stream(
            f"/{wire.SERVICE_NAME}/Run",
            request_serializer=pb.RunRequest.SerializeToString,
            response_deserializer=wire.decode_run_response,
        )
        self._health = health_pb2_grpc.HealthStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "ModelClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- readiness ------------------------------------------------------------------------
    def wait_until_serving(self, timeout_s: float, still_alive: Callable[[], None] | None = None) -> None:
        """Polls grpc.health.v1 until SERVING. `still_alive` raises if the server died, so a
        crashed container fails fast instead of waiting out the timeout."""
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while True:
            if still_alive is not None:
                still_alive()
            try:
                response = self._health.Check(health_pb2.HealthCheckRequest(service=wire.SERVICE_NAME), timeout=1.0)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
            except grpc.RpcError as e:
                last = f"{e.code().name}: {e.details()}"
            if time.monotonic() >= deadline:
                raise ModelFailure(
                    FailureClass.TIMEOUT, f"the model was not SERVING within {timeout_s:.0f} s (last health answer: {last})"
                )
            time.sleep(0.2)

    def handshake(self) -> None:
        """Checks that the server holds this run's nonce; without a nonce (an author's own
        server) there is nothing to prove."""
        if self.nonce is None:
            return
        challenge = secrets.token_bytes(32)
        try:
            response = self.stub.Handshake(pb.HandshakeRequest(challenge=challenge), timeout=self.call_timeout_s)
        except grpc.RpcError as e:
            raise _failure_from_rpc_error(e, "Handshake") from None
        if not wire.proof_matches(self.nonce, challenge, response.proof):
            raise ModelFailure(
                FailureClass.HANDSHAKE_FAILED,
                "the server on the socket did not prove it holds this run's nonce: it is not the container we started",
            )

    def info(self) -> ModelDescription:
        try:
            raw = self.stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=self.call_timeout_s)
        except grpc.RpcError as e:
            raise _failure_from_rpc_error(e, "GetModelInfo") from None
        return validate_model_info(raw)

    # -- runs -----------------------------------------------------------------------------
    def run(
        self,
        description: ModelDescription,
        stimuli: Iterable[tuple[str, np.ndarray | str] | tuple[str, str, str]],
        stimulus_ids: Sequence[str],
        *,
        layers: Sequence[str] = (),
        behaviours: Sequence[str] = (),
        timeout_s: float,
        batch_size: int = 0,
        max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
        on_progress: ProgressCallback | None = None,
        run_id: str = "",
    ) -> RunResult:
        """Streams `stimuli` ((id, pixels HxWx3 uint8), (id, text) or (id, text, context_id))
        and collects outputs.

        `stimulus_ids` lists the ids `stimuli` will yield, in order; it sizes the result
        arrays up front. The whole run must finish within `timeout_s`. Text parts with the same
        context_id form one cumulative context and must be yielded contiguously, in order.
        Outputs of DATA_TYPE_STRING (e.g. "next_word") come back as object arrays of str.
        """
        requested = list(layers) + list(behaviours)
        for name in requested:
            if name not in description.outputs:
                raise ValueError(f"the model has no output {name!r}")
        n = len(stimulus_ids)
        index = {sid: i for i, sid in enumerate(stimulus_ids)}
        if len(index) != n:
            raise ValueError("stimulus ids must be unique")
        need = sum(n * description.outputs[name].features * _result_itemsize(description.outputs[name]) for name in requested)
        if need > max_result_bytes:
            raise ValueError(f"this run would hold {need / 2**30:.1f} GiB of results; the cap is {max_result_bytes / 2**30:.1f} GiB")
        results = {
            name: np.empty((n, description.outputs[name].features), dtype=object if _is_string(description.outputs[name]) else np.float32)
            for name in requested
        }
        received = RunReceiver(description, requested, index, results)
        max_chunk = description.raw.limits.max_chunk_bytes
        sent: list[str] = []
        refused: list[ValueError] = []

        def requests() -> Iterator[pb.RunRequest]:
            yield pb.RunRequest(
                config=pb.RunConfig(
                    run_id=run_id,
                    layers=list(layers),
                    behaviours=list(behaviours),
                    batch_size=batch_size,
                    max_chunk_bytes=max_chunk,
                )
            )
            for item in stimuli:
                sid, content = item[0], item[1]
                context_id = item[2] if len(item) > 2 else ""
                try:
                    message = _stimulus_message(sid, content, context_id)
                except ValueError as e:  # gRPC would swallow it into a bare CANCELLED; re-raised below
                    refused.append(e)
                    raise
                sent.append(sid)
                yield pb.RunRequest(stimulus=message)

        start = time.perf_counter()
        call = self._run(requests(), timeout=timeout_s)
        try:
            for response in call:
                if received.accept(response, sent_count=len(sent)) == "progress" and on_progress is not None:
                    on_progress(received.stimuli_done, n)
        except grpc.RpcError as e:
            if refused:
                raise refused[0] from None
            raise _failure_from_rpc_error(e, "Run") from None
        finally:
            call.cancel()  # a no-op after a clean end; stops the model on any other exit
        if sent != list(stimulus_ids):
            raise ValueError("the stimuli iterable did not yield exactly `stimulus_ids`, in order")
        received.finish()
        return RunResult(
            stimulus_ids=list(stimulus_ids),
            outputs=results,
            summary=received.summary,
            wall_s=time.perf_counter() - start,
            bytes_received=received.bytes_received,
            timings_s=dict(received.summary.timings_s),
        )


def _is_string(output: OutputInfo) -> bool:
    return output.dtype == wire.STRING_DTYPE


def _result_itemsize(output: OutputInfo) -> int:
    # A string element is held as a Python str: count its worst case on the wire.
    return 4 + wire.MAX_STRING_BYTES if _is_string(output) else 4


def _stimulus_message(sid: str, content: np.ndarray | str, context_id: str = "") -> pb.Stimulus:
    if isinstance(content, str):
        try:
            content.encode("utf-8")
            context_id.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(f"stimulus {sid!r}: text is not valid UTF-8 ({e.reason})") from None
        if not content.strip():
            raise ValueError(f"stimulus {sid!r}: empty text part (every part needs a non-space character)")
        return pb.Stimulus(id=sid, text=content, context_id=context_id)
    pixels = np.ascontiguousarray(content, dtype=np.uint8)
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"stimulus {sid!r}: pixels must be HxWx3, got {pixels.shape}")
    return pb.Stimulus(id=sid, pixels=pb.Tensor(data_type=pb.DATA_TYPE_UINT8, shape=list(pixels.shape), data=pixels.tobytes()))


class RunReceiver:
    """State machine over a Run's response stream; raises on the first violation."""

    def __init__(self, description: ModelDescription, requested: list[str], index: dict[str, int], results: dict):
        self.description = description
        self.requested = set(requested)
        self.index = index
        self.results = results
        self.max_chunk = description.raw.limits.max_chunk_bytes
        self.max_batch = description.raw.limits.max_batch_size
        self.filled = {name: np.zeros(len(index), dtype=bool) for name in requested}
        self.next_tensor_id = 0
        self.header: pb.TensorHeader | None = None
        self.buffer: bytearray | None = None
        self.buffer_fill = 0
        self.stimuli_done = 0
        self.bytes_received = 0
        self.summary: pb.RunSummary | None = None

    def accept(self, response: pb.RunResponse | wire.ChunkView, sent_count: int) -> str | None:
        """Takes one response; returns its kind ("header", "chunk", "progress", "summary")."""
        if self.summary is not None:
            raise ProtocolViolation("a message arrived after the RunSummary")
        if isinstance(response, wire.ChunkView):
            self._chunk(response)
            return "chunk"
        item = response.WhichOneof("item")
        if item == "chunk":
            c = response.chunk
            self._chunk(wire.ChunkView(c.tensor_id, c.offset, memoryview(c.data)))
            return item
        if self.header is not None:
            raise ProtocolViolation(
                f"tensor {self.header.tensor_id} ({self.header.name!r}) ended after {self.buffer_fill} of "
                f"{self.header.byte_size} bytes"
            )
        if item == "header":
            self._header(response.header, sent_count)
        elif item == "progress":
            p = response.progress
            if p.stimuli_done < self.stimuli_done or p.stimuli_done > sent_count or p.stimuli_done > len(self.index):
                raise ProtocolViolation(f"progress says {p.stimuli_done} stimuli done; {sent_count} were sent")
            self.stimuli_done = p.stimuli_done
        elif item == "summary":
            self.summary = response.summary
        else:
            raise ProtocolViolation("a RunResponse that is malformed or has no known item")
        return item

    def _header(self, h: pb.TensorHeader, sent_count: int) -> None:
        if h.tensor_id != self.next_tensor_id:
            raise ProtocolViolation(f"tensor id {h.tensor_id}, expected {self.next_tensor_id}")
        if h.name not in self.requested:
            raise ProtocolViolation(f"tensor {h.tensor_id} is {h.name!r}, which was not requested")
        out = self.description.outputs[h.name]
        if h.kind != out.kind:
            raise ProtocolViolation(f"tensor {h.name!r} has the wrong kind")
        try:
            dtype = wire.numpy_dtype(h.data_type)
        except ValueError:
            raise ProtocolViolation(f"tensor {h.name!r} has unknown data type {h.data_type}") from None
        if dtype != out.dtype:
            raise ProtocolViolation(f"tensor {h.name!r} is {wire.data_type_name(h.data_type)}, declared {out.dtype}")
        k = len(h.stimulus_ids)
        if not 1 <= k <= self.max_batch:
            raise ProtocolViolation(f"tensor {h.name!r} covers {k} stimuli; allowed 1..{self.max_batch}")
        if tuple(h.shape) != (k, *out.shape):
            raise ProtocolViolation(f"tensor {h.name!r} has shape {list(h.shape)}, expected {[k, *out.shape]}")
        if dtype == wire.STRING_DTYPE:
            low, high = k * out.features * 4, k * out.features * (4 + wire.MAX_STRING_BYTES)
            if not low <= h.byte_size <= high:
                raise ProtocolViolation(f"string tensor {h.name!r} announces {h.byte_size} bytes; allowed {low}..{high}")
        elif h.byte_size != k * out.features * dtype.itemsize:
            raise ProtocolViolation(f"tensor {h.name!r} announces {h.byte_size} bytes; its shape needs {k * out.features * dtype.itemsize}")
        filled = self.filled[h.name]
        rows = []
        for sid in h.stimulus_ids:
            i = self.index.get(sid)
            if i is None or i >= sent_count:
                raise ProtocolViolation(f"tensor {h.name!r} names stimulus {sid[:80]!r}, which was not sent")
            if filled[i] or i in rows:
                raise ProtocolViolation(f"tensor {h.name!r} repeats stimulus {sid[:80]!r}")
            rows.append(i)
        self.header = h
        self.rows = np.asarray(rows)
        self.dtype = dtype
        self.buffer_fill = 0
        self.next_tensor_id += 1
        first = rows[0]
        if dtype == np.float32 and rows == list(range(first, first + k)) and self.results[h.name].dtype == np.float32:
            # The usual case: consecutive stimuli of float32. Chunks land in their final place.
            self.target = self.results[h.name][first : first + k]
            self.buffer = self.target.reshape(-1).view(np.uint8)
        else:
            self.target = None
            self.buffer = np.empty(h.byte_size, dtype=np.uint8)

    def _chunk(self, c: wire.ChunkView) -> None:
        h = self.header
        if h is None:
            raise ProtocolViolation("a TensorChunk arrived without a TensorHeader")
        if c.tensor_id != h.tensor_id:
            raise ProtocolViolation(f"chunk for tensor {c.tensor_id} inside tensor {h.tensor_id}")
        size = c.data.nbytes
        if c.offset != self.buffer_fill:
            raise ProtocolViolation(f"chunk at offset {c.offset}; expected {self.buffer_fill}")
        if not 1 <= size <= self.max_chunk:
            raise ProtocolViolation(f"chunk of {size} bytes; allowed 1..{self.max_chunk}")
        if self.buffer_fill + size > h.byte_size:
            raise ProtocolViolation(f"tensor {h.name!r} overflows its {h.byte_size} announced bytes")
        self.buffer[self.buffer_fill : self.buffer_fill + size] = c.data
        self.buffer_fill += size
        self.bytes_received += size
        if self.buffer_fill == h.byte_size:
            self._complete()

    def _complete(self) -> None:
        h = self.header
        if self.dtype == wire.STRING_DTYPE:
            try:
                values = wire.decode_strings(self.buffer, len(self.rows) * self.description.outputs[h.name].features)
            except ValueError as e:
                raise ProtocolViolation(f"tensor {h.name!r}: {e}") from None
            values = values.reshape(len(self.rows), -1)
        else:
            values = self.target if self.target is not None else self.buffer.view(self.dtype).reshape(len(self.rows), -1)
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            bad = int((~np.isfinite(values)).sum())
            raise BadOutput(f"tensor {h.name!r} contains {bad} NaN or infinite values")
        if self.target is None:
            self.results[h.name][self.rows] = values
        self.filled[h.name][self.rows] = True
        self.header = None
        self.buffer = self.target = None

    def finish(self) -> None:
        if self.header is not None:
            raise ProtocolViolation(f"the run ended inside tensor {self.header.name!r}")
        if self.summary is None:
            raise ModelFailure(FailureClass.CRASH, "the run ended without a RunSummary")
        for name, filled in self.filled.items():
            if not filled.all():
                raise ProtocolViolation(f"output {name!r} is missing for {int((~filled).sum())} of {filled.size} stimuli")
        if self.summary.stimuli != len(self.index):
            raise ProtocolViolation(f"the summary counts {self.summary.stimuli} stimuli; {len(self.index)} were sent")
