"""Distributed scoring: Celery workers, each bound to one Docker engine, with the registry as the source of truth.

Codabench's shape (../shared/research/competitions.md 1, 5.5): a broker (Redis by default, persistence on; a
RabbitMQ ``amqp://`` URL works the same) carries job ids; the registry decides what happened, exactly once.

* A job is one ScoreJob row, unique on (model build, benchmark version), i.e. (image digest, benchmark version);
  the broker only carries its id. `enqueue` is idempotent: asking again for a job that is queued, running or
  succeeded adds nothing.
* Delivery is at least once (``acks_late``, prefetch 1, the message acknowledged only after the job ended, a
  visibility timeout longer than the longest job). A worker first *claims* the job with one conditional UPDATE;
  a second delivery of a finished or held job does nothing, and a score row names its job (``score.job_id``,
  unique), so a job never stores two scores.
* The worker holding a job renews its lease (``worker``, ``heartbeat_at``) every few seconds. Every worker
  checks the leases of the others: a job whose heartbeat is older than the lease is requeued (``lost``,
  transient: retried) and published again, and the containers of dead processes on its engine are removed
  (`runtime.reap_orphans`, by their owner label), also when a worker starts.
* Cancel (`request_cancel`) marks the job; a queued job ends there, a running one is seen by its worker's lease
  thread within a second, which kills the job's container.
* Retries by failure class (`retry_policy`): transient (worker lost, Docker engine unreachable or restarted)
  retried with backoff up to MAX_ATTEMPTS; deterministic (model_error, bad_output, protocol_violation, rejected,
  handshake_failed, crash, timeout, a user's mistake) never; out_of_memory never automatically: the same image
  under the same memory budget fails the same way, so the failure is stored and rescoring with more memory
  (``score --memory``) is the operator's decision.

Celery runs the job in a thread pool of one thread (``--pool threads -c 1``), so the worker's main thread keeps
the broker connection's heartbeats going during a long job, and a ``kill -9`` takes the job down with the worker
(no orphaned pool child scoring on).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, or_, update
from sqlmodel import select

from cortexbox.orchestrator import image_registry, owner
from cortexbox.orchestrator.errors import FailureClass, UserError
from cortexbox.orchestrator.scoring import queue as queue_module
from cortexbox.orchestrator.scoring import versions
from cortexbox.orchestrator.scoring.failures import Failure
from cortexbox.orchestrator.scoring.job import ScoreRequest
from cortexbox.registry import Benchmark, Model, Registry, ScoreJob
from cortexbox.registry.models import utcnow

logger = logging.getLogger(__name__)

#: The broker's queue of scoring jobs and the task that takes one.
QUEUE = "cortexbox.score"
TASK = "cortexbox.score_job"
#: Seconds without a heartbeat after which a running job's worker counts as gone (`cortexbox worker --lease-s`).
LEASE_S = 60.0
#: The broker redelivers an unacknowledged message after this long: longer than the longest job (MobileNet's
#: layer selection takes 3-10 minutes on 2 cores), so a slow job is never delivered twice while it runs; a
#: dead worker's job comes back through the registry's lease long before.
VISIBILITY_TIMEOUT_S = 6 * 3600
#: Deliveries of one job (lost workers, engine restarts) before it is failed for good.
MAX_ATTEMPTS = 3
#: Seconds between two looks at the job's cancel flag while it runs.
CANCEL_POLL_S = 1.0
FINISHED = ("succeeded", "failed", "cancelled", "superseded")
#: Failure classes retried on another delivery; every other class, and a user's mistake, is final.
TRANSIENT = frozenset({FailureClass.LOST.value})
#: What a container shows when its engine stopped under it (a broken stream, an exit, no answer): the model's own
#: failure only if the engine stayed up; else the run was lost (transient).
ENGINE_ARTEFACTS = frozenset({FailureClass.CRASH.value, FailureClass.PROTOCOL_VIOLATION.value, FailureClass.TIMEOUT.value,
                              FailureClass.HANDSHAKE_FAILED.value})


def retry_policy(failure: Failure) -> str:
    """``transient`` (retried with backoff), ``never``, or ``out_of_memory`` (not retried; see the module)."""
    if failure.failure_class in TRANSIENT or failure.transient:
        return "transient"
    if failure.failure_class == FailureClass.OUT_OF_MEMORY.value:
        return "out_of_memory"
    return "never"


def backoff_s(attempt: int) -> float:
    return float(min(300, 5 * 2 ** max(0, attempt - 1)))


def worker_identity(name: str) -> str:
    """``<name>@<host>:<pid>``: the host and pid are those of the containers' owner label (runtime.LABEL_OWNER). In a
    container the host is its container and start (orchestrator/owner.py), so that the replicas of one compose
    service (same name, same host name, same pid) hold distinct leases."""
    return f"{name}@{owner.tag()}"


# -- the broker ------------------------------------------------------------------------------------------------------
def celery_app(broker_url: str):
    """The Celery app of ``broker_url``, with the delivery settings of the module docstring."""
    from celery import Celery

    app = Celery("cortexbox", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,  # acknowledged when the job ended, so a dead worker's job is delivered again
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,  # a worker holds one message: a busy worker never sits on queued jobs
        task_ignore_result=True,  # results live in the registry
        task_default_queue=QUEUE,
        task_serializer="json",
        accept_content=["json"],
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT_S},
        broker_connection_retry_on_startup=True,
        broker_heartbeat=30,  # AMQP heartbeats (RabbitMQ); Redis needs none
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_publish_retry=True,
    )
    app.task(name=TASK, bind=True, max_retries=None)(_score_task)
    from cortexbox.orchestrator.community import tasks as submission_tasks  # a submission attempt: its own job

    app.task(name=submission_tasks.TASK, bind=True, max_retries=None)(submission_tasks.celery_task)
    return app


def broker_app():
    """The configured broker's app, or None: no ``$CORTEXBOX_BROKER_URL``, jobs run in process."""
    from cortexbox.benchmarks.settings import settings

    url = settings().broker_url
    return celery_app(url) if url else None


