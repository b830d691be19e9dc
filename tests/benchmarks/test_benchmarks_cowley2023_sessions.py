"""Cowley2023.V4-sessions-{pls,ridge}: the four held-out test sessions, scored per session and averaged."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from cortexbox.benchmarks import Score, get_benchmark, neuroid_assembly
from cortexbox.benchmarks.data import files_hash
from cortexbox.benchmarks.metrics import CrossRegressedCorrelation

pytestmark = pytest.mark.data

PLS, RIDGE = "Cowley2023.V4-sessions-pls", "Cowley2023.V4-sessions-ridge"
SESSIONS = ("190923", "201025", "210225", "210325")
SIZES = {"190923": (1200, 33), "201025": (1200, 89), "210225": (1200, 55), "210325": (640, 50)}
DATA_HASH = "69962b848f921fef67f462cecd64f741bb36ee4562d4d0a695cae5b00234d8ce"
STIMULUS_SET_HASH = "7dbc5e0d1d9145cb581d7d6afe06f9076a2405d0329e32fce7ddd354771f1234"
V1_CEILING = 0.7594612410432182  # Cowley2023.V4-pls's ceiling (session 210325)


@pytest.fixture(scope="module")
def pls(data_dir):
    return get_benchmark(PLS, data_dir=data_dir)


@pytest.fixture(scope="module")
def ridge(data_dir):
    return get_benchmark(RIDGE, data_dir=data_dir)


@pytest.fixture(scope="module")
def ids(pls) -> list[str]:
    return pls.stimulus_set.stimulus_ids


@pytest.fixture(scope="module")
def oracle(pls) -> np.ndarray:
    """Each session's responses plus noise in the first columns of its rows (89 columns, zero-padded)."""
    rng = np.random.default_rng(0)
    blocks = []
    for assembly in pls.session_assemblies.values():
        values = assembly.values
        noisy = values + rng.normal(scale=0.5 * values.std(axis=0), size=values.shape)
        blocks.append(np.pad(noisy, ((0, 0), (0, 89 - values.shape[1]))))
    return np.vstack(blocks)


def test_metadata_and_v1_untouched(pls, ridge, bench, data_dir):
    for b, name in ((pls, PLS), (ridge, RIDGE)):
        assert b.identifier == name and b.version == 2 and b.kind == "neural" and b.region == "V4"
        assert "BORROWED" in b.description and "210325" in b.description and "sqrt(sum" in b.description
        assert b.source_visual_degrees == 11.2 and "cowley2026/benchmark.py" in b.description
        info = b.info()
        json.dumps(info)
        assert info["sessions"] == {s: {"presentation": n, "neuroid": k} for s, (n, k) in SIZES.items()}
    assert pls.metric.name == "pls" and ridge.metric.name == "ridge"
    assert bench.identifier == "Cowley2023.V4-pls" and bench.version == 2 and len(bench.stimulus_set) == 640
    files = [
        *[f"cowley2023_v4/{kind}/{prefix}_{s}.{ext}" for s in SESSIONS
          for kind, prefix, ext in (("images", "images", "zip"), ("responses_repeat_averaged", "responses", "npy"))],
        "cowley2023_v4/responses_raw/responses_210325.npy",
        "cowley2023_v4/images/images_210224.zip",
        "cowley2023_v4/responses_repeat_averaged/responses_210224.npy",
    ]
    assert pls.data_hash == ridge.data_hash == files_hash(data_dir, files) == DATA_HASH


def test_stimulus_set_is_the_union_of_the_sessions(pls, ids):
    assert len(ids) == 4240 and len(set(ids)) == 4240
    assert [s.split("/")[0] for s in ids] == [s for s in SESSIONS for _ in range(SIZES[s][0])]
    start = 0
    for assembly in pls.session_assemblies.values():
        n = assembly.sizes["presentation"]
        assert ids[start : start + n] == list(assembly["stimulus_id"].values)
        start += n
    assert pls.stimulus_set.identifier == "Cowley2023.test_sessions"
    assert pls.stimulus_set.hash == STIMULUS_SET_HASH


def test_ceiling_is_borrowed_from_210325(pls, ridge, bench):
    for b in (pls, ridge):
        assert b.ceiling.raw == pytest.approx(V1_CEILING, abs=1e-12) == bench.ceiling.raw
        assert b.ceiling.attrs["ceiling_session"] == "210325"
        assert b.ceiling.attrs["applies_to_sessions"] == list(SESSIONS)


