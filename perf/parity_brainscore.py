"""Parity of cortexbox's metrics, ceilings, normalisation and netCDF format with Brain-Score's own code.

Brain-Score (brainscore-vision 2.4.2 + brainscore-core 2.5.0 from PyPI) pins numpy<2 and xarray<2022.6, so it runs
in its own virtual environment, driven by this same file::

    python perf/parity_brainscore.py --setup-venv        # once: builds /tmp/bs-venv (not part of the repo)
    python perf/parity_brainscore.py                     # writes perf/results/parity.json and prints a table
    python perf/parity_brainscore.py --only defaults     # only the cases whose name contains "defaults"

The venv gets the two wheels with ``--no-deps`` and only what their metric modules import: numpy 1.26.4,
pandas 1.5.3, xarray 2022.3.0, scipy 1.13.1, scikit-learn 1.5.2, netCDF4, tqdm, pyyaml, psutil, boto3, pillow and
result_caching (no torch: the metric modules do not import it).

Flow: this process builds the inputs (synthetic data, and the Cowley 2023 V4 recordings read in place from the
shared data folder), writes them as netCDF with :func:`cortexbox.benchmarks.netcdf.write_assembly` (so Brain-Score's
loader reads our files), scores everything with cortexbox, runs ``--brainscore-side`` under the venv's python (which
loads the same files as ``NeuroidAssembly``/``BehavioralAssembly`` and scores them with ``load_metric``), and compares.

Most cases pin the split arguments on both sides; the ``defaults`` cases pass none (Brain-Score's ``load_metric(name)``
as it is, cortexbox's ``load_metric(name)``), on two Cowley sessions presented in shuffled order with an
``object_name`` coordinate, so Brain-Score's default stratification is what is compared.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = Path(os.environ.get("BS_VENV", "/tmp/bs-venv"))
TOLERANCE = 1e-6
BS_REQUIREMENTS = [
    "numpy==1.26.4",
    "pandas==1.5.3",
    "xarray==2022.3.0",
    "scipy==1.13.1",
    "scikit-learn==1.5.2",
    "netCDF4==1.7.2",
    "tqdm",
    "pyyaml",
    "psutil",
    "boto3",
    "pillow",
    "result_caching",
]
BS_WHEELS = ["brainscore-vision==2.4.2", "brainscore-core==2.5.0"]


# ---------------------------------------------------------------------------------------------------------------
# venv
# ---------------------------------------------------------------------------------------------------------------


def setup_venv() -> None:
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *BS_REQUIREMENTS], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", *BS_WHEELS], check=True)
    subprocess.run([str(python), "-c", "from brainscore_vision import load_metric; load_metric('pls')"], check=True)
    print(f"Brain-Score venv ready at {VENV}")


# ---------------------------------------------------------------------------------------------------------------
# Brain-Score side (runs under the venv; imports only Brain-Score, numpy, xarray)
# ---------------------------------------------------------------------------------------------------------------


def brainscore_side(folder: Path) -> None:  # noqa: C901 (one case per metric, kept flat on purpose)
    import logging
    import warnings

    import numpy as np
    import xarray as xr

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    os.environ.setdefault("RESULTCACHING_DISABLE", "1")
    from brainscore_core.supported_data_standards.brainio.assemblies import BehavioralAssembly, NeuroidAssembly
    from brainscore_core.supported_data_standards.brainio.packaging import write_netcdf
    from brainscore_vision import load_metric
    from brainscore_vision.benchmark_helpers.neural_common import explained_variance
    from brainscore_vision.metric_helpers.temporal import PerTime
    from brainscore_vision.metrics import Score
    from brainscore_vision.metrics.internal_consistency.ceiling import InternalConsistency
    from brainscore_vision.metrics.regression_correlation.metric import (
        CrossRegressedCorrelation,
        dual_ridge_cv_regression,
        pearsonr_correlation,
        ridge_cv_regression,
    )

    cases = json.loads((folder / "cases.json").read_text())
    results = {}

    def load(name, cls=NeuroidAssembly):
        return cls(xr.open_dataarray(folder / f"{name}.nc").load())

    def score_of(score):
        raw = score.attrs.get("raw")
        out = {"raw": float(score.values), "error": float(score.attrs["error"]) if "error" in score.attrs else None}
        if raw is not None and hasattr(raw, "dims") and "split" in raw.dims:
            per_split = raw
            other = [d for d in per_split.dims if d != "split"]
            if other:
                per_split = per_split.median(other)
            out["values"] = [float(v) for v in per_split.values]
        return out

    for case in cases:
        kind, name = case["kind"], case["name"]
        started = time.perf_counter()
        try:
            if kind == "regression":
                # "defaults": no crossvalidation_kwargs at all, so Brain-Score's own defaults decide the splits
                cv = None if case.get("defaults") else {"stratification_coord": case.get("stratify")}
                if case.get("kfold"):
                    cv["kfold"] = True
                if case["metric"] == "ridgecv":
                    regression = dual_ridge_cv_regression() if case.get("dual") else ridge_cv_regression()
                    metric = CrossRegressedCorrelation(
                        regression=regression, correlation=pearsonr_correlation(), crossvalidation_kwargs=cv
                    )
                elif cv is None:
                    metric = load_metric(case["metric"])
                else:
                    metric = load_metric(case["metric"], crossvalidation_kwargs=cv)
                score = metric(load(case["source"]), load(case["target"]))
                results[name] = score_of(score)
            elif kind == "similarity":
                params = {}
                if case["metric"].endswith("_cv") and not case.get("defaults"):
                    params["crossvalidation_kwargs"] = {"stratification_coord": None}
                metric = load_metric(case["metric"], **params)
                score = metric(load(case["source"]), load(case["target"]))
                results[name] = score_of(score)
            elif kind == "internal_consistency":
                results[name] = score_of(load_metric("internal_consistency")(load(case["target"])))
            elif kind == "internal_consistency_temporal":
                ceiling = PerTime(InternalConsistency())(load(case["target"]))
                results[name] = {"per_bin": [float(v) for v in ceiling.values]}
            elif kind == "rsa_ceiling":
                ceiling = load_metric("rsa_ceiling")(load(case["target"]))
                results[name] = {"raw": float(ceiling.values), "lower_bound_loo": float(ceiling.attrs["lower_bound_loo"])}
            elif kind == "explained_variance":
                score = Score(case["raw"])
                score.attrs["error"] = case["error"]
                ceiled = explained_variance(score, Score(case["ceiling"]))
                results[name] = {"ceiled": float(ceiled.values), "error": float(ceiled.attrs["error"])}
            elif kind == "behavior":
                metric = load_metric(case["metric"])
                target = load(case["target"], BehavioralAssembly)
                if case.get("ceiling"):
                    score = metric.ceiling(target)
                else:
                    source = load(case["source"], BehavioralAssembly if case["metric"] != "i2n" else NeuroidAssembly)
                    if case["metric"] == "i2n":
                        source = BehavioralAssembly(source)
                    score = metric(source, target)
                results[name] = score_of(score)
            elif kind == "netcdf":
                assembly = load(case["source"])  # our file, read by their loader
                results[name] = {
                    "shape": list(assembly.shape),
                    "stimulus_id": [str(s) for s in assembly["stimulus_id"].values],
                    "neuroid_id": [str(s) for s in assembly["neuroid_id"].values],
                    "sum": float(np.asarray(assembly.values, dtype=np.float64).sum()),
                    "indexes": sorted(assembly.indexes),
                }
                write_netcdf(assembly, folder / f"{case['source']}.bs_written.nc")  # their file, for our reader
            else:
                raise ValueError(kind)
        except Exception as error:  # recorded, compared as a failure
            results[name] = {"exception": f"{type(error).__name__}: {error}"}
        results.setdefault(name, {})["seconds"] = time.perf_counter() - started
    (folder / "brainscore.json").write_text(json.dumps(results, indent=1))


# ---------------------------------------------------------------------------------------------------------------
# cortexbox side
# ---------------------------------------------------------------------------------------------------------------


def _synthetic(rng, n_stimuli, n_features, n_neuroids, dtype):
    import numpy as np

    latent = rng.standard_normal((n_stimuli, 8))
    features = np.maximum(latent @ rng.standard_normal((8, n_features)) + rng.standard_normal((n_stimuli, n_features)), 0)
    responses = latent @ rng.standard_normal((8, n_neuroids)) + 2.0 * rng.standard_normal((n_stimuli, n_neuroids))
    return features.astype(dtype), responses


def _neural(values, ids, prefix, extra=None):
    import numpy as np
    import xarray as xr

    # Brain-Score folds each dim's coords into a MultiIndex and mishandles a dim with a single coord, so every dim
    # gets a second one (as their real assemblies have)
    coords = {
        "stimulus_id": ("presentation", np.asarray(ids, dtype=object)),
        "image_number": ("presentation", np.unique(np.asarray(ids, dtype=str), return_inverse=True)[1]),
        "neuroid_id": ("neuroid", np.array([f"{prefix}{j}" for j in range(values.shape[1])], dtype=object)),
        "region": ("neuroid", np.full(values.shape[1], "IT", dtype=object)),
    }
    coords.update(extra or {})
    return xr.DataArray(values, dims=("presentation", "neuroid"), coords=coords)


def build_inputs(folder: Path, data_dir: Path | None) -> tuple[list[dict], dict]:  # noqa: C901
    import numpy as np
    import xarray as xr

    from cortexbox.benchmarks.netcdf import write_assembly

    rng = np.random.default_rng(2024)
    assemblies: dict[str, xr.DataArray] = {}
    cases: list[dict] = []

    # --- synthetic neural data: narrow (plain fit) and wide (row-space projection) features, float64 and float32
    n = 150
    ids = np.array([f"img{i:04d}" for i in rng.permutation(n)], dtype=object)  # not sorted: order matters
    objects = np.array([f"obj{i % 5}" for i in range(n)], dtype=object)
    for label, n_features, dtype in (("narrow64", 40, np.float64), ("wide64", 400, np.float64), ("wide32", 400, np.float32)):
        features, responses = _synthetic(rng, n, n_features, 12, dtype)
        shuffle = rng.permutation(n)  # the model's rows come in another order
        assemblies[f"src_{label}"] = _neural(features[shuffle], ids[shuffle], "f", {"object_name": ("presentation", objects[shuffle])})
        assemblies[f"tgt_{label}"] = _neural(responses, ids, "n", {"object_name": ("presentation", objects)})
    for label in ("narrow64", "wide64", "wide32"):
        for metric in ("pls", "ridge", "linear_predictivity", "ridgecv", "neuron_to_neuron"):
            cases.append({"kind": "regression", "name": f"{metric}/synthetic-{label}", "metric": metric,
                          "source": f"src_{label}", "target": f"tgt_{label}"})
        for metric in ("rdm", "rdm_cv", "cka", "cka_biased", "cka_cv"):
            cases.append({"kind": "similarity", "name": f"{metric}/synthetic-{label}", "metric": metric,
                          "source": f"src_{label}", "target": f"tgt_{label}"})
    cases.append({"kind": "regression", "name": "ridgecv-dual/synthetic-wide64", "metric": "ridgecv", "dual": True,
                  "source": "src_wide64", "target": "tgt_wide64"})
    for metric in ("pls", "ridge"):
        cases.append({"kind": "regression", "name": f"{metric}/synthetic-wide64-stratified", "metric": metric,
                      "stratify": "object_name", "source": "src_wide64", "target": "tgt_wide64"})
        cases.append({"kind": "regression", "name": f"{metric}/synthetic-wide64-kfold", "metric": metric,
                      "kfold": True, "source": "src_wide64", "target": "tgt_wide64"})

    # --- internal consistency (synthetic repetitions) and its per-time-bin version
    n_stim, n_neur, n_rep = 40, 9, 8
    signal = rng.gamma(2.0, 2.0, size=(n_stim, n_neur))
    trials = rng.poisson(np.repeat(signal[:, :, None], n_rep, axis=2)).astype(float)
    stim, rep = np.meshgrid(np.arange(n_stim), np.arange(n_rep), indexing="ij")
    stim, rep = stim.ravel(), rep.ravel()
    rep_ids = np.array([f"s{i:03d}" for i in stim], dtype=object)
    assemblies["reps"] = _neural(trials[stim, :, rep], rep_ids, "n", {"repetition": ("presentation", rep)})
    cases.append({"kind": "internal_consistency", "name": "internal_consistency/synthetic", "target": "reps"})
    binned = np.stack([trials[stim, :, rep], trials[stim, :, rep] + rng.poisson(3.0, size=(len(stim), n_neur))], axis=2)
    assemblies["reps_time"] = xr.DataArray(
        binned, dims=("presentation", "neuroid", "time_bin"),
        coords={**{k: v for k, v in _neural(binned[:, :, 0], rep_ids, "n", {"repetition": ("presentation", rep)}).coords.items()},
                "time_bin_start": ("time_bin", [70, 170]), "time_bin_end": ("time_bin", [170, 270])},
    )
    cases.append({"kind": "internal_consistency_temporal", "name": "internal_consistency_temporal/synthetic", "target": "reps_time"})

    # --- RSA ceiling over subjects
    shared = rng.standard_normal((30, 6))
    subject_values = [shared @ rng.standard_normal((6, 15)) + 1.5 * rng.standard_normal((30, 15)) for _ in range(4)]
    values = np.concatenate(subject_values, axis=1)
    assemblies["subjects"] = _neural(values, [f"st{i:02d}" for i in range(30)], "v",
                                     {"subject": ("neuroid", np.repeat([f"sub{k}" for k in range(4)], 15).astype(object))})
    cases.append({"kind": "rsa_ceiling", "name": "rsa_ceiling/synthetic", "target": "subjects"})

    # --- normalisation regime (Brain-Score's current explained_variance)
    cases.append({"kind": "explained_variance", "name": "explained_variance/r2_over_ceiling", "raw": 0.53, "error": 0.012, "ceiling": 0.81})

    # --- behaviour: accuracy, accuracy_distance, error_consistency (+ subject-pair ceilings), i2n (+ ceiling)
    labels = np.array(["cat", "dog", "car", "boat"], dtype=object)
    conditions = np.array(["c0", "c1", "c2"], dtype=object)
    stim_ids = np.array([f"b{i:03d}" for i in range(60)], dtype=object)
    truth = labels[rng.integers(0, 4, 60)]
    condition = conditions[np.arange(60) % 3]
    model_answer = np.where(rng.random(60) < 0.7, truth, labels[rng.integers(0, 4, 60)])
    beh = lambda values, coords: xr.DataArray(np.asarray(values, dtype=object), dims=("presentation",), coords=coords)  # noqa: E731
    assemblies["beh_model"] = beh(model_answer, {"stimulus_id": ("presentation", stim_ids), "truth": ("presentation", truth),
                                                  "condition": ("presentation", condition)})
    rows = []
    for k in range(3):
        accuracy = [0.8, 0.65, 0.55][k]
        answers = np.where(rng.random(60) < accuracy, truth, labels[rng.integers(0, 4, 60)])
        rows.append((answers, np.full(60, f"subj{k}", dtype=object)))
    answers = np.concatenate([r[0] for r in rows])
    assemblies["beh_subjects"] = beh(answers, {
        "stimulus_id": ("presentation", np.tile(stim_ids, 3)), "truth": ("presentation", np.tile(truth, 3)),
        "condition": ("presentation", np.tile(condition, 3)), "subject": ("presentation", np.concatenate([r[1] for r in rows])),
    })
    assemblies["beh_truth"] = beh(truth, {"stimulus_id": ("presentation", stim_ids), "condition": ("presentation", condition)})
    assemblies["beh_labels"] = beh(model_answer, {"stimulus_id": ("presentation", stim_ids), "condition": ("presentation", condition)})
    cases.append({"kind": "behavior", "name": "accuracy/synthetic", "metric": "accuracy", "source": "beh_labels", "target": "beh_truth"})
    for metric in ("accuracy_distance", "error_consistency"):
        cases.append({"kind": "behavior", "name": f"{metric}/synthetic", "metric": metric, "source": "beh_model", "target": "beh_subjects"})
        cases.append({"kind": "behavior", "name": f"{metric}-ceiling/synthetic", "metric": metric, "ceiling": True, "target": "beh_subjects"})

    objects6 = np.array(["bear", "car", "dog", "face", "pen", "tree"], dtype=object)
    images = np.array([f"im{i:03d}" for i in range(36)], dtype=object)
    image_truth = objects6[np.arange(36) % 6]
    difficulty = rng.uniform(0.55, 0.95, 36)
    trial_rows = {"stimulus_id": [], "truth": [], "sample_obj": [], "dist_obj": [], "choice": []}
    for i, image in enumerate(images):
        for distractor in objects6:
            if distractor == image_truth[i]:
                continue
            for _ in range(30):
                correct = rng.random() < difficulty[i]
                trial_rows["stimulus_id"].append(image)
                trial_rows["truth"].append(image_truth[i])
                trial_rows["sample_obj"].append(image_truth[i])
                trial_rows["dist_obj"].append(distractor)
                trial_rows["choice"].append(image_truth[i] if correct else distractor)
    assemblies["i2n_trials"] = beh(trial_rows["choice"], {k: ("presentation", np.asarray(v, dtype=object))
                                                          for k, v in trial_rows.items() if k != "choice"})
    logits = rng.standard_normal((36, 6)) + 2.0 * (image_truth[:, None] == objects6[None, :]) + 2 * difficulty[:, None] * (image_truth[:, None] == objects6[None, :])
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assemblies["i2n_model"] = xr.DataArray(probabilities, dims=("presentation", "choice"),
                                           coords={"stimulus_id": ("presentation", images),
                                                   "image_number": ("presentation", np.arange(36)), "choice": objects6})
    cases.append({"kind": "behavior", "name": "i2n/synthetic", "metric": "i2n", "source": "i2n_model", "target": "i2n_trials"})
    cases.append({"kind": "behavior", "name": "i2n-ceiling/synthetic", "metric": "i2n", "ceiling": True, "target": "i2n_trials"})

    # --- Cowley 2023 V4 (real recordings, read in place)
    if data_dir is not None and (data_dir / "cowley2023_v4").is_dir():
        from cortexbox.benchmarks import get_benchmark

        bench = get_benchmark("Cowley2023.V4-pls", data_dir=data_dir)
        target = bench.target_assembly
        cowley_ids = np.asarray(target["stimulus_id"].values)
        target_values = np.asarray(target.values)
        assemblies["cowley_target"] = _neural(target_values, cowley_ids, "v4_")
        noisy = target_values + rng.normal(scale=0.5 * target_values.std(axis=0), size=target_values.shape)
        assemblies["cowley_oracle"] = _neural(noisy, cowley_ids, "o")
        wide = np.maximum(noisy @ rng.standard_normal((50, 2000)) + 3 * rng.standard_normal((640, 2000)), 0)
        assemblies["cowley_wide"] = _neural(wide, cowley_ids, "w")
        repetitions = bench.repetition_assembly
        assemblies["cowley_reps"] = _neural(np.asarray(repetitions.values), repetitions["stimulus_id"].values, "v4_",
                                            {"repetition": ("presentation", np.asarray(repetitions["repetition"].values))})
        for metric in ("pls", "ridge", "linear_predictivity", "ridgecv", "neuron_to_neuron"):
            cases.append({"kind": "regression", "name": f"{metric}/cowley-wide", "metric": metric,
                          "source": "cowley_wide", "target": "cowley_target"})
        cases.append({"kind": "regression", "name": "pls/cowley-oracle", "metric": "pls", "source": "cowley_oracle", "target": "cowley_target"})
        for metric in ("rdm", "rdm_cv", "cka", "cka_biased"):
            cases.append({"kind": "similarity", "name": f"{metric}/cowley-wide", "metric": metric,
                          "source": "cowley_wide", "target": "cowley_target"})
        cases.append({"kind": "internal_consistency", "name": "internal_consistency/cowley", "target": "cowley_reps"})

        # --- Brain-Score's default arguments (no crossvalidation_kwargs: Split.Defaults stratify on object_name) on
        # real recordings presented in shuffled order, the model's rows in another order. The sessions' images carry
        # no object labels, so the object_name coordinate is made here: octiles of the population-mean response
        # (8 classes of 80 / 37-38 images; any labels do for parity, and these make the strata differ in response level)
        for session, recording in (("210325", target), ("210224", bench.selection_assembly)):
            values = np.asarray(recording.values, dtype=np.float64)
            session_ids = np.asarray(recording["stimulus_id"].values)
            n_images, n_neurons = values.shape
            population = values.mean(axis=1)
            octile = np.searchsorted(np.quantile(population, np.linspace(0, 1, 9)[1:-1]), population, side="right")
            objects = np.array([f"object{k}" for k in octile], dtype=object)
            shown = rng.permutation(n_images)  # the recording's presentation order
            rows = rng.permutation(n_images)  # the model's row order
            noisy = values + rng.normal(scale=0.5 * values.std(axis=0), size=values.shape)
            noisy = (noisy - noisy.mean(axis=0)) / noisy.std(axis=0)  # no all-zero unit after the ReLU: full rank
            features = {
                # fewer features than training stimuli (270 in 210224's 300 selection images), so linear_predictivity's
                # least squares has one solution, not Brain-Score's sklearn 1.5.2 minimum-norm one (see NOTES)
                "narrow": np.maximum(noisy @ rng.standard_normal((n_neurons, 200)) + 3 * rng.standard_normal((n_images, 200)), 0),
                "wide": np.maximum(noisy @ rng.standard_normal((n_neurons, 2000)) + 3 * rng.standard_normal((n_images, 2000)), 0),
            }
            assemblies[f"v4_{session}"] = _neural(values[shown], session_ids[shown], "v4_",
                                                  {"object_name": ("presentation", objects[shown])})
            for width, matrix in features.items():
                assemblies[f"v4_{session}_{width}"] = _neural(matrix[rows], session_ids[rows], "f",
                                                              {"object_name": ("presentation", objects[rows])})
            metrics = [("narrow", m) for m in ("pls", "ridge", "linear_predictivity", "ridgecv", "neuron_to_neuron")]
            for width, metric in [*metrics, ("wide", "pls"), ("wide", "ridge")]:
                cases.append({"kind": "regression", "name": f"{metric}/defaults-cowley{session}-{width}", "metric": metric,
                              "defaults": True, "source": f"v4_{session}_{width}", "target": f"v4_{session}"})
            for metric in ("rdm_cv", "cka_cv"):
                cases.append({"kind": "similarity", "name": f"{metric}/defaults-cowley{session}-narrow", "metric": metric,
                              "defaults": True, "source": f"v4_{session}_narrow", "target": f"v4_{session}"})

    cases.append({"kind": "netcdf", "name": "netcdf/ours-read-by-brainscore", "source": "tgt_narrow64"})
    for name, assembly in assemblies.items():
        write_assembly(assembly, folder / f"{name}.nc")
    (folder / "cases.json").write_text(json.dumps(cases))
    return cases, assemblies


def cortexbox_side(folder: Path, cases: list[dict], assemblies: dict) -> dict:  # noqa: C901
    import numpy as np

    from cortexbox.benchmarks import Score
    from cortexbox.benchmarks.metrics import InternalConsistency, RSACeiling, TemporalInternalConsistency, explained_variance, load_metric
    from cortexbox.benchmarks.netcdf import read_assembly

    def load(name):
        return read_assembly(folder / f"{name}.nc")

    results = {}
    for case in cases:
        kind, name = case["kind"], case["name"]
        started = time.perf_counter()
        try:
            if kind == "regression":
                params = {} if case.get("defaults") else {"stratification_coord": case.get("stratify")}
                if case.get("kfold"):
                    params["kfold"] = True
                score = load_metric(case["metric"], **params)(load(case["source"]), load(case["target"]))
                results[name] = {"raw": score.raw, "error": score.error, "values": score.values,
                                 "cross_validation": score.attrs["cross_validation"]}
                if case.get("defaults"):  # how far the unstratified splits would have been
                    plain = load_metric(case["metric"], stratification_coord=None, n_boot=0)
                    results[name]["unstratified_raw"] = plain(load(case["source"]), load(case["target"])).raw
            elif kind in ("similarity", "behavior"):
                params = {}
                if case["metric"].endswith("_cv") and not case.get("defaults"):
                    params["stratification_coord"] = None
                metric = load_metric(case["metric"], **params)
                if case.get("ceiling"):
                    score = metric.ceiling(load(case["target"]))
                else:
                    score = metric(load(case["source"]), load(case["target"]))
                entry = {"raw": score.raw, "error": None if math.isnan(score.error) else score.error}
                if case["metric"].endswith("_cv") or case["metric"] == "i2n":
                    entry["values"] = score.values
                if "cross_validation" in score.attrs:
                    entry["cross_validation"] = score.attrs["cross_validation"]
                if case.get("defaults"):
                    plain = load_metric(case["metric"], stratification_coord=None)
                    entry["unstratified_raw"] = plain(load(case["source"]), load(case["target"])).raw
                results[name] = entry
            elif kind == "internal_consistency":
                score = InternalConsistency()(load(case["target"]))
                results[name] = {"raw": score.raw, "error": score.error, "values": score.values}
            elif kind == "internal_consistency_temporal":
                score = TemporalInternalConsistency()(load(case["target"]))
                results[name] = {"per_bin": score.values}
            elif kind == "rsa_ceiling":
                score = RSACeiling()(load(case["target"]))
                results[name] = {"raw": score.raw, "lower_bound_loo": score.attrs["lower_bound_loo"]}
            elif kind == "explained_variance":
                ceiled = explained_variance(Score(raw=case["raw"], error=case["error"]), Score(raw=case["ceiling"], error=0.0))
                results[name] = {"ceiled": ceiled.ceiled, "error": ceiled.error}
            elif kind == "netcdf":
                assembly = load(case["source"])
                results[name] = {
                    "shape": list(assembly.shape),
                    "stimulus_id": [str(s) for s in assembly["stimulus_id"].values],
                    "neuroid_id": [str(s) for s in assembly["neuroid_id"].values],
                    "sum": float(np.asarray(assembly.values, dtype=np.float64).sum()),
                }
        except Exception as error:
            results[name] = {"exception": f"{type(error).__name__}: {error}"}
        results.setdefault(name, {})["seconds"] = time.perf_counter() - started
    return results


def _max_abs_diff(ours: dict, theirs: dict) -> float:
    diffs = []
    for key in ("raw", "error", "ceiled", "lower_bound_loo"):
        if ours.get(key) is not None and theirs.get(key) is not None:
            diffs.append(abs(float(ours[key]) - float(theirs[key])))
    for key in ("values", "per_bin"):
        if ours.get(key) is not None and theirs.get(key) is not None:
            a, b = ours[key], theirs[key]
            if len(a) != len(b):
                return math.inf
            diffs.extend(abs(float(x) - float(y)) for x, y in zip(a, b))
    return max(diffs) if diffs else math.nan


NOTES = {
    "wide64/linear_predictivity": "cannot agree: with more features than training stimuli Brain-Score's sklearn 1.5.2 "
    "LinearRegression keeps the near-zero singular value that centring creates (lstsq cutoff eps instead of "
    "max(n, p) * eps), so its minimum-norm solution carries rounding noise (0.04 in predictions vs the exact one); "
    "cortexbox's (sklearn >= 1.6 cutoff, on row-space coordinates) matches the exact pseudo-inverse to 1e-14",
    "wide32/ridge": "Brain-Score fits sklearn Ridge on the float32 features in float32 (sklearn keeps float32 for Ridge); "
    "cortexbox computes in float64, so the two differ by float32 rounding",
    "wide32/linear_predictivity": "as wide64 (ill-conditioned minimum-norm fit in Brain-Score), in float32 too",
    "wide/linear_predictivity": "as synthetic-wide64: Brain-Score's minimum-norm fit keeps a spurious singular value",
    "wide32/cka": "Brain-Score's CKA multiplies the float32 values in float32 (X @ X.T); cortexbox in float64",
    "wide32/cka_biased": "as cka",
    "wide32/cka_cv": "as cka",
}


def compare(ours: dict, theirs: dict, assemblies: dict, folder: Path) -> list[dict]:
    import numpy as np

    from cortexbox.benchmarks.netcdf import read_assembly

    rows = []
    for name in ours:
        mine, bs = ours[name], theirs.get(name, {"exception": "missing"})
        row = {"case": name, "cortexbox_s": round(mine.get("seconds", math.nan), 4), "brainscore_s": round(bs.get("seconds", math.nan), 4)}
        if "exception" in mine or "exception" in bs:
            row.update(max_abs_diff=None, passed=False, cortexbox=mine.get("exception"), brainscore=bs.get("exception"))
        elif name.startswith("netcdf/"):
            same = (mine["shape"] == bs["shape"] and mine["stimulus_id"] == bs["stimulus_id"]
                    and mine["neuroid_id"] == bs["neuroid_id"])
            diff = abs(mine["sum"] - bs["sum"])
            back = read_assembly(folder / "tgt_narrow64.bs_written.nc")
            original = assemblies["tgt_narrow64"]
            diff = max(diff, float(np.abs(back.values - original.values).max()))
            same = same and list(back["stimulus_id"].values) == list(original["stimulus_id"].values) and \
                list(back["neuroid_id"].values) == list(original["neuroid_id"].values) and \
                list(back["object_name"].values) == list(original["object_name"].values)
            row.update(max_abs_diff=diff, passed=bool(same and diff <= TOLERANCE), brainscore_indexes=bs.get("indexes"),
                       note="our file read by Brain-Score's loader (MultiIndexes rebuilt), and their write_netcdf read back by ours")
        else:
            diff = _max_abs_diff(mine, bs)
            row.update(max_abs_diff=diff, passed=bool(diff <= TOLERANCE),
                       cortexbox={k: v for k, v in mine.items() if k != "seconds"},
                       brainscore={k: v for k, v in bs.items() if k != "seconds"})
            if "unstratified_raw" in mine:  # a default-argument case: which splits, and what they changed
                row["splitter"] = mine["cross_validation"]["splitter"]
                row["stratification_coord"] = mine["cross_validation"]["stratification_coord"]
                row["shift_vs_unstratified"] = abs(mine["raw"] - mine["unstratified_raw"])
        for key, note in NOTES.items():
            label, metric = key.split("/")
            if f"-{label}" in name and name.split("/")[0] == metric and "note" not in row:
                row["note"] = note
        rows.append(row)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setup-venv", action="store_true", help=f"create the Brain-Score venv at {VENV} and exit")
    parser.add_argument("--brainscore-side", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, default=None, help="shared data folder (default: <repo>/../shared/data)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "parity.json")
    parser.add_argument("--only", default=None, help="run only the cases whose name contains this text")
    args = parser.parse_args()
    if args.setup_venv:
        setup_venv()
        return 0
    if args.brainscore_side:
        brainscore_side(args.brainscore_side)
        return 0

    sys.path.insert(0, str(HERE.parent))
    from cortexbox.benchmarks.data import resolve_data_dir

    python = VENV / "bin" / "python"
    if not python.exists():
        print(f"no Brain-Score venv at {VENV}: run `python {Path(__file__).name} --setup-venv` first", file=sys.stderr)
        return 2
    data_dir = resolve_data_dir(args.data_dir)
    with tempfile.TemporaryDirectory(prefix="cbx-parity-") as tmp:
        folder = Path(tmp)
        cases, assemblies = build_inputs(folder, data_dir)
        if args.only:
            cases = [case for case in cases if args.only in case["name"]]
            (folder / "cases.json").write_text(json.dumps(cases))
        ours = cortexbox_side(folder, cases, assemblies)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["TQDM_DISABLE"] = "1"
        with open(folder / "brainscore.log", "w") as log:
            done = subprocess.run([str(python), __file__, "--brainscore-side", str(folder)], env=env, stdout=log, stderr=log)
        if done.returncode:
            print((folder / "brainscore.log").read_text()[-3000:], file=sys.stderr)
            return 1
        theirs = json.loads((folder / "brainscore.json").read_text())
        rows = compare(ours, theirs, assemblies, folder)
    versions = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print({p: m.version(p) for p in "
         "['brainscore-vision','brainscore-core','numpy','xarray','scikit-learn','scipy','pandas']})"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    report = {"tolerance": TOLERANCE, "brainscore_env": versions, "n_cases": len(rows),
              "n_passed": sum(r["passed"] for r in rows), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=str))
    width = max(len(r["case"]) for r in rows)
    print(f"{'case':<{width}}  {'max |diff|':>11}  pass  {'cbx s':>7}  {'bs s':>7}")
    for r in rows:
        diff = "exception" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.2e}"
        print(f"{r['case']:<{width}}  {diff:>11}  {'yes' if r['passed'] else 'NO ':>4}  {r['cortexbox_s']:>7.3f}  {r['brainscore_s']:>7.3f}"
              + (f"  {r['note']}" if r.get("note") and not r["passed"] else ""))
        if r["max_abs_diff"] is None:
            print(f"    cortexbox: {r.get('cortexbox')}\n    brainscore: {r.get('brainscore')}")
    defaults = [r for r in rows if "splitter" in r]
    if defaults:
        print("\ndefault arguments (Brain-Score's load_metric(name) as is) on real recordings in shuffled order:")
        print(f"{'case':<{width}}  {'max |diff|':>11}  {'splitter':<22}  |default - unstratified|")
        for r in defaults:
            print(f"{r['case']:<{width}}  {r['max_abs_diff']:>11.2e}  {r['splitter'] + ' ' + str(r['stratification_coord']):<22}"
                  f"  {r['shift_vs_unstratified']:.2e}")
    print(f"{report['n_passed']}/{report['n_cases']} within {TOLERANCE:g}; written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
