"""The orchestrator's side of cortexbox.model.v1: a client that trusts nothing it receives.

Every message from a model is checked against the contract before it touches memory:
declared outputs and shapes, byte counts, chunk order and size, stimulus ids, NaN and inf,
and the budgets of orchestrator/budgets.py (output bytes at the dtype sent, idle messages,
silence, strings). Outputs are converted chunk by chunk, as they arrive, into one
preallocated float32 array per output (stimuli x features), so a run holds one copy of its
results and no full-size temporary, whatever dtype the model sends.

A container's socket is pinned by inode (`PinnedSocket`): every connection of the channel,
reconnections included, reaches the socket that was checked and passed the handshake.

Over a unix socket, a model that lists "transport.shared_memory" gets a shared-memory area
(`SharedArea`, a sealed memfd handed over in the socket's folder) and may announce tensors as
blocks of it. Each block is checked (inside the area, after the control page, aligned, exactly
the header's size), copied out into the results and only then checked (checksum, NaN): what is
accepted is our own copy, so a model that writes into a block after announcing it can change
nothing that was checked, and the checksum catches it as a protocol violation.
"""

from __future__ import annotations

import fcntl
import logging
import math
import mmap
import os
import secrets
import socket
import stat
import struct
import threading
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cortexbox.model.v1 import model_service_pb2 as pb
from cortexbox.model.v1 import model_service_pb2_grpc as pb_grpc
from cortexbox.orchestrator.budgets import WireBudgets
from cortexbox.orchestrator.errors import (
    BadOutput,
    FailureClass,
    ModelFailure,
    ProtocolViolation,
)
from cortexbox.sdk import wire

log = logging.getLogger("cortexbox.client")
#: Upper bounds on what a model may declare, so a hostile ModelInfo cannot make us allocate
#: absurd amounts or loop forever. The budgets of a run are in orchestrator/budgets.py.
MAX_OUTPUTS = 10_000
MAX_FEATURES_PER_STIMULUS = 50_000_000

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


#: Unicode categories never allowed in a string from a model: controls (terminal escapes),
#: format characters (bidi overrides that reorder what a reader sees), surrogates, private use,
#: unassigned code points, line and paragraph separators.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def _unsafe_char(text: str, allow: str = "") -> str | None:
    for ch in text:
        if ch not in allow and unicodedata.category(ch) in _UNSAFE_CATEGORIES:
            return ch
    return None


def checked_name(text: str, what: str, limit: int, *, spaces: bool = True, empty: bool = False) -> str:
    """A name the model gives (id, output, region, metadata key), refused rather than altered:
    a changed name would silently stand for another one."""
    if not text and not empty:
        raise ProtocolViolation(f"{what} is empty")
    if len(text) > limit:
        raise ProtocolViolation(f"{what} has {len(text)} characters; at most {limit}")
    bad = _unsafe_char(text)
    if bad is None and not spaces and any(ch.isspace() for ch in text):
        bad = " "
    if bad is not None:
        raise ProtocolViolation(f"{what} {text[:80]!r} contains the character {bad!r} (U+{ord(bad):04X}), which is not allowed")
    return text


def clean_text(text: str, limit: int) -> str:
    """Free text from a model (description, metadata values, error details), cut to `limit`
    characters with control and format characters replaced, so it is safe to store and print."""
    cut = len(text) > limit
    text = text[:limit]
    if _unsafe_char(text, allow="\n\t") is not None:
        text = "".join("\ufffd" if ch not in "\n\t" and unicodedata.category(ch) in _UNSAFE_CATEGORIES else ch for ch in text)
    return text + (" [cut]" if cut else "")


