"""The `cortexbox` command line.

Progress goes to stderr and results to stdout, so `--json` output can be piped. A user's
mistake (unknown benchmark, missing image, Docker not running) ends with one line and a
hint, exit code 2; a model's failure with its class and log tail, exit code 1.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

# The errors are imported where they are raised or reported: cortexbox.orchestrator.errors imports the benchmarks
# package (seconds), which `cortexbox --help` and a mistyped command should not wait for.
from cortexbox.orchestrator.terminal import safe_text, untrusted

def _no_type_labels_on_flags() -> None:
    """typer (0.2x) labels every option in the help with its Python type, flags too (`--json <bool>`, `--help
    <bool>`), though a flag takes no value: show no label for a flag."""
    from typer.core import TyperOption

    labelled = getattr(TyperOption, "display_type_rich", None)
    if labelled is None or getattr(labelled, "_cortexbox", False):  # another typer, or done already
        return

    def display_type_rich(self, ctx):
        return None if self.is_flag and self.metavar is None else labelled(self, ctx)

    display_type_rich._cortexbox = True
    TyperOption.display_type_rich = display_type_rich


_no_type_labels_on_flags()

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Score containerised models against brain data.")
image_app = typer.Typer(no_args_is_help=True, help="Build the offline base image and model images.")
benchmarks_app = typer.Typer(no_args_is_help=True, help="Benchmarks known to this installation.")
app.add_typer(image_app, name="image")
app.add_typer(benchmarks_app, name="benchmarks")
models_app = typer.Typer(no_args_is_help=True, help="Models known to the registry.")
app.add_typer(models_app, name="models")
cache_app = typer.Typer(help="The activation cache: usage by model and output, cap, free disk, pruning.")
app.add_typer(cache_app, name="cache")
import_app = typer.Typer(no_args_is_help=True, help="Bring models from other platforms in as model projects and images.")
app.add_typer(import_app, name="import")
# Community competitions (orchestrator/community/cli.py): accounts, teams, competitions, and submitting an image.
from cortexbox.orchestrator.community.cli import competitions_app, submit, teams_app, users_app  # noqa: E402

app.add_typer(users_app, name="users")
app.add_typer(teams_app, name="teams")
app.add_typer(competitions_app, name="competitions")
app.command("submit")(submit)
registry_app = typer.Typer(no_args_is_help=True, help="Our image registry: model images travel between Docker engines by digest.")
app.add_typer(registry_app, name="registry")

#: Characters of a model's log tail shown (the end of it).
LOG_TAIL_CHARS = 8000

# Tables wider than a pipe's default 80 columns stay readable in logs.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)


def _emit_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _parse_bytes(text: str, option: str = "--memory") -> int:
    from cortexbox.orchestrator.budgets import parse_size
    from cortexbox.orchestrator.errors import UserError

    try:
        n = parse_size(text)
    except ValueError:
        n = 0
    if n <= 0:
        raise UserError(f"{option} {text!r} is not a size", "write a positive number of bytes with an optional unit, e.g. 8g, 512m")
    return n


class _ProgressEvents:
    """Turns job events into a rich progress display on stderr."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.tasks: dict[str, int] = {}
        self.stage = progress.add_task("starting", total=None)

    def __call__(self, event: str, data: dict) -> None:
        # stage texts and labels carry a model's layer and output names: escape-free, and never read as markup
        if event == "stage":
            self.progress.update(self.stage, description=safe_text(data["text"], oneline=True, limit=200))
        elif event == "progress":
            label = safe_text(data["label"], oneline=True, limit=80)
            if label not in self.tasks:
                self.tasks[label] = self.progress.add_task(label, total=data["total"])
            self.progress.update(self.tasks[label], completed=data["done"], total=data["total"])


def _progress(enabled: bool) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=not enabled,
        transient=False,
    )


@app.command()
def score(
    benchmark: str = typer.Option(..., "--benchmark", "-b", metavar="NAME", help="Benchmark identifier, e.g. Cowley2023.V4-pls"),
    model: Optional[str] = typer.Option(None, "--model", "-m", metavar="IMAGE", help="Docker image (tag or id) of the model"),
    endpoint: Optional[str] = typer.Option(None, "--endpoint", metavar="ADDRESS", help="Score a running server: unix:///path or host:port"),
    no_cache: bool = typer.Option(False, "--no-cache", help="Recompute activations and the layer choice"),
    memory: Optional[str] = typer.Option(None, metavar="SIZE", help="Memory limit of the model container (default 8g)"),
    cpus: Optional[float] = typer.Option(None, metavar="N", min=0.01, help="CPU limit of the model container (default: every core but one)"),
    runtime: Optional[str] = typer.Option(None, "--runtime", metavar="NAME", help="Container runtime: runc (default) or runsc (gVisor)"),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON"),
) -> None:
    """Score a model image (or a running model server) on a benchmark and store the score."""
    from cortexbox.orchestrator.errors import UserError
    from cortexbox.orchestrator.runtime import SandboxLimits
    from cortexbox.orchestrator.scoring import ScoreRequest, score_model

    request = ScoreRequest(
        benchmark=benchmark,
        image=model,
        endpoint=endpoint,
        use_cache=not no_cache,
        limits=SandboxLimits.configured(memory_bytes=_parse_bytes(memory) if memory else None, cpus=cpus, runtime=runtime),
    )
    if (model is None) == (endpoint is None):
        raise UserError("give exactly one of --model IMAGE and --endpoint ADDRESS")
    with _progress(enabled=err.is_terminal or not as_json) as progress:
        try:
            outcome = score_model(request, events=_ProgressEvents(progress))
        except UserError:
            progress.live.transient = True  # a mistake: its one line alone, no half-drawn progress above it
            raise
    if as_json:
        _emit_json(outcome.to_dict())
        return
    out.print(_describe(outcome), soft_wrap=True)


