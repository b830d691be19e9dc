"""Activations through the sandboxed container versus the same model called in-process.

Both paths get the same placed stimuli (the Cowley V4 benchmark's 640 images) and produce the
same (stimuli x features) float32 arrays. In-process, the template's Model is imported from
its folder and called batch by batch, as the SDK's worker would; through the container, the
orchestrator's client streams the stimuli over gRPC and validates and places every chunk.
Container start-up is measured separately: it is paid once per model, not per stimulus. The container
path is measured twice on the same container: with the shared-memory transport (tensors written into
the run's memfd) and chunked over gRPC (shared_memory_bytes=0). The three are run in turns, `--repeats`
times (each round starting with the next path), and each reports its best, so that load from other work on
the machine hits them alike; each round's CPU seconds are reported too (in process: this process; through the
container: the client's process, and the container's cgroup apart).

    python perf/extraction.py --template pytorch-vision [--layers all|LAYER,...] [--repeats 5] [--out FILE.json]

Targets: container time at most 1.10x the in-process time (issue 2, chunked); at most 1.05x with
shared memory for all layers of the AlexNet template (issue 14).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def load_template_model(template: str):
    path = REPO / "model_templates" / template / "model.py"
    spec = importlib.util.spec_from_file_location(f"template_{template.replace('-', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    spec.loader.exec_module(module)
    from cortexbox.sdk import Model

    classes = [v for v in vars(module).values() if isinstance(v, type) and issubclass(v, Model) and v is not Model]
    return classes[0]()


def in_process(model, stimuli, layers: list[str], features: dict[str, int]) -> tuple[float, dict[str, np.ndarray]]:
    from cortexbox.sdk import Stimulus

    n = len(stimuli)
    out = {layer: np.empty((n, features[layer]), np.float32) for layer in layers}
    t0 = time.perf_counter()
    batch = model.max_batch_size
    for start in range(0, n, batch):
        chunk = [Stimulus(sid, pixels=px) for sid, px in stimuli[start : start + batch]]
        result = model.activations(chunk, layers)
        for layer in layers:
            out[layer][start : start + len(chunk)] = np.asarray(result[layer], np.float32).reshape(len(chunk), -1)
    return time.perf_counter() - t0, out


def layer_sums(outputs: dict[str, np.ndarray]) -> list[float]:
    """One float64 sum per layer: the paths' values are compared by these (outside the timed part)."""
    return [float(np.add.reduce(values, axis=None, dtype=np.float64)) for values in outputs.values()]


