"""Submissions: a checked archive goes into the engine, is pinned by digest, stored, and scored on every
benchmark of its competition by a queue worker; what a team may see of it.

Where the image is loaded: without a broker (the single-host ``cortexbox web``), in the web process at upload
(``load_into_engine`` and ``pin`` before ``store``). With a broker, the web app never touches an engine (in
docker-compose.yml it has no engine socket: the socket is root on the host, and the web app is what strangers talk
to): it checks the archive, stores the submission with an empty ``image_ref`` and moves the archive into the upload
folder (``$CORTEXBOX_UPLOAD_DIR``, shared with the workers); the worker that takes its job calls ``install``, which
loads the archive into *its* engine under the same rules, pins it, records ``image_ref`` and ``registry_digest``
and only then deletes the archive (a redelivery finds the image recorded, or loaded, and reuses it). An engine
that refuses the image, or loads another config than the archive names, is the submission's own failure
(``BAD_IMAGE``: final, counted, like a model that crashes); an engine or registry that is away is the platform's
(retried, refunded).

Two seams:

* ``pin``: with an image registry configured (``$CORTEXBOX_IMAGE_REGISTRY``), the image is pushed and runs by its
  registry reference ``REGISTRY/REPOSITORY@sha256:...``; without one, by the engine's image id (content-addressed
  too: sha256 of the image config).
* ``SubmissionQueue``: with a broker, a job per (submission, attempt) for issue 12's Celery workers
  (community/tasks.py); without one, a thread of the web process scores it under the same job row. Either way
  ``score_model`` runs once per benchmark, writing into the community registry, so the run events the live pages
  read are the same.
"""

from __future__ import annotations

import logging
import threading
from datetime import timezone
from pathlib import Path
from queue import Queue
from typing import Any, Callable

from sqlmodel import select

from cortexbox.orchestrator.community import competitions
from cortexbox.orchestrator.community.accounts import Caller, Forbidden
from cortexbox.orchestrator.community.archive import ArchiveInfo, ArchiveRejected, load_stream
from cortexbox.orchestrator.community.competitions import NotFound
from cortexbox.orchestrator.errors import UserError
from cortexbox.registry import Registry, Run
from cortexbox.registry.models import Competition, Submission, SubmissionRun, Team

logger = logging.getLogger(__name__)

#: Submitted images get a tag of their own, so the engine's garbage collection keeps them and an operator sees
#: whose they are; the archive's own tags are never loaded.
TAG_REPOSITORY = "cortexbox-submission"


#: A submission whose image the worker's engine refused, or loaded as another config than the archive named: the
#: submitter's own failure (final, counts against the quota), like a model that crashes.
BAD_IMAGE = "bad_image"


class EngineUnavailable(UserError):
    """The engine could not be reached or failed on its side: HTTP 503, nothing stored, no quota used."""


def submission_tag(slug: str, team: str, digest: str) -> str:
    """The engine tag of a team's image in a competition (the same wherever it is loaded)."""
    return f"{TAG_REPOSITORY}/{slug}:{team}-{digest.removeprefix('sha256:')[:12]}"


def upload_dir() -> Path:
    """The folder of uploads (``$CORTEXBOX_UPLOAD_DIR``, default uploads/ in the cortexbox home)."""
    from cortexbox.benchmarks.settings import settings

    return settings().upload_dir


def archive_path(submission: Submission, folder: Path | None = None) -> Path:
    """Where a stored submission's archive waits for a worker (its id and digest: two community databases that
    share a folder never take each other's)."""
    return (folder or upload_dir()) / f"submission-{submission.id}-{submission.digest.removeprefix('sha256:')[:16]}.tar"