def publish(app, registry: Registry, job_id: int, countdown: float | None = None) -> str:
    """Sends the job's id to the broker and records the message id."""
    task_id = f"cortexbox-job-{job_id}-{uuid.uuid4().hex[:12]}"
    try:
        app.send_task(TASK, args=[job_id], task_id=task_id, queue=QUEUE, countdown=countdown)
    except Exception as e:  # noqa: BLE001 - kombu's OperationalError and socket errors alike
        raise UserError(f"the broker did not take job {job_id}: {type(e).__name__}: {e}",
                        "is it running? check $CORTEXBOX_BROKER_URL (`cortexbox settings`)") from None
    _update(registry, job_id, task_id=task_id)
    return task_id


def dispatch_queued(app, registry: Registry) -> list[int]:
    """Publishes every queued job that has no message yet (e.g. those an ingestion or `benchmarks sync` queued)."""
    with registry.session() as s:
        ids = list(s.exec(select(ScoreJob.id).where(ScoreJob.status == "queued", ScoreJob.task_id == None)  # noqa: E711
                          .order_by(ScoreJob.id)))
    for job_id in ids:
        publish(app, registry, job_id)
    return ids


# -- jobs in the registry --------------------------------------------------------------------------------------------
def _update(registry: Registry, job_id: int, **fields: Any) -> None:
    with registry.session() as s:
        s.exec(update(ScoreJob).where(ScoreJob.id == job_id).values(**fields))
        s.commit()


def job_row(registry: Registry, job_id: int) -> tuple[ScoreJob, Model, Benchmark] | None:
    with registry.session() as s:
        return s.exec(select(ScoreJob, Model, Benchmark).where(
            ScoreJob.id == job_id, ScoreJob.model_id == Model.id, ScoreJob.benchmark_id == Benchmark.id)).first()


def find_model(registry: Registry, ref: str) -> Model:
    """A registered model build by digest, image reference or name (its newest build)."""
    models = registry.models()
    for match in (lambda m: m.digest == ref, lambda m: m.image_ref == ref, lambda m: m.name == ref):
        found = [m for m in models if match(m)]
        if found:
            return found[-1]
    raise UserError(f"no registered model {ref!r}", "register the image first: `cortexbox models add IMAGE`")


