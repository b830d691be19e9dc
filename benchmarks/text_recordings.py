"""Text recordings become language benchmarks, through the same ingestion path as image recordings.

A text recording is a netCDF assembly in Brain-Score's format (presentation x neuroid, with `stimulus_id`,
`neuroid_id` and, where the experiment repeated stimuli, `repetition`) plus a UTF-8 CSV of its stimuli with the
columns `stimulus_id`, `sentence` (the text part) and optionally `context_id` (or `story`): the parts of one
context, in file order, form one cumulative context (Brain-Score language's ``digest_text`` semantics, as the
Futrell2018 and Brennan2016 benchmarks build theirs); without a context column every part is a context of its own.

`read_text_recording` collects every problem it finds and raises one `RecordingError` listing them all;
`store_text_recording` writes the validated data (target.nc, repetitions.nc, stimuli.csv, definition.json) that
`RecordedTextBenchmark` loads.

The benchmark (Brain-Score language's neural metric for such data, as Pereira2018's ``linear_pearsonr``): the
committed layer's representation at each part's last token, linear regression (ordinary least squares, with
intercept) onto every neuroid, 10 shuffled 90/10 splits of the stimuli with ``random_state=1`` (our metric
library's ``linear_predictivity``), Pearson r per neuroid on the held-out stimuli, median over neuroids, mean over
splits. The layer is committed as for every language neural benchmark (the model's ``region_layers`` or the fixed
relative depth of :func:`cortexbox.benchmarks.language.committed_layer`, never selected on the scored data). With
repetitions: split-half internal-consistency ceiling (Spearman-Brown) and ``ceiled = clip(raw / ceiling, 0, 1)``
(Brain-Score language's ``ceiling_normalize``); without: raw only, no ceiling.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd
import xarray as xr

from .assemblies import average_repetition
from .base import Kind, Modality
from .dims import NEUROID, PRESENTATION
from .language import LanguageBenchmark, TextStimulusSet
from .metrics import InternalConsistency, load_metric
from .metrics.normalization import Normalization, explained_variance
from .netcdf import read_assembly
from .recordings import (
    MIN_STIMULI,
    RecordingError,
    _examples,
    check_assembly,
    store_assemblies,
)
from .score import Score

__all__ = ["METRIC", "RecordedTextBenchmark", "TextRecording", "read_text_recording", "store_text_recording"]

#: The metric library's name of the regression metric these benchmarks use.
METRIC = "linear_predictivity"
NORMALIZATION: Normalization = "raw_over_ceiling_clipped"
CONTEXT_COLUMNS = ("context_id", "story")


@dataclass
class TextRecording:
    """A validated text recording, ready to store."""

    target: xr.DataArray  # repeat-averaged, (presentation, neuroid), one row per stimulus
    repetitions: xr.DataArray | None
    parts: list[tuple[str, str, str]]  # (stimulus_id, text, context_id) in the CSV's (reading) order
    data_hash: str
    facts: dict[str, Any] = field(default_factory=dict)


def _read_parts(stimuli: Path, problems: list[str]) -> list[tuple[str, str, str]]:
    if stimuli.suffix.lower() != ".csv" or not stimuli.is_file():
        problems.append(f"text stimuli must be a CSV file (stimulus_id, sentence[, context_id or story]), got {stimuli}")
        return []
    data = stimuli.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        problems.append(f"{stimuli.name} is not UTF-8 text (byte {e.start}: {data[e.start:e.start + 1]!r}); save it as UTF-8")
        return []
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = reader.fieldnames or []
    if not {"stimulus_id", "sentence"} <= set(columns):
        problems.append(f"{stimuli.name} needs the columns stimulus_id and sentence (has: {', '.join(columns) or 'none'})")
        return []
    context_column = next((c for c in CONTEXT_COLUMNS if c in columns), None)
    parts, seen, duplicates, empty = [], set(), [], []
    for row in reader:
        sid, sentence = (row.get("stimulus_id") or "").strip(), row.get("sentence") or ""
        context = (row.get(context_column) or "").strip() if context_column else ""
        if sid in seen:
            duplicates.append(sid)
            continue
        seen.add(sid)
        if not sentence.strip():
            empty.append(sid)
        parts.append((sid, sentence, context or sid))  # no context: a context of its own
    if duplicates:
        problems.append(f"{len(duplicates)} duplicate stimulus_id(s) in {stimuli.name}: {_examples(duplicates)}")
    if empty:
        problems.append(f"{len(empty)} stimulus(es) with empty or whitespace-only text: {_examples(empty)}")
    closed, previous, broken = set(), None, []
    for sid, _, context in parts:
        if context != previous:
            if context in closed:
                broken.append(context)
            if previous is not None:
                closed.add(previous)
            previous = context
    if broken:
        problems.append(f"the parts of a context must be contiguous in {stimuli.name} (in reading order); "
                        f"interrupted: {_examples(dict.fromkeys(broken))}")
    return parts


def read_text_recording(assembly_path: str | os.PathLike[str], stimuli: str | os.PathLike[str]) -> TextRecording:
    """Reads and validates a text recording; raises RecordingError naming every problem."""
    assembly_path = Path(assembly_path)
    raw, problems, stimulus_ids, repeated = check_assembly(assembly_path)
    parts = _read_parts(Path(stimuli), problems)
    unique_ids = list(dict.fromkeys(stimulus_ids))
    texts = {sid for sid, _, _ in parts}
    if parts:
        missing = [s for s in unique_ids if s not in texts]
        extra = [s for s, _, _ in parts if s not in set(unique_ids)]
        if missing:
            problems.append(f"{len(missing)} stimulus id(s) of the assembly have no text in the CSV: {_examples(missing)}")
        if extra:
            problems.append(f"{len(extra)} text(s) of the CSV belong to no presentation of the assembly: {_examples(extra)}")
    if len(unique_ids) < MIN_STIMULI:
        problems.append(f"only {len(unique_ids)} distinct stimuli; 10 cross-validation splits need at least {MIN_STIMULI}")
    if problems:
        raise RecordingError(problems)
    target = average_repetition(raw) if repeated else raw
    digest = hashlib.sha256(b"cortexbox-text-recording-v1\n" + assembly_path.read_bytes())
    for part in parts:
        digest.update("\0".join(part).encode("utf-8") + b"\n")
    return TextRecording(
        target=target,
        repetitions=raw if repeated else None,
        parts=parts,
        data_hash=digest.hexdigest(),
        facts={
            "modality": "text",
            "stimuli": len(parts),
            "contexts": len(dict.fromkeys(c for _, _, c in parts)),
            "neuroids": int(target.sizes[NEUROID]),
            "presentations": int(raw.sizes[PRESENTATION]),
            "repetitions": int(pd.Series(stimulus_ids).value_counts().max()),
        },
    )


def store_text_recording(recording: TextRecording, folder: str | os.PathLike[str], definition: dict[str, Any]) -> Path:
    """Writes the recording (its parts in stimuli.csv) to `folder` atomically."""

    def write_parts(tmp: Path) -> None:
        with open(tmp / "stimuli.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["stimulus_id", "sentence", "context_id"])
            writer.writerows(recording.parts)

    return store_assemblies(folder, recording.target, recording.repetitions,
                            {**definition, "modality": "text", "data_hash": recording.data_hash, **recording.facts},
                            write_parts)


class RecordedTextBenchmark(LanguageBenchmark):
    """A language neural benchmark defined by a stored text recording; see the module docstring."""

    kind: Kind = "neural"
    behaviour = None
    modality: Modality = "text"

    def __init__(self, folder: str | os.PathLike[str], **kwargs: Any):
        self.folder = self.recording_folder = Path(folder)
        d = json.loads((self.folder / "definition.json").read_text())
        self.definition = d
        self.identifier = d["identifier"]
        self.version = int(d["version"])
        self.region = d["region"]
        self.description = d.get("description", "")
        self.citation = d.get("citation", "")
        self.metric = load_metric(METRIC)
        kwargs.pop("data_dir", None)
        super().__init__(data_dir=self.folder, **kwargs)

    @property
    def data_hash(self) -> str:  # the recording's own hash, computed at ingestion
        return self.definition["data_hash"]

    @property
    def metric_name(self) -> str:  # type: ignore[override]
        """The metric library's name of :attr:`metric` (``"linear_predictivity"``)."""
        return self.metric.name

    @cached_property
    def target_assembly(self) -> xr.DataArray:
        return read_assembly(self.folder / "target.nc")

    def _load_stimulus_set(self) -> TextStimulusSet:
        with open(self.folder / "stimuli.csv", newline="", encoding="utf-8") as handle:
            parts = [(r["stimulus_id"], r["sentence"], r["context_id"]) for r in csv.DictReader(handle)]
        return TextStimulusSet(f"{self.identifier}@{self.version}", parts)

    def _compute_ceiling(self) -> Score | None:
        path = self.folder / "repetitions.nc"
        if not path.is_file():
            return None
        return self._labelled(InternalConsistency()(read_assembly(path)))

    def score(self, assembly: xr.DataArray) -> Score:
        """Scores per-part activations (one row per stimulus, matched by ``stimulus_id``)."""
        if "time_bin" in assembly.dims and assembly.sizes["time_bin"] == 1:
            assembly = assembly.squeeze("time_bin", drop=True)
        raw = self.metric(assembly, self.target_assembly)
        attrs = {**self._provenance(), "metric_name": METRIC}
        if self.ceiling is None:
            return dataclasses.replace(raw, attrs={**raw.attrs, **attrs, "normalization": "none (no repetitions, no ceiling)"})
        score = explained_variance(raw, self.ceiling, regime=NORMALIZATION)
        return dataclasses.replace(score, attrs={**score.attrs, **attrs})
