"""`cortexbox benchmarks ingest`: a recording becomes a versioned benchmark, registered through
`register_benchmark_version` (orchestrator/scoring/versions.py, the path built-ins and score time take too), and
every registered model of the benchmark's modality is queued to be scored on a new version. The recording is
validated completely, stored under a temporary name for its ceiling, and moved into its final folder only right
before the registry's transaction; any failure removes it again.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from cortexbox.benchmarks import list_benchmarks
from cortexbox.benchmarks.recordings import RecordedBenchmark, RecordingError, read_recording, store_recording
from cortexbox.benchmarks.settings import settings
from cortexbox.benchmarks.text_recordings import METRIC as TEXT_METRIC
from cortexbox.benchmarks.text_recordings import RecordedTextBenchmark, read_text_recording, store_text_recording
from cortexbox.orchestrator.errors import UserError
from cortexbox.orchestrator.scoring.versions import BenchmarkSource, IngestPlan, register_benchmark_version
from cortexbox.registry import Registry

IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9_]*\d{4}[a-z]?\.[A-Za-z0-9_-]+$")


def home_dir() -> Path:
    return settings().home


def ingested_identifiers(registry: Registry) -> list[str]:
    return sorted({b.identifier for b in registry.benchmarks() if b.definition.get("source") == "recording"})


def ingest_recording(
    assembly: str | os.PathLike[str],
    stimuli: str | os.PathLike[str],
    *,
    identifier: str,
    region: str,
    visual_degrees: float = 8.0,
    modality: str = "image",
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
    if modality not in ("image", "text"):
        raise UserError(f"--modality must be image or text, got {modality!r}")
    if modality == "image" and not visual_degrees > 0:
        raise UserError(f"--visual-degrees must be positive, got {visual_degrees}")
    if modality == "text" and stimuli_zip is not None:
        raise UserError("--stimuli-zip is for images; text stimuli are one CSV (stimulus_id, sentence[, context_id])")
    try:
        if modality == "text":
            recording = read_text_recording(assembly, stimuli)
        else:
            recording = read_recording(assembly, stimuli, stimuli_zip)
    except RecordingError as e:
        raise UserError(str(e)) from None
    registry = registry or Registry()
    root = home_dir() / "benchmarks" / identifier
    metric = TEXT_METRIC if modality == "text" else "pls"
    ceiled = "internal-consistency ceiling, " + ("clip(r/ceiling, 0, 1)." if modality == "text" else "r²/ceiling.")
    description = description or (
        f"{identifier}: ingested {'text ' if modality == 'text' else ''}recording ({recording.facts['neuroids']} "
        f"neuroids, {recording.facts['stimuli']} stimuli); "
        + ("linear predictivity (Pearson r per neuroid, median) at the committed layer, " if modality == "text" else "PLS predictivity, ")
        + (ceiled if recording.repetitions is not None else "no repetitions, so no ceiling (raw r).")
    )

    def folder(version: int) -> Path:
        return root / f"v{version}"

    def staging(version: int) -> Path:
        return root / f".staging-v{version}-{os.getpid()}"

    def stage(version: int):
        """Stores the data under a temporary name and computes the ceiling from it."""
        shutil.rmtree(staging(version), ignore_errors=True)
        definition = {"identifier": identifier, "version": version, "region": region, "metric": metric,
                      "description": description, "citation": citation}
        if modality == "text":
            store_text_recording(recording, staging(version), definition)
            return RecordedTextBenchmark(staging(version)).ceiling
        store_recording(recording, staging(version), {**definition, "visual_degrees": visual_degrees})
        return RecordedBenchmark(staging(version)).ceiling

    def publish(version: int) -> None:
        if folder(version).exists():
            raise UserError(f"{folder(version)} exists but is not registered; remove it and ingest again")
        os.replace(staging(version), folder(version))

    def retract(version: int) -> None:
        shutil.rmtree(folder(version), ignore_errors=True)

    source = BenchmarkSource(
        identifier, recording.data_hash, region, modality, metric, description, citation, recording.facts,
        ceiling=stage, definition=lambda version: {"source": "recording", "folder": str(folder(version))},
        matches=lambda row: row.data_hash == recording.data_hash, publish=publish, retract=retract,
    )
    try:
        plan, _ = register_benchmark_version(source, dry_run=dry_run, registry=registry)
        if plan.status != "unchanged":
            plan.folder = str(folder(plan.version))
        return plan
    finally:
        for leftover in root.glob(f".staging-v*-{os.getpid()}"):
            shutil.rmtree(leftover, ignore_errors=True)