def enqueue(registry: Registry, model_ref: str, benchmark: str, app=None) -> ScoreJob:
    """The job of (model build, the benchmark's current version), made once: a job queued, running or succeeded
    is returned as it is; a failed or cancelled one is queued again. Published to ``app``'s broker when given."""
    from sqlalchemy.exc import IntegrityError

    model = find_model(registry, model_ref)
    bench = versions.resolve_benchmark(benchmark, registry)
    row = versions.register_benchmark(bench, registry=registry, exclude_models=lambda m: m.id == model.id)
    fresh = False
    with registry.session() as s:
        job = s.exec(select(ScoreJob).where(ScoreJob.model_id == model.id, ScoreJob.benchmark_id == row.id)).first()
        if job is None:
            job = ScoreJob(model_id=model.id, benchmark_id=row.id)
            s.add(job)
            try:
                s.commit()
                fresh = True
            except IntegrityError:  # another process made it at the same moment
                s.rollback()
                job = s.exec(select(ScoreJob).where(ScoreJob.model_id == model.id, ScoreJob.benchmark_id == row.id)).one()
        elif job.status in ("failed", "cancelled"):
            job.status, job.cancel_requested, job.attempts, job.task_id = "queued", False, 0, None
            job.worker = job.heartbeat_at = job.failure_class = job.error = None
            s.add(job)
            s.commit()
            fresh = True
        s.refresh(job)
    if app is not None and (fresh or (job.status == "queued" and job.task_id is None)):
        publish(app, registry, job.id)
        s_job = job_row(registry, job.id)
        job = s_job[0] if s_job else job
    return job


def claim(registry: Registry, job_id: int, worker: str, lease_s: float) -> bool:
    """Takes the job for ``worker`` if it is queued, or running under a lease older than ``lease_s``: one
    conditional UPDATE, so of two workers delivered the same job exactly one gets it."""
    now = utcnow()
    stale = now - timedelta(seconds=lease_s)
    with registry.session() as s:
        result = s.exec(update(ScoreJob).where(
            ScoreJob.id == job_id, ScoreJob.cancel_requested == False,  # noqa: E712
            or_(ScoreJob.status == "queued",
                and_(ScoreJob.status == "running", or_(ScoreJob.heartbeat_at == None, ScoreJob.heartbeat_at < stale))),  # noqa: E711
        ).values(status="running", worker=worker, heartbeat_at=now, started_at=now, finished_at=None, run_id=None,
                 attempts=ScoreJob.attempts + 1, failure_class=None, error=None))  # run_id: this attempt's, once made
        s.commit()
        return result.rowcount == 1


class Lease(threading.Thread):
    """Renews the worker's lease on its job every ``heartbeat_s`` and watches the job's cancel flag; on cancel it
    kills this process's model containers (the worker runs one job at a time). It also pings the worker's Docker
    engine every round: an engine that stopped answering during the job (``engine_lost``: restarted, crashed)
    explains a container that died with it, which is then not the model's failure (`run_job`)."""

    def __init__(self, registry: Registry, job_id: int, worker: str, heartbeat_s: float, table=ScoreJob):
        super().__init__(name=f"cortexbox-lease-{job_id}", daemon=True)
        self.registry, self.job_id, self.worker, self.heartbeat_s = registry, job_id, worker, heartbeat_s
        self.table = table  # ScoreJob, or a submission's job (community/tasks.py): the same lease columns
        self.cancelled = False
        self.engine_lost = False
        self._stop_event = threading.Event()

    def run(self) -> None:
        last = time.monotonic()
        while not self._stop_event.wait(CANCEL_POLL_S):
            if not self.engine_lost and not engine_answers():
                self.engine_lost = True
                logger.warning("job %s: the Docker engine stopped answering during the job", self.job_id)
            try:
                if time.monotonic() - last >= self.heartbeat_s:
                    _beat(self.registry, self.job_id, self.worker, self.table)
                    last = time.monotonic()
                if not self.cancelled:
                    self.cancelled = _cancel_requested(self.registry, self.job_id, self.table)
                if self.cancelled:  # every round: a container that starts after the cancel is killed too
                    kill_own_containers()
            except Exception:  # noqa: BLE001 - a registry hiccup must not end the job; the next beat tries again
                logger.warning("lease of job %s: heartbeat failed", self.job_id, exc_info=True)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)


