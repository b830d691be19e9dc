"""Cowley et al. 2023 macaque V4 (Utah arrays): data loaders and the ``Cowley2023.V4-pls`` benchmark.

Data: ``<data_dir>/cowley2023_v4`` (GitHub ``cowleygroup/V4_compact_models``, ``data_V4_responses/``; see its
``PROVENANCE.md``). Per session: ``images/images_<session>.zip`` (112 x 112 RGB JPEGs ``image0001.jpg`` ...),
``responses_repeat_averaged/responses_<session>.npy`` (neurons x images, mean spike count in a 100 ms bin) and, for
session 210325 only, ``responses_raw/responses_210325.npy`` (neurons x images x repeats, NaN-padded; 6-10 repeats
per image). Response column ``i`` belongs to ``image{i+1:04d}.jpg``.

Ids: ``stimulus_id = f"{session}/image{i+1:04d}"``; ``neuroid_id = f"{session}/neuron{j}"`` (0-based, the authors'
numbering). Neurons are not matched across sessions.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np
import xarray as xr

from .benchmark import NeuralBenchmark
from .data import DataNotFoundError
from .dims import NEUROID, NEUROID_ID, PRESENTATION, REPETITION, STIMULUS_ID
from .stimuli import StimulusSet

__all__ = [
    "Cowley2023V4PLS",
    "SELECTION_SEED",
    "SELECTION_SESSION",
    "SELECTION_SIZE",
    "SOURCE_VISUAL_DEGREES",
    "SOURCE_VISUAL_DEGREES_SOURCE",
    "TEST_SESSION",
    "load_raw_assembly",
    "load_session_assembly",
    "load_stimulus_set",
    "selection_stimulus_indices",
]

FOLDER = "cowley2023_v4"
TEST_SESSION = "210325"
SELECTION_SESSION = "210224"
SELECTION_SIZE = 300
SELECTION_SEED = 0

#: Degrees of visual angle the images spanned: 11.2 (112 px at 0.1 degree per pixel), the value of Brain-Score's own
#: benchmark of these recordings (brain-score/vision, ``brainscore_vision/benchmarks/cowley2026/benchmark.py``,
#: ``VISUAL_DEGREES = 11.2``, commit 01689dc9; its data packaging was run from the first author's machine). Brain-Score
#: lists sessions 190923, 201025, 210225 and 211022 (two monkeys, same rig); ours (210325, 210224: monkey PE, as
#: 201025 and 210225) are taken to share the set-up. Version 1 ASSUMED 8 degrees (no source was reachable then).
#: The data release itself states no size (``readme.txt``: "resolution 112 x 112 x 3").
SOURCE_VISUAL_DEGREES = 11.2
SOURCE_VISUAL_DEGREES_SOURCE = (
    "stimulus size 11.2 degrees as in Brain-Score's benchmark of these recordings (brain-score/vision "
    "brainscore_vision/benchmarks/cowley2026/benchmark.py, VISUAL_DEGREES = 11.2; 112 px at 0.1 deg/px); version 1 "
    "assumed 8 degrees")

_SESSION_ANIMAL = {"210325": "PE", "210224": "PE"}
_IMAGE_NAME = re.compile(r"(?:^|/)image(\d{4})\.jpg$")

CITATION = """@article{Cowley2023compact,
  author  = {Cowley, Benjamin R. and Stan, Patricia L. and Pillow, Jonathan W. and Smith, Matthew A.},
  title   = {Compact deep neural network models of visual cortex},
  journal = {bioRxiv},
  year    = {2023},
  doi     = {10.1101/2023.11.22.568315},
  note    = {Published as "Compact deep neural network models of the visual cortex", Nature (2026),
             doi:10.1038/s41586-026-10150-1. Data: github.com/cowleygroup/V4_compact_models (GPL-3.0)}
}"""


def _folder(data_dir: Path) -> Path:
    folder = Path(data_dir) / FOLDER
    if not folder.is_dir():
        raise DataNotFoundError(f"{folder} not found; set CORTEXBOX_DATA_DIR or pass data_dir")
    return folder


def _relative_files(session: str, *, raw: bool) -> list[str]:
    files = [
        f"{FOLDER}/images/images_{session}.zip",
        f"{FOLDER}/responses_repeat_averaged/responses_{session}.npy",
    ]
    if raw:
        files.append(f"{FOLDER}/responses_raw/responses_{session}.npy")
    return files


def _stimulus_ids(session: str, n_images: int) -> np.ndarray:
    return np.array([f"{session}/image{i + 1:04d}" for i in range(n_images)], dtype=object)


def _neuroid_coords(session: str, n_neurons: int) -> dict[str, tuple[str, np.ndarray]]:
    return {
        NEUROID_ID: (NEUROID, np.array([f"{session}/neuron{j}" for j in range(n_neurons)], dtype=object)),
        "neuron": (NEUROID, np.arange(n_neurons)),
        "region": (NEUROID, np.full(n_neurons, "V4", dtype=object)),
        "animal": (NEUROID, np.full(n_neurons, _SESSION_ANIMAL.get(session, ""), dtype=object)),
        "session": (NEUROID, np.full(n_neurons, session, dtype=object)),
    }


def load_session_assembly(data_dir: Path, session: str) -> xr.DataArray:
    """Repeat-averaged responses of one session as a ``(presentation, neuroid)`` assembly (image order)."""
    path = _folder(data_dir) / "responses_repeat_averaged" / f"responses_{session}.npy"
    responses = np.load(path)  # (neurons, images)
    n_neurons, n_images = responses.shape
    return xr.DataArray(
        responses.T.astype(np.float64),
        dims=(PRESENTATION, NEUROID),
        coords={
            STIMULUS_ID: (PRESENTATION, _stimulus_ids(session, n_images)),
            "image_number": (PRESENTATION, np.arange(1, n_images + 1)),
            **_neuroid_coords(session, n_neurons),
        },
        attrs={"identifier": f"Cowley2023.{session}.repeat_averaged", "units": "spike count per 100 ms, mean"},
    )


def load_raw_assembly(data_dir: Path, session: str = TEST_SESSION) -> xr.DataArray:
    """Per-repeat responses as a ``(presentation, neuroid)`` assembly, one presentation per existing repeat.

    NaN pads (images shown fewer than the maximum number of times) are dropped. Presentations are ordered by
    image, then repeat; ``repetition`` is the repeat's index in the authors' array (0-based).
    """
    path = _folder(data_dir) / "responses_raw" / f"responses_{session}.npy"
    raw = np.load(path)  # (neurons, images, repeats)
    n_neurons, n_images, _ = raw.shape
    present = ~np.isnan(raw)
    if not (present == present[:1]).all():
        raise ValueError(f"{path}: the NaN pattern differs across neurons; cannot build one presentation per trial")
    image_index, repetition = np.nonzero(present[0])  # row-major: by image, then repeat
    values = raw[:, image_index, repetition].T
    return xr.DataArray(
        values.astype(np.float64),
        dims=(PRESENTATION, NEUROID),
        coords={
            STIMULUS_ID: (PRESENTATION, _stimulus_ids(session, n_images)[image_index]),
            REPETITION: (PRESENTATION, repetition),
            "image_number": (PRESENTATION, image_index + 1),
            **_neuroid_coords(session, n_neurons),
        },
        attrs={"identifier": f"Cowley2023.{session}.raw", "units": "spike count per 100 ms"},
    )


def load_stimulus_set(data_dir: Path, session: str, *, visual_degrees: float = SOURCE_VISUAL_DEGREES) -> StimulusSet:
    """The images of one session, in response-column order, read from the session's zip."""
    path = _folder(data_dir) / "images" / f"images_{session}.zip"
    with zipfile.ZipFile(path) as archive:
        numbered = {}
        for name in archive.namelist():
            match = _IMAGE_NAME.search(name)
            if match:
                numbered[int(match.group(1))] = name
    if sorted(numbered) != list(range(1, len(numbered) + 1)):
        raise ValueError(f"{path}: images are not numbered image0001.jpg .. image{len(numbered):04d}.jpg")
    ids = _stimulus_ids(session, len(numbered))
    members = {str(ids[number - 1]): numbered[number] for number in sorted(numbered)}
    return StimulusSet.from_zip(f"Cowley2023.{session}", path, members, visual_degrees=visual_degrees)