def load_into_engine(path: Path, info: ArchiveInfo, tag: str) -> str:
    """Loads a checked archive (without its tags) and tags it; returns the image id, which must be the archive's
    config digest. ArchiveRejected if the engine refuses the archive, EngineUnavailable if the engine fails."""
    import docker.errors

    from cortexbox.orchestrator.runtime import docker_client

    try:
        client = docker_client()
        messages = list(client.api.load_image(load_stream(path)))
    except docker.errors.APIError as e:
        if e.status_code is not None and 400 <= e.status_code < 500:
            raise ArchiveRejected(f"the engine refused the image: {e.explanation or e}"[:500], "use `docker save`") from None
        raise EngineUnavailable(f"the container engine failed: {e}"[:500], "try again later") from None
    except (docker.errors.DockerException, OSError) as e:
        raise EngineUnavailable(f"the container engine is not reachable: {type(e).__name__}", "try again later") from None
    errors = [m.get("error") or m.get("errorDetail", {}).get("message") for m in messages if isinstance(m, dict)
              and (m.get("error") or m.get("errorDetail"))]
    if errors:
        raise ArchiveRejected(f"the engine refused the image: {errors[0]}"[:500], "use `docker save`")
    try:
        image = client.images.get(info.image_id)
    except docker.errors.ImageNotFound:
        raise ArchiveRejected("the engine did not load the image the archive's manifest names", "use `docker save`") from None
    repository, _, name = tag.rpartition(":")
    image.tag(repository, name)
    return image.id


def tag_exists(tag: str) -> bool:
    import docker.errors

    from cortexbox.orchestrator.runtime import docker_client

    try:
        docker_client().images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False
    except Exception:  # noqa: BLE001 - the engine is away (the load fails next): never remove what may be in use
        return True


def untag(tag: str) -> None:
    """Removes a submission's tag (the image goes with it unless another tag or a container holds it); logged,
    never raised: the refusal that called it is what the submitter must see."""
    from cortexbox.orchestrator.runtime import docker_client

    try:
        docker_client().images.remove(tag)
    except Exception:  # noqa: BLE001 - gone already, or the engine is away
        logger.warning("could not remove the tag %s of a refused submission", tag, exc_info=True)


def pin(image_id: str, repository: str) -> tuple[str, str | None]:
    """(what the scoring job runs, the image registry's digest or None). With an image registry configured
    (``$CORTEXBOX_IMAGE_REGISTRY``, issue 12's orchestrator/image_registry.py) the image is pushed and runs as
    ``REGISTRY/REPOSITORY@sha256:...``; without one, by its engine image id (content-addressed as well)."""
    from cortexbox.orchestrator import image_registry

    if not image_registry.configured_registry():
        return image_id, None
    from cortexbox.orchestrator.runtime import docker_client

    try:
        pushed = image_registry.push(docker_client(), image_id, repository=repository)
    except UserError as e:
        raise EngineUnavailable(f"the image registry failed: {e}"[:500], "try again later") from None
    return pushed.reference, pushed.digest


def store(registry: Registry, comp: Competition, caller: Caller, info: ArchiveInfo, image_ref: str,
          registry_digest: str | None) -> Submission:
    """Stores the submission (the phase and quota checked again: another upload may have landed meanwhile). A
    digest another team submitted before is flagged with that submission's id (``duplicate_of``); another digest
    over the same filesystem as another team's earlier submission (the same layers: a re-tagged or re-labelled
    copy, another CMD or ENV) is flagged with that one's id as ``resembles``, shown to organisers only."""
    phase = competitions.check_submission(registry, comp, caller)
    with registry.session() as s:
        others = select(Submission).where(Submission.competition_id == comp.id, Submission.team_id != caller.team_id)
        other = s.exec(others.where(Submission.digest == info.image_id).order_by(Submission.id)).first()
        alike = None if info.layers_digest is None else s.exec(others.where(
            Submission.layers_digest == info.layers_digest, Submission.digest != info.image_id).order_by(Submission.id)).first()
        row = Submission(competition_id=comp.id, team_id=caller.team_id, account_id=caller.account_id,
                         digest=info.image_id, image_ref=image_ref, registry_digest=registry_digest,
                         upload_bytes=info.upload_bytes, unpacked_bytes=info.unpacked_bytes, phase=phase,
                         duplicate_of=other.id if other else None, layers_digest=info.layers_digest,
                         resembles=alike.id if alike else None)
        s.add(row)
        s.commit()
        s.refresh(row)
    if row.duplicate_of is not None:
        logger.warning("submission %s of team %s has the digest of submission %s of another team",
                       row.id, caller.team, row.duplicate_of)
    if row.resembles is not None:
        logger.warning("submission %s of team %s has the filesystem of submission %s of another team (another config)",
                       row.id, caller.team, row.resembles)
    return row


