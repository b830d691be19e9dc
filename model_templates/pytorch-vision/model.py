"""An AlexNet in plain PyTorch (no torchvision) as a cortexbox model.

The network has torchvision's AlexNet layout and parameter names (``features.0.weight`` ...
``classifier.6.bias``), so a torchvision AlexNet state dict loads as it is. Without weights it is
initialised with ``torch.manual_seed(0)``: a random-weights baseline that is the same in every build.

Real weights: put a state dict (``torch.save(net.state_dict(), "alexnet.pt")``) at
``weights/alexnet.pt`` next to this file (cortexbox.toml's ``[assets]`` can copy it into the image)
or point ``$WEIGHTS_PATH`` at it. It is read with ``torch.load(weights_only=True)``, which cannot run
code from the file.

Preprocessing, as Brain-Score does for torchvision models: resize to 224 x 224 (bilinear,
antialiased), scale to 0-1, normalise with the ImageNet mean and standard deviation.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from cortexbox.sdk.environment import cpu_quota
from cortexbox.sdk import Model, Output, Stimulus, StimulusError
from torch import nn
from torch.nn import functional as F

HERE = Path(__file__).resolve().parent
DEFAULT_WEIGHTS_PATH = HERE / "weights" / "alexnet.pt"
ENV_WEIGHTS_PATH = "WEIGHTS_PATH"
IMAGE_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SEED = 0

#: The outputs exposed as layers (after each ReLU and pool): module name -> per-stimulus shape.
LAYERS: dict[str, tuple[int, ...]] = {
    "features.1": (64, 55, 55),  # conv1 + ReLU
    "features.2": (64, 27, 27),  # pool1
    "features.4": (192, 27, 27),  # conv2 + ReLU
    "features.5": (192, 13, 13),  # pool2
    "features.7": (384, 13, 13),  # conv3 + ReLU
    "features.9": (256, 13, 13),  # conv4 + ReLU
    "features.11": (256, 13, 13),  # conv5 + ReLU
    "features.12": (256, 6, 6),  # pool5
    "classifier.2": (4096,),  # fc6 + ReLU
    "classifier.5": (4096,),  # fc7 + ReLU
    "classifier.6": (1000,),  # fc8: the logits
}


class AlexNet(nn.Module):
    """Krizhevsky et al. 2012 as in torchvision (one-GPU variant): 5 conv + 3 fully connected layers."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=0.5),
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(),
            nn.Dropout(p=0.5),
            nn.Linear(4096, 4096),
            nn.ReLU(),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


class AlexNetModel(Model):
    """AlexNet with layers read by forward hooks; behaviour ``logits`` (1000 ImageNet classes)."""

    model_id = "alexnet"
    model_version = "1"
    description = (
        "AlexNet (torchvision layout) in plain PyTorch; random weights from seed 0 unless real ones are given."
    )
    visual_degrees = 8.0
    region_layers: Mapping[str, str] = {}  # the orchestrator chooses
    max_batch_size = 32

    def __init__(self, weights_path: str | Path | None = None, num_threads: int | None = None):
        self.weights_path = weights_path
        self.num_threads = num_threads

    def load(self) -> None:
        threads = self.num_threads or cpu_quota()
        torch.set_num_threads(threads)
        torch.manual_seed(SEED)
        self.net_ = AlexNet().eval()
        path = (
            self.weights_path
            or os.environ.get(ENV_WEIGHTS_PATH)
            or (DEFAULT_WEIGHTS_PATH if DEFAULT_WEIGHTS_PATH.is_file() else None)
        )
        if path is not None:
            path = Path(path)
            state = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
                state = state["state_dict"]  # a training checkpoint
            self.net_.load_state_dict(state)
            weights = {"weights": path.name, "weights_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        else:
            weights = {"weights": f"random (torch.manual_seed({SEED}), default init)"}
        modules = dict(self.net_.named_modules())
        self._captured: dict[str, torch.Tensor] = {}
        self._wanted: set[str] = set()
        for name in LAYERS:
            modules[name].register_forward_hook(self._hook(name))
        self._mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        self._last: tuple[list[Stimulus], np.ndarray] | None = None
        self.metadata = {"framework": f"torch {torch.__version__}", "threads": str(threads), **weights}

    def _hook(self, name: str):
        def hook(module: nn.Module, inputs, output: torch.Tensor) -> None:
            if name in self._wanted:
                self._captured[name] = output.detach()

        return hook

    def layers(self) -> Sequence[Output]:
        return [Output(name, shape) for name, shape in LAYERS.items()]

    def behaviour_outputs(self) -> Sequence[Output]:
        return [Output("logits", (1000,), description="pre-softmax ImageNet logits (classifier.6)")]

    def preprocess(self, stimuli: Sequence[Stimulus]) -> torch.Tensor:
        """N x 3 x 224 x 224 float32: resized (bilinear, antialiased), 0-1, ImageNet-normalised."""
        batch = []
        for stimulus in stimuli:
            if stimulus.pixels is None:
                raise StimulusError(stimulus.id, "an image model needs pixels")
            image = torch.from_numpy(np.array(stimulus.pixels, dtype=np.float32, copy=True)).permute(2, 0, 1)[None]
            if image.shape[-2:] != (IMAGE_SIZE, IMAGE_SIZE):
                image = F.interpolate(
                    image, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", antialias=True, align_corners=False
                )
            batch.append(image)
        images = torch.cat(batch).div_(255.0)
        return (images - self._mean) / self._std

    def _forward(self, stimuli: Sequence[Stimulus], layers: Sequence[str]) -> dict[str, np.ndarray]:
        self._wanted = set(layers)
        self._captured = {}
        try:
            with torch.inference_mode():
                logits = self.net_(self.preprocess(stimuli))
            out = {name: self._captured[name].numpy() for name in layers}
        finally:
            self._wanted, self._captured = set(), {}
        self._last = (list(stimuli), logits.numpy())
        return out

    def activations(self, stimuli: Sequence[Stimulus], layers: Sequence[str]) -> Mapping[str, np.ndarray]:
        return self._forward(stimuli, layers)

    def behaviours(self, stimuli: Sequence[Stimulus], names: Sequence[str]) -> Mapping[str, np.ndarray]:
        last = self._last
        # The SDK asks for behaviours right after activations of the same batch: reuse that pass.
        if (
            last is None
            or len(last[0]) != len(stimuli)
            or any(a is not b for a, b in zip(last[0], stimuli, strict=True))
        ):
            self._forward(stimuli, [])
        logits = self._last[1]
        self._last = None
        return {"logits": logits}
