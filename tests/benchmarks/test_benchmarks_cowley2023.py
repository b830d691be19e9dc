"""Cowley2023.V4-pls on the real data: registry, assemblies, ceiling, scoring, selection data."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import scipy.stats
from PIL import Image

from cortexbox.benchmarks import (
    Score,
    UnknownBenchmark,
    average_repetition,
    get_benchmark,
    list_benchmarks,
    neuroid_assembly,
)
from cortexbox.benchmarks.data import files_hash, sha256_file

pytestmark = pytest.mark.data

BENCHMARK = "Cowley2023.V4-pls"

# Measured on the shared data (see test_ceiling_value for why these numbers).
CEILING = 0.7594612410432182
CEILING_ERROR = 0.003139812877584314
DATA_HASH = "8bfa8823adb53e8ac7ad29cb96f76891eae8dd010f4544def5d2236f11055503"


@pytest.fixture(scope="module")
def ids(bench) -> list[str]:
    return bench.stimulus_set.stimulus_ids


@pytest.fixture(scope="module")
def target(bench) -> np.ndarray:
    return bench.target_assembly.values


def _oracle(target: np.ndarray, noise: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return target + rng.normal(scale=noise * target.std(axis=0), size=target.shape)


# --- registry and metadata ----------------------------------------------------------------------------------------


def test_registry_lists_and_rejects_unknown_ids():
    assert BENCHMARK in list_benchmarks()
    with pytest.raises(KeyError) as caught:
        get_benchmark("Nope2099.IT-pls")
    assert isinstance(caught.value, UnknownBenchmark)
    assert "Nope2099.IT-pls" in str(caught.value) and BENCHMARK in str(caught.value)


def test_metadata(bench, data_dir):
    assert bench.identifier == BENCHMARK and bench.version == 2 and bench.region == "V4"
    assert "210325" in bench.description and "cowley2026/benchmark.py" in bench.description  # the size's source
    assert "Cowley" in bench.citation and "10.1101/2023.11.22.568315" in bench.citation
    assert bench.source_visual_degrees == 11.2 == bench.stimulus_set.visual_degrees  # Brain-Score's value (v1: 8)
    assert get_benchmark(BENCHMARK, data_dir=data_dir) is bench  # one instance: ceiling computed once
    info = bench.info()
    json.dumps(info)
    assert info["n_stimuli"] == 640 and info["n_neuroids"] == 50 and info["n_selection_stimuli"] == 300


def test_data_hash_covers_the_files_read(bench, data_dir):
    files = [
        "cowley2023_v4/images/images_210325.zip",
        "cowley2023_v4/responses_repeat_averaged/responses_210325.npy",
        "cowley2023_v4/responses_raw/responses_210325.npy",
        "cowley2023_v4/images/images_210224.zip",
        "cowley2023_v4/responses_repeat_averaged/responses_210224.npy",
    ]
    assert bench.data_hash == files_hash(data_dir, files) == DATA_HASH
    assert files_hash(data_dir, files[:-1]) != DATA_HASH
    assert len(sha256_file(data_dir / files[0])) == 64


# --- assemblies and stimuli ---------------------------------------------------------------------------------------


def test_stimulus_set_lines_up_with_the_responses(bench, ids):
    assert len(bench.stimulus_set) == 640
    assert ids[0] == "210325/image0001" and ids[-1] == "210325/image0640"
    assert list(bench.target_assembly["stimulus_id"].values) == ids
    _, image = next(bench.stimulus_set.iter_placed(bench.source_visual_degrees))
    assert image.shape == (112, 112, 3) and image.dtype == np.uint8


def test_repetition_assembly_drops_nan_pads_and_averages_to_the_target(bench, data_dir):
    raw = np.load(data_dir / "cowley2023_v4/responses_raw/responses_210325.npy")
    repetitions = bench.repetition_assembly
    assert repetitions.dims == ("presentation", "neuroid")
    assert repetitions.sizes["presentation"] == int((~np.isnan(raw[0])).sum()) == 4840
    assert not np.isnan(repetitions.values).any()
    assert set(np.unique(repetitions["repetition"].values)) == set(range(10))
    averaged = average_repetition(repetitions)
    assert list(averaged["stimulus_id"].values) == list(bench.target_assembly["stimulus_id"].values)
    np.testing.assert_allclose(averaged.values, bench.target_assembly.values, atol=1e-12)


# --- ceiling ------------------------------------------------------------------------------------------------------


def test_ceiling_value(bench, data_dir):
    """Brain-Score's internal consistency on 210325: 0.7595 +- 0.0031.

    PROVENANCE.md / data.md report 0.77 for the odd/even split; Brain-Score draws 10 random halves of the 10
    repetition values instead. Recomputed here, the odd/even figure is 0.77, and random halves come out a little
    lower (0.745-0.774 per split). The golden value pins the exact computation; the range check says what is
    plausible for any correct split-half estimate on this recording.
    """
    ceiling = bench.ceiling
    assert ceiling.raw == pytest.approx(CEILING, abs=1e-9)
    assert ceiling.error == pytest.approx(CEILING_ERROR, abs=1e-9)
    assert len(ceiling.values) == 10 and all(0.74 < v < 0.78 for v in ceiling.values)
    assert 0.755 < ceiling.raw < 0.765
    raw = np.load(data_dir / "cowley2023_v4/responses_raw/responses_210325.npy")  # (neurons, images, repeats)
    odd, even = np.nanmean(raw[:, :, 0::2], axis=2), np.nanmean(raw[:, :, 1::2], axis=2)
    r = np.array([scipy.stats.pearsonr(odd[j], even[j])[0] for j in range(raw.shape[0])])
    odd_even = float(np.median(2 * r / (1 + r)))
    assert odd_even == pytest.approx(0.77, abs=0.005)
    assert abs(ceiling.raw - odd_even) < 0.02
    assert ceiling.attrs["n_unique_repetitions"] == 10 and ceiling.attrs["random_state"] == 1


def test_ceiling_is_cached_on_disk(data_dir, tmp_path):
    first = get_benchmark(BENCHMARK, data_dir=data_dir, cache_dir=tmp_path)
    ceiling = first.ceiling
    [path] = list((tmp_path / "ceilings").glob("*.json"))
    assert path.name.startswith(f"{BENCHMARK}--v2--{DATA_HASH[:16]}")
    stored = json.loads(path.read_text())
    stored["raw"] = 0.123  # prove the second instance reads the file rather than recomputing
    path.write_text(json.dumps(stored))
    second = type(first)(data_dir=data_dir, cache_dir=tmp_path)
    assert second.ceiling.raw == 0.123
    assert second.ceiling.values == pytest.approx(ceiling.values)


# --- scoring ------------------------------------------------------------------------------------------------------


def test_oracle_scores_high_in_any_row_order(bench, ids, target):
    features = _oracle(target, noise=0.5)
    ordered = bench.score(neuroid_assembly(features, ids, layer="oracle", model="test"))
    shuffle = np.random.default_rng(1).permutation(len(ids))
    shuffled = bench.score(neuroid_assembly(features[shuffle], [ids[i] for i in shuffle], layer="oracle"))
    assert 0.75 < ordered.raw < 0.85  # measured 0.795
    assert shuffled.raw == pytest.approx(ordered.raw, abs=1e-9)
    assert shuffled.values == pytest.approx(ordered.values, abs=1e-9)
    assert ordered.ceiling == pytest.approx(CEILING, abs=1e-9)
    assert ordered.ceiled == pytest.approx(ordered.raw**2 / CEILING)
    assert ordered.attrs["normalization"] == "r2_over_ceiling"
    assert ordered.attrs["ceiling_error"] == pytest.approx(CEILING_ERROR)
    assert ordered.attrs["metric"] == "pls" and ordered.attrs["n_splits"] == 10
    assert ordered.attrs["benchmark"] == BENCHMARK and ordered.attrs["data_hash"] == DATA_HASH
    assert len(ordered.values) == 10 and ordered.error > 0
    less_noise = bench.score(neuroid_assembly(_oracle(target, noise=0.1), ids, layer="oracle"))
    assert less_noise.raw > ordered.raw + 0.03  # measured 0.84: 25 PLS components cap even a near-copy


def test_random_features_score_near_zero_through_the_projection(bench, ids):
    features = np.random.default_rng(0).standard_normal((640, 5000), dtype=np.float32)
    score = bench.score(neuroid_assembly(features, ids, layer="random"))
    assert score.attrs["projected"] and score.attrs["rank"] == 639
    assert abs(score.raw) < 0.05  # measured -0.02 (5000 and 100,000 features alike)
    assert score.ceiled < 0.01


def test_score_to_dict_is_strict_json(bench, ids, target):
    score = bench.score(neuroid_assembly(_oracle(target, noise=1.0), ids, layer="x"))
    text = json.dumps(score.to_dict(), allow_nan=False)
    restored = Score.from_dict(json.loads(text))
    assert restored.raw == score.raw and restored.ceiled == score.ceiled and restored.values == score.values


def test_size_one_time_bin_is_squeezed(bench, ids, target):
    assembly = neuroid_assembly(_oracle(target, noise=0.5), ids, layer="x").expand_dims("time_bin", axis=2)
    assert bench.score(assembly).raw == pytest.approx(
        bench.score(neuroid_assembly(_oracle(target, noise=0.5), ids, layer="x")).raw
    )


def _with_ids(assembly, stimulus_ids):
    return assembly.assign_coords(stimulus_id=("presentation", stimulus_ids))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda a: a.isel(presentation=slice(1, None)), r"1 missing: '210325/image0001'"),
        (
            lambda a: _with_ids(a, ["210224/image0001", *a.stimulus_id.values[1:]]),
            r"1 unexpected: '210224/image0001'",
        ),
        (
            lambda a: _with_ids(a, [a.stimulus_id.values[1], *a.stimulus_id.values[1:]]),
            "duplicated",
        ),
        (lambda a: a.where(~((a.presentation == 5) & (a.neuroid == 2))), r"non-finite.*stimulus_id='210325/image0006'"),
        (lambda a: a.rename(neuroid="unit"), "expected dims"),
        (lambda a: a.drop_vars("neuroid_id"), "no 'neuroid_id' coordinate"),
        (lambda a: a.values, "expected an xarray.DataArray"),
    ],
    ids=["missing", "extra", "duplicate", "nan", "dims", "neuroid_id", "numpy"],
)
def test_bad_assemblies_raise_clear_value_errors(bench, ids, target, mutate, message):
    assembly = neuroid_assembly(_oracle(target, noise=0.5), ids, layer="x")
    with pytest.raises(ValueError, match=message):
        bench.score(mutate(assembly))


def test_neuroid_assembly_builder():
    values = np.arange(12, dtype=np.float32).reshape(3, 4)
    assembly = neuroid_assembly(values, ["a", "b", "c"], layer="conv1", model="alexnet")
    assert assembly.dims == ("presentation", "neuroid")
    assert list(assembly.neuroid_id.values) == [f"alexnet.conv1.{i}" for i in range(4)]
    assert list(assembly.layer.values) == ["conv1"] * 4 and list(assembly.neuroid_num.values) == [0, 1, 2, 3]
    assert np.shares_memory(assembly.values, values)  # not copied
    with pytest.raises(ValueError, match="2-D"):
        neuroid_assembly(values.reshape(3, 2, 2), ["a", "b", "c"], layer="conv1")
    with pytest.raises(ValueError, match="unique"):
        neuroid_assembly(values, ["a", "a", "c"], layer="conv1")
    with pytest.raises(ValueError, match="2 stimulus_ids for 3 rows"):
        neuroid_assembly(values, ["a", "b"], layer="conv1")


# --- selection data -----------------------------------------------------------------------------------------------


def test_selection_data_is_fixed_and_disjoint_from_the_scored_images(bench):
    selection = bench.selection_stimulus_set
    assert len(selection) == 300 and selection.identifier == "Cowley2023.210224.selection300"
    assert all(s.startswith("210224/") for s in selection.stimulus_ids)
    # RandomState(0).permutation(800)[:300], sorted: pinned so the subset can never drift
    assert selection.stimulus_ids[:3] == ["210224/image0002", "210224/image0003", "210224/image0007"]
    assert selection.stimulus_ids[-1] == "210224/image0798"
    assert list(bench.selection_assembly.stimulus_id.values) == selection.stimulus_ids
    assert bench.selection_assembly.sizes == {"presentation": 300, "neuroid": 67}
    scored = {blob for _, blob in bench.stimulus_set.iter_bytes()}
    assert not any(blob in scored for _, blob in selection.iter_bytes())


def test_score_for_selection(bench, ids, target):
    selection_ids = bench.selection_stimulus_set.stimulus_ids
    responses = bench.selection_assembly.values
    good = bench.score_for_selection(neuroid_assembly(_oracle(responses, noise=0.5), selection_ids, layer="good"))
    noise = np.random.default_rng(3).standard_normal((300, 2000))
    bad = bench.score_for_selection(neuroid_assembly(noise, selection_ids, layer="bad"))
    assert isinstance(good, float) and good > 0.7 > 0.1 > abs(bad)
    with pytest.raises(ValueError, match="missing"):
        bench.score_for_selection(neuroid_assembly(_oracle(target, noise=0.5), ids, layer="test-images"))


def test_placed_images_decode_like_the_zip(bench):
    """At the experiment's own degrees the model gets the JPEG's pixels, not a re-encoded copy."""
    stimulus_id, blob = next(bench.stimulus_set.iter_bytes())
    original = np.asarray(Image.open(io.BytesIO(blob)).convert("RGB"))
    placed_id, placed = next(bench.stimulus_set.iter_placed(bench.source_visual_degrees))
    assert placed_id == stimulus_id
    np.testing.assert_array_equal(placed, original)
