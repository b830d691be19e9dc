"""The per-stimulus activation cache: rows keyed by image digest, output and placed content; append-only
shards with their own index files; safe against concurrent writers and writers killed mid-way."""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import time

import numpy as np
import pytest
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


#: The extraction runs' plans (scoring/fair.py), newest last: what each run sent, as the set's stimuli.
_PLANS: list[tuple[object, object]] = []


@pytest.fixture(autouse=True)
def _record_plans():
    """Records each extraction run's plan and the set it sends, so a fake client can say which of the set's
    stimuli a run sent (on the wire they go under random ids, shuffled, with repeat probes)."""
    from cortexbox.orchestrator.scoring import fair

    make = fair.RunPlan.make

    def recording(stimulus_set, *args, **kwargs):
        plan = make(stimulus_set, *args, **kwargs)
        _PLANS.append((plan, stimulus_set))
        return plan

    patch = pytest.MonkeyPatch()  # its own: a test's monkeypatch.undo() must not undo this
    patch.setattr(fair.RunPlan, "make", recording)
    yield
    patch.undo()
    _PLANS.clear()


class _FakeClient:
    """Stands in for a model: each output row is a function of the pixels (or the part's text and context).
    ``sent`` lists, per run, the set's stimulus ids that went out (in the set's order)."""

    def __init__(self):
        self.sent: list[list[str]] = []

    def run(self, description, stimuli, stimulus_ids, *, layers, behaviours, timeout_s, on_progress, run_id):
        items = list(stimuli)
        assert [item[0] for item in items] == list(stimulus_ids)
        plan, sent_set = next((p, st) for p, st in reversed(_PLANS) if p.ids == list(stimulus_ids))
        names = [part[0] for part in sent_set.parts] if plan.text else list(sent_set.stimulus_ids)
        assert not set(names) & set(stimulus_ids)  # the set's ids never reach the model
        self.sent.append(names)
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
    from cortexbox.orchestrator.scoring.job import ScoreRequest, _Job

    job = _Job(ScoreRequest(benchmark="-", image="some/image", use_cache=use_cache), registry=None,
               cache=ActivationCache(tmp_path), events=lambda e, d: None)
    job.model_row = type("Row", (), {"digest": DIGEST, "info": {"visual_degrees": 8, "layers": {"a": [3], "b": [3]}}})()
    client = _FakeClient()
    job.session = type("Session", (), {"client": client, "description": None, "check_budgets": lambda self: None})()
    job.recorded = True  # the model's description is stored already
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


# -- the budget: cap, LRU order, pins ----------------------------------------------------------------
def test_sizes_parse_with_binary_units():
    from cortexbox.orchestrator.cache import parse_size
    from cortexbox.orchestrator.errors import UserError

    assert parse_size("20g") == 20 * 2**30 and parse_size("1.5GiB") == 3 * 2**29
    assert parse_size("500M") == 500 * 2**20 and parse_size(" 64kb ") == 64 * 1024 and parse_size("123") == 123
    assert parse_size("0") == 0 and parse_size("2t") == 2 * 2**40
    for bad in ("", "g", "-1g", "20x", "1e9", "twenty"):
        try:
            parse_size(bad)
        except UserError as e:
            assert e.hint
        else:
            raise AssertionError(f"{bad!r} parsed")


def test_cap_from_the_environment_or_a_share_of_the_disk(tmp_path, monkeypatch):
    from cortexbox.orchestrator.errors import UserError

    monkeypatch.setenv("CORTEXBOX_CACHE_MAX_BYTES", "20g")
    cache = ActivationCache(tmp_path)
    assert cache.max_bytes() == 20 * 2**30 and cache.cap_source == "$CORTEXBOX_CACHE_MAX_BYTES"
    assert ActivationCache(tmp_path, max_bytes=1000).max_bytes() == 1000  # an explicit cap wins
    monkeypatch.setenv("CORTEXBOX_CACHE_MAX_BYTES", "lots")
    try:
        ActivationCache(tmp_path)
    except UserError as e:
        assert "CORTEXBOX_CACHE_MAX_BYTES" in str(e) and "20g" in e.hint
    else:
        raise AssertionError("a bad size was accepted")
    monkeypatch.delenv("CORTEXBOX_CACHE_MAX_BYTES")
    cache = ActivationCache(tmp_path)
    cache.put(DIGEST, "l", _keys(4), np.ones((4, 1000), np.float32))
    used = cache.usage().total_bytes
    assert used >= 16000
    # half of what the cache could use (its own files + free space), at most 32 GiB
    monkeypatch.setattr(cache, "free_bytes", lambda: 10 * 2**30)
    assert cache.max_bytes() == (10 * 2**30 + used) // 2
    monkeypatch.setattr(cache, "free_bytes", lambda: 1000 * 2**30)
    assert cache.max_bytes() == 32 * 2**30 and "32 GiB" in cache.cap_source
    real = ActivationCache(tmp_path)
    assert 0 < real.free_bytes() and real.max_bytes() <= min(32 * 2**30, (real.free_bytes() + used) / 2 + 4096)