def engine_answers() -> bool:
    """Whether this worker's Docker engine (``DOCKER_HOST``, set by `bind_engine`) answers a ping now."""
    try:
        import docker

        client = docker.from_env(timeout=10)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - refused, reset, timed out: not answering
        return False


def _beat(registry: Registry, job_id: int, worker: str, table=ScoreJob) -> None:
    with registry.session() as s:
        s.exec(update(table).where(table.id == job_id, table.worker == worker, table.status == "running")
               .values(heartbeat_at=utcnow()))
        s.commit()


def _cancel_requested(registry: Registry, job_id: int, table=ScoreJob) -> bool:
    with registry.session() as s:
        return bool(s.exec(select(table.cancel_requested).where(table.id == job_id)).first())


def kill_own_containers() -> int:
    """Kills the model containers this process started (their owner label), on its engine."""
    from cortexbox.orchestrator.runtime import LABEL_OWNER, _owner_tag, docker_client

    killed = 0
    for container in docker_client().containers.list(filters={"label": f"{LABEL_OWNER}={_owner_tag()}"}):
        try:
            container.kill()
            killed += 1
        except Exception:  # noqa: BLE001 - gone already
            pass
    return killed


def remove_own_containers() -> int:
    """Removes every container of this process (running or not) once its job ended: a removal that failed while the
    engine was away (a restart) would otherwise leave it, since no reaper removes a live process's containers."""
    from cortexbox.orchestrator.runtime import LABEL_OWNER, _owner_tag, docker_client

    removed = 0
    for container in docker_client().containers.list(all=True, filters={"label": f"{LABEL_OWNER}={_owner_tag()}"}):
        try:
            container.remove(force=True)
            removed += 1
        except Exception:  # noqa: BLE001 - gone already
            pass
    return removed


def request_cancel(registry: Registry, job_id: int, app=None) -> str:
    """Cancels a job: a queued one ends ``cancelled`` at once (its message is revoked and skipped when delivered);
    a running one is flagged, and its worker kills its container within about a second. Returns the job's status."""
    row = job_row(registry, job_id)
    if row is None:
        raise UserError(f"no job {job_id}", "`cortexbox queue` lists the jobs")
    job = row[0]
    if job.status in FINISHED:
        return job.status
    with registry.session() as s:
        s.exec(update(ScoreJob).where(ScoreJob.id == job_id, ScoreJob.status == "queued")
               .values(status="cancelled", cancel_requested=True, finished_at=utcnow(), failure_class="cancelled",
                       error="cancelled before it started"))
        s.exec(update(ScoreJob).where(ScoreJob.id == job_id, ScoreJob.status == "running").values(cancel_requested=True))
        s.commit()
    if app is not None and job.task_id:
        try:
            app.control.revoke(job.task_id)
        except Exception:  # noqa: BLE001 - the registry's flag decides; a revoke only saves a delivery
            logger.warning("could not revoke %s", job.task_id, exc_info=True)
    return job_row(registry, job_id)[0].status


# -- a worker --------------------------------------------------------------------------------------------------------
class WorkerState:
    """What the task needs of the worker process it runs in (set by `run_worker`)."""

    name = "worker"
    lease_s = LEASE_S
    app = None
    #: The community database (`cortexbox worker --community-url`; None: community.db in the cortexbox home).
    community_url: str | None = None

    @classmethod
    def identity(cls) -> str:
        return worker_identity(cls.name)


