"""The web app and its JSON API over a seeded registry (FastAPI's TestClient; no server, no browser)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from cortexbox.orchestrator.scoring import ScoreOutcome
from cortexbox.registry import Registry
from cortexbox.sdk import Model, Output


def _values(rng, mean: float, sd: float = 0.01) -> list[float]:
    return [float(v) for v in rng.normal(mean, sd, 10)]


def seed_registry(url: str) -> dict:
    """Three models on V4 (two versions of one benchmark), IT and a behaviour benchmark; a clipped score, a
    failed run with a log tail, a layer selection curve."""
    reg = Registry(url)
    rng = np.random.default_rng(0)
    metric = {"normalization": "r2_over_ceiling", "train_size": 0.9, "random_state": 1}
    b_v4_old = reg.upsert_benchmark("Alpha2020.V4-pls", 1, "a" * 64, region="V4", ceiling=0.8, ceiling_error=0.01)
    b_v4 = reg.upsert_benchmark("Alpha2020.V4-pls", 2, "b" * 64, region="V4", ceiling=0.8, ceiling_error=0.01,
                                description="Alpha's V4 recordings", citation="Alpha et al. 2020")
    b_it = reg.upsert_benchmark("Beta2021.IT-pls", 1, "c" * 64, region="IT", ceiling=0.5, ceiling_error=0.02)
    b_beh = reg.upsert_benchmark("Gamma2022.i2n", 1, "d" * 64, region="", ceiling=None)
    ids = {}
    for name, digest in (("goodnet", "sha256:" + "1" * 64), ("okaynet", "sha256:" + "2" * 64), ("pixels", "sha256:" + "3" * 64)):
        ids[name] = reg.upsert_model(digest, name, "1", f"cortexbox/{name}", {"visual_degrees": 8, "layers": {"l1": [4], "l2": [4]}, "behaviours": {}}).id

    def score(model: str, bench, raw_mean: float, layer: str = "l2", ceiling=True, **extra):
        run = reg.start_run(f"cortexbox/{model}", bench.identifier)
        reg.update_run(run, model_id=ids[model], benchmark_id=bench.id)
        values = _values(rng, raw_mean)
        raw = float(np.mean(values))
        c = bench.ceiling if ceiling else None
        ceiled = extra.pop("ceiled", None) if "ceiled" in extra else (raw**2 / c if c else None)
        prov = {"image_digest": reg.models()[ids[model] - 1].digest, "benchmark_version": bench.version, "data_hash": bench.data_hash,
                "code_version": "0123456789abcdef", "metric": metric, "layer": layer,
                "layer_commitment": {"method": "selection", "selection_key": f"{bench.identifier}@1:selection",
                                     "layer_scores": {"l1": 0.2, "l2": raw_mean, "l3": raw_mean / 2}}}
        reg.add_score(run_id=run.id, model_id=ids[model], benchmark_id=bench.id, raw=raw, error=float(np.std(values) / np.sqrt(10)),
                      ceiling=c, ceiled=ceiled, layer=layer, values=values, provenance=prov)
        reg.update_run(run, status="succeeded", timings={"total_s": 1.0})

    score("goodnet", b_v4_old, 0.1)  # an old version: never counts
    score("goodnet", b_v4, 0.6)
    score("goodnet", b_it, 0.5)
    score("goodnet", b_beh, 0.7)
    score("okaynet", b_v4, 0.5)
    score("okaynet", b_it, 0.45, ceiled=1.3)  # clipped to 1 in aggregates
    score("pixels", b_v4, 0.3)
    failed = reg.start_run("cortexbox/pixels", b_it.identifier)
    reg.update_run(failed, model_id=ids["pixels"], benchmark_id=b_it.id, status="failed", failure_class="out_of_memory",
                   error="the container was killed by the OOM killer", log_tail="loading weights\nKilled\n")
    reg.save_commitment(ids["goodnet"], "V4", "l2", "Alpha2020.V4-pls@1:selection", {"l1": 0.2, "l2": 0.6, "l3": 0.3})
    return ids


@pytest.fixture
def seeded(tmp_path):
    url = f"sqlite:///{tmp_path / 'web.db'}"
    return url, seed_registry(url)


TREE = {"neural": {"V4": ["Alpha2020.V4-pls"], "IT": ["Beta2021.IT-pls"]}, "behaviour": ["Gamma2022.i2n"]}


@pytest.fixture
def client(seeded):
    from cortexbox.orchestrator.web import create_app

    with TestClient(create_app(seeded[0], tree=TREE)) as c:
        yield c


def test_leaderboard_api_ranks_with_both_views_and_marks_missing(client, seeded):
    ids = seeded[1]
    board = client.get("/api/leaderboard").json()
    by_name = {r["model"]: r for r in board["rows"]}
    assert [r["model"] for r in board["rows"]] == ["goodnet", "okaynet", "pixels"]
    # tree: vision -> neural -> {V4, IT}, behaviour; goodnet V4 ~ 0.45, IT ~ 0.5, behaviour 0.7 (raw, no ceiling)
    good = by_name["goodnet"]["aggregate"]
    assert good["missing"] == [] and good["coverage"] == 1
    okay = by_name["okaynet"]
    assert okay["aggregate"]["missing"] == ["Gamma2022.i2n"] and okay["aggregate"]["coverage"] == pytest.approx(0.5)
    it_leaf = okay["nodes"]["vision/neural/IT/Beta2021.IT-pls"]["leaf"]
    assert it_leaf["clipped"] and it_leaf["value"] == 1.0 and it_leaf["unclipped"] == pytest.approx(1.3)
    v4 = okay["nodes"]["vision/neural/V4"]["value"]
    assert okay["aggregate"]["value"] == pytest.approx((v4 + 1.0) / 2 / 2)  # behaviour missing counts 0
    assert okay["aggregate"]["scored_value"] == pytest.approx((v4 + 1.0) / 2)
    pix = by_name["pixels"]
    assert pix["nodes"]["vision/neural/IT/Beta2021.IT-pls"]["leaf"]["status"] == "failed"
    assert pix["nodes"]["vision/neural/IT/Beta2021.IT-pls"]["value"] is None  # never a real 0
    iv = good["interval"]
    assert iv["low"] < good["value"] < iv["high"]
    scored = client.get("/api/leaderboard?view=scored").json()
    assert scored["view"] == "scored" and {r["model_id"] for r in scored["rows"]} == set(ids.values())
    assert client.get("/api/leaderboard?view=nonsense").status_code == 422


def test_only_the_latest_benchmark_version_counts(client, seeded):
    model = client.get(f"/api/models/{seeded[1]['goodnet']}").json()
    old = [s for s in model["scores"] if s["benchmark_version"] == 1 and s["benchmark"] == "Alpha2020.V4-pls"]
    assert len(old) == 1 and not old[0]["latest_version"] and not old[0]["counts"]
    leaf = [n for n in model["nodes"] if n["path"].endswith("Alpha2020.V4-pls")][0]
    new = [s for s in model["scores"] if s["benchmark_version"] == 2 and s["benchmark"] == "Alpha2020.V4-pls"][0]
    assert leaf["leaf"]["score_id"] == new["id"] and new["counts"]


def test_model_page_shows_scores_provenance_curves_and_failures(client, seeded):
    ids = seeded[1]
    page = client.get(f"/models/{ids['goodnet']}")
    assert page.status_code == 200
    html = page.text
    assert "b" * 12 in html and "0123456789ab" in html  # data hash and code version
    assert "<svg" in html and "chosen" in html  # layer curve with the chosen layer
    assert "corrected resampled t" in html
    m = client.get(f"/api/models/{ids['goodnet']}").json()
    s = [s for s in m["scores"] if s["benchmark"] == "Beta2021.IT-pls"][0]
    assert s["interval"]["ceiled"]["low"] < s["ceiled"] < s["interval"]["ceiled"]["high"]
    assert s["image_digest"] == m["digest"] and s["data_hash"] and s["layer"] == "l2"
    assert {c["region"] for c in m["layer_curves"]} >= {"V4"}
    behaviour = [s for s in m["scores"] if s["benchmark"] == "Gamma2022.i2n"][0]
    assert behaviour["ceiled"] is None and behaviour["interval"]["ceiled"] is None and behaviour["interval"]["raw"]["low"] < behaviour["raw"]
    pix = client.get(f"/models/{ids['pixels']}").text
    assert "out_of_memory" in pix and "Killed" in pix and "failed (out_of_memory)" in pix
    assert client.get("/models/999").status_code == 404
    assert client.get("/api/models/999").json() == {"detail": "no model with id 999"}


def test_benchmark_page(client):
    b = client.get("/api/benchmarks/Alpha2020.V4-pls").json()
    assert b["version"] == 2 and b["ceiling"] == 0.8 and len(b["versions"]) == 2
    assert [r["model"] for r in b["scores"]] == ["goodnet", "okaynet", "pixels"]
    html = client.get("/benchmarks/Alpha2020.V4-pls").text
    assert "Alpha et al. 2020" in html and "Alpha&#39;s V4 recordings" in html and "<circle" in html
    assert client.get("/benchmarks/Nope.V1").status_code == 404
    assert [r["rank"] for r in b["scores"]] == [1, 2, 3]


def test_the_benchmarks_page_lists_every_benchmark_registered_or_built_in(client):
    """The registry holds a benchmark only once something registered it; the page lists the built-in ones too
    (it showed 1 of 51 after a demo that had scored one benchmark)."""
    from cortexbox.benchmarks import NOT_AGGREGATED, list_benchmarks

    listed = client.get("/api/benchmarks").json()
    names = [b["identifier"] for b in listed]
    assert names == sorted(names) and len(names) == len(set(names))
    assert set(names) == set(list_benchmarks()) | {"Alpha2020.V4-pls", "Beta2021.IT-pls", "Gamma2022.i2n"}
    by_name = {b["identifier"]: b for b in listed}
    alpha = by_name["Alpha2020.V4-pls"]
    assert alpha["registered"] and alpha["version"] == 2 and alpha["n_scored_models"] == 3 and alpha["in_tree"]
    cowley = by_name["Cowley2023.V4-pls"]
    assert not cowley["registered"] and cowley["version"] == 2 and cowley["data_hash"] is None
    assert cowley["not_aggregated"] == NOT_AGGREGATED["Cowley2023.V4-pls"] and not cowley["in_tree"]
    html = client.get("/benchmarks").text
    assert html.count('<tr data-registered="') == len(names) and html.count('<tr data-registered="1"') == 3
    assert f"3 of {len(names)} registered" in html
    # an unregistered built-in has a page that says how it gets registered, not a 404
    page = client.get("/benchmarks/Kriegeskorte2008.hIT-rdm")
    assert page.status_code == 200 and "not registered yet" in page.text and "benchmarks sync Kriegeskorte2008.hIT-rdm" in page.text
    api = client.get("/api/benchmarks/Kriegeskorte2008.hIT-rdm").json()
    assert api["registered"] is False and api["scores"] == [] and api["region"] == "IT"


@pytest.mark.parametrize("tree, message", [
    ({"neural": {"V4": ["Alpha2020.V4-pls", "Nope2020.V4-pls"]}}, "the leaf Nope2020.V4-pls under vision/neural/V4 names no known benchmark"),
    ({"neural": {"V4": ["Alpha2020.V4-pls"], "IT": ["Alpha2020.V4-pls"]}}, "Alpha2020.V4-pls appears twice"),
    ({"neural": {"V4": ["Alpha2020.V4-pls"], "IT": []}}, "vision/neural/IT has no benchmarks below it"),
])
def test_a_broken_tree_fails_loudly_on_every_board(seeded, tree, message):
    from cortexbox.orchestrator.web import create_app

    with TestClient(create_app(seeded[0], tree=tree)) as c:
        api = c.get("/api/leaderboard")
        assert api.status_code == 500 and message in api.json()["detail"]
        page = c.get("/")
        assert page.status_code == 500 and message in page.text


def test_compare_two_models(client, seeded):
    ids = seeded[1]
    c = client.get(f"/api/compare?a={ids['goodnet']}&b={ids['pixels']}").json()
    v4 = [r for r in c["benchmarks"] if r["benchmark"] == "Alpha2020.V4-pls"][0]
    assert v4["comparison"]["difference"] > 0 and v4["comparison"]["significant"] and v4["comparison"]["cohens_dz"] > 1
    it = [r for r in c["benchmarks"] if r["benchmark"] == "Beta2021.IT-pls"][0]
    assert it["comparison"] is None and it["b"]["status"] == "failed"
    root = c["aggregates"][0]
    assert root["shared_leaves"] == ["Alpha2020.V4-pls"] and set(root["left_out"]) == {"Beta2021.IT-pls", "Gamma2022.i2n"}
    assert root["comparison"]["p_value"] < 0.05
    html = client.get(f"/compare?a={ids['goodnet']}&b={ids['pixels']}").text
    assert "significant" in html and "d_z" in html


def test_api_is_documented_offline(client):
    html = client.get("/api").text
    for path in ("/api/leaderboard", "/api/models/{model_id}", "/api/compare", "/api/runs", "/api/live/{live_id}/events"):
        assert path in html
    assert "cdn" not in client.get("/").text.lower()
    assert client.get("/openapi.json").json()["paths"]["/api/runs"]["post"]


def test_html_pages_render(client):
    for path in ("/", "/?view=scored", "/benchmarks", "/runs", "/compare"):
        r = client.get(path)
        assert r.status_code == 200, path
    assert "goodnet" in client.get("/").text and "missing" in client.get("/").text


def test_a_score_stored_with_its_bootstrap_shows_that_interval(seeded):
    """Scores made since the bootstrap was added carry it in provenance["metric"]["bootstrap"]; the page and the API
    show it (method, seed) instead of the split-based interval."""
    from cortexbox.orchestrator.web import create_app

    url, ids = seeded
    reg = Registry(url)
    bench = reg.upsert_benchmark("Delta2023.V1-pls", 1, "e" * 64, region="V1", ceiling=0.8, ceiling_error=0.01)
    run = reg.start_run("cortexbox/goodnet", bench.identifier)
    bootstrap = {"method": "percentile bootstrap over held-out stimuli (joint over splits) and neuroids",
                 "resampled": ["stimuli", "neuroids"], "seed": 0, "n_boot": 1000, "level": 0.95,
                 "raw": {"low": 0.40, "high": 0.60, "estimate": 0.5, "se": 0.05},
                 "ceiled": {"low": 0.2, "high": 0.45, "estimate": 0.3125, "se": 0.06}}
    reg.add_score(run_id=run.id, model_id=ids["goodnet"], benchmark_id=bench.id, raw=0.5, error=0.01, ceiling=0.8,
                  ceiled=0.3125, layer="l2", values=[0.5] * 10,
                  provenance={"metric": {"normalization": "r2_over_ceiling", "bootstrap": bootstrap}})
    with TestClient(create_app(url, tree=TREE)) as client:
        score = [s for s in client.get(f"/api/models/{ids['goodnet']}").json()["scores"] if s["benchmark"] == bench.identifier][0]
        assert score["interval"]["ceiled"]["low"] == 0.2 and score["interval"]["ceiled"]["high"] == 0.45
        assert score["interval"]["raw"]["seed"] == 0 and score["interval"]["raw"]["method"].startswith("bootstrap over stimuli")
        html = client.get(f"/models/{ids['goodnet']}").text
        assert "bootstrap over stimuli and neuroids" in html and "1000 resamples, seed 0" in html


def _fake_score(request, *, registry, events, **_):
    """Stands in for score_model, and stores its run's events as score_model does."""
    from cortexbox.orchestrator.run_events import RunEventLog

    run = registry.start_run(request.image, request.benchmark)
    events = RunEventLog(registry, run.id, events, benchmark=request.benchmark, min_interval=0)
    events("stage", {"text": "starting the model"})
    for done in (32, 64):
        events("progress", {"done": done, "total": 64, "label": "benchmark"})
    if request.benchmark.startswith("Bad"):
        from cortexbox.orchestrator.errors import FailureClass, ModelFailure

        failure = ModelFailure(FailureClass.CRASH, "the container exited with code 1", log_tail="Traceback...\nboom\n")
        events.finish("failed", ("failed", {"failure_class": failure.failure.value, "error": failure.message, "log_tail": failure.log_tail}))
        registry.update_run(run, status="failed", failure_class=failure.failure.value)
        raise failure
    model = registry.upsert_model("sha256:" + "9" * 64, "fake", "1", request.image, {})
    outcome = ScoreOutcome(run_id=run.id, model="fake", digest=model.digest, benchmark=request.benchmark, benchmark_version=1,
                           raw=0.5, error=0.01, ceiling=0.8, ceiled=0.3125, layer="l1", from_cache=False, timings={}, provenance={})
    events.finish("succeeded", ("score", {k: v for k, v in outcome.to_dict().items() if k != "provenance"} | {"model_id": model.id}))
    registry.update_run(run, status="succeeded")
    return outcome


