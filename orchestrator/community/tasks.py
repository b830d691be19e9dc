"""A submission scored by issue 12's Celery workers (orchestrator/scoring/workers.py), or in process without a broker.

Issue 12's ScoreJob is one per (model build, benchmark version): it would merge two teams' identical images and
never rescore. A submission has jobs of its own, one per (submission, attempt) (``SubmissionJob``, unique; attempt 0
is its scoring, 1, 2, ... an organiser's rescoring from the stored digest), carried by a second task of the same
Celery app, consumed by the same worker process from the same queue, under the same discipline:

* the broker carries (submission, attempt, the community database's URL with its password masked); the worker
  opens the community registry from it (its own ``--community-url`` when the masked forms agree), so the web app
  and its workers agree on the database by construction and no secret travels through the broker;
* a delivery first *claims* the job with one conditional UPDATE (queued, or running under an expired lease) and
  keeps a lease on it (workers.Lease); a second delivery of a held or finished job does nothing;
* each benchmark's row (``SubmissionRun``, unique on (submission, benchmark, attempt)) is made once: a delivery that
  takes over a lost one keeps the rows that ended (a score, or the model's own failure) and scores again only the
  ones the platform lost, so one (submission, attempt, benchmark) never gets two scores;
* a submission the web app staged (with a broker it never touches an engine) has its archive loaded into the
  worker's own engine and pinned first (``install``; reused by a redelivery);
* retries by failure class (workers.retry_policy): a platform failure (worker lost, engine restarted or away, our
  own code) is retried with backoff up to workers.MAX_ATTEMPTS deliveries and never costs quota (once out of
  retries the submission ends ``platform_failed``, refunded); a model failure is final and counts.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any, Callable

from sqlalchemy import and_, or_, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from cortexbox.orchestrator.community import competitions
from cortexbox.orchestrator.community.competitions import PLATFORM_FAILURES
from cortexbox.orchestrator.errors import FailureClass, ModelFailure, UserError
from cortexbox.registry import Registry, Run, Score
from cortexbox.registry.models import Competition, Submission, SubmissionJob, SubmissionRun, utcnow

logger = logging.getLogger(__name__)

#: The broker's task that scores one submission attempt (same app and queue as workers.TASK).
TASK = "cortexbox.score_submission"
FINISHED = ("succeeded", "failed", "platform_failed", "rescored")


# -- the community database's URL through the broker ---------------------------------------------------------------
def masked(url: str) -> str:
    """The URL as the broker carries it: its password, if any, masked."""
    return make_url(url).render_as_string(hide_password=True)


def resolve(ref: str, configured: str | None) -> str:
    """The community database a message names: the worker's own (``configured``) when the masked forms agree,
    else the message's URL if it carries no masked password. A UserError if the worker cannot open it."""
    if configured and masked(configured) == ref:
        return configured
    if make_url(ref).password is None:
        return ref
    raise UserError(f"a submission task names the community database {ref}, not this worker's",
                    "start the worker with `--community-url` of the web app's community database")


# -- jobs ------------------------------------------------------------------------------------------------------------
def job_of(registry: Registry, submission_id: int, attempt: int) -> SubmissionJob | None:
    with registry.session() as s:
        return s.exec(select(SubmissionJob).where(SubmissionJob.submission_id == submission_id,
                                                  SubmissionJob.attempt == attempt)).first()


def _update_job(registry: Registry, job_id: int, **fields: Any) -> None:
    with registry.session() as s:
        s.exec(update(SubmissionJob).where(SubmissionJob.id == job_id).values(**fields))
        s.commit()


def _update(registry: Registry, table, row_id: int, **fields: Any) -> None:
    with registry.session() as s:
        row = s.get(table, row_id)
        for key, value in fields.items():
            setattr(row, key, value)
        s.add(row)
        s.commit()


def enqueue(registry: Registry, submission_id: int, attempt: int = 0, app=None) -> SubmissionJob:
    """The job of (submission, attempt), made once (asking again returns it), published to ``app``'s broker when
    given and not published yet."""
    job = job_of(registry, submission_id, attempt)
    if job is None:
        with registry.session() as s:
            s.add(SubmissionJob(submission_id=submission_id, attempt=attempt))
            try:
                s.commit()
            except IntegrityError:  # another process made it at the same moment
                s.rollback()
        job = job_of(registry, submission_id, attempt)
    if app is not None and job.status == "queued" and job.task_id is None:
        publish(app, registry, job)
    return job