def test_oracle_scores_each_session_on_its_own_and_averages(ridge, ids, oracle):
    score = ridge.score(neuroid_assembly(oracle, ids, layer="oracle"))
    sessions = score.attrs["sessions"]
    assert list(sessions) == list(SESSIONS) and score.values == [sessions[s]["raw"] for s in SESSIONS]
    assert all(sessions[s]["n_stimuli"] == SIZES[s][0] and sessions[s]["n_neuroids"] == SIZES[s][1] for s in SESSIONS)
    assert all(v > 0.6 for v in score.values)  # measured 0.82-0.97
    assert score.raw == pytest.approx(np.mean(score.values))
    errors = [sessions[s]["error"] for s in SESSIONS]
    assert score.error == pytest.approx(math.sqrt(sum(e**2 for e in errors)) / 4)
    assert score.ceiling == pytest.approx(V1_CEILING) and score.ceiled == pytest.approx(score.raw**2 / V1_CEILING)
    assert sessions["201025"]["ceiled"] == pytest.approx(sessions["201025"]["raw"] ** 2 / V1_CEILING)
    assert score.attrs["metric"] == "ridge" and score.attrs["benchmark"] == RIDGE
    assert score.attrs["between_session_std"] == pytest.approx(np.std(score.values))
    # 210325 alone, scored directly with the metric, gives that session's entry
    target = ridge.session_assemblies["210325"]
    rows = slice(3600, 4240)
    direct = CrossRegressedCorrelation("ridge")(neuroid_assembly(oracle[rows], ids[rows], layer="o"), target)
    assert sessions["210325"]["raw"] == pytest.approx(direct.raw, abs=1e-12)
    # rows in another order: matched by stimulus_id, same scores (the non-contiguous path)
    order = np.random.default_rng(1).permutation(len(ids))
    shuffled = ridge.score(neuroid_assembly(oracle[order], [ids[i] for i in order], layer="oracle"))
    assert shuffled.values == pytest.approx(score.values, abs=1e-9)
    restored = Score.from_dict(json.loads(json.dumps(shuffled.to_dict(), allow_nan=False)))
    assert restored.raw == shuffled.raw


def test_pls_random_features_score_near_zero(pls, ids):
    """PLS is the slow regression (8 s of CPU here); the oracle side of the combination is tested with ridge."""
    noise = np.random.default_rng(2).standard_normal((len(ids), 40)).astype(np.float32)
    random = pls.score(neuroid_assembly(noise, ids, layer="random"))
    assert abs(random.raw) < 0.05 and random.ceiled < 0.01 and random.attrs["metric"] == "pls"
    assert len(random.values) == 4 and random.attrs["n_components"] == 25


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda a: a.isel(presentation=slice(0, 4000)), r"240 missing: '210325/image0401'"),
        (lambda a: a.where(~((a.presentation == 1300) & (a.neuroid == 0))), r"non-finite.*201025/image0101"),
        (lambda a: a.drop_vars("neuroid_id"), "no 'neuroid_id' coordinate"),
    ],
    ids=["missing-session-part", "nan", "neuroid_id"],
)
def test_bad_assemblies_raise_clear_value_errors(pls, ids, mutate, message):
    assembly = neuroid_assembly(np.random.default_rng(0).standard_normal((len(ids), 5)), ids, layer="x")
    with pytest.raises(ValueError, match=message):
        pls.score(mutate(assembly))


def test_selection_is_v1s_and_disjoint_from_every_scored_image(pls, ridge, bench, ids):
    for b in (pls, ridge):
        assert b.selection_stimulus_set.stimulus_ids == bench.selection_stimulus_set.stimulus_ids
        assert not set(b.selection_stimulus_set.stimulus_ids) & set(ids)
    scored = {blob for _, blob in pls.stimulus_set.iter_bytes()}
    assert not any(blob in scored for _, blob in pls.selection_stimulus_set.iter_bytes())
    selection_ids = pls.selection_stimulus_set.stimulus_ids
    oracle = neuroid_assembly(ridge.selection_assembly.values + 0.1, selection_ids, layer="good")
    good = ridge.score_for_selection(oracle)
    # both variants commit the V4 layer exactly as Cowley2023.V4-pls does (PLS, 25 components)
    assert ridge.selection_source.identifier == pls.selection_source.identifier == "Cowley2023.V4-pls"
    assert good == pls.score_for_selection(oracle) == bench.score_for_selection(oracle)
    assert good > 0.7
