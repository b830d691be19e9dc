"""Tables of the registry: models (by image digest), benchmarks (by version), runs and their events, scores.

A score row is a scientific claim, so it carries everything needed to reproduce it: the
image digest, the benchmark's version and data hash, the code version, the seeds, the
chosen layer and how it was chosen (see `Score.provenance`).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

from sqlalchemy import JSON, Column, ForeignKeyConstraint, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


#: The owner of everything registered on this host: the local operator. Competitions give each
#: submitting account its own owner.
LOCAL_OWNER = "local"


class ModelName(SQLModel, table=True):
    """A name on the board and the owner it belongs to: the first owner to register a build under
    a name owns it, and no other owner's build can take it (`Registry.upsert_model`). A model's
    model_id is only its claim; the owner is not the model's to say, and the digest stays the
    identity of each build."""

    __tablename__ = "model_name"
    __table_args__ = (UniqueConstraint("name", "owner"),)  # the target of model's (name, owner) key
    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(unique=True)
    owner: str
    digest: str  # the build that registered the name first
    created_at: datetime = Field(default_factory=utcnow)


class Model(SQLModel, table=True):
    """One model build. Identified by its content-addressed image digest; an endpoint that
    has no image is identified by `endpoint:<model_id>@<version>`. Builds of one owner under one
    name are that model's versions; (name, owner) must be a row of model_name, so a name has
    one owner."""

    __tablename__ = "model"
    __table_args__ = (ForeignKeyConstraint(["name", "owner"], ["model_name.name", "model_name.owner"], name="fk_model_name_owner"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    digest: str = Field(index=True, unique=True)
    name: str = Field(index=True)  # the model's own model_id, accepted when its owner holds the name
    owner: str = LOCAL_OWNER
    version: str = ""
    image_ref: str = ""  # the tag or reference the user gave
    info: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow)


class Benchmark(SQLModel, table=True):
    """One version of one benchmark. A change of data makes a new version; scores keep
    pointing at the version they were computed on."""

    __tablename__ = "benchmark"
    __table_args__ = (UniqueConstraint("identifier", "version"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    identifier: str = Field(index=True)
    version: int
    data_hash: str
    region: str = ""
    description: str = ""
    citation: str = ""
    ceiling: Optional[float] = None
    ceiling_error: Optional[float] = None
    # Where the definition lives: {"source": "builtin"} for benchmarks in cortexbox.benchmarks,
    # {"source": "recording", "folder": ...} for ingested recordings.
    definition: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow)


class ScoreJob(SQLModel, table=True):
    """A request to score a model build on a benchmark version: one per (digest, version), so a job delivered twice
    by the broker is still one job (orchestrator/scoring/workers.py). Workers take jobs in id order; the worker
    holding a running job keeps a lease on it (``worker``, ``heartbeat_at``); its run is linked once it exists."""

    __tablename__ = "score_job"
    __table_args__ = (UniqueConstraint("model_id", "benchmark_id", name="uq_score_job_model_benchmark"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    model_id: int = Field(foreign_key="model.id", index=True)
    benchmark_id: int = Field(foreign_key="benchmark.id", index=True)
    #: queued | running | succeeded | failed | cancelled | superseded (a newer version of its benchmark)
    status: str = "queued"
    run_id: Optional[int] = Field(default=None, foreign_key="run.id")
    created_at: datetime = Field(default_factory=utcnow)
    # -- the lease of the worker scoring it (migration 0005) --
    worker: Optional[str] = None  # "<name>@<host>:<pid>" of the worker holding or last holding it
    heartbeat_at: Optional[datetime] = None  # renewed while it runs; an old one means the worker is gone
    started_at: Optional[datetime] = None
    finished_at: Optional[datetime] = None
    attempts: int = 0
    task_id: Optional[str] = None  # the broker's message of its latest dispatch
    cancel_requested: bool = False
    failure_class: Optional[str] = None
    error: Optional[str] = None


class LayerCommitment(SQLModel, table=True):
    """Which layer of a model build stands for a region, and how that was decided."""

    __tablename__ = "layer_commitment"
    __table_args__ = (UniqueConstraint("model_id", "region", "selection_key"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    model_id: int = Field(foreign_key="model.id", index=True)
    region: str
    layer: str
    # "model" (declared by the model) or the selection data's identity, e.g.
    # "Cowley2023.V4-pls@1:selection".
    selection_key: str
    layer_scores: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow)


class Run(SQLModel, table=True):
    """One attempt to score a model on a benchmark, successful or not."""

    __tablename__ = "run"
    id: Optional[int] = Field(default=None, primary_key=True)
    model_id: Optional[int] = Field(default=None, foreign_key="model.id", index=True)
    benchmark_id: Optional[int] = Field(default=None, foreign_key="benchmark.id", index=True)
    model_ref: str = ""  # what the user asked for (image tag or endpoint)
    benchmark_identifier: str = ""
    status: str = "running"  # running | succeeded | failed
    failure_class: Optional[str] = None
    error: Optional[str] = None
    log_tail: Optional[str] = None
    timings: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: Optional[datetime] = None


class RunEvent(SQLModel, table=True):
    """One progress event of a run ("status", "stage", "progress", "score", "failed", "done"), numbered from 0 per
    run. The scoring job writes them (progress throttled) in whatever process runs it; anyone watching the run
    reads them from here."""

    __tablename__ = "run_event"
    __table_args__ = (UniqueConstraint("run_id", "seq"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="run.id")  # (run_id, seq) is unique, and indexed by that
    seq: int
    kind: str
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow)


class Score(SQLModel, table=True):
    __tablename__ = "score"
    id: Optional[int] = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="run.id", index=True)
    #: The queued job it answers, if any: unique, so a job delivered twice stores one score (migration 0005).
    job_id: Optional[int] = Field(default=None, foreign_key="score_job.id", unique=True)
    model_id: int = Field(foreign_key="model.id", index=True)
    benchmark_id: int = Field(foreign_key="benchmark.id", index=True)
    raw: float
    error: Optional[float] = None
    ceiling: Optional[float] = None
    ceiled: Optional[float] = None
    layer: str = ""
    values: list[float] = Field(default_factory=list, sa_column=Column(JSON))  # per split
    provenance: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow)


class ScoreItems(SQLModel, table=True):
    """The per-item values a score was built from (cortexbox.benchmarks.metrics.items): its kind ("mean",
    "predictivity", "rdm"), how many items, and a compressed .npz of the item ids (stimulus ids) and arrays. Kept
    apart from `score` so the boards never load them; a paired comparison of two models resamples them."""

    __tablename__ = "score_items"
    id: Optional[int] = Field(default=None, primary_key=True)
    score_id: int = Field(foreign_key="score.id", unique=True)
    kind: str
    n_items: int
    payload: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


# -- community: accounts, teams, competitions, submissions (orchestrator/community; migration 0006) ---------------
class Account(SQLModel, table=True):
    """Someone who may call the community API: a submitter, an organiser, or an admin (who may create
    competitions and act on any of them)."""

    __tablename__ = "account"
    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(unique=True)
    is_admin: bool = False
    created_at: datetime = Field(default_factory=utcnow)


class ApiToken(SQLModel, table=True):
    """A bearer token of an account, stored only as a salted SHA-256 of its secret part. ``token_id`` is the
    token's public prefix, so a lookup is one indexed row and the secret is compared in constant time.
    ``kind``: "api" (made by `cortexbox users add`) or "session" (a web login, with an expiry)."""

    __tablename__ = "api_token"
    id: Optional[int] = Field(default=None, primary_key=True)
    token_id: str = Field(unique=True)
    account_id: int = Field(foreign_key="account.id", index=True)
    salt: str
    secret_hash: str
    kind: str = "api"
    expires_at: Optional[datetime] = None
    created_at: datetime = Field(default_factory=utcnow)


class Team(SQLModel, table=True):
    __tablename__ = "team"
    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(unique=True)
    created_at: datetime = Field(default_factory=utcnow)


class TeamMember(SQLModel, table=True):
    """An account belongs to at most one team: the team it submits for."""

    __tablename__ = "team_member"
    id: Optional[int] = Field(default=None, primary_key=True)
    team_id: int = Field(foreign_key="team.id", index=True)
    account_id: int = Field(foreign_key="account.id", unique=True)
    created_at: datetime = Field(default_factory=utcnow)


class Competition(SQLModel, table=True):
    """A competition: ``spec`` holds its tracks (benchmark trees, public or private), phases (opening and
    closing times), quota and upload caps, as validated by orchestrator/community/competitions.py.
    ``status``: draft | open | closed; private scores are shown to teams only once ``revealed``."""

    __tablename__ = "competition"
    id: Optional[int] = Field(default=None, primary_key=True)
    slug: str = Field(unique=True)
    title: str = ""
    organiser_id: int = Field(foreign_key="account.id")
    status: str = "draft"
    revealed: bool = False
    spec: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow)


class Submission(SQLModel, table=True):
    """One image a team submitted to a competition, pinned by its digest (the engine's image id, or the
    image registry's digest once pushed). ``status``: queued | running | succeeded | failed (the model's
    fault: counts against the quota) | platform_failed (ours: never counts, ``counts_quota`` False).
    ``duplicate_of``: another team's earlier submission with the same digest (flagged). ``layers_digest``: the
    sha256 of the image's ordered rootfs diff_ids (its filesystem, whatever its config says); ``resembles``: another
    team's earlier submission with the same filesystem but another digest (a re-labelled copy; organisers only)."""

    __tablename__ = "submission"
    id: Optional[int] = Field(default=None, primary_key=True)
    competition_id: int = Field(foreign_key="competition.id", index=True)
    team_id: int = Field(foreign_key="team.id", index=True)
    account_id: int = Field(foreign_key="account.id")
    digest: str = Field(index=True)
    image_ref: str  # what the engine runs: the local image id, or the registry reference pinned by digest
    registry_digest: Optional[str] = None
    upload_bytes: int = 0
    unpacked_bytes: int = 0
    phase: str = ""
    status: str = "queued"
    failure_class: Optional[str] = None
    counts_quota: bool = True
    duplicate_of: Optional[int] = None
    layers_digest: Optional[str] = Field(default=None, index=True)
    resembles: Optional[int] = None
    created_at: datetime = Field(default_factory=utcnow)
    finished_at: Optional[datetime] = None


