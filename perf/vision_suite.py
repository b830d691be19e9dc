"""Scores the three vision templates on every vision benchmark and reports the table and the
suite's wall time per model (activations are cached wherever stimuli repeat).

    python perf/vision_suite.py [--home DIR] [--templates pixels,pytorch-vision,tflite-mobilenet]

Uses a fresh registry and activation cache under --home (default: a new temporary folder),
so the wall times include every extraction the suite needs, once.
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
    args = parser.parse_args()
    os.environ["CORTEXBOX_HOME"] = args.home or tempfile.mkdtemp(prefix="cortexbox-suite-")

    from cortexbox.benchmarks import get_benchmark, list_benchmarks
    from cortexbox.orchestrator import images
    from cortexbox.orchestrator.errors import CortexboxError
    from cortexbox.orchestrator.jobs import ScoreRequest, score_model
    from cortexbox.orchestrator.runtime import docker_client

    vision = [b for b in list_benchmarks() if getattr(get_benchmark(b), "modality", "image") == "image"
              and not b.startswith(("Futrell", "Brennan", "SyntaxGym"))]
    docker = docker_client()
    rows, walls = [], {}
    for template in args.templates.split(","):
        tag = images.build_model_image(docker, REPO / "model_templates" / template, log=lambda _: None).tag
        t0 = time.perf_counter()
        for identifier in vision:
            try:
                o = score_model(ScoreRequest(benchmark=identifier, image=tag))
                rows.append({"model": template, "benchmark": identifier, "raw": o.raw, "error": o.error,
                             "ceiling": o.ceiling, "ceiled": o.ceiled, "layer": o.layer, "from_cache": o.from_cache})
            except CortexboxError as e:
                rows.append({"model": template, "benchmark": identifier, "failed": str(e)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        walls[template] = round(time.perf_counter() - t0, 1)
    json.dump({"rows": rows, "suite_wall_s": walls}, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
