from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Modality(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODALITY_UNSPECIFIED: _ClassVar[Modality]
    MODALITY_IMAGE: _ClassVar[Modality]
    MODALITY_TEXT: _ClassVar[Modality]

class DataType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DATA_TYPE_UNSPECIFIED: _ClassVar[DataType]
    DATA_TYPE_FLOAT32: _ClassVar[DataType]
    DATA_TYPE_FLOAT16: _ClassVar[DataType]
    DATA_TYPE_FLOAT64: _ClassVar[DataType]
    DATA_TYPE_UINT8: _ClassVar[DataType]
    DATA_TYPE_INT32: _ClassVar[DataType]
    DATA_TYPE_INT64: _ClassVar[DataType]
    DATA_TYPE_STRING: _ClassVar[DataType]

class OutputKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTPUT_KIND_UNSPECIFIED: _ClassVar[OutputKind]
    OUTPUT_KIND_LAYER: _ClassVar[OutputKind]
    OUTPUT_KIND_BEHAVIOUR: _ClassVar[OutputKind]

class ErrorReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_REASON_UNSPECIFIED: _ClassVar[ErrorReason]
    BAD_CONFIG: _ClassVar[ErrorReason]
    UNKNOWN_OUTPUT: _ClassVar[ErrorReason]
    BAD_STIMULUS: _ClassVar[ErrorReason]
    UNSUPPORTED: _ClassVar[ErrorReason]
    NOT_READY: _ClassVar[ErrorReason]
    BUSY: _ClassVar[ErrorReason]
    OUT_OF_MEMORY: _ClassVar[ErrorReason]
    MODEL_ERROR: _ClassVar[ErrorReason]
    BAD_OUTPUT: _ClassVar[ErrorReason]
MODALITY_UNSPECIFIED: Modality
MODALITY_IMAGE: Modality
MODALITY_TEXT: Modality
DATA_TYPE_UNSPECIFIED: DataType
DATA_TYPE_FLOAT32: DataType
DATA_TYPE_FLOAT16: DataType
DATA_TYPE_FLOAT64: DataType
DATA_TYPE_UINT8: DataType
DATA_TYPE_INT32: DataType
DATA_TYPE_INT64: DataType
DATA_TYPE_STRING: DataType
OUTPUT_KIND_UNSPECIFIED: OutputKind
OUTPUT_KIND_LAYER: OutputKind
OUTPUT_KIND_BEHAVIOUR: OutputKind
ERROR_REASON_UNSPECIFIED: ErrorReason
BAD_CONFIG: ErrorReason
UNKNOWN_OUTPUT: ErrorReason
BAD_STIMULUS: ErrorReason
UNSUPPORTED: ErrorReason
NOT_READY: ErrorReason
BUSY: ErrorReason
OUT_OF_MEMORY: ErrorReason
MODEL_ERROR: ErrorReason
BAD_OUTPUT: ErrorReason

class GetModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class OutputSpec(_message.Message):
    __slots__ = ("name", "kind", "data_type", "shape", "description")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DATA_TYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: OutputKind
    data_type: DataType
    shape: _containers.RepeatedScalarFieldContainer[int]
    description: str
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[OutputKind, str]] = ..., data_type: _Optional[_Union[DataType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., description: _Optional[str] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_batch_size", "max_chunk_bytes", "max_stimulus_bytes", "max_context_tokens")
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_STIMULUS_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_CONTEXT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    max_batch_size: int
    max_chunk_bytes: int
    max_stimulus_bytes: int
    max_context_tokens: int
    def __init__(self, max_batch_size: _Optional[int] = ..., max_chunk_bytes: _Optional[int] = ..., max_stimulus_bytes: _Optional[int] = ..., max_context_tokens: _Optional[int] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("protocol_version", "model_id", "model_version", "description", "modality", "layers", "behaviours", "region_layers", "visual_degrees", "limits", "capabilities", "metadata", "commitment_layers")
    class RegionLayersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    BEHAVIOURS_FIELD_NUMBER: _ClassVar[int]
    REGION_LAYERS_FIELD_NUMBER: _ClassVar[int]
    VISUAL_DEGREES_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    COMMITMENT_LAYERS_FIELD_NUMBER: _ClassVar[int]
    protocol_version: str
    model_id: str
    model_version: str
    description: str
    modality: Modality
    layers: _containers.RepeatedCompositeFieldContainer[OutputSpec]
    behaviours: _containers.RepeatedCompositeFieldContainer[OutputSpec]
    region_layers: _containers.ScalarMap[str, str]
    visual_degrees: float
    limits: Limits
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    metadata: _containers.ScalarMap[str, str]
    commitment_layers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, protocol_version: _Optional[str] = ..., model_id: _Optional[str] = ..., model_version: _Optional[str] = ..., description: _Optional[str] = ..., modality: _Optional[_Union[Modality, str]] = ..., layers: _Optional[_Iterable[_Union[OutputSpec, _Mapping]]] = ..., behaviours: _Optional[_Iterable[_Union[OutputSpec, _Mapping]]] = ..., region_layers: _Optional[_Mapping[str, str]] = ..., visual_degrees: _Optional[float] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., capabilities: _Optional[_Iterable[str]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., commitment_layers: _Optional[_Iterable[str]] = ...) -> None: ...

class HandshakeRequest(_message.Message):
    __slots__ = ("challenge",)
    CHALLENGE_FIELD_NUMBER: _ClassVar[int]
    challenge: bytes
    def __init__(self, challenge: _Optional[bytes] = ...) -> None: ...

class HandshakeResponse(_message.Message):
    __slots__ = ("proof",)
    PROOF_FIELD_NUMBER: _ClassVar[int]
    proof: bytes
    def __init__(self, proof: _Optional[bytes] = ...) -> None: ...

class RunRequest(_message.Message):
    __slots__ = ("config", "stimulus")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    STIMULUS_FIELD_NUMBER: _ClassVar[int]
    config: RunConfig
    stimulus: Stimulus
    def __init__(self, config: _Optional[_Union[RunConfig, _Mapping]] = ..., stimulus: _Optional[_Union[Stimulus, _Mapping]] = ...) -> None: ...

class RunConfig(_message.Message):
    __slots__ = ("run_id", "layers", "behaviours", "batch_size", "max_chunk_bytes", "shared_memory")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    BEHAVIOURS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHARED_MEMORY_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    layers: _containers.RepeatedScalarFieldContainer[str]
    behaviours: _containers.RepeatedScalarFieldContainer[str]
    batch_size: int
    max_chunk_bytes: int
    shared_memory: SharedMemoryOffer
    def __init__(self, run_id: _Optional[str] = ..., layers: _Optional[_Iterable[str]] = ..., behaviours: _Optional[_Iterable[str]] = ..., batch_size: _Optional[int] = ..., max_chunk_bytes: _Optional[int] = ..., shared_memory: _Optional[_Union[SharedMemoryOffer, _Mapping]] = ...) -> None: ...

class SharedMemoryOffer(_message.Message):
    __slots__ = ("socket_name", "area_bytes", "control_bytes", "alignment_bytes", "token")
    SOCKET_NAME_FIELD_NUMBER: _ClassVar[int]
    AREA_BYTES_FIELD_NUMBER: _ClassVar[int]
    CONTROL_BYTES_FIELD_NUMBER: _ClassVar[int]
    ALIGNMENT_BYTES_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    socket_name: str
    area_bytes: int
    control_bytes: int
    alignment_bytes: int
    token: bytes
    def __init__(self, socket_name: _Optional[str] = ..., area_bytes: _Optional[int] = ..., control_bytes: _Optional[int] = ..., alignment_bytes: _Optional[int] = ..., token: _Optional[bytes] = ...) -> None: ...

class Tensor(_message.Message):
    __slots__ = ("data_type", "shape", "data")
    DATA_TYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    data_type: DataType
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, data_type: _Optional[_Union[DataType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class Stimulus(_message.Message):
    __slots__ = ("id", "pixels", "text", "context_id", "attributes")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    PIXELS_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_ID_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    id: str
    pixels: Tensor
    text: str
    context_id: str
    attributes: _containers.ScalarMap[str, str]
    def __init__(self, id: _Optional[str] = ..., pixels: _Optional[_Union[Tensor, _Mapping]] = ..., text: _Optional[str] = ..., context_id: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ...) -> None: ...

class RunResponse(_message.Message):
    __slots__ = ("header", "chunk", "progress", "summary")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    header: TensorHeader
    chunk: TensorChunk
    progress: Progress
    summary: RunSummary
    def __init__(self, header: _Optional[_Union[TensorHeader, _Mapping]] = ..., chunk: _Optional[_Union[TensorChunk, _Mapping]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., summary: _Optional[_Union[RunSummary, _Mapping]] = ...) -> None: ...

class TensorHeader(_message.Message):
    __slots__ = ("tensor_id", "name", "kind", "stimulus_ids", "data_type", "shape", "byte_size", "shared_memory")
    TENSOR_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STIMULUS_IDS_FIELD_NUMBER: _ClassVar[int]
    DATA_TYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    BYTE_SIZE_FIELD_NUMBER: _ClassVar[int]
    SHARED_MEMORY_FIELD_NUMBER: _ClassVar[int]
    tensor_id: int
    name: str
    kind: OutputKind
    stimulus_ids: _containers.RepeatedScalarFieldContainer[str]
    data_type: DataType
    shape: _containers.RepeatedScalarFieldContainer[int]
    byte_size: int
    shared_memory: SharedMemoryBlock
    def __init__(self, tensor_id: _Optional[int] = ..., name: _Optional[str] = ..., kind: _Optional[_Union[OutputKind, str]] = ..., stimulus_ids: _Optional[_Iterable[str]] = ..., data_type: _Optional[_Union[DataType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., byte_size: _Optional[int] = ..., shared_memory: _Optional[_Union[SharedMemoryBlock, _Mapping]] = ...) -> None: ...

class SharedMemoryBlock(_message.Message):
    __slots__ = ("offset", "length", "checksum")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    offset: int
    length: int
    checksum: int
    def __init__(self, offset: _Optional[int] = ..., length: _Optional[int] = ..., checksum: _Optional[int] = ...) -> None: ...

class TensorChunk(_message.Message):
    __slots__ = ("tensor_id", "offset", "data")
    TENSOR_ID_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    tensor_id: int
    offset: int
    data: bytes
    def __init__(self, tensor_id: _Optional[int] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("stimuli_received", "stimuli_done")
    STIMULI_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    STIMULI_DONE_FIELD_NUMBER: _ClassVar[int]
    stimuli_received: int
    stimuli_done: int
    def __init__(self, stimuli_received: _Optional[int] = ..., stimuli_done: _Optional[int] = ...) -> None: ...

class RunSummary(_message.Message):
    __slots__ = ("run_id", "stimuli", "tensors", "bytes", "timings_s")
    class TimingsSEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STIMULI_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_S_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    stimuli: int
    tensors: int
    bytes: int
    timings_s: _containers.ScalarMap[str, float]
    def __init__(self, run_id: _Optional[str] = ..., stimuli: _Optional[int] = ..., tensors: _Optional[int] = ..., bytes: _Optional[int] = ..., timings_s: _Optional[_Mapping[str, float]] = ...) -> None: ...