def run_job(registry: Registry, job_id: int, *, worker: str | None = None, lease_s: float | None = None,
            events=None) -> dict[str, Any]:
    """Claims and scores one job, keeping its lease; what a delivery of the job's message does. Returns the result
    record (scoring/queue.py), with ``retry`` set when the failure is transient and attempts are left."""
    worker = worker or WorkerState.identity()
    lease_s = lease_s or WorkerState.lease_s
    row = job_row(registry, job_id)
    if row is None:
        return {"job_id": job_id, "status": "missing"}
    job, model, bench = row
    base = {"job_id": job_id, "model": model.name, "benchmark": bench.identifier, "version": bench.version}
    if job.status in FINISHED:
        return base | {"status": job.status, "duplicate": True}
    latest = max(b.version for b in registry.benchmark_versions(bench.identifier))
    if bench.version != latest:
        _update(registry, job_id, status="superseded", finished_at=utcnow())
        return base | {"status": "superseded", "by_version": latest}
    if not claim(registry, job_id, worker, lease_s):
        current = job_row(registry, job_id)[0]
        if current.cancel_requested and current.status == "queued":
            _update(registry, job_id, status="cancelled", finished_at=utcnow(), failure_class="cancelled")
            return base | {"status": "cancelled"}
        return base | {"status": "held", "worker": current.worker}
    lease = Lease(registry, job_id, worker, heartbeat_s=max(0.5, lease_s / 6))
    lease.start()
    try:
        # A model in our image registry is run by its reference by digest: a worker on another engine pulls it.
        image = model.image_ref if image_registry.is_digest_reference(model.image_ref) else model.digest
        request = ScoreRequest(benchmark=bench.identifier, image=image, database_url=registry.url, job_id=job_id)
        result = queue_module.execute(request, registry=registry, events=events, queued=row, claimed=True)
    finally:
        lease.stop()
        try:
            if remove_own_containers():
                logger.warning("job %s: removed containers its run left", job_id)
        except Exception:  # noqa: BLE001 - the engine is away: the next job's end, or a reaper, removes them
            logger.warning("job %s: could not check for leftover containers", job_id, exc_info=True)
    result = base | result
    if result["status"] == "failed" and not result.get("run_id"):  # a failure's run is the one linked to the job
        result["run_id"] = job_row(registry, job_id)[0].run_id
    if lease.cancelled and result["status"] == "failed":
        if result.get("run_id"):  # the run first: a job that reads cancelled has a run that says so
            run = registry.run(result["run_id"])
            registry.update_run(run, failure_class=FailureClass.CANCELLED.value, error="cancelled while it ran")
        _update(registry, job_id, status="cancelled", failure_class="cancelled", error="cancelled while it ran",
                finished_at=utcnow())
        return result | {"status": "cancelled"}
    if result["status"] == "failed":  # execute left a claimed job running: its one end is written here
        failure = Failure(**result["failure"])
        # The engine away during the job or now: a dead container, or "cannot reach the Docker engine", is the
        # platform's, not the model's or the user's.
        if (failure.kind in ("internal", "user") or failure.failure_class in ENGINE_ARTEFACTS) and (
                lease.engine_lost or not engine_answers()):
            failure = Failure("internal", FailureClass.LOST.value, f"the Docker engine went away during the run "
                              f"({failure.failure_class or 'error'}: {failure.error})"[:4000], failure.log_tail, transient=True)
            result |= {"failure": failure.to_dict(), "error": f"{failure.failure_class}: {failure.error}"}
            if result.get("run_id"):
                registry.update_run(registry.run(result["run_id"]), failure_class=failure.failure_class, error=failure.error)
        policy = retry_policy(failure)
        attempts = job_row(registry, job_id)[0].attempts
        result["retry_policy"] = policy
        if policy == "transient" and attempts < MAX_ATTEMPTS:
            _update(registry, job_id, status="queued", worker=None, task_id=None, failure_class=failure.failure_class,
                    error=failure.error)
            result["retry"] = backoff_s(attempts)
        else:
            _update(registry, job_id, status="failed", failure_class=failure.failure_class, error=failure.error,
                    finished_at=utcnow())
    return result


def _score_task(task, job_id: int) -> dict[str, Any]:
    registry = Registry()
    result = run_job(registry, int(job_id))
    logger.info("job %s: %s", job_id, result.get("status"))
    if "retry" in result and WorkerState.app is not None:
        publish(WorkerState.app, registry, int(job_id), countdown=result["retry"])
    return {k: v for k, v in result.items() if k != "failure"}


