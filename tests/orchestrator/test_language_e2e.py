"""Language scoring end to end through real containers, on subsets that keep CI short: the unigram image on one
Natural Stories story and one SyntaxGym suite (stored, cached, equal to the in-process model), and an image model
refused on a text benchmark. Full-size numbers come from perf/language_scores.py."""

from __future__ import annotations

import importlib.util

import pytest

from cortexbox.benchmarks import neuroid_assembly, registry
from cortexbox.benchmarks.futrell2018 import Futrell2018Pearsonr
from cortexbox.benchmarks.syntaxgym import SyntaxGymSuite
from cortexbox.orchestrator.errors import FailureClass, ModelFailure
from cortexbox.orchestrator.scoring import ScoreRequest, score_model
from tests.conftest import REPO

pytestmark = pytest.mark.docker

STORY = "Futrell2018-pearsonr[stories=1]"
SUITE = "syntaxgym-number_prep[items<=8]"


@pytest.fixture
def subsets(monkeypatch):
    monkeypatch.setitem(registry.BENCHMARKS, STORY, lambda **kw: Futrell2018Pearsonr(stories=[1], **kw))
    monkeypatch.setitem(registry.BENCHMARKS, SUITE, lambda **kw: SyntaxGymSuite("number_prep", max_items=8, **kw))


def test_unigram_is_scored_through_its_container_as_in_process(template_image, subsets):
    tag = template_image("unigram")
    first = score_model(ScoreRequest(benchmark=STORY, image=tag))
    assert first.layer == "surprisal" and not first.from_cache
    assert 0.1 < first.raw < 0.5 and first.ceiling == pytest.approx(registry.get_benchmark(STORY).ceiling.raw)
    again = score_model(ScoreRequest(benchmark=STORY, image=tag))
    assert again.from_cache and again.raw == first.raw
    if importlib.util.find_spec("wordfreq") is not None:
        spec = importlib.util.spec_from_file_location("unigram_model", REPO / "model_templates" / "unigram" / "model.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        model = module.Unigram()
        model.load()
        bench = registry.get_benchmark(STORY)
        values = [[model.surprisal(text)] for _, text, _ in bench.stimulus_set.iter_text()]
        local = bench.score(neuroid_assembly(__import__("numpy").array(values, "float32"), bench.stimulus_set.stimulus_ids, layer="s"))
        assert local.raw == pytest.approx(first.raw, abs=1e-6)
    suite = score_model(ScoreRequest(benchmark=SUITE, image=tag))
    assert 0.0 <= suite.raw <= 1.0 and suite.ceiling is None


def test_an_image_model_is_refused_on_a_text_benchmark(template_image, subsets):
    with pytest.raises(ModelFailure) as caught:
        score_model(ScoreRequest(benchmark=STORY, image=template_image("pixels")))
    assert caught.value.failure == FailureClass.REJECTED and "needs a text model" in caught.value.message