def _sse(text: str) -> list[tuple[str, dict]]:
    out = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            out.append((fields["event"], json.loads(fields["data"])))
    return out


def _sse_ids(text: str) -> list[str]:
    return [line[4:] for line in text.splitlines() if line.startswith("id: ")]


def test_live_run_streams_events_from_a_background_thread(seeded):
    from cortexbox.orchestrator.web import create_app

    with TestClient(create_app(seeded[0], score=_fake_score, tree=TREE)) as client:
        started = client.post("/api/runs", json={"model": "cortexbox/fake", "benchmarks": ["Ok2020.V4-x", "Bad2020.V4-x"]})
        assert started.status_code == 202
        live = started.json()
        assert client.get(live["url"]).status_code == 200
        deadline = time.time() + 20
        while client.get(f"/api/live/{live['live_id']}").json()["status"] not in ("succeeded", "failed"):
            assert time.time() < deadline
            time.sleep(0.05)
        text = client.get(live["events_url"]).text
        events, ids = _sse(text), _sse_ids(text)
        resumed = _sse(client.get(live["events_url"], headers={"Last-Event-ID": ids[4]}).text)
        run_ids = client.get(f"/api/live/{live['live_id']}").json()["run_ids"]
    names = [e for e, _ in events]
    assert names[0] == "status" and names[-1] == "done"
    assert names.count("run") == 2 and names.count("progress") == 4
    score = [d for e, d in events if e == "score"]
    assert len(score) == 1 and score[0]["benchmark"] == "Ok2020.V4-x" and score[0]["ceiled"] == 0.3125
    failed = [d for e, d in events if e == "failed"]
    assert failed[0]["failure_class"] == "crash" and "boom" in failed[0]["log_tail"]
    assert events[-1][1]["status"] == "failed"
    # resuming after an event replays only what followed
    assert resumed == events[5:]
    # each registry run of the batch can be followed on its own, from another web process too
    with TestClient(create_app(seeded[0], tree=TREE)) as other:
        assert other.get(live["events_url"]).status_code == 404  # the batch itself belongs to its web process
        ok = _sse(other.get(f"/api/runs/{run_ids[0]}/events").text)
        assert [e for e, _ in ok] == ["stage", "progress", "progress", "score", "done"]
        assert ok[-1][1]["status"] == "succeeded" and ok[3][1]["ceiled"] == 0.3125
        bad = _sse(other.get(f"/api/runs/{run_ids[1]}/events", headers={"Last-Event-ID": "2"}).text)
        assert [e for e, _ in bad] == ["failed", "done"] and bad[-1][1] == {"status": "failed", "failure_class": "crash",
                                                                              "benchmark": "Bad2020.V4-x", "t": bad[-1][1]["t"]}
        assert other.get(f"/runs/{run_ids[0]}/live").status_code == 200
        assert other.get("/runs/999/live").status_code == 404
        progress = other.get(f"/api/runs/{run_ids[0]}/progress").json()
        assert progress["status"] == "succeeded" and [e["seq"] for e in progress["events"]] == [0, 1, 2, 3, 4]


