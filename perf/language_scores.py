"""Scores the three language templates on every language benchmark through real containers; prints the table.

    python perf/language_scores.py [--templates hf-causal-lm unigram sentence-encoder] [--benchmarks ...]

Builds each template's image (the builder fetches requirements-nodeps.txt's --no-deps wheels itself), then runs
`cortexbox score --model <image> --benchmark <id> --json` for each pair in one throwaway CORTEXBOX_HOME (so the
activation cache is shared across the benchmarks of a model), and writes perf/results/language_scores.json.
A pair whose model lacks what the benchmark needs (a sentence encoder has no surprisal) is reported as rejected.

Measured 2026-12-07 (2 shared cores; `cortexbox score` per pair, raw with its 95% block-bootstrap interval):

| template | Futrell2018-pearsonr r (ceiled) | Futrell2018-spillover_dll, nats per word |
|---|---|---|
| hf-causal-lm (SmolLM2-135M) | 0.244 [0.214, 0.263] (0.309) | 0.0363 [0.0237, 0.0466] |
| unigram (wordfreq) | 0.254 [0.225, 0.277] (0.321) | 0.0052 [-0.0007, 0.0132] |
| sentence-encoder (MiniLM) | rejected: no surprisal | rejected: no surprisal |

Paired on the same 9,675 words (20-word blocks within stories), SmolLM2 - unigram = 0.031 [0.017, 0.043] nats per
word, SmolLM2 ahead in 8 of 10 held-out stories; GPT-3 davinci's surprisal shipped with the corpus gives 0.0157
[0.0073, 0.0258] in process. Under heavy load SmolLM2 can exceed the 120 s stall budget on a story: set
``CORTEXBOX_WIRE=stall_timeout_s=900``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = ("hf-causal-lm", "unigram", "sentence-encoder")


def benchmarks() -> list[str]:
    from cortexbox.benchmarks.registry import language_benchmarks

    ids = list(language_benchmarks())
    return [b for b in ids if not b.startswith("syntaxgym-")]  # the 31 suites are inside syntaxgym2020's values


def build(template: str) -> str:
    import docker
    from cortexbox.orchestrator import images

    client = docker.from_env()
    images.build_base_image(client)
    return images.build_model_image(client, REPO / "model_templates" / template).tag


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--templates", nargs="*", default=list(TEMPLATES))
    parser.add_argument("--benchmarks", nargs="*", default=None)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ, CORTEXBOX_HOME=home)
        for template in args.templates:
            tag = build(template)
            for bench in args.benchmarks or benchmarks():
                t0 = time.perf_counter()
                done = subprocess.run(
                    [sys.executable, "-m", "cortexbox.orchestrator.cli", "score", "--model", tag, "--benchmark", bench, "--json"],
                    capture_output=True, text=True, env=env,
                )
                row = {"template": template, "benchmark": bench, "wall_s": round(time.perf_counter() - t0, 1)}
                if done.returncode == 0:
                    out = json.loads(done.stdout)
                    row.update({k: out[k] for k in ("raw", "ceiled", "ceiling", "error", "layer")})
                    interval = (out["provenance"]["metric"].get("bootstrap") or {}).get("raw") or {}
                    row["interval"] = [interval.get("low"), interval.get("high")]  # raw scale, 95% bootstrap
                    if bench == "syntaxgym2020":
                        row["suites"] = out["provenance"]["metric"].get("suites")
                else:
                    row["failure"] = (done.stderr or done.stdout).strip().splitlines()[-1:]
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "suites"}), flush=True)
    out = REPO / "perf" / "results" / "language_scores.json"
    out.write_text(json.dumps(rows, indent=1))
    print("| template | benchmark | raw [95% interval] | ceiled | ceiling | layer |\n|---|---|---|---|---|---|")
    for r in rows:
        fmt = lambda v: "" if v is None else f"{v:.4f}"  # noqa: E731  (4 places: ΔLL is a few hundredths of a nat)
        if "failure" in r:
            print(f"| {r['template']} | {r['benchmark']} | n/a: {' '.join(r['failure'])[:90]} | | | |")
        else:
            low, high = r["interval"]
            raw = f"{fmt(r['raw'])} [{fmt(low)}, {fmt(high)}]" if low is not None else fmt(r["raw"])
            print(f"| {r['template']} | {r['benchmark']} | {raw} | {fmt(r['ceiled'])} | {fmt(r['ceiling'])} | {r['layer']} |")


if __name__ == "__main__":
    main()