def publish(app, registry: Registry, job: SubmissionJob, countdown: float | None = None) -> str:
    """Sends (submission, attempt, the masked community URL) to the broker and records the message id."""
    task_id = f"cortexbox-submission-{job.submission_id}-{job.attempt}-{uuid.uuid4().hex[:12]}"
    from cortexbox.orchestrator.scoring.workers import QUEUE

    try:
        app.send_task(TASK, args=[job.submission_id, job.attempt, masked(registry.url)], task_id=task_id, queue=QUEUE,
                      countdown=countdown)
    except Exception as e:  # noqa: BLE001 - kombu's OperationalError and socket errors alike
        raise UserError(f"the broker did not take submission {job.submission_id}: {type(e).__name__}",
                        "is it running? check $CORTEXBOX_BROKER_URL (`cortexbox settings`)") from None
    _update_job(registry, job.id, task_id=task_id)
    return task_id


def claim(registry: Registry, job_id: int, worker: str, lease_s: float) -> bool:
    """Takes the job for ``worker`` if it is queued, or running under a lease older than ``lease_s``: one
    conditional UPDATE, so of two deliveries exactly one gets it."""
    now = utcnow()
    stale = now - timedelta(seconds=lease_s)
    with registry.session() as s:
        result = s.exec(update(SubmissionJob).where(
            SubmissionJob.id == job_id,
            or_(SubmissionJob.status == "queued",
                and_(SubmissionJob.status == "running",
                     or_(SubmissionJob.heartbeat_at == None, SubmissionJob.heartbeat_at < stale))),  # noqa: E711
        ).values(status="running", worker=worker, heartbeat_at=now, started_at=now, finished_at=None,
                 attempts=SubmissionJob.attempts + 1, failure_class=None, error=None))
        s.commit()
        return result.rowcount == 1


# -- scoring one attempt ---------------------------------------------------------------------------------------------
class _LinkingRegistry:
    """The community registry, linking each run ``score_model`` starts to its submission's row at once (so the
    submitter can follow it live from its first event)."""

    def __init__(self, registry: Registry, submission_run_id: int):
        self._registry = registry
        self._id = submission_run_id

    def start_run(self, *args, **kwargs):
        run = self._registry.start_run(*args, **kwargs)
        _update(self._registry, SubmissionRun, self._id, run_id=run.id, status="running")
        return run

    def __getattr__(self, name: str):
        return getattr(self._registry, name)


def _take_run(registry: Registry, sub: Submission, benchmark: str, attempt: int, private: bool) -> tuple[SubmissionRun, bool]:
    """(the benchmark's row, whether to score it): made once per (submission, benchmark, attempt). Of a row an
    earlier delivery left, one that ended (a score, or the model's own failure) is kept as it is; one the platform
    lost (still running, or failed for a platform reason) is scored again. The caller holds the job's claim."""
    with registry.session() as s:
        s.add(SubmissionRun(submission_id=sub.id, benchmark=benchmark, attempt=attempt, private=private, status="running"))
        try:
            s.commit()
        except IntegrityError:
            s.rollback()
        row = s.exec(select(SubmissionRun).where(SubmissionRun.submission_id == sub.id, SubmissionRun.benchmark == benchmark,
                                                 SubmissionRun.attempt == attempt)).one()
        scored = row.run_id is not None and s.exec(select(Score.id).where(Score.run_id == row.run_id)).first() is not None
        old_run = s.get(Run, row.run_id) if row.run_id is not None else None
    if scored:  # its score is stored (the delivery died before it wrote its row's end)
        if row.status != "succeeded":
            _update(registry, SubmissionRun, row.id, status="succeeded", failure_class=None)
            row.status = "succeeded"
        return row, False
    if row.status == "failed" and row.failure_class not in PLATFORM_FAILURES:
        return row, False
    if row.status == "running" and row.run_id is None and row.failure_class is None:
        return row, True  # just made (or made by a delivery that died before its run existed)
    if old_run is not None and old_run.status == "running":  # a lost delivery's run: it will never end by itself
        registry.update_run(old_run, status="failed", failure_class=FailureClass.LOST.value,
                            error="its worker was lost; the submission is scored again")
    _update(registry, SubmissionRun, row.id, status="running", failure_class=None, run_id=None)
    return row, True