def stage(registry: Registry, comp: Competition, caller: Caller, info: ArchiveInfo, path: Path) -> Submission:
    """With a broker: stores the checked archive's submission with no image yet (``image_ref`` empty; digest,
    ``duplicate_of`` and ``resembles`` come from the archive's config) and moves the archive next to ``path`` under
    its ``archive_path`` for a worker's ``install``. Nothing reaches an engine here."""
    row = store(registry, comp, caller, info, "", None)
    try:
        path.replace(archive_path(row, path.parent))
    except BaseException:
        with registry.session() as s:  # an upload refused after all stores nothing
            s.delete(s.get(Submission, row.id))
            s.commit()
        raise
    return row


def install(registry: Registry, submission_id: int, folder: Path | None = None) -> Submission:
    """The worker's side of ``stage``: loads the submission's archive into this process's engine, pins it, records
    ``image_ref`` and ``registry_digest``, then deletes the archive. Idempotent: an image already recorded is
    reused, one already loaded (a delivery that died before recording it) is pinned from the engine.

    Raises ArchiveRejected when the engine refuses the image or loads another config than the archive names (the
    submission's failure, ``BAD_IMAGE``); EngineUnavailable when the engine or the image registry is away, and a
    UserError when the archive is missing or no longer passes its checks (both the platform's: retried, refunded)."""
    from cortexbox.orchestrator.community.archive import Limits, check_archive

    with registry.session() as s:
        sub = s.get(Submission, submission_id)
        comp = s.get(Competition, sub.competition_id)
        team = s.get(Team, sub.team_id)
    if sub.image_ref:
        return sub
    path, tag = archive_path(sub, folder), submission_tag(comp.slug, team.name, sub.digest)
    if path.exists():
        try:  # the web app checked it; checked again before root's engine reads what a less trusted process wrote
            info = check_archive(path, Limits.from_spec(comp.spec))
        except ArchiveRejected as e:
            raise UserError(f"the stored archive of submission {sub.id} no longer passes its checks: {e}",
                            "the upload folder was changed under the web app: check $CORTEXBOX_UPLOAD_DIR") from None
        if info.image_id != sub.digest:
            raise UserError(f"the stored archive of submission {sub.id} holds {info.image_id}, not {sub.digest}",
                            "the upload folder was changed under the web app: check $CORTEXBOX_UPLOAD_DIR")
        existed = tag_exists(tag)
        image_id = load_into_engine(path, info, tag)
        if image_id != sub.digest:
            if not existed:
                untag(tag)
            raise ArchiveRejected("the engine loaded another image than the archive's manifest names", "use `docker save`")
    elif not _loaded(sub.digest):
        raise UserError(f"the archive of submission {sub.id} is not in {path.parent} and its image is not on this engine",
                        "every worker must see the web app's upload folder ($CORTEXBOX_UPLOAD_DIR)")
    else:
        _tag(sub.digest, tag)
    image_ref, registry_digest = pin(sub.digest, f"{TAG_REPOSITORY}/{comp.slug}")
    with registry.session() as s:
        row = s.get(Submission, sub.id)
        row.image_ref, row.registry_digest = image_ref, registry_digest
        s.add(row)
        s.commit()
        s.refresh(row)
    path.unlink(missing_ok=True)
    logger.info("submission %s loaded as %s", sub.id, image_ref)
    return row


def _loaded(image_id: str) -> bool:
    import docker.errors

    from cortexbox.orchestrator.runtime import docker_client

    try:
        return docker_client().images.get(image_id).id == image_id
    except docker.errors.ImageNotFound:
        return False
    except docker.errors.DockerException as e:
        raise EngineUnavailable(f"the container engine is not reachable: {type(e).__name__}", "try again later") from None


