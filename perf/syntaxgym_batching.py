"""SyntaxGym 2020 with SmolLM2 (hf-causal-lm): one context per forward pass vs padded batches of contexts.

    python perf/syntaxgym_batching.py [--contexts N] [--threads T]

In process, but through the real SDK server and the orchestrator's validating client over a unix socket (no
container): the same template model is served twice, once with ``max_batch_contexts = 1`` (the SDK calls
``digest`` per context: the behaviour before batching) and once with the template's own ``max_batch_contexts``
(``digest_batch``: short contexts in right-padded batches with an attention mask). The contexts go in runs of
``--chunk`` contexts, the two modes alternating run by run (a shared machine's load changes by the minute). Prints wall time per mode,
the largest surprisal difference in bits, and both syntaxgym2020 scores; writes perf/results/syntaxgym_batching.json.
The first ``--contexts`` contexts of the stimulus set are used (default: all 3,132).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr

REPO = Path(__file__).resolve().parents[1]


def load_template():
    spec = importlib.util.spec_from_file_location("template_hf_causal_lm", REPO / "model_templates" / "hf-causal-lm" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CausalLM


class Served:
    """A model behind the SDK server on a unix socket, and the validating client."""

    def __init__(self, model, socket: str):
        from cortexbox.orchestrator.client import ModelClient
        from cortexbox.sdk import serve

        self.server, _ = serve(model, f"unix://{socket}", block=False)
        self.client = ModelClient(f"unix://{socket}")
        self.client.wait_until_serving(600)
        self.info = self.client.info()

    def run(self, parts) -> tuple[float, np.ndarray]:
        t0 = time.perf_counter()
        result = self.client.run(self.info, iter(parts), [p[0] for p in parts], behaviours=["surprisal"], timeout_s=3600)
        return time.perf_counter() - t0, np.asarray(result.outputs["surprisal"][:, 0], dtype=np.float64)

    def close(self) -> None:
        self.client.close()
        self.server.stop(0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contexts", type=int, default=None)
    parser.add_argument("--chunk", type=int, default=400, help="contexts per run; the two modes alternate by chunk")
    parser.add_argument("--threads", type=int, default=None, help="CORTEXBOX_NUM_THREADS (default: the CPU quota)")
    args = parser.parse_args()
    if args.threads:
        os.environ["CORTEXBOX_NUM_THREADS"] = str(args.threads)
    from cortexbox.benchmarks.syntaxgym import SyntaxGym2020

    bench = SyntaxGym2020()
    stimuli = bench.stimulus_set
    keep = stimuli.contexts[: args.contexts] if args.contexts else stimuli.contexts
    parts = stimuli.subset(keep).parts if args.contexts else stimuli.parts
    CausalLM = load_template()
    modes = {"one context per pass": 1, "padded batches": None}
    rows = {mode: {"seconds": 0.0, "surprisal": []} for mode in modes}
    chunks = [keep[i : i + args.chunk] for i in range(0, len(keep), args.chunk)]
    with tempfile.TemporaryDirectory() as tmp:
        served = {}
        for mode, per_call in modes.items():
            model = CausalLM()
            if per_call is not None:
                model.max_batch_contexts = per_call
            served[mode] = Served(model, f"{tmp}/{per_call}.sock")
            rows[mode]["max_batch_contexts"] = model.max_batch_contexts
        try:
            # the modes alternate chunk by chunk, so that a shared machine's changing load hits both alike
            for chunk in chunks:
                chunk_parts = stimuli.subset(chunk).parts
                for mode in modes:
                    seconds, surprisal = served[mode].run(chunk_parts)
                    rows[mode]["seconds"] += seconds
                    rows[mode]["surprisal"].append(surprisal)
        finally:
            for s in served.values():
                s.close()
    for mode, row in rows.items():
        row["surprisal"] = np.concatenate(row["surprisal"])
        print(f"{mode:22s} max_batch_contexts={row['max_batch_contexts']:3d}  {len(keep)} contexts, {len(parts)} parts: "
              f"{row['seconds']:7.1f} s", flush=True)
    a, b = (rows[m]["surprisal"] for m in rows)
    diff = float(np.max(np.abs(a - b)))
    scores = {}
    if not args.contexts:
        for mode, row in rows.items():
            assembly = xr.DataArray(row["surprisal"][:, None], dims=("presentation", "neuroid"),
                                    coords={"stimulus_id": ("presentation", [p[0] for p in parts])})
            scores[mode] = bench.score(assembly).raw
    speedup = rows["one context per pass"]["seconds"] / rows["padded batches"]["seconds"]
    print(f"max |surprisal difference| = {diff:.2e} bits; speedup {speedup:.1f}x; syntaxgym2020 {scores}")
    out = REPO / "perf" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "syntaxgym_batching.json").write_text(json.dumps({
        "contexts": len(keep), "parts": len(parts), "threads": os.environ.get("CORTEXBOX_NUM_THREADS"),
        "seconds": {m: r["seconds"] for m, r in rows.items()}, "max_abs_difference_bits": diff, "speedup": speedup,
        "syntaxgym2020": scores,
    }, indent=2))


if __name__ == "__main__":
    main()