def _describe(outcome) -> Text:
    """One score as a line; the model's name and layer are its own claims, shown as untrusted text."""

    def num(x):
        return "n/a" if x is None else f"{x:.4f}"

    bootstrap = ((outcome.provenance or {}).get("metric") or {}).get("bootstrap") or {}
    iv = (bootstrap.get("ceiled") if outcome.ceiled is not None else None) or bootstrap.get("raw") or {}
    interval = (f" 95% [{num(iv['low'])}, {num(iv['high'])}] (bootstrap over {' and '.join(bootstrap.get('resampled', []))},"
                f" seed {bootstrap.get('seed')})" if iv.get("low") is not None and iv.get("high") is not None else "")
    return Text.assemble(
        untrusted(outcome.model, "bold", oneline=True, limit=200), f" on {outcome.benchmark} (v{outcome.benchmark_version}): ceiled ",
        (num(outcome.ceiled), "bold"), f"{interval}, raw {num(outcome.raw)} ± {num(outcome.error)}, ceiling {num(outcome.ceiling)}, layer ",
        untrusted(outcome.layer, oneline=True, limit=200), " (activations from cache)" if outcome.from_cache else "",
    )


@app.command()
def leaderboard(
    benchmark: Optional[str] = typer.Option(None, "--benchmark", "-b", metavar="NAME", help="One benchmark's ranked scores instead of the aggregate"),
    domain: Optional[str] = typer.Option(None, "--domain", metavar="DOMAIN", help="vision or language: that domain's board (the web's ?domain=)"),
    view: str = typer.Option("brainscore", "--view", metavar="VIEW", help="brainscore (missing counts as 0) or scored (averages what was scored)"),
    leaves: bool = typer.Option(False, "--leaves", help="A column per benchmark too"),
    as_json: bool = typer.Option(False, "--json", help="Print the board as JSON (what /api/leaderboard returns)"),
) -> None:
    """The ranked board the web shows: rank, model, aggregate over the benchmark tree, coverage, per-branch scores."""
    from cortexbox.orchestrator.board_text import benchmark_table, board_table
    from cortexbox.orchestrator.errors import UserError
    from cortexbox.orchestrator.web import data
    from cortexbox.registry import Registry

    snap = data.load(Registry())
    if benchmark is not None:
        try:
            page = data.benchmark_page(snap, benchmark)
        except KeyError:
            raise UserError(f"no benchmark {benchmark!r}", "`cortexbox benchmarks list` lists the known ones") from None
        _emit_json(page) if as_json else out.print(benchmark_table(page))
        return
    if view not in data.VIEWS:
        raise UserError(f"--view {view!r} is not a view", f"use one of {', '.join(data.VIEWS)}")
    if domain is not None and domain not in data.domains(snap):
        raise UserError(f"--domain {domain!r} is not a domain of the benchmark tree", f"use one of {', '.join(data.domains(snap))}")
    board = data.leaderboard(snap, view, domain)
    if as_json:
        _emit_json(board)
        return
    out.print(board_table(board, leaves))
    if not board["rows"]:
        err.print("no models scored yet: `cortexbox demo`, or `cortexbox score --model IMAGE --benchmark NAME`", highlight=False, markup=False)


@app.command()
def runs(
    as_json: bool = typer.Option(False, "--json", help="Print rows as JSON"),
    limit: int = typer.Option(20, "--limit", metavar="N", min=1, help="How many runs, newest first"),
) -> None:
    """Recent runs, with the failure class and error of failed ones (`cortexbox watch RUN` shows a run's log tail)."""
    from cortexbox.registry import Registry

    rows = Registry().runs(limit)
    if as_json:
        _emit_json([r.model_dump() for r in rows])
        return
    table = Table(title="recent runs")
    for column in ("id", "model", "benchmark", "status", "failure", "started", "error"):
        table.add_column(column)
    for r in rows:  # every text cell may come from a model (its error) or a registry row: untrusted
        table.add_row(
            str(r.id), untrusted(r.model_ref, oneline=True, limit=80), untrusted(r.benchmark_identifier, oneline=True, limit=80),
            untrusted(r.status, oneline=True, limit=20), untrusted(r.failure_class, oneline=True, limit=40),
            r.started_at.isoformat(timespec="seconds"), untrusted(r.error, oneline=True, limit=80),
        )
    out.print(table)


@app.command()
def watch(
    run_id: Optional[int] = typer.Argument(None, metavar="[RUN]", help="Run id (default: the newest run still running)"),
    as_json: bool = typer.Option(False, "--json", help="Print each event as one JSON line"),
) -> None:
    """Follow a run as it is scored, by any process (`cortexbox score`, a worker, the web app): the same progress
    display as `cortexbox score`, read from the registry's run events. Exit code 1 if the run failed."""
    import asyncio

    from cortexbox.orchestrator.errors import UserError
    from cortexbox.orchestrator.web.live import follow_run
    from cortexbox.registry import Registry

    registry = Registry()
    if run_id is None:
        running = registry.runs(1, status="running")
        if not running:
            raise UserError("no run is running", "start one with `cortexbox score ...`, or name a run from `cortexbox runs`")
        run_id = running[0].id
    if registry.run(run_id) is None:
        raise UserError(f"no run {run_id}", "`cortexbox runs` lists the recent runs")

    async def follow(display) -> dict:
        last: dict = {}
        async for seq, kind, data in follow_run(registry, run_id):
            display(kind, data)
            if as_json:
                _emit_json_line({"seq": seq, "event": kind, "data": data})
            elif kind == "score":  # the events' texts come from the model: untrusted
                err.print(Text.assemble(
                    untrusted(data.get("model"), oneline=True, limit=200), " on ", untrusted(data.get("benchmark"), oneline=True, limit=200),
                    f": ceiled {safe_text(data.get('ceiled'), limit=40)}, raw {safe_text(data.get('raw'), limit=40)}, layer ",
                    untrusted(data.get("layer"), oneline=True, limit=200)), soft_wrap=True)
            elif kind == "failed":
                err.print(Text.assemble(f"failed ({safe_text(data.get('failure_class') or 'error', oneline=True, limit=40)}): ",
                                        untrusted(data.get("error"), limit=2000)), soft_wrap=True)
                if data.get("log_tail"):
                    err.print(untrusted(data["log_tail"].rstrip(), "dim", limit=LOG_TAIL_CHARS, keep="end"), soft_wrap=True)
            last = {"event": kind, **data}
        return last

    with _progress(enabled=err.is_terminal and not as_json) as progress:
        end = asyncio.run(follow(_ProgressEvents(progress)))
    if not as_json:
        out.print(untrusted(f"run {run_id}: {end.get('status')}" + (f" ({end['error']})" if end.get("error") else ""), oneline=True),
                  soft_wrap=True)
    if end.get("status") != "succeeded":
        raise typer.Exit(1)


