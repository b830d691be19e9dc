"""Scoring runs started from the web app: executed one at a time in a background thread of the web process,
their events (from ``score_model``'s ``events`` callback) kept in memory and streamed as server-sent events."""

from __future__ import annotations

import itertools
import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from queue import Queue
from typing import Any

from cortexbox.registry import Registry

logger = logging.getLogger(__name__)


@dataclass
class LiveRun:
    id: int
    model: str
    benchmarks: list[str]
    use_cache: bool = True
    status: str = "queued"  # queued | running | succeeded | failed
    run_ids: list[int] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
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
                "events_url": f"/api/live/{self.id}/events"}


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
    """Queue and worker thread of the web process's runs. ``score`` is ``score_model`` (replaceable in tests)."""

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
        from cortexbox.orchestrator.errors import ModelFailure, UserError
        from cortexbox.orchestrator.jobs import ScoreRequest

        score = self._score
        if score is None:
            from cortexbox.orchestrator.jobs import score_model as score
        live.status = "running"
        live.emit("status", {"status": "running"})
        failed = False
        for benchmark in live.benchmarks:
            live.emit("stage", {"text": f"{benchmark}: starting", "benchmark": benchmark})
            request = ScoreRequest(benchmark=benchmark, image=live.model, use_cache=live.use_cache,
                                   database_url=self.registry.url, cache_dir=self.cache_dir)
            try:
                outcome = score(request, registry=_RecordingRegistry(self.registry, live),
                                events=lambda event, data, b=benchmark: live.emit(event, {**data, "benchmark": b}))
                live.emit("score", {k: v for k, v in outcome.to_dict().items() if k != "provenance"}
                          | {"model_id": self.registry.model_by_digest(outcome.digest).id})
            except ModelFailure as e:
                failed = True
                live.emit("failed", {"benchmark": benchmark, "failure_class": e.failure.value, "error": e.message, "log_tail": e.log_tail})
            except UserError as e:
                failed = True
                live.emit("failed", {"benchmark": benchmark, "failure_class": "user error", "error": str(e), "hint": e.hint})
            except Exception as e:  # noqa: BLE001 - the web process must outlive any run
                failed = True
                logger.exception("run %s failed", live.id)
                live.emit("failed", {"benchmark": benchmark, "failure_class": "error", "error": f"{type(e).__name__}: {e}",
                                     "log_tail": traceback.format_exc()[-2000:]})
        live.status = "failed" if failed else "succeeded"
        live.emit("done", {"status": live.status, "run_ids": live.run_ids})
