"""Live runs: any run's progress, read from the registry's run events (written by ``score_model`` in whichever process
scores it: this web process, ``cortexbox score`` in a terminal, a worker), and the runs started from this web app.

``follow_run`` polls one run's events (short, backing-off interval, bounded batches, resumable from a seq) until its
``done`` event, or until its row says it finished, or until the process that scored it (on this host) is gone.
Runs started with ``POST /api/runs`` are, with a broker (``$CORTEXBOX_BROKER_URL``), queued as scoring jobs for the
workers (scoring/workers.py) and followed here through the registry's job rows (``follow_jobs``); without one they
are executed one at a time in a background thread of the web process (the embedded default). Either batch (one
registry run per benchmark) keeps only its own glue events in memory (``status``, ``job``, ``run``, ``done``, and
``failed`` for a benchmark that never got a run) and streams each run's events from the registry
(``follow_batch``)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from queue import Queue
from typing import Any

from cortexbox.orchestrator.run_events import owner_gone
from cortexbox.registry import Registry

logger = logging.getLogger(__name__)

#: Polling of the registry by a stream: first interval, longest interval (backing off while nothing happens).
POLL_S = 0.2
POLL_MAX_S = 1.0
#: Events read per query.
BATCH = 500
#: A stream ends after this long (the browser's EventSource reconnects and resumes with Last-Event-ID).
STREAM_S = 600.0
#: Silence after which a watcher checks whether the scoring process (on this host) still exists.
OWNER_CHECK_S = 5.0
#: How often the rows of queued jobs followed by this web process are read.
JOB_POLL_S = 0.5

Disconnected = Callable[[], Awaitable[bool]]


async def follow_run(registry: Registry, run_id: int, after: int = -1, *, disconnected: Disconnected | None = None,
                     deadline: float | None = None) -> AsyncIterator[tuple[int | None, str, dict]]:
    """Yields ``(seq, kind, data)`` of the run's events with seq > ``after``, as they land, ending with a ``done``
    event: the run's own, or one made from its finished row (seq None), or ``status: lost`` when the process that
    scored it on this host is gone without finishing it. Returns early, without ``done``, once ``disconnected()``
    is true or ``deadline`` (time.monotonic) has passed."""
    interval = POLL_S
    quiet_since = time.monotonic()
    owner: dict[str, Any] | None = None
    while True:
        # The row first: a run's events are all written before its row is marked finished.
        run = await asyncio.to_thread(registry.run, run_id)
        events = await asyncio.to_thread(registry.run_events, run_id, after, BATCH)
        for e in events:
            after = e.seq
            if e.kind == "status" and owner is None:
                owner = e.data or {}
            yield e.seq, e.kind, dict(e.data or {})
            if e.kind == "done":
                return
        if events:
            interval = POLL_S
            quiet_since = time.monotonic()
            if len(events) == BATCH:
                continue
        elif run is None or run.status != "running":
            yield None, "done", {"status": run.status if run else "missing", "failure_class": run.failure_class if run else None,
                                 "benchmark": run.benchmark_identifier if run else ""}
            return
        elif time.monotonic() - quiet_since > OWNER_CHECK_S:
            if owner is None:
                first = await asyncio.to_thread(registry.run_events, run_id, -1, 1)
                owner = (first[0].data or {}) if first and first[0].kind == "status" else {}
            if owner_gone(owner):
                yield None, "done", {"status": "lost", "failure_class": None, "benchmark": run.benchmark_identifier,
                                     "error": f"the process that scored this run (pid {owner.get('pid')}) is gone; the run never finished"}
                return
            quiet_since = time.monotonic()
        if (disconnected is not None and await disconnected()) or (deadline is not None and time.monotonic() > deadline):
            return
        await asyncio.sleep(interval)
        interval = min(interval * 1.5, POLL_MAX_S)


@dataclass
class LiveRun:
    """A batch started from this web app: one model on some benchmarks, one registry run per benchmark."""

    id: int
    model: str
    benchmarks: list[str]
    use_cache: bool = True
    status: str = "queued"  # queued | running | succeeded | failed
    run_ids: list[int] = field(default_factory=list)
    #: Queued jobs (``job_id``, ``benchmark``) when the workers of a broker score the batch.
    jobs: list[dict[str, Any]] = field(default_factory=list)
    #: Set by a cancel of an embedded batch: its current run's containers are killed, the rest never starts.
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    events: list[dict[str, Any]] = field(default_factory=list)  # the batch's own: status, run, failed (no run), done
    created: float = field(default_factory=time.time)
    lock: threading.Condition = field(default_factory=threading.Condition, repr=False)

    def emit(self, event: str, data: dict[str, Any]) -> None:
        with self.lock:
            self.events.append({"id": len(self.events), "event": event, "data": data, "t": round(time.time() - self.created, 3)})
            self.lock.notify_all()

    @property
    def finished(self) -> bool:
        return self.status in ("succeeded", "failed")

    def to_dict(self) -> dict[str, Any]:
        return {"live_id": self.id, "model": self.model, "benchmarks": self.benchmarks, "status": self.status,
                "run_ids": self.run_ids, "n_events": len(self.events), "url": f"/live/{self.id}",
                "events_url": f"/api/live/{self.id}/events", "cancel_url": f"/api/live/{self.id}/cancel", "jobs": self.jobs,
                "runs": [{"run_id": r, "live_url": f"/runs/{r}/live", "events_url": f"/api/runs/{r}/events"} for r in self.run_ids]}


async def follow_batch(registry: Registry, live: LiveRun, last_event_id: str | None = None, *,
                       disconnected: Disconnected | None = None,
                       deadline: float | None = None) -> AsyncIterator[tuple[str, str, dict]]:
    """Yields ``(id, kind, data)``: the batch's own events (id ``"<n>"``), and after each ``run`` event that run's
    events from the registry (id ``"<n>.<seq>"``, its ``done`` left out); ends after the batch's ``done``.
    ``last_event_id`` resumes after that event."""
    position, after = 0, None
    if last_event_id:
        head, _, seq = last_event_id.partition(".")
        if head.isdigit():
            position, after = (int(head), int(seq)) if seq.lstrip("-").isdigit() else (int(head) + 1, None)
    while True:
        while position < len(live.events):
            e = live.events[position]
            if e["event"] == "run":
                if after is None:
                    yield str(position), "run", e["data"] | {"t": e["t"]}
                ended = False
                async for seq, kind, data in follow_run(registry, e["data"]["run_id"], -1 if after is None else after,
                                                        disconnected=disconnected, deadline=deadline):
                    if kind == "done":
                        ended = True
                    else:
                        yield f"{position}.{seq}", kind, data
                if not ended:
                    return  # disconnected or out of time
            else:
                yield str(position), e["event"], e["data"] | {"t": e["t"]}
            position, after = position + 1, None
        if live.finished and position >= len(live.events):
            return
        if (disconnected is not None and await disconnected()) or (deadline is not None and time.monotonic() > deadline):
            return
        await asyncio.sleep(POLL_S)


class _RecordingRegistry:
    """The app's registry, telling the live run the id of each registry run as it is created."""

    def __init__(self, registry: Registry, live: LiveRun):
        self._registry = registry
        self._live = live

    def start_run(self, *args, **kwargs):
        run = self._registry.start_run(*args, **kwargs)
        self._live.run_ids.append(run.id)
        self._live.emit("run", {"run_id": run.id, "benchmark": run.benchmark_identifier})
        return run

    def __getattr__(self, name: str):
        return getattr(self._registry, name)


