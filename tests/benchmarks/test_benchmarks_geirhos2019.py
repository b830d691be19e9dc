"""Geirhos2019 behavioural benchmarks and the 16-category ImageNet mapping, on the real data."""

from __future__ import annotations

import io
import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cortexbox.benchmarks import Score, get_benchmark, neuroid_assembly
from cortexbox.benchmarks.data import files_hash
from cortexbox.benchmarks import imagenet16
from cortexbox.benchmarks.imagenet16 import (
    CATEGORIES,
    CATEGORY_INDICES,
    ILSVRC2012_NAMES,
    ILSVRC2012_WNIDS,
    MANUAL_EXCLUSIONS,
    ROOT_SYNSETS,
    category_probabilities,
    derive_category_indices,
    logits_to_choices,
    main,
)

EC = {e: f"Geirhos2019.{e}-error_consistency" for e in ("edges", "silhouettes")}
TOP1 = {e: f"Geirhos2019.{e}-top1" for e in ("edges", "silhouettes")}
SHAPE_BIAS = "Geirhos2019.cueconflict-shape_bias"
WORDNET = Path("/usr/share/wordnet")

# Measured on the shared data: mean over the 45 observer pairs of Cohen's kappa.
EC_CEILING = {"edges": 0.3184364338405932, "silhouettes": 0.4757093214647689}
HUMAN_ACCURACY = {"edges": 0.87125, "silhouettes": 0.753125}  # PROVENANCE.md: 0.87 and 0.75


def _index(name: str) -> int:
    return next(i for i, n in enumerate(ILSVRC2012_NAMES) if n.split(",")[0] == name)


def _one_hot(categories, width: int = 1000, member: int = 0) -> np.ndarray:
    logits = np.zeros((len(categories), width), dtype=np.float32)
    offset = width - 1000
    for row, category in enumerate(categories):
        logits[row, offset + CATEGORY_INDICES[category][member]] = 12.0
    return logits


# --- the 16-category mapping (no data needed) ---------------------------------------------------------------------


