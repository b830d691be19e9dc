"""The FastAPI application: server-rendered pages and the JSON API under /api (documented at /api, schema at
/openapi.json). Nothing is fetched from a CDN: the app works offline."""


import contextlib
import json
import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import BaseModel, Field

from cortexbox.orchestrator.aggregation import BenchmarkTreeError
from cortexbox.orchestrator.web import data, plots
from cortexbox.orchestrator.web.community import community_router
from cortexbox.orchestrator.web.live import STREAM_S, LiveRuns, follow_batch, follow_run
from cortexbox.registry import Registry

logger = logging.getLogger(__name__)
HERE = Path(__file__).parent


class RunRequest(BaseModel):
    """Score a model image on one or more benchmarks: with a broker ($CORTEXBOX_BROKER_URL), one queued job per
    (model build, benchmark version) for the workers; without one, in the web process's background worker."""

    model: str = Field(..., description="Docker image (tag or id) of the model; with a broker, a registered model "
                                        "(digest, image reference or name)", examples=["cortexbox/pixels"])
    benchmarks: list[str] = Field(default_factory=list, description="Benchmark identifiers; empty: every benchmark")
    benchmark: str | None = Field(None, description="One benchmark identifier (shorthand for benchmarks=[...])")
    use_cache: bool = Field(True, description="Reuse cached activations and layer choices")


def _sse(event_id: str | int | None, kind: str, data: dict) -> str:
    head = "" if event_id is None else f"id: {event_id}\n"
    return f"{head}event: {kind}\ndata: {json.dumps(data, default=str)}\n\n"


SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _live_urls(run_id: int) -> dict[str, str]:
    return {"live_url": f"/runs/{run_id}/live", "events_url": f"/api/runs/{run_id}/events"}


def _last_event(event, now: datetime) -> dict[str, Any]:
    """What a running run did last, and how many seconds ago."""
    if event is None:
        return {"last_event": None, "quiet_s": None}
    d = event.data or {}
    if event.kind == "progress":
        text = f"{d.get('label', '')}: {d.get('done')} / {d.get('total')}"
    else:
        text = d.get("text") or d.get("status") or event.kind
    created = event.created_at if event.created_at.tzinfo else event.created_at.replace(tzinfo=timezone.utc)
    return {"last_event": text, "quiet_s": max(0, round((now - created).total_seconds()))}


def _templates() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))
    env.globals.update(fmt=data.fmt, short=data.short, ibar=plots.interval_bar, layer_curve=plots.layer_curve,
                       strip_plot=plots.strip_plot, json=lambda x: json.dumps(x, indent=2, default=str, sort_keys=True))
    return env


