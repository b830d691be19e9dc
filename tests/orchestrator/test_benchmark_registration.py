"""Built-in benchmarks are registered through the same path as ingested recordings
(`register_benchmark_version`): `cortexbox benchmarks sync`, and score time."""

from __future__ import annotations

import json

import pytest
from sqlalchemy.exc import IntegrityError

from cortexbox.benchmarks import get_benchmark
from cortexbox.orchestrator.errors import UserError
from cortexbox.orchestrator.scoring import run_queued_jobs, versions
from cortexbox.orchestrator.scoring.versions import register_benchmark, sync_builtins
from cortexbox.registry import Registry
from tests.orchestrator.test_cli import cortexbox

NEURAL = ["Cowley2023.V4-pls", "Kriegeskorte2008.hIT-rdm"]


def add_models(registry: Registry):
    image = registry.upsert_model("sha256:" + "1" * 64, "imagenet", "1", "cortexbox/imagenet", {"modality": "image"})
    legacy = registry.upsert_model("sha256:" + "2" * 64, "legacy", "1", "cortexbox/legacy", {})  # before modalities
    text = registry.upsert_model("sha256:" + "3" * 64, "lm", "1", "cortexbox/lm", {"modality": "text"})
    registry.upsert_model("endpoint:served@1", "served", "1", "unix:///tmp/x.sock", {"modality": "image"})
    return image, legacy, text


def state(registry: Registry):
    return ([(b.identifier, b.version, b.data_hash) for b in registry.benchmarks()],
            sorted((b.identifier, b.version, m.name) for j, m, b in registry.queued_jobs()))


def test_sync_registers_versions_with_hashes_and_queues_jobs_by_modality(data_dir):
    registry = Registry()
    add_models(registry)
    plans = sync_builtins(NEURAL + ["syntaxgym-cleft"], registry=registry)
    code = {name: get_benchmark(name).version for name in NEURAL + ["syntaxgym-cleft"]}  # registered from the code's
    assert [(p.identifier, p.version, p.status, p.source) for p in plans] == [
        (name, code[name], "registered", "builtin") for name in NEURAL + ["syntaxgym-cleft"]]
    rows = {b.identifier: b for b in registry.benchmarks()}
    for name in NEURAL:
        bench = get_benchmark(name)
        assert rows[name].data_hash == bench.data_hash
        assert rows[name].ceiling == pytest.approx(bench.ceiling.raw)
        assert rows[name].definition == {"source": "builtin", "code_version": code[name], "kind": "neural", "modality": "image",
                                         **({"metric": "pls"} if name.startswith("Cowley") else {})}
    # image models for vision, text models for language; never an endpoint
    assert state(registry)[1] == sorted(
        [(name, code[name], model) for name in NEURAL for model in ("imagenet", "legacy")] + [("syntaxgym-cleft", 1, "lm")])

    before = state(registry)
    again = sync_builtins(NEURAL, registry=registry)
    assert [p.status for p in again] == ["unchanged", "unchanged"] and state(registry) == before


def test_changed_builtin_data_make_a_new_version_and_old_scores_stay(data_dir, monkeypatch):
    registry = Registry()
    image, _, _ = add_models(registry)
    sync_builtins(["Cowley2023.V4-pls"], registry=registry)
    (v1,) = registry.benchmarks()
    run = registry.start_run("cortexbox/imagenet", v1.identifier)
    old = registry.add_score(run_id=run.id, model_id=image.id, benchmark_id=v1.id, raw=0.2, ceiled=0.05)

    bench = get_benchmark("Cowley2023.V4-pls")
    first = bench.version  # the code's version is the first registered one
    assert v1.version == first
    monkeypatch.setattr(bench, "data_hash", "f" * 64)  # the data changed under the same code version
    dry = sync_builtins(["Cowley2023.V4-pls"], dry_run=True, registry=registry)
    assert (dry[0].status, dry[0].version) == ("planned", first + 1) and len(registry.benchmarks()) == 1
    (plan,) = sync_builtins(["Cowley2023.V4-pls"], registry=registry)
    assert (plan.status, plan.version, plan.data_hash) == ("registered", first + 1, "f" * 64)
    assert [(b.version, b.data_hash) for b in registry.benchmark_versions("Cowley2023.V4-pls")] == [
        (first, v1.data_hash), (first + 1, "f" * 64)]
    scores = [(s.id, b.version) for s, m, b in registry.scores()]
    assert scores == [(old.id, first)]  # the old score stays attached to the first version
    assert registry.leaderboard() == []  # ...which is no longer the latest
    # score time finds the new version through the same path (no new version, no new jobs)
    jobs = state(registry)[1]
    assert register_benchmark(bench, registry=registry).version == first + 1 and state(registry)[1] == jobs


