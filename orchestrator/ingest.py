"""`cortexbox benchmarks ingest`: a recording becomes a versioned benchmark, and every
registered model is queued to be scored on it.

Order of work, so that nothing is half-registered after a failure: validate everything
(collecting every problem), store the data under a temporary name and compute the ceiling
from it, then in ONE database transaction add the benchmark version and its score jobs, and
only then move the data into its final folder. Any failure before the commit removes the
stored data; the registry is untouched.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cortexbox.benchmarks import list_benchmarks
from cortexbox.benchmarks.recordings import RecordedBenchmark, RecordingError, read_recording, store_recording
from cortexbox.orchestrator.errors import UserError
from cortexbox.registry import Benchmark, Registry

IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9_]*\d{4}[a-z]?\.[A-Za-z0-9_-]+$")


def home_dir() -> Path:
    return Path(os.environ.get("CORTEXBOX_HOME") or Path.home() / ".cortexbox")


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
        return RecordedBenchmark(versions[-1].definition["folder"])


def ingested_identifiers(registry: Registry) -> list[str]:
    return sorted({b.identifier for b in registry.benchmarks() if b.definition.get("source") == "recording"})


@dataclass
class IngestPlan:
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ingest_recording(
    assembly: str | os.PathLike[str],
    stimuli: str | os.PathLike[str],
    *,
    identifier: str,
    region: str,
    visual_degrees: float,
    stimuli_zip: str | os.PathLike[str] | None = None,
    description: str = "",
    citation: str = "",
    dry_run: bool = False,
    registry: Registry | None = None,
) -> IngestPlan:
    if not IDENTIFIER.match(identifier):
        raise UserError(f"benchmark identifier {identifier!r} does not look like Author2024.REGION-metric",
                        "e.g. Smith2026.V4-pls")
    if identifier in list_benchmarks():
        raise UserError(f"{identifier} is a built-in benchmark; choose another identifier")
    if not visual_degrees > 0:
        raise UserError(f"--visual-degrees must be positive, got {visual_degrees}")
    try:
        recording = read_recording(assembly, stimuli, stimuli_zip)
    except RecordingError as e:
        raise UserError(str(e)) from None
    registry = registry or Registry()
    versions = registry.benchmark_versions(identifier)
    for existing in versions:
        if existing.data_hash == recording.data_hash:
            return IngestPlan(identifier, existing.version, recording.data_hash, region, "pls", existing.ceiling,
                              existing.ceiling_error, recording.facts, status="unchanged",
                              folder=existing.definition.get("folder", ""))
    version = max((b.version for b in versions), default=0) + 1
    models = [m for m in registry.models() if m.digest.startswith("sha256:")]
    folder = home_dir() / "benchmarks" / identifier / f"v{version}"
    staging = folder.with_name(f".staging-{folder.name}-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    definition = {
        "identifier": identifier,
        "version": version,
        "region": region,
        "visual_degrees": visual_degrees,
        "metric": "pls",
        "description": description or f"{identifier}: ingested recording ({recording.facts['neuroids']} neuroids, "
        f"{recording.facts['stimuli']} stimuli); PLS predictivity, "
        + ("internal-consistency ceiling, r²/ceiling." if recording.repetitions is not None else "no repetitions, so no ceiling (raw r)."),
        "citation": citation,
    }
    try:
        store_recording(recording, staging, definition)
        bench = RecordedBenchmark(staging)
        ceiling = bench.ceiling
        plan = IngestPlan(
            identifier, version, recording.data_hash, region, "pls",
            None if ceiling is None else ceiling.raw, None if ceiling is None else ceiling.error,
            recording.facts, [m.name for m in models], folder=str(folder),
        )
        if dry_run:
            return plan
        if folder.exists():
            raise UserError(f"{folder} exists but is not registered; remove it and ingest again")
        os.replace(staging, folder)
        try:
            registry.register_benchmark_with_jobs(
                Benchmark(identifier=identifier, version=version, data_hash=recording.data_hash, region=region,
                          description=definition["description"], citation=citation, ceiling=plan.ceiling,
                          ceiling_error=plan.ceiling_error, definition={"source": "recording", "folder": str(folder)}),
                [m.id for m in models],
            )
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        plan.status = "registered"
        return plan
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def run_queued_jobs(registry: Registry | None = None, events=None) -> list[dict[str, Any]]:
    """Scores every queued job, oldest first; one failure does not stop the others."""
    from cortexbox.orchestrator.errors import CortexboxError
    from cortexbox.orchestrator.jobs import ScoreRequest, score_model

    registry = registry or Registry()
    results = []
    for job, model, bench in registry.queued_jobs():
        registry.update_job(job, status="running")
        try:
            outcome = score_model(ScoreRequest(benchmark=bench.identifier, image=model.digest,
                                               database_url=registry.url), registry=registry, events=events)
            registry.update_job(job, status="succeeded", run_id=outcome.run_id)
            results.append({"model": model.name, "benchmark": bench.identifier, "version": bench.version,
                            "status": "succeeded", "raw": outcome.raw, "ceiled": outcome.ceiled})
        except CortexboxError as e:
            registry.update_job(job, status="failed")
            results.append({"model": model.name, "benchmark": bench.identifier, "version": bench.version,
                            "status": "failed", "error": str(e)})
    return results