def test_cortexbox_web_serves_the_registry(seeded, tmp_path):
    import os
    import socket
    import subprocess
    import sys
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "CORTEXBOX_DATABASE_URL": seeded[0]}
    server = subprocess.Popen([sys.executable, "-m", "cortexbox.orchestrator.cli", "web", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/models", timeout=2) as r:
                    models = json.loads(r.read())
                break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()
                assert time.time() < deadline, "cortexbox web did not come up"
                time.sleep(0.2)
        assert sorted(m["model"] for m in models) == ["goodnet", "okaynet", "pixels"]
    finally:
        server.terminate()
        server.wait(10)


def test_a_benchmark_without_ceiling_ranks_negative_scores_apart(tmp_path):
    """A ΔLL in nats has no ceiling and may be negative: the leaf value clips to 0 for the aggregates, but the
    benchmark's own board ranks by the unclipped score (-0.01 above -0.03), not one shared rank."""
    from cortexbox.orchestrator.web import create_app

    url = f"sqlite:///{tmp_path / 'dll.db'}"
    reg = Registry(url)
    bench = reg.upsert_benchmark("Delta2018-dll", 1, "e" * 64, region="", ceiling=None)
    for i, raw in enumerate((-0.03, 0.02, -0.01)):
        model = reg.upsert_model("sha256:" + str(i) * 64, f"m{i}", "1", f"cortexbox/m{i}", {"behaviours": {}})
        run = reg.start_run(f"cortexbox/m{i}", bench.identifier)
        reg.update_run(run, model_id=model.id, benchmark_id=bench.id)
        reg.add_score(run_id=run.id, model_id=model.id, benchmark_id=bench.id, raw=raw, values=[raw], provenance={})
        reg.update_run(run, status="succeeded")
    with TestClient(create_app(url)) as client:
        page = client.get("/api/benchmarks/Delta2018-dll").json()
    assert [(r["model"], r["rank"]) for r in page["scores"]] == [("m1", 1), ("m2", 2), ("m0", 3)]
    assert [r["leaf"]["value"] for r in page["scores"]] == [0.02, 0.0, 0.0]


def test_benchmark_page_reads_sizes_from_the_benchmark_definition(data_dir, tmp_path):
    from cortexbox.benchmarks import get_benchmark
    from cortexbox.orchestrator.web import create_app

    bench = get_benchmark("Cowley2023.V4-pls")
    url = f"sqlite:///{tmp_path / 'facts.db'}"
    Registry(url).upsert_benchmark(bench.identifier, bench.version, bench.data_hash, region=bench.region)
    with TestClient(create_app(url)) as client:
        page = client.get("/api/benchmarks/Cowley2023.V4-pls").json()
    assert (page["n_stimuli"], page["n_neuroids"]) == (640, 50)


# -- runs watched from any process: events in the registry --------------------------------------------------------


class _FakeRegistry:
    def __init__(self):
        self.writes: list[list[tuple[int, str, dict]]] = []

    def add_run_events(self, run_id, rows):
        self.writes.append(list(rows))


def test_progress_events_are_throttled_but_the_last_one_and_the_order_are_kept():
    from cortexbox.orchestrator.run_events import RunEventLog

    registry, seen = _FakeRegistry(), []
    log = RunEventLog(registry, 1, lambda e, d: seen.append(e), benchmark="B", min_interval=0.3)
    log("stage", {"text": "go"})
    for done in range(1, 200):  # a burst of per-batch events: throttled
        log("progress", {"done": done, "total": 200, "label": "benchmark"})
    assert len(seen) == 200  # the caller's sink (the CLI's bars) still gets every event
    time.sleep(0.6)  # a held event is written by the timer once the interval has passed
    written = [row for rows in registry.writes for row in rows]
    assert written[-1][2]["done"] == 199 and len(written) <= 4
    log("progress", {"done": 200, "total": 200, "label": "benchmark"})  # the last one is written at once
    assert registry.writes[-1][-1][2]["done"] == 200
    log("progress", {"done": 5, "total": 10, "label": "other"})  # held ...
    log.finish("succeeded", ("score", {"raw": float("nan")}))  # ... and written before what follows
    rows = [row for rows in registry.writes for row in rows]
    assert [r[0] for r in rows] == list(range(len(rows)))
    assert [r[1] for r in rows[-4:]] == ["progress", "progress", "score", "done"]
    assert rows[-2][2]["raw"] is None and rows[-1][2]["status"] == "succeeded" and rows[-1][2]["benchmark"] == "B"
    log("stage", {"text": "after the end"})
    assert [row for rows in registry.writes for row in rows] == rows  # nothing is stored after done


def test_a_run_whose_process_died_ends_its_stream_as_lost(seeded, monkeypatch):
    import subprocess
    import sys

    from cortexbox.orchestrator.run_events import owner
    from cortexbox.orchestrator.web import create_app, live

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    reg = Registry(seeded[0])
    run = reg.start_run("cortexbox/killed", "Alpha2020.V4-pls")
    reg.add_run_events(run.id, [(0, "status", {"status": "running", **owner(), "pid": dead.pid}),
                                (1, "progress", {"done": 64, "total": 640, "label": "benchmark"})])
    monkeypatch.setattr(live, "OWNER_CHECK_S", 0.3)
    with TestClient(create_app(seeded[0], tree=TREE)) as client:
        assert f"/runs/{run.id}/live" in client.get("/runs").text  # listed as running
        events = _sse(client.get(f"/api/runs/{run.id}/events").text)
    assert [e for e, _ in events] == ["status", "progress", "done"]
    assert events[-1][1]["status"] == "lost" and str(dead.pid) in events[-1][1]["error"]


class SlowPixels(Model):
    """A model served by this test process: a 28 x 28 grey image, slowed down so that the run takes a few seconds."""

    model_id = "slow-pixels"
    model_version = "1"
    visual_degrees = 8.0
    region_layers = {"V4": "pixels"}
    max_batch_size = 16

    def layers(self):
        return [Output("pixels", (28 * 28,))]

    def activations(self, stimuli, layers):
        from tests.orchestrator.test_score_endpoint import _grey_28

        time.sleep(0.1)
        return {"pixels": np.stack([_grey_28(s.pixels) for s in stimuli])}


def test_a_run_scored_by_another_process_is_watched_live_over_sse(data_dir, tmp_path):
    """`cortexbox score` in a subprocess; a web app (a real uvicorn server) that never saw it start streams its
    progress while it runs, and its score at the end."""
    import os
    import socket
    import subprocess
    import sys
    import threading

    import httpx
    import uvicorn

    from cortexbox.orchestrator.web import create_app
    from cortexbox.sdk import serve

    url = f"sqlite:///{tmp_path / 'shared.db'}"
    Registry(url)
    address = f"unix://{tmp_path}/model.sock"
    model_server, _ = serve(SlowPixels(), address, block=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    web = uvicorn.Server(uvicorn.Config(create_app(url, tree=TREE), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=web.run, daemon=True)
    thread.start()
    stderr = open(tmp_path / "score.stderr", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "cortexbox.orchestrator.cli", "score", "--endpoint", address,
                             "--benchmark", "Cowley2023.V4-pls", "--json"],
                            env={**os.environ, "CORTEXBOX_DATABASE_URL": url}, stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while not web.started:
            assert time.time() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        while not (running := httpx.get(f"{base}/api/runs", params={"status": "running"}).json()):
            assert proc.poll() is None, (tmp_path / "score.stderr").read_text()
            assert time.time() < deadline, "the run never showed up"
            time.sleep(0.05)
        run_id = running[0]["id"]
        assert running[0]["live_url"] == f"/runs/{run_id}/live" and running[0]["model_ref"] == address
        assert f"/runs/{run_id}/live" in httpx.get(f"{base}/runs").text
        assert httpx.get(f"{base}{running[0]['live_url']}").status_code == 200
        received: list[tuple[str | None, str, dict, bool]] = []  # id, event, data, whether the scorer was still running
        with httpx.stream("GET", f"{base}/api/runs/{run_id}/events", timeout=120) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            fields: dict[str, str] = {}
            for line in r.iter_lines():
                if line:
                    key, _, value = line.partition(": ")
                    fields[key] = value
                elif "event" in fields:
                    received.append((fields.get("id"), fields["event"], json.loads(fields["data"]), proc.poll() is None))
                    fields = {}
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, (tmp_path / "score.stderr").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
        web.should_exit = True
        thread.join(20)
        model_server.stop(0)
    outcome = json.loads(out)
    kinds = [e for _, e, _, _ in received]
    assert kinds[0] == "status" and kinds[-2:] == ["score", "done"]
    assert [int(i) for i, *_ in received] == list(range(len(received)))  # every stored event, in order, once
    progress = [(d, alive) for _, e, d, alive in received if e == "progress" and d["label"] == "benchmark"]
    assert sum(alive for _, alive in progress) >= 2  # progress arrived while the other process was still scoring
    assert progress[-1][0]["done"] == progress[-1][0]["total"] == 640
    assert len(progress) < 640 // 16  # throttled: fewer writes than batches
    score = received[-2][2]
    assert score["run_id"] == run_id and score["ceiled"] == outcome["ceiled"] and score["layer"] == "pixels"
    assert received[-1][2]["status"] == "succeeded"
    assert Registry(url).run(run_id).status == "succeeded"