ScoreFunction = Callable[..., Any]


class LiveRuns:
    """Queue and worker thread of the web process's runs. ``score`` is ``score_model`` (replaceable in tests: it must
    store its run's events as ``score_model`` does, e.g. with ``RunEventLog``)."""

    def __init__(self, registry: Registry, score: ScoreFunction | None = None, cache_dir: str | None = None):
        self.registry = registry
        self._score = score
        self.cache_dir = cache_dir
        self.runs: dict[int, LiveRun] = {}
        self._ids = itertools.count(1)
        self._queue: Queue[LiveRun | None] = Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._watched: list[tuple[LiveRun, dict[int, dict[str, Any]]]] = []
        self._watcher: threading.Thread | None = None
        self._closed = threading.Event()

    def submit(self, model: str, benchmarks: list[str], use_cache: bool = True) -> LiveRun:
        live = LiveRun(next(self._ids), model, benchmarks, use_cache)
        self.runs[live.id] = live
        live.emit("status", {"status": "queued"})
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="cortexbox-web-runs", daemon=True)
                self._thread.start()
        self._queue.put(live)
        return live

    def follow_jobs(self, model: str, jobs: list[dict[str, Any]]) -> LiveRun:
        """A batch of queued jobs (``job_id``, ``benchmark``): the workers score them; this process only watches
        their rows (one thread for every batch, polling every JOB_POLL_S) and tells the batch each job's run as a
        worker starts it, a job that ended without a run, and the end."""
        live = LiveRun(next(self._ids), model, [j["benchmark"] for j in jobs], jobs=jobs)
        self.runs[live.id] = live
        live.emit("status", {"status": "queued", "jobs": jobs})
        with self._lock:
            self._watched.append((live, {j["job_id"]: {"benchmark": j["benchmark"], "runs": set(), "ended": False}
                                         for j in jobs}))
            if self._watcher is None or not self._watcher.is_alive():
                self._watcher = threading.Thread(target=self._watch_jobs, name="cortexbox-web-jobs", daemon=True)
                self._watcher.start()
        return live

    def _watch_jobs(self) -> None:
        while not self._closed.wait(JOB_POLL_S):
            with self._lock:
                watched = list(self._watched)
            if not watched:
                with self._lock:  # nothing left: the next follow_jobs starts a new watcher
                    if not self._watched:
                        self._watcher = None
                        return
                continue
            try:
                rows = self._job_rows([job_id for _, jobs in watched for job_id in jobs])
            except Exception:  # noqa: BLE001 - a registry hiccup: the next round reads again
                logger.warning("could not read the watched jobs", exc_info=True)
                continue
            for live, jobs in watched:
                if _update_batch(live, jobs, rows):
                    with self._lock:
                        self._watched = [w for w in self._watched if w[0] is not live]

    def _job_rows(self, ids: list[int]) -> dict[int, Any]:
        from sqlmodel import select

        from cortexbox.registry import ScoreJob

        with self.registry.session() as s:
            return {job.id: job for job in s.exec(select(ScoreJob).where(ScoreJob.id.in_(ids)))}  # type: ignore[union-attr]

    def close(self, timeout: float | None = None) -> None:
        self._closed.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)
        if self._watcher is not None:
            self._watcher.join(timeout)

    def _work(self) -> None:
        while True:
            live = self._queue.get()
            if live is None:
                return
            self._execute(live)

    def _execute(self, live: LiveRun) -> None:
        from cortexbox.orchestrator.scoring import ScoreRequest, execute

        live.status = "running"
        live.emit("status", {"status": "running"})
        failed = False
        for benchmark in live.benchmarks:
            if live.cancel.is_set():
                failed = True
                live.emit("failed", {"benchmark": benchmark, "failure_class": "cancelled", "error": "cancelled before it started",
                                     "log_tail": None})
                continue
            live.emit("stage", {"text": "starting", "benchmark": benchmark})
            request = ScoreRequest(benchmark=benchmark, image=live.model, use_cache=live.use_cache,
                                   database_url=self.registry.url, cache_dir=self.cache_dir)
            runs_before = len(live.run_ids)
            try:
                result = execute(request, registry=_RecordingRegistry(self.registry, live), score=self._score,
                                 events=_Cancellable(live))
            except KeyboardInterrupt:
                if not live.cancel.is_set():
                    raise
                failed = True  # stored by the job as cancelled, its container removed as after Ctrl-C
                if len(live.run_ids) == runs_before:
                    live.emit("failed", {"benchmark": benchmark, "failure_class": "cancelled", "error": "cancelled",
                                         "log_tail": None})
                continue
            if result["status"] != "failed":
                continue  # its score is among the run's events
            failed = True
            if len(live.run_ids) == runs_before:  # failed before a run existed (e.g. an unknown benchmark)
                failure = result["failure"]
                live.emit("failed", {"benchmark": benchmark, "failure_class": failure["failure_class"], "error": failure["error"],
                                     "log_tail": failure["log_tail"]} | ({"hint": failure["hint"]} if failure["hint"] else {}))
        live.status = "failed" if failed else "succeeded"
        live.emit("done", {"status": live.status, "run_ids": live.run_ids})


