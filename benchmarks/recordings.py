"""New recordings become benchmarks: read, validate and store a recording, and score on it.

A recording is a netCDF assembly in Brain-Score's format (presentation x neuroid, with
`stimulus_id`, `neuroid_id` and, where the experiment repeated stimuli, `repetition`) plus
its images: a folder of files named `<stimulus_id>.<ext>`, or a CSV (`stimulus_id`,
`filename`) next to a folder or a zip of those files, as Brain-Score packages them.

`read_recording` collects every problem it finds and raises one `RecordingError` listing
them all, so a contributor fixes a damaged recording in one round. `store_recording` writes
the validated data to a folder (assembly.nc, stimuli.zip, definition.json) that
`RecordedBenchmark` loads: the same NeuralBenchmark machinery as the built-in benchmarks.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from PIL import Image

from .assemblies import average_repetition
from .benchmark import NeuralBenchmark
from .cowley2023 import TEST_SESSION, Cowley2023V4PLS, load_raw_assembly
from .cowley2023 import _folder as _cowley_folder
from .dims import NEUROID, NEUROID_ID, PRESENTATION, REPETITION, STIMULUS_ID, TIME_BIN
from .netcdf import read_assembly, write_assembly
from .score import Score
from .shared import shared_instance
from .stimuli import StimulusSet

__all__ = [
    "Cowley2023V4PLSRecording",
    "Recording",
    "RecordingError",
    "RecordedBenchmark",
    "check_assembly",
    "package_cowley2023",
    "read_recording",
    "store_assemblies",
    "store_recording",
]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp"}
MIN_STIMULI = 20


class RecordingError(ValueError):
    """A recording cannot become a benchmark; `problems` lists every reason found."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("the recording cannot be ingested:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass
class Recording:
    """A validated recording, ready to store."""

    target: xr.DataArray  # repeat-averaged, (presentation, neuroid), one row per stimulus
    repetitions: xr.DataArray | None  # per-trial, with `repetition`, when the stimuli were repeated
    images: dict[str, bytes]  # stimulus_id -> encoded image, in the target's order
    data_hash: str
    facts: dict[str, Any] = field(default_factory=dict)


