"""Time and peak memory of pls, ridge, ridgecv and rdm at Brain-Score scale, cortexbox against Brain-Score.

Default scale: 3,200 stimuli x 100,000 float32 features x 168 neuroids (MajajHong2015 IT with a large conv layer),
10 splits. The inputs are generated once (a low-rank signal plus noise through a ReLU, like real activations) and
saved as ``.npy`` under ``--work-dir``; every (side, metric) pair then runs in a fresh subprocess that loads them
(``np.load``, not memory-mapped), builds that side's assemblies, scores, and reports wall time of the metric call
and the process's peak RSS (``ru_maxrss``, which includes the 1.3 GB of loaded features on both sides).

Brain-Score runs in the venv made by ``parity_brainscore.py --setup-venv`` (``/tmp/bs-venv``), through its own
registry (``load_metric("pls")`` etc.); for ``ridgecv`` it uses ``dual_ridge_cv_regression`` (their memory-saving
form for wide features) inside ``CrossRegressedCorrelation``, as cortexbox's ``ridgecv`` is the CV form of it.

    python perf/metrics_scale.py                           # both sides, all four metrics (long: see README)
    python perf/metrics_scale.py --sides cortexbox --n-features 20000
    python perf/metrics_scale.py --metrics rdm --brainscore-timeout 1800

Results go to ``perf/results/metrics_scale.json``; the table in perf/README.md is copied from a run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV_PYTHON = Path(os.environ.get("BS_VENV", "/tmp/bs-venv")) / "bin" / "python"
METRICS = ("pls", "ridge", "ridgecv", "rdm")


def generate(work: Path, n_stimuli: int, n_features: int, n_neuroids: int, seed: int = 0) -> None:
    import numpy as np

    work.mkdir(parents=True, exist_ok=True)
    marker = work / f"inputs-{n_stimuli}x{n_features}x{n_neuroids}-{seed}.done"
    if marker.exists():
        return
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((n_stimuli, 32)).astype(np.float32)
    features = np.lib.format.open_memmap(work / "features.npy", mode="w+", dtype=np.float32, shape=(n_stimuli, n_features))
    for start in range(0, n_features, 8192):
        stop = min(start + 8192, n_features)
        block = latent @ rng.standard_normal((32, stop - start), dtype=np.float32)
        block += 2.0 * rng.standard_normal(block.shape, dtype=np.float32)
        np.maximum(block, 0, out=block)
        features[:, start:stop] = block
    features.flush()
    del features
    target = latent.astype(np.float64) @ rng.standard_normal((32, n_neuroids)) + 3.0 * rng.standard_normal((n_stimuli, n_neuroids))
    np.save(work / "target.npy", target)
    ids = np.array([f"img{i:05d}" for i in rng.permutation(n_stimuli)])
    np.save(work / "ids.npy", ids)
    for old in work.glob("inputs-*.done"):
        old.unlink()
    marker.touch()


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # kB on Linux


def run_cortexbox(work: Path, metric: str, splits: int) -> dict:
    import numpy as np
    import xarray as xr

    sys.path.insert(0, str(HERE.parent))
    from cortexbox.benchmarks import neuroid_assembly
    from cortexbox.benchmarks.metrics import load_metric

    features, target, ids = np.load(work / "features.npy"), np.load(work / "target.npy"), np.load(work / "ids.npy")
    ids = ids.astype(object)
    loaded = _peak_rss_gb()
    source = neuroid_assembly(features, ids, layer="big")
    recording = xr.DataArray(target, dims=("presentation", "neuroid"), coords={
        "stimulus_id": ("presentation", ids),
        "neuroid_id": ("neuroid", np.array([f"n{j}" for j in range(target.shape[1])], dtype=object)),
    })
    started = time.perf_counter()
    score = load_metric(metric, **({} if metric == "rdm" else {"n_splits": splits}))(source, recording)
    seconds = time.perf_counter() - started
    return {"raw": score.raw, "error": None if score.error != score.error else score.error, "values": score.values,
            "seconds": seconds, "peak_rss_gb": _peak_rss_gb(), "rss_after_load_gb": loaded}


def run_brainscore(work: Path, metric: str, splits: int) -> dict:
    import logging
    import warnings

    import numpy as np

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    from brainscore_core.supported_data_standards.brainio.assemblies import NeuroidAssembly
    from brainscore_vision import load_metric
    from brainscore_vision.metrics.regression_correlation.metric import (
        CrossRegressedCorrelation,
        dual_ridge_cv_regression,
        pearsonr_correlation,
    )

    features, target, ids = np.load(work / "features.npy"), np.load(work / "target.npy"), np.load(work / "ids.npy")
    loaded = _peak_rss_gb()
    image_number = np.unique(ids, return_inverse=True)[1]

    def assembly(values, prefix):
        return NeuroidAssembly(values, dims=("presentation", "neuroid"), coords={
            "stimulus_id": ("presentation", ids), "image_number": ("presentation", image_number),
            "neuroid_id": ("neuroid", np.array([f"{prefix}{j}" for j in range(values.shape[1])])),
            "region": ("neuroid", np.full(values.shape[1], "IT")),
        })

    source, recording = assembly(features, "f"), assembly(target, "n")
    started = time.perf_counter()
    cv = {"stratification_coord": None, "splits": splits}
    if metric == "ridgecv":
        scorer = CrossRegressedCorrelation(regression=dual_ridge_cv_regression(), correlation=pearsonr_correlation(),
                                           crossvalidation_kwargs=cv)
    elif metric == "rdm":
        scorer = load_metric("rdm")
    else:
        scorer = load_metric(metric, crossvalidation_kwargs=cv)
    score = scorer(source, recording)
    seconds = time.perf_counter() - started
    raw = score.attrs.get("raw")
    values = None
    if raw is not None and "split" in getattr(raw, "dims", ()):
        values = [float(v) for v in raw.median("neuroid").values]
    return {"raw": float(score.values), "error": float(score.attrs["error"]) if "error" in score.attrs else None,
            "values": values, "seconds": seconds, "peak_rss_gb": _peak_rss_gb(), "rss_after_load_gb": loaded}


def measure(side: str, metric: str, work: Path, timeout: float, splits: int) -> dict:
    python = sys.executable if side == "cortexbox" else str(VENV_PYTHON)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TQDM_DISABLE"] = "1"
    started = time.perf_counter()
    try:
        done = subprocess.run([python, __file__, "--child", side, metric, "--work-dir", str(work), "--splits", str(splits)],
                              capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"timed_out_after_s": timeout}
    if done.returncode:
        return {"failed": done.stderr[-2000:], "wall_s": time.perf_counter() - started}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-stimuli", type=int, default=3200)
    parser.add_argument("--n-features", type=int, default=100_000)
    parser.add_argument("--n-neuroids", type=int, default=168)
    parser.add_argument("--metrics", nargs="+", default=list(METRICS), choices=METRICS)
    parser.add_argument("--sides", nargs="+", default=["cortexbox", "brainscore"], choices=["cortexbox", "brainscore"])
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/cbx-metrics-scale"))
    parser.add_argument("--brainscore-timeout", type=float, default=3600.0, help="seconds per Brain-Score run")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "metrics_scale.json")
    parser.add_argument("--splits", type=int, default=10, help="CV splits for the regression metrics (both sides)")
    parser.add_argument("--pls-splits", type=int, default=None,
                        help="splits for pls only (Brain-Score's pls takes ~5 min per split at full scale); the first k"
                             " ShuffleSplit splits are the same as the first k of 10")
    parser.add_argument("--child", nargs=2, metavar=("SIDE", "METRIC"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        side, metric = args.child
        result = (run_cortexbox if side == "cortexbox" else run_brainscore)(args.work_dir, metric, args.splits)
        print(json.dumps(result))
        return 0
    generate(args.work_dir, args.n_stimuli, args.n_features, args.n_neuroids)
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    shape = f"{args.n_stimuli}x{args.n_features}x{args.n_neuroids}"
    report = previous if previous.get("shape") == shape else {"shape": shape, "runs": {}}
    for metric in args.metrics:
        for side in args.sides:
            if side == "brainscore" and not VENV_PYTHON.exists():
                print(f"skipping Brain-Score: no venv at {VENV_PYTHON} (parity_brainscore.py --setup-venv)")
                continue
            timeout = args.brainscore_timeout if side == "brainscore" else 3600.0
            splits = args.pls_splits if metric == "pls" and args.pls_splits else args.splits
            result = measure(side, metric, args.work_dir, timeout, splits)
            result["n_splits"] = splits
            report["runs"].setdefault(metric, {})[side] = result
            print(f"{metric:8s} {side:10s} {json.dumps({k: v for k, v in result.items() if k != 'values'})}", flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=1))
    print(f"\n{'metric':8s} {'splits':>6s} {'cbx s':>8s} {'bs s':>8s} {'time':>6s} {'cbx GB':>7s} {'bs GB':>7s} {'peak':>6s}"
          f" {'|raw diff|':>10s} {'max |split diff|':>16s}")
    for metric, sides in report["runs"].items():
        ours, theirs = sides.get("cortexbox", {}), sides.get("brainscore", {})
        if "seconds" in ours and "seconds" in theirs:
            split_diff = max((abs(a - b) for a, b in zip(ours.get("values") or [], theirs.get("values") or [])), default=float("nan"))
            print(f"{metric:8s} {ours.get('n_splits', 0):6d} {ours['seconds']:8.1f} {theirs['seconds']:8.1f}"
                  f" {ours['seconds'] / theirs['seconds']:6.3f} {ours['peak_rss_gb']:7.2f} {theirs['peak_rss_gb']:7.2f}"
                  f" {ours['peak_rss_gb'] / theirs['peak_rss_gb']:6.3f} {abs(ours['raw'] - theirs['raw']):10.2e} {split_diff:16.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