def test_mapping_covers_16_disjoint_categories_with_plausible_classes():
    assert CATEGORIES == tuple(sorted(CATEGORIES)) and len(CATEGORIES) == 16 == len(CATEGORY_INDICES)
    members = [i for c in CATEGORIES for i in CATEGORY_INDICES[c]]
    assert len(members) == len(set(members)) == 207  # disjoint
    assert all(0 <= i < 1000 for i in members)
    sizes = {c: len(CATEGORY_INDICES[c]) for c in CATEGORIES}
    assert sizes["dog"] == 109 and sizes["bird"] == 49 and sizes["knife"] == sizes["oven"] == sizes["airplane"] == 1
    assert len(ILSVRC2012_WNIDS) == 1000 and list(ILSVRC2012_WNIDS) == sorted(set(ILSVRC2012_WNIDS))
    names = {c: {ILSVRC2012_NAMES[i].split(",")[0] for i in CATEGORY_INDICES[c]} for c in CATEGORIES}
    assert _index("tabby") == 281 and {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"} <= names["cat"]
    assert {"golden retriever", "beagle", "pug"} <= names["dog"] and {"goldfinch", "bald eagle"} <= names["bird"]
    assert names["airplane"] == {"airliner"} and names["knife"] == {"cleaver"} and names["oven"] == {"rotisserie"}
    assert names["car"] == {"beach wagon", "convertible", "sports car"}
    assert names["bear"] == {"American black bear", "brown bear", "ice bear", "sloth bear"}
    assert names["bicycle"] == {"bicycle-built-for-two", "mountain bike"}
    assert names["boat"] == {"canoe", "fireboat", "lifeboat", "speedboat", "yawl"}
    assert names["bottle"] == {"beer bottle", "pill bottle", "pop bottle", "water bottle", "water jug", "whiskey jug",
                               "wine bottle"}
    assert names["chair"] == {"barber chair", "folding chair", "rocking chair", "throne"}
    assert names["clock"] == {"analog clock", "digital clock", "wall clock"}
    assert names["keyboard"] == {"computer keyboard", "typewriter keyboard"}
    assert names["elephant"] == {"African elephant", "Indian elephant"}
    assert names["truck"] == {"fire engine", "garbage truck", "minivan", "moving van", "pickup", "police van",
                              "tow truck", "trailer truck"}
    for category, excluded in MANUAL_EXCLUSIONS.items():  # the authors' manual exclusions are out
        for index, wnid, name in excluded:
            assert ILSVRC2012_WNIDS[index] == wnid and ILSVRC2012_NAMES[index] == name
            assert index not in CATEGORY_INDICES[category]


def test_mapping_indices_match_a_real_models_label_file(geirhos_data_dir):
    """TF Lite MobileNets' labels (index 0 = background) name the same class at index + 1."""
    labels_path = geirhos_data_dir / "coral_mobilenet_tflite" / "imagenet_labels.txt"
    if not labels_path.is_file():
        pytest.skip("coral_mobilenet_tflite not in the shared data")
    labels = labels_path.read_text().splitlines()
    assert labels[0] == "background" and len(labels) == 1001
    assert [line.split(",")[0] for line in labels[1:]] == [n.split(",")[0] for n in ILSVRC2012_NAMES]


@pytest.mark.skipif(not (WORDNET / "data.noun").is_file(), reason="WordNet 3.0 not installed (apt-get install wordnet-base)")
def test_mapping_is_rederived_from_wordnet():
    assert derive_category_indices(WORDNET, ILSVRC2012_NAMES) == dict(CATEGORY_INDICES)
    without = derive_category_indices(WORDNET, ILSVRC2012_NAMES, exclusions={})
    assert 726 in without["airplane"] and 656 in without["car"] and 656 in without["truck"]
    assert main(["--wordnet", str(WORDNET), "--check"]) == 0  # the CLI the table was written with


@pytest.mark.skipif(not (WORDNET / "data.noun").is_file(), reason="WordNet 3.0 not installed (apt-get install wordnet-base)")
def test_write_reproduces_the_committed_table_file(tmp_path):
    written = tmp_path / "table.json"
    assert main(["--wordnet", str(WORDNET), "--write", str(written)]) == 0
    committed = resources.files("cortexbox.benchmarks").joinpath(imagenet16.TABLE_FILE).read_text(encoding="utf-8")
    assert written.read_text(encoding="utf-8") == committed


def test_table_file_is_the_rendering_of_what_it_holds():
    """The committed data file is in --write's form (hand edits show), and the loaded table is what it says."""
    committed = resources.files("cortexbox.benchmarks").joinpath(imagenet16.TABLE_FILE).read_text(encoding="utf-8")
    roots = {c: wnid.removeprefix("n") for c, wnid in ROOT_SYNSETS.items()}
    assert imagenet16._render_table(ILSVRC2012_WNIDS, ILSVRC2012_NAMES, roots, CATEGORY_INDICES) == committed
    data = json.loads(committed)
    assert [tuple(c) for c in data["classes"]] == list(zip(ILSVRC2012_WNIDS, ILSVRC2012_NAMES))
    assert list(ROOT_SYNSETS) == list(CATEGORIES) and ROOT_SYNSETS["dog"] == "n02084071"  # dog.n.01
    assert all(isinstance(v, tuple) and list(v) == sorted(v) for v in CATEGORY_INDICES.values())


def test_choice_is_the_category_with_the_highest_mean_probability():
    assert list(logits_to_choices(_one_hot(CATEGORIES))) == list(CATEGORIES)
    assert list(logits_to_choices(_one_hot(CATEGORIES, width=1001))) == list(CATEGORIES)  # background dropped
    # mean, not max: one dog class at p~0.5 spreads over 109 dog classes, one knife class at p~0.2 does not
    logits = np.zeros((1, 1000))
    logits[0, CATEGORY_INDICES["dog"][0]] = 8.0
    logits[0, CATEGORY_INDICES["knife"][0]] = 7.0
    probabilities = category_probabilities(logits)
    assert probabilities.shape == (1, 16)
    assert logits_to_choices(logits)[0] == "knife"
    assert probabilities[0, CATEGORIES.index("dog")] == pytest.approx(
        np.exp(8) / (np.exp(8) + np.exp(7) + 998) / 109 + 108 / (np.exp(8) + np.exp(7) + 998) / 109
    )
    background = np.zeros((1, 1001))
    background[0, 0] = 50.0  # a confident "background" must not change the 16-way choice
    background[0, 1 + CATEGORY_INDICES["oven"][0]] = 3.0
    assert logits_to_choices(background)[0] == "oven"
    for bad in (np.zeros((2, 999)), np.zeros(1000)):
        with pytest.raises(ValueError, match="1000"):
            logits_to_choices(bad)


# --- data, stimuli, trials -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def benches(geirhos_data_dir):
    names = [*EC.values(), *TOP1.values(), SHAPE_BIAS]
    return {name: get_benchmark(name, data_dir=geirhos_data_dir) for name in names}


def test_metadata_and_data_hash(benches, geirhos_data_dir):
    for name, bench in benches.items():
        unplaced = name not in EC.values()  # see test_placement_follows_brain_score_per_benchmark
        assert bench.identifier == name and bench.version == (2 if unplaced else 1) and bench.kind == "behaviour"
        assert bench.behaviour == "logits" and bench.region == "" and bench.selection_stimulus_set is None
        assert bench.source_visual_degrees == (None if unplaced else 3.0) and bench.stimulus_set.visual_degrees == 3.0
        assert "Geirhos" in bench.citation and "human_categories" in bench.description
        json.dumps(bench.info())
    for experiment, folder in (("edges", "edges"), ("silhouettes", "filled-silhouettes")):
        bench = benches[EC[experiment]]
        root = geirhos_data_dir / "geirhos2019_texture_shape"
        files = sorted(str(p.relative_to(geirhos_data_dir)) for p in (root / "stimuli" / folder).glob("*/*.png"))
        raw = "edge-experiment" if experiment == "edges" else "silhouette-filled-experiment"
        subjects = sorted(
            str(p.relative_to(geirhos_data_dir)) for p in (root / "raw-data" / raw).glob("*subject-*.csv")
        )
        assert len(files) == 160 and len(subjects) == 10
        assert bench.data_hash == files_hash(geirhos_data_dir, files + subjects) == benches[TOP1[experiment]].data_hash
    assert "LOSSY" in benches[SHAPE_BIAS].description and "clipped to [0, 1]" in benches[EC["edges"]].description


def test_stimuli_and_trials_line_up(benches, geirhos_data_dir):
    for experiment in ("edges", "silhouettes"):
        bench = benches[EC[experiment]]
        ids = bench.stimulus_set.stimulus_ids
        assert len(ids) == 160 and ids[:2] == [f"{experiment}/airplane1", f"{experiment}/airplane2"]
        assert ids[9] == f"{experiment}/airplane10" and ids[-1] == f"{experiment}/truck10"
        trials = bench.trials
        assert trials.sizes["presentation"] == 1600
        assert sorted(set(trials["subject"].values)) == [f"subject-{k:02d}" for k in range(1, 11)]
        for subject in set(trials["subject"].values):
            assert sorted(trials["stimulus_id"].values[trials["subject"].values == subject]) == sorted(ids)
        accuracy = float((trials.values == trials["truth"].values).mean())
        assert accuracy == pytest.approx(HUMAN_ACCURACY[experiment], abs=1e-12)
        assert "na" in set(trials.values)  # timeouts are kept (and count as errors)
        _, blob = next(bench.stimulus_set.iter_bytes())
        _, placed = next(bench.stimulus_set.iter_placed(3.0))
        np.testing.assert_array_equal(placed, np.asarray(Image.open(io.BytesIO(blob)).convert("RGB")))
        assert placed.shape == (224, 224, 3)
    cue = benches[SHAPE_BIAS]
    assert len(cue.stimulus_set) == 1280 and cue.trials.sizes["presentation"] == 12800
    assert cue.stimulus_set.stimulus_ids[0].startswith("cueconflict/airplane1-")


def test_placement_follows_brain_score_per_benchmark(benches):
    """Brain-Score (brainscore_vision/benchmarks/geirhos2021/benchmark.py): _Geirhos2021ErrorConsistency calls
    place_on_screen(..., source_visual_degrees=3); _Geirhos2021Accuracy (the -top1 benchmarks) calls look_at on the
    stimulus set as stored, without place_on_screen; so does Hermann2020's shape bias on the cue-conflict images."""
    from cortexbox.benchmarks.geirhos2019 import UnplacedStimulusSet
    from cortexbox.orchestrator.cache import stimulus_keys

    for experiment in ("edges", "silhouettes"):
        placed_set = benches[EC[experiment]].stimulus_set
        top1_set = benches[TOP1[experiment]].stimulus_set
        assert isinstance(top1_set, UnplacedStimulusSet) and not isinstance(placed_set, UnplacedStimulusSet)
        assert top1_set.stimulus_ids == placed_set.stimulus_ids and top1_set.hash == placed_set.hash
        _, blob = next(top1_set.iter_bytes())
        stored = np.asarray(Image.open(io.BytesIO(blob)).convert("RGB"))
        # an 8-degree model: error consistency shows the 224-pixel image at 3/8 of a grey 597-pixel screen ...
        _, placed = next(placed_set.iter_placed(8.0))
        assert placed.shape == (597, 597, 3) and (placed[:150] == 128).all()
        assert placed_set.placement_key(8.0) == "target8.00--source3.00"
        # ... top-1 shows the file as stored, whatever the model's degrees
        for degrees in (8.0, 3.0, 10.0):
            _, image = next(top1_set.iter_placed(degrees))
            np.testing.assert_array_equal(image, stored)
            assert top1_set.placement_key(degrees) == "unplaced (files as stored)"
        subset = top1_set.subset(top1_set.stimulus_ids[3:5], "part")
        assert isinstance(subset, UnplacedStimulusSet) and next(subset.iter_placed(8.0))[1].shape == (224, 224, 3)
        # the cache keeps them apart for an 8-degree model, and together for a 3-degree one
        assert set(stimulus_keys(top1_set, 8.0)).isdisjoint(stimulus_keys(placed_set, 8.0))
        assert stimulus_keys(top1_set, 8.0) == stimulus_keys(placed_set, 3.0)
        bench = benches[TOP1[experiment]]
        assert "without place_on_screen" in bench.description and "version 2" in bench.description
        assert "placed at 3 degrees" in benches[EC[experiment]].description
    # Brain-Score's Hermann2020 shape bias (brainscore_vision/benchmarks/hermann2020/benchmark.py) does not place either
    cue = benches[SHAPE_BIAS]
    assert isinstance(cue.stimulus_set, UnplacedStimulusSet) and cue.version == 2
    assert next(cue.stimulus_set.iter_placed(8.0))[1].shape == (224, 224, 3)
    assert "without place_on_screen" in cue.description


# --- error consistency ----------------------------------------------------------------------------------------------


def _kappa(a: np.ndarray, b: np.ndarray) -> float:
    expected = a.mean() * b.mean() + (1 - a.mean()) * (1 - b.mean())
    return float(((a == b).mean() - expected) / (1 - expected))


def _subject_logits(bench, subject: str) -> np.ndarray:
    """Logits that make the model answer exactly as one observer did ('na' -> a wrong category)."""
    trials = bench.trials
    mask = trials["subject"].values == subject
    answer = dict(zip(trials["stimulus_id"].values[mask], trials.values[mask]))
    truth = dict(zip(trials["stimulus_id"].values[mask], trials["truth"].values[mask]))
    choices = [
        answer[s] if answer[s] in CATEGORY_INDICES else next(c for c in CATEGORIES if c != truth[s])
        for s in bench.stimulus_set.stimulus_ids
    ]
    return _one_hot(choices)


def test_error_consistency_ceiling_is_the_mean_human_pair_kappa(benches):
    for experiment in ("edges", "silhouettes"):
        bench = benches[EC[experiment]]
        ceiling = bench.ceiling
        assert ceiling.raw == pytest.approx(EC_CEILING[experiment], abs=1e-12)
        assert len(ceiling.values) == 45 and ceiling.attrs["ceiling"] == "subject_pairs"
        trials = bench.trials
        correct = {}
        for subject in ("subject-01", "subject-02"):
            mask = trials["subject"].values == subject
            order = np.argsort(trials["stimulus_id"].values[mask])
            correct[subject] = (trials.values[mask] == trials["truth"].values[mask])[order]
        assert ceiling.values[0] == pytest.approx(_kappa(correct["subject-01"], correct["subject-02"]))


def test_a_human_observer_as_model_reaches_the_ceiling(benches):
    bench = benches[EC["edges"]]
    ids = bench.stimulus_set.stimulus_ids
    score = bench.score(neuroid_assembly(_subject_logits(bench, "subject-01"), ids, layer="logits"))
    assert score.values[0] == pytest.approx(1.0)  # itself
    assert 0.9 < score.raw / bench.ceiling.raw < 1.2  # measured 1.03, clipped
    assert score.ceiled == pytest.approx(min(score.raw / bench.ceiling.raw, 1.0))
    assert score.attrs["normalization"] == "raw_over_ceiling_clipped"
    assert score.attrs["model_accuracy"] == pytest.approx(float(np.mean(
        bench.trials.values[bench.trials["subject"].values == "subject-01"]
        == bench.trials["truth"].values[bench.trials["subject"].values == "subject-01"]
    )))


def test_always_correct_and_random_models_are_not_error_consistent(benches):
    for experiment in ("edges", "silhouettes"):
        bench = benches[EC[experiment]]
        ids = bench.stimulus_set.stimulus_ids
        truth = [s.split("/")[1].rstrip("0123456789") for s in ids]
        correct = bench.score(neuroid_assembly(_one_hot(truth), ids, layer="logits"))
        assert correct.raw == pytest.approx(0.0, abs=1e-12) and correct.ceiled == pytest.approx(0.0, abs=1e-12)
        noise = np.random.default_rng(0).standard_normal((160, 1001)).astype(np.float32)
        random = bench.score(neuroid_assembly(noise, ids, layer="logits"))
        assert random.ceiled < 0.15 and random.ceiling == pytest.approx(EC_CEILING[experiment])
        restored = Score.from_dict(json.loads(json.dumps(random.to_dict(), allow_nan=False)))
        assert restored.raw == random.raw and len(restored.values) == 10


# --- top-1 and shape bias -------------------------------------------------------------------------------------------


def test_top1_of_always_correct_and_shuffled_logits(benches):
    for experiment in ("edges", "silhouettes"):
        bench = benches[TOP1[experiment]]
        ids = bench.stimulus_set.stimulus_ids
        truth = [s.split("/")[1].rstrip("0123456789") for s in ids]
        for width, member in ((1000, 0), (1001, -1)):
            score = bench.score(neuroid_assembly(_one_hot(truth, width, member), ids, layer="logits"))
            assert score.raw == 1.0 and score.ceiled == 1.0 and score.ceiling == 1.0 and score.error == 0.0
        order = np.random.default_rng(0).permutation(160)
        shuffled = bench.score(neuroid_assembly(_one_hot(truth)[order], [ids[i] for i in order], layer="logits"))
        assert shuffled.raw == 1.0  # rows are matched by stimulus_id
        wrong = bench.score(neuroid_assembly(_one_hot(truth)[::-1], ids, layer="logits"))
        assert wrong.raw == pytest.approx(0.0)  # reversed order: every image answered with another category
        assert wrong.attrs["human_accuracy"] == pytest.approx(HUMAN_ACCURACY[experiment])


def test_shape_bias(benches):
    bench = benches[SHAPE_BIAS]
    ids = bench.stimulus_set.stimulus_ids
    shapes = [s.split("/")[1].split("-")[0].rstrip("0123456789") for s in ids]
    textures = [s.split("/")[1].split("-")[1].rstrip("0123456789") for s in ids]
    shape_model = bench.score(neuroid_assembly(_one_hot(shapes), ids, layer="logits"))
    texture_model = bench.score(neuroid_assembly(_one_hot(textures), ids, layer="logits"))
    assert shape_model.raw == 1.0 and texture_model.raw == 0.0
    assert shape_model.attrs["n_conflict_stimuli"] == 1200 and shape_model.ceiling is None and shape_model.ceiled is None
    assert texture_model.attrs["texture_match"] == 1.0 and texture_model.attrs["shape_match"] == 0.0
    assert shape_model.attrs["human_shape_bias"] == pytest.approx(0.96, abs=0.01)  # Geirhos et al.: humans ~0.96


def _with_ids(assembly, stimulus_ids):
    return assembly.assign_coords(stimulus_id=("presentation", stimulus_ids))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda a: a.isel(presentation=slice(1, None)), r"1 missing: 'edges/airplane1'"),
        (lambda a: _with_ids(a, ["silhouettes/airplane1", *a.stimulus_id.values[1:]]), r"unexpected: 'silhouettes/"),
        (lambda a: a.where(~((a.presentation == 3) & (a.neuroid == 7))), r"non-finite.*edges/airplane4"),
        (lambda a: a.isel(neuroid=slice(0, 999)), "1000 ImageNet columns"),
    ],
    ids=["missing", "misaligned", "nan", "width"],
)
def test_bad_logits_raise_clear_value_errors(benches, mutate, message):
    ids = benches[EC["edges"]].stimulus_set.stimulus_ids
    assembly = neuroid_assembly(np.random.default_rng(0).standard_normal((160, 1000)), ids, layer="logits")
    for name in (EC["edges"], TOP1["edges"]):
        with pytest.raises(ValueError, match=message):
            benches[name].score(mutate(assembly))
