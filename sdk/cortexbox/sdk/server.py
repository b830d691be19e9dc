"""The gRPC transport around an author's Model: info, handshake, runs, health, reflection.

A run is split over two threads joined by a small bounded queue: a worker reads stimuli,
forms batches and calls the model; the gRPC handler thread turns finished batches into
headers and chunks. Compute on batch k+1 thus overlaps the transfer of batch k, and a slow
reader back-pressures the model (queue full) instead of piling up memory.
"""

from __future__ import annotations

import importlib.metadata
import logging
import mmap
import os
import queue
import signal
import sys
import threading
import time
import traceback
from collections import deque
from concurrent import futures
from typing import Iterator, Mapping, Sequence

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from cortexbox.model.v1 import model_service_pb2 as pb
from cortexbox.model.v1 import model_service_pb2_grpc as pb_grpc
from cortexbox.sdk import wire
from cortexbox.sdk.model import Model, Output, Stimulus, StimulusError, TextModel

log = logging.getLogger("cortexbox.sdk")

_MODALITIES = {"image": pb.MODALITY_IMAGE, "text": pb.MODALITY_TEXT}
#: Batches computed ahead of the sender: enough to overlap compute and transfer, small
#: enough to bound memory at about three batches of outputs.
_QUEUE_DEPTH = 2
_POLL_S = 0.1
#: Most parts one text context may have (the SDK holds a context's parts until it ends).
MAX_CONTEXT_PARTS = 200_000
#: How long a run waits for the client's shared-memory hand-over before it chunks instead.
_SHM_HANDOVER_S = 5.0
#: A tensor is copied into the area (and checksummed) in pieces of this size, each while cache-hot.
_SHM_PIECE = 512 * 1024


class _Undecodable:
    """Stands in for a RunRequest whose bytes do not parse (e.g. text that is not UTF-8), so
    the run ends with BAD_STIMULUS instead of gRPC's bare "Exception deserializing request"."""

    def __init__(self, error: str):
        self.error = error

    def WhichOneof(self, name: str) -> str:
        return "undecodable"


def _parse_run_request(data: bytes):
    try:
        return pb.RunRequest.FromString(data)
    except Exception as e:  # noqa: BLE001 - DecodeError and friends; hostile bytes
        return _Undecodable(f"{type(e).__name__}: {e}"[:500])


def sdk_version() -> str:
    try:
        return importlib.metadata.version("cortexbox-sdk")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class RunAborted(Exception):
    """A run ends with this gRPC status and ErrorReason."""

    def __init__(self, code: grpc.StatusCode, reason: str, message: str):
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


def _spec(output: Output, kind: pb.OutputKind) -> pb.OutputSpec:
    return pb.OutputSpec(
        name=output.name,
        kind=kind,
        data_type=wire.data_type_of(output.dtype),
        shape=list(output.shape),
        description=output.description,
    )


