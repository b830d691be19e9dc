"""A run's progress events, stored in the registry so that any process can watch the run.

``score_model`` wraps its ``events`` sink in a :class:`RunEventLog`: every event still goes to the caller's sink (the
CLI's progress bars, the web's live run), and is also written to the registry's ``run_event`` table, numbered from 0
per run. Progress events come per batch, so they are throttled: at most one write per ``min_interval`` seconds per
run, a held event written by a timer once the interval has passed (so the display never lags by more than the
interval), and the last one (done == total) always written at once. Any other event first writes the progress
events it follows, so the order is kept. The log ends with the run's terminal events, written before the run's row
is marked finished: a reader that sees a finished row and no further events has seen everything.

Kinds: ``status`` {status, host, pid, model_ref, benchmark}, ``stage`` {text}, ``progress`` {done, total, label},
``score`` {the outcome without provenance, model_id}, ``failed`` {failure_class, error, log_tail}, ``done``
{status, failure_class}. Every event's data carries ``benchmark`` and ``t`` (seconds since the run started).
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from cortexbox.orchestrator import owner as process_owner
from cortexbox.orchestrator.errors import FailureClass

logger = logging.getLogger(__name__)

#: Seconds between two writes of progress events of one run.
PROGRESS_INTERVAL = 0.25


class RunEventLog:
    """An ``EventSink`` (``(event, data)`` callable) that stores the events of one run and passes them on."""

    def __init__(self, registry, run_id: int, forward: Callable[[str, dict], None] | None = None, *,
                 benchmark: str = "", min_interval: float = PROGRESS_INTERVAL):
        self.registry = registry
        self.run_id = run_id
        self.forward = forward
        self.benchmark = benchmark
        self.min_interval = min_interval
        self.seq = 0
        self.closed = False
        self._t0 = time.monotonic()
        self._last_write = -float("inf")
        self._pending: dict[str, tuple[str, dict]] = {}  # progress label -> newest held event
        self._timer: threading.Timer | None = None
        self._lock = threading.RLock()

    def __call__(self, event: str, data: dict) -> None:
        if self.forward is not None:
            self.forward(event, data)
        self.record(event, data)

    def record(self, event: str, data: dict) -> None:
        """Stores one event (progress throttled), without passing it on."""
        now = time.monotonic()
        data = _jsonable({**data, "benchmark": data.get("benchmark", self.benchmark), "t": round(now - self._t0, 3)})
        with self._lock:
            if self.closed:
                return
            if event == "progress":
                label = str(data.get("label", ""))
                self._pending.pop(label, None)  # keep arrival order
                self._pending[label] = (event, data)
                finished = data.get("total") is not None and data.get("done", 0) >= data["total"]
                if finished or now - self._last_write >= self.min_interval:
                    self._write([])
                elif self._timer is None:
                    self._timer = threading.Timer(self._last_write + self.min_interval - now, self.flush)
                    self._timer.daemon = True
                    self._timer.start()
            else:
                self._write([(event, data)])

    def flush(self) -> None:
        """Writes any held progress events."""
        with self._lock:
            if self._pending and not self.closed:
                self._write([])

    def finish(self, status: str, *terminal: tuple[str, dict]) -> None:
        """Writes the held progress, the ``terminal`` events (e.g. ``score`` or ``failed``) and ``done`` {status};
        nothing is written after it."""
        failure = next((d.get("failure_class") for e, d in terminal if e == "failed"), None)
        for event, data in terminal:
            self.record(event, data)
        self.record("done", {"status": status, "failure_class": failure})
        self.close()

    def close(self) -> None:
        with self._lock:
            if not self.closed:
                if self._pending:
                    self._write([])
                self.closed = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _write(self, events: list[tuple[str, dict]]) -> None:
        # called with the lock held: held progress first, then the new events
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch = list(self._pending.values()) + events
        self._pending.clear()
        rows = [(self.seq + i, event, data) for i, (event, data) in enumerate(batch)]
        try:
            self.registry.add_run_events(self.run_id, rows)
        except Exception:  # noqa: BLE001 - a progress display must never fail a score
            logger.warning("could not store %d event(s) of run %s", len(rows), self.run_id, exc_info=True)
            return
        self.seq += len(rows)
        self._last_write = time.monotonic()


def _jsonable(data: dict) -> dict:
    """Plain JSON (PostgreSQL's json type has no NaN): numpy scalars as numbers, non-finite numbers as null."""

    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    return clean(json.loads(json.dumps(data, default=lambda o: o.item() if hasattr(o, "item") else str(o))))


def owner() -> dict[str, Any]:
    """Who is scoring: lets a watcher tell a run whose process died from a slow one. ``host`` is the process's
    namespace (orchestrator/owner.py): the host name, or its container and that container's start."""
    return {"host": process_owner.namespace(), "pid": os.getpid()}


def owner_gone(owner: dict[str, Any], client: Any = None) -> bool:
    """True only when the process that scored the run is known to be gone: one of this host (or container), or of
    a worker container that ``client``'s Docker engine holds; any other process is never declared gone."""
    return process_owner.gone(owner.get("host"), owner.get("pid"), client)


def close_lost_runs(registry, client: Any = None) -> list[int]:
    """Marks runs still ``running`` whose scoring process is gone (killed with SIGKILL, the machine's OOM killer; see
    `owner_gone`, ``client`` the Docker engine to ask about worker containers) as failed with failure class
    ``lost``, and ends their event log with ``failed`` and ``done``, so they stop looking alive. Returns their ids.
    ``cortexbox gc`` and the workers call it."""
    closed = []
    for run in registry.runs(limit=10_000, status="running"):
        first = registry.run_events(run.id, -1, 1)
        owner_data = (first[0].data or {}) if first and first[0].kind == "status" else {}
        if not owner_gone(owner_data, client):
            continue
        error = f"the process that scored this run (pid {owner_data.get('pid')} on {owner_data.get('host')}) died without finishing it"
        last = registry.last_run_events([run.id]).get(run.id)
        seq = last.seq + 1 if last is not None else 0
        lost = FailureClass.LOST.value
        registry.add_run_events(run.id, [
            (seq, "failed", {"failure_class": lost, "error": error, "log_tail": None, "benchmark": run.benchmark_identifier}),
            (seq + 1, "done", {"status": "failed", "failure_class": lost, "benchmark": run.benchmark_identifier}),
        ])
        registry.update_run(run, status="failed", failure_class=lost, error=error)
        closed.append(run.id)
    return closed