def _tag(image_id: str, tag: str) -> None:
    from cortexbox.orchestrator.runtime import docker_client

    repository, _, name = tag.rpartition(":")
    docker_client().images.get(image_id).tag(repository, name)


def discard_archive(registry: Registry, submission_id: int, folder: Path | None = None) -> None:
    """Deletes a staged archive no worker will load (its submission ended without an image); none is no error."""
    with registry.session() as s:
        sub = s.get(Submission, submission_id)
    if sub is not None:
        archive_path(sub, folder).unlink(missing_ok=True)


def get(registry: Registry, submission_id: int, caller: Caller) -> tuple[Submission, Competition]:
    """The submission, if the caller's team made it or the caller organises its competition (404 for anyone
    else: another team learns nothing, not even that it exists)."""
    with registry.session() as s:
        sub = s.get(Submission, submission_id)
        comp = s.get(Competition, sub.competition_id) if sub is not None else None
    if sub is None or comp is None or not (sub.team_id == caller.team_id or competitions.may_organise(caller, comp)):
        raise NotFound(f"no submission {submission_id} of yours", "see your team's page")
    return sub, comp


def runs_of(registry: Registry, submission_id: int) -> list[SubmissionRun]:
    with registry.session() as s:
        return list(s.exec(select(SubmissionRun).where(SubmissionRun.submission_id == submission_id)
                           .order_by(SubmissionRun.attempt, SubmissionRun.id)))


def private_hidden(caller: Caller | None, comp: Competition) -> bool:
    """Whether private scores are hidden from this caller (teams, until the organiser reveals them)."""
    return not competitions.may_see_final(caller, comp)


def view(registry: Registry, sub: Submission, comp: Competition, caller: Caller) -> dict[str, Any]:
    """What the caller may see of a submission. Of a private run a team sees its status and failure class only
    (its score once revealed); its error message and log never, since they could carry held-out data."""
    organiser = competitions.may_organise(caller, comp)
    hidden = private_hidden(caller, comp)
    runs = []
    by_run: dict[int, Run] = {}
    srs = runs_of(registry, sub.id)
    with registry.session() as s:
        for r in s.exec(select(Run).where(Run.id.in_([x.run_id for x in srs if x.run_id is not None]))):
            by_run[r.id] = r
        from cortexbox.registry import Score

        scores = {x.run_id: x for x in s.exec(select(Score).where(Score.run_id.in_(list(by_run))))}
    for sr in srs:
        entry: dict[str, Any] = {"benchmark": sr.benchmark, "private": sr.private, "attempt": sr.attempt,
                                 "status": sr.status, "failure_class": sr.failure_class}
        run = by_run.get(sr.run_id) if sr.run_id is not None else None
        score = scores.get(sr.run_id) if sr.run_id is not None else None
        if not sr.private or organiser:
            entry["run_id"] = sr.run_id
            if run is not None and run.status == "failed":
                entry |= {"error": run.error, "log_tail": run.log_tail}
        if score is not None and (not sr.private or not hidden):
            entry |= {"raw": score.raw, "ceiled": score.ceiled, "error_estimate": score.error, "layer": score.layer}
        runs.append(entry)
    with registry.session() as s:
        team = s.get(Team, sub.team_id)
        from cortexbox.registry.models import SubmissionJob

        job = s.exec(select(SubmissionJob).where(SubmissionJob.submission_id == sub.id, SubmissionJob.attempt == 0)).first()
    # why the engine refused the team's own image (the engine's words about its archive: nothing held out)
    refused = {"error": job.error} if sub.failure_class == BAD_IMAGE and job is not None and job.error else {}
    return {"submission": sub.id, "competition": comp.slug, "team": team.name if team else None, "digest": sub.digest,
            "registry_digest": sub.registry_digest, "phase": sub.phase, "status": sub.status,
            "failure_class": sub.failure_class, "counts_quota": sub.counts_quota, "duplicate_of": sub.duplicate_of,
            "upload_bytes": sub.upload_bytes, "unpacked_bytes": sub.unpacked_bytes,
            "submitted_at": sub.created_at.replace(tzinfo=sub.created_at.tzinfo or timezone.utc).isoformat(timespec="seconds"),
            **({"resembles": sub.resembles} if organiser else {}),  # organisers only: it names another team's entry
            "private_hidden": hidden, "runs": runs, **refused,
            "live_url": f"/submissions/{sub.id}/live", "events_url": f"/api/submissions/{sub.id}/events"}