class ModelServicer(pb_grpc.ModelServiceServicer):
    """Serves one Model. One run at a time; info and health stay responsive during a run."""

    def __init__(
        self,
        model: Model,
        nonce: str | None = None,
        max_chunk_bytes: int = wire.DEFAULT_CHUNK_BYTES,
        socket_dir: str | None = None,
        shared_memory: bool = True,
    ):
        self.model = model
        self.nonce = nonce
        self.max_chunk_bytes = min(max_chunk_bytes, wire.MAX_CHUNK_BYTES)
        # The shared-memory transport needs the folder of our unix socket, where the client's hand-over socket is.
        self.socket_dir = socket_dir if shared_memory and os.environ.get(wire.ENV_SHARED_MEMORY, "1") != "0" else None
        self._area: tuple[tuple[int, int], mmap.mmap] | None = None  # the last run's mapping, by (st_dev, st_ino)
        self.ready = threading.Event()
        self.last_activity = time.monotonic()
        self._run_lock = threading.Lock()
        self._info: pb.ModelInfo | None = None
        self._outputs: dict[str, tuple[Output, pb.OutputKind]] = {}

    # -- set-up -------------------------------------------------------------------------
    def load(self) -> None:
        """Loads the model and freezes its ModelInfo; the server is ready afterwards."""
        self.model.load()
        layers = list(self.model.layers())
        behaviours = list(self.model.behaviour_outputs())
        names = [o.name for o in layers + behaviours]
        if len(set(names)) != len(names):
            raise ValueError(f"output names must be unique, got {names}")
        self._outputs = {o.name: (o, pb.OUTPUT_KIND_LAYER) for o in layers}
        self._outputs.update({o.name: (o, pb.OUTPUT_KIND_BEHAVIOUR) for o in behaviours})
        modality = _MODALITIES.get(self.model.modality)
        if modality is None:
            raise ValueError(f"modality must be one of {sorted(_MODALITIES)}, got {self.model.modality!r}")
        if modality == pb.MODALITY_TEXT and int(self.model.max_context_tokens) <= 0:
            raise ValueError("a text model must set max_context_tokens (its context length in tokens)")
        for region, layer in self.model.region_layers.items():
            if self._outputs.get(layer, (None, None))[1] != pb.OUTPUT_KIND_LAYER:
                raise ValueError(f"region_layers maps {region!r} to unknown layer {layer!r}")
        for layer in self.model.commitment_layers:
            if self._outputs.get(layer, (None, None))[1] != pb.OUTPUT_KIND_LAYER:
                raise ValueError(f"commitment_layers names unknown layer {layer!r}")
        metadata = {str(k): str(v) for k, v in self.model.metadata.items()}
        metadata.setdefault("cortexbox_sdk_version", sdk_version())
        self._info = pb.ModelInfo(
            protocol_version=wire.PROTOCOL_VERSION,
            model_id=self.model.model_id,
            model_version=str(self.model.model_version),
            description=self.model.description,
            modality=modality,
            layers=[_spec(o, pb.OUTPUT_KIND_LAYER) for o in layers],
            behaviours=[_spec(o, pb.OUTPUT_KIND_BEHAVIOUR) for o in behaviours],
            region_layers=dict(self.model.region_layers),
            visual_degrees=float(self.model.visual_degrees),
            limits=pb.Limits(
                max_batch_size=max(1, int(self.model.max_batch_size)),
                max_chunk_bytes=self.max_chunk_bytes,
                max_stimulus_bytes=wire.MAX_MESSAGE_BYTES - 4096,
                max_context_tokens=int(self.model.max_context_tokens),
            ),
            capabilities=["cancel_between_batches"] + ([wire.CAPABILITY_SHARED_MEMORY] if self.socket_dir else []),
            metadata=metadata,
            commitment_layers=list(self.model.commitment_layers),
        )
        self.ready.set()

    def _limits(self) -> pb.Limits:
        """The limits announced in ModelInfo (a run only starts once the model is loaded and they exist)."""
        assert self._info is not None, "a run started before the model was loaded"
        return self._info.limits

    # -- unary calls --------------------------------------------------------------------
    def GetModelInfo(self, request, context):
        self.last_activity = time.monotonic()
        if not self.ready.is_set():
            _abort(context, grpc.StatusCode.UNAVAILABLE, "NOT_READY", "the model is still loading")
        return self._info

    def Handshake(self, request, context):
        self.last_activity = time.monotonic()
        if len(request.challenge) < 16:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "BAD_CONFIG", "challenge must have at least 16 bytes")
        if not self.nonce:
            return pb.HandshakeResponse()
        return pb.HandshakeResponse(proof=wire.handshake_proof(self.nonce, request.challenge))

    # -- runs ---------------------------------------------------------------------------
    def Run(self, request_iterator, context):
        self.last_activity = time.monotonic()
        if not self.ready.is_set():
            _abort(context, grpc.StatusCode.UNAVAILABLE, "NOT_READY", "the model is still loading")
        if not self._run_lock.acquire(blocking=False):
            _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, "BUSY", "another run is in progress")
        stop = threading.Event()
        context.add_callback(stop.set)
        results: queue.Queue = queue.Queue(maxsize=_QUEUE_DEPTH)
        try:
            try:
                config = self._read_config(request_iterator)
            except RunAborted as e:
                _abort(context, e.code, e.reason, e.message)
            ring = self._attach_area(config)
            worker = threading.Thread(
                target=self._compute, args=(config, request_iterator, results, stop), name="cortexbox-compute", daemon=True
            )
            worker.start()
            try:
                yield from self._send(config, results, stop, ring)
            except RunAborted as e:
                _abort(context, e.code, e.reason, e.message)
        finally:
            stop.set()
            self.last_activity = time.monotonic()
            self._run_lock.release()

    def _attach_area(self, config: pb.RunConfig) -> "_SharedRing | None":
        """The ring in the client's shared-memory area, when it offered one and it works; else None
        (the run chunks its tensors). The mapping is kept for the next run of the same area."""
        offer = config.shared_memory
        if not config.HasField("shared_memory") or self.socket_dir is None:
            return None
        try:
            fd = wire.receive_area(self.socket_dir, offer.socket_name, _SHM_HANDOVER_S)
            try:
                st = os.fstat(fd)
                key = (st.st_dev, st.st_ino)
                if self._area is None or self._area[0] != key or len(self._area[1]) != st.st_size:
                    self._area = (key, mmap.mmap(fd, st.st_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE))
            finally:
                os.close(fd)
            return _SharedRing(self._area[1], offer)
        except (OSError, ValueError) as e:
            log.warning("the client's shared-memory area is not usable (%s); this run chunks its tensors", e)
            return None

    def _read_config(self, request_iterator) -> pb.RunConfig:
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("item") != "config":
            raise RunAborted(grpc.StatusCode.INVALID_ARGUMENT, "BAD_CONFIG", "the first message of a run must be a RunConfig")
        config = first.config
        requested = list(config.layers) + list(config.behaviours)
        if not requested:
            raise RunAborted(grpc.StatusCode.INVALID_ARGUMENT, "BAD_CONFIG", "the RunConfig asks for no output")
        if len(set(requested)) != len(requested):
            raise RunAborted(grpc.StatusCode.INVALID_ARGUMENT, "BAD_CONFIG", "the RunConfig names an output twice")
        for names, kind in ((config.layers, pb.OUTPUT_KIND_LAYER), (config.behaviours, pb.OUTPUT_KIND_BEHAVIOUR)):
            for name in names:
                if name not in self._outputs or self._outputs[name][1] != kind:
                    what = "layer" if kind == pb.OUTPUT_KIND_LAYER else "behaviour"
                    known = sorted(n for n, (_, k) in self._outputs.items() if k == kind)
                    raise RunAborted(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        "UNKNOWN_OUTPUT",
                        f"unknown {what} {name!r}; the model has {len(known)}: {', '.join(known[:20])}"
                        + (" ..." if len(known) > 20 else ""),
                    )
        return config

    def _decode(self, message: pb.Stimulus, seen: set[str]) -> Stimulus:
        sid = message.id
        if not sid:
            raise StimulusError(sid, "a stimulus needs a non-empty id")
        if sid in seen:
            raise StimulusError(sid, "duplicate stimulus id in this run")
        seen.add(sid)
        kind = message.WhichOneof("content")
        expected = "pixels" if self.model.modality == "image" else "text"
        if kind != expected:
            raise StimulusError(sid, f"this {self.model.modality} model needs `{expected}` content, got {kind}")
        if kind == "text":
            return self._decode_text(message)
        t = message.pixels
        if t.data_type != pb.DATA_TYPE_UINT8 or len(t.shape) != 3 or t.shape[2] != 3 or min(t.shape) <= 0:
            raise StimulusError(sid, "pixels must be a height x width x 3 uint8 tensor")
        if len(t.data) != t.shape[0] * t.shape[1] * 3:
            raise StimulusError(sid, f"pixels carry {len(t.data)} bytes, shape {list(t.shape)} needs {t.shape[0] * t.shape[1] * 3}")
        pixels = np.frombuffer(t.data, dtype=np.uint8).reshape(tuple(t.shape))
        return Stimulus(sid, pixels=pixels, context_id=message.context_id, attributes=dict(message.attributes))

    def _decode_text(self, message: pb.Stimulus) -> Stimulus:
        sid, text = message.id, message.text
        if not text.strip():
            raise StimulusError(sid, "empty text part: every part needs at least one non-space character")
        limit = int(self.model.max_context_tokens)
        count = self.model.count_tokens(text) if isinstance(self.model, TextModel) else None
        if count is not None and limit and count > limit:
            raise StimulusError(
                sid, f"text part of {count} tokens is longer than the model's context of {limit} tokens"
            )
        return Stimulus(sid, text=text, context_id=message.context_id, attributes=dict(message.attributes))

    def _compute(self, config: pb.RunConfig, request_iterator, results: queue.Queue, stop: threading.Event) -> None:
        if self.model.modality == "text" and isinstance(self.model, TextModel):
            return self._compute_text(config, request_iterator, results, stop)
        return self._compute_batches(config, request_iterator, results, stop)

    def _compute_text(self, config: pb.RunConfig, request_iterator, results: queue.Queue, stop: threading.Event) -> None:
        """Worker thread for text models: one `digest` call per context (all its parts, in
        order), or one `digest_batch` call per `max_batch_contexts` whole contexts; the per-part
        outputs go out in batches of at most max_batch_size."""
        limit = self._limits().max_batch_size
        per_call = max(1, int(getattr(self.model, "max_batch_contexts", 1) or 1))
        seen: set[str] = set()
        finished: set[str] = set()
        parts: list[Stimulus] = []
        pending: list[list[Stimulus]] = []  # whole contexts waiting for one digest_batch call
        received = 0
        compute_s = 0.0

        def put(item) -> bool:
            return _put_until_stopped(results, item, stop)

        def compute() -> bool:
            nonlocal compute_s
            t0 = time.perf_counter()
            outputs = self._call_text(pending, config)
            compute_s += time.perf_counter() - t0
            flat = [p for context in pending for p in context]
            pending.clear()
            for start in range(0, len(flat), limit):
                ids = [p.id for p in flat[start : start + limit]]
                chunk = {name: value[start : start + limit] for name, value in outputs.items()}
                if not put(("batch", ids, chunk, received)):
                    return False
            return True

        def flush() -> bool:
            if parts[0].context_id:
                finished.add(parts[0].context_id)
            pending.append(list(parts))
            parts.clear()
            return len(pending) < per_call or compute()

        try:
            for message in request_iterator:
                if stop.is_set():
                    return
                item = message.WhichOneof("item")
                if item == "undecodable":
                    raise StimulusError("?", f"a stimulus message could not be parsed (text must be valid UTF-8): {message.error}")
                if item != "stimulus":
                    raise RunAborted(grpc.StatusCode.INVALID_ARGUMENT, "BAD_CONFIG", "only one RunConfig per run")
                stimulus = self._decode(message.stimulus, seen)
                received += 1
                self.last_activity = time.monotonic()
                context = stimulus.context_id
                if parts and (not context or context != parts[0].context_id):
                    if not flush():
                        return
                if context and context in finished:
                    raise StimulusError(
                        stimulus.id, f"context {context[:80]!r} continues after another context: send its parts contiguously"
                    )
                parts.append(stimulus)
                if len(parts) > MAX_CONTEXT_PARTS:
                    raise StimulusError(stimulus.id, f"context {context[:80]!r} has more than {MAX_CONTEXT_PARTS} parts")
            if parts and not flush():
                return
            if pending and not compute():
                return
            put(("done", received, compute_s))
        except BaseException as e:  # noqa: BLE001 - every failure must reach the client
            put(("error", e))

    def _call_text(self, contexts: Sequence[Sequence[Stimulus]], config: pb.RunConfig) -> dict[str, np.ndarray]:
        """`digest` (one context) or `digest_batch` (several), each context's outputs checked, then
        concatenated in the order of the parts."""
        layers, behaviours = list(config.layers), list(config.behaviours)
        assert isinstance(self.model, TextModel)  # _compute_text only runs for text models
        if len(contexts) == 1:
            return self._check_outputs(contexts[0], self.model.digest(contexts[0], layers, behaviours), config)
        outputs = list(self.model.digest_batch(contexts, layers, behaviours))
        if len(outputs) != len(contexts):
            raise RunAborted(
                grpc.StatusCode.INTERNAL, "BAD_OUTPUT", f"digest_batch returned {len(outputs)} results for {len(contexts)} contexts"
            )
        checked = [self._check_outputs(c, o, config) for c, o in zip(contexts, outputs)]
        return {name: np.concatenate([c[name] for c in checked]) for name in layers + behaviours}

    def _compute_batches(self, config: pb.RunConfig, request_iterator, results: queue.Queue, stop: threading.Event) -> None:
        """Worker thread: stimuli in, batches of outputs into `results`, one final marker."""
        limit = self._limits().max_batch_size
        batch_size = min(config.batch_size or limit, limit)
        seen: set[str] = set()
        batch: list[Stimulus] = []
        received = 0
        compute_s = 0.0

        def put(item) -> bool:
            return _put_until_stopped(results, item, stop)

        def flush() -> bool:
            nonlocal compute_s
            t0 = time.perf_counter()
            outputs = self._call_model(batch, config)
            compute_s += time.perf_counter() - t0
            ok = put(("batch", [s.id for s in batch], outputs, received))
            batch.clear()
            return ok

        try:
            for message in request_iterator:
                if stop.is_set():
                    return
                if message.WhichOneof("item") == "undecodable":
                    raise StimulusError("?", f"a stimulus message could not be parsed: {message.error}")
                if message.WhichOneof("item") != "stimulus":
                    raise RunAborted(grpc.StatusCode.INVALID_ARGUMENT, "BAD_CONFIG", "only one RunConfig per run")
                batch.append(self._decode(message.stimulus, seen))
                received += 1
                self.last_activity = time.monotonic()
                if len(batch) >= batch_size and not flush():
                    return
            if batch and not flush():
                return
            put(("done", received, compute_s))
        except BaseException as e:  # noqa: BLE001 - every failure must reach the client
            put(("error", e))

    def _call_model(self, batch: Sequence[Stimulus], config: pb.RunConfig) -> dict[str, np.ndarray]:
        outputs: dict[str, np.ndarray] = {}
        if isinstance(self.model, TextModel):
            outputs.update(self.model.digest(batch, list(config.layers), list(config.behaviours)))
        elif config.layers:
            outputs.update(self.model.activations(batch, list(config.layers)))
        if config.behaviours and not isinstance(self.model, TextModel):
            outputs.update(self.model.behaviours(batch, list(config.behaviours)))
        return self._check_outputs(batch, outputs, config)

    def _check_outputs(self, batch: Sequence[Stimulus], outputs: Mapping[str, np.ndarray], config: pb.RunConfig) -> dict[str, np.ndarray]:
        checked = {}
        for name in list(config.layers) + list(config.behaviours):
            if name not in outputs:
                raise RunAborted(grpc.StatusCode.INTERNAL, "BAD_OUTPUT", f"the model returned no output {name!r}")
            spec = self._outputs[name][0]
            array = np.asarray(outputs[name])
            expected = (len(batch), *spec.shape)
            if array.shape != expected:
                raise RunAborted(
                    grpc.StatusCode.INTERNAL, "BAD_OUTPUT", f"output {name!r} has shape {array.shape}, declared {expected}"
                )
            if wire.data_type_of(spec.dtype) == pb.DATA_TYPE_STRING:
                try:
                    wire.encode_strings(array)  # checks every element now, so a bad one fails this batch
                except ValueError as e:
                    raise RunAborted(grpc.StatusCode.INTERNAL, "BAD_OUTPUT", f"output {name!r}: {e}") from None
                checked[name] = array.astype(object)
                continue
            if array.dtype != np.dtype(spec.dtype):
                array = array.astype(spec.dtype)
            checked[name] = wire.to_wire_array(array)
        return checked

    def _send(
        self, config: pb.RunConfig, results: queue.Queue, stop: threading.Event, ring: "_SharedRing | None" = None
    ) -> Iterator[pb.RunResponse | bytes]:
        # Chunks go out pre-serialized (bytes, copied once by wire.encode_chunk); the Run handler's response
        # serializer passes bytes through and serializes messages.
        chunk = min(config.max_chunk_bytes or self.max_chunk_bytes, self.max_chunk_bytes)
        tensor_id = 0
        sent_bytes = 0
        send_s = 0.0
        done = 0
        while True:
            try:
                item = results.get(timeout=_POLL_S)
            except queue.Empty:
                if stop.is_set():
                    return
                continue
            if item[0] == "error":
                raise _as_run_aborted(item[1])
            if item[0] == "done":
                _, received, compute_s = item
                yield pb.RunResponse(
                    summary=pb.RunSummary(
                        run_id=config.run_id,
                        stimuli=received,
                        tensors=tensor_id,
                        bytes=sent_bytes,
                        timings_s={"compute": compute_s, "send": send_s},
                    )
                )
                return
            _, ids, outputs, received = item
            t0 = time.perf_counter()
            for name in list(config.layers) + list(config.behaviours):
                array = outputs[name]
                if array.dtype == object:
                    raw = memoryview(wire.encode_strings(array))
                    data_type = pb.DATA_TYPE_STRING
                else:
                    raw = memoryview(array).cast("B")
                    data_type = wire.data_type_of(array.dtype)
                header = pb.TensorHeader(
                    tensor_id=tensor_id,
                    name=name,
                    kind=self._outputs[name][1],
                    stimulus_ids=ids,
                    data_type=data_type,
                    shape=list(array.shape),
                    byte_size=raw.nbytes,
                )
                if ring is not None and data_type != pb.DATA_TYPE_STRING and 0 < raw.nbytes <= ring.capacity:
                    block = ring.write(raw, stop)
                    if block is None:  # the run was stopped while the area was full
                        return
                    header.shared_memory.CopyFrom(block)
                    yield pb.RunResponse(header=header)
                else:
                    yield pb.RunResponse(header=header)
                    for offset in range(0, raw.nbytes, chunk):
                        yield wire.encode_chunk(tensor_id, offset, raw[offset : offset + chunk])
                sent_bytes += raw.nbytes
                tensor_id += 1
            done += len(ids)
            yield pb.RunResponse(progress=pb.Progress(stimuli_received=received, stimuli_done=done))
            send_s += time.perf_counter() - t0
            self.last_activity = time.monotonic()