def test_a_failure_in_the_middle_of_the_transaction_changes_nothing(data_dir, monkeypatch):
    registry = Registry()
    add_models(registry)
    sync_builtins(["Kriegeskorte2008.hIT-rdm"], registry=registry)
    before = state(registry)
    original = Registry.register_benchmark_versions

    def second_fails(self, items):
        assert len(items) == 2
        items[1] = (items[1][0], [987654])  # no such model: the second version's jobs violate a foreign key
        return original(self, items)

    monkeypatch.setattr(Registry, "register_benchmark_versions", second_fails)
    monkeypatch.setattr(get_benchmark("Kriegeskorte2008.hIT-rdm"), "data_hash", "e" * 64)
    with pytest.raises(IntegrityError):
        sync_builtins(["Cowley2023.V4-pls", "Kriegeskorte2008.hIT-rdm"], registry=registry)
    assert state(registry) == before


def test_a_failure_while_planning_names_the_benchmark_and_changes_nothing(data_dir, monkeypatch):
    registry = Registry()
    add_models(registry)
    bench = get_benchmark("Kriegeskorte2008.hIT-rdm")

    def missing(self):
        raise FileNotFoundError("kriegeskorte2008_92images/rdms.mat")

    monkeypatch.setattr(type(bench), "ceiling", property(missing))
    with pytest.raises(UserError, match="Kriegeskorte2008.hIT-rdm.*rdms.mat.*nothing was registered"):
        sync_builtins(["Cowley2023.V4-pls", "Kriegeskorte2008.hIT-rdm"], registry=registry)
    assert state(registry) == ([], [])


def test_score_time_registers_through_the_same_function(data_dir, monkeypatch, tmp_path):
    from cortexbox.orchestrator.scoring import ScoreRequest, score_model
    from cortexbox.sdk import serve
    from tests.orchestrator.test_score_endpoint import TwoLayers

    # a real server: score_model checks that the model exists before it records a run
    endpoint = f"unix://{tmp_path}/model.sock"
    server, _ = serve(TwoLayers(), endpoint, block=False)
    calls = []

    def spy(source, **kwargs):
        calls.append((source.identifier, source.kind, kwargs.get("dry_run", False)))
        raise RuntimeError("stop after registration")

    monkeypatch.setattr(versions, "register_benchmark_version", spy)
    registry = Registry()
    try:
        with pytest.raises(RuntimeError, match="stop after registration"):
            score_model(ScoreRequest(benchmark="Cowley2023.V4-pls", endpoint=endpoint), registry=registry)
    finally:
        server.stop(0)
    assert calls == [("Cowley2023.V4-pls", "builtin", False)]
    assert registry.benchmarks() == [] and registry.runs()[0].status == "failed"


