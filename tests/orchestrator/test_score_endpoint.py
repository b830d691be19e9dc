"""`cortexbox score --endpoint`: the whole scoring path against a model server an author runs
by hand (here: in this process), with no Docker. The real Cowley recordings are scored."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from cortexbox.sdk import Model, Output, serve
from tests.orchestrator.test_cli import cortexbox


class TwoLayers(Model):
    """A downsampled-pixels layer that carries signal, and a layer of pure noise."""

    model_id = "two-layers"
    model_version = "1"
    max_batch_size = 16

    def layers(self):
        return [Output("noise", (64,)), Output("pixels", (28 * 28,))]

    def activations(self, stimuli, layers):
        out = {}
        if "pixels" in layers:
            out["pixels"] = np.stack([_grey_28(s.pixels) for s in stimuli])
        if "noise" in layers:
            out["noise"] = np.stack(
                [np.random.default_rng(int(hashlib.sha256(s.pixels.tobytes()).hexdigest()[:8], 16)).normal(size=64) for s in stimuli]
            ).astype(np.float32)
        return out


def _grey_28(pixels: np.ndarray) -> np.ndarray:
    h, w, _ = pixels.shape
    grey = pixels.mean(axis=2)
    rows = (np.arange(28) * h // 28)
    cols = (np.arange(28) * w // 28)
    return grey[np.ix_(rows, cols)].reshape(-1).astype(np.float32) / 255.0


@pytest.fixture
def endpoint(tmp_path):
    address = f"unix://{tmp_path}/model.sock"
    server, _ = serve(TwoLayers(), address, block=False)
    yield address
    server.stop(0)


def test_score_an_endpoint_end_to_end(endpoint):
    result = cortexbox("score", "--endpoint", endpoint, "--benchmark", "Cowley2023.V4-pls", "--json", timeout=300)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["model"] == "two-layers"
    assert outcome["digest"] == "endpoint:two-layers@1"
    # the noise layer must lose the layer selection, which ran on other images than the scored ones
    assert outcome["layer"] == "pixels"
    scores = outcome["provenance"]["layer_commitment"]["layer_scores"]
    assert scores["pixels"] > scores["noise"] + 0.05
    assert 0.05 < outcome["raw"] < 0.8
    assert outcome["ceiling"] == pytest.approx(0.7595, abs=0.001)
    assert outcome["ceiled"] == pytest.approx(outcome["raw"] ** 2 / outcome["ceiling"])
    prov = outcome["provenance"]
    for key in ("data_hash", "stimulus_set_hash", "code_version", "placement", "metric", "sdk_version"):
        assert prov[key], key
    assert prov["metric"]["random_state"] == 1
    assert not outcome["from_cache"]

    again = json.loads(cortexbox("score", "--endpoint", endpoint, "--benchmark", "Cowley2023.V4-pls", "--json", timeout=300).stdout)
    assert not again["from_cache"]  # an endpoint's code may change under the same name
    assert again["raw"] == outcome["raw"]  # and the score reproduces exactly

    page = json.loads(cortexbox("leaderboard", "--benchmark", "Cowley2023.V4-pls", "--json").stdout)
    assert [(r["model"], r["rank"]) for r in page["scores"]] == [("two-layers", 1)]