class SubmissionRun(SQLModel, table=True):
    """A submission scored on one benchmark of its competition: the registry run (None if it failed before a
    run existed) and whether the benchmark is private (its score, error and log stay hidden from teams)."""

    __tablename__ = "submission_run"
    __table_args__ = (UniqueConstraint("submission_id", "benchmark", "attempt"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    submission_id: int = Field(foreign_key="submission.id", index=True)
    benchmark: str
    attempt: int = 0  # 0: the submission's own scoring; 1, 2, ...: organiser rescoring from the digest
    private: bool = False
    run_id: Optional[int] = Field(default=None, foreign_key="run.id")
    status: str = "queued"  # queued | running | succeeded | failed
    failure_class: Optional[str] = None
    created_at: datetime = Field(default_factory=utcnow)


class SubmissionJob(SQLModel, table=True):
    """One scoring of a submission (``attempt`` 0) or an organiser's rescoring (1, 2, ...) as a worker takes it
    (orchestrator/community/tasks.py): unique on (submission, attempt), so a delivery claims it with one
    conditional UPDATE and a second delivery of a held or finished job does nothing. ``worker``/``heartbeat_at``:
    the lease of the worker holding it; ``attempts``: deliveries taken (a platform failure is retried).
    ``status``: queued | running | succeeded | failed | platform_failed."""

    __tablename__ = "submission_job"
    __table_args__ = (UniqueConstraint("submission_id", "attempt"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    submission_id: int = Field(foreign_key="submission.id", index=True)
    attempt: int = 0
    status: str = "queued"
    worker: Optional[str] = None
    heartbeat_at: Optional[datetime] = None
    attempts: int = 0
    task_id: Optional[str] = None
    cancel_requested: bool = False
    failure_class: Optional[str] = None
    error: Optional[str] = None
    created_at: datetime = Field(default_factory=utcnow)
    started_at: Optional[datetime] = None
    finished_at: Optional[datetime] = None