def score_attempt(registry: Registry, submission_id: int, attempt: int, *, score: Callable[..., Any] | None = None,
                  cache_dir: str | None = None, engine_lost: Callable[[], bool] = lambda: False) -> dict[str, Any]:
    """Scores the submission on every benchmark of its competition (``attempt`` > 0: without the activation cache),
    writing the community registry: one SubmissionRun per benchmark, linked to its run at once. Returns
    ``{"model_failure": class or None, "platform_failure": class or None}``. ``engine_lost``: whether the Docker
    engine went away during the run (a container that died with it is then the platform's failure, not the model's)."""
    from cortexbox.orchestrator.community.seams import ScoreRequest, score_model
    from cortexbox.orchestrator.scoring.workers import ENGINE_ARTEFACTS

    score = score or score_model
    with registry.session() as s:
        sub = s.get(Submission, submission_id)
        comp = s.get(Competition, sub.competition_id)
    model_failure, platform_failure = None, None
    for benchmark, private in competitions.benchmarks(comp):
        sr, todo = _take_run(registry, sub, benchmark, attempt, private)
        if not todo:
            if sr.status == "failed":
                model_failure = model_failure or sr.failure_class
            continue
        request = ScoreRequest(benchmark=benchmark, image=sub.image_ref, use_cache=attempt == 0,
                               database_url=registry.url, cache_dir=cache_dir)
        try:
            score(request, registry=_LinkingRegistry(registry, sr.id), events=None)
            _update(registry, SubmissionRun, sr.id, status="succeeded")
            continue
        except ModelFailure as e:
            failure = e.failure.value
        except UserError as e:  # the image vanished from the engine, the data is missing: ours
            logger.error("submission %s on %s: %s", sub.id, benchmark, e)
            failure = "internal"
        except Exception:  # noqa: BLE001 - our code or the engine: a platform failure
            logger.exception("submission %s on %s failed on the platform's side", sub.id, benchmark)
            failure = "internal"
        if failure in ENGINE_ARTEFACTS and engine_lost():  # the container died with its engine
            failure = FailureClass.LOST.value
        with registry.session() as s:
            run_id = s.get(SubmissionRun, sr.id).run_id
            run = s.get(Run, run_id) if run_id is not None else None
        if run is not None and (run.status == "running" or run.failure_class is None  # ours, not the model's
                                or (failure == FailureClass.LOST.value and run.failure_class != failure)):
            registry.update_run(run, status="failed", failure_class=failure, error=run.error or "the platform failed")
        _update(registry, SubmissionRun, sr.id, status="failed", failure_class=failure)
        if failure in PLATFORM_FAILURES:
            platform_failure = platform_failure or failure
        else:
            model_failure = model_failure or failure
    return {"model_failure": model_failure, "platform_failure": platform_failure}


