"""The per-stimulus activation cache: rows keyed by image digest, output and placed content; append-only
shards with their own index files; safe against concurrent writers and writers killed mid-way."""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import time

import numpy as np
from PIL import Image

from cortexbox.benchmarks.stimuli import StimulusSet
from cortexbox.orchestrator import cache as cache_module
from cortexbox.orchestrator.cache import ActivationCache, image_key, stimulus_keys, text_keys

DIGEST = "sha256:" + "ab" * 32


def _keys(n, prefix="k"):
    return [f"{prefix}{i}" for i in range(n)]


def test_put_then_gather_round_trips_exactly(tmp_path):
    cache = ActivationCache(tmp_path)
    values = np.random.default_rng(0).standard_normal((600, 37)).astype(np.float32)
    assert cache.put(DIGEST, "layer1", _keys(600), values) == 600
    index = cache.index(DIGEST, "layer1")
    assert len(index) == 600 and index.features == 37
    order = list(np.random.default_rng(1).permutation(600))
    got = cache.gather(index, [f"k{i}" for i in order])
    assert got.dtype == np.float32 and np.array_equal(got, values[order])
    # other outputs and other images are separate
    assert len(cache.index(DIGEST, "layer2")) == 0
    assert len(cache.index("sha256:" + "cd" * 32, "layer1")) == 0


def test_put_appends_only_new_rows_and_assembles_across_shards(tmp_path):
    cache = ActivationCache(tmp_path)
    a = np.arange(40, dtype=np.float32).reshape(10, 4)
    b = -np.arange(40, dtype=np.float32).reshape(10, 4)
    cache.put(DIGEST, "l", _keys(10), a)
    # rows 5..9 of the second put repeat stored keys: only the five new rows are written, old ones win
    assert cache.put(DIGEST, "l", _keys(10)[5:] + _keys(5, "new"), b) == 5
    shards = sorted((tmp_path / "rows").glob("*/*.f32"))
    assert [s.stat().st_size for s in shards] == [10 * 4 * 4, 5 * 4 * 4]
    index = cache.index(DIGEST, "l")
    got = cache.gather(index, ["new4", "k0", "k7", "new0"])
    assert np.array_equal(got, np.stack([b[9], a[0], a[7], b[5]]))
    # selected rows only, and repeated keys within one put are stored once
    assert cache.put(DIGEST, "l", ["x", "x", "y"], np.ones((5, 4), np.float32) * 7, rows=[0, 1, 4]) == 2
    out = np.zeros((3, 4), np.float32)
    cache.gather(cache.index(DIGEST, "l"), ["x", "y"], out=out, positions=[2, 0])
    assert (out[[0, 2]] == 7).all() and (out[1] == 0).all()


def test_non_float32_outputs_are_not_stored(tmp_path):
    cache = ActivationCache(tmp_path)
    assert cache.put(DIGEST, "next_word", ["a"], np.array([["w"]], dtype=object)) == 0
    assert len(cache.index(DIGEST, "next_word")) == 0


def test_killed_writers_leave_nothing_visible_and_are_swept(tmp_path):
    cache = ActivationCache(tmp_path)
    cache.put(DIGEST, "l", _keys(3), np.ones((3, 2), np.float32))
    folder = next((tmp_path / "rows").iterdir())
    # killed after the shard's rename but before its index: an unindexed shard; killed mid-write: a temp file;
    # a corrupt index (e.g. a disk filled) and an index whose shard is short are skipped too
    (folder / "99999999999999999999-1-dead.f32").write_bytes(b"\0" * 24)
    (folder / ".tmp-abc").write_bytes(b"partial")
    (folder / "99999999999999999998-1-bad.json").write_text("{not json")
    (folder / "99999999999999999997-1-short.json").write_text(json.dumps({"features": 2, "keys": ["z"]}))
    (folder / "99999999999999999997-1-short.f32").write_bytes(b"\0" * 3)
    index = cache.index(DIGEST, "l")
    assert sorted(index.rows) == ["k0", "k1", "k2"]
    old = time.time() - 7200
    for name in ("99999999999999999999-1-dead.f32", ".tmp-abc"):
        os.utime(folder / name, (old, old))
    cache.put(DIGEST, "l", ["k9"], np.zeros((1, 2), np.float32))
    assert not (folder / "99999999999999999999-1-dead.f32").exists() and not (folder / ".tmp-abc").exists()
    assert "k9" in cache.index(DIGEST, "l")


def _writer(root, worker, n):
    cache = ActivationCache(root)
    rng = np.random.default_rng(worker)
    for round_ in range(n):
        keys = [f"k{(worker * 7 + round_ * 3 + i) % 50}" for i in range(20)]
        # every writer stores the same value for the same key (a deterministic model)
        values = np.stack([np.full(64, int(k[1:]), np.float32) for k in keys])
        cache.put(DIGEST, "l", keys, values)
        index = cache.index(DIGEST, "l")
        got = cache.gather(index, keys)
        assert np.array_equal(got, values)
        time.sleep(rng.uniform(0, 0.002))


