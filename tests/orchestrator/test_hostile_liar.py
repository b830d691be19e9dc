"""Lying metadata (threat T10): a model's declared layers, region commitments, visual degrees and behaviours are
claims, checked on public stimuli before it is scored (orchestrator/conformance.py). Each liar of the hostile image
commits IT to a layer that works, so before the check it scored Kriegeskorte2008.hIT-rdm like an honest model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from cortexbox.orchestrator import conformance
from cortexbox.orchestrator.client import validate_model_info
from cortexbox.orchestrator.errors import FailureClass, ModelFailure
from cortexbox.orchestrator.runtime import ContainerSession, SandboxLimits, scope_filter
from cortexbox.orchestrator.scoring import ScoreRequest, score_model
from cortexbox.registry import Registry
from cortexbox.sdk import Model, Output
from cortexbox.sdk.server import ModelServicer

BENCHMARK = "Kriegeskorte2008.hIT-rdm"
LIMITS = SandboxLimits(memory_bytes=512 * 1024**2)

#: mode -> what the one line must say (the lie, named)
LIES = {
    "liar_region": ["layer 'v4' (committed to V4)", "fails on public stimuli", "no V4 in this model"],
    "liar_degrees": ["visual_degrees 200", "outside 1-60 degrees"],
    "liar_shape": ["layer 'pooled'", "fails on public stimuli", "shape"],
    "liar_labels": ["behaviour 'logits' has 10 classes", "1000 ImageNet classes"],
}


@pytest.fixture
def containers(docker_client):
    yield docker_client
    left = docker_client.containers.list(all=True, filters=scope_filter())
    assert not left, f"containers left behind: {[c.name for c in left]}"


def _description(**attributes):
    """A validated description of an SDK model with `attributes` over a one-layer image model's."""
    body = {"model_id": "m", "max_context_tokens": 64, "layers": lambda self: [Output("features", (16,))], **attributes}
    servicer = ModelServicer(type("M", (Model,), body)(), shared_memory=False)
    servicer.load()
    return validate_model_info(servicer.GetModelInfo(None, None))


# -- without containers -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("degrees, ok", [(8.0, True), (1.0, True), (60.0, True), (0.5, False), (200.0, False)])
def test_visual_degrees_must_be_an_eyes_span(degrees, ok):
    description = _description(visual_degrees=degrees)
    if ok:
        conformance.check_claims(description)
    else:
        with pytest.raises(ModelFailure, match="outside 1-60 degrees") as caught:
            conformance.check_claims(description)
        assert caught.value.failure == FailureClass.NONCONFORMANT


def test_behaviours_are_declared_in_their_label_spaces():
    for width in (1000, 1001):
        conformance.check_claims(_description(behaviour_outputs=lambda self, w=width: [Output("logits", (w,))]))
    with pytest.raises(ModelFailure, match="'logits' has 16 classes"):
        conformance.check_claims(_description(behaviour_outputs=lambda self: [Output("logits", (16,))]))
    with pytest.raises(ModelFailure, match="'surprisal' must be one value per part of a text model"):
        conformance.check_claims(_description(behaviour_outputs=lambda self: [Output("surprisal", (1,))]))
    text = _description(modality="text", behaviour_outputs=lambda self: [Output("surprisal", (1,))])
    conformance.check_labels(text, {"surprisal": np.array([[0.0], [3.5]], np.float32)})
    with pytest.raises(ModelFailure, match="never negative"):
        conformance.check_labels(text, {"surprisal": np.array([[1.0], [-0.5]], np.float32)})
    with pytest.raises(ModelFailure, match="empty word"):
        conformance.check_labels(text, {"next_word": np.array([["the"], [" "]], dtype=object)})


def test_the_public_stimuli_are_fixed_distinct_and_placed_at_the_models_degrees():
    first, again = conformance.public_images(), conformance.public_images()
    assert first == again and len(set(first.values())) == conformance.N_IMAGES
    placed = conformance.public_stimuli(_description(visual_degrees=8.0))
    assert [sid for sid, _ in placed] == list(first) and all(p.dtype == np.uint8 and p.shape[2] == 3 for _, p in placed)
    wider = conformance.public_stimuli(_description(visual_degrees=16.0))  # the image fills half the span
    assert not np.array_equal(wider[0][1], placed[0][1])
    text = conformance.public_stimuli(_description(modality="text", visual_degrees=0.0,
                                                   behaviour_outputs=lambda self: [Output("surprisal", (1,))]))
    assert {context for _, _, context in text} == {"c0", "c1"} and all(word.strip() for _, word, _ in text)