def _shard_names(root):
    return sorted(p.stem for p in (root / "rows").glob("*/*.f32"))


def test_a_write_over_the_cap_evicts_least_recently_used_shards(tmp_path):
    row = np.ones((10, 100), np.float32)  # 4000 bytes a shard (+ its index)
    cache = ActivationCache(tmp_path, max_bytes=10**9)
    for name in "abc":
        cache.put(DIGEST, name, _keys(10), row)
        time.sleep(0.05)
    a, b, c = _shard_names(tmp_path)  # names start with the time of writing
    index = cache.index(DIGEST, "a")
    time.sleep(0.05)
    cache.gather(index, _keys(3))  # "a" is read: now the most recently used of the three
    index.close()
    usage = cache.usage()
    assert [s.name for s in usage.shards] == [b, c, a]
    shard_bytes = usage.shards[0].bytes
    # a cap of three shards and a bit: the fourth write crosses it and evicts down to 90% of the cap,
    # the least recently used first ("b", then "c"); "a", read after them, and the new shard stay
    cache._max_bytes = 3 * shard_bytes + usage.other_bytes + 200
    time.sleep(0.05)
    cache.put(DIGEST, "d", _keys(10), row)
    left = [s.name for s in cache.usage().shards]
    assert b not in left and c not in left and a in left and len(left) == 2
    assert cache.usage().total_bytes <= 0.9 * cache.max_bytes()
    assert len(cache.index(DIGEST, "b")) == 0 and len(cache.index(DIGEST, "a")) == 10
    # the folders of evicted outputs are gone too
    assert len(list((tmp_path / "rows").iterdir())) == 2


def test_prune_to_a_size_and_all(tmp_path):
    cache = ActivationCache(tmp_path, max_bytes=10**9)
    for name in "abcd":
        cache.put(DIGEST, name, _keys(10), np.ones((10, 100), np.float32))
        time.sleep(0.02)
    cache.close()  # the last put's pin
    before = cache.usage()
    result = cache.prune(before.total_bytes - 1)
    assert result.removed == 1 and result.in_use == 0 and result.freed_bytes == before.shards[0].bytes
    assert [s.name for s in cache.usage().shards] == [s.name for s in before.shards[1:]]
    assert cache.prune().removed == 0  # under the cap already
    result = cache.prune(0)
    assert result.removed == 3 and result.total_bytes == 0 and cache.usage().total_bytes == 0
    assert list((tmp_path / "rows").iterdir()) == []


def _hold_index(root, ready, go, result):
    """A live run in another process: indexes an output, waits while the cache is pruned, then reads it."""
    cache = ActivationCache(root)
    index = cache.index(DIGEST, "held")
    ready.set()
    go.wait(60)
    try:
        got = cache.gather(index, _keys(50))
        result.put(bool(np.array_equal(got, np.arange(50 * 8, dtype=np.float32).reshape(50, 8))))
    except Exception as e:  # noqa: BLE001
        result.put(repr(e))


def test_eviction_never_removes_a_shard_a_live_process_is_reading(tmp_path):
    cache = ActivationCache(tmp_path, max_bytes=10**9)
    cache.put(DIGEST, "held", _keys(50), np.arange(50 * 8, dtype=np.float32).reshape(50, 8))
    cache.put(DIGEST, "other", _keys(50), np.zeros((50, 8), np.float32))
    cache.close()
    ctx = multiprocessing.get_context("fork")  # no pins are held at the fork
    ready, go, result = ctx.Event(), ctx.Event(), ctx.Queue()
    reader = ctx.Process(target=_hold_index, args=(str(tmp_path), ready, go, result))
    reader.start()
    try:
        assert ready.wait(60)
        pruned = ActivationCache(tmp_path).prune(0)
        assert pruned.removed == 1 and pruned.in_use == 1 and pruned.in_use_bytes > 50 * 8 * 4
        assert len(ActivationCache(tmp_path).index(DIGEST, "other")) == 0
        go.set()
        assert result.get(timeout=60) is True
    finally:
        go.set()
        reader.join(60)
    assert reader.exitcode == 0
    # the reader is gone, and so is its pin
    assert ActivationCache(tmp_path).prune(0).removed == 1 and cache.usage().total_bytes == 0


def _index_and_hang(root, ready):
    cache = ActivationCache(root)
    index = cache.index(DIGEST, "held")  # pinned, then the process is killed while holding it
    ready.set()
    time.sleep(600)
    index.close()


def test_a_killed_run_pins_nothing(tmp_path):
    cache = ActivationCache(tmp_path, max_bytes=10**9)
    cache.put(DIGEST, "held", _keys(5), np.ones((5, 8), np.float32))
    cache.close()
    ctx = multiprocessing.get_context("fork")  # no pins are held at the fork
    ready = ctx.Event()
    proc = ctx.Process(target=_index_and_hang, args=(str(tmp_path), ready))
    proc.start()
    assert ready.wait(60)
    assert ActivationCache(tmp_path).prune(0).in_use == 1
    proc.kill()
    proc.join(60)
    assert ActivationCache(tmp_path).prune(0).removed == 1


