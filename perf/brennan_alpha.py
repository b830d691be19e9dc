"""Brennan2016.<ROI>-ridge before and after the nested choice of the ridge penalty, for SmolLM2 and unigram.

    python perf/brennan_alpha.py [--templates hf-causal-lm unigram]

In process (no container, no gRPC): each template's model digests the Alice chapter as one context; the committed
layer (``region_layers["language"]`` or the fixed 2/3-depth rule: SmolLM2 ``hidden_states.20``, unigram
``log_frequency``) is scored on the six ROIs by version 1 (RidgeCV's efficient leave-one-out over alphas
10^-1..10^6 on each training fold, replicated here) and by the benchmark as it is now (version 2: nested
contiguous-block cross-validation inside each training fold). No bootstrap. Prints raw, ceiled and the chosen
alphas; writes perf/results/brennan_alpha.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = {"hf-causal-lm": "CausalLM", "unigram": "Unigram"}


def features(template: str, bench) -> tuple[str, np.ndarray]:
    from cortexbox.benchmarks.language import committed_layer
    from cortexbox.sdk import Stimulus

    spec = importlib.util.spec_from_file_location(f"t_{template.replace('-', '_')}", REPO / "model_templates" / template / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = getattr(module, TEMPLATES[template])()
    model.load()
    layer = dict(model.region_layers).get("language") or committed_layer([o.name for o in model.layers()])
    parts = [Stimulus(sid, text=text, context_id=context) for sid, text, context in bench.stimulus_set.parts]
    return layer, np.asarray(model.digest(parts, [layer], [])[layer], dtype=np.float64).reshape(len(parts), -1)


def score_v1(bench, x_words: np.ndarray) -> tuple[float, list[float]]:
    """Version 1's metric: per fold, z-score on the training rows, RidgeCV (leave-one-out) over 10^-1..10^6."""
    from cortexbox.benchmarks.metrics import pearson_r_score
    from cortexbox.benchmarks.metrics.regression import fit_predict

    x, y = bench.design(x_words), bench.targets
    values, alphas = [], []
    for train, test in bench.folds:
        mean, std = x[train].mean(axis=0), x[train].std(axis=0)
        std[std == 0] = 1.0
        prediction, info = fit_predict("ridgecv", (x[train] - mean) / std, y[train], (x[test] - mean) / std,
                                       alphas=[10.0**k for k in range(-1, 7)])
        values.append(float(np.nanmedian(pearson_r_score(y[test], prediction, aggregate="raw_values"))))
        alphas.append(info["alpha"])
    return float(np.mean(values)), alphas


def main() -> None:
    from cortexbox.benchmarks import neuroid_assembly
    from cortexbox.benchmarks.brennan2016 import ROIS, Brennan2016Ridge

    parser = argparse.ArgumentParser()
    parser.add_argument("--templates", nargs="*", default=list(TEMPLATES))
    args = parser.parse_args()
    rows = []
    for template in args.templates:
        probe = Brennan2016Ridge(ROIS[0])
        layer, x_words = features(template, probe)
        ids = probe.stimulus_set.stimulus_ids
        assembly = neuroid_assembly(x_words.astype(np.float32), ids, layer=layer)
        for roi in ROIS:
            bench = Brennan2016Ridge(roi)
            bench.n_boot = 0
            v1_raw, v1_alphas = score_v1(bench, x_words)
            v2 = bench.score(assembly)
            ceiling = bench.ceiling.raw
            row = {"template": template, "layer": layer, "width": x_words.shape[1], "roi": roi, "ceiling": ceiling,
                   "v1_raw": v1_raw, "v1_ceiled": min(max(v1_raw / ceiling, 0.0), 1.0), "v1_alphas": v1_alphas,
                   "v2_raw": v2.raw, "v2_ceiled": v2.ceiled if v2.ceiled is not None else math.nan, "v2_alphas": v2.attrs["alphas"]}
            rows.append(row)
            print(f"{template:13s} {layer:17s} {roi:6s} ceiling {ceiling:.3f}  v1 raw {v1_raw:+.3f} ceiled {row['v1_ceiled']:.3f} "
                  f"alphas {['%g' % a for a in v1_alphas]}  |  v2 raw {v2.raw:+.3f} ceiled {row['v2_ceiled']:.3f} "
                  f"alphas {['%g' % a for a in v2.attrs['alphas']]}", flush=True)
        mean = {k: float(np.mean([r[k] for r in rows if r["template"] == template])) for k in ("v1_ceiled", "v2_ceiled")}
        print(f"{template}: mean ceiled over ROIs v1 {mean['v1_ceiled']:.3f}, v2 {mean['v2_ceiled']:.3f}", flush=True)
    out = REPO / "perf" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "brennan_alpha.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