def _emit_json_line(data) -> None:
    sys.stdout.write(json.dumps(data, default=str) + "\n")
    sys.stdout.flush()


@benchmarks_app.command("list")
def benchmarks_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """Every benchmark with its version, region and ceiling."""
    from cortexbox.benchmarks import list_benchmarks
    from cortexbox.orchestrator.ingest import ingested_identifiers
    from cortexbox.orchestrator.scoring import resolve_benchmark
    from cortexbox.registry import Registry

    registry = Registry()
    rows = []
    for identifier in list_benchmarks() + ingested_identifiers(registry):
        b = resolve_benchmark(identifier, registry)
        c = b.ceiling
        # The registered version holding these data (`benchmarks sync`, `ingest`, or score time), else the code's.
        registered = [v for v in registry.benchmark_versions(identifier) if v.data_hash == b.data_hash]
        rows.append(
            {
                "identifier": identifier,
                "version": registered[-1].version if registered else b.version,
                "registered": bool(registered),
                "region": getattr(b, "region", ""),
                "stimuli": len(b.stimulus_set),
                "kind": getattr(b, "kind", "neural"),
                "ceiling": None if c is None else c.raw,
                "ceiling_error": None if c is None else c.error,
                "data_hash": b.data_hash,
            }
        )
    if as_json:
        _emit_json(rows)
        return
    table = Table(title="benchmarks")
    for column in ("identifier", "version", "region / kind", "stimuli", "ceiling", "data hash"):
        table.add_column(column)
    for r in rows:
        ceiling = "none" if r["ceiling"] is None else f"{r['ceiling']:.4f} ± {r['ceiling_error'] or 0:.4f}"
        table.add_row(r["identifier"], str(r["version"]), r["region"] or r["kind"], str(r["stimuli"]), ceiling, r["data_hash"][:12])
    out.print(table)