def create_app(database_url: str | None = None, *, score=None, cache_dir: str | None = None, tree: Any = None,
               community_url: str | None = None) -> FastAPI:
    """The web app over the registry at ``database_url`` (default: ``$CORTEXBOX_DATABASE_URL`` or the SQLite file in
    the cortexbox home). ``tree`` replaces the benchmark tree (a nested spec, see ``aggregation.tree_from_spec``);
    ``score`` replaces ``score_model`` for live runs (tests). ``community_url``: the community registry of accounts,
    competitions and submissions (web/community.py; default: community.db in the cortexbox home)."""
    registry = Registry(database_url)
    live_runs = LiveRuns(registry, score=score, cache_dir=cache_dir)
    templates = _templates()
    brokers: dict[str, Any] = {}

    def broker():
        """The Celery app of $CORTEXBOX_BROKER_URL (read per request, one app per URL), or None: score in process."""
        from cortexbox.benchmarks.settings import settings
        from cortexbox.orchestrator.scoring.workers import celery_app

        url = settings().broker_url
        if not url:
            return None
        if url not in brokers:
            brokers[url] = celery_app(url)
        return brokers[url]
    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        live_runs.close(timeout=1)
        community.state.close(timeout=1)
        for celery in brokers.values():
            celery.close()

    app = FastAPI(title="cortexbox", version="1", docs_url=None, redoc_url=None, lifespan=lifespan,
                  description="Leaderboard, scores with intervals and provenance, comparisons and live runs.")
    app.state.registry = registry
    app.state.live_runs = live_runs
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    def snapshot() -> data.Snapshot:
        return data.load(registry, tree)

    Snap = Annotated[data.Snapshot, Depends(snapshot)]

    def page(name: str, **context: Any) -> HTMLResponse:
        return HTMLResponse(templates.get_template(name).render(**context))

    def model_or_404(snap: data.Snapshot, model_id: int) -> None:
        if model_id not in snap.models:
            raise HTTPException(404, f"no model with id {model_id}")

    # -- JSON API -----------------------------------------------------------------------------------------------------
    api = APIRouter(prefix="/api")

    @api.get("/leaderboard", tags=["leaderboard"], summary="Ranked models with aggregate and per-branch scores")
    def api_leaderboard(snap: Snap, view: Annotated[str, Query(pattern="^(brainscore|scored)$")] = "brainscore",
                        domain: str | None = None) -> dict:
        """Every model with its aggregate at every node of the benchmark tree. ``view=brainscore``: missing children
        count as 0 (listed in ``missing``); ``view=scored``: only scored children are averaged (see ``coverage``).
        ``domain=vision|language``: only the models taking part in that domain, ranked by it (``ranked_by``)."""
        try:
            return data.leaderboard(snap, view, domain)
        except ValueError as e:
            raise HTTPException(status_code=422, detail=str(e)) from None

    @api.get("/tree", tags=["leaderboard"], summary="The benchmark tree aggregated over")
    def api_tree(snap: Snap) -> dict:
        return snap.tree.to_dict()

    @api.get("/models", tags=["models"], summary="Registered model builds")
    def api_models(snap: Snap) -> list[dict]:
        return [{"model_id": m.id, "model": m.name, "version": m.version, "digest": m.digest, "image_ref": m.image_ref,
                 "aggregate": snap.results[m.id].value} for m in snap.models.values()]

    @api.get("/models/{model_id}", tags=["models"], summary="A model: every score with interval and provenance, layer curves, runs")
    def api_model(model_id: int, snap: Snap) -> dict:
        model_or_404(snap, model_id)
        return data.model_page(registry, snap, model_id)

    @api.get("/benchmarks", tags=["benchmarks"], summary="Benchmarks (latest versions)")
    def api_benchmarks(snap: Snap) -> list[dict]:
        return data.benchmarks_list(snap)

    @api.get("/benchmarks/{identifier}", tags=["benchmarks"], summary="A benchmark: ceiling, versions, sizes, scores")
    def api_benchmark(identifier: str, snap: Snap) -> dict:
        try:
            return data.benchmark_page(snap, identifier)
        except KeyError:
            raise HTTPException(404, f"no benchmark {identifier!r}") from None

    @api.get("/compare", tags=["compare"], summary="Paired comparison of two models per benchmark and per aggregate")
    def api_compare(a: int, b: int, snap: Snap) -> dict:
        model_or_404(snap, a)
        model_or_404(snap, b)
        return data.compare(snap, a, b, registry=registry)

    @api.get("/runs", tags=["runs"], summary="Run history, newest first (failure class and log tail of failures)")
    def api_runs(limit: Annotated[int, Query(ge=1, le=1000)] = 50,
                 status: Annotated[str | None, Query(pattern="^(running|succeeded|failed)$")] = None) -> list[dict]:
        """``status=running``: the runs being scored now, by any process (each with its ``live_url``)."""
        return [data.run_dict(r) | _live_urls(r.id) for r in registry.runs(limit, status=status)]

    @api.get("/runs/{run_id}", tags=["runs"], summary="One run")
    def api_run(run_id: int, snap: Snap) -> dict:
        for r in snap.runs:
            if r.id == run_id:
                scores = [data.score_dict(snap, s) for s in snap.scores if s.run_id == run_id]
                return data.run_dict(r) | _live_urls(r.id) | {"scores": scores}
        raise HTTPException(404, f"no run {run_id}")

    def run_or_404(run_id: int):
        run = registry.run(run_id)
        if run is None:
            raise HTTPException(404, f"no run {run_id}")
        return run

    @api.get("/runs/{run_id}/progress", tags=["runs"], summary="A run's progress events so far (any process's run)")
    def api_run_progress(run_id: int, after: Annotated[int, Query(ge=-1)] = -1,
                         limit: Annotated[int, Query(ge=1, le=5000)] = 1000) -> dict:
        run = run_or_404(run_id)
        events = [{"seq": e.seq, "event": e.kind, "data": e.data, "time": e.created_at.isoformat()}
                  for e in registry.run_events(run_id, after, limit)]
        return data.run_dict(run) | _live_urls(run_id) | {"events": events}

    @api.get("/runs/{run_id}/events", tags=["runs"], summary="Server-sent events of a run, from whichever process scores it",
             response_class=StreamingResponse)
    async def api_run_events(run_id: int, request: Request) -> StreamingResponse:
        """``text/event-stream`` of the run's events as they are stored (``status``, ``stage``, ``progress``,
        ``score``, ``failed``, ``done``); ``id`` is the event's seq (resume with ``Last-Event-ID``); the stream ends
        after ``done`` (made from the run's row if the run finished without one; ``lost`` if its process died)."""
        run_or_404(run_id)
        start = request.headers.get("last-event-id", "")
        after = int(start) if start.lstrip("-").isdigit() else -1

        async def stream():
            yield "retry: 1000\n\n"
            async for seq, kind, payload in follow_run(registry, run_id, after, disconnected=request.is_disconnected,
                                                       deadline=time.monotonic() + STREAM_S):
                yield _sse(seq, kind, payload)

        return StreamingResponse(stream(), media_type="text/event-stream", headers=SSE_HEADERS)

    @api.post("/runs", tags=["runs"], status_code=202, summary="Start scoring a model (live: see events_url)")
    def api_start_run(request: RunRequest) -> dict:
        """With a broker, queues one job per benchmark for the workers (the same as ``cortexbox enqueue``: a job is
        one per (model build, benchmark version), so asking again returns the job queued, running or scored, in
        ``jobs``); without one, scores in this web process. Returns the live batch, whose events (``status``,
        ``run``, ``stage``, ``progress``, ``score``, ``failed``, ``done``) stream from ``events_url``, whichever
        process scores its runs."""
        benchmarks = list(request.benchmarks) + ([request.benchmark] if request.benchmark else [])
        if not benchmarks:
            from cortexbox.benchmarks import list_benchmarks
            from cortexbox.orchestrator.ingest import ingested_identifiers

            benchmarks = list_benchmarks() + ingested_identifiers(registry)
        app_ = broker()
        if app_ is None:
            return live_runs.submit(request.model, benchmarks, request.use_cache).to_dict()
        from cortexbox.orchestrator.errors import UserError
        from cortexbox.orchestrator.scoring.workers import enqueue, find_model

        if not request.use_cache:
            raise HTTPException(422, "workers always use the activation cache; rescore without it with "
                                     "`cortexbox score --no-cache` on a host with the Docker engine")
        jobs = []
        try:
            find_model(registry, request.model)  # before any benchmark is registered
            for benchmark in dict.fromkeys(benchmarks):
                job = enqueue(registry, request.model, benchmark, app_)
                jobs.append({"job_id": job.id, "benchmark": benchmark, "status": job.status})
        except UserError as e:
            raise HTTPException(422, f"{e} ({e.hint})" if e.hint else str(e)) from None
        return live_runs.follow_jobs(request.model, jobs).to_dict()

    def cancel_run(run_id: int) -> str:
        """`cortexbox cancel RUN`'s path (scoring/workers.py cancel_run): a worker's job is flagged and its container
        killed by its worker; a run of this web process's own batches is interrupted here."""
        from cortexbox.orchestrator import owner as process_owner
        from cortexbox.orchestrator.errors import UserError
        from cortexbox.orchestrator.scoring import workers

        for live in list(live_runs.runs.values()):
            if run_id in live.run_ids and not live.jobs and not live.finished:
                live.cancel.set()
                return "cancelling"
        run = run_or_404(run_id)
        if run.status != "running":
            return run.status
        first = registry.run_events(run_id, -1, 1)
        scorer = (first[0].data or {}) if first and first[0].kind == "status" else {}
        if scorer.get("host") == process_owner.namespace() and scorer.get("pid") == os.getpid():
            raise HTTPException(409, f"run {run_id} is scored by this web process for a competition; it is not cancelled from here")
        try:
            return workers.cancel_run(registry, run_id, broker())
        except UserError as e:
            raise HTTPException(409, f"{e} ({e.hint})" if e.hint else str(e)) from None

    @api.post("/runs/{run_id}/cancel", tags=["runs"], summary="Cancel a run (as `cortexbox cancel RUN`)")
    def api_cancel_run(run_id: int) -> dict:
        """A worker's run: its job is flagged, and its worker kills the container within about a second (recorded
        ``cancelled``, never retried). A run started here without a broker stops at its next event."""
        return {"run_id": run_id, "status": cancel_run(run_id)}

    @api.post("/jobs/{job_id}/cancel", tags=["runs"], summary="Cancel a scoring job (as `cortexbox cancel --job JOB`)")
    def api_cancel_job(job_id: int) -> dict:
        """A queued job never starts; a running one is flagged and its worker kills its container."""
        from cortexbox.orchestrator.errors import UserError
        from cortexbox.orchestrator.scoring.workers import request_cancel

        try:
            return {"job_id": job_id, "status": request_cancel(registry, job_id, broker())}
        except UserError as e:
            raise HTTPException(404, str(e)) from None

    @api.get("/queue", tags=["runs"], summary="Scoring jobs by status and worker; with a broker, its queue length and live workers")
    def api_queue() -> dict:
        """Queued, running and failed jobs per worker, each lease's heartbeat age (the registry); with
        ``$CORTEXBOX_BROKER_URL``, the broker's queue length and the workers answering a ping (``broker``)."""
        from cortexbox.orchestrator.scoring.workers import queue_report

        return queue_report(registry, broker())

    @api.get("/live", tags=["runs"], summary="Batches started from this web process (each run is also under /api/runs)")
    def api_live_list() -> list[dict]:
        return [r.to_dict() for r in sorted(live_runs.runs.values(), key=lambda r: -r.id)]

    def live_or_404(live_id: int):
        live = live_runs.runs.get(live_id)
        if live is None:
            raise HTTPException(404, f"no live run {live_id} in this web process")
        return live

    @api.get("/live/{live_id}", tags=["runs"], summary="A live run with all its events so far")
    def api_live(live_id: int) -> dict:
        live = live_or_404(live_id)
        return live.to_dict() | {"events": list(live.events)}

    @api.post("/live/{live_id}/cancel", tags=["runs"], summary="Cancel a batch started here: every job or run not ended")
    def api_live_cancel(live_id: int) -> dict:
        from cortexbox.orchestrator.scoring.workers import request_cancel

        live = live_or_404(live_id)
        if not live.jobs:
            if not live.finished:
                live.cancel.set()
            return {"live_id": live_id, "status": live.status if live.finished else "cancelling"}
        return {"live_id": live_id, "status": live.status,
                "jobs": {j["job_id"]: request_cancel(registry, j["job_id"], broker()) for j in live.jobs}}

    @api.get("/live/{live_id}/events", tags=["runs"], summary="Server-sent events of a live run",
             response_class=StreamingResponse)
    async def api_live_events(live_id: int, request: Request) -> StreamingResponse:
        """``text/event-stream``: the batch's ``status``, ``run`` and ``done`` events, and after each ``run`` that
        run's events from the registry; each has an ``id`` (resume with ``Last-Event-ID``), a name and JSON data; the
        stream ends after the ``done`` event."""
        live = live_or_404(live_id)

        async def stream():
            yield "retry: 1000\n\n"
            async for event_id, kind, payload in follow_batch(registry, live, request.headers.get("last-event-id"),
                                                              disconnected=request.is_disconnected,
                                                              deadline=time.monotonic() + STREAM_S):
                yield _sse(event_id, kind, payload)

        return StreamingResponse(stream(), media_type="text/event-stream", headers=SSE_HEADERS)

    app.include_router(api)
    # With a broker, submissions are scored by its workers (score= replaces score_model in process only: tests).
    community = community_router(community_url, score=score, cache_dir=cache_dir, templates=templates,
                                 broker=None if score is not None else broker)
    app.include_router(community)
    app.state.community = community.state

    # -- pages --------------------------------------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def leaderboard_page(snap: Snap, view: str = "brainscore", q: str = "", domain: str | None = None) -> HTMLResponse:
        if view not in data.VIEWS:
            view = "brainscore"
        if domain not in data.domains(snap):
            domain = None
        return page("leaderboard.html", board=data.leaderboard(snap, view, domain), q=q, title="Leaderboard")

    @app.get("/models/{model_id}", response_class=HTMLResponse, include_in_schema=False)
    def model_html(model_id: int, snap: Snap) -> HTMLResponse:
        model_or_404(snap, model_id)
        m = data.model_page(registry, snap, model_id)
        return page("model.html", m=m, title=m["model"])

    @app.get("/benchmarks", response_class=HTMLResponse, include_in_schema=False)
    def benchmarks_html(snap: Snap) -> HTMLResponse:
        return page("benchmarks.html", benchmarks=data.benchmarks_list(snap), title="Benchmarks")

    @app.get("/benchmarks/{identifier}", response_class=HTMLResponse, include_in_schema=False)
    def benchmark_html(identifier: str, snap: Snap) -> HTMLResponse:
        try:
            b = data.benchmark_page(snap, identifier)
        except KeyError:
            raise HTTPException(404, f"no benchmark {identifier!r}") from None
        return page("benchmark.html", b=b, title=identifier)

    @app.get("/compare", response_class=HTMLResponse, include_in_schema=False)
    def compare_html(snap: Snap, a: int | None = None, b: int | None = None) -> HTMLResponse:
        result = None
        if a is not None and b is not None:
            model_or_404(snap, a)
            model_or_404(snap, b)
            result = data.compare(snap, a, b, registry=registry)
        models = sorted(snap.models.values(), key=lambda m: m.name)
        return page("compare.html", c=result, models=models, a=a, b=b, title="Compare")

    @app.get("/runs", response_class=HTMLResponse, include_in_schema=False)
    def runs_html() -> HTMLResponse:
        from cortexbox.benchmarks import list_benchmarks

        known = sorted(set(list_benchmarks()) | {b.identifier for b in registry.benchmarks()})
        running = registry.runs(100, status="running")
        last = registry.last_run_events([r.id for r in running])
        now = datetime.now(timezone.utc)
        running_rows = [data.run_dict(r) | _live_urls(r.id) | _last_event(last.get(r.id), now) for r in running]
        return page("runs.html", runs=[data.run_dict(r) for r in registry.runs(100)], live=api_live_list(),
                    running=running_rows, benchmarks=known, title="Runs")

    @app.get("/runs/{run_id}/live", response_class=HTMLResponse, include_in_schema=False)
    def run_live_html(run_id: int) -> HTMLResponse:
        run = run_or_404(run_id)
        view = {"heading": f"Run {run_id}", "model": run.model_ref, "benchmarks": [run.benchmark_identifier],
                "status": run.status, "run_ids": [run_id], **_live_urls(run_id),
                "cancel_url": f"/api/runs/{run_id}/cancel" if run.status == "running" else None}
        return page("live.html", live=view, title=f"Run {run_id} (live)")

    @app.get("/live/{live_id}", response_class=HTMLResponse, include_in_schema=False)
    def live_html(live_id: int) -> HTMLResponse:
        live = live_or_404(live_id)
        return page("live.html", live=live.to_dict() | {"heading": f"Live run {live_id}", "run_ids": []}, title=f"Live run {live_id}")

    @app.get("/api", response_class=HTMLResponse, include_in_schema=False)
    def api_doc() -> HTMLResponse:
        return page("api.html", schema=app.openapi(), title="JSON API")

    @app.exception_handler(BenchmarkTreeError)
    async def _broken_tree(request: Request, exc: BenchmarkTreeError):
        """No board over a broken tree: every page that aggregates says what is wrong with it."""
        logger.error("%s", exc)
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": str(exc)}, status_code=500)
        return HTMLResponse(templates.get_template("error.html").render(status=500, detail=str(exc), title="Broken benchmark tree"),
                            status_code=500)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException):
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
        return HTMLResponse(templates.get_template("error.html").render(status=exc.status_code, detail=exc.detail, title="Not found"),
                            status_code=exc.status_code)

    return app
