"""Facts about the wire format that both ends must agree on.

The SDK (inside model images) and the orchestrator import this one module, so a data type,
a size limit or an error reason has exactly one definition.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import socket

import numpy as np

from cortexbox.model.v1 import model_service_pb2 as pb

PROTOCOL_VERSION = "1.2"  # 1.1: DATA_TYPE_STRING, text runs; 1.2: transport.shared_memory
SERVICE_NAME = "cortexbox.model.v1.ModelService"

#: Hard ceiling on one chunk's payload. gRPC's default message limit is 4 MiB, and Python
#: slows down sharply on larger single messages (shared/research/serving.md, section 4).
MAX_CHUNK_BYTES = 4 * 1024 * 1024
DEFAULT_CHUNK_BYTES = 1 * 1024 * 1024
#: Largest message either side accepts: a chunk plus framing, or one big stimulus.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

#: Trailing-metadata key that carries an ErrorReason name.
ERROR_REASON_KEY = "cortexbox-error-reason"
#: Environment variables the orchestrator sets in a model container.
ENV_SOCKET = "CORTEXBOX_SOCKET"
ENV_NONCE = "CORTEXBOX_RUN_NONCE"
ENV_IDLE_TIMEOUT = "CORTEXBOX_IDLE_TIMEOUT_S"
#: "0" turns the SDK's shared-memory transport off (the server then chunks every tensor).
ENV_SHARED_MEMORY = "CORTEXBOX_SHARED_MEMORY"

_DATA_TYPES: tuple[tuple[pb.DataType, np.dtype], ...] = (
    (pb.DATA_TYPE_FLOAT32, np.dtype("<f4")),
    (pb.DATA_TYPE_FLOAT16, np.dtype("<f2")),
    (pb.DATA_TYPE_FLOAT64, np.dtype("<f8")),
    (pb.DATA_TYPE_UINT8, np.dtype("u1")),
    (pb.DATA_TYPE_INT32, np.dtype("<i4")),
    (pb.DATA_TYPE_INT64, np.dtype("<i8")),
)
_NUMPY_BY_DATA_TYPE: dict[int, np.dtype] = dict(_DATA_TYPES)
_DATA_TYPE_BY_KIND: dict[tuple[str, int], pb.DataType] = {(dt.kind, dt.itemsize): code for code, dt in _DATA_TYPES}

#: Strings (DATA_TYPE_STRING): numpy object arrays of str on both ends. Each element is at most
#: this many UTF-8 bytes; on the wire it is a 4-byte little-endian length and the bytes.
STRING_DTYPE = np.dtype(object)
MAX_STRING_BYTES = 1024


def numpy_dtype(data_type: int) -> np.dtype:
    """The little-endian numpy dtype of a wire DataType (object for strings); ValueError for unknown codes."""
    if data_type == pb.DATA_TYPE_STRING:
        return STRING_DTYPE
    try:
        return _NUMPY_BY_DATA_TYPE[data_type]
    except KeyError:
        raise ValueError(f"unknown data type code {data_type}") from None


def data_type_of(dtype: np.dtype | type | str) -> pb.DataType:
    """The wire DataType of a numpy dtype (byte order is ignored: the wire is little-endian)."""
    if isinstance(dtype, str) and dtype in ("str", "string"):
        return pb.DATA_TYPE_STRING
    dt = np.dtype(dtype)
    if dt.kind in "OUT":
        return pb.DATA_TYPE_STRING
    try:
        return _DATA_TYPE_BY_KIND[(dt.kind, dt.itemsize)]
    except KeyError:
        raise ValueError(f"numpy dtype {dt} has no cortexbox wire type") from None


def data_type_name(data_type: int) -> str:
    return pb.DataType.Name(data_type) if data_type in pb.DataType.values() else str(data_type)


def encode_strings(values) -> bytes:
    """DATA_TYPE_STRING bytes of `values` (C order): per element a 4-byte little-endian length
    and its UTF-8 bytes. ValueError for a non-str element or one over MAX_STRING_BYTES."""
    parts = []
    for value in np.asarray(values, dtype=object).reshape(-1):
        if not isinstance(value, str):
            raise ValueError(f"string output elements must be str, got {type(value).__name__}")
        raw = value.encode("utf-8")  # strict: a lone surrogate raises UnicodeEncodeError (a ValueError)
        if len(raw) > MAX_STRING_BYTES:
            raise ValueError(f"a string output element has {len(raw)} UTF-8 bytes; at most {MAX_STRING_BYTES}")
        parts += [len(raw).to_bytes(4, "little"), raw]
    return b"".join(parts)


def decode_strings(data, count: int) -> np.ndarray:
    """Inverse of :func:`encode_strings`: exactly `count` elements, each valid UTF-8 of at most
    MAX_STRING_BYTES, and no byte left over; ValueError otherwise."""
    view = memoryview(data).cast("B")
    out = np.empty(count, dtype=object)
    pos = 0
    for i in range(count):
        if pos + 4 > len(view):
            raise ValueError(f"string tensor ends inside element {i} of {count}")
        size = int.from_bytes(view[pos : pos + 4], "little")
        pos += 4
        if size > MAX_STRING_BYTES:
            raise ValueError(f"string element {i} claims {size} bytes; at most {MAX_STRING_BYTES}")
        if pos + size > len(view):
            raise ValueError(f"string element {i} runs past the tensor")
        try:
            out[i] = bytes(view[pos : pos + size]).decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"string element {i} is not valid UTF-8: {e.reason}") from None
        pos += size
    if pos != len(view):
        raise ValueError(f"string tensor has {len(view) - pos} bytes after its {count} elements")
    return out


def to_wire_array(array: np.ndarray) -> np.ndarray:
    """`array` as little-endian and C-contiguous, copying only when it is not already."""
    dt = array.dtype
    if dt.byteorder == ">" or (dt.byteorder == "=" and np.little_endian is False):
        array = array.astype(dt.newbyteorder("<"))
    return np.ascontiguousarray(array)


def handshake_proof(nonce: str, challenge: bytes) -> bytes:
    """HMAC-SHA256 of the challenge under the run's nonce; see ModelService.Handshake."""
    return hmac.new(nonce.encode("utf-8"), challenge, hashlib.sha256).digest()