def recover(registry: Registry, app, lease_s: float) -> list[int]:
    """Requeues the running jobs whose lease expired (their worker is gone: ``lost``, transient), publishes them
    again, closes the runs of dead processes on this host and removes their containers from this engine."""
    from cortexbox.orchestrator.run_events import close_lost_runs
    from cortexbox.orchestrator.runtime import docker_client, reap_orphans

    stale = utcnow() - timedelta(seconds=lease_s)
    with registry.session() as s:
        expired = list(s.exec(select(ScoreJob).where(ScoreJob.status == "running", ScoreJob.heartbeat_at < stale)))
    requeued = []
    for job in expired:
        final = job.attempts >= MAX_ATTEMPTS
        values = ({"status": "failed", "failure_class": FailureClass.LOST.value, "finished_at": utcnow(),
                   "error": f"its worker {job.worker} was lost {job.attempts} time(s)"} if final else
                  {"status": "queued", "task_id": None, "failure_class": FailureClass.LOST.value,
                   "error": f"worker {job.worker} lost; requeued"})
        with registry.session() as s:
            taken = s.exec(update(ScoreJob).where(ScoreJob.id == job.id, ScoreJob.status == "running",
                                                  ScoreJob.heartbeat_at == job.heartbeat_at).values(**values)).rowcount
            s.commit()
        if taken and not final:
            requeued.append(job.id)
            logger.warning("job %s: worker %s lost; requeued", job.id, job.worker)
    try:
        client = docker_client()
    except Exception:  # noqa: BLE001 - an engine hiccup: the next round reaps
        logger.warning("could not reach the Docker engine to reap orphaned containers", exc_info=True)
        client = None
    close_lost_runs(registry, client)  # with the engine: also the runs of dead worker containers on it
    if client is not None:
        try:
            reap_orphans(client)
        except Exception:  # noqa: BLE001 - an engine hiccup: the next round reaps
            logger.warning("could not reap orphaned containers", exc_info=True)
    for job_id in requeued:
        if app is not None:
            publish(app, registry, job_id)
    return requeued


def _recovery_loop(registry: Registry, app, lease_s: float, stop: threading.Event) -> None:
    while not stop.wait(max(1.0, lease_s / 3)):
        try:
            recover(registry, app, lease_s)
        except Exception:  # noqa: BLE001 - the next round tries again
            logger.warning("lease recovery failed", exc_info=True)
        _recover_submissions(app, lease_s)


def _recover_submissions(app, lease_s: float) -> None:
    """The same recovery for the community registry's submission jobs (community/tasks.py)."""
    from cortexbox.orchestrator.community import tasks as submission_tasks

    try:
        community = submission_tasks.community_registry(WorkerState.community_url)
        if community is not None:
            try:
                submission_tasks.recover(community, app, lease_s)
            finally:
                community.engine.dispose()
    except Exception:  # noqa: BLE001 - the next round tries again
        logger.warning("lease recovery of submissions failed", exc_info=True)


def bind_engine(engine: str | None) -> None:
    """Makes every Docker client of this process use ``engine``: docker-py reads its own ``DOCKER_HOST``, so the
    process starts itself again with it set (only settings.py reads our environment; handing a child a changed
    copy is not reading it)."""
    if not engine:
        return
    env = dict(os.environ)
    if env.get("DOCKER_HOST") != engine:
        env["DOCKER_HOST"] = engine
        os.execve(sys.executable, [sys.executable, "-m", "cortexbox.orchestrator.cli", *sys.argv[1:]], env)


def run_worker(broker_url: str, *, name: str, engine: str | None = None, lease_s: float = LEASE_S,
               loglevel: str = "WARNING", community_url: str | None = None) -> None:
    """`cortexbox worker` with a broker: binds this process to one Docker engine, reaps what dead workers left on
    it, requeues expired leases, publishes queued jobs that have no message, then consumes jobs one at a time: the
    registry's scoring jobs and the submissions of the community registry (``community_url``, default community.db
    in the cortexbox home; a task names its own, community/tasks.py)."""
    bind_engine(engine)
    from cortexbox.orchestrator.runtime import docker_client

    docker_client().ping()  # no engine: a one-line error now, not a failed job per delivery
    app = celery_app(broker_url)
    WorkerState.name, WorkerState.lease_s, WorkerState.app = name, lease_s, app
    WorkerState.community_url = community_url
    registry = Registry()
    recover(registry, app, lease_s)
    dispatch_queued(app, registry)
    _recover_submissions(app, lease_s)
    stop = threading.Event()
    threading.Thread(target=_recovery_loop, args=(registry, app, lease_s, stop), name="cortexbox-recovery", daemon=True).start()
    try:
        app.Worker(hostname=f"{name}@{owner.namespace()}", pool="threads", concurrency=1, queues=[QUEUE],
                   loglevel=loglevel, without_gossip=True, without_mingle=True).start()
    finally:
        stop.set()


