"""Two benchmarks that show the same images: the second one is assembled from the first one's rows and sends
no stimulus to the model (the pixels template, on Kriegeskorte 2008's 92 images shared by hIT and mIT)."""

from __future__ import annotations

import pytest

from cortexbox.orchestrator.jobs import ScoreRequest, score_model

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

    second, second_events = _score("Kriegeskorte2008.mIT-rdm", image)
    assert second.provenance["activation_cache"] == {"stimuli": 92, "sent": 0}
    assert [e["sent"] for e in second_events] == [0] and second_events[0]["cached"] == 92
    assert second.from_cache and "start_s" not in second.timings  # no container was started

    # the same numbers as computing everything afresh
    fresh, fresh_events = _score("Kriegeskorte2008.mIT-rdm", image, use_cache=False)
    assert sum(e["sent"] for e in fresh_events) == 92 and not fresh.from_cache
    assert (fresh.raw, fresh.error, fresh.ceiled) == (second.raw, second.error, second.ceiled)
