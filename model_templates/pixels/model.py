"""Brain-Score's `pixels` baseline as a cortexbox model: the image itself, resized, is the only layer.

Brain-Score (brain-score/vision, models/pixels) converts each stimulus to RGB, resizes it to
256 x 256 with Pillow's default filter (bicubic, antialiased when shrinking) and reports the
raw 0-255 values of the H x W x 3 array; every region is committed to that one layer. This model
does the same with numpy alone: `resize` reproduces Pillow's fixed-point resampling (identical
output to Pillow <= 12; Pillow 13 sometimes runs the vertical pass first, which moves a few
pixel values by a few levels when both sides change size).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from cortexbox.sdk.imaging import resize
from cortexbox.sdk import Model, Output, Stimulus, StimulusError

#: Brain-Score's size for this baseline.
IMAGE_SIZE = 256

class PixelsModel(Model):
    """The stimulus resized to 256 x 256 x 3, as float32 values 0-255 (Brain-Score's `pixels`)."""

    model_id = "pixels"
    model_version = "1"
    description = "Baseline: the RGB image resized to 256x256 (bicubic), raw 0-255 values, as Brain-Score's `pixels`."
    visual_degrees = 8.0
    # As Brain-Score's region_layer_map/pixels.json: there is only one layer.
    region_layers = {"V1": "pixels", "V2": "pixels", "V4": "pixels", "IT": "pixels"}
    max_batch_size = 64
    metadata = {"framework": "numpy", "weights": "none", "reference": "brain-score/vision models/pixels"}

    def layers(self) -> Sequence[Output]:
        return [Output("pixels", (IMAGE_SIZE, IMAGE_SIZE, 3), description="height x width x RGB, values 0-255")]

    def activations(self, stimuli: Sequence[Stimulus], layers: Sequence[str]) -> Mapping[str, np.ndarray]:
        out = np.empty((len(stimuli), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.float32)
        for i, stimulus in enumerate(stimuli):
            if stimulus.pixels is None:
                raise StimulusError(stimulus.id, "an image model needs pixels")
            out[i] = resize(stimulus.pixels, IMAGE_SIZE, IMAGE_SIZE)
        return {"pixels": out}