def test_outputs_are_checked_in_runs_of_bounded_size():
    """A conformance run holds at most GROUP_BYTES of results: small outputs share a run, big ones get their own."""
    from cortexbox.orchestrator.budgets import WireBudgets

    big = 6 * 1024**2  # features: 6 stimuli x 4 bytes x 6 Mi = 144 MiB held
    description = _description(layers=lambda self: [Output("a", (16,)), Output("big1", (big,)), Output("b", (3, 4)),
                                                     Output("big2", (big,))])
    groups = conformance._groups(description, ["a", "big1", "b", "big2"], 6, WireBudgets())
    assert groups == [["a", "big1", "b"], ["big2"]]


# -- real containers ----------------------------------------------------------------------------------------------
@pytest.mark.docker
@pytest.mark.parametrize("mode", list(LIES))
def test_a_liar_is_refused_before_it_is_scored(containers, hostile_image, mode, data_dir):
    """Before the conformance run each of these scored hIT (IT's layer works); now the run fails as nonconformant
    with one line naming the lie, no score and no model row are stored, and nothing is left."""
    image = hostile_image(mode)
    t0 = time.monotonic()
    with pytest.raises(ModelFailure) as caught:
        score_model(ScoreRequest(benchmark=BENCHMARK, image=image, limits=LIMITS))
    seconds = time.monotonic() - t0
    failure = caught.value
    assert failure.failure == FailureClass.NONCONFORMANT, f"{failure.failure.value}: {failure.message}"
    assert "\n" not in failure.message and all(words in failure.message for words in LIES[mode]), failure.message
    registry = Registry()
    (run,) = registry.runs()
    assert (run.status, run.failure_class) == ("failed", "nonconformant") and run.error == failure.message[:4000]
    assert registry.models() == [] and list(registry.scores()) == []
    assert seconds < 60, seconds
    print(f"{mode}: nonconformant in {seconds:.1f} s: {failure.message[:160]}")


@pytest.mark.docker
def test_the_cli_says_what_the_liar_lied_about_in_one_line(containers, hostile_image, tmp_path):
    done = subprocess.run([sys.executable, "-m", "cortexbox.orchestrator.cli", "models", "check", hostile_image("liar_region")],
                          capture_output=True, text=True, timeout=180, env={**os.environ, "CORTEXBOX_SANDBOX": "memory_bytes=512m"})
    ours = done.stderr.partition("--- last lines of the model's log ---")[0]  # the model's own traceback may follow
    assert done.returncode == 1 and "Traceback" not in ours, done.stderr
    first = ours.strip().splitlines()[0]
    print(first)
    assert first.startswith("model failed (nonconformant): layer 'v4' (committed to V4) is declared but fails"), first


@pytest.mark.docker
@pytest.mark.parametrize("template", ["pixels", "pytorch-vision", "tflite-mobilenet", "unigram"])
def test_honest_templates_conform(containers, template_image, template):
    """The templates (an image model, a network of many layers, a text model with string behaviours) pass."""
    image = template_image(template)
    with ContainerSession(containers, image, limits=SandboxLimits(memory_bytes=2 * 1024**3)) as session:
        record = conformance.check(session)
        declared = len(session.description.outputs)
    assert record["passed"] and record["version"] == conformance.VERSION and record["outputs"] == declared
    print(f"{template}: {json.dumps(record)}")


@pytest.mark.docker
def test_a_broken_model_keeps_its_own_class(containers, hostile_image):
    """nan breaks its only output: bad_output, as the scoring run would say; a broken model is not a liar."""
    with ContainerSession(containers, hostile_image("nan"), limits=LIMITS) as session:
        with pytest.raises(ModelFailure) as caught:
            conformance.check(session)
    assert caught.value.failure == FailureClass.BAD_OUTPUT


@pytest.mark.docker
def test_a_model_is_checked_once_per_image(containers, template_image, data_dir):
    """The record is stored with the model; the next score of the same image (cache or not) does not check again."""
    stages = []
    events = lambda event, data: stages.append(data.get("text", "")) if event == "stage" else None  # noqa: E731
    image = template_image("pixels")
    outcome = score_model(ScoreRequest(benchmark=BENCHMARK, image=image), events=events)
    (model,) = Registry().models()
    assert conformance.passed(model.info) and model.info["conformance"]["stimuli"] == conformance.N_IMAGES
    assert sum("checking the model's metadata" in s for s in stages) == 1
    again = score_model(ScoreRequest(benchmark=BENCHMARK, image=image, use_cache=False), events=events)
    assert sum("checking the model's metadata" in s for s in stages) == 1 and again.raw == outcome.raw
