"""A model that misbehaves on purpose, to test the orchestrator's sandbox and diagnosis.

The behaviour is read from the file MODE next to this one, which each test writes before
building its image, so every misbehaviour is a real image run in a real container.
"""

import os
import pathlib
import time

import numpy as np

from cortexbox.sdk import Model, Output

MODE = (pathlib.Path(__file__).parent / "MODE").read_text().strip()


class Hostile(Model):
    model_id = f"hostile-{MODE}"
    max_batch_size = 4

    def load(self):
        if MODE == "crash_on_load":
            raise RuntimeError("weights are corrupt (on purpose)")

    def layers(self):
        return [Output("features", (16,))]

    def activations(self, stimuli, layers):
        if MODE == "crash_mid_run" and any(s.id.endswith("5") for s in stimuli):
            os._exit(7)
        if MODE == "oom":
            hog = []
            while True:  # allocate and touch memory until the kernel stops us
                hog.append(np.ones(64 * 1024 * 1024, dtype=np.uint8))
        if MODE == "hang":
            time.sleep(3600)
        if MODE == "slow":
            time.sleep(0.5)
        values = np.stack([s.pixels[:4, :4, 0].reshape(-1).astype(np.float32) for s in stimuli])
        if MODE == "nan":
            values[0, 0] = np.nan
        return {"features": values}
