"""Queue load (issue 12): (model, benchmark) jobs over Celery workers on two Docker engines, against one worker.

    python perf/queue_load.py [--models 20] [--benchmark B ...] [--save perf/results/queue_load.json]

Everything is real and started here: Redis (appendonly), our image registry (Debian's docker-registry on a free
loopback port), a second dockerd (tests/orchestrator/engines.py) standing in for another host, and `cortexbox
worker` processes. The models are builds of the pixels template that differ only by a label (distinct image ids,
so distinct jobs and activation caches; the same layers, so a push or a pull after the first moves only a config),
pushed to the registry and registered by reference, as `models add` does (the description read from one container:
the code is the same). Jobs are unique per (image digest, benchmark version): --models x --benchmark jobs.

Phase "two": worker a on this machine's engine, worker b on the second dockerd (which pulls each build by digest;
the shared layers once, before the phase). Phase "one": worker a alone. Each phase has its own registry, Redis and
activation cache. Checked after each: one succeeded score per job, no duplicate, no run left running.

Times come from the registry: a job's ``created_at`` (enqueued), ``started_at`` (claimed by a worker),
``finished_at``, and its run's events (``starting the model``: the container is started; the next event: it
answered). Reported per job, p50/p99:

* wait: enqueued -> claimed (mostly the backlog: all jobs are enqueued at once);
* dispatch: claimed - max(enqueued, the same worker's previous job finished): what the broker and the claim add
  between a free worker and its next job;
* prep: claimed -> container start (benchmark resolution, ceiling, cache lookup, the pull check);
* queue overhead to container start: dispatch + prep, for jobs that started a container (the others were served
  by the activation cache of an earlier job of the same build).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BENCHMARKS = ["Kriegeskorte2008.hIT-rdm", "Kriegeskorte2008.mIT-rdm", "Kriegeskorte2008.judgements-rdm"]
DATA = REPO.parent / "shared" / "data"
HOST = socket.gethostname()


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Redis:
    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="cbx-ql-redis-"))
        self.url = f"redis+socket://{self.folder / 'redis.sock'}"
        self.process = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", "0", "--unixsocket", str(self.folder / "redis.sock"),
             "--dir", str(self.folder), "--appendonly", "yes", "--save", "", "--daemonize", "no"],
            stdout=open(self.folder / "redis.log", "ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while not (self.folder / "redis.sock").exists():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise SystemExit(f"redis-server did not start: {(self.folder / 'redis.log').read_text()[-500:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        shutil.rmtree(self.folder, ignore_errors=True)


def build_variants(client, base: str, n: int) -> list[str]:
    """n images FROM ``base`` that differ by one label: distinct ids, no new layer."""
    tags = []
    for i in range(n):
        tag = f"cortexbox-perf/pixels-load:v{i:02d}-{os.getpid()}"
        dockerfile = f"FROM {base}\nLABEL cortexbox.perf.variant=\"{i}-{os.getpid()}\"\n"
        client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True, network_mode="none")
        tags.append(tag)
    return tags


def spawn_worker(env: dict, name: str, engine: str, folder: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cortexbox.orchestrator.cli", "worker", "--name", name, "--engine", engine],
                            env=env, stdout=open(folder / f"worker-{name}.log", "ab"), stderr=subprocess.STDOUT, cwd=REPO)


def stop_workers(workers: dict[str, subprocess.Popen]) -> None:
    for p in workers.values():
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in workers.values():
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


def pct(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    a = np.asarray(values, dtype=float)
    return {"n": len(values), "p50": round(float(np.percentile(a, 50)), 3), "p99": round(float(np.percentile(a, 99)), 3),
            "max": round(float(a.max()), 3)}


def _ts(value: datetime) -> float:
    from datetime import timezone

    return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()


def phase(label: str, engines: dict[str, str], models: list, benchmarks: list[str], registry_address: str,
          clients: dict, timeout_s: float) -> dict:
    """One run of every (model, benchmark) job over the workers of ``engines`` (name -> engine URL)."""
    from sqlmodel import select

    from cortexbox.orchestrator.scoring import versions, workers as workers_module
    from cortexbox.registry import Registry, Run, Score, ScoreJob

    folder = Path(tempfile.mkdtemp(prefix=f"cbx-ql-{label}-"))
    redis = Redis()
    env = {**os.environ, "CORTEXBOX_HOME": str(folder / "home"), "CORTEXBOX_BROKER_URL": redis.url,
           "CORTEXBOX_DATA_DIR": str(DATA), "CORTEXBOX_IMAGE_REGISTRY": registry_address}
    env.pop("CORTEXBOX_DATABASE_URL", None)
    env.pop("DOCKER_HOST", None)
    (folder / "home").mkdir()
    registry = Registry(f"sqlite:///{folder / 'home' / 'registry.db'}")
    app = workers_module.celery_app(redis.url)
    procs: dict[str, subprocess.Popen] = {}
    try:
        # Benchmarks first (no model yet: registering one queues nothing), then the builds.
        for name in benchmarks:
            versions.register_benchmark(versions.resolve_benchmark(name, registry), registry=registry)
        for image_id, reference, info in models:
            registry.upsert_model(image_id, info["model_id"], info["model_version"], reference, info)
        for name, engine in engines.items():
            procs[name] = spawn_worker(env, name, engine, folder)
        deadline = time.monotonic() + 120
        while True:  # every worker answers the broker before the clock starts
            alive = app.control.inspect(timeout=1.0).ping() or {}
            if len(alive) == len(engines):
                break
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs.values()):
                raise SystemExit(f"workers did not come up: {sorted(alive)}; logs in {folder}")
        load_before = loadavg()
        log(f"phase {label}: {len(engines)} worker(s) alive; enqueueing {len(models) * len(benchmarks)} jobs (load {load_before})")
        t0 = time.time()
        for name in benchmarks:  # benchmark-major: the builds' first jobs spread over the workers
            for _, reference, _ in models:
                workers_module.enqueue(registry, reference, name, app=app)
        t_enqueued = time.time()
        total = len(models) * len(benchmarks)
        last = -1
        while True:
            with registry.session() as s:
                rows = list(s.exec(select(ScoreJob)))
            done = sum(r.status not in ("queued", "running") for r in rows)
            if done != last:
                log(f"phase {label}: {done}/{total} ended")
                last = done
            if done == total:
                break
            if time.time() - t0 > timeout_s:
                raise SystemExit(f"phase {label}: {total - done} jobs not ended after {timeout_s:.0f} s; logs in {folder}")
            time.sleep(1)
        t_end = max(_ts(r.finished_at) for r in rows)
        load_after = loadavg()
        with registry.session() as s:
            scores = list(s.exec(select(Score)))
            runs = list(s.exec(select(Run)))
        statuses = {}
        for r in rows:
            statuses[r.status] = statuses.get(r.status, 0) + 1
        per_job = [sum(1 for sc in scores if sc.job_id == r.id) for r in rows]
        check = {
            "jobs": total, "statuses": statuses, "scores": len(scores),
            "duplicates": sum(n - 1 for n in per_job if n > 1) + (len(scores) - len({(sc.model_id, sc.benchmark_id) for sc in scores})),
            "jobs_without_score": sum(1 for n in per_job if n == 0),
            "runs_left_running": sum(1 for r in runs if r.status == "running"),
            "attempts_over_1": sum(1 for r in rows if r.attempts > 1),
        }
        # per-job times
        by_worker: dict[str, list] = {}
        for r in rows:
            by_worker.setdefault(r.worker or "-", []).append(r)
        wait, dispatch, prep, up, overhead, run_s = [], [], [], [], [], []
        containers = 0
        for worker_rows in by_worker.values():
            worker_rows.sort(key=lambda r: r.started_at)
            previous_end = None
            for r in worker_rows:
                enq, claimed, finished = _ts(r.created_at), _ts(r.started_at), _ts(r.finished_at)
                wait.append(claimed - enq)
                free = max(enq, previous_end) if previous_end is not None else enq
                dispatch.append(claimed - free)
                run_s.append(finished - claimed)
                previous_end = finished
                events = registry.run_events(r.run_id, -1, 200) if r.run_id else []
                for i, e in enumerate(events):
                    if e.kind == "stage" and (e.data or {}).get("text") == "starting the model":
                        containers += 1
                        prep.append(_ts(e.created_at) - claimed)
                        overhead.append(dispatch[-1] + prep[-1])
                        if i + 1 < len(events):
                            up.append(_ts(events[i + 1].created_at) - _ts(e.created_at))
                        break
        result = {
            "phase": label, "workers": {n: e for n, e in engines.items()}, "jobs": total,
            "wall_s": round(t_end - t0, 1), "enqueue_s": round(t_enqueued - t0, 1),
            "jobs_per_worker": {w: len(v) for w, v in by_worker.items()},
            "containers_started": containers,
            "wait_s": pct(wait), "dispatch_s": pct(dispatch), "prep_s": pct(prep),
            "overhead_to_container_s": pct(overhead), "container_up_s": pct(up), "job_s": pct(run_s),
            "load_before": load_before, "load_after": load_after, "check": check,
        }
        log(f"phase {label}: {json.dumps(result)}")
        return result
    finally:
        stop_workers(procs)
        owners = {f"{HOST}:{p.pid}" for p in procs.values()}
        for client in clients.values():
            for c in client.containers.list(all=True, filters={"label": "cortexbox.owner"}):
                if c.labels.get("cortexbox.owner") in owners:
                    log(f"removing a container left by a worker: {c.name}")
                    c.remove(force=True)
        redis.stop()
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=int, default=20, help="builds of the pixels template (jobs = models x benchmarks)")
    p.add_argument("--benchmark", action="append", help=f"repeatable (default: {', '.join(BENCHMARKS)})")
    p.add_argument("--timeout-s", type=float, default=1800)
    p.add_argument("--skip-one", action="store_true", help="only the two-worker phase")
    p.add_argument("--save", type=Path)
    args = p.parse_args()
    benchmarks = args.benchmark or BENCHMARKS
    os.environ.setdefault("CORTEXBOX_DATA_DIR", str(DATA))

    import docker

    from cortexbox.orchestrator import image_registry, images
    from cortexbox.orchestrator.runtime import open_session
    from tests.orchestrator.engines import DockerEngine

    client = docker.from_env()
    engine_a = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    base = images.build_model_image(client, REPO / "model_templates" / "pixels").tag
    store = Path(tempfile.mkdtemp(prefix="cbx-ql-registry-"))
    server = image_registry.RegistryServer(f"127.0.0.1:{free_port()}", store)
    second = DockerEngine(prefix="cbx-ql-engine-")
    tags: list[str] = []
    pushed: list = []
    results = {"host_cpus": os.cpu_count(), "load_start": loadavg(), "benchmarks": benchmarks, "phases": []}
    try:
        server.start()
        second.start()
        t0 = time.perf_counter()
        tags = build_variants(client, base, args.models)
        pushed = [image_registry.push(client, tag, registry=server.address, log=lambda m: None) for tag in tags]
        with open_session(image=pushed[0].reference) as session:  # the same code in every build
            info = session.description.to_dict()
        models = [(im.image_id, im.reference, info) for im in pushed]
        log(f"{len(models)} builds pushed in {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        image_registry.ensure_image(second.client, pushed[0].reference)  # the shared layers, once
        log(f"second engine pulled the layers in {time.perf_counter() - t0:.1f} s")
        clients = {"a": client, "b": second.client}
        results["phases"].append(phase("two", {"a": engine_a, "b": second.host}, models, benchmarks, server.address, clients, args.timeout_s))
        if not args.skip_one:
            results["phases"].append(phase("one", {"a": engine_a}, models, benchmarks, server.address, clients, args.timeout_s))
    finally:
        second.stop()
        server.stop()
        shutil.rmtree(store, ignore_errors=True)
        for tag in tags + [f"{server.address}/{image_registry.split_reference(im.reference)[1]}:id-{im.image_id.split(':')[1][:40]}"
                           for im in pushed]:
            try:
                client.images.remove(tag)
            except docker.errors.ImageNotFound:
                pass
    results["load_end"] = loadavg()
    print(json.dumps(results, indent=2))
    if args.save:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        args.save.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