def test_sync_cli_dry_run_then_sync_then_unchanged(data_dir, _isolated_home):
    args = ("benchmarks", "sync", "Cowley2023.V4-pls", "--no-score", "--json")
    dry = cortexbox(*args, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert [(b["identifier"], b["status"]) for b in json.loads(dry.stdout)["benchmarks"]] == [("Cowley2023.V4-pls", "planned")]
    assert Registry().benchmarks() == []
    first = json.loads(cortexbox(*args).stdout)["benchmarks"][0]
    assert (first["status"], first["version"]) == ("registered", 2) and 0.7 < first["ceiling"] < 0.8  # code version 2
    assert json.loads(cortexbox(*args).stdout)["benchmarks"][0]["status"] == "unchanged"
    listed = {b["identifier"]: b for b in json.loads(cortexbox("benchmarks", "list", "--json", timeout=600).stdout)}
    assert listed["Cowley2023.V4-pls"]["registered"] and listed["Cowley2023.V4-pls"]["version"] == 2
    assert not listed["Kriegeskorte2008.hIT-rdm"]["registered"]
    unknown = cortexbox("benchmarks", "sync", "Nobody2020.V1-pls")
    assert unknown.returncode == 2 and "unknown benchmark" in unknown.stderr and "Traceback" not in unknown.stderr


def test_cowley2023_is_defined_by_the_ingested_recording_with_the_same_numbers(data_dir, tmp_path):
    """Cowley2023.V4-pls is packaged as a recording and read back through read_recording; its target and trials
    equal the authors' files bit for bit, and ingesting the same package gives the same ceiling."""
    import numpy as np

    from cortexbox.benchmarks.cowley2023 import TEST_SESSION, load_raw_assembly, load_session_assembly
    from cortexbox.benchmarks.recordings import Cowley2023V4PLSRecording, package_cowley2023
    from cortexbox.orchestrator.ingest import ingest_recording

    bench = get_benchmark("Cowley2023.V4-pls")
    assert isinstance(bench, Cowley2023V4PLSRecording)
    authors = load_session_assembly(data_dir, TEST_SESSION)
    assert np.array_equal(bench.target_assembly.values, authors.values)
    assert list(bench.target_assembly["stimulus_id"].values) == list(authors["stimulus_id"].values)
    assert list(bench.target_assembly["neuroid_id"].values) == list(authors["neuroid_id"].values)
    assert np.array_equal(bench.repetition_assembly.values, load_raw_assembly(data_dir, TEST_SESSION).values)
    assert bench.recording.facts == {"stimuli": 640, "neuroids": 50, "presentations": bench.recording.facts["presentations"],
                                     "repetitions": 10, "image_sizes": ["112x112"]}

    assembly, table, archive = package_cowley2023(data_dir, tmp_path / "package")
    plan = ingest_recording(assembly, table, stimuli_zip=archive, identifier="Cowley2023.V4-ingested", region="V4",
                            visual_degrees=8, dry_run=True)
    assert plan.status == "planned" and plan.facts == bench.recording.facts
    assert plan.ceiling == bench.ceiling.raw and plan.ceiling_error == bench.ceiling.error


def test_the_worker_never_scores_a_job_of_an_older_version_under_the_newer_one(tmp_path):
    from types import SimpleNamespace

    from cortexbox.registry import Benchmark

    registry = Registry(f"sqlite:///{tmp_path / 'r.db'}")
    image, _, _ = add_models(registry)
    v1, _ = registry.register_benchmark_with_jobs(Benchmark(identifier="Smith2026.V4-pls", version=1, data_hash="a" * 64), [image.id])
    v2, _ = registry.register_benchmark_with_jobs(Benchmark(identifier="Smith2026.V4-pls", version=2, data_hash="b" * 64), [image.id])
    scored = []

    def fake_score_model(request, registry, events=None):
        scored.append(request.benchmark)
        return SimpleNamespace(run_id=None, benchmark_version=2, raw=0.5, ceiled=0.6)

    results = run_queued_jobs(registry, score=fake_score_model)
    assert [(r["version"], r["status"]) for r in results] == [(1, "superseded"), (2, "succeeded")]
    assert results[0]["by_version"] == 2 and scored == ["Smith2026.V4-pls"]  # v1's job was not scored
    assert not registry.queued_jobs()
