"""The web app and its JSON API over a seeded registry (FastAPI's TestClient; no server, no browser)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from cortexbox.orchestrator.jobs import ScoreOutcome
from cortexbox.registry import Registry


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


def _fake_score(request, *, registry, events, **_):
    run = registry.start_run(request.image, request.benchmark)
    events("stage", {"text": "starting the model"})
    for done in (32, 64):
        events("progress", {"done": done, "total": 64, "label": "benchmark"})
    if request.benchmark.startswith("Bad"):
        from cortexbox.orchestrator.errors import FailureClass, ModelFailure

        raise ModelFailure(FailureClass.CRASH, "the container exited with code 1", log_tail="Traceback...\nboom\n")
    model = registry.upsert_model("sha256:" + "9" * 64, "fake", "1", request.image, {})
    return ScoreOutcome(run_id=run.id, model="fake", digest=model.digest, benchmark=request.benchmark, benchmark_version=1,
                        raw=0.5, error=0.01, ceiling=0.8, ceiled=0.3125, layer="l1", from_cache=False, timings={}, provenance={})


def _sse(text: str) -> list[tuple[str, dict]]:
    out = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            out.append((fields["event"], json.loads(fields["data"])))
    return out


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
        events = _sse(client.get(live["events_url"]).text)
    names = [e for e, _ in events]
    assert names[0] == "status" and names[-1] == "done"
    assert names.count("run") == 2 and names.count("progress") == 4
    score = [d for e, d in events if e == "score"]
    assert len(score) == 1 and score[0]["benchmark"] == "Ok2020.V4-x" and score[0]["ceiled"] == 0.3125
    failed = [d for e, d in events if e == "failed"]
    assert failed[0]["failure_class"] == "crash" and "boom" in failed[0]["log_tail"]
    assert events[-1][1]["status"] == "failed"
    # resuming after event 3 replays only what followed
    with TestClient(create_app(seeded[0], tree=TREE)) as other:
        assert other.get(live["events_url"]).status_code == 404  # live runs belong to their web process


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


def test_benchmark_page_reads_sizes_from_the_benchmark_definition(data_dir, tmp_path):
    from cortexbox.benchmarks import get_benchmark
    from cortexbox.orchestrator.web import create_app

    bench = get_benchmark("Cowley2023.V4-pls")
    url = f"sqlite:///{tmp_path / 'facts.db'}"
    Registry(url).upsert_benchmark(bench.identifier, bench.version, bench.data_hash, region=bench.region)
    with TestClient(create_app(url)) as client:
        page = client.get("/api/benchmarks/Cowley2023.V4-pls").json()
    assert (page["n_stimuli"], page["n_neuroids"]) == (640, 50)
