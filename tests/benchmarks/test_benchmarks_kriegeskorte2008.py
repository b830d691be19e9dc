"""Kriegeskorte2008.{hIT,mIT,judgements}-rdm on the real 92-image data: loaders, ceilings, scoring, selection."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
import scipy.io
import scipy.stats
import xarray as xr
from PIL import Image
from scipy.spatial.distance import squareform

from cortexbox.benchmarks import Score, get_benchmark, neuroid_assembly
from cortexbox.benchmarks.data import files_hash
from cortexbox.benchmarks.kriegeskorte2008 import load_human_it, load_human_it_group
from cortexbox.benchmarks.metrics.rsa import RSACeiling, rdm
from cortexbox.benchmarks.rdm_benchmark import rdm_noise_ceiling

pytestmark = pytest.mark.data

HIT, MIT, JUDGEMENTS = "Kriegeskorte2008.hIT-rdm", "Kriegeskorte2008.mIT-rdm", "Kriegeskorte2008.judgements-rdm"
FOLDER = "kriegeskorte2008_92images"
SUPPLEMENT = f"{FOLDER}/Kriegeskorte_Neuron2008_supplementalData.mat"

# Measured on the shared data; data.md's hand-computed hIT ceiling is lower 0.38, upper 0.66.
HIT_UPPER, HIT_LOWER = 0.6606844084712746, 0.37856374906211765
JUDGEMENTS_UPPER, JUDGEMENTS_LOWER = 0.5751184041603764, 0.47759987284941974
STIMULUS_SET_HASH = "88dd50552134652697917634bf90a3ebcc89f0dd7a3daacf6bb6953900a21c25"


@pytest.fixture(scope="module")
def benches(kriegeskorte_data_dir):
    return {name: get_benchmark(name, data_dir=kriegeskorte_data_dir) for name in (HIT, MIT, JUDGEMENTS)}


@pytest.fixture(scope="module")
def ids(benches) -> list[str]:
    return benches[HIT].stimulus_set.stimulus_ids


def oracle_features(target_rdm: np.ndarray) -> np.ndarray:
    """Features whose RDM (1 - Pearson) is 1 + c * target off the diagonal, c > 0: the same ranks as the target.

    ``C = I - c D`` is positive definite for ``c < 1 / ||D||``, so ``C = X X^T`` with rows of ``X`` orthogonal to
    the all-ones direction after appending ``-X`` (zero row means): ``corrcoef`` of the rows is ``C`` itself.
    """
    c = np.eye(len(target_rdm)) - 0.5 * target_rdm / np.linalg.norm(target_rdm, 2)
    eigenvalues, eigenvectors = np.linalg.eigh(c)
    x = eigenvectors * np.sqrt(np.clip(eigenvalues, 0, None))
    return np.hstack([x, -x])


def test_oracle_construction_reproduces_the_target_ranks():
    target = squareform(np.random.default_rng(0).random(92 * 91 // 2))
    model_rdm = rdm(oracle_features(target))
    upper = np.triu_indices(92, k=1)
    assert scipy.stats.spearmanr(model_rdm[upper], target[upper])[0] == pytest.approx(1.0, abs=1e-12)


# --- metadata and data ---------------------------------------------------------------------------------------------


def test_metadata(benches, kriegeskorte_data_dir):
    for name, bench in benches.items():
        assert bench.identifier == name and bench.version == 2 and bench.kind == "neural" and bench.region == "IT"
        # each recording's own stimulus size (v2), and a layer chosen on the other species' RDM sees that species' size
        own, other = (7.0, 2.9) if name == MIT else (2.9, 7.0)
        assert bench.source_visual_degrees == own == bench.stimulus_set.visual_degrees
        assert bench.selection_stimulus_set.visual_degrees == other
        assert bench.selection_stimulus_set.hash == bench.stimulus_set.hash  # the same 92 images
        assert "Front. Syst. Neurosci. 2:4" in bench.description and "Lehky" in bench.description
        assert "Kriegeskorte" in bench.citation and "10.1016/j.neuron.2008.10.043" in bench.citation
        json.dumps(bench.info())
    assert "Kiani" in benches[MIT].citation and "Mur" in benches[JUDGEMENTS].citation
    assert "NO CEILING" in benches[MIT].description and "monkey IT RDM" in benches[HIT].description
    assert "0.661" in benches[HIT].description and "0.379" in benches[HIT].description
    assert "0.575" in benches[JUDGEMENTS].description and "0.478" in benches[JUDGEMENTS].description
    files = {
        HIT: [SUPPLEMENT, f"{FOLDER}/92_brainRDMs.mat"],
        MIT: [SUPPLEMENT],
        JUDGEMENTS: [SUPPLEMENT, f"{FOLDER}/92_behavRDMs.mat"],
    }
    for name, bench in benches.items():
        assert bench.data_hash == files_hash(kriegeskorte_data_dir, files[name])
    assert len({b.data_hash for b in benches.values()}) == 3


def test_stimulus_set_holds_the_exact_pixels(benches, ids, kriegeskorte_data_dir):
    stimulus_set = benches[HIT].stimulus_set
    for bench in benches.values():  # one extraction (cached by identifier and hash) serves all three
        assert bench.stimulus_set.identifier == "Kriegeskorte2008.92images"
        assert bench.stimulus_set.hash == stimulus_set.hash
    assert len(ids) == 92 and ids[0] == "kriegeskorte2008/image01" and ids[-1] == "kriegeskorte2008/image92"
    structs = scipy.io.loadmat(kriegeskorte_data_dir / SUPPLEMENT)["stimuli_92objs"]
    for index, (stimulus_id, blob) in enumerate(stimulus_set.iter_bytes()):
        assert stimulus_id == ids[index] and blob.startswith(b"P6\n175 175\n255\n")
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(blob))), structs[0, index]["image"])
    _, placed = next(stimulus_set.iter_placed(2.9))
    np.testing.assert_array_equal(placed, structs[0, 0]["image"])
    _, larger = next(stimulus_set.iter_placed(5.8))  # a model seeing 5.8 degrees gets the image on a grey screen
    assert larger.shape == (350, 350, 3)
    assert stimulus_set.hash == STIMULUS_SET_HASH  # PPM bytes: independent of encoder versions


def test_human_it_subjects_average_to_the_published_group_rdm(kriegeskorte_data_dir):
    subjects = load_human_it(kriegeskorte_data_dir)
    assert subjects.subjects == ("BE", "KO", "SN", "TI") and subjects.rdms.shape == (4, 92, 92)
    np.testing.assert_allclose(subjects.mean, load_human_it_group(kriegeskorte_data_dir).rdms[0], atol=1e-6)


# --- ceilings -------------------------------------------------------------------------------------------------------


def test_ceilings_match_the_hand_computed_values(benches):
    hit = benches[HIT].ceiling
    assert hit.raw == pytest.approx(0.66, abs=0.005) and hit.attrs["lower_bound_loo"] == pytest.approx(0.38, abs=0.005)
    assert hit.raw == pytest.approx(HIT_UPPER, abs=1e-12)
    assert hit.attrs["lower_bound_loo"] == pytest.approx(HIT_LOWER, abs=1e-12)
    assert hit.attrs["subjects"] == ["BE", "KO", "SN", "TI"] and len(hit.values) == 4
    assert hit.error == pytest.approx(np.std(hit.values) / 2)
    judgements = benches[JUDGEMENTS].ceiling
    assert judgements.raw == pytest.approx(JUDGEMENTS_UPPER, abs=1e-12) and len(judgements.values) == 16
    assert judgements.attrs["lower_bound_loo"] == pytest.approx(JUDGEMENTS_LOWER, abs=1e-12)
    assert benches[MIT].ceiling is None


def test_rdm_ceiling_is_the_metric_library_rsa_ceiling():
    """From RDMs, rdm_noise_ceiling computes exactly what RSACeiling computes from the response patterns."""
    rng = np.random.default_rng(0)
    shared = rng.standard_normal((30, 40))
    patterns = [shared + rng.normal(scale=1.5, size=shared.shape) for _ in range(5)]
    assembly = xr.DataArray(
        np.hstack(patterns),
        dims=("presentation", "neuroid"),
        coords={
            "stimulus_id": ("presentation", [f"s{i:02d}" for i in range(30)]),
            "neuroid_id": ("neuroid", [f"n{j}" for j in range(200)]),
            "subject": ("neuroid", np.repeat([f"subject{k}" for k in range(5)], 40)),
        },
    )
    reference = RSACeiling()(assembly)
    ours = rdm_noise_ceiling(np.array([rdm(p) for p in patterns]), [f"subject{k}" for k in range(5)])
    assert ours.raw == pytest.approx(reference.raw, abs=1e-12) and ours.error == pytest.approx(reference.error)
    assert ours.values == pytest.approx(reference.values, abs=1e-12)
    assert ours.attrs["lower_bound_loo"] == pytest.approx(reference.attrs["lower_bound_loo"], abs=1e-12)
    assert 0 < ours.attrs["lower_bound_loo"] < ours.raw < 1


# --- scoring --------------------------------------------------------------------------------------------------------


def test_group_mean_oracle_scores_the_ceiling_and_ceils_to_one(benches, ids):
    for name in (HIT, JUDGEMENTS):
        bench = benches[name]
        features = oracle_features(bench.target.mean)
        order = np.random.default_rng(1).permutation(92)
        score = bench.score(neuroid_assembly(features[order], [ids[i] for i in order], layer="oracle"))
        assert score.attrs["group_rdm_spearman"] == pytest.approx(1.0, abs=1e-9)
        assert score.raw == pytest.approx(bench.ceiling.raw, abs=1e-9)  # the upper bound, by definition
        assert score.ceiled == pytest.approx(1.0, abs=1e-9) and score.ceiling == bench.ceiling.raw
        assert score.attrs["normalization"] == "r_over_ceiling"
        assert score.attrs["ceiling_lower_bound"] == bench.ceiling.attrs["lower_bound_loo"]
        assert len(score.values) == len(bench.target.subjects) and score.error > 0
    mit = benches[MIT].score(neuroid_assembly(oracle_features(benches[MIT].target.rdms[0]), ids, layer="oracle"))
    assert mit.raw == pytest.approx(1.0, abs=1e-9) and mit.ceiling is None and mit.ceiled is None
    assert mit.value == mit.raw and mit.values == [mit.raw]


def test_single_subject_oracle_matches_that_subject(benches, ids):
    bench = benches[HIT]
    score = bench.score(neuroid_assembly(oracle_features(bench.target.rdms[2]), ids, layer="oracle"))
    assert score.values[2] == pytest.approx(1.0, abs=1e-9)
    assert max(score.values[:2] + score.values[3:]) < 0.6


def test_random_features_score_near_zero(benches, ids):
    features = np.random.default_rng(0).standard_normal((92, 4096)).astype(np.float32)
    for bench in benches.values():
        score = bench.score(neuroid_assembly(features, ids, layer="random"))
        assert abs(score.raw) < 0.05  # measured 0.006, 0.007, -0.004
        assert score.ceiled is None or abs(score.ceiled) < 0.1


def test_score_is_strict_json_and_squeezes_time(benches, ids):
    features = oracle_features(benches[MIT].target.rdms[0]) + np.random.default_rng(2).normal(size=(92, 184))
    for bench in benches.values():
        assembly = neuroid_assembly(features, ids, layer="x")
        score = bench.score(assembly)
        restored = Score.from_dict(json.loads(json.dumps(score.to_dict(), allow_nan=False)))
        assert restored.raw == score.raw and restored.ceiled == score.ceiled
        assert bench.score(assembly.expand_dims("time_bin", axis=2)).raw == score.raw
        assert score.attrs["benchmark"] == bench.identifier and score.attrs["data_hash"] == bench.data_hash


def _with_ids(assembly, stimulus_ids):
    return assembly.assign_coords(stimulus_id=("presentation", stimulus_ids))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda a: a.isel(presentation=slice(1, None)), r"1 missing: 'kriegeskorte2008/image01'"),
        (lambda a: _with_ids(a, ["other/image01", *a.stimulus_id.values[1:]]), r"1 unexpected: 'other/image01'"),
        (lambda a: _with_ids(a, [a.stimulus_id.values[1], *a.stimulus_id.values[1:]]), "duplicated"),
        (lambda a: a.where(~((a.presentation == 4) & (a.neuroid == 2))), r"non-finite.*image05"),
        (lambda a: a.where(a.presentation != 6, 1.0), r"constant across units for 1 stimuli.*image07"),
        (lambda a: a.rename(neuroid="unit"), "expected dims"),
        (lambda a: a.isel(presentation=[0] * 92).assign_coords(stimulus_id=a.stimulus_id), "RDM is constant"),
    ],
    ids=["missing", "extra", "duplicate", "nan", "constant-stimulus", "dims", "same-for-all"],
)
def test_bad_assemblies_raise_clear_value_errors(benches, ids, mutate, message):
    assembly = neuroid_assembly(np.random.default_rng(0).standard_normal((92, 50)), ids, layer="x")
    for bench in benches.values():
        with pytest.raises(ValueError, match=message):
            bench.score(mutate(assembly))


# --- layer selection ------------------------------------------------------------------------------------------------


def test_selection_never_uses_the_scored_data(benches, ids):
    upper = np.triu_indices(92, k=1)
    for bench in benches.values():
        assert bench.selection_stimulus_set.hash == bench.stimulus_set.hash  # same images, other recordings (and sizes)
        selection = bench.selection_target.rdms
        for scored in bench.target.rdms:  # the selection RDM is other data, not a copy of a scored RDM
            assert scipy.stats.pearsonr(selection[0][upper], scored[upper])[0] < 0.9
    mit_rdm = benches[MIT].target.rdms[0]
    np.testing.assert_array_equal(benches[HIT].selection_target.rdms[0], mit_rdm)
    np.testing.assert_array_equal(benches[JUDGEMENTS].selection_target.rdms[0], mit_rdm)
    np.testing.assert_allclose(benches[MIT].selection_target.rdms[0], benches[HIT].target.mean, atol=1e-6)
    # the two human benchmarks share one IT commitment (stored under hIT-rdm's key); mIT-rdm has its own
    assert benches[JUDGEMENTS].selection_source.identifier == HIT
    assert getattr(benches[HIT], "selection_source", None) is None and getattr(benches[MIT], "selection_source", None) is None
    assert "differ" in benches[MIT].description and HIT in benches[JUDGEMENTS].description


def test_score_for_selection_ranks_layers(benches, ids):
    monkey_like = neuroid_assembly(oracle_features(benches[MIT].target.rdms[0]), ids, layer="monkey-like")
    noise = neuroid_assembly(np.random.default_rng(4).standard_normal((92, 500)), ids, layer="noise")
    human = benches[HIT]
    assert human.score_for_selection(monkey_like) == pytest.approx(1.0, abs=1e-9)
    assert abs(human.score_for_selection(noise)) < 0.05
    human_like = neuroid_assembly(oracle_features(human.target.mean), ids, layer="human-like")
    assert benches[MIT].score_for_selection(human_like) == pytest.approx(1.0, abs=1e-6)
    assert isinstance(benches[MIT].score_for_selection(noise), float)
    # a degenerate candidate layer ranks as NaN instead of stopping the selection; bad ids still raise
    same_for_all = neuroid_assembly(np.tile(np.arange(10.0), (92, 1)), ids, layer="bias")
    assert math.isnan(human.score_for_selection(same_for_all))
    with pytest.raises(ValueError, match="missing"):
        human.score_for_selection(noise.isel(presentation=slice(1, None)))