def test_concurrent_writers_in_separate_processes(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, 15)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    cache = ActivationCache(tmp_path)
    index = cache.index(DIGEST, "l")
    keys = sorted(index.rows)
    assert len(keys) == 50
    got = cache.gather(index, keys)
    assert np.array_equal(got[:, 0], np.array([int(k[1:]) for k in keys], np.float32))
    assert not list((tmp_path / "rows").glob("*/.tmp-*"))


def _png(color, size=(20, 10)):
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_image_keys_follow_the_placed_pixels_not_ids_or_sets():
    a = StimulusSet.from_bytes("a", {"s1": _png((255, 0, 0)), "s2": _png((0, 255, 0))}, visual_degrees=4)
    b = StimulusSet.from_bytes("b", {"other-id": _png((0, 255, 0)), "s3": _png((0, 0, 255))}, visual_degrees=4)
    ka, kb = stimulus_keys(a, 8), stimulus_keys(b, 8)
    assert ka[1] == kb[0] and len(set(ka + kb)) == 3  # the same picture under another id and set
    assert stimulus_keys(a, 4) != ka  # another placement sends other pixels
    _, placed = next(a.iter_placed(8))
    assert ka[0] == image_key(placed)
    # the same pixels reached through another placement are the same stimulus for the model
    c = StimulusSet.from_bytes("c", {"s": _png((255, 0, 0))}, visual_degrees=8)
    d = StimulusSet.from_bytes("d", {"s": _png((255, 0, 0))}, visual_degrees=4)
    assert stimulus_keys(c, 8) == stimulus_keys(d, 4)  # both unchanged files


def test_text_keys_depend_on_the_whole_context_and_position():
    one = text_keys([("a", "The", "c1"), ("b", "dog", "c1"), ("c", "The", "c2"), ("d", "cat", "c2")])
    again = text_keys([("x", "The", "z"), ("y", "dog", "z")])
    assert one[:2] == again  # ids and context names do not matter
    assert one[0] != one[2]  # "The" before "dog" is not "The" before "cat"
    assert len(set(one)) == 4
    assert text_keys([("a", "dog", "c"), ("b", "The", "c")])[1] != one[0]


class _FakeClient:
    """Stands in for a model: each output row is a function of the pixels (or the part's text and context)."""

    def __init__(self):
        self.sent: list[list[str]] = []

    def run(self, description, stimuli, stimulus_ids, *, layers, behaviours, timeout_s, on_progress, run_id):
        items = list(stimuli)
        assert [item[0] for item in items] == list(stimulus_ids)
        self.sent.append(list(stimulus_ids))
        outputs = {}
        for name in list(layers) + list(behaviours):
            if isinstance(items[0][1], str):  # text: position in the context and the text's length
                rows, seen = [], {}
                for _, text, context in items:
                    seen[context] = seen.get(context, 0) + 1
                    rows.append([seen[context], len(text), len(name)])
            else:
                rows = [[float(p.mean()), float(p[0, 0, 0]), len(name)] for _, p in items]
            outputs[name] = np.asarray(rows, dtype=np.float32)
        return type("Result", (), {"outputs": outputs})()


def _job(tmp_path, use_cache=True):
    from cortexbox.orchestrator.jobs import ScoreRequest, _Job

    job = _Job(ScoreRequest(benchmark="-", image="some/image", use_cache=use_cache), registry=None,
               cache=ActivationCache(tmp_path), events=lambda e, d: None)
    job.model_row = type("Row", (), {"digest": DIGEST, "info": {"visual_degrees": 8, "layers": {"a": [3], "b": [3]}}})()
    client = _FakeClient()
    job.session = type("Session", (), {"client": client, "description": None})()
    return job, client


def test_extract_sends_only_missing_stimuli_and_assembles_in_order(tmp_path):
    colours = {f"s{i}": _png((10 * i, 0, 0)) for i in range(8)}
    first = StimulusSet.from_bytes("first", dict(list(colours.items())[:5]), visual_degrees=8)
    # another set: other ids, three pictures seen before (in another order) and three new ones
    second = StimulusSet.from_bytes(
        "second", {"x4": colours["s4"], "x5": colours["s5"], "x0": colours["s0"], "x6": colours["s6"],
                   "x2": colours["s2"], "x7": colours["s7"]}, visual_degrees=8)
    job, client = _job(tmp_path)
    a1 = job.extract(first, ["a"], "first")["a"]
    assert client.sent == [["s0", "s1", "s2", "s3", "s4"]]
    got = job.extract(second, ["a", "b"], "second")  # b is new for every stimulus
    assert client.sent[-1] == ["x4", "x5", "x0", "x6", "x2", "x7"]
    got = job.extract(second, ["a"], "again")
    assert len(client.sent) == 2  # everything cached: nothing sent
    job2, client2 = _job(tmp_path)
    third = StimulusSet.from_bytes("third", {"y3": colours["s3"], "y1": colours["s1"], "y9": _png((1, 2, 3))}, visual_degrees=8)
    out = job2.extract(third, ["a"], "third")
    assert client2.sent == [["y9"]]
    assert np.array_equal(out["a"][:2], a1[[3, 1]]) and out["a"][2, 1] == 1
    # s4 has both outputs stored, s1 only "a": only s1 goes, for both outputs
    fourth = StimulusSet.from_bytes("fourth", {"z4": colours["s4"], "z1": colours["s1"]}, visual_degrees=8)
    both = job2.extract(fourth, ["a", "b"], "fourth")
    assert client2.sent[-1] == ["z1"]
    fresh, _ = _job(tmp_path / "elsewhere")
    for name in ("a", "b"):
        assert np.array_equal(both[name], fresh.extract(fourth, [name], "fresh")[name])
    assert np.array_equal(out["a"], fresh.extract(third, ["a"], "fresh")["a"])
    assert np.array_equal(got["a"], fresh.extract(second, ["a"], "fresh")["a"])
    assert job.cache_stats == {"stimuli": 17, "sent": 11} and not job.from_cache