def container_cpu_s(container) -> float | None:
    """CPU seconds the container's cgroup has used (docker's cgroupfs driver: v1 cpuacct, or v2 cpu.stat); None where
    neither is readable. With the client's own CPU it is the container path's cost in CPU, which load on the machine
    distorts less than its wall time."""
    cid = container.id
    for path in (f"/sys/fs/cgroup/cpuacct/docker/{cid}/cpuacct.usage", f"/sys/fs/cgroup/cpu,cpuacct/docker/{cid}/cpuacct.usage"):
        try:
            return int(Path(path).read_text()) / 1e9
        except OSError:
            pass
    for path in (f"/sys/fs/cgroup/docker/{cid}/cpu.stat", f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/cpu.stat"):
        try:
            return int(Path(path).read_text().split("usage_usec")[1].split()[0]) / 1e6
        except (OSError, IndexError, ValueError):
            pass
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--template", default="pytorch-vision")
    parser.add_argument("--image", help="image tag (default: built from the template as cortexbox-perf/<template>:extraction)")
    parser.add_argument("--layers", default="all", help="'all' or comma-separated layer names")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cpus", type=float, default=float(os.cpu_count() or 2))
    parser.add_argument("--out", type=Path, help="also write the report (JSON) here")
    args = parser.parse_args()
    load_before = os.getloadavg()

    from cortexbox.benchmarks import get_benchmark
    from cortexbox.orchestrator import images
    from cortexbox.orchestrator.budgets import WireBudgets
    from cortexbox.orchestrator.runtime import ContainerSession, SandboxLimits, docker_client

    docker = docker_client()
    # Our own tag: the SDK of this checkout goes into the image, and the demo's images stay as they are.
    tag = args.image or images.build_model_image(
        docker, REPO / "model_templates" / args.template, tag=f"cortexbox-perf/{args.template}:extraction", log=lambda _: None
    ).tag

    os.environ.setdefault("TFLITE_MODEL_PATH", str(images.default_data_dir() / "coral_mobilenet_tflite" / "mobilenet_v2_1.0_224_quant.tflite"))
    os.environ.setdefault("CORTEXBOX_NUM_THREADS", str(int(args.cpus)))
    model = load_template_model(args.template)
    model.load()
    layer_outputs = {o.name: math.prod(o.shape) for o in model.layers()}
    layers = list(layer_outputs) if args.layers == "all" else args.layers.split(",")

    bench = get_benchmark("Cowley2023.V4-pls")
    stimuli = list(bench.stimulus_set.iter_placed(float(model.visual_degrees)))
    ids = [sid for sid, _ in stimuli]
    mib = sum(layer_outputs[layer] for layer in layers) * 4 * len(ids) / 2**20

    in_process(model, stimuli[:8], layers, layer_outputs)  # warm-up
    t0 = time.perf_counter()
    session = ContainerSession(docker, tag, limits=SandboxLimits(cpus=args.cpus))
    startup = time.perf_counter() - t0
    # Alternate the paths so that drifting load on the machine affects them alike.
    budgets = {"shared_memory": WireBudgets(), "chunked": WireBudgets(shared_memory_bytes=0)}
    walls: dict[str, list[float]] = {"in_process": [], "shared_memory": [], "chunked": []}
    cpu: dict[str, list[float]] = {"in_process": [], "shared_memory": [], "chunked": []}  # CPU s of this process
    container_cpu: dict[str, list[float]] = {"shared_memory": [], "chunked": []}  # and of the container's cgroup
    sums: dict[str, list[float]] = {}
    shared_bytes = 0
    try:
        d = session.description
        for path in ("shared_memory", "chunked"):  # warm-up, both ways
            session.client.budgets = budgets[path]
            session.client.run(d, stimuli[:8], ids[:8], layers=layers, timeout_s=600)
        paths = list(walls)
        for r in range(args.repeats):
            for path in paths[r % 3 :] + paths[: r % 3]:  # each round starts with another path
                c0, k0 = time.process_time(), container_cpu_s(session.container)
                if path == "in_process":
                    wall, out = in_process(model, stimuli, layers, layer_outputs)
                    cpu[path].append(time.process_time() - c0)
                    walls[path].append(wall)
                    sums[path] = layer_sums(out)
                    del out
                    continue
                session.client.budgets = budgets[path]
                result = session.client.run(d, iter(stimuli), ids, layers=layers, timeout_s=1800)
                k1 = container_cpu_s(session.container)
                cpu[path].append(time.process_time() - c0)
                container_cpu[path].append(k1 - k0 if k0 is not None and k1 is not None else math.nan)
                walls[path].append(result.wall_s)
                sums[path] = layer_sums(result.outputs)
                if path == "shared_memory":
                    shared_bytes = result.shared_memory_bytes
                del result
    finally:
        session.close()
    local, shared, chunked = (min(walls[path]) for path in ("in_process", "shared_memory", "chunked"))
    report = {
        "template": args.template,
        "image": tag,
        "stimuli": len(ids),
        "layers": len(layers),
        "activation_MiB": round(mib, 1),
        "in_process_s": round(local, 3),
        "container_shared_memory_s": round(shared, 3),
        "container_chunked_s": round(chunked, 3),
        "ratio_shared_memory": round(shared / local, 3),
        "ratio_chunked": round(chunked / local, 3),
        "shared_memory_MiB": round(shared_bytes / 2**20, 1),
        # The values: the two container paths must agree exactly; in process, torch may round differently.
        "container_paths_agree": sums["shared_memory"] == sums["chunked"],
        "max_relative_difference_to_in_process": max(
            abs(a - b) / max(abs(b), 1e-30) for a, b in zip(sums["shared_memory"], sums["in_process"])
        ),
        "rounds_s": {path: [round(w, 3) for w in ws] for path, ws in walls.items()},
        # CPU seconds of each round: this process (in process: the model; else the client), and the container's.
        "rounds_cpu_s": {path: [round(c, 2) for c in cs] for path, cs in cpu.items()},
        "rounds_container_cpu_s": {path: [round(c, 2) for c in cs] for path, cs in container_cpu.items()},
        "container_startup_s": round(startup, 2),
        "container_MiB_per_s": round(mib / shared, 1),
        "cpus": args.cpus,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
