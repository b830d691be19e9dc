"""Facts about the wire format that both ends must agree on.

The SDK (inside model images) and the orchestrator import this one module, so a data type,
a size limit or an error reason has exactly one definition.
"""

from __future__ import annotations

import hashlib
import hmac

import numpy as np

from cortexbox.model.v1 import model_service_pb2 as pb

PROTOCOL_VERSION = "1.0"
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

_NUMPY_BY_DATA_TYPE = {
    pb.DATA_TYPE_FLOAT32: np.dtype("<f4"),
    pb.DATA_TYPE_FLOAT16: np.dtype("<f2"),
    pb.DATA_TYPE_FLOAT64: np.dtype("<f8"),
    pb.DATA_TYPE_UINT8: np.dtype("u1"),
    pb.DATA_TYPE_INT32: np.dtype("<i4"),
    pb.DATA_TYPE_INT64: np.dtype("<i8"),
}
_DATA_TYPE_BY_KIND = {(dt.kind, dt.itemsize): code for code, dt in _NUMPY_BY_DATA_TYPE.items()}


def numpy_dtype(data_type: int) -> np.dtype:
    """The little-endian numpy dtype of a wire DataType; ValueError for unknown codes."""
    try:
        return _NUMPY_BY_DATA_TYPE[data_type]
    except KeyError:
        raise ValueError(f"unknown data type code {data_type}") from None


def data_type_of(dtype: np.dtype | type | str) -> int:
    """The wire DataType of a numpy dtype (byte order is ignored: the wire is little-endian)."""
    dt = np.dtype(dtype)
    try:
        return _DATA_TYPE_BY_KIND[(dt.kind, dt.itemsize)]
    except KeyError:
        raise ValueError(f"numpy dtype {dt} has no cortexbox wire type") from None


def data_type_name(data_type: int) -> str:
    return pb.DataType.Name(data_type) if data_type in pb.DataType.values() else str(data_type)


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
