"""Fair scoring against models that game the benchmark (issue 13 item 4; issue 11 threats T12 and T15).

A model sees random ids, a shuffled order and repeat probes (orchestrator/scoring/fair.py): keyed on ids it cannot
find the answers it stored, answering from a lookup of exact pixels it is caught, and an honest model scores exactly
as before. The attackers are the hostile image's `id_keyed` and `lookup` modes, holding the best answers one could
store: a 16-dimensional embedding (classical MDS) of the benchmark's own target RDM, which scores raw 0.57 where the
pixels template scores 0.07. And the same image submitted by two teams is flagged; a caught model spends its quota.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time

import numpy as np
import pytest

from cortexbox.benchmarks import neuroid_assembly, registry as benchmarks
from cortexbox.benchmarks.language import TextStimulusSet
from cortexbox.benchmarks.stimuli import StimulusSet
from cortexbox.orchestrator.errors import FailureClass, ModelFailure
from cortexbox.orchestrator.scoring import ScoreRequest, fair, score_model
from tests.orchestrator.conftest import HOSTILE

BENCHMARK = "Kriegeskorte2008.hIT-rdm"  # 92 images, one RDM: the hostile image's one layer needs no selection
DEGREES = 8.0  # the hostile model's visual degrees (the SDK's default)


# -- the plan: ids, order, probes (no Docker) -------------------------------------------------------------------
def _images(n: int) -> StimulusSet:
    from PIL import Image

    blobs = {}
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(buf, "PNG")
        blobs[f"img{i:02d}"] = buf.getvalue()
    return StimulusSet.from_bytes("fair-test", blobs, visual_degrees=DEGREES)


def test_images_go_under_fresh_ids_in_a_seeded_order_with_probes_after_their_originals():
    images = _images(10)
    plan = fair.RunPlan.make(images, seed=7, label="benchmark")
    again = fair.RunPlan.make(images, seed=7, label="benchmark")
    other = fair.RunPlan.make(images, seed=8, label="benchmark")
    assert sorted(i for i in plan.wire if i >= 0) == list(range(10)) and plan.n == 10
    assert plan.wire != list(range(10)) + [-1, -2, -3, -4]  # shuffled
    assert again.wire == plan.wire and other.wire != plan.wire  # the recorded seed reproduces the order ...
    assert again.ids != plan.ids and again.run_id != plan.run_id  # ... never the ids
    assert len(set(plan.ids)) == 14 and not set(plan.ids) & set(images.stimulus_ids)
    assert all(len(sid) == 16 and int(sid, 16) >= 0 for sid in plan.ids)
    assert len(plan.probed) == fair.PROBES == 4
    for j, i in enumerate(plan.probed):
        assert plan.wire.index(-1 - j) > plan.wire.index(i)  # later in the same run
    placed = dict(images.iter_placed(DEGREES))
    sent = list(plan.stream(images, DEGREES))
    assert [sid for sid, _ in sent] == plan.ids
    for (_, pixels), i in zip(sent, plan.wire):
        if i >= 0:
            assert np.array_equal(pixels, placed[images.stimulus_ids[i]])
        else:  # one value of one pixel, changed by 1
            original = placed[images.stimulus_ids[plan.probed[-1 - i]]].astype(int)
            diff = pixels.astype(int) - original
            assert np.count_nonzero(diff) == 1 and abs(diff.sum()) == 1
    assert fair.RunPlan.make(_images(2), seed=1, label="x").probed.__len__() == 2  # fewer stimuli than probes
    assert fair.RunPlan.make(images, seed=1, label="x", probes=0).probed == []


def test_text_keeps_reading_order_inside_a_context_and_shuffles_contexts():
    parts = [(f"w{i}", f"word{i}", f"story{i // 4}") for i in range(20)] + [("lone1", "a", ""), ("lone2", "b", "")]
    text = TextStimulusSet("stories", parts)
    seen_orders = set()
    for seed in range(6):
        plan = fair.RunPlan.make(text, seed=seed, label="benchmark")
        assert plan.probed == [] and sorted(plan.wire) == list(range(22))  # no probes: no imperceptible text change
        sent = list(plan.stream(text, DEGREES))
        assert [s[0] for s in sent] == plan.ids and not set(plan.ids) & {p[0] for p in parts}
        by_context: dict[str, list[str]] = {}
        for (_, word, context), i in zip(sent, plan.wire):
            assert word == parts[i][1]
            if parts[i][2] == "":
                assert context == ""  # a part without a context stays alone
            else:
                assert context != parts[i][2] and len(context) == 16
                by_context.setdefault(context, []).append(word)
        # each story arrives whole, contiguous and in reading order, under one random context id
        assert sorted(by_context.values(), key=lambda words: int(words[0][4:])) == [
            [f"word{i}" for i in range(4 * k, 4 * k + 4)] for k in range(5)]
        runs = [context for (_, _, context) in sent if context]
        assert len([c for k, c in enumerate(runs) if k == 0 or c != runs[k - 1]]) == 5  # contiguous
        seen_orders.add(tuple(plan.wire))
    assert len(seen_orders) > 1


def test_rows_come_back_in_the_sets_order_and_probe_rows_are_dropped():
    images = _images(9)
    plan = fair.RunPlan.make(images, seed=3, label="benchmark")
    truth = np.random.default_rng(0).normal(size=(9, 5)).astype(np.float32) * 10
    rows = np.stack([truth[i] if i >= 0 else truth[plan.probed[-1 - i]] + 1e-4 for i in plan.wire])
    labels = np.array([[f"label{i if i >= 0 else plan.probed[-1 - i]}"] for i in plan.wire], dtype=object)
    outputs = {"layer": rows, "choice": labels}
    report = plan.restore(outputs)
    assert np.array_equal(outputs["layer"], truth) and outputs["layer"].base is rows  # in place, no copy
    assert list(outputs["choice"][:, 0]) == [f"label{i}" for i in range(9)]
    assert report["probes"] == 4 and report["stimuli"] == 9 and report["worst_probe_ratio"] < 0.01


def test_a_probe_answered_from_a_lookup_fails_the_run_and_float_noise_does_not():
    images = _images(12)
    plan = fair.RunPlan.make(images, seed=5, label="benchmark")
    truth = np.random.default_rng(1).normal(size=(12, 16)).astype(np.float32) + 50  # a large common offset

    def sent(probe_row):
        return np.stack([truth[i] if i >= 0 else probe_row(truth[plan.probed[-1 - i]]) for i in plan.wire])

    report = plan.restore({"features": sent(lambda row: row * (1 + 1e-6))})
    assert "inconsistent" not in report and report["worst_probe_ratio"] < 0.1
    with pytest.raises(ModelFailure) as e:  # the lookup's smartest constant for pixels it has not seen: the mean
        plan.restore({"features": sent(lambda row: truth.mean(axis=0)), "honest": sent(lambda row: row)})
    assert e.value.failure == FailureClass.INCONSISTENT
    assert "repeat probe" in e.value.message and "run seed 5" in e.value.message and "'features'" in e.value.message
    # a layer selection names the output and goes on (the layer is left out of the choice)
    outputs = {"features": sent(lambda row: truth.mean(axis=0)), "honest": sent(lambda row: row)}
    report = plan.restore(outputs, strict=False)
    assert report["inconsistent"] == ["features"] and np.array_equal(outputs["honest"], truth)
    constant = np.ones((len(plan.wire), 16), np.float32)  # a constant model is consistent (its RDM fails elsewhere)
    assert "inconsistent" not in plan.restore({"features": constant})


def _hashed_noise(commit: str | None = None):
    """A model with a continuous layer and a layer of noise seeded by a hash of the exact pixels (a lookup's
    signature; tests/orchestrator/test_score_endpoint.py's TwoLayers has one), served in-process as an endpoint."""
    import hashlib

    from cortexbox.sdk import Model, Output
    from tests.orchestrator.test_score_endpoint import _grey_28

    class Hashed(Model):
        model_id = "hashed-noise"
        model_version = "1"
        region_layers = {"IT": commit} if commit else {}

        def layers(self):
            return [Output("hashed", (64,)), Output("grey", (28 * 28,))]

        def activations(self, stimuli, layers):
            out = {"grey": np.stack([_grey_28(s.pixels) for s in stimuli])}
            seeds = [int(hashlib.sha256(s.pixels.tobytes()).hexdigest()[:8], 16) for s in stimuli]
            out["hashed"] = np.stack([np.random.default_rng(seed).normal(size=64) for seed in seeds]).astype(np.float32)
            return {name: out[name] for name in layers}

    return Hashed()


def test_a_layer_selection_leaves_out_an_inconsistent_layer_and_a_scored_run_fails_on_one(tmp_path):
    from cortexbox.sdk import serve

    for commit in (None, "hashed"):
        address = f"unix://{tmp_path}/{commit}.sock"
        server, _ = serve(_hashed_noise(commit), address, block=False)
        try:
            outcome, seconds = _score(endpoint=address, repeat_probes=4)  # an endpoint gets none unless asked
        finally:
            server.stop(0)
        if commit is None:  # chosen among consistent layers; the selection's run names the other
            commitment = outcome.provenance["layer_commitment"]
            assert outcome.layer == "grey" and commitment["inconsistent"] == ["hashed"], commitment
            [selection, scored] = outcome.provenance["stimulus_order"]["runs"]
            assert selection["inconsistent"] == ["hashed"] and "inconsistent" not in scored
        else:  # committed by the model itself: the scored run is strict
            assert isinstance(outcome, ModelFailure) and outcome.failure == FailureClass.INCONSISTENT, outcome
            assert "'hashed'" in outcome.message and seconds < 60


# -- T15: the same digest from two teams, and quota (no Docker) -----------------------------------------------------
def test_the_same_digest_from_two_teams_is_flagged_and_a_caught_model_spends_its_quota(tmp_path):
    from cortexbox.orchestrator.community import competitions, submissions
    from cortexbox.orchestrator.community.accounts import authenticate
    from cortexbox.orchestrator.community.archive import ArchiveInfo
    from cortexbox.registry import Registry
    from cortexbox.registry.models import Competition
    from tests.orchestrator.test_competitions_helpers import people, spec

    registry = Registry(f"sqlite:///{tmp_path / 'community.db'}")
    tokens = people(registry)
    red, blue, carol = (authenticate(registry, tokens[name]) for name in ("alice", "bob", "carol"))
    for identifier in ("Kriegeskorte2008.hIT-rdm", "Kriegeskorte2008.judgements-rdm"):
        registry.upsert_benchmark(identifier, 1, "0" * 64)
    comp = competitions.create(registry, spec("fair", quota=5), authenticate(registry, tokens["org"]))
    with registry.session() as s:
        row = s.get(Competition, comp.id)
        row.status = "open"
        s.add(row)
        s.commit()
    comp = competitions.get(registry, "fair")

    def upload(caller, digest):
        info = ArchiveInfo(image_id=digest, config="c.json", layers=[], repo_tags=[], upload_bytes=1, unpacked_bytes=1)
        return submissions.store(registry, comp, caller, info, digest, None)

    first = upload(red, "sha256:" + "a" * 64)
    again = upload(carol, "sha256:" + "a" * 64)  # red again, another member: its own image, no flag
    copied = upload(blue, "sha256:" + "a" * 64)
    own = upload(blue, "sha256:" + "b" * 64)
    assert (first.duplicate_of, again.duplicate_of, copied.duplicate_of, own.duplicate_of) == (None, None, first.id, None)
    export = {row["submission"]: row for row in json.loads(competitions.export(registry, comp, "json"))["submissions"]}
    assert export[copied.id]["duplicate_of"] == first.id and export[own.id]["duplicate_of"] is None

    # quota counts attempts: a model caught by the repeat probe counts; a run the platform lost is refunded
    def caught(request, **_):
        raise ModelFailure(FailureClass.INCONSISTENT, "repeat probe: ...")

    def lost(request, **_):
        raise ModelFailure(FailureClass.LOST, "the worker died")

    assert submissions.SubmissionQueue(registry, score=caught).execute(own.id) == "failed"
    assert submissions.SubmissionQueue(registry, score=lost).execute(copied.id) == "platform_failed"
    quota = competitions.quota(registry, comp, blue.team_id)
    assert (quota["used"], quota["refunded_today"]) == (1, 1)
    sub, _ = submissions.get(registry, own.id, blue)
    mine = submissions.view(registry, sub, comp, blue)  # what the team sees: the class of each failed run
    assert (mine["status"], mine["failure_class"], mine["counts_quota"]) == ("failed", "inconsistent", True)
    assert {r["failure_class"] for r in mine["runs"]} == {"inconsistent"}


# -- real containers -----------------------------------------------------------------------------------------------
@pytest.fixture
def containers(docker_client):
    """No container of ours may survive any of these tests."""
    from cortexbox.orchestrator.runtime import scope_filter

    yield docker_client
    left = docker_client.containers.list(all=True, filters=scope_filter())
    assert not left, f"containers left behind: {[c.name for c in left]}"


@pytest.fixture(scope="module")
def stored_answers():
    return best_answers()


def best_answers() -> dict:
    """The answers an attacker would love to store for each benchmark image: a 16-dimensional embedding of the
    target RDM (raw 0.57), keyed by the benchmark's stimulus id and by the exact placed pixels."""
    bench = benchmarks.get_benchmark(BENCHMARK)
    d = bench.target.mean
    n = len(d)
    centre = np.eye(n) - 1 / n
    w, v = np.linalg.eigh(-0.5 * centre @ (d**2) @ centre)
    top = np.argsort(w)[::-1][:16]
    rows = (v[:, top] * np.sqrt(np.maximum(w[top], 0))).astype(np.float32)
    ids = list(bench.stimulus_set.stimulus_ids)
    assert tuple(ids) == tuple(bench.target.stimulus_ids)
    by_pixels = {_pixel_key(pixels): rows[i].tolist() for i, (_, pixels) in enumerate(bench.stimulus_set.iter_placed(DEGREES))}
    return {"bench": bench, "ids": ids, "rows": rows, "by_id": dict(zip(ids, rows.tolist())), "by_pixels": by_pixels,
            "raw": bench.score(neuroid_assembly(rows, ids, layer="features")).raw}


def _pixel_key(pixels: np.ndarray) -> str:
    """The hostile model's pixel_key (tests/models/hostile/model.py)."""
    import hashlib

    return hashlib.sha256(str(tuple(pixels.shape)).encode() + np.ascontiguousarray(pixels).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def gamer(docker_client, base_image, tmp_path_factory):
    """The hostile image in a gaming mode, with its stored answers after the mode's line in MODE; one tag per process,
    removed at the end."""
    built: list[str] = []

    def build(mode: str, stored: dict) -> str:
        built.append(build_gamer(docker_client, tmp_path_factory.mktemp(f"fair-{mode}"), mode, stored))
        return built[-1]

    yield build
    stages = [t for image in docker_client.images.list(name="cortexbox-stage/cortexbox-test--hostile-fair--build")
              for t in image.tags if t.endswith(f"-{os.getpid()}")]  # the build stages' tags of this process
    for tag in built + stages:
        try:
            docker_client.images.remove(tag, force=tag in built)
        except Exception:  # noqa: BLE001 - gone already
            pass


def build_gamer(docker_client, project, mode: str, stored: dict) -> str:
    from cortexbox.orchestrator import images

    shutil.copytree(HOSTILE, project, dirs_exist_ok=True)
    (project / "MODE").write_text(f"{mode}\n{json.dumps(stored)}\n")
    return images.build_model_image(docker_client, project, tag=f"cortexbox-test/hostile-fair:{mode}-{os.getpid()}").tag


def _score(**kwargs):
    t0 = time.monotonic()
    try:
        return score_model(ScoreRequest(benchmark=BENCHMARK, **kwargs)), time.monotonic() - t0
    except ModelFailure as e:
        return e, time.monotonic() - t0


@pytest.mark.docker
def test_a_deterministic_model_scores_the_same_in_any_order(containers, template_image):
    """The pixels template, twice without the cache under two seeds: the same numbers (0.0727943403681290 raw before
    fair scoring too), the seed and each run's probes in the provenance."""
    image = template_image("pixels")
    first, _ = _score(image=image, use_cache=False, order_seed=1)
    second, _ = _score(image=image, use_cache=False, order_seed=2)
    assert (first.raw, first.ceiled, first.error) == (second.raw, second.ceiled, second.error)
    assert first.raw == pytest.approx(0.0728, abs=1e-4)
    order = first.provenance["stimulus_order"]
    assert order["seed"] == 1 and order["ids"] == "random per run"
    assert [(r["label"], r["stimuli"], r["probes"]) for r in order["runs"]] == [("benchmark", 92, 4)]
    assert 0 <= order["runs"][0]["worst_probe_ratio"] < 0.01  # one pixel of 150,528 values, changed by 1
    assert first.provenance["activation_cache"] == {"stimuli": 92, "sent": 92}  # the probes are not stimuli
    fresh, _ = _score(image=image, use_cache=False)
    assert isinstance(fresh.provenance["stimulus_order"]["seed"], int) and fresh.raw == first.raw


@pytest.mark.docker
def test_a_model_keyed_on_ids_cannot_find_its_stored_answers(containers, gamer, stored_answers):
    image = gamer("id_keyed", stored_answers["by_id"])
    bench, ids = stored_answers["bench"], stored_answers["ids"]
    # the attack works where the benchmark's ids reach the model ...
    from cortexbox.orchestrator.runtime import ContainerSession, SandboxLimits

    session = ContainerSession(containers, image, limits=SandboxLimits(memory_bytes=512 * 1024**2))
    try:
        result = session.client.run(session.description, bench.stimulus_set.iter_placed(DEGREES), ids,
                                    layers=["features"], timeout_s=60)
    finally:
        session.close()
    leaked = bench.score(neuroid_assembly(result.outputs["features"], ids, layer="features")).raw
    assert leaked == pytest.approx(stored_answers["raw"], abs=1e-4) and leaked > 0.5
    # ... and not through the scoring job: under random ids its answers are noise, a non-informative model's score
    outcome, _ = _score(image=image, use_cache=False, repeat_probes=0)
    assert not isinstance(outcome, Exception), outcome
    assert abs(outcome.raw) < 0.1, outcome.raw
    # with the probes (the default) it is caught as well: the same image under another id got another answer
    failure, seconds = _score(image=image, use_cache=False)
    assert isinstance(failure, ModelFailure) and failure.failure == FailureClass.INCONSISTENT, failure
    assert seconds < 60, f"failed after {seconds:.0f} s"


@pytest.mark.docker
def test_a_lookup_of_seen_pixels_is_caught_by_the_repeat_probe(containers, gamer, stored_answers):
    from cortexbox.registry import Registry

    image = gamer("lookup", stored_answers["by_pixels"])
    # without probes, exact pixels find the stored answers: the lookup would top the board
    unprobed, _ = _score(image=image, use_cache=False, repeat_probes=0)
    assert unprobed.raw == pytest.approx(stored_answers["raw"], abs=1e-4) and unprobed.raw > 0.5
    # with them (the default), the run fails, classified and explained, and stores no score
    failure, seconds = _score(image=image, use_cache=False)
    assert isinstance(failure, ModelFailure) and failure.failure == FailureClass.INCONSISTENT, failure
    assert "repeat probe" in failure.message and "'features'" in failure.message
    assert seconds < 60, f"failed after {seconds:.0f} s"
    run = Registry().runs(limit=1)[0]
    assert (run.status, run.failure_class) == ("failed", "inconsistent") and "repeat probe" in run.error
    assert [s.run_id for s, _, _ in Registry().scores()] == [unprobed.run_id]