@benchmarks_app.command("sync")
def benchmarks_sync(
    identifiers: Optional[list[str]] = typer.Argument(None, help="built-in benchmarks to register (default: all)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="hash the data, compute the ceilings, show what would be created; change nothing"),
    no_score: bool = typer.Option(False, "--no-score", help="queue the scoring jobs but do not run them now"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Register the built-in benchmarks through the ingestion path: a version per data hash, its ceiling, and a
    queued scoring job for every registered model; all new versions in one transaction."""
    from cortexbox.orchestrator.scoring import sync_builtins

    with err.status("hashing data and computing ceilings"):
        plans = sync_builtins(identifiers or None, dry_run=dry_run)
    results = []
    if any(p.status == "registered" and p.models_to_score for p in plans) and not no_score:
        with _progress(enabled=err.is_terminal or not as_json) as progress:
            results = _score_queued(_ProgressEvents(progress))
    if as_json:
        _emit_json({"benchmarks": [p.to_dict() for p in plans], "scored": results})
        return
    verb = {"planned": "would register", "registered": "registered", "unchanged": "unchanged"}
    for p in plans:
        ceiling = "none" if p.ceiling is None else f"{p.ceiling:.4f} ± {p.ceiling_error or 0:.4f}"
        models = "" if p.status == "unchanged" else f", models to score: {', '.join(p.models_to_score) or 'none'}"
        out.print(f"{verb[p.status]} {p.identifier} v{p.version}: ceiling {ceiling}, data hash {p.data_hash[:12]}{models}")
    for r in results:
        out.print(untrusted(f"  {r['model']} on {r['benchmark']} v{r['version']}: {_job_result(r)}", oneline=True, limit=1000))


@benchmarks_app.command("ingest")
def benchmarks_ingest(
    assembly: Path = typer.Argument(..., help="netCDF assembly (Brain-Score format): presentation x neuroid"),
    stimuli: Path = typer.Option(..., "--stimuli", help="images: a folder of <stimulus_id>.<ext> files, or a CSV (stimulus_id, filename); "
                                 "text: a UTF-8 CSV (stimulus_id, sentence[, context_id or story])"),
    identifier: str = typer.Option(..., "--identifier", help="e.g. Smith2026.V4-pls"),
    region: str = typer.Option(..., "--region", help="brain region, e.g. V4, IT or language"),
    modality: str = typer.Option("image", "--modality", help="image or text: what the stimuli are, and which models are scored"),
    visual_degrees: float = typer.Option(8.0, "--visual-degrees", help="degrees of visual angle the images spanned"),
    stimuli_zip: Optional[Path] = typer.Option(None, "--stimuli-zip", help="zip holding the CSV's files"),
    description: str = typer.Option("", help="what the recording is"),
    citation: str = typer.Option("", help="how to cite it"),
    dry_run: bool = typer.Option(False, "--dry-run", help="validate and show what would be created; change nothing"),
    no_score: bool = typer.Option(False, "--no-score", help="queue the scoring jobs but do not run them now"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Turn a recording into a versioned benchmark and score every registered model on it."""
    from cortexbox.orchestrator.ingest import ingest_recording

    plan = ingest_recording(assembly, stimuli, identifier=identifier, region=region, visual_degrees=visual_degrees,
                            modality=modality, stimuli_zip=stimuli_zip, description=description, citation=citation, dry_run=dry_run)
    results = []
    if plan.status == "registered" and not no_score:
        with _progress(enabled=err.is_terminal or not as_json) as progress:
            results = _score_queued(_ProgressEvents(progress))
    if as_json:
        _emit_json({**plan.to_dict(), "scored": results})
        return
    ceiling = "none (no repetitions)" if plan.ceiling is None else f"{plan.ceiling:.4f} ± {plan.ceiling_error:.4f}"
    verb = {"planned": "would register", "registered": "registered", "unchanged": "unchanged (same data):"}[plan.status]
    out.print(f"{verb} {plan.identifier} v{plan.version}: {plan.facts['stimuli']} stimuli, {plan.facts['neuroids']} neuroids, "
              f"metric {plan.metric}, ceiling {ceiling}, data hash {plan.data_hash[:12]}")
    if plan.status != "unchanged":
        out.print(f"models to score: {', '.join(plan.models_to_score) or 'none registered'}")
    for r in results:
        out.print(untrusted(f"  {r['model']}: {_job_result(r)}", oneline=True, limit=1000))


@app.command()
def worker(
    engine: Optional[str] = typer.Option(None, "--engine", metavar="URL", help="The Docker engine this worker owns, e.g. unix:///run/docker-2.sock (default: $DOCKER_HOST)"),
    name: str = typer.Option("worker", "--name", metavar="NAME", help="The worker's name in the registry's leases and in `cortexbox queue`"),
    lease_s: float = typer.Option(60.0, "--lease-s", metavar="SECONDS", min=1.0, help="Heartbeat silence after which a job's worker counts as lost"),
    community_url: Optional[str] = typer.Option(None, "--community-url", metavar="URL", help="The community database whose submissions this worker scores and recovers (default: $CORTEXBOX_COMMUNITY_URL, else community.db in $CORTEXBOX_HOME)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """With $CORTEXBOX_BROKER_URL: a Celery worker bound to one Docker engine, scoring jobs (and competition
    submissions) from the broker one at a time until stopped. Without: run every queued scoring job here, once
    (e.g. those an ingestion queued with --no-score)."""
    from cortexbox.benchmarks.settings import settings
    from cortexbox.orchestrator.scoring import run_queued_jobs

    broker = settings().broker_url
    if broker:
        from cortexbox.orchestrator.scoring.workers import run_worker

        err.print(f"cortexbox worker {name} on {engine or 'the Docker engine of $DOCKER_HOST (or the default)'}",
                  markup=False, highlight=False)
        run_worker(broker, name=name, engine=engine, lease_s=lease_s, community_url=community_url)
        return
    if engine:
        from cortexbox.orchestrator.scoring.workers import bind_engine

        bind_engine(engine)
    results = run_queued_jobs()
    if as_json:
        _emit_json(results)
    else:
        for r in results:
            out.print(untrusted(f"{r['model']} on {r['benchmark']} v{r['version']}: {_job_result(r)}", oneline=True, limit=1000))


@app.command()
def enqueue(
    model: str = typer.Option(..., "--model", "-m", metavar="MODEL", help="A registered model: digest, image reference or name"),
    benchmark: list[str] = typer.Option(..., "--benchmark", "-b", metavar="NAME", help="Benchmark identifier (repeatable)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Queue scoring jobs, one per (model build, benchmark version), for the broker's workers (or `cortexbox worker`
    without one). Asking again for a job queued, running or scored adds nothing."""
    from cortexbox.orchestrator.scoring.workers import broker_app, enqueue as enqueue_job
    from cortexbox.registry import Registry

    registry, app_ = Registry(), broker_app()
    jobs = [enqueue_job(registry, model, name, app=app_) for name in benchmark]
    rows = [{"job_id": j.id, "status": j.status, "task_id": j.task_id} for j in jobs]
    if as_json:
        _emit_json(rows)
    else:
        for name, r in zip(benchmark, rows):
            out.print(f"job {r['job_id']} ({name}): {r['status']}", markup=False, highlight=False)


@app.command("queue")
def queue_command(as_json: bool = typer.Option(False, "--json")) -> None:
    """Queued, running and failed jobs per worker (with each lease's heartbeat age); with a broker, its queue length
    and the workers that answer."""
    from cortexbox.orchestrator.scoring.workers import broker_app, queue_report
    from cortexbox.registry import Registry

    report = queue_report(Registry(), broker_app())
    if as_json:
        _emit_json(report)
        return
    counts = ", ".join(f"{n} {k}" for k, n in sorted(report["counts"].items())) or "no jobs"
    out.print(f"jobs: {counts}", markup=False, highlight=False)
    if report["broker"] is not None:
        b = report["broker"]
        out.print(f"broker: {b['queue_length']} message(s) waiting; workers alive: {', '.join(b['workers_alive']) or 'none'}"
                  + (f" ({b['error']})" if b.get("error") else ""), markup=False, highlight=False)
    table = Table(title="jobs by worker")
    for column in ("worker", "job", "model", "benchmark", "status", "attempts", "heartbeat", "error"):
        table.add_column(column)
    for worker_name, jobs in sorted(report["workers"].items()):
        for j in jobs:
            age = "" if j["heartbeat_age_s"] is None else f"{j['heartbeat_age_s']:.0f} s ago"
            table.add_row(untrusted(worker_name, oneline=True, limit=80), str(j["job_id"]), untrusted(j["model"], oneline=True, limit=60),
                          f"{j['benchmark']} v{j['version']}", j["status"], str(j["attempts"]), age,
                          untrusted(j["error"], oneline=True, limit=80))
    out.print(table)


@app.command()
def cancel(
    run_id: Optional[int] = typer.Argument(None, metavar="[RUN]", help="The run to cancel (`cortexbox runs`)"),
    job: Optional[int] = typer.Option(None, "--job", metavar="JOB", help="A queued or running job instead (`cortexbox queue`)"),
) -> None:
    """Cancel a run or a job: a queued job never starts; a running one's container is killed within seconds by its
    worker; a run of `cortexbox score` on this host is stopped like Ctrl-C."""
    from cortexbox.orchestrator.errors import UserError
    from cortexbox.orchestrator.scoring.workers import broker_app, cancel_run, request_cancel
    from cortexbox.registry import Registry

    if (run_id is None) == (job is None):
        raise UserError("give exactly one of RUN and --job JOB", "`cortexbox cancel --help`")
    registry = Registry()
    status = request_cancel(registry, job, broker_app()) if job is not None else cancel_run(registry, run_id, broker_app())
    out.print(f"{'job ' + str(job) if job is not None else 'run ' + str(run_id)}: {status}", markup=False, highlight=False)


@models_app.command("add")
def models_add(image: str = typer.Argument(..., help="Docker image tag or id"), as_json: bool = typer.Option(False, "--json")) -> None:
    """Register a model image (reads its info from a sandboxed container). With $CORTEXBOX_IMAGE_REGISTRY set, the
    image is pushed there first and registered by its reference by registry digest, which other engines pull."""
    from cortexbox.orchestrator import image_registry
    from cortexbox.orchestrator.runtime import docker_client, open_session
    from cortexbox.registry import Registry

    pushed = None
    if registry := image_registry.configured_registry():
        with err.status(untrusted(f"pushing {image} to {registry}", oneline=True, limit=200)):
            pushed = image_registry.push(docker_client(), image, registry=registry)
        image = pushed.reference
    with open_session(image=image) as session:
        info = session.description.to_dict()
        row = Registry().upsert_model(session.image_id, info["model_id"], info["model_version"], image, info)
    pinned = {"reference": pushed.reference, "registry_digest": pushed.digest} if pushed else {}
    if as_json:
        _emit_json({"model": row.name, "digest": row.digest, **pinned})
    else:
        out.print(untrusted(" ".join([row.name, row.digest, *pinned.values()][:3]), oneline=True, limit=600), soft_wrap=True)


@models_app.command("check")
def models_check(image: str = typer.Argument(..., help="Docker image tag or id"), as_json: bool = typer.Option(False, "--json")) -> None:
    """Check a model image's metadata against what it does on public stimuli (never recordings): declared layers
    and behaviours answer at their shapes, regions name layers, visual degrees in range, behaviours in their label
    spaces. Scoring runs the same check once per image; a model that lies fails as nonconformant (exit 1)."""
    from cortexbox.orchestrator import conformance
    from cortexbox.orchestrator.errors import ModelFailure
    from cortexbox.orchestrator.runtime import open_session

    with open_session(image=image) as session:
        try:
            record = conformance.check(session)
        except ModelFailure as e:
            raise session.diagnose(e) from None
        model_id = session.description.raw.model_id
    if as_json:
        _emit_json({"model": model_id, "digest": session.image_id, **record})
    else:
        out.print(untrusted(f"{model_id}: conforms ({record['outputs']} outputs on {record['stimuli']} public stimuli, "
                            f"{record['seconds']:.1f} s)", oneline=True, limit=600), soft_wrap=True)


@registry_app.command("serve")
def registry_serve(
    address: str = typer.Option("", "--address", help="HOST:PORT on loopback (default $CORTEXBOX_IMAGE_REGISTRY, else 127.0.0.1:5000)"),
    data: Path = typer.Option(None, "--data", help="storage folder (default $CORTEXBOX_HOME/registry-data)"),
) -> None:
    """Run the image registry (Debian's docker-registry) in the foreground until Ctrl-C."""
    from cortexbox.orchestrator import image_registry

    address = address or image_registry.configured_registry() or image_registry.DEFAULT_ADDRESS
    image_registry.serve(address, data, log=lambda line: err.print(line, markup=False, highlight=False))


@registry_app.command("push")
def registry_push(image: str = typer.Argument(..., help="Docker image tag or id"), as_json: bool = typer.Option(False, "--json")) -> None:
    """Push an image to $CORTEXBOX_IMAGE_REGISTRY and print its reference by registry digest."""
    from cortexbox.orchestrator import image_registry
    from cortexbox.orchestrator.runtime import docker_client

    pushed = image_registry.push(docker_client(), image)
    if as_json:
        _emit_json({"reference": pushed.reference, "registry_digest": pushed.digest, "image_id": pushed.image_id})
    else:
        out.print(pushed.reference, markup=False, highlight=False, soft_wrap=True)


@registry_app.command("pull")
def registry_pull(reference: str = typer.Argument(..., help="REGISTRY/NAME@sha256:..."), as_json: bool = typer.Option(False, "--json")) -> None:
    """Pull an image by registry digest onto this Docker engine ($DOCKER_HOST) and check it."""
    from cortexbox.orchestrator import image_registry
    from cortexbox.orchestrator.runtime import docker_client

    pulled = image_registry.ensure_image(docker_client(), reference)
    if as_json:
        _emit_json({"reference": pulled.reference, "registry_digest": pulled.digest, "image_id": pulled.image_id})
    else:
        out.print(f"{pulled.reference} {pulled.image_id}", markup=False, highlight=False, soft_wrap=True)


@models_app.command("list")
def models_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """Registered models and their image digests."""
    from cortexbox.registry import Registry

    rows = [{"model": m.name, "version": m.version, "digest": m.digest, "image": m.image_ref} for m in Registry().models()]
    if as_json:
        _emit_json(rows)
        return
    for r in rows:  # name and version are the model's own claims
        out.print(untrusted(f"{r['model']} {r['version']} {r['digest']} {r['image']}", oneline=True, limit=600), soft_wrap=True)


def _status_line(status):
    """A build log sink for a rich status: a build's output is the Dockerfile's to write, so it is untrusted."""
    return lambda line: status.update(untrusted(line, oneline=True, limit=100))


@image_app.command("base")
def image_base(
    force: bool = typer.Option(False, "--force", help="Rebuild even if the image exists"),
    tag: str = typer.Option("cortexbox/base:bookworm", help="Tag of the base image"),
) -> None:
    """Build the offline base image (debootstrap + docker import; needs root)."""
    from cortexbox.orchestrator import images
    from cortexbox.orchestrator.runtime import docker_client

    with err.status("building the base image") as status:
        image_id = images.build_base_image(docker_client(), tag=tag, force=force, log=_status_line(status))
    out.print(f"{tag} {image_id}")


@image_app.command("build")
def image_build(
    project: Path = typer.Argument(..., exists=True, file_okay=False, help="A model project (Dockerfile + cortexbox.toml)"),
    tag: Optional[str] = typer.Option(None, help="Image tag (default: from cortexbox.toml)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Build a model image from a project folder and print its digest."""
    from cortexbox.orchestrator import images
    from cortexbox.orchestrator.runtime import docker_client

    images.load_project(project)  # the project's own mistakes first, whether or not Docker runs
    with err.status(f"building {project}") as status:
        built = images.build_model_image(docker_client(), project, tag=tag, log=_status_line(status))
    if as_json:
        _emit_json({"tag": built.tag, "digest": built.image_id})
    else:
        out.print(f"{built.tag} {built.image_id}")


@image_app.command("stack")
def image_stack(
    no_cache: bool = typer.Option(False, "--no-cache", help="Build every step afresh"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Build the images docker-compose.yml runs (PostgreSQL registry and web app), offline; then `docker-compose up -d`."""
    from cortexbox.orchestrator import deploy
    from cortexbox.orchestrator.runtime import docker_client

    with err.status("building the compose stack's images") as status:
        stack = deploy.build_stack(docker_client(), nocache=no_cache, log=_status_line(status))
    if as_json:
        _emit_json({"db": {"tag": stack.db.tag, "digest": stack.db.image_id}, "web": {"tag": stack.web.tag, "digest": stack.web.image_id}})
    else:
        out.print(f"{stack.db.tag} {stack.db.image_id}\n{stack.web.tag} {stack.web.image_id}")


@app.command()
def demo(
    benchmark: Optional[list[str]] = typer.Option(None, "--benchmark", "-b", metavar="NAME", help="Score these benchmarks (repeatable; default: the tree's vision brain benchmarks)"),
    template: Optional[list[str]] = typer.Option(None, "--template", "-t", metavar="NAME", help="Only these templates (repeatable; default: pixels, pytorch-vision, tflite-mobilenet)"),
    templates: Optional[Path] = typer.Option(
        None, "--templates", metavar="DIR", help="Folder holding the model templates (default: ./model_templates)"
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="Recompute activations and the layer choices"),
    full: bool = typer.Option(False, "--full", help="Every vision brain benchmark, V4 sessions included (5-10 more minutes)"),
) -> None:
    """The main job: build the base and the three vision template images, score each on the vision brain benchmarks
    of the benchmark tree (--full: all of them; default: all but the V4 sessions, to stay within 10 minutes on 2
    cores), and print the ranked board the web shows. A second run re-uses images and activations."""
    from cortexbox.orchestrator import demo as demo_job
    from cortexbox.orchestrator.board_text import board_table
    from cortexbox.orchestrator.web import data
    from cortexbox.registry import Registry

    def say(line: str) -> None:
        err.print(safe_text(line), markup=False, highlight=False, soft_wrap=True)  # a log line stays one line

    names = list(template or demo_job.TEMPLATES)
    folder = demo_job.templates_dir(templates, names)
    benchmarks = list(benchmark or demo_job.vision_brain_benchmarks(full=full))
    say(demo_job.intro(names, benchmarks))
    result = demo_job.run(folder, names, benchmarks, use_cache=not no_cache, say=say,
                          events=lambda model, bench: demo_job.ScoreLines(say))
    out.print(board_table(data.leaderboard(data.load(Registry()), "brainscore", "vision")))
    load = ", ".join(f"{x:.1f}" for x in result.loadavg)
    out.print(f"{len(result.scored)} score(s), {len(result.skipped)} left out, {len(result.failed)} failed, in "
              f"{result.wall_s:.0f} s (load average {load} on {os.cpu_count()} cores). The same board in a browser: "
              "`cortexbox web`, then http://127.0.0.1:8000/?domain=vision ; here again: `cortexbox leaderboard --domain vision`",
              markup=False, highlight=False)
    if result.failed:
        raise typer.Exit(1)


def _score_queued(events) -> list[dict]:
    """Scores what was just queued: sent to the broker's workers when one is configured, else here and now."""
    from cortexbox.orchestrator.scoring import run_queued_jobs
    from cortexbox.orchestrator.scoring.workers import broker_app, dispatch_queued_results
    from cortexbox.registry import Registry

    app_ = broker_app()
    return dispatch_queued_results(app_, Registry()) if app_ is not None else run_queued_jobs(events=events)


def _job_result(r: dict) -> str:
    """One queued job's outcome, as `run_queued_jobs` reports it."""
    if r["status"] == "succeeded":
        return f"succeeded, ceiled {r['ceiled']}, raw {r['raw']:.4f}"
    if r["status"] == "superseded":
        return f"superseded by v{r.get('by_version') or r.get('scored_version')}"
    if r["status"] == "dispatched":
        return f"sent to the workers as job {r['job_id']}"
    return f"{r['status']} ({r.get('error', '')})"


@app.command()
def gc() -> None:
    """Remove containers and run folders left behind by cortexbox processes that no longer exist, and mark their
    runs failed (failure class "lost") so they stop looking alive."""
    from cortexbox.orchestrator.cache import ActivationCache
    from cortexbox.orchestrator.run_events import close_lost_runs
    from cortexbox.orchestrator.runtime import docker_client, reap_orphans, remove_orphaned_run_dirs
    from cortexbox.registry import Registry

    out.print(f"removed {reap_orphans(docker_client())} orphaned container(s)")
    out.print(f"removed {len(remove_orphaned_run_dirs())} run folder(s) of dead processes")
    lost = close_lost_runs(Registry())
    out.print(f"marked {len(lost)} run(s) of dead processes as lost" + (f": {', '.join(map(str, lost))}" if lost else ""))
    files, size = ActivationCache().remove_legacy()
    if files:
        out.print(f"removed {files} file(s) of the earlier per-set activation cache ({size / 2**20:.1f} MiB)")


@app.command("settings")
def settings_command(as_json: bool = typer.Option(False, "--json")) -> None:
    """Print the effective settings: each with its environment variable, its value and where it came from (env or
    default)."""
    from cortexbox.benchmarks.settings import describe

    rows = describe()
    if as_json:
        _emit_json(rows)
        return
    for row in rows:
        value = "(unset)" if row["value"] in (None, "") else row["value"]
        source = f"from ${row['env']}" if row["source"] == "env" else f"default: {row['default']}; set ${row['env']}"
        line = f"{row['name']} = {value}  ({source})"
        out.print(safe_text(line), markup=False, highlight=False, soft_wrap=True)


def _size(n: float) -> str:
    """Bytes in binary units, as sizes are written to the cache's options (20g = 20 GiB)."""
    value, unit = float(n), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    return f"{value:.0f} B" if unit == "B" else f"{value:.1f} {unit}"


@cache_app.callback(invoke_without_command=True)
def cache_main(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """Show the activation cache (the same as `cortexbox cache show`)."""
    if ctx.invoked_subcommand is None:
        cache_show(as_json=as_json)


@cache_app.command("show")
def cache_show(as_json: bool = typer.Option(False, "--json")) -> None:
    """Usage by model and output (largest first), total size, cap and free disk."""
    import time

    from cortexbox.orchestrator.cache import ActivationCache
    from cortexbox.orchestrator.terminal import untrusted
    from cortexbox.registry import Registry

    report = ActivationCache().report()
    names = {m.digest: m.name for m in Registry().models()}
    for o in report["outputs"]:
        o["model"] = names.get(o["digest"])
    if as_json:
        _emit_json(report)
        return
    out.print(f"activation cache {report['path']}: {_size(report['total_bytes'])} of a {_size(report['max_bytes'])} cap "
              f"({report['cap']}), {_size(report['free_bytes'])} free on its disk", markup=False, highlight=False)
    if not report["outputs"]:
        return
    table = Table("model", "output", "shards", "size", "last used")
    for o in report["outputs"]:
        table.add_row(untrusted(o["model"] or o["digest"][:19], limit=60), untrusted(o["output"], limit=80), str(o["shards"]),
                      _size(o["bytes"]), time.strftime("%Y-%m-%d %H:%M", time.localtime(o["last_used"])))
    out.print(table)


@cache_app.command("prune")
def cache_prune(
    to: Optional[str] = typer.Option(None, "--to", metavar="SIZE", help="Shrink to this size, e.g. 20g or 500m (default: the cap)"),
    everything: bool = typer.Option(False, "--all", help="Remove every shard that no running score is reading"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Evict the least recently used shards down to the cap (or --to SIZE, or --all).

    Shards a running score is reading or has just written are kept, whichever process runs it."""
    from cortexbox.orchestrator.cache import ActivationCache, parse_size
    from cortexbox.orchestrator.errors import UserError

    if to is not None and everything:
        raise UserError("give at most one of --to SIZE and --all")
    try:
        to_bytes = 0 if everything else None if to is None else parse_size(to)
    except UserError as e:
        raise UserError(f"--to {to!r} is not a size", e.hint) from None
    cache = ActivationCache()
    result = cache.prune(to_bytes)
    if as_json:
        _emit_json({**result.to_dict(), "max_bytes": cache.max_bytes()})
        return
    kept = f"; kept {result.in_use} shard(s) ({_size(result.in_use_bytes)}) that running scores hold" if result.in_use else ""
    out.print(f"removed {result.removed} shard(s), {_size(result.freed_bytes)}{kept}; the cache holds "
              f"{_size(result.total_bytes)} (cap {_size(cache.max_bytes())})", markup=False, highlight=False)


@app.command()
def metric(
    name: str = typer.Argument(..., help="Metric, named as in Brain-Score's registry (pls, ridge, rdm, cka, i2n, ...)"),
    source: Path = typer.Option(..., "--source", help="Model assembly (Brain-Score netCDF)"),
    target: Path = typer.Option(..., "--target", help="Recording or behaviour assembly (Brain-Score netCDF)"),
    param: list[str] = typer.Option([], "--param", help="Metric parameter key=value (repeatable), e.g. stratification_coord=null"),
    as_json: bool = typer.Option(False, "--json", help="Print the score as JSON"),
) -> None:
    """Score two precomputed assemblies with one metric, without any model, with Brain-Score's defaults (splits
    stratified on object_name when the target has it)."""
    from cortexbox.benchmarks.metrics import MetricInputError, parse_params, score_files
    from cortexbox.orchestrator.errors import UserError

    try:
        score = score_files(name, source, target, params=parse_params(param))
    except MetricInputError as e:
        raise UserError(str(e), e.hint) from e
    if as_json:
        _emit_json(score.to_dict())
    else:
        splits = score.attrs.get("cross_validation") or {}
        how = f"; {splits['splitter']}" + (f" on {splits['stratification_coord']}" if splits["stratification_coord"] else "") if splits else ""
        out.print(f"{name}: {score.raw:.6f} ± {score.error:.6f} ({len(score.values)} value(s){how})", highlight=False)


@app.command()
def web(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0 inside a container)"),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="Port to listen on"),
    database_url: Optional[str] = typer.Option(None, "--database-url", help="Registry URL (default: $CORTEXBOX_DATABASE_URL or SQLite in $CORTEXBOX_HOME)"),
) -> None:
    """Serve the leaderboard web app and its JSON API (live runs execute in this process)."""
    import uvicorn

    from cortexbox.orchestrator.web import create_app

    application = create_app(database_url)
    err.print(f"cortexbox web on http://{host}:{port} (registry {application.state.registry.engine.url.render_as_string(hide_password=True)})")
    uvicorn.run(application, host=host, port=port, log_level="warning")


@import_app.command("brainscore")
def import_brainscore(
    plugin: str = typer.Argument(..., help="A Brain-Score model identifier or plugin folder name (e.g. pixels), or a plugin folder's path"),
    model: Optional[str] = typer.Option(None, "--model", metavar="ID", help="The model to serve when the plugin registers several"),
    out_dir: Optional[Path] = typer.Option(None, "--out", metavar="DIR", help="Where the project goes (default <home>/imports/brainscore/<name>)"),
    tag: Optional[str] = typer.Option(None, help="Image tag (default cortexbox/brainscore-<id>:latest)"),
    build: bool = typer.Option(True, "--build/--no-build", help="Build the image (or only write the project)"),
    templates: Optional[Path] = typer.Option(None, "--templates", metavar="DIR", help="The folder holding brainscore-plugin (default ./model_templates)"),
    force: bool = typer.Option(False, "--force", help="Replace whatever --out holds"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Wrap a Brain-Score vision model plugin into a model project and build its image (refused if it downloads)."""
    from cortexbox.orchestrator.importers.brainscore import import_and_build

    with err.status(f"importing Brain-Score plugin {plugin}") as status:
        project, built = import_and_build(plugin, out_dir, model=model, tag=tag, build=build, templates=templates,
                                          force=force, log=_status_line(status))
    result = {**project.to_dict(), "tag": built.tag if built else None, "digest": built.image_id if built else None}
    if as_json:
        _emit_json(result)
        return
    out.print(f"{project.project_dir} ({project.identifier}, plugin {project.plugin_folder}; "
              f"extra pins: {', '.join(project.requirements) or 'none'})", soft_wrap=True, markup=False, highlight=False)
    if built:
        out.print(f"{built.tag} {built.image_id}", markup=False, highlight=False)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _click_exceptions() -> tuple[type, ...]:
    """The usage-error classes of the installed typer: typer 0.2x raises its own copy of click's (typer._click),
    older versions click's own."""
    import importlib

    found = []
    for name in ("typer._click.exceptions", "click.exceptions"):
        try:
            found.append(importlib.import_module(name).ClickException)
        except (ImportError, AttributeError):
            pass
    return tuple(found)


def _report(e: Exception) -> int | None:
    """Prints a user's mistake (one line and a hint) or a model's failure (its class, message and log tail) and
    returns the exit code: 2 and 1. None for anything else: a bug, whose traceback is wanted."""
    if isinstance(e, _click_exceptions()):  # a mistyped command, a missing option, a bad option value
        ctx = getattr(e, "ctx", None)
        if type(e).__name__ == "NoArgsIsHelpError":  # `cortexbox image`: the group's help
            e.show()
            return 2
        command = ctx.command_path if ctx is not None else "cortexbox"
        _print_error(e.format_message(), f"`{command} --help` shows the usage", oneline=True)
        return 2
    # The errors module is loaded already if `e` is one of ours, so this import is free; for anything else the
    # traceback follows anyway.
    from cortexbox.orchestrator.errors import CortexboxError, ModelFailure, UserError

    if isinstance(e, UserError):
        tail = getattr(e, "log_tail", None)  # ImageBuildError: the build's last lines
        _print_error(e.message if tail and isinstance(getattr(e, "message", None), str) else str(e), e.hint,
                     tail="\n".join(tail) if isinstance(tail, list) else tail)
        return 2
    if isinstance(e, ModelFailure):
        err.print(Text.assemble((f"model failed ({e.failure.value}):", "red"), " ", untrusted(e.message)), soft_wrap=True)
        if e.log_tail:
            err.print("--- last lines of the model's log ---", style="dim", markup=False, highlight=False)
            err.print(untrusted(e.log_tail.rstrip(), limit=LOG_TAIL_CHARS, keep="end"), soft_wrap=True)
        return 1
    if isinstance(e, CortexboxError):
        _print_error(str(e), "")
        return 1
    return None


def _print_error(message: str, hint: str, *, oneline: bool = False, tail: str | None = None) -> None:
    """`error: message`, the log's last lines if any, `hint: ...`; unwrapped, escape-free, never read as markup
    (a message may quote the user's input or a model's words)."""
    err.print(Text.assemble(("error:", "red"), " ", untrusted(message, oneline=oneline, limit=4000)), soft_wrap=True)
    if tail:
        err.print("--- last lines of the log ---", style="dim", markup=False, highlight=False)
        err.print(untrusted(tail.rstrip(), limit=LOG_TAIL_CHARS, keep="end"), soft_wrap=True)
    if hint:
        err.print(untrusted(f"hint: {hint}", "dim", oneline=True, limit=1000), soft_wrap=True)


def main(argv: list[str] | None = None) -> None:
    # SIGTERM and SIGHUP unwind like Ctrl-C, so every container is removed on the way out.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)
    try:
        code = app(args=argv, prog_name="cortexbox", standalone_mode=False)
        if code == 130:  # typer turns KeyboardInterrupt into this return value
            raise KeyboardInterrupt
        if isinstance(code, int) and code:
            sys.exit(code)
    except (KeyboardInterrupt, typer.Abort):
        err.print("[yellow]interrupted; containers removed[/yellow]")
        sys.exit(130)
    except Exception as e:
        code = _report(e)
        if code is None:
            raise
        sys.exit(code)


if __name__ == "__main__":
    main()