def team_submissions(registry: Registry, comp: Competition, team_id: int | None) -> list[Submission]:
    with registry.session() as s:
        query = select(Submission).where(Submission.competition_id == comp.id)
        if team_id is not None:
            query = query.where(Submission.team_id == team_id)
        return list(s.exec(query.order_by(Submission.id.desc())))


# -- scoring -------------------------------------------------------------------------------------------------------
class SubmissionQueue:
    """Where the web app sends a submission attempt to be scored. With a broker (``broker``: the web app's Celery app
    of ``$CORTEXBOX_BROKER_URL``, the setting POST /api/runs uses) the attempt's job is published for issue 12's
    workers (community/tasks.py: claimed once, leased, a platform failure retried and refunded). Without one (the
    single-host `cortexbox web`) the fallback: a background thread of this process scores attempts one at a time,
    under the same job row and claim, a platform failure ending the submission ``platform_failed`` at once (no
    broker to deliver it again). ``score`` replaces ``score_model`` (tests; in process only)."""

    def __init__(self, registry: Registry, score: Callable[..., Any] | None = None, cache_dir: str | None = None,
                 broker: Callable[[], Any] | None = None):
        self.registry = registry
        self._score = score
        self.cache_dir = cache_dir
        self._broker = broker
        self._queue: Queue[tuple[int, int] | None] = Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.idle = threading.Event()
        self.idle.set()

    def enqueue(self, submission_id: int, attempt: int = 0) -> None:
        from cortexbox.orchestrator.community import tasks

        app = self._broker() if self._broker is not None else None
        if app is not None:
            tasks.enqueue(self.registry, submission_id, attempt, app)
            return
        tasks.enqueue(self.registry, submission_id, attempt)
        self.idle.clear()
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="cortexbox-submissions", daemon=True)
                self._thread.start()
        self._queue.put((submission_id, attempt))

    def close(self, timeout: float | None = None) -> None:
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self.execute(*item)
            except Exception:  # noqa: BLE001 - the worker outlives any submission
                logger.exception("submission %s: the worker failed", item[0])
            finally:
                if self._queue.empty():
                    self.idle.set()

    def execute(self, submission_id: int, attempt: int = 0) -> str:
        """Scores the attempt here (``attempt`` > 0: an organiser's rescoring from the stored digest, without the
        activation cache); returns the submission's status (``rescored`` for a rescoring)."""
        from cortexbox.orchestrator import owner
        from cortexbox.orchestrator.community import tasks
        from cortexbox.orchestrator.scoring.workers import LEASE_S

        tasks.enqueue(self.registry, submission_id, attempt)
        result = tasks.run(self.registry, submission_id, attempt, worker=f"web@{owner.tag()}", lease_s=LEASE_S,
                           score=self._score, cache_dir=self.cache_dir, retries=False, own_containers=False)
        return "rescored" if attempt else result["status"]


def rescore(registry: Registry, queue: SubmissionQueue, comp: Competition, caller: Caller) -> list[int]:
    """Queues every team's entry of the competition again, by its stored digest and without cached activations
    (an organiser's check that the final ranking is reproducible); the newest attempt replaces the board's values."""
    if not competitions.may_organise(caller, comp):
        raise Forbidden(f"only the organiser of {comp.slug} may rescore it")
    from cortexbox.registry.models import SubmissionJob

    entries = [row["submission"] for row in competitions.board(registry, comp, "public")["rows"]]
    for submission_id in entries:
        attempts = [sr.attempt for sr in runs_of(registry, submission_id)]
        with registry.session() as s:
            attempts += list(s.exec(select(SubmissionJob.attempt).where(SubmissionJob.submission_id == submission_id)))
        queue.enqueue(submission_id, attempt=max(attempts, default=0) + 1)
    return entries
