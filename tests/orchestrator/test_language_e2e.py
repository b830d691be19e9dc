"""Language scoring end to end through real containers, on subsets that keep CI short: the unigram image on one
Natural Stories story and one SyntaxGym suite (stored, cached, equal to the in-process model), the spillover ΔLL on two
stories (no ceiling, per-word values stored), and an image model refused on a text benchmark. Full-size numbers come
from perf/language_scores.py."""

from __future__ import annotations

import importlib.util

import pytest

from cortexbox.benchmarks import neuroid_assembly, registry
from cortexbox.benchmarks.futrell2018 import Futrell2018Pearsonr
from cortexbox.benchmarks.reading_times import Futrell2018SpilloverDLL
from cortexbox.benchmarks.syntaxgym import SyntaxGymSuite
from cortexbox.orchestrator.errors import FailureClass, ModelFailure
from cortexbox.orchestrator.scoring import ScoreRequest, score_model
from tests.conftest import REPO

pytestmark = pytest.mark.docker

STORY = "Futrell2018-pearsonr[stories=1]"
SUITE = "syntaxgym-number_prep[items<=8]"
DLL = "Futrell2018-spillover_dll[stories=1,2]"


@pytest.fixture
def subsets(monkeypatch):
    monkeypatch.setitem(registry.BENCHMARKS, STORY, lambda **kw: Futrell2018Pearsonr(stories=[1], **kw))
    monkeypatch.setitem(registry.BENCHMARKS, SUITE, lambda **kw: SyntaxGymSuite("number_prep", max_items=8, **kw))
    monkeypatch.setitem(registry.BENCHMARKS, DLL, lambda **kw: Futrell2018SpilloverDLL(stories=[1, 2], **kw))


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


def test_unigram_spillover_dll_through_its_container(template_image, subsets, tmp_path):
    """Unceiled ΔLL in nats per word, stored with its per-word items (for paired comparisons); a frequency model adds
    little beyond the length/frequency baseline."""
    from cortexbox.benchmarks.metrics.items import ItemValues
    from cortexbox.registry import Registry

    url = f"sqlite:///{tmp_path / 'r.db'}"
    out = score_model(ScoreRequest(benchmark=DLL, image=template_image("unigram"), database_url=url))
    assert out.layer == "surprisal" and out.ceiling is None and out.ceiled is None and -0.02 < out.raw < 0.05
    metric = out.provenance["metric"]
    assert metric["unit"] == "nats per word" and metric["folds"]["folds"] == ["1", "2"] and metric["n_words"] > 1500
    assert metric["bootstrap"]["raw"]["low"] <= out.raw <= metric["bootstrap"]["raw"]["high"]
    assert "item_values" not in metric and "item_ids" not in metric  # stored once, compressed, in score_items
    reg = Registry(url)
    [score] = [s for s, _, b in reg.scores() if b.identifier == DLL]
    stored = reg.score_items([score.id])[score.id]
    items = ItemValues.from_bytes(stored.kind, stored.payload)
    assert items.kind == "mean" and items.n_items == metric["n_words"] and items.ids[0] == "1:4"
    assert items.estimate() == pytest.approx(out.raw, abs=1e-6)


def test_an_image_model_is_refused_on_a_text_benchmark(template_image, subsets):
    with pytest.raises(ModelFailure) as caught:
        score_model(ScoreRequest(benchmark=STORY, image=template_image("pixels")))
    assert caught.value.failure == FailureClass.REJECTED and "needs a text model" in caught.value.message