def proof_matches(nonce: str, challenge: bytes, proof: bytes) -> bool:
    return hmac.compare_digest(handshake_proof(nonce, challenge), proof)


# -- the chunk fast path ---------------------------------------------------------------------
# TensorChunk messages carry nearly all the bytes of a run. Building them as protobuf objects
# costs two extra copies of every payload on each side, so both ends frame and parse them by
# hand. The bytes on the wire are exactly RunResponse{chunk: TensorChunk{...}}: any other
# client or server still reads and writes them with plain protobuf.

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_chunk(tensor_id: int, offset: int, data) -> bytes:
    """The serialized RunResponse{chunk: TensorChunk{tensor_id, offset, data}}, with the
    payload (any bytes-like object) copied exactly once."""
    size = len(data) if not isinstance(data, memoryview) else data.nbytes
    inner = b"\x08" + _varint(tensor_id) + b"\x10" + _varint(offset) + b"\x1a" + _varint(size)
    return b"".join((b"\x12", _varint(len(inner) + size), inner, data))


class ChunkView:
    """A TensorChunk parsed without copying its payload: `data` is a view into the message."""

    __slots__ = ("tensor_id", "offset", "data")

    def __init__(self, tensor_id: int, offset: int, data: memoryview):
        self.tensor_id, self.offset, self.data = tensor_id, offset, data