def _evicting_writer(root, worker, rounds):
    """Writes, indexes and reads back under a cap of zero, so every put evicts all that nobody holds."""
    cache = ActivationCache(root, max_bytes=0)
    rng = np.random.default_rng(worker)
    for round_ in range(rounds):
        output = f"o{rng.integers(3)}"
        keys = [f"k{int(i)}" for i in rng.choice(40, 12, replace=False)]
        values = np.stack([np.full(256, int(k[1:]) + len(output), np.float32) for k in keys])
        cache.put(DIGEST, output, keys, values)
        index = cache.index(DIGEST, output)  # what was just put is still there: its put pinned it
        assert not index.missing(keys), (worker, round_)
        held = [k for k in index.rows]
        time.sleep(rng.uniform(0, 0.003))  # others evict meanwhile
        got = cache.gather(index, held)  # every row the index promised is read, intact
        assert np.array_equal(got[:, 0], np.array([int(k[1:]) + len(output) for k in held], np.float32))
        index.close()


def test_concurrent_writers_under_a_zero_cap_always_read_what_they_indexed(tmp_path):
    ctx = multiprocessing.get_context("fork")  # no pins are held at the fork
    procs = [ctx.Process(target=_evicting_writer, args=(str(tmp_path), w, 40)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    # nobody holds anything now: the last writers' leftovers go
    assert ActivationCache(tmp_path).prune(0).in_use == 0
    assert ActivationCache(tmp_path).usage().total_bytes == 0


def test_extract_over_the_cap_keeps_what_it_reads_and_sends_each_stimulus_once(tmp_path):
    colours = {f"s{i}": _png((20 * i, 5, 0)) for i in range(6)}
    first = StimulusSet.from_bytes("first", dict(list(colours.items())[:3]), visual_degrees=8)
    whole = StimulusSet.from_bytes("whole", colours, visual_degrees=8)
    job, client = _job(tmp_path)
    job.extract(first, ["a", "b"], "first")
    # a cap of zero: every put evicts all that is not in use; the job holds the rows it reads, and the rows it
    # just stored until it has read them back, so it assembles from the shards without sending anything twice
    job.cache._max_bytes = 0
    got = job.extract(whole, ["a", "b"], "whole")
    assert client.sent[-1] == ["s3", "s4", "s5"] and len(client.sent) == 2
    fresh, _ = _job(tmp_path / "elsewhere", use_cache=False)
    for name in ("a", "b"):
        assert np.array_equal(got[name], fresh.extract(whole, [name], "fresh")[name])
    job.cache.close()
    assert job.cache.usage().total_bytes > 0  # over its cap after the run; the next write or a prune evicts
    assert job.cache.prune().total_bytes == 0


def test_cache_command_shows_usage_and_prunes(_isolated_home, monkeypatch):
    from cortexbox.registry import Registry
    from tests.orchestrator.test_cli import assert_one_line_error, cortexbox

    cache = ActivationCache()
    other = "sha256:" + "cd" * 32
    Registry().upsert_model(DIGEST, "pixels", "1", "cortexbox/pixels", {})
    cache.put(DIGEST, "pixels", _keys(20), np.ones((20, 1000), np.float32))
    time.sleep(0.05)
    cache.put(other, "evil[/]\x1b]0;title\x07", _keys(5), np.ones((5, 1000), np.float32))  # a model names its outputs
    cache.close()
    env = {"CORTEXBOX_CACHE_MAX_BYTES": "1g"}
    shown = cortexbox("cache", "show", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert report["max_bytes"] == 2**30 and report["cap"] == "$CORTEXBOX_CACHE_MAX_BYTES" and report["free_bytes"] > 0
    assert [(o["model"], o["output"], o["shards"]) for o in report["outputs"]] == [
        ("pixels", "pixels", 1), (None, "evil[/]\x1b]0;title\x07", 1)]
    assert report["total_bytes"] == cache.usage().total_bytes > 25 * 4000
    text = cortexbox("cache", env=env)  # the bare group shows the same, for people
    assert text.returncode == 0, text.stderr
    assert "pixels" in text.stdout and "1.0 GiB cap" in text.stdout and "evil[/]" in text.stdout and "\x1b" not in text.stdout
    assert "sha256:cdcdcdcdcdcd" in text.stdout  # unregistered: its digest
    # prune --to: the least recently used output goes first
    pruned = cortexbox("cache", "prune", "--to", str(report["total_bytes"] - 1), "--json", env=env)
    assert pruned.returncode == 0, pruned.stderr
    assert json.loads(pruned.stdout)["removed"] == 1
    assert [o["output"] for o in ActivationCache().report()["outputs"]] == ["evil[/]\x1b]0;title\x07"]
    assert_one_line_error(cortexbox("cache", "prune", "--to", "lots"), "--to 'lots' is not a size")
    assert_one_line_error(cortexbox("cache", "prune", "--to", "1g", "--all"), "at most one of")
    everything = cortexbox("cache", "prune", "--all")
    assert everything.returncode == 0 and "removed 1 shard(s)" in everything.stdout
    assert ActivationCache().usage().total_bytes == 0
