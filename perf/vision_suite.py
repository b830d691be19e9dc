"""Scores the three vision templates on every vision benchmark and reports the table and the
suite's wall time per model (activations are cached per stimulus, so a stimulus that several
benchmarks or a layer selection show is extracted once).

    python perf/vision_suite.py [--home DIR] [--templates pixels,pytorch-vision,tflite-mobilenet]
                                [--benchmarks A,B] [--out FILE]

Uses a fresh registry and activation cache under --home (default: a new temporary folder),
so the wall times include every extraction the suite needs, once. Template images are built
(or found in Docker's cache) before the clock starts. Per model it also reports the load
average before and after (the machine may be shared) and how many stimuli the benchmarks asked
for and how many were actually sent to the container (provenance "activation_cache").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", default=None)
    parser.add_argument("--templates", default="pixels,pytorch-vision,tflite-mobilenet")
    parser.add_argument("--benchmarks", default=None, help="comma-separated; default: every vision benchmark")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    os.environ["CORTEXBOX_HOME"] = args.home or tempfile.mkdtemp(prefix="cortexbox-suite-")

    from cortexbox.benchmarks import get_benchmark, list_benchmarks
    from cortexbox.orchestrator import images
    from cortexbox.orchestrator.errors import CortexboxError
    from cortexbox.orchestrator.scoring import ScoreRequest, score_model
    from cortexbox.orchestrator.runtime import docker_client

    vision = [b for b in list_benchmarks() if getattr(get_benchmark(b), "modality", "image") == "image"
              and not b.startswith(("Futrell", "Brennan", "SyntaxGym"))]
    if args.benchmarks:
        vision = args.benchmarks.split(",")
    docker = docker_client()
    rows, walls, runs = [], {}, {}
    for template in args.templates.split(","):
        tag = images.build_model_image(docker, REPO / "model_templates" / template, log=lambda _: None).tag
        load_before = os.getloadavg()
        asked = sent = 0
        t0 = time.perf_counter()
        for identifier in vision:
            t1 = time.perf_counter()
            try:
                o = score_model(ScoreRequest(benchmark=identifier, image=tag))
                stats = o.provenance.get("activation_cache") or {}
                asked += stats.get("stimuli", 0)
                sent += stats.get("sent", 0)
                rows.append({"model": template, "benchmark": identifier, "version": o.benchmark_version, "raw": o.raw,
                             "error": o.error, "ceiling": o.ceiling, "ceiled": o.ceiled, "layer": o.layer,
                             "from_cache": o.from_cache, "activation_cache": stats,
                             "wall_s": round(time.perf_counter() - t1, 1)})
            except CortexboxError as e:
                rows.append({"model": template, "benchmark": identifier, "failed": str(e)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        walls[template] = round(time.perf_counter() - t0, 1)
        runs[template] = {"suite_wall_s": walls[template], "stimuli_asked": asked, "stimuli_sent": sent,
                          "loadavg_before": [round(x, 2) for x in load_before],
                          "loadavg_after": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count()}
        print(json.dumps({template: runs[template]}), file=sys.stderr, flush=True)
    result = {"rows": rows, "suite_wall_s": walls, "runs": runs, "home": os.environ["CORTEXBOX_HOME"]}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    json.dump(result, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
