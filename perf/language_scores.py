"""Scores the three language templates on every language benchmark through real containers; prints the table.

    python perf/language_scores.py [--templates hf-causal-lm unigram sentence-encoder] [--benchmarks ...]

Builds each template's image (the builder fetches requirements-nodeps.txt's --no-deps wheels itself), then runs
`cortexbox score --model <image> --benchmark <id> --json` for each pair in one throwaway CORTEXBOX_HOME (so the
activation cache is shared across the benchmarks of a model), and writes perf/results/language_scores.json.
A pair whose model lacks what the benchmark needs (a sentence encoder has no surprisal) is reported as rejected.
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
                    if bench == "syntaxgym2020":
                        row["suites"] = out["provenance"]["metric"].get("suites")
                else:
                    row["failure"] = (done.stderr or done.stdout).strip().splitlines()[-1:]
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "suites"}), flush=True)
    out = REPO / "perf" / "results" / "language_scores.json"
    out.write_text(json.dumps(rows, indent=1))
    print("| template | benchmark | raw | ceiled | ceiling | layer |\n|---|---|---|---|---|---|")
    for r in rows:
        fmt = lambda v: "" if v is None else f"{v:.3f}"  # noqa: E731
        if "failure" in r:
            print(f"| {r['template']} | {r['benchmark']} | n/a: {' '.join(r['failure'])[:90]} | | | |")
        else:
            print(f"| {r['template']} | {r['benchmark']} | {fmt(r['raw'])} | {fmt(r['ceiled'])} | {fmt(r['ceiling'])} | {r['layer']} |")


if __name__ == "__main__":
    main()