def queue_report(registry: Registry, app=None, timeout_s: float = 1.0) -> dict[str, Any]:
    """What `cortexbox queue` and ``/api/queue`` show: jobs by status and by worker (from the registry), and, with a
    broker, its queue length and the workers that answer a ping."""
    with registry.session() as s:
        rows = list(s.exec(select(ScoreJob, Model, Benchmark).where(
            ScoreJob.model_id == Model.id, ScoreJob.benchmark_id == Benchmark.id).order_by(ScoreJob.id)))
    now = utcnow()
    counts: dict[str, int] = {}
    by_worker: dict[str, list[dict[str, Any]]] = {}
    jobs = []
    for job, model, bench in rows:
        counts[job.status] = counts.get(job.status, 0) + 1
        beat = job.heartbeat_at
        if beat is not None and beat.tzinfo is None:
            beat = beat.replace(tzinfo=now.tzinfo)
        item = {"job_id": job.id, "model": model.name, "benchmark": bench.identifier, "version": bench.version,
                "status": job.status, "worker": job.worker, "attempts": job.attempts, "run_id": job.run_id,
                "failure_class": job.failure_class, "error": job.error,
                "heartbeat_age_s": None if beat is None else round((now - beat).total_seconds(), 1)}
        jobs.append(item)
        if job.status in ("queued", "running", "failed") and (job.worker or job.status != "queued"):
            by_worker.setdefault(job.worker or "-", []).append(item)
    report: dict[str, Any] = {"broker": None, "counts": counts, "workers": by_worker,
                              "jobs": [j for j in jobs if j["status"] in ("queued", "running", "failed")]}
    if app is not None:
        report["broker"] = {"queue": QUEUE, "queue_length": None, "workers_alive": []}
        try:
            with app.connection_for_write() as conn:
                report["broker"]["queue_length"] = conn.default_channel.queue_declare(QUEUE, passive=True).message_count
        except Exception as e:  # noqa: BLE001 - no broker: said, not raised
            if "NOT_FOUND" in str(e):  # Redis drops an empty queue's list; an undeclared queue holds nothing
                report["broker"]["queue_length"] = 0
            else:
                report["broker"]["error"] = f"{type(e).__name__}: {e}"
        try:
            replies = app.control.inspect(timeout=timeout_s).ping() or {}
            report["broker"]["workers_alive"] = sorted(replies)
        except Exception as e:  # noqa: BLE001
            report["broker"]["error"] = f"{type(e).__name__}: {e}"
    return report


def dispatch_queued_results(app, registry: Registry) -> list[dict[str, Any]]:
    """`dispatch_queued` as result records (what an ingestion prints for the jobs it queued)."""
    results = []
    for job_id in dispatch_queued(app, registry):
        job, model, bench = job_row(registry, job_id)
        results.append({"job_id": job_id, "model": model.name, "benchmark": bench.identifier, "version": bench.version,
                        "status": "dispatched"})
    return results


def cancel_run(registry: Registry, run_id: int, app=None) -> str:
    """Cancels a run: through its job when a worker scores it; a run of another cortexbox process on this host
    (`cortexbox score`) gets SIGTERM, which that process unwinds like Ctrl-C (its container removed, the run
    stored as cancelled)."""
    import signal

    from cortexbox.orchestrator.run_events import owner_gone

    run = registry.run(run_id)
    if run is None:
        raise UserError(f"no run {run_id}", "`cortexbox runs` lists the recent runs")
    if run.status != "running":
        return run.status
    with registry.session() as s:
        job = s.exec(select(ScoreJob).where(ScoreJob.run_id == run_id)).first()
    if job is not None:
        return request_cancel(registry, job.id, app)
    first = registry.run_events(run_id, -1, 1)
    scorer = (first[0].data or {}) if first and first[0].kind == "status" else {}
    if scorer.get("host") != owner.namespace() or not isinstance(scorer.get("pid"), int) or owner_gone(scorer):
        raise UserError(f"run {run_id} is not scored by a worker or a process on this host",
                        "cancel it on the host that scores it, or `cortexbox gc` if its process is gone")
    os.kill(scorer["pid"], signal.SIGTERM)
    return "cancelling"
