"""A Brain-Score vision model plugin served as a cortexbox model (filled in by ``cortexbox import brainscore``).

The plugin runs as Brain-Score runs it: its folder lies at ``brainscore_vision/models/<dir>`` of an installed
brainscore-vision (installed with ``--no-deps``; see the Dockerfile), its ``__init__`` registers the model, and
the registry entry builds a ``ModelCommitment``. From that commitment this adapter takes

* the layers (``commitment.layers``: what Brain-Score's layer selection chooses among),
* ``visual_degrees()``, which the orchestrator places the stimuli at (as Brain-Score's benchmarks do),
* the region-layer commitment, when the plugin makes one (a ``region_layer_map`` argument or its
  ``region_layer_map/<id>.json``); a map Brain-Score would fill by its own layer selection is left to ours,
* the activations model's ``ActivationsExtractorHelper``: each batch of stimuli is written as lossless PNG files
  and goes through the extractor's own batching (``_get_activations_batched``: padding to its batch size, the
  plugin's preprocessing from the file paths, its ``get_activations``, its batch hooks), so the numbers are the ones
  ``activations_model(paths, layers)`` computes, before Brain-Score flattens each layer into neuroids.

Seeds: Python's, numpy's and torch's generators are seeded with ``brainscore_plugin.json``'s ``seed`` before the
registry entry runs, so a randomly initialised plugin is the same network in every container (Brain-Score leaves
it unseeded). Nothing here reaches the network: result caching is off and Brain-Score's plugin installer too.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import os
import random
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

import bs_shims
from cortexbox.sdk import Model, Output, Stimulus, StimulusError
from cortexbox.sdk.environment import cpu_quota

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "brainscore_plugin.json"
#: Brain-Score's region names; a committed map may name others, which are not ours to score.
REGIONS = ("V1", "V2", "V4", "IT")
#: The probe that learns each layer's shape at load: seeded noise, 256 x 256 (most preprocessing resizes anyway).
PROBE_SHAPE = (256, 256, 3)

logger = logging.getLogger(__name__)


def _quiet_environment() -> None:
    """No writes outside /tmp, no pip, no progress bars in the container log."""
    os.environ.setdefault("RESULTCACHING_DISABLE", "1")
    os.environ.setdefault("RESULTCACHING_HOME", "/tmp/result_caching")
    os.environ["BS_INSTALL_DEPENDENCIES"] = "no"
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("MPLCONFIGDIR", "/tmp/matplotlib")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    if "torch" in sys.modules or importlib.util.find_spec("torch") is not None:
        import torch

        torch.manual_seed(seed)


def load_commitment(identifier: str, plugin_dir: str, seed: int):
    """Imports ``brainscore_vision.models.<plugin_dir>`` and calls its registry entry for `identifier` (shims
    first, then seeds); returns the ``ModelCommitment``. Shared with the parity reference, which runs it in-process."""
    bs_shims.install_cv2_stub()
    bs_shims.declare_torchvision_ops()
    import brainscore_vision

    importlib.import_module(f"brainscore_vision.models.{plugin_dir}")
    if identifier not in brainscore_vision.model_registry:
        raise RuntimeError(f"plugin {plugin_dir!r} registers no model {identifier!r} "
                           f"(it registers {sorted(brainscore_vision.model_registry)})")
    seed_everything(seed)
    commitment = brainscore_vision.model_registry[identifier]()
    for attribute in ("activations_model", "layers", "visual_degrees"):
        if not hasattr(commitment, attribute):
            raise RuntimeError(f"model {identifier!r} is a {type(commitment).__name__}, not a ModelCommitment "
                               f"(it has no {attribute}); only activations-model plugins can be served")
    return commitment


def committed_regions(commitment, layers: Sequence[str]) -> dict[str, str]:
    """The plugin's own region -> layer map (plain dict), limited to Brain-Score's regions and single layers it
    exposes; {} when Brain-Score would select layers itself (its lazy ``RegionLayerMap``)."""
    layer_model = getattr(commitment, "layer_model", None)
    mapping = getattr(layer_model, "region_layer_map", None)
    if not isinstance(mapping, dict) or type(mapping).__name__ == "RegionLayerMap":
        return {}
    return {region: layer for region, layer in dict.items(mapping)
            if region in REGIONS and isinstance(layer, str) and layer in layers}


class BrainScorePlugin(Model):
    """One Brain-Score model plugin (which one: ``brainscore_plugin.json``)."""

    model_id = "brainscore-plugin"
    model_version = "0"
    description = "A Brain-Score vision model plugin"
    visual_degrees = 8.0
    region_layers: Mapping[str, str] = {}
    max_batch_size = 64

    def __init__(self, config: str | Path = CONFIG):
        self.config = json.loads(Path(config).read_text())
        self.model_id = f"brainscore-{self.config['identifier']}"
        self.model_version = self.config["brainscore_vision"]

    def load(self) -> None:
        _quiet_environment()
        cfg = self.config
        commitment = load_commitment(cfg["identifier"], cfg["plugin_dir"], int(cfg["seed"]))
        if "torch" in sys.modules:
            import torch

            torch.set_num_threads(cpu_quota())
        self.extractor_ = commitment.activations_model._extractor
        self.layer_names_ = [str(layer) for layer in commitment.layers]
        self.visual_degrees = float(commitment.visual_degrees())
        self.region_layers = committed_regions(commitment, self.layer_names_)
        self.commitment_layers = list(self.layer_names_)
        self.max_batch_size = int(getattr(self.extractor_, "_batch_size", 64))
        probe = np.random.RandomState(0).randint(0, 256, PROBE_SHAPE, dtype=np.uint8)
        outputs = self._extract([probe], self.layer_names_, batch_size=1)
        self.outputs_ = {name: Output(name, values.shape[1:], _dtype(values)) for name, values in outputs.items()}
        self.description = f"Brain-Score plugin {cfg['identifier']} (brainscore-vision {cfg['brainscore_vision']})"
        self.metadata = {
            "framework": f"brainscore-vision {cfg['brainscore_vision']}",
            "brainscore_identifier": cfg["identifier"],
            "brainscore_plugin": cfg["plugin_dir"],
            "plugin_sha256": cfg.get("plugin_sha256", ""),
            "seed": str(cfg["seed"]),
            "preprocessing": "the plugin's own, from PNG files of the placed stimuli",
        }

    def layers(self) -> Sequence[Output]:
        return [self.outputs_[name] for name in self.layer_names_]

    def _extract(self, images: Sequence[np.ndarray], layers: Sequence[str], batch_size: int) -> dict[str, np.ndarray]:
        with tempfile.TemporaryDirectory(prefix="stimuli-") as folder:
            paths = []
            for i, pixels in enumerate(images):
                path = os.path.join(folder, f"{i:06d}.png")
                Image.fromarray(pixels).save(path)  # lossless: the plugin reads exactly these pixels
                paths.append(path)
            out = self.extractor_._get_activations_batched(paths, layers=list(layers), batch_size=batch_size,
                                                           require_variance=False)
        return {name: np.asarray(out[name]) for name in layers}

    def activations(self, stimuli: Sequence[Stimulus], layers: Sequence[str]) -> Mapping[str, np.ndarray]:
        images = []
        for stimulus in stimuli:
            if stimulus.pixels is None:
                raise StimulusError(stimulus.id, "an image model needs pixels")
            images.append(np.ascontiguousarray(stimulus.pixels, dtype=np.uint8))
        out = self._extract(images, layers, batch_size=self.max_batch_size)
        result = {}
        for name in layers:
            spec, values = self.outputs_[name], out[name]
            if values.shape != (len(stimuli), *spec.shape):
                raise RuntimeError(f"layer {name!r} gave shape {values.shape[1:]} for these stimuli, not the "
                                   f"{spec.shape} it gave at load; this plugin's layers depend on the image size")
            result[name] = values.astype(spec.dtype, copy=False)
        return result


def _dtype(values: np.ndarray) -> str:
    """float64 stays float64 (no rounding on the way out); everything else (uint8 pixels, float16) is float32."""
    return "float64" if values.dtype == np.float64 else "float32"