class _SharedRing:
    """The server's side of a run's shared-memory area: tensors go into blocks of a ring after the
    client's control page, each announced by its header; a block's space is used again only once
    the client's released count (which it writes into the control page) covers it."""

    def __init__(self, area: mmap.mmap, offer: pb.SharedMemoryOffer):
        size = len(area)
        align, control = offer.alignment_bytes, offer.control_bytes
        if offer.area_bytes != size or not (align and align & (align - 1) == 0 and align % 8 == 0):
            raise ValueError(f"the offer (area {offer.area_bytes} bytes, alignment {align}) does not fit the area of {size} bytes")
        if not wire.SHM_RELEASED_OFFSET + 8 <= control < size or control % align:
            raise ValueError(f"the offer's control page of {control} bytes does not fit")
        self.view = np.frombuffer(area, np.uint8)
        if bytes(self.view[: wire.SHM_TOKEN_BYTES]) != offer.token or len(offer.token) != wire.SHM_TOKEN_BYTES:
            raise ValueError("the area does not hold the run's token: it is not shared with the client")
        self.released = self.view[wire.SHM_RELEASED_OFFSET : wire.SHM_RELEASED_OFFSET + 8].view("<u8")
        self.start, self.end, self.align = control, size, align
        self.capacity = size - control
        self.announced = 0
        self.live: deque[tuple[int, int, int]] = deque()  # (block index, offset, end), oldest first

    def _place(self, nbytes: int) -> int | None:
        """An offset where `nbytes` overlap no block the client still holds, or None."""
        released = min(int(self.released[0]), self.announced)
        while self.live and self.live[0][0] < released:
            self.live.popleft()
        if not self.live:
            return self.start
        tail, head = self.live[0][1], -(-self.live[-1][2] // self.align) * self.align
        # Wrapped when the newest block starts before the oldest (blocks are placed in ring order). Not `head < tail`:
        # a wrapped newest block may end exactly where the oldest starts (head == tail, the ring full), and the space
        # after `head` is then the oldest block's, still the client's.
        if self.live[-1][1] < tail:
            return head if head + nbytes <= tail else None  # wrapped: room between them
        if head + nbytes <= self.end:  # live blocks in [tail, head): room after them, else at the start
            return head
        return self.start if self.start + nbytes <= tail else None

    def write(self, raw: memoryview, stop: threading.Event) -> pb.SharedMemoryBlock | None:
        """Copies `raw` into the ring (waiting while the client holds the space) and returns its block;
        None if the run is stopped first."""
        nbytes = raw.nbytes
        wait = 50e-6
        while (offset := self._place(nbytes)) is None:
            if stop.is_set():
                return None
            time.sleep(wait)
            wait = min(wait * 2, 2e-3)
        source = np.frombuffer(raw, np.uint8)
        checksum = 0
        for start in range(0, nbytes, _SHM_PIECE):
            piece = source[start : start + _SHM_PIECE]
            self.view[offset + start : offset + start + piece.size] = piece
            checksum = wire.block_checksum(piece, checksum)
        self.live.append((self.announced, offset, offset + nbytes))
        self.announced += 1
        return pb.SharedMemoryBlock(offset=offset, length=nbytes, checksum=checksum)


def _put_until_stopped(results: queue.Queue, item, stop: threading.Event) -> bool:
    """Hands a worker's item to the sender, waiting while the queue is full (back-pressure);
    False if the run was stopped first."""
    while not stop.is_set():
        try:
            results.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def _serialize_run_response(item) -> bytes:
    # Chunks arrive pre-serialized (wire.encode_chunk); everything else is a message.
    return item if isinstance(item, bytes) else item.SerializeToString()


def _method_handlers(servicer: ModelServicer) -> grpc.GenericRpcHandler:
    """The generated registration, except that Run's responses may be pre-serialized bytes."""
    return grpc.method_handlers_generic_handler(
        wire.SERVICE_NAME,
        {
            "GetModelInfo": grpc.unary_unary_rpc_method_handler(
                servicer.GetModelInfo,
                request_deserializer=pb.GetModelInfoRequest.FromString,
                response_serializer=pb.ModelInfo.SerializeToString,
            ),
            "Handshake": grpc.unary_unary_rpc_method_handler(
                servicer.Handshake,
                request_deserializer=pb.HandshakeRequest.FromString,
                response_serializer=pb.HandshakeResponse.SerializeToString,
            ),
            "Run": grpc.stream_stream_rpc_method_handler(
                servicer.Run,
                request_deserializer=_parse_run_request,
                response_serializer=_serialize_run_response,
            ),
        },
    )


def _as_run_aborted(e: BaseException) -> RunAborted:
    if isinstance(e, RunAborted):
        return e
    if isinstance(e, StimulusError):
        return RunAborted(grpc.StatusCode.INVALID_ARGUMENT, "BAD_STIMULUS", str(e))
    if isinstance(e, MemoryError):
        return RunAborted(grpc.StatusCode.RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", "the model ran out of memory on a batch")
    if isinstance(e, NotImplementedError):
        return RunAborted(grpc.StatusCode.UNIMPLEMENTED, "UNSUPPORTED", f"not implemented by the model: {e}")
    if isinstance(e, grpc.RpcError):  # the request stream broke (client went away)
        return RunAborted(grpc.StatusCode.CANCELLED, "ERROR_REASON_UNSPECIFIED", "the client stopped sending")
    # The traceback goes to the container's log, which the orchestrator reports.
    log.error("model code raised:\n%s", "".join(traceback.format_exception(e)))
    return RunAborted(grpc.StatusCode.INTERNAL, "MODEL_ERROR", f"{type(e).__name__}: {e}"[:2000])


def _abort(context, code: grpc.StatusCode, reason: str, message: str):
    context.set_trailing_metadata(((wire.ERROR_REASON_KEY, reason),))
    context.abort(code, message)


def serve(
    model: Model,
    address: str | None = None,
    *,
    block: bool = True,
    max_chunk_bytes: int = wire.DEFAULT_CHUNK_BYTES,
    shared_memory: bool = True,
) -> tuple[grpc.Server, ModelServicer]:
    """Serves `model` on `address` ("unix:///path/model.sock" or "host:port").

    Without an address, listens on the unix socket named by $CORTEXBOX_SOCKET, as the
    orchestrator arranges. Health is NOT_SERVING until `model.load()` has returned; a load
    that raises ends the process with exit code 3, so the failure shows up with its log.
    On a unix socket the server offers the shared-memory transport (``shared_memory=False``
    or $CORTEXBOX_SHARED_MEMORY=0 turns it off: every tensor is chunked).
    """
    if address is None:
        path = os.environ.get(wire.ENV_SOCKET)
        if not path:
            raise SystemExit(f"no address given and ${wire.ENV_SOCKET} is not set")
        address = f"unix://{path}"
    servicer = ModelServicer(
        model,
        nonce=os.environ.get(wire.ENV_NONCE) or None,
        max_chunk_bytes=max_chunk_bytes,
        socket_dir=os.path.dirname(address[len("unix://") :]) if address.startswith("unix://") else None,
        shared_memory=shared_memory,
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="cortexbox-grpc"),
        options=[
            ("grpc.max_receive_message_length", wire.MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", wire.MAX_MESSAGE_BYTES),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ],
    )
    server.add_generic_rpc_handlers((_method_handlers(servicer),))
    # The Open Inference Protocol beside ours (oip.py). Imported here: a process that only reads models (the
    # orchestrator imports this module) keeps protobuf's `inference` names free, e.g. for tritonclient's stubs.
    from cortexbox.sdk import oip

    oip.add_to_server(servicer, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for service in ("", wire.SERVICE_NAME):
        health_servicer.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
    reflection.enable_server_reflection(
        (wire.SERVICE_NAME, oip.SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )
    if server.add_insecure_port(address) == 0 and not address.startswith("unix"):
        raise SystemExit(f"could not listen on {address}")
    server.start()
    if address.startswith("unix://"):
        # Lets an orchestrator that is not root connect; the folder around it is private.
        os.chmod(address[len("unix://") :], 0o666)
    log.info("listening on %s", address)

    def load() -> None:
        try:
            servicer.load()
        except BaseException:  # noqa: BLE001
            log.critical("loading the model failed:\n%s", traceback.format_exc())
            sys.stderr.flush()
            os._exit(3)
        for service in ("", wire.SERVICE_NAME):
            health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
        log.info("model %s loaded; serving", model.model_id)

    threading.Thread(target=load, name="cortexbox-load", daemon=True).start()
    _watch_idle(servicer, server)
    if block:

        def on_term(signum, frame):
            health_servicer.enter_graceful_shutdown()
            server.stop(grace=2)

        signal.signal(signal.SIGTERM, on_term)
        server.wait_for_termination()
    return server, servicer


def _watch_idle(servicer: ModelServicer, server: grpc.Server) -> None:
    """Stops the server after $CORTEXBOX_IDLE_TIMEOUT_S without any call or run activity,
    so that a container whose orchestrator died does not run forever."""
    timeout = float(os.environ.get(wire.ENV_IDLE_TIMEOUT) or 0)
    if timeout <= 0:
        return

    def watch() -> None:
        while True:
            time.sleep(min(timeout, 5.0))
            if not servicer._run_lock.locked() and time.monotonic() - servicer.last_activity > timeout:
                log.warning("no activity for %.0f s; shutting down", timeout)
                server.stop(grace=1)
                return

    threading.Thread(target=watch, name="cortexbox-idle", daemon=True).start()