def test_extract_without_cache_sends_everything_but_still_stores(tmp_path):
    s = StimulusSet.from_bytes("s", {"a": _png((1, 1, 1)), "b": _png((2, 2, 2))}, visual_degrees=8)
    job, client = _job(tmp_path, use_cache=False)
    job.extract(s, ["a"], "x")
    job.extract(s, ["a"], "x")
    assert client.sent == [["a", "b"], ["a", "b"]]
    job, client = _job(tmp_path)
    job.extract(s, ["a"], "x")
    assert client.sent == [] and job.from_cache


def test_extract_sends_text_in_whole_contexts(tmp_path):
    from cortexbox.benchmarks.language import TextStimulusSet

    one = TextStimulusSet("one", [("1", "The", "c1"), ("2", "dog", "c1"), ("3", "A", "c2"), ("4", "cat", "c2")])
    two = TextStimulusSet("two", [("5", "A", "k1"), ("6", "cat", "k1"), ("7", "A", "k2"), ("8", "cow", "k2")])
    job, client = _job(tmp_path)
    job.model_row.info["visual_degrees"] = 0  # ignored for text
    first = job.extract(one, ["a"], "one")["a"]
    second = job.extract(two, ["a"], "two")["a"]
    assert client.sent == [["1", "2", "3", "4"], ["7", "8"]]  # "A cat" was read before, "A cow" was not
    assert np.array_equal(second[:2], first[2:]) and np.array_equal(second[2:], [[1, 1, 1], [2, 3, 1]])


def test_a_cache_that_cannot_be_written_does_not_fail_the_run(tmp_path, monkeypatch):
    s = StimulusSet.from_bytes("s", {"a": _png((1, 1, 1)), "b": _png((2, 2, 2))}, visual_degrees=8)
    job, client = _job(tmp_path)
    stages = []
    job.events = lambda e, d: stages.append(d.get("text", "")) if e == "stage" else None

    def full(f):
        f.write(b"\0" * 8)
        raise OSError(28, "No space left on device")

    real = cache_module._atomic_write
    monkeypatch.setattr(cache_module, "_atomic_write", lambda path, write: real(path, full) if path.suffix == ".f32" else real(path, write))
    values = job.extract(s, ["a"], "x")["a"]
    assert values.shape == (2, 3) and client.sent == [["a", "b"]]
    assert any("not stored" in text and "No space" in text for text in stages)
    folder = next((tmp_path / "rows").iterdir())
    assert sorted(p.name for p in folder.iterdir()) == ["about.json"]  # the temp file was removed
    monkeypatch.undo()
    assert job.extract(s, ["a"], "x")["a"].shape == (2, 3) and len(client.sent) == 2
    # a partly cached set whose new rows cannot be stored is assembled in memory
    more = StimulusSet.from_bytes("more", {"c": _png((3, 3, 3)), "a": _png((1, 1, 1))}, visual_degrees=8)
    monkeypatch.setattr(cache_module, "_atomic_write", lambda path, write: real(path, full) if path.suffix == ".f32" else real(path, write))
    got = job.extract(more, ["a"], "y")["a"]
    assert client.sent[-1] == ["c"] and np.array_equal(got[1], values[0]) and got[0, 1] == 3


def test_remove_legacy_deletes_only_the_earlier_per_set_entries(tmp_path):
    cache = ActivationCache(tmp_path)
    keys = [image_key(np.full((4, 4, 3), i, np.uint8)) for i in range(3)]
    cache.put("sha256:" + "a" * 64, "layer", keys, np.ones((3, 2), np.float32))
    legacy = tmp_path / "ab"
    legacy.mkdir()
    (legacy / ("c" * 64 + ".npy")).write_bytes(b"x" * 100)
    (legacy / ("c" * 64 + ".json")).write_text("{}")
    assert cache.remove_legacy() == (2, 102)
    assert not legacy.exists()
    index = cache.index("sha256:" + "a" * 64, "layer")
    assert len(index) == 3 and np.array_equal(cache.gather(index, keys), np.ones((3, 2), np.float32))
    assert cache.remove_legacy() == (0, 0)