def _examples(values, limit: int = 5) -> str:
    values = list(values)
    shown = ", ".join(repr(v) for v in values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def _read_images(stimuli: Path, stimuli_zip: Path | None, problems: list[str]) -> dict[str, bytes]:
    """stimulus_id -> bytes, from a folder, or a CSV with a folder or zip of files."""
    images: dict[str, bytes] = {}
    if stimuli.is_dir():
        for path in sorted(stimuli.iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if path.stem in images:
                problems.append(f"two image files for stimulus {path.stem!r} in {stimuli}")
                continue
            images[path.stem] = path.read_bytes()
        return images
    if stimuli.suffix.lower() != ".csv" or not stimuli.is_file():
        problems.append(f"stimuli must be a folder of images or a CSV file, got {stimuli}")
        return images
    with open(stimuli, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not {"stimulus_id", "filename"} <= set(rows[0]):
        problems.append(f"{stimuli.name} needs the columns stimulus_id and filename")
        return images
    container = stimuli_zip or stimuli.parent
    archive = zipfile.ZipFile(container) if container.is_file() else None
    names = {Path(n).name: n for n in archive.namelist()} if archive else {}
    try:
        for row in rows:
            sid, filename = row["stimulus_id"], row["filename"]
            if sid in images:
                problems.append(f"stimulus_id {sid!r} appears twice in {stimuli.name}")
                continue
            try:
                if archive is not None:
                    images[sid] = archive.read(names.get(Path(filename).name, filename))
                else:
                    images[sid] = (container / filename).read_bytes()
            except (KeyError, OSError):
                problems.append(f"image file {filename!r} of stimulus {sid!r} is not in {container.name}")
    finally:
        if archive is not None:
            archive.close()
    return images


def _check_decodable(images: dict[str, bytes], problems: list[str]) -> dict[str, tuple[int, int]]:
    sizes = {}
    bad = []
    for sid, blob in images.items():
        try:
            with Image.open(io.BytesIO(blob)) as image:
                image.load()
                sizes[sid] = image.size
        except Exception:  # noqa: BLE001 - PIL raises many kinds
            bad.append(sid)
    if bad:
        problems.append(f"{len(bad)} image(s) cannot be decoded: {_examples(bad)}")
    return sizes


def check_assembly(assembly_path: Path) -> tuple[xr.DataArray, list[str], list[str], bool]:
    """Reads and checks an assembly (dims, coords, values, ids): (raw, problems, stimulus ids, repeated).
    Shared by image and text recordings; raises RecordingError where nothing further can be checked."""
    problems: list[str] = []
    try:
        raw = read_assembly(assembly_path)
    except (OSError, ValueError) as e:
        raise RecordingError([f"cannot read the assembly {assembly_path}: {e}"]) from None
    if TIME_BIN in raw.dims:
        if raw.sizes[TIME_BIN] != 1:
            problems.append(f"{raw.sizes[TIME_BIN]} time bins: temporal recordings are not supported yet (give one bin)")
        else:
            raw = raw.squeeze(TIME_BIN, drop=True)
    if set(raw.dims) != {PRESENTATION, NEUROID}:
        raise RecordingError(problems + [f"the assembly's dims must be presentation and neuroid (and time_bin), got {tuple(raw.dims)}"])
    raw = raw.transpose(PRESENTATION, NEUROID)
    for coord, dim in ((STIMULUS_ID, PRESENTATION), (NEUROID_ID, NEUROID)):
        if coord not in raw.coords or raw[coord].dims != (dim,):
            problems.append(f"the assembly needs a {coord!r} coordinate on {dim}")
    if problems:
        raise RecordingError(problems)
    if not np.issubdtype(raw.dtype, np.number):
        problems.append(f"values must be numbers, got {raw.dtype}")
    elif not np.isfinite(raw.values).all():
        bad = ~np.isfinite(raw.values)
        rows = np.flatnonzero(bad.any(axis=1))
        problems.append(
            f"{int(bad.sum())} NaN or infinite value(s), in the presentations of stimuli "
            f"{_examples(raw[STIMULUS_ID].values[rows])}"
        )
    neuroids = pd.Index(raw[NEUROID_ID].values)
    if not neuroids.is_unique:
        problems.append(f"duplicate neuroid_id: {_examples(neuroids[neuroids.duplicated()].unique())}")
    stimulus_ids = [str(s) for s in raw[STIMULUS_ID].values]
    repeated = len(set(stimulus_ids)) < len(stimulus_ids)
    if repeated and REPETITION not in raw.coords:
        problems.append("stimuli occur more than once but there is no 'repetition' coordinate")
    if repeated and REPETITION in raw.coords:
        pairs = pd.Index(list(zip(stimulus_ids, raw[REPETITION].values)))
        if not pairs.is_unique:
            problems.append(f"duplicate (stimulus_id, repetition) pairs: {_examples(pairs[pairs.duplicated()][:5])}")
    return raw, problems, stimulus_ids, repeated


def read_recording(assembly_path: str | os.PathLike[str], stimuli: str | os.PathLike[str],
                   stimuli_zip: str | os.PathLike[str] | None = None) -> Recording:
    """Reads and validates a recording; raises RecordingError naming every problem."""
    assembly_path = Path(assembly_path)
    raw, problems, stimulus_ids, repeated = check_assembly(assembly_path)

    images = _read_images(Path(stimuli), Path(stimuli_zip) if stimuli_zip else None, problems)
    unique_ids = list(dict.fromkeys(stimulus_ids))
    missing = [s for s in unique_ids if s not in images]
    extra = [s for s in images if s not in set(unique_ids)]
    if missing:
        problems.append(f"{len(missing)} stimulus id(s) of the assembly have no image: {_examples(missing)}")
    if extra:
        problems.append(f"{len(extra)} image(s) belong to no presentation of the assembly: {_examples(extra)}")
    if len(unique_ids) < MIN_STIMULI:
        problems.append(f"only {len(unique_ids)} distinct stimuli; 10 cross-validation splits need at least {MIN_STIMULI}")
    sizes = _check_decodable({s: images[s] for s in unique_ids if s in images}, problems)
    if problems:
        raise RecordingError(problems)

    repetitions = None
    if repeated:
        repetitions = raw
        target = average_repetition(raw)
        n_reps = pd.Series(stimulus_ids).value_counts()
        if n_reps.max() < 2:
            raise RecordingError(["a split-half ceiling needs at least two repetitions of some stimuli"])
    else:
        target = raw
    order = [str(s) for s in target[STIMULUS_ID].values]
    digest = hashlib.sha256(assembly_path.read_bytes())
    for sid in order:
        digest.update(sid.encode() + b"\0" + hashlib.sha256(images[sid]).digest())
    return Recording(
        target=target,
        repetitions=repetitions,
        images={sid: images[sid] for sid in order},
        data_hash=digest.hexdigest(),
        facts={
            "stimuli": len(order),
            "neuroids": int(target.sizes[NEUROID]),
            "presentations": int(raw.sizes[PRESENTATION]),
            "repetitions": int(pd.Series(stimulus_ids).value_counts().max()),
            "image_sizes": sorted({f"{w}x{h}" for w, h in sizes.values()}),
        },
    )


def store_assemblies(folder: str | os.PathLike[str], target: xr.DataArray, repetitions: xr.DataArray | None,
                     definition: dict[str, Any], write_stimuli: Callable[[Path], None]) -> Path:
    """Writes a recording's assemblies (target.nc, repetitions.nc if any), its stimuli (``write_stimuli(folder)``)
    and definition.json to `folder` atomically: a temporary sibling renamed into place. Image and text
    recordings share it."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        write_assembly(target, tmp / "target.nc")
        if repetitions is not None:
            write_assembly(repetitions, tmp / "repetitions.nc")
        write_stimuli(tmp)
        (tmp / "definition.json").write_text(json.dumps(definition, indent=2))
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def store_recording(recording: Recording, folder: str | os.PathLike[str], definition: dict[str, Any]) -> Path:
    """Writes the recording (its images in stimuli.zip) to `folder` atomically."""

    def write_images(tmp: Path) -> None:
        with zipfile.ZipFile(tmp / "stimuli.zip", "w", zipfile.ZIP_STORED) as archive:
            for sid, blob in recording.images.items():
                archive.writestr(f"{sid}", blob)

    return store_assemblies(folder, recording.target, recording.repetitions,
                            {**definition, "data_hash": recording.data_hash, **recording.facts}, write_images)


class RecordedBenchmark(NeuralBenchmark):
    """A benchmark defined by a stored recording (see `store_recording`): pls, with the
    internal-consistency ceiling when the recording has repetitions, r²/ceiling."""

    def __init__(self, folder: str | os.PathLike[str], **kwargs: Any):
        self.folder = self.recording_folder = Path(folder)
        d = json.loads((self.folder / "definition.json").read_text())
        self.definition = d
        self.identifier = d["identifier"]
        self.version = int(d["version"])
        self.region = d["region"]
        self.source_visual_degrees = float(d["visual_degrees"])
        self.description = d.get("description", "")
        self.citation = d.get("citation", "")
        super().__init__(data_dir=self.folder, **kwargs)

    def _data_files(self) -> list[str]:
        return sorted(p.name for p in self.folder.iterdir() if p.name != "definition.json")

    @property
    def data_hash(self) -> str:  # the recording's own hash, computed at ingestion
        return self.definition["data_hash"]

    def _load_target(self) -> xr.DataArray:
        return read_assembly(self.folder / "target.nc")

    def _load_repetitions(self) -> xr.DataArray:
        path = self.folder / "repetitions.nc"
        if not path.is_file():
            raise ValueError(f"{self.identifier} has no repeated presentations, so no ceiling")
        return read_assembly(path)

    @property
    def ceiling(self) -> Score | None:  # type: ignore[override]
        """The internal-consistency ceiling of the repetitions; ``None`` without repetitions."""
        if not (self.folder / "repetitions.nc").is_file():
            return None
        return super().ceiling

    def score(self, assembly: xr.DataArray):
        if self.ceiling is not None:
            return super().score(assembly)
        raw = self.metric(self._squeeze_time(assembly), self.target_assembly)
        return Score(raw=raw.raw, error=raw.error, values=raw.values,
                     attrs={**raw.attrs, "benchmark": self.identifier, "benchmark_version": self.version,
                            "data_hash": self.data_hash, "normalization": "none (no repetitions, no ceiling)"})

    def _load_stimulus_set(self) -> StimulusSet:
        ids = [str(s) for s in self.target_assembly[STIMULUS_ID].values]
        return StimulusSet.from_zip(f"{self.identifier}@{self.version}", self.folder / "stimuli.zip", {s: s for s in ids},
                                    visual_degrees=self.source_visual_degrees)

    @property
    def selection_source(self) -> NeuralBenchmark | None:
        """The built-in benchmark whose selection data commits this region's layer (the registry's shared
        instance, with the default data folder)."""
        provider = SELECTION_PROVIDERS.get(self.region)
        return None if provider is None else shared_instance(provider)

    @property
    def selection_stimulus_set(self) -> StimulusSet | None:
        source = self.selection_source
        return None if source is None else source.selection_stimulus_set

    def score_for_selection(self, assembly: xr.DataArray) -> float:
        source = self.selection_source
        if source is None:
            raise ValueError(f"{self.identifier}: region {self.region!r} has no layer-selection data")
        return source.score_for_selection(assembly)


def package_cowley2023(data_dir: str | os.PathLike[str], folder: str | os.PathLike[str],
                       session: str = TEST_SESSION) -> tuple[Path, Path, Path]:
    """Packages one Cowley et al. 2023 session as a recording in Brain-Score's format, as a
    contributor would hand it to `cortexbox benchmarks ingest`: ``assembly.nc`` (every trial,
    presentation x neuroid, with ``stimulus_id`` and ``repetition``) and ``stimuli.csv``
    (stimulus_id, filename) naming the files in the authors' own image zip, which is returned
    as the third path (``--stimuli-zip``) and not copied."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    raw = load_raw_assembly(Path(data_dir), session)
    archive = _cowley_folder(Path(data_dir)) / "images" / f"images_{session}.zip"
    write_assembly(raw, folder / "assembly.nc")
    with open(folder / "stimuli.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["stimulus_id", "filename"])
        for sid in dict.fromkeys(str(s) for s in raw[STIMULUS_ID].values):
            writer.writerow([sid, f"{sid.split('/', 1)[1]}.jpg"])  # "210325/image0001" -> image0001.jpg
    return folder / "assembly.nc", folder / "stimuli.csv", archive


class Cowley2023V4PLSRecording(Cowley2023V4PLS):
    """``Cowley2023.V4-pls`` defined through the ingestion path: the session is packaged as a
    recording (`package_cowley2023`) and read back with `read_recording`, so every check an
    ingested recording passes (dims, ids, finite values, duplicates, images present and
    decodable, repetitions) runs on it, and the scoring target and the ceiling's trials are the
    recording's repeat average and repetitions. These equal the authors' repeat-averaged file
    bit for bit, so the numbers are those of `Cowley2023V4PLS`. The identifier, version, data
    hash (of the source files read), stimulus set and layer-selection data are unchanged."""

    @cached_property
    def recording(self) -> Recording:
        with tempfile.TemporaryDirectory(prefix="cowley2023-recording-") as tmp:
            return read_recording(*package_cowley2023(self.data_dir, tmp))

    def _load_target(self) -> xr.DataArray:
        return self.recording.target

    def _load_repetitions(self) -> xr.DataArray:
        repetitions = self.recording.repetitions
        if repetitions is None:  # the packaged session always has its per-repeat trials
            raise ValueError(f"{self.identifier}: the packaged recording has no repetitions")
        return repetitions


#: The built-in benchmark whose selection data commits a layer for each region, when the recording brings none of
#: its own (registered under its ``identifier``; :func:`~.shared.shared_instance` gives the registry's instance).
SELECTION_PROVIDERS: dict[str, type[NeuralBenchmark]] = {"V4": Cowley2023V4PLSRecording}