def validate_model_info(info: pb.ModelInfo, budgets: WireBudgets | None = None) -> ModelDescription:
    """Checks a ModelInfo against the contract and the string budgets; ProtocolViolation names
    the first problem. The description keeps a cleaned copy: free text cut to its budget."""
    b = budgets or WireBudgets()
    major = info.protocol_version.split(".")[0]
    if major != wire.PROTOCOL_VERSION.split(".")[0]:
        raise ProtocolViolation(f"protocol version {info.protocol_version[:40]!r} is not 1.x")
    if info.modality not in (pb.MODALITY_IMAGE, pb.MODALITY_TEXT):
        raise ProtocolViolation(f"unknown modality {info.modality}")
    checked_name(info.model_id, "model_id", b.id_chars, spaces=False)
    checked_name(info.model_version, "model_version", b.id_chars, spaces=False, empty=True)
    if len(info.layers) + len(info.behaviours) > MAX_OUTPUTS:
        raise ProtocolViolation(f"more than {MAX_OUTPUTS} outputs declared")
    outputs: dict[str, OutputInfo] = {}
    for spec, kind in [(s, pb.OUTPUT_KIND_LAYER) for s in info.layers] + [
        (s, pb.OUTPUT_KIND_BEHAVIOUR) for s in info.behaviours
    ]:
        checked_name(spec.name, "an output name", b.name_chars)
        if spec.name in outputs:
            raise ProtocolViolation(f"output name {spec.name[:80]!r} is repeated")
        if spec.kind != kind:
            raise ProtocolViolation(f"output {spec.name!r} is listed as the wrong kind")
        try:
            dtype = wire.numpy_dtype(spec.data_type)
        except ValueError as e:
            raise ProtocolViolation(f"output {spec.name!r}: {e}") from None
        shape = tuple(spec.shape)
        if not shape or any(s <= 0 for s in shape) or math.prod(shape) > MAX_FEATURES_PER_STIMULUS:
            raise ProtocolViolation(f"output {spec.name!r} declares an invalid shape {list(shape)[:8]}")
        outputs[spec.name] = OutputInfo(spec.name, kind, dtype, shape)
    for region, layer in info.region_layers.items():
        checked_name(region, "a region name", b.name_chars)
        if layer not in outputs or outputs[layer].kind != pb.OUTPUT_KIND_LAYER:
            raise ProtocolViolation(f"region {region!r} is committed to unknown layer {layer[:80]!r}")
    for layer in info.commitment_layers:
        if layer not in outputs or outputs[layer].kind != pb.OUTPUT_KIND_LAYER:
            raise ProtocolViolation(f"commitment layer {layer[:80]!r} is not a declared layer")
    if len(info.capabilities) > b.metadata_entries or len(info.metadata) > b.metadata_entries:
        raise ProtocolViolation(f"more than {b.metadata_entries} capabilities or metadata entries")
    for capability in info.capabilities:
        checked_name(capability, "a capability", b.name_chars)
    for key in info.metadata:
        checked_name(key, "a metadata key", b.name_chars)
    limits = info.limits
    if not 1 <= limits.max_batch_size <= 100_000:
        raise ProtocolViolation(f"max_batch_size {limits.max_batch_size} out of range")
    if not b.min_chunk_bytes <= limits.max_chunk_bytes <= wire.MAX_CHUNK_BYTES:
        raise ProtocolViolation(
            f"max_chunk_bytes {limits.max_chunk_bytes} out of range ({b.min_chunk_bytes}..{wire.MAX_CHUNK_BYTES})"
        )
    if info.modality == pb.MODALITY_IMAGE and not (0 < info.visual_degrees <= 360 and math.isfinite(info.visual_degrees)):
        raise ProtocolViolation(f"visual_degrees {info.visual_degrees} out of range")
    clean = pb.ModelInfo()
    clean.CopyFrom(info)
    clean.description = clean_text(info.description, b.description_chars)
    for key, value in info.metadata.items():
        clean.metadata[key] = clean_text(value, b.metadata_value_chars)
    return ModelDescription(clean, outputs)


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
    #: Of bytes_received, those that came through the shared-memory area (0: all chunked).
    shared_memory_bytes: int = 0


ProgressCallback = Callable[[int, int], None]  # (stimuli_done, n_stimuli)


def _failure_from_rpc_error(e: grpc.RpcError, what: str, error_chars: int = 2000) -> ModelFailure:
    code = e.code() if hasattr(e, "code") else None
    details = (e.details() if hasattr(e, "details") else str(e)) or ""
    reason = ""
    for key, value in (e.trailing_metadata() or ()) if hasattr(e, "trailing_metadata") else ():
        if key == wire.ERROR_REASON_KEY:
            reason = str(value)[:64]
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
    return ModelFailure(failure, f"{what}: {name}: {clean_text(details, error_chars)}", reason=clean_text(reason, 64))


