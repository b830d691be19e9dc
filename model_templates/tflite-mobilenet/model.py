"""MobileNet V2 1.0 @ 224 (ImageNet, 8-bit quantised TF Lite) as a cortexbox model.

Every intermediate activation tensor of the graph is a layer (66 for this file: the output of
each CONV_2D, DEPTHWISE_CONV_2D, ADD, AVERAGE_POOL_2D, RESHAPE and SOFTMAX), dequantised to
float32 with that tensor's scale and zero point and shaped height x width x channels as the
graph has it. Layer names are the TF names of the tensors: the first of the names the converter
fused (``MobilenetV2/expanded_conv_3/expand/Relu6``), minus its ``/add_fold`` or ``/BiasAdd``
suffix. The behaviour ``logits`` is the 1001 dequantised pre-softmax logits; index 0 is
"background", 1..1000 the ImageNet classes (``assets/imagenet_labels.txt``).

Weights come from google-coral/test_data (Apache-2.0); see shared/data/coral_mobilenet_tflite.
The interpreter (ai-edge-litert) runs one image per invoke, so a batch is a loop.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from cortexbox.sdk.environment import cpu_quota
from cortexbox.sdk.imaging import resize
from cortexbox.sdk import Model, Output, Stimulus, StimulusError

HERE = Path(__file__).resolve().parent
#: Where cortexbox.toml puts the weights in the image; $TFLITE_MODEL_PATH overrides.
DEFAULT_MODEL_PATH = HERE / "assets" / "mobilenet_v2_1.0_224_quant.tflite"
ENV_MODEL_PATH = "TFLITE_MODEL_PATH"
#: Fused-op suffixes the TF Lite converter leaves on tensor names; the layer is the op's scope.
_NAME_SUFFIXES = ("/add_fold", "/BiasAdd")
#: Ops whose outputs are bookkeeping, not activations.
_SKIP_OPS = {"DELEGATE"}
_LOGITS_KEY = "\0logits"  # cannot clash with a tensor name


def layer_name(tensor_name: str) -> str:
    """``"A/b/Relu6;A/c/Conv2D_Fold;..."`` -> ``"A/b/Relu6"``; ``".../project/add_fold"`` -> ``".../project"``."""
    name = tensor_name.split(";", 1)[0]
    for suffix in _NAME_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


class MobileNetV2(Model):
    """ImageNet MobileNet V2 1.0 @ 224, uint8-quantised, run by ai-edge-litert; all activations as layers."""

    model_id = "mobilenet_v2_1.0_224_quant"
    model_version = "1"
    description = (
        "MobileNet V2 1.0 @ 224 trained on ImageNet (Sandler et al. 2018), 8-bit quantised TF Lite from "
        "google-coral/test_data; every intermediate tensor is a layer; logits: 1001 classes, 0 = background."
    )
    visual_degrees = 8.0
    region_layers: Mapping[str, str] = {}  # the orchestrator chooses
    max_batch_size = 16  # ~3 ms an image with XNNPACK, ~25 ms without

    def __init__(self, model_path: str | Path | None = None, num_threads: int | None = None, use_xnnpack: bool = True):
        self.model_path = model_path
        self.num_threads = num_threads
        self.use_xnnpack = use_xnnpack

    # -- set-up ---------------------------------------------------------------------------
    def load(self) -> None:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        path = Path(self.model_path or os.environ.get(ENV_MODEL_PATH) or DEFAULT_MODEL_PATH)
        if not path.is_file():
            raise FileNotFoundError(
                f"no TF Lite model at {path}; set ${ENV_MODEL_PATH} or put it in {DEFAULT_MODEL_PATH}"
            )
        threads = self.num_threads or cpu_quota()
        options = (
            {}
            if self.use_xnnpack
            else {"experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
        )
        with warnings.catch_warnings():  # "preserve_all_tensors ... for debugging": keeping them is the point
            warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors.*")
            self.interpreter_ = Interpreter(
                model_path=str(path), num_threads=threads, experimental_preserve_all_tensors=True, **options
            )
        self.interpreter_.allocate_tensors()
        (inp,) = self.interpreter_.get_input_details()
        batch, height, width, channels = (int(s) for s in inp["shape"])
        if batch != 1 or channels != 3:
            raise ValueError(f"expected a 1 x H x W x 3 input, the model has {list(inp['shape'])}")
        scale, zero_point = inp["quantization"]
        # uint8 with scale 1/128 and zero point 128 means q = raw pixel value: (p - 128) / 128 in [-1, 1).
        if inp["dtype"] == np.uint8 and not (math.isclose(scale, 1 / 128) and zero_point == 128):
            raise ValueError(f"input quantisation is (scale {scale}, zero point {zero_point}), not raw pixels")
        if inp["dtype"] not in (np.uint8, np.float32):
            raise ValueError(f"input dtype {inp['dtype']} is not supported (uint8 or float32)")
        self.input_ = inp
        self.input_size_ = (height, width)

        details = {d["index"]: d for d in self.interpreter_.get_tensor_details()}
        ops = [op for op in self.interpreter_._get_ops_details() if op["op_name"] not in _SKIP_OPS]
        self.layers_: dict[str, tuple[int, tuple[int, ...], float, int]] = {}
        for op in ops:  # in execution order
            for index in op["outputs"]:
                d = details[int(index)]
                name = layer_name(d["name"])
                if name in self.layers_:
                    name = f"{name}#{int(index)}"
                q_scale, q_zero = d["quantization"] if d["dtype"] != np.float32 else (0.0, 0)
                self.layers_[name] = (int(index), tuple(int(s) for s in d["shape"][1:]), float(q_scale), int(q_zero))
        # Pre-softmax logits: the input of a final SOFTMAX if there is one, else the graph's output.
        (out,) = self.interpreter_.get_output_details()
        producer = next((op for op in ops if int(out["index"]) in op["outputs"]), None)
        logits_index = (
            int(producer["inputs"][0])
            if producer is not None and producer["op_name"] == "SOFTMAX"
            else int(out["index"])
        )
        self.logits_ = next(v for v in self.layers_.values() if v[0] == logits_index)
        self.metadata = {
            "framework": "ai-edge-litert",
            "kernels": "XNNPACK" if self.use_xnnpack else "builtin",
            "weights": path.name,
            "weights_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "weights_source": "google-coral/test_data@104342d2d3480b3e66203073dac24f4e2dbb4c41 (Apache-2.0)",
            "preprocessing": f"bilinear resize to {height}x{width}, raw 0-255 RGB",
            "logits_tensor": details[logits_index]["name"].split(";", 1)[0],
        }
        self._last: tuple[list[Stimulus], np.ndarray] | None = None

    def layers(self) -> Sequence[Output]:
        return [
            Output(name, shape, description="height x width x channels" if len(shape) == 3 else "")
            for name, (_, shape, _, _) in self.layers_.items()
        ]

    def behaviour_outputs(self) -> Sequence[Output]:
        return [Output("logits", self.logits_[1], description="pre-softmax logits; 0 = background, 1..1000 ImageNet")]

    # -- compute ---------------------------------------------------------------------------
    def _dequantise(self, raw: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
        if raw.dtype == np.float32:
            return raw
        return (raw.astype(np.float32) - zero_point) * np.float32(scale)

    def _run(self, stimuli: Sequence[Stimulus], names: Sequence[str]) -> dict[str, np.ndarray]:
        wanted = {name: self.layers_[name] for name in names}
        wanted[_LOGITS_KEY] = self.logits_
        out = {name: np.empty((len(stimuli), *shape), dtype=np.float32) for name, (_, shape, _, _) in wanted.items()}
        height, width = self.input_size_
        for i, stimulus in enumerate(stimuli):
            if stimulus.pixels is None:
                raise StimulusError(stimulus.id, "an image model needs pixels")
            image = resize(stimulus.pixels, height, width, method="bilinear")[None]
            if self.input_["dtype"] == np.float32:
                image = image.astype(np.float32) / 127.5 - 1.0
            self.interpreter_.set_tensor(self.input_["index"], image)
            self.interpreter_.invoke()
            for name, (index, _, scale, zero_point) in wanted.items():
                out[name][i] = self._dequantise(self.interpreter_.get_tensor(index)[0], scale, zero_point)
        # The SDK asks for behaviours right after activations of the same batch: keep the logits.
        self._last = (list(stimuli), out.pop(_LOGITS_KEY))
        return out

    def activations(self, stimuli: Sequence[Stimulus], layers: Sequence[str]) -> Mapping[str, np.ndarray]:
        return self._run(stimuli, layers)

    def behaviours(self, stimuli: Sequence[Stimulus], names: Sequence[str]) -> Mapping[str, np.ndarray]:
        last = self._last
        if (
            last is None
            or len(last[0]) != len(stimuli)
            or any(a is not b for a, b in zip(last[0], stimuli, strict=True))
        ):
            self._run(stimuli, [])
        logits = self._last[1]
        self._last = None
        return {"logits": logits}