def run(registry: Registry, submission_id: int, attempt: int, *, worker: str, lease_s: float,
        score: Callable[..., Any] | None = None, cache_dir: str | None = None, retries: bool = True,
        own_containers: bool = True) -> dict[str, Any]:
    """Claims and scores one submission attempt, keeping its lease (what a delivery of its message does); returns
    ``status`` (the job's: succeeded | failed | platform_failed | queued again, or missing | held | a finished
    status with ``duplicate``) and ``retry`` (seconds) when a platform failure is retried. ``retries`` False
    (in process, no broker to deliver it again): a platform failure ends the submission ``platform_failed`` at
    once. ``own_containers``: the process scores nothing else, so its containers are removed when the job ends."""
    from cortexbox.orchestrator.scoring import workers

    job = job_of(registry, submission_id, attempt)
    base = {"submission": submission_id, "attempt": attempt}
    if job is None:
        return base | {"status": "missing"}
    if job.status in FINISHED:
        logger.warning("submission %s attempt %s: %s already; this delivery does nothing", submission_id, attempt, job.status)
        return base | {"status": job.status, "duplicate": True}
    if not claim(registry, job.id, worker, lease_s):
        current = job_of(registry, submission_id, attempt)
        logger.warning("submission %s attempt %s: held by %s (%s); this delivery does nothing", submission_id, attempt,
                       current.worker, current.status)
        return base | {"status": "held" if current.status == "running" else current.status, "worker": current.worker,
                       "duplicate": True}
    if attempt == 0:
        _update(registry, Submission, submission_id, status="running")
    lease = workers.Lease(registry, job.id, worker, heartbeat_s=max(0.5, lease_s / 6), table=SubmissionJob)
    lease.start()
    try:
        outcome = install(registry, submission_id, job.id) or score_attempt(
            registry, submission_id, attempt, score=score, cache_dir=cache_dir,
            engine_lost=lambda: lease.engine_lost or not workers.engine_answers())
    finally:
        lease.stop()
        if own_containers:
            try:
                workers.remove_own_containers()
            except Exception:  # noqa: BLE001 - the engine is away: a reaper removes them
                logger.warning("submission %s: could not check for leftover containers", submission_id, exc_info=True)
    deliveries = job_of(registry, submission_id, attempt).attempts
    model, platform = outcome["model_failure"], outcome["platform_failure"]
    if model is None and platform is not None and retries and deliveries < workers.MAX_ATTEMPTS:
        _update_job(registry, job.id, status="queued", worker=None, task_id=None, failure_class=platform,
                    error="a platform failure; retried")
        logger.warning("submission %s attempt %s: platform failure (%s); retried", submission_id, attempt, platform)
        return base | {"status": "queued", "failure_class": platform, "retry": workers.backoff_s(deliveries)}
    return base | finish(registry, job.id, submission_id, attempt, model, platform)


def install(registry: Registry, submission_id: int, job_id: int) -> dict[str, Any] | None:
    """Loads the image of a submission the web app staged (submissions.install: a no-op once its image is recorded);
    None when there is an image to score, else the attempt's outcome: the engine refusing the image is the
    submission's failure (BAD_IMAGE, final, counted), anything else (the engine or image registry away, the archive
    missing from the upload folder) the platform's (retried, refunded). The message goes on the job."""
    from cortexbox.orchestrator.community import submissions
    from cortexbox.orchestrator.community.archive import ArchiveRejected

    try:
        submissions.install(registry, submission_id)
        return None
    except ArchiveRejected as e:
        logger.warning("submission %s: its image was refused: %s", submission_id, e)
        _update_job(registry, job_id, error=f"{e} (hint: {e.hint})"[:1000] if e.hint else str(e)[:1000])
        return {"model_failure": submissions.BAD_IMAGE, "platform_failure": None}
    except Exception as e:  # noqa: BLE001 - the engine, the image registry, the upload folder: ours
        logger.warning("submission %s: its image could not be loaded: %s", submission_id, e, exc_info=not isinstance(e, UserError))
        _update_job(registry, job_id, error=f"loading the image failed: {e}"[:1000])
        return {"model_failure": None, "platform_failure": "engine"}


def finish(registry: Registry, job_id: int, submission_id: int, attempt: int, model: str | None,
           platform: str | None) -> dict[str, Any]:
    """Writes the attempt's end on its job and (attempt 0) its submission: a model failure is final and counts
    against the quota; a platform failure out of retries is refunded (``counts_quota`` False)."""
    if model is None and platform is None:
        status, failure, counts = "succeeded", None, True
    elif model is not None:
        status, failure, counts = "failed", model, True
    else:
        status, failure, counts = "platform_failed", platform, False
    _update_job(registry, job_id, status=status, failure_class=failure, finished_at=utcnow())
    if attempt == 0:
        _update(registry, Submission, submission_id, status=status, failure_class=failure, counts_quota=counts,
                finished_at=utcnow())
        _discard(registry, submission_id)
    return {"status": status, "failure_class": failure}


def _discard(registry: Registry, submission_id: int) -> None:
    """The staged archive of a submission that ended (none once its image was loaded: ``install`` deleted it)."""
    from cortexbox.orchestrator.community.submissions import discard_archive

    try:
        discard_archive(registry, submission_id)
    except OSError:
        logger.warning("submission %s: could not delete its staged archive", submission_id, exc_info=True)