class PinnedSocket:
    """A container's unix socket, held open by inode (O_PATH, never following a link).

    The socket folder is writable by the model, and gRPC reconnects by path whenever a
    connection drops, so a model could pass the handshake and then point the path at another
    server. Connecting through /proc/self/fd/N instead reaches the inode we checked, on every
    (re)connection: only the process that bound that socket can answer, and once it stops
    listening the connection is refused. Nothing the model does to the path changes that.
    """

    def __init__(self, path: Path | str, owner_uid: int | None = None):
        self.path = str(path)
        try:
            fd = os.open(self.path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as e:
            raise ProtocolViolation(f"the model's socket cannot be opened ({e.strerror})") from None
        st = os.fstat(fd)
        if not stat.S_ISSOCK(st.st_mode):
            os.close(fd)
            raise ProtocolViolation("the model's socket path is not a plain socket")
        if owner_uid is not None and st.st_uid != owner_uid:
            os.close(fd)
            raise ProtocolViolation(f"the model's socket is owned by uid {st.st_uid}")
        self.fd: int | None = fd
        self.identity = (st.st_dev, st.st_ino)

    @property
    def target(self) -> str:
        return f"unix:///proc/self/fd/{self.fd}"

    def replaced(self) -> bool:
        """Whether the path no longer names the pinned socket (removed, swapped, a link)."""
        try:
            st = os.lstat(self.path)
        except OSError:
            return True
        return (st.st_dev, st.st_ino) != self.identity

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


#: Blocks are copied out of the area, checksummed and checked in pieces of this size, each while it is in the core's
#: cache (2 MiB of L2 here): 256 KiB took 0.226 s of CPU per GiB, 512 KiB 0.235, 1 MiB 0.248, 2 MiB 0.300 (perf/README.md).
_SHM_PIECE = 256 * 1024


class SharedArea:
    """The orchestrator's side of the shared-memory transport: one sealed memfd per client, reused
    by its runs. The seals (no shrinking, no growing, no new seals) mean that nothing the model
    does to the file can make our mapping fault; its pages are charged to the container, which
    writes them first. We write only the control page: the run's token and the released count."""

    def __init__(self, size: int):
        self.size = size
        self.control_bytes = wire.SHM_CONTROL_BYTES
        self.alignment = wire.SHM_ALIGNMENT
        fd = os.memfd_create("cortexbox-shm", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(fd, size)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
            self.map = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            raise
        self.fd: int | None = fd
        self.view = np.frombuffer(self.map, np.uint8)
        self._released_word = self.view[wire.SHM_RELEASED_OFFSET : wire.SHM_RELEASED_OFFSET + 8].view("<u8")
        self.released = 0

    def begin(self) -> bytes:
        """A new run: a fresh token in the control page, nothing released yet."""
        token = secrets.token_bytes(wire.SHM_TOKEN_BYTES)
        self.view[: wire.SHM_TOKEN_BYTES] = np.frombuffer(token, np.uint8)
        self.released = 0
        self._released_word[0] = 0
        return token

    def release(self) -> None:
        """The oldest announced block is read: the model may write over it."""
        self.released += 1
        self._released_word[0] = self.released

    def close(self) -> None:
        if self.fd is None:
            return
        del self.view, self._released_word
        try:
            self.map.close()
        except BufferError:  # a view escaped; the mapping goes with it
            pass
        os.close(self.fd)
        self.fd = None


class _Handover(threading.Thread):
    """Listens on a SOCK_SEQPACKET socket in the model socket's folder for one run and hands the
    area's memfd to the first peer of the sandbox's uid (any peer for an endpoint we did not start)."""

    def __init__(self, folder: str, area: SharedArea, owner_uid: int | None):
        super().__init__(name="cortexbox-shm-handover", daemon=True)
        self.area, self.owner_uid = area, owner_uid
        self.name = f"shm-{secrets.token_hex(8)}"
        self.done = threading.Event()
        self.folder_fd = os.open(folder, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            path = wire._unix_path(self.folder_fd, os.path.join(folder, self.name))
            self.sock.bind(path)
            os.chmod(path, 0o666)  # the sandbox user connects; the folder around it is private
            self.sock.listen(4)
            self.sock.settimeout(0.05)
        except BaseException:
            self.close()
            raise

    def run(self) -> None:
        while not self.done.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with conn:
                if self.owner_uid is not None:
                    _, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
                    if uid != self.owner_uid:
                        continue
                self._unlink()  # before the model holds the area: its folder is as it was (the socket alone)
                try:
                    socket.send_fds(conn, [wire.SHM_HELLO], [self.area.fd])
                except OSError:
                    continue
            return

    def close(self) -> None:
        self.done.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes a waiting accept() at once
        except OSError:
            pass
        if self.is_alive():
            self.join(2)
        self.sock.close()
        self._unlink()
        os.close(self.folder_fd)

    def _unlink(self) -> None:
        try:
            os.unlink(self.name, dir_fd=self.folder_fd)
        except OSError:
            pass


class _Watchdog(threading.Thread):
    """Stops a Run whose model has sent no new valid bytes for `stall_timeout_s`, or whose rate
    so far cannot finish within the run's deadline, by cancelling the call; `reason` says why."""

    def __init__(self, call, receiver: "RunReceiver", budgets: WireBudgets, timeout_s: float, n: int):
        super().__init__(name="cortexbox-run-watchdog", daemon=True)
        self.call, self.receiver, self.budgets, self.timeout_s, self.n = call, receiver, budgets, timeout_s, n
        self.start_at = time.monotonic()
        self.done = threading.Event()
        self.reason: str | None = None

    def run(self) -> None:
        b = self.budgets
        while not self.done.wait(0.2):
            now = time.monotonic()
            silent = now - self.receiver.last_bytes_at
            elapsed = now - self.start_at
            stimuli = self.receiver.stimuli_complete
            if silent > b.stall_timeout_s:
                self.reason = f"no new output bytes for {silent:.0f} s (the budget is {b.stall_timeout_s:g} s)"
            elif stimuli and elapsed >= b.overrun_check_after * self.timeout_s and stimuli < self.n:
                projected = elapsed * self.n / stimuli
                if projected > b.overrun_factor * self.timeout_s:
                    self.reason = (
                        f"{stimuli} of {self.n} stimuli in {elapsed:.0f} s: at that rate the run needs about "
                        f"{projected:.0f} s; its deadline is {self.timeout_s:.0f} s"
                    )
            if self.reason is not None:
                self.call.cancel()
                return


class ModelClient:
    """Talks to one model server. Every call has a deadline; every run has the budgets of
    `budgets` (orchestrator/budgets.py; from the environment by default)."""

    def __init__(
        self,
        target: str,
        *,
        nonce: str | None = None,
        call_timeout_s: float = 10.0,
        budgets: WireBudgets | None = None,
        pin: PinnedSocket | None = None,
        shared_memory: bool = True,
        owner_uid: int | None = None,
    ):
        self.target = target
        self.nonce = nonce
        self.call_timeout_s = call_timeout_s
        self.budgets = budgets or WireBudgets.from_env()
        self.pin = pin
        # The shared-memory area needs the folder of a unix socket (the hand-over socket goes next to it).
        path = pin.path if pin is not None else target[len("unix://") :] if target.startswith("unix://") else None
        self.socket_dir = os.path.dirname(path) if shared_memory and path else None
        self.owner_uid = owner_uid
        self._area: SharedArea | None = None
        self.channel = grpc.insecure_channel(target, options=_CHANNEL_OPTIONS)
        self.stub = pb_grpc.ModelServiceStub(self.channel)
        # Run's chunks are parsed by hand, without copying their payload (wire.decode_run_response).
        self._run = self.channel.stream_stream(
            f"/{wire.SERVICE_NAME}/Run",
            request_serializer=pb.RunRequest.SerializeToString,
            response_deserializer=wire.decode_run_response,
        )
        self._health = health_pb2_grpc.HealthStub(self.channel)

    @classmethod
    def for_socket(
        cls,
        path: Path | str,
        *,
        nonce: str | None,
        owner_uid: int | None = None,
        budgets: WireBudgets | None = None,
        shared_memory: bool = True,
    ) -> "ModelClient":
        """A client whose every connection reaches the socket now at `path` (see PinnedSocket)."""
        pin = PinnedSocket(path, owner_uid)
        return cls(pin.target, nonce=nonce, budgets=budgets, pin=pin, shared_memory=shared_memory, owner_uid=owner_uid)

    def close(self) -> None:
        self.channel.close()
        if self.pin is not None:
            self.pin.close()
        if self._area is not None:
            self._area.close()
            self._area = None

    def _shared_area(self, description: ModelDescription) -> SharedArea | None:
        """This client's area when the model and the budgets allow the shared-memory path, else None."""
        size = -(-self.budgets.shared_memory_bytes // wire.SHM_ALIGNMENT) * wire.SHM_ALIGNMENT
        if self.socket_dir is None or size <= wire.SHM_CONTROL_BYTES:
            return None
        if wire.CAPABILITY_SHARED_MEMORY not in description.raw.capabilities:
            return None
        if self._area is None or self._area.size != size:
            if self._area is not None:
                self._area.close()
                self._area = None
            try:
                self._area = SharedArea(size)
            except OSError as e:
                log.warning("no shared-memory area (%s): runs chunk their tensors", e)
                self.socket_dir = None
                return None
        return self._area

    def __enter__(self) -> "ModelClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _rpc_failure(self, e: grpc.RpcError, what: str) -> ModelFailure:
        if self.pin is not None and self.pin.replaced():
            return ProtocolViolation(
                f"{what}: the model replaced its socket after the handshake; the server that proved itself is gone"
            )
        return _failure_from_rpc_error(e, what, self.budgets.error_chars)

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
                last = f"{e.code().name}: {clean_text(e.details() or '', 200)}"
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
            raise self._rpc_failure(e, "Handshake") from None
        if not wire.proof_matches(self.nonce, challenge, response.proof):
            raise ModelFailure(
                FailureClass.HANDSHAKE_FAILED,
                "the server on the socket did not prove it holds this run's nonce: it is not the container we started",
            )

    def info(self) -> ModelDescription:
        try:
            raw = self.stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=self.call_timeout_s)
        except grpc.RpcError as e:
            raise self._rpc_failure(e, "GetModelInfo") from None
        return validate_model_info(raw, self.budgets)

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
        on_progress: ProgressCallback | None = None,
        run_id: str = "",
        out: Mapping[str, np.ndarray] | None = None,
    ) -> RunResult:
        """Streams `stimuli` ((id, pixels HxWx3 uint8), (id, text) or (id, text, context_id))
        and collects outputs.

        `stimulus_ids` lists the ids `stimuli` will yield, in order; it sizes the result
        arrays up front, after the output budgets are checked. The whole run must finish within
        `timeout_s`, and new output bytes must keep coming (the watchdog's budgets). Text parts
        with the same context_id form one cumulative context and must be yielded contiguously,
        in order. Outputs of DATA_TYPE_STRING (e.g. "next_word") come back as object arrays of str.

        `out` may hold, per numeric output, a float32 (stimuli x features) C-contiguous array to deliver into
        (the RunResult's outputs are then those arrays): a caller that reuses its buffers across runs writes
        into memory that is already mapped, where a fresh array costs a page fault per page it fills.
        """
        requested = list(layers) + list(behaviours)
        for name in requested:
            if name not in description.outputs:
                raise ValueError(f"the model has no output {name!r}")
        n = len(stimulus_ids)
        index = {sid: i for i, sid in enumerate(stimulus_ids)}
        if len(index) != n:
            raise ValueError("stimulus ids must be unique")
        check_output_budgets(description, requested, n, self.budgets)
        out = dict(out or {})
        for name, array in out.items():
            if name not in requested or _is_string(description.outputs[name]):
                raise ValueError(f"out names {name!r}, which is not a requested numeric output")
            shape = (n, description.outputs[name].features)
            if array.dtype != np.float32 or array.shape != shape or not array.flags.c_contiguous or not array.flags.writeable:
                raise ValueError(f"out[{name!r}] must be a writeable C-contiguous float32 array of shape {shape}")
        results = {
            name: out[name] if name in out else
            np.empty((n, description.outputs[name].features), dtype=object if _is_string(description.outputs[name]) else np.float32)
            for name in requested
        }
        area = self._shared_area(description)
        handover = offer = None
        if area is not None:
            try:
                token = area.begin()
                handover = _Handover(self.socket_dir, area, self.owner_uid)
                handover.start()
                offer = pb.SharedMemoryOffer(
                    socket_name=handover.name, area_bytes=area.size, control_bytes=area.control_bytes,
                    alignment_bytes=area.alignment, token=token,
                )
            except OSError as e:
                log.warning("no shared-memory hand-over in %s (%s): this run chunks its tensors", self.socket_dir, e)
        received = RunReceiver(description, requested, index, results, budgets=self.budgets, area=area if offer else None)
        max_chunk = description.raw.limits.max_chunk_bytes
        sent: list[str] = []
        refused: list[ValueError] = []
        exhausted: list[bool] = []  # the caller's iterable ran out (else the model ended the stream first)

        def requests() -> Iterator[pb.RunRequest]:
            config = pb.RunConfig(
                run_id=run_id, layers=list(layers), behaviours=list(behaviours), batch_size=batch_size, max_chunk_bytes=max_chunk
            )
            if offer is not None:
                config.shared_memory.CopyFrom(offer)
            yield pb.RunRequest(config=config)
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
            exhausted.append(True)

        start = time.perf_counter()
        call = self._run(requests(), timeout=timeout_s)
        watchdog = _Watchdog(call, received, self.budgets, timeout_s, n)
        watchdog.start()
        try:
            for response in call:
                if received.accept(response, sent_count=len(sent)) == "progress" and on_progress is not None:
                    on_progress(received.stimuli_done, n)
        except grpc.RpcError as e:
            if refused:
                raise refused[0] from None
            if watchdog.reason is not None:
                raise ModelFailure(FailureClass.TIMEOUT, f"Run: {watchdog.reason}") from None
            raise self._rpc_failure(e, "Run") from None
        finally:
            watchdog.done.set()
            call.cancel()  # a no-op after a clean end; stops the model on any other exit
            if handover is not None:
                handover.close()
        if not exhausted and len(sent) < n:
            swapped = self.pin is not None and self.pin.replaced()
            raise ProtocolViolation(f"Run: the model ended the run after taking {len(sent)} of {n} stimuli"
                                    + (" (and replaced its socket after the handshake)" if swapped else ""))
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
            shared_memory_bytes=received.shared_memory_bytes,
        )


def check_output_budgets(description: ModelDescription, requested: Sequence[str], n: int, budgets: WireBudgets) -> None:
    """Refuses, before anything is allocated, a run whose declared outputs exceed the budgets:
    bytes sent per stimulus and per run (at the declared dtype, which every header must match)
    and result memory held (float32). A protocol violation, not bad output: no value is wrong
    yet, the model declared more than a run may cost."""
    outputs = [description.outputs[name] for name in requested]
    per_stimulus = sum(o.features * _wire_itemsize(o) for o in outputs)
    held = n * sum(o.features * _result_itemsize(o) for o in outputs)
    gib = 2**30
    if per_stimulus > budgets.output_bytes_per_stimulus:
        raise ProtocolViolation(
            f"the requested outputs ({', '.join(requested)[:200]}) would send {per_stimulus / 2**20:.0f} MiB per stimulus; "
            f"the budget is {budgets.output_bytes_per_stimulus / 2**20:.0f} MiB"
        )
    if n * per_stimulus > budgets.output_bytes_per_run:
        raise ProtocolViolation(
            f"{n} stimuli of the requested outputs would send {n * per_stimulus / gib:.1f} GiB; "
            f"the budget is {budgets.output_bytes_per_run / gib:.1f} GiB per run"
        )
    if held > budgets.result_bytes_per_run:
        raise ProtocolViolation(
            f"{n} stimuli of the requested outputs would hold {held / gib:.1f} GiB of results; "
            f"the budget is {budgets.result_bytes_per_run / gib:.1f} GiB per run"
        )


def _is_string(output: OutputInfo) -> bool:
    return output.dtype == wire.STRING_DTYPE


def _result_itemsize(output: OutputInfo) -> int:
    # A string element is held as a Python str: count its worst case on the wire.
    return 4 + wire.MAX_STRING_BYTES if _is_string(output) else 4


def _wire_itemsize(output: OutputInfo) -> int:
    return 4 + wire.MAX_STRING_BYTES if _is_string(output) else output.dtype.itemsize


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
    """State machine over a Run's response stream; raises on the first violation.

    Numeric tensors are converted to float32 chunk by chunk into their rows of the result
    arrays (a partial element waits in `carry`), and each chunk's values are checked for NaN
    and inf as they land: no tensor is ever buffered whole. Only string tensors are, within
    their budget."""

    def __init__(
        self,
        description: ModelDescription,
        requested: list[str],
        index: dict[str, int],
        results: dict,
        budgets: WireBudgets | None = None,
        area: SharedArea | None = None,
    ):
        self.description = description
        self.area = area  # the run's shared-memory area, when it offered one
        self.shared_memory_bytes = 0
        self.requested = set(requested)
        self.index = index
        self.results = results
        self.budgets = budgets or WireBudgets()
        self.max_chunk = description.raw.limits.max_chunk_bytes
        self.max_batch = description.raw.limits.max_batch_size
        self.filled = {name: np.zeros(len(index), dtype=bool) for name in requested}
        self.next_tensor_id = 0
        self.header: pb.TensorHeader | None = None
        self.buffer_fill = 0
        self.stimuli_done = 0  # the model's own claim (Progress)
        self.rows_complete = 0  # rows of requested outputs received whole and checked
        self.bytes_received = 0
        self.summary: pb.RunSummary | None = None
        self.idle_allowed = self.budgets.idle_messages + self.budgets.idle_messages_per_output * len(index) * max(1, len(requested))
        self.idle_count = 0
        self.last_bytes_at = time.monotonic()

    @property
    def stimuli_complete(self) -> int:
        return self.rows_complete // max(1, len(self.requested))

    def _idle(self) -> None:
        """One more message that brought no new valid bytes; too many is a flood."""
        self.idle_count += 1
        if self.idle_count > self.idle_allowed:
            raise ProtocolViolation(
                f"the model sent more than {self.idle_allowed} messages that carried no new output bytes, the budget of "
                f"this run (orchestrator/budgets.py: idle_messages): a flood"
            )

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
        self._idle()
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
            raise ProtocolViolation(f"tensor {h.tensor_id} is {h.name[:80]!r}, which was not requested")
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
            raise ProtocolViolation(f"tensor {h.name!r} has shape {list(h.shape)[:8]}, expected {[k, *out.shape]}")
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
        self.features = out.features
        self.buffer_fill = 0
        self.elements = 0  # whole elements stored (and checked) so far
        self.carry = b""
        self.next_tensor_id += 1
        first = rows[0]
        self.flat = self.buffer = None
        if dtype == wire.STRING_DTYPE:
            self.buffer = np.empty(h.byte_size, dtype=np.uint8)  # bounded by the string budget
        elif rows == list(range(first, first + k)):
            # The usual case, consecutive stimuli: their rows are one contiguous float32 block.
            self.flat = self.results[h.name][first : first + k].reshape(-1)
            if dtype == np.float32:
                self.buffer = self.flat.view(np.uint8)  # chunks land in their final place
        if h.HasField("shared_memory"):
            self._read_block(h, h.shared_memory)

    def _read_block(self, h: pb.TensorHeader, block: pb.SharedMemoryBlock) -> None:
        """A tensor announced in the shared-memory area: checked against the area, copied out piece by
        piece, each piece checksummed and checked for NaN from our copy while it is cache-hot, then released.

        Why this is safe although the model can write its memfd at any time: nothing is read in place. What
        is checked and scored is our private copy, checked after it was made. A model that writes into a
        block after announcing it can at worst change its own values, which it could have sent anyway; the
        checksum (the sum of the block's 64-bit words, as the model announced it) turns that into a protocol
        violation, and so catches an SDK whose ring puts a new block on one we still hold. A block outside
        the area, over the control page, misaligned or of another size than its header is refused before
        anything is read."""
        area = self.area
        if area is None:
            raise ProtocolViolation(f"tensor {h.name!r} is announced in a shared-memory area, but this run offered none")
        if self.dtype == wire.STRING_DTYPE:
            raise ProtocolViolation(f"string tensor {h.name!r} is announced in shared memory; strings are chunked")
        start, length = block.offset, block.length
        if length != h.byte_size:
            raise ProtocolViolation(f"tensor {h.name!r}: its shared-memory block has {length} bytes; the header says {h.byte_size}")
        if start < area.control_bytes or start % area.alignment or start + length > area.size:
            raise ProtocolViolation(
                f"tensor {h.name!r}: a block at bytes {start}..{start + length} is not an aligned block of the area "
                f"({area.control_bytes}..{area.size}, alignment {area.alignment})"
            )
        source = area.view[start : start + length]
        checksum, bad = 0, None
        direct = self.buffer is not None  # float32 into consecutive rows: straight into the results
        bounce = None if direct else np.empty(min(_SHM_PIECE, length), np.uint8)
        for pos in range(0, length, _SHM_PIECE):
            end = min(pos + _SHM_PIECE, length)
            self.buffer_fill = pos
            try:
                if direct:
                    ours = self.buffer[pos:end]
                    np.copyto(ours, source[pos:end])
                    checksum = wire.block_checksum(ours, checksum)
                    self._check_finite(self.flat[pos // 4 : end // 4])
                else:  # converted (or scattered) from a private copy of the piece
                    piece = bounce[: end - pos]
                    np.copyto(piece, source[pos:end])
                    checksum = wire.block_checksum(piece, checksum)
                    e1 = self.elements + piece.size // self.dtype.itemsize
                    self._store(piece.view(self.dtype))
            except BadOutput as e:  # reported after the checksum: a block written again is a violation first
                bad = bad or e
                if not direct:
                    self.elements = e1
        if checksum != block.checksum:
            raise ProtocolViolation(
                f"tensor {h.name!r}: its shared-memory block does not match its checksum: it was written again after "
                "it was announced (or announced with a wrong checksum)"
            )
        if bad is not None:
            raise bad
        area.release()
        self.buffer_fill = length
        self.bytes_received += length
        self.shared_memory_bytes += length
        self.last_bytes_at = time.monotonic()
        self._complete()

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
        ends_tensor = self.buffer_fill + size == h.byte_size
        if size < self.budgets.min_chunk_bytes and not ends_tensor:
            self._idle()
        if self.buffer is not None:
            self.buffer[self.buffer_fill : self.buffer_fill + size] = c.data
            if self.flat is not None:  # float32 in place: check what is now whole
                whole = (self.buffer_fill + size) // 4
                self._check_finite(self.flat[self.elements : whole])
                self.elements = whole
        else:
            self._convert(c.data)
        self.buffer_fill += size
        self.bytes_received += size
        self.last_bytes_at = time.monotonic()
        if ends_tensor:
            self._complete()

    def _convert(self, data: memoryview) -> None:
        """Stores the whole elements of `data` (after any partial element of the previous chunk)
        as float32 in their rows; keeps a trailing partial element for the next chunk."""
        itemsize = self.dtype.itemsize
        if self.carry:
            need = itemsize - len(self.carry)
            self.carry += bytes(data[:need])
            data = data[need:]
            if len(self.carry) < itemsize:
                return
            self._store(np.frombuffer(self.carry, self.dtype))
            self.carry = b""
        whole = data.nbytes - data.nbytes % itemsize
        if whole:
            self._store(np.frombuffer(data[:whole], self.dtype))
        self.carry = bytes(data[whole:])

    def _store(self, values: np.ndarray) -> None:
        """Writes `values` (the tensor's next elements, in the sent dtype) into their rows as float32."""
        e0, e1 = self.elements, self.elements + values.size
        with np.errstate(over="ignore", invalid="ignore"):  # out-of-range values become inf, caught below
            if self.flat is not None:
                dest = self.flat[e0:e1]
                np.copyto(dest, values, casting="unsafe")
                self._check_finite(dest)
            else:
                result, features, pos, i = self.results[self.header.name], self.features, e0, 0
                while pos < e1:
                    r, col = divmod(pos, features)
                    if col == 0 and e1 - pos >= features:  # whole rows
                        m = (e1 - pos) // features
                        result[self.rows[r : r + m]] = values[i : i + m * features].reshape(m, features)
                        self._check_finite(result[self.rows[r : r + m]])
                        step = m * features
                    else:
                        step = min(features - col, e1 - pos)
                        dest = result[self.rows[r], col : col + step]
                        np.copyto(dest, values[i : i + step], casting="unsafe")
                        self._check_finite(dest)
                    pos += step
                    i += step
        self.elements = e1

    def _check_finite(self, values: np.ndarray) -> None:
        if self.dtype.kind != "f" or not values.size:
            return
        # A NaN anywhere is the minimum and the maximum (numpy propagates NaN), an infinity is one of them: two
        # vectorised reductions, exact and without a temporary (a sum ran at a third of their speed, and overflowed).
        if not (math.isfinite(np.minimum.reduce(values, axis=None)) and math.isfinite(np.maximum.reduce(values, axis=None))):
            bad = int((~np.isfinite(values)).sum())
            raise BadOutput(
                f"tensor {self.header.name!r} contains {bad} NaN or infinite values (or values beyond float32's range) "
                f"in bytes {self.buffer_fill}.. of {self.header.byte_size}"
            )

    def _complete(self) -> None:
        h = self.header
        if self.dtype == wire.STRING_DTYPE:
            try:
                values = wire.decode_strings(self.buffer, len(self.rows) * self.description.outputs[h.name].features)
            except ValueError as e:
                raise ProtocolViolation(f"tensor {h.name!r}: {e}") from None
            self.results[h.name][self.rows] = values.reshape(len(self.rows), -1)
        self.filled[h.name][self.rows] = True
        self.rows_complete += len(self.rows)
        self.header = None
        self.buffer = self.flat = None
        self.carry = b""

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