class _Cancellable:
    """The events of an embedded batch's run, interrupting it at its next event once the batch is cancelled: the job
    unwinds as after Ctrl-C (its container removed, the run stored as ``cancelled``). Only this run's thread is
    interrupted; other runs of this process (a competition's submissions) go on."""

    def __init__(self, live: LiveRun):
        self.live = live

    def __call__(self, event: str, data: dict) -> None:
        if self.live.cancel.is_set() and event not in ("failed", "done"):
            raise KeyboardInterrupt("cancelled from the web")


#: Job statuses after which a job changes no more (scoring/workers.py FINISHED).
_JOB_ENDS = ("succeeded", "failed", "cancelled", "superseded")


def _update_batch(live: LiveRun, jobs: dict[int, dict[str, Any]], rows: dict[int, Any]) -> bool:
    """Tells ``live`` what its jobs' rows say now: a ``run`` per run a worker started (a retried job gets another),
    ``failed`` for a job that ended without a run, ``done`` when all ended. True once it is done."""
    for job_id, seen in jobs.items():
        row = rows.get(job_id)
        if seen["ended"]:
            continue
        if row is None:  # deleted under us: it will not end on its own
            seen["ended"], seen["failed"] = True, True
            live.emit("failed", {"benchmark": seen["benchmark"], "job_id": job_id, "failure_class": None,
                                 "error": f"job {job_id} is gone from the registry", "log_tail": None})
            continue
        if row.run_id is not None and row.run_id not in seen["runs"]:
            seen["runs"].add(row.run_id)
            if live.status == "queued":
                live.status = "running"
                live.emit("status", {"status": "running"})
            live.run_ids.append(row.run_id)
            live.emit("run", {"run_id": row.run_id, "benchmark": seen["benchmark"], "job_id": job_id, "worker": row.worker})
        if row.status in _JOB_ENDS:
            seen["ended"] = True
            seen["failed"] = row.status in ("failed", "cancelled")
            if seen["failed"] and not seen["runs"]:
                live.emit("failed", {"benchmark": seen["benchmark"], "job_id": job_id, "failure_class": row.failure_class,
                                     "error": row.error or row.status, "log_tail": None})
    if not all(seen["ended"] for seen in jobs.values()):
        return False
    live.status = "failed" if any(seen.get("failed") for seen in jobs.values()) else "succeeded"
    live.emit("done", {"status": live.status, "run_ids": live.run_ids,
                       "jobs": {job_id: rows[job_id].status if job_id in rows else "missing" for job_id in jobs}})
    return True