# -- the worker's side -----------------------------------------------------------------------------------------------
def community_registry(url: str | None) -> Registry | None:
    """The worker's community registry (``--community-url``, default community.db in the cortexbox home), or None
    when that default does not exist yet (no submission was ever made there: nothing to recover)."""
    from cortexbox.orchestrator.community import community_url

    if url is None:
        from cortexbox.benchmarks.settings import settings

        if not settings().community_database_url and not (settings().home / "community.db").exists():
            return None
    return Registry(community_url(url))


def recover(registry: Registry, app, lease_s: float) -> list[int]:
    """Requeues (and publishes again) the running submission jobs whose lease expired (their worker is gone: lost, a
    platform failure), ending one out of deliveries ``platform_failed`` (refunded); closes the runs of dead
    processes in the community registry."""
    from cortexbox.orchestrator.run_events import close_lost_runs
    from cortexbox.orchestrator.scoring import workers

    stale = utcnow() - timedelta(seconds=lease_s)
    with registry.session() as s:
        expired = list(s.exec(select(SubmissionJob).where(SubmissionJob.status == "running", SubmissionJob.heartbeat_at < stale)))
    requeued = []
    for job in expired:
        final = job.attempts >= workers.MAX_ATTEMPTS
        values = ({"status": "platform_failed", "failure_class": FailureClass.LOST.value, "finished_at": utcnow(),
                   "error": f"its worker {job.worker} was lost {job.attempts} time(s)"} if final else
                  {"status": "queued", "task_id": None, "failure_class": FailureClass.LOST.value,
                   "error": f"worker {job.worker} lost; requeued"})
        with registry.session() as s:
            taken = s.exec(update(SubmissionJob).where(SubmissionJob.id == job.id, SubmissionJob.status == "running",
                                                       SubmissionJob.heartbeat_at == job.heartbeat_at).values(**values)).rowcount
            s.commit()
        if not taken:
            continue
        logger.warning("submission %s attempt %s: worker %s lost; %s", job.submission_id, job.attempt, job.worker,
                       "out of retries" if final else "requeued")
        if final and job.attempt == 0:
            _update(registry, Submission, job.submission_id, status="platform_failed",
                    failure_class=FailureClass.LOST.value, counts_quota=False, finished_at=utcnow())
            _discard(registry, job.submission_id)
        if not final:
            requeued.append(job.id)
    try:
        from cortexbox.orchestrator.runtime import docker_client

        close_lost_runs(registry, docker_client())
    except Exception:  # noqa: BLE001 - an engine hiccup: the next round closes them
        logger.warning("could not close the lost runs of the community registry", exc_info=True)
    if app is not None:
        dispatch_queued(app, registry)
    return requeued


def dispatch_queued(app, registry: Registry) -> list[int]:
    """Publishes every queued submission job that has no message yet (requeued, or queued while the broker was down)."""
    with registry.session() as s:
        jobs = list(s.exec(select(SubmissionJob).where(SubmissionJob.status == "queued", SubmissionJob.task_id == None)  # noqa: E711
                           .order_by(SubmissionJob.id)))
    for job in jobs:
        publish(app, registry, job)
    return [job.id for job in jobs]


def celery_task(task, submission_id: int, attempt: int, community: str) -> dict[str, Any]:
    """The broker's task: one delivery of (submission, attempt) in a `cortexbox worker`."""
    from cortexbox.orchestrator.scoring.workers import WorkerState

    from cortexbox.benchmarks.settings import settings

    registry = Registry(resolve(community, WorkerState.community_url or settings().community_database_url))
    try:
        result = run(registry, int(submission_id), int(attempt), worker=WorkerState.identity(), lease_s=WorkerState.lease_s)
        logger.info("submission %s attempt %s: %s", submission_id, attempt, result.get("status"))
        if "retry" in result and WorkerState.app is not None:
            publish(WorkerState.app, registry, job_of(registry, int(submission_id), int(attempt)), countdown=result["retry"])
        return result
    finally:
        registry.engine.dispose()
