"""Live runs: any run's progress, read from the registry's run events (written by ``score_model`` in whichever process
scores it: this web process, ``cortexbox score`` in a terminal, a worker), and the runs started from this web app.

``follow_run`` polls one run's events (short, backing-off interval, bounded batches, resumable from a seq) until its
``done`` event, or until its row says it finished, or until the process that scored it (on this host) is gone.
Runs started with ``POST /api/runs`` are executed one at a time in a background thread of the web process; such a
batch (one registry run per benchmark) keeps only its own glue events in memory (``status``, ``run``, ``done``, and
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
                "events_url": f"/api/live/{self.id}/events",
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

    def close(self, timeout: float | None = None) -> None:
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)

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
            live.emit("stage", {"text": "starting", "benchmark": benchmark})
            request = ScoreRequest(benchmark=benchmark, image=live.model, use_cache=live.use_cache,
                                   database_url=self.registry.url, cache_dir=self.cache_dir)
            runs_before = len(live.run_ids)
            result = execute(request, registry=_RecordingRegistry(self.registry, live), score=self._score)
            if result["status"] != "failed":
                continue  # its score is among the run's events
            failed = True
            if len(live.run_ids) == runs_before:  # failed before a run existed (e.g. an unknown benchmark)
                failure = result["failure"]
                live.emit("failed", {"benchmark": benchmark, "failure_class": failure["failure_class"], "error": failure["error"],
                                     "log_tail": failure["log_tail"]} | ({"hint": failure["hint"]} if failure["hint"] else {}))
        live.status = "failed" if failed else "succeeded"
        live.emit("done", {"status": live.status, "run_ids": live.run_ids})