def _read_varint(buf, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise ValueError("truncated or overlong varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def decode_run_response(data: bytes):
    """Parses a serialized RunResponse: a ChunkView for a lone chunk (zero copy), else a
    protobuf RunResponse. Anything malformed comes back as a RunResponse with no item set
    (which the receiver rejects) rather than an exception inside gRPC's machinery."""
    try:
        if data[:1] == b"\x12":
            length, pos = _read_varint(data, 1, len(data))
            if pos + length == len(data):
                return _decode_chunk(data, pos, len(data))
        return pb.RunResponse.FromString(data)
    except Exception:  # noqa: BLE001 - hostile bytes must not crash the client
        return pb.RunResponse()


def _decode_chunk(buf: bytes, pos: int, end: int) -> ChunkView:
    tensor_id = offset = 0
    payload = memoryview(b"")
    view = memoryview(buf)
    while pos < end:
        key, pos = _read_varint(buf, pos, end)
        field, kind = key >> 3, key & 7
        if kind == 0:
            value, pos = _read_varint(buf, pos, end)
            if field == 1:
                tensor_id = value
            elif field == 2:
                offset = value
        elif kind == 2:
            length, pos = _read_varint(buf, pos, end)
            if pos + length > end:
                raise ValueError("field runs past the message")
            if field == 3:
                payload = view[pos : pos + length]
            pos += length
        elif kind == 1:
            pos += 8
        elif kind == 5:
            pos += 4
        else:
            raise ValueError(f"wire type {kind}")
    if pos != end:
        raise ValueError("field runs past the message")
    return ChunkView(tensor_id, offset, payload)


# -- the shared-memory transport (v1.2, capability "transport.shared_memory") ----------------
# The client creates a sealed memfd per run (it cannot shrink, so a mapping of it never faults
# with SIGBUS), hands it over on a SOCK_SEQPACKET socket, and the server writes tensors into
# it as blocks of a ring. The first SHM_CONTROL_BYTES are the client's: the run's token and
# the count of blocks it has released. See SharedMemoryOffer in the proto.

CAPABILITY_SHARED_MEMORY = "transport.shared_memory"
SHM_CONTROL_BYTES = 4096
SHM_ALIGNMENT = 4096
SHM_TOKEN_BYTES = 16
SHM_RELEASED_OFFSET = 16  # little-endian uint64: blocks the client has read and released
#: The one message on the hand-over socket, with the memfd attached.
SHM_HELLO = b"cortexbox-shm-1"
#: A socket name the client may choose (a plain file name in the model socket's folder).
SHM_SOCKET_NAME = re.compile(r"shm-[0-9a-f]{8,32}")


def block_checksum(data, checksum: int = 0) -> int:
    """The sum, modulo 2**64, of the little-endian 64-bit words of `data` (the last zero-padded),
    added to `checksum`: pieces that start at multiples of 8 can be summed one at a time. It runs
    at memory speed on both ends (numpy, no copy). A sum, not an XOR: equal words must not cancel
    (a constant block rewritten with another constant would keep an XOR of 0)."""
    view = np.frombuffer(data, np.uint8)
    whole = view.size - view.size % 8
    if whole:
        checksum += int(np.add.reduce(view[:whole].view("<u8"), dtype=np.uint64))
    if whole != view.size:
        checksum += int.from_bytes(bytes(view[whole:]) + bytes(8 - (view.size - whole)), "little")
    return checksum % 2**64


def _unix_path(folder_fd: int | None, path: str) -> str:
    """A unix socket path under 108 bytes: through /proc/self/fd when the folder's own is long."""
    if folder_fd is None or len(os.fsencode(path)) < 100:
        return path
    return f"/proc/self/fd/{folder_fd}/{os.path.basename(path)}"


def receive_area(folder: str, name: str, timeout_s: float) -> int:
    """Connects to the client's hand-over socket `name` in `folder` and returns the memfd it
    sends; OSError or ValueError when there is none."""
    if not SHM_SOCKET_NAME.fullmatch(name):
        raise ValueError(f"not a shared-memory socket name: {name[:80]!r}")
    folder_fd = os.open(folder, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
            sock.settimeout(timeout_s)
            sock.connect(_unix_path(folder_fd, os.path.join(folder, name)))
            message, fds, _, _ = socket.recv_fds(sock, 64, 4)
    finally:
        os.close(folder_fd)
    if message != SHM_HELLO or len(fds) != 1:
        for fd in fds:
            os.close(fd)
        raise ValueError("the shared-memory hand-over sent no area")
    return fds[0]
