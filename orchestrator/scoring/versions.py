"""Which registered version of a benchmark a score belongs to, and the one way a version enters the registry.

A benchmark object (built in, or an ingested recording, `resolve_benchmark`) is attached to the registered version
holding its data (`register_benchmark`): same data as the latest version, that version; new or changed data, the
next version, added with a queued ScoreJob for every other registered model of its modality, in ONE transaction.
`cortexbox benchmarks ingest` (orchestrator/ingest.py), `cortexbox benchmarks sync` (`sync_builtins`) and score
time go through `register_benchmark_version`.

Order of work, so that nothing is half-registered after a failure: validate everything (collecting every problem),
hash the data, compare with the latest registered version, compute the ceiling (a recording is first stored under a
temporary name), and only then move a recording's data into its final folder and, in ONE database transaction, add
the benchmark version(s) and their score jobs. Any failure removes the stored data and leaves the registry
untouched; a dry run stops before writing anything and returns the plan.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from cortexbox.benchmarks import list_benchmarks
from cortexbox.benchmarks.recordings import RecordedBenchmark
from cortexbox.benchmarks.text_recordings import RecordedTextBenchmark
from cortexbox.orchestrator.errors import UserError
from cortexbox.registry import Benchmark, Registry


def resolve_benchmark(identifier: str, registry: Registry | None = None):
    """A benchmark object: built in (cortexbox.benchmarks), or the latest version of an
    ingested recording in the registry."""
    from cortexbox.benchmarks import get_benchmark
    from cortexbox.benchmarks.registry import UnknownBenchmark

    try:
        return get_benchmark(identifier)
    except UnknownBenchmark as e:
        registry = registry or Registry()
        versions = [b for b in registry.benchmark_versions(identifier) if b.definition.get("source") == "recording"]
        if not versions:
            known = e.known + sorted({b.identifier for b in registry.benchmarks() if b.definition.get("source") == "recording"})
            raise UserError(f"unknown benchmark {identifier!r}; known benchmarks: {', '.join(known)}",
                            "see `cortexbox benchmarks list`") from None
        return open_recorded_benchmark(versions[-1].definition["folder"])


def open_recorded_benchmark(folder: str | os.PathLike[str]):
    """The benchmark stored in an ingested recording's folder: image (RecordedBenchmark) or text
    (RecordedTextBenchmark), as its definition.json says."""
    import json

    modality = json.loads((Path(folder) / "definition.json").read_text()).get("modality", "image")
    return RecordedTextBenchmark(folder) if modality == "text" else RecordedBenchmark(folder)


@dataclass
class IngestPlan:
    """What registering a benchmark version did (or, in a dry run, would do)."""

    identifier: str
    version: int
    data_hash: str
    region: str
    metric: str
    ceiling: float | None
    ceiling_error: float | None
    facts: dict[str, Any]
    models_to_score: list[str] = field(default_factory=list)
    status: str = "planned"  # planned (dry run) | registered | unchanged
    folder: str = ""
    source: str = "recording"  # recording | builtin

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: The same record under its general name: built-in benchmarks are registered with it too.
RegistrationPlan = IngestPlan


def _no_op(version: int) -> None:
    pass


@dataclass
class BenchmarkSource:
    """Everything registering one version of a benchmark needs, whether it comes from an
    ingested recording or from the built-in benchmarks (`builtin_source`)."""

    identifier: str
    data_hash: str
    region: str
    modality: str  # "image" or "text": which registered models get a queued job
    metric: str
    description: str
    citation: str
    facts: dict[str, Any]
    #: The ceiling (Score or None) of the data, given the version it is about to get.
    ceiling: Callable[[int], Any]
    #: Benchmark.definition of a new version.
    definition: Callable[[int], dict[str, Any]]
    #: Whether a registered version holds exactly this benchmark (same data, same definition).
    matches: Callable[[Benchmark], bool]
    min_version: int = 1
    #: Run right before the transaction (an ingestion moves its data into place) and, if the
    #: transaction fails, undone by `retract`.
    publish: Callable[[int], None] = _no_op
    retract: Callable[[int], None] = _no_op
    #: An unchanged version takes the source's current description, citation and ceiling.
    refresh: bool = False
    kind: str = "recording"


def _plan(source: BenchmarkSource, registry: Registry, *, queue_jobs: bool = True,
          exclude_models: Callable[[Any], bool] | None = None) -> tuple[IngestPlan, Benchmark | None, list[int]]:
    """Compares the source with the latest registered version: the same → unchanged (returns its
    row); otherwise the next version, with the ceiling computed and the models to queue."""
    versions = registry.benchmark_versions(source.identifier)
    latest = versions[-1] if versions else None
    if latest is not None and source.matches(latest):
        ceiling_raw, ceiling_error = latest.ceiling, latest.ceiling_error
        if source.refresh:
            ceiling = source.ceiling(latest.version)
            ceiling_raw, ceiling_error = (None, None) if ceiling is None else (ceiling.raw, ceiling.error)
        plan = IngestPlan(source.identifier, latest.version, source.data_hash, source.region, source.metric,
                          ceiling_raw, ceiling_error, source.facts, status="unchanged",
                          folder=latest.definition.get("folder", ""), source=source.kind)
        return plan, latest, []
    version = max(latest.version + 1 if latest else 1, source.min_version)
    models = [
        m for m in registry.models()
        if queue_jobs and m.digest.startswith("sha256:") and (m.info or {}).get("modality", "image") == source.modality
        and not (exclude_models and exclude_models(m))
    ]
    ceiling = source.ceiling(version)
    plan = IngestPlan(source.identifier, version, source.data_hash, source.region, source.metric,
                      None if ceiling is None else ceiling.raw, None if ceiling is None else ceiling.error,
                      source.facts, [m.name for m in models], source=source.kind)
    return plan, None, [m.id for m in models]


def _refresh(source: BenchmarkSource, plan: IngestPlan, row: Benchmark, registry: Registry) -> Benchmark:
    fields = {"region": source.region, "description": source.description, "citation": source.citation,
              "ceiling": plan.ceiling, "ceiling_error": plan.ceiling_error}
    if all(getattr(row, k) == v for k, v in fields.items()):
        return row
    return registry.upsert_benchmark(row.identifier, row.version, row.data_hash, **fields)


def _commit(planned: list[tuple[BenchmarkSource, IngestPlan, list[int]]], registry: Registry) -> list[Benchmark]:
    """Publishes every new version's data and adds all versions and their jobs in ONE
    transaction; a failure anywhere undoes the publishing and leaves the registry as it was."""
    published: list[tuple[BenchmarkSource, IngestPlan]] = []
    try:
        for source, plan, _ in planned:
            source.publish(plan.version)
            published.append((source, plan))
        stored = registry.register_benchmark_versions([
            (Benchmark(identifier=plan.identifier, version=plan.version, data_hash=plan.data_hash, region=source.region,
                       description=source.description, citation=source.citation, ceiling=plan.ceiling,
                       ceiling_error=plan.ceiling_error, definition=source.definition(plan.version)), model_ids)
            for source, plan, model_ids in planned
        ])
    except BaseException:
        for source, plan in published:
            source.retract(plan.version)
        raise
    for _, plan, _ in planned:
        plan.status = "registered"
    return [row for row, _ in stored]


def register_benchmark_version(source: BenchmarkSource, *, dry_run: bool = False, queue_jobs: bool = True,
                               exclude_models: Callable[[Any], bool] | None = None,
                               registry: Registry | None = None) -> tuple[IngestPlan, Benchmark | None]:
    """The one way a benchmark version enters the registry, for ingested recordings and built-ins
    alike: same data as the latest version → unchanged; new or changed data → the next version,
    added with a queued ScoreJob for every registered model of the benchmark's modality in one
    transaction. A dry run returns the plan and changes nothing. Returns (plan, row); row is None
    in a dry run."""
    from sqlalchemy.exc import IntegrityError

    registry = registry or Registry()
    for attempt in (1, 2):
        plan, row, model_ids = _plan(source, registry, queue_jobs=queue_jobs, exclude_models=exclude_models)
        if dry_run:
            return plan, row
        if row is not None:
            return plan, (_refresh(source, plan, row, registry) if source.refresh else row)
        try:
            (row,) = _commit([(source, plan, model_ids)], registry)
            return plan, row
        except IntegrityError:
            if attempt == 2:
                raise  # another process registered this version at the same moment: plan again once
    raise AssertionError("unreachable")


def builtin_source(bench) -> BenchmarkSource:
    """A built-in benchmark (cortexbox.benchmarks) as a registration source: its own data hash,
    ceiling, description and citation. Its registered version starts at the code's `version`;
    changed data under the same code version makes the next registered version."""
    modality, kind, metric = bench.modality, bench.kind, bench.metric_name
    if bench.recording_folder is not None:  # an ingested recording
        folder = str(bench.recording_folder)
        return BenchmarkSource(
            bench.identifier, bench.data_hash, bench.region, modality, metric, bench.description, bench.citation,
            facts={}, ceiling=lambda version: bench.ceiling,
            definition=lambda version: {"source": "recording", "folder": folder},
            matches=lambda row: row.version == bench.version and row.data_hash == bench.data_hash,
            min_version=bench.version,
        )
    definition = {"source": "builtin", "code_version": bench.version, "kind": kind, "modality": modality}
    if metric:
        definition["metric"] = metric
    return BenchmarkSource(
        bench.identifier, bench.data_hash, bench.region, modality, metric, bench.description,
        bench.citation, facts={"kind": kind, "modality": modality, "code_version": bench.version},
        ceiling=lambda version: bench.ceiling,
        definition=lambda version: dict(definition),
        # Rows registered before versions were assigned here carry {"source": "builtin"} or nothing.
        matches=lambda row: row.definition.get("source", "builtin") == "builtin" and row.data_hash == bench.data_hash
        and int(row.definition.get("code_version", row.version)) == bench.version,
        min_version=bench.version,
        refresh=True,
        kind="builtin",
    )


def register_benchmark(bench, *, registry: Registry | None = None, queue_jobs: bool = True,
                       exclude_models: Callable[[Any], bool] | None = None) -> Benchmark:
    """The registry row of a benchmark object (built in or ingested), registered through
    `register_benchmark_version` if its data are new: what score time uses."""
    _, row = register_benchmark_version(builtin_source(bench), queue_jobs=queue_jobs, exclude_models=exclude_models,
                                        registry=registry)
    return row


def sync_builtins(identifiers: list[str] | None = None, *, dry_run: bool = False,
                  registry: Registry | None = None) -> list[IngestPlan]:
    """Registers every built-in benchmark (or those named) through the ingestion path: the
    versions whose data are new or changed, and their score jobs, in ONE transaction; unchanged
    ones keep their version. Everything is planned (data hashed, ceilings computed) before
    anything is written, so a failure leaves the registry untouched."""
    from cortexbox.benchmarks import get_benchmark
    from cortexbox.benchmarks.registry import UnknownBenchmark

    registry = registry or Registry()
    names = identifiers or list_benchmarks()
    planned, plans, unchanged = [], [], []
    for name in names:
        try:
            source = builtin_source(get_benchmark(name))
            plan, row, model_ids = _plan(source, registry)
        except UnknownBenchmark as e:
            raise UserError(str(e), "see `cortexbox benchmarks list`") from None
        except (OSError, ValueError, LookupError) as e:  # missing or damaged data
            raise UserError(f"{name}: {type(e).__name__}: {e}; nothing was registered",
                            "name the benchmarks to sync, e.g. `cortexbox benchmarks sync Cowley2023.V4-pls`") from None
        plans.append(plan)
        if row is None:
            planned.append((source, plan, model_ids))
        else:
            unchanged.append((source, plan, row))
    if dry_run:
        return plans
    _commit(planned, registry)
    for source, plan, row in unchanged:
        _refresh(source, plan, row, registry)
    return plans


