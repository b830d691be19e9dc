"""Two benchmarks that show the same images: the second one is assembled from the first one's rows and sends
no stimulus to the model (the pixels template, on Kriegeskorte 2008's 92 images that hIT and the judgements both
show at 2.9 degrees; mIT shows them at the monkeys' 7 degrees, other pixels, so other rows)."""

from __future__ import annotations

import pytest

from cortexbox.orchestrator.scoring import ScoreRequest, score_model

pytestmark = pytest.mark.docker


def _score(benchmark, image, **kwargs):
    events = []
    outcome = score_model(ScoreRequest(benchmark=benchmark, image=image, **kwargs), events=lambda e, d: events.append((e, d)))
    return outcome, [d for e, d in events if e == "cache"]


def test_a_benchmark_sharing_images_sends_none_of_them_again(template_image, _isolated_home):
    image = template_image("pixels")
    first, first_events = _score("Kriegeskorte2008.hIT-rdm", image)
    assert not first.from_cache
    assert first.provenance["activation_cache"] == {"stimuli": 92, "sent": 92}
    assert sum(e["sent"] for e in first_events) == 92

    second, second_events = _score("Kriegeskorte2008.judgements-rdm", image)
    assert second.provenance["activation_cache"] == {"stimuli": 92, "sent": 0}
    assert [e["sent"] for e in second_events] == [0] and second_events[0]["cached"] == 92
    assert second.from_cache and "start_s" not in second.timings  # no container was started

    # the same images at another size are other pixels: a cache hit there would be a wrong one
    other, _ = _score("Kriegeskorte2008.mIT-rdm", image)
    assert other.provenance["activation_cache"] == {"stimuli": 92, "sent": 92}

    # the same numbers as computing everything afresh
    fresh, fresh_events = _score("Kriegeskorte2008.judgements-rdm", image, use_cache=False)
    assert sum(e["sent"] for e in fresh_events) == 92 and not fresh.from_cache
    assert (fresh.raw, fresh.error, fresh.ceiled) == (second.raw, second.error, second.ceiled)


def test_a_run_over_the_cache_budget_succeeds_with_the_same_score(template_image, _isolated_home, monkeypatch):
    """The issue's done-when: a scoring run that takes the cache over its cap, and evicts during the run,
    succeeds with the score of a run without the cache. Half of the benchmark's rows are cached; the other half
    (36 MB) is sent, stored and read back under a 1 MiB cap while the cached half is being read."""
    import json

    import numpy as np

    from cortexbox.orchestrator.cache import ActivationCache

    image = template_image("pixels")
    reference, _ = _score("Kriegeskorte2008.mIT-rdm", image, use_cache=False)  # stores all 92 rows
    cache = ActivationCache()
    (folder,) = [p for p in (cache.root / "rows").iterdir()]
    (meta,) = [p for p in folder.glob("*.json") if p.name != "about.json"]
    keys = json.loads(meta.read_text())["keys"]
    index = cache.index(reference.digest, "pixels")
    rows = cache.gather(index, keys)
    index.close()
    assert cache.prune(0).total_bytes == 0
    cache.put(reference.digest, "pixels", keys[:46], rows[:46])  # half of them cached
    cache.put("sha256:" + "0" * 64, "unrelated", ["x"], np.ones((1, 1000), np.float32))  # used least recently
    cache.close()
    del rows

    monkeypatch.setenv("CORTEXBOX_CACHE_MAX_BYTES", "1m")
    outcome, events = _score("Kriegeskorte2008.mIT-rdm", image)
    assert [(e["cached"], e["sent"]) for e in events] == [(46, 46)]  # each stimulus sent once, no retry
    assert outcome.raw == reference.raw and outcome.ceiled == reference.ceiled and outcome.layer == reference.layer
    capped = ActivationCache()
    assert capped.max_bytes() == 2**20
    # the put crossed the cap and evicted what no run held; the run's own rows were kept while it read them
    left = capped.report()["outputs"]
    assert [(o["output"], o["shards"]) for o in left] == [("pixels", 2)]
    assert capped.usage().total_bytes > 2**20
    assert capped.prune().total_bytes <= 2**20  # nothing holds them now
