"""The registry's one door: open a database by URL and read or write its rows.

SQLite by default (a file under the cortexbox home); any SQLAlchemy URL works, e.g.
postgresql+psycopg2://cortexbox@/cortexbox?host=/run/cortexbox-db (the unix socket of docker-compose.yml's registry-db).
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from sqlalchemy import event
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, create_engine, select

from cortexbox.benchmarks.settings import settings
from cortexbox.registry.models import (
    LOCAL_OWNER,
    Benchmark,
    LayerCommitment,
    Model,
    ModelName,
    Run,
    RunEvent,
    Score,
    ScoreItems,
    ScoreJob,
    utcnow,
)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
#: The revision whose schema `create_all` made before migrations existed.
BASELINE_REVISION = "0001"


@functools.lru_cache(maxsize=1)
def _head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


def _current_revision(connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


@contextlib.contextmanager
def _migration_lock(engine):
    """One migrating process at a time: PostgreSQL's advisory lock, or a lock file beside a SQLite file."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT pg_advisory_lock(73200117)")
            try:
                yield
            finally:
                conn.exec_driver_sql("SELECT pg_advisory_unlock(73200117)")
                conn.commit()
        return
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    import fcntl

    with open(f"{database}.migrate-lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def migrate(engine) -> str:
    """Brings the database's schema to the newest Alembic revision (registry/migrations) and returns it. A
    database made by `create_all` before migrations existed (tables, no alembic_version) is stamped with the
    baseline first; its rows are kept."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import inspect

    head = _head_revision()
    with engine.connect() as conn:
        if _current_revision(conn) == head:
            return head
    with _migration_lock(engine):
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        sqlite = engine.dialect.name == "sqlite"
        with engine.begin() as conn:
            if sqlite:
                # SQLite alters a table by copying it and dropping the old one, which foreign keys that point at
                # it refuse (a registry with scores could not be upgraded). The pragma must come before the
                # transaction's first statement; the keys are checked once the migration is done, below.
                conn.exec_driver_sql("PRAGMA foreign_keys = OFF")
            config.attributes["connection"] = conn
            current = _current_revision(conn)
            if current is None and inspect(conn).has_table("model"):
                command.stamp(config, BASELINE_REVISION)
            if current != head:
                command.upgrade(config, "head")
            if sqlite:
                broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise RuntimeError(f"the migration left rows whose foreign keys point nowhere: {broken[:5]}")
        if sqlite:
            engine.dispose()  # no pooled connection keeps foreign keys off; new ones get them on at connect
        with engine.connect() as conn:
            return _current_revision(conn)


def default_url() -> str:
    """``$CORTEXBOX_DATABASE_URL``, else the SQLite file in the cortexbox home (made if missing)."""
    current = settings()
    if current.database_url is None:
        current.home.mkdir(parents=True, exist_ok=True)
    return current.registry_url


class NameTaken(ValueError):
    """A build claims a model name (or an image) that belongs to another owner."""


@dataclass(frozen=True)
class LeaderboardRow:
    model: str
    digest: str
    benchmark: str
    version: int
    raw: float
    ceiled: Optional[float]
    error: Optional[float]
    ceiling: Optional[float]
    layer: str
    scored_at: str

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


class Registry:
    def __init__(self, url: str | None = None):
        self.url = url or default_url()
        self.engine = create_engine(self.url)
        if self.url.startswith("sqlite"):
            # Concurrent CLI invocations share one file: wait for locks instead of failing.
            @event.listens_for(self.engine, "connect")
            def _sqlite_pragmas(conn, _):
                conn.execute("PRAGMA busy_timeout = 30000")
                conn.execute("PRAGMA foreign_keys = ON")

        # The schema comes from the Alembic migrations in registry/migrations, never from create_all.
        self.revision = migrate(self.engine)

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    # -- models and benchmarks ----------------------------------------------------------------
    def upsert_model(
        self, digest: str, name: str, version: str, image_ref: str, info: dict, owner: str = LOCAL_OWNER
    ) -> Model:
        """Registers a build (by digest) under `name` for `owner`. The first owner to register a
        name owns it; a build of another owner that claims it, or an image already registered by
        another owner, raises NameTaken. Builds of the owner under its name are its versions."""
        for attempt in range(2):
            with self.session() as s:
                row = s.exec(select(Model).where(Model.digest == digest)).first()
                if row is not None and row.owner != owner:
                    raise NameTaken(f"image {digest[:19]} is registered by another owner ({row.owner!r})")
                claim = s.exec(select(ModelName).where(ModelName.name == name)).first()
                if claim is not None and claim.owner != owner:
                    raise NameTaken(
                        f"the name {name!r} belongs to another owner ({claim.owner!r}, first build {claim.digest[:19]}); "
                        "give this model another model_id"
                    )
                try:
                    if claim is None:
                        s.add(ModelName(name=name, owner=owner, digest=digest))
                        s.flush()  # the name's row first: model's (name, owner) refers to it
                    if row is None:
                        row = Model(digest=digest, name=name, version=version, image_ref=image_ref, info=info, owner=owner)
                    else:
                        row.name, row.version, row.info = name, version, info
                        row.image_ref = image_ref or row.image_ref
                    s.add(row)
                    s.commit()
                except IntegrityError:  # another process registered the name (or the build) meanwhile: decide again
                    s.rollback()
                    if attempt:
                        raise
                    continue
                s.refresh(row)
                return row
        raise AssertionError("unreachable")

    def model_by_digest(self, digest: str) -> Model | None:
        with self.session() as s:
            return s.exec(select(Model).where(Model.digest == digest)).first()

    def upsert_benchmark(self, identifier: str, version: int, data_hash: str, **fields: Any) -> Benchmark:
        with self.session() as s:
            row = s.exec(
                select(Benchmark).where(Benchmark.identifier == identifier, Benchmark.version == version)
            ).first()
            if row is not None and row.data_hash != data_hash:
                raise ValueError(
                    f"{identifier} version {version} is registered with data hash {row.data_hash[:12]}, "
                    f"but its data now hashes to {data_hash[:12]}: changed data needs a new version"
                )
            if row is None:
                row = Benchmark(identifier=identifier, version=version, data_hash=data_hash)
            for key, value in fields.items():
                setattr(row, key, value)
            s.add(row)
            s.commit()
            s.refresh(row)
            return row

    def benchmark_versions(self, identifier: str) -> list[Benchmark]:
        with self.session() as s:
            return list(s.exec(select(Benchmark).where(Benchmark.identifier == identifier).order_by(Benchmark.version)))

    def benchmarks(self) -> list[Benchmark]:
        with self.session() as s:
            return list(s.exec(select(Benchmark).order_by(Benchmark.identifier, Benchmark.version)))

    def models(self) -> list[Model]:
        with self.session() as s:
            return list(s.exec(select(Model).order_by(Model.id)))

    def register_benchmark_with_jobs(self, benchmark: Benchmark, model_ids: list[int]) -> tuple[Benchmark, list[ScoreJob]]:
        """Adds a benchmark version and queues a job per model, in one transaction: either
        all of it is stored, or none."""
        with self.session() as s:
            s.add(benchmark)
            s.flush()
            jobs = [ScoreJob(model_id=m, benchmark_id=benchmark.id) for m in model_ids]
            s.add_all(jobs)
            s.commit()
            s.refresh(benchmark)
            for job in jobs:
                s.refresh(job)
            return benchmark, jobs

    def register_benchmark_versions(self, items: list[tuple[Benchmark, list[int]]]) -> list[tuple[Benchmark, list[ScoreJob]]]:
        """Adds several benchmark versions, each with a queued job per model, in ONE transaction
        (`cortexbox benchmarks sync`): all of them are stored, or none."""
        with self.session() as s:
            stored = []
            for benchmark, model_ids in items:
                s.add(benchmark)
                s.flush()
                jobs = [ScoreJob(model_id=m, benchmark_id=benchmark.id) for m in model_ids]
                s.add_all(jobs)
                s.flush()
                stored.append((benchmark, jobs))
            s.commit()
            for benchmark, jobs in stored:
                s.refresh(benchmark)
                for job in jobs:
                    s.refresh(job)
            return stored

    def queued_jobs(self) -> list[tuple[ScoreJob, Model, Benchmark]]:
        with self.session() as s:
            return list(
                s.exec(
                    select(ScoreJob, Model, Benchmark)
                    .where(ScoreJob.status == "queued", ScoreJob.model_id == Model.id, ScoreJob.benchmark_id == Benchmark.id)
                    .order_by(ScoreJob.id)
                )
            )

    def update_job(self, job: ScoreJob, **fields: Any) -> None:
        with self.session() as s:
            row = s.get(ScoreJob, job.id)
            for key, value in fields.items():
                setattr(row, key, value)
            s.add(row)
            s.commit()

    # -- layer commitments ------------------------------------------------------------------
    def commitment(self, model_id: int, region: str, selection_key: str) -> LayerCommitment | None:
        with self.session() as s:
            return s.exec(
                select(LayerCommitment).where(
                    LayerCommitment.model_id == model_id,
                    LayerCommitment.region == region,
                    LayerCommitment.selection_key == selection_key,
                )
            ).first()

    def save_commitment(self, model_id: int, region: str, layer: str, selection_key: str, layer_scores: dict) -> LayerCommitment:
        with self.session() as s:
            row = LayerCommitment(
                model_id=model_id, region=region, layer=layer, selection_key=selection_key, layer_scores=layer_scores
            )
            s.add(row)
            s.commit()
            s.refresh(row)
            return row

    # -- runs and scores --------------------------------------------------------------------
    def start_run(self, model_ref: str, benchmark_identifier: str) -> Run:
        with self.session() as s:
            run = Run(model_ref=model_ref, benchmark_identifier=benchmark_identifier)
            s.add(run)
            s.commit()
            s.refresh(run)
            return run

    def update_run(self, run: Run, **fields: Any) -> Run:
        with self.session() as s:
            row = s.get(Run, run.id)
            for key, value in fields.items():
                setattr(row, key, value)
            if fields.get("status") in ("succeeded", "failed"):
                row.finished_at = utcnow()
            s.add(row)
            s.commit()
            s.refresh(row)
            return row

    def add_score(self, *, items: Any = None, **fields: Any) -> Score:
        """Stores a score and, when given, the per-item values it was built from (an object with ``kind``,
        ``n_items`` and ``to_bytes()``: cortexbox.benchmarks.metrics.items.ItemValues), in one transaction."""
        with self.session() as s:
            row = Score(**fields)
            s.add(row)
            if items is not None:
                s.flush()  # the score's id
                s.add(ScoreItems(score_id=row.id, kind=items.kind, n_items=items.n_items, payload=items.to_bytes()))
            s.commit()
            s.refresh(row)
            return row

    def score_items(self, score_ids: list[int]) -> dict[int, ScoreItems]:
        """The stored per-item values of these scores (scores made without them are left out)."""
        if not score_ids:
            return {}
        with self.session() as s:
            return {r.score_id: r for r in s.exec(select(ScoreItems).where(ScoreItems.score_id.in_(score_ids)))}

    def runs(self, limit: int = 50, status: str | None = None) -> list[Run]:
        with self.session() as s:
            query = select(Run) if status is None else select(Run).where(Run.status == status)
            return list(s.exec(query.order_by(Run.id.desc()).limit(limit)))

    def run(self, run_id: int) -> Run | None:
        with self.session() as s:
            return s.get(Run, run_id)

    # -- run events (progress) --------------------------------------------------------------
    def add_run_events(self, run_id: int, events: list[tuple[int, str, dict]]) -> None:
        """Stores (seq, kind, data) events of a run, in one transaction."""
        if not events:
            return
        with self.session() as s:
            s.add_all(RunEvent(run_id=run_id, seq=seq, kind=kind, data=data) for seq, kind, data in events)
            s.commit()

    def run_events(self, run_id: int, after: int = -1, limit: int = 500) -> list[RunEvent]:
        """The run's events with seq > ``after``, oldest first, at most ``limit``."""
        with self.session() as s:
            return list(s.exec(select(RunEvent).where(RunEvent.run_id == run_id, RunEvent.seq > after)
                               .order_by(RunEvent.seq).limit(limit)))

    def last_run_events(self, run_ids: list[int]) -> dict[int, RunEvent]:
        """The newest event of each of these runs (runs without events are left out)."""
        from sqlalchemy import func

        if not run_ids:
            return {}
        with self.session() as s:
            newest = (select(RunEvent.run_id, func.max(RunEvent.seq).label("seq"))
                      .where(RunEvent.run_id.in_(run_ids)).group_by(RunEvent.run_id).subquery())
            rows = s.exec(select(RunEvent).join(newest, (RunEvent.run_id == newest.c.run_id) & (RunEvent.seq == newest.c.seq)))
            return {e.run_id: e for e in rows}

    def scores(self) -> Iterator[tuple[Score, Model, Benchmark]]:
        with self.session() as s:
            yield from s.exec(
                select(Score, Model, Benchmark).where(Score.model_id == Model.id, Score.benchmark_id == Benchmark.id)
            )

    def leaderboard(self) -> list[LeaderboardRow]:
        """The latest score of every model build on the latest version of every benchmark,
        best ceiled score first: raw rows for scripts. The boards people read (`cortexbox
        leaderboard`, the web) come from one query module, orchestrator/web/data.py, which
        also ranks per benchmark (`cortexbox leaderboard --benchmark ID`)."""
        latest_version: dict[str, int] = {}
        with self.session() as s:
            for b in s.exec(select(Benchmark)):
                latest_version[b.identifier] = max(latest_version.get(b.identifier, 0), b.version)
        newest: dict[tuple[int, str], tuple[Score, Model, Benchmark]] = {}
        for score, model, bench in self.scores():
            if bench.version != latest_version[bench.identifier]:
                continue
            key = (model.id, bench.identifier)
            if key not in newest or score.id > newest[key][0].id:
                newest[key] = (score, model, bench)
        rows = [
            LeaderboardRow(
                model=model.name,
                digest=model.digest,
                benchmark=bench.identifier,
                version=bench.version,
                raw=score.raw,
                ceiled=score.ceiled,
                error=score.error,
                ceiling=score.ceiling,
                layer=score.layer,
                scored_at=score.created_at.isoformat(timespec="seconds"),
            )
            for score, model, bench in newest.values()
        ]
        rows.sort(key=lambda r: (r.benchmark, -(r.ceiled if r.ceiled is not None else r.raw)))
        return rows