def selection_stimulus_indices(n_images: int, size: int = SELECTION_SIZE, seed: int = SELECTION_SEED) -> np.ndarray:
    """The fixed image subset used for layer selection: ``RandomState(seed).permutation(n_images)[:size]``, sorted.

    ``numpy.random.RandomState`` keeps its stream stable across numpy versions, so the subset never changes.
    """
    return np.sort(np.random.RandomState(seed).permutation(n_images)[:size])


class Cowley2023V4PLS(NeuralBenchmark):
    """``Cowley2023.V4-pls``: PLS neural predictivity on Cowley et al. 2023 V4 test session 210325.

    * Target: 50 V4 neurons x 640 images (Bashivan et al. 2019 style rendered objects), repeat-averaged.
    * Metric: Brain-Score ``pls`` (:class:`~cortexbox.benchmarks.metrics.CrossRegressedCorrelation`).
    * Ceiling: Brain-Score internal consistency over the raw repeats
      (:class:`~cortexbox.benchmarks.metrics.InternalConsistency`).
    * Normalisation: ``raw**2 / ceiling`` (Brain-Score since 2026-01).
    * Layer selection: 300 fixed images (:func:`selection_stimulus_indices`, seed 0) of session 210224, the authors'
      validation session (67 neurons, different images, same monkey), scored with the same metric, raw r.
    """

    identifier = "Cowley2023.V4-pls"
    version = 2  # v2: 11.2 degrees (Brain-Score's value) instead of the assumed 8
    region = "V4"
    source_visual_degrees = SOURCE_VISUAL_DEGREES
    citation = CITATION
    description = (
        "Macaque V4 (Utah array, monkey PE) spike counts to 640 images (Bashivan et al. 2019 rendered objects) from "
        "Cowley et al. 2023, test session 210325: 50 neurons, 6-10 repeats per image, scored on the repeat average. "
        "Metric: Brain-Score 'pls' (PLSRegression(25, scale=False), 10 shuffle splits 90/10, random_state=1, "
        "Pearson r per neuron, median over neurons, mean over splits). Ceiling: split-half internal consistency "
        "over repetitions with Spearman-Brown. Ceiled score = r**2 / ceiling. Layer selection uses 300 fixed "
        "images of the authors' validation session 210224 (67 neurons), never the scored images. Images: "
        f"{SOURCE_VISUAL_DEGREES_SOURCE}."
    )

    def _data_files(self) -> list[str]:
        return _relative_files(TEST_SESSION, raw=True) + _relative_files(SELECTION_SESSION, raw=False)

    def _load_target(self) -> xr.DataArray:
        return load_session_assembly(self.data_dir, TEST_SESSION)

    def _load_repetitions(self) -> xr.DataArray:
        return load_raw_assembly(self.data_dir, TEST_SESSION)

    def _load_stimulus_set(self) -> StimulusSet:
        stimulus_set = load_stimulus_set(self.data_dir, TEST_SESSION, visual_degrees=self.source_visual_degrees)
        if stimulus_set.stimulus_ids != [str(s) for s in self.target_assembly[STIMULUS_ID].values]:
            raise ValueError("Cowley2023 210325: images and responses do not line up")
        return stimulus_set

    def _load_selection(self) -> tuple[StimulusSet, xr.DataArray]:
        assembly = load_session_assembly(self.data_dir, SELECTION_SESSION)
        indices = selection_stimulus_indices(assembly.sizes[PRESENTATION])
        assembly = assembly.isel({PRESENTATION: indices})
        full = load_stimulus_set(self.data_dir, SELECTION_SESSION, visual_degrees=self.source_visual_degrees)
        ids = [str(s) for s in assembly[STIMULUS_ID].values]
        stimulus_set = full.subset(ids, identifier=f"Cowley2023.{SELECTION_SESSION}.selection{SELECTION_SIZE}")
        return stimulus_set, assembly
