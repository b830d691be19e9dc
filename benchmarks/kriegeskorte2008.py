"""Kriegeskorte et al. 2008, 92 object images: human IT, monkey IT and similarity-judgement RDM benchmarks.

Data: ``<data_dir>/kriegeskorte2008_92images`` (rsatoolbox's ``demos/92imageData``; see its ``PROVENANCE.md``):

* ``Kriegeskorte_Neuron2008_supplementalData.mat``: ``stimuli_92objs`` (the 92 images, 175 x 175 RGB uint8, objects
  on grey) and ``RDMs_mIT_hIT_fig1`` (group RDMs as condensed 4186-vectors: ``mIT_674neurons``, monkey IT, Kiani et
  al. 2007; ``hITvisStim_316vx``, human IT, the mean of the 4 subjects x 2 sessions).
* ``92_brainRDMs.mat``: ``RDMs`` (1 x 4 x 2), human IT per subject (BE, KO, SN, TI) and session, 92 x 92 float32.
* ``92_behavRDMs.mat``: ``rdms_behav_92`` (1 x 16), Mur et al. 2013 similarity-judgement RDMs, 92 x 92.

Ids: ``stimulus_id = f"kriegeskorte2008/image{i + 1:02d}"`` in the order of ``stimuli_92objs`` (the RDMs' order).
The images are served as binary PPM (``P6``) bytes: the pixels exactly, in a format whose bytes do not depend on an
encoder version, so the stimulus-set hash is stable.

Stimulus size (version 2; version 1 showed every benchmark at 2.9 degrees):

* human fMRI (``hIT-rdm``): 2.9 degrees, the image width of the "96-image experiment" (of which these 92 are the
  subset) in Kriegeskorte, Mur & Bandettini 2008, Front. Syst. Neurosci. 2:4, Methodological details: "The stimuli
  were presented at a width of 2.9 degrees visual angle", the experiment of Kriegeskorte et al. 2008 (Neuron).
* monkey IT (``mIT-rdm``, Kiani et al. 2007): 7 degrees, the largest dimension of every image, shown at the fovea, as
  the same lab's set-up is described for Lehky, Kiani, Esteky & Tanaka 2011 (J Neurophysiol 106:1097; the same IT
  recordings and images): "The largest dimension of all stimuli extended 7 degrees". A secondary source (Kiani 2007's
  own methods were not reachable): stated, not certain.
* similarity judgements (``judgements-rdm``, Mur et al. 2013): images dragged on a screen; no size is published, so
  the fMRI size (2.9) is ASSUMED.

Each benchmark places the images at the size its own recording saw, and a layer chosen on the other species' RDM
uses the images at THAT recording's size, so the two IT benchmarks no longer share one placed stimulus set (the
activation cache keys rows by placed pixels, so each placement is extracted once).

Layer commitment (region ``IT``): a benchmark never selects a layer on the data it scores. The human benchmarks
(``hIT-rdm``, ``judgements-rdm``) share one IT commitment, chosen on the monkey IT RDM and stored once under
``hIT-rdm``'s key (``judgements-rdm`` names it as its ``selection_source``, as the Cowley V4 session benchmarks name
``Cowley2023.V4-pls``); ``mIT-rdm`` selects on the human IT group RDM. The selection images are the same 92 images;
the recordings are independent (other species, other subjects). A model's IT layer can therefore differ between
``mIT-rdm`` and the human benchmarks. Brain-Score commits one layer per region, chosen on a separate public data set;
no IT recordings of other images exist here, so one layer shared by ``hIT-rdm`` and ``mIT-rdm`` would have to be
chosen on data that one of the two scores (or on neither's data, i.e. without IT data at all). Keeping each IT
benchmark free of selection on its own target was preferred over a single IT layer.
"""

from __future__ import annotations

from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np
import scipy.io
from scipy.spatial.distance import squareform

from .data import DataNotFoundError
from .rdm_benchmark import RDMBenchmark, RDMTarget
from .stimuli import StimulusSet

__all__ = [
    "MONKEY_VISUAL_DEGREES",
    "SOURCE_VISUAL_DEGREES",
    "Kriegeskorte2008HumanIT",
    "Kriegeskorte2008Judgements",
    "Kriegeskorte2008MonkeyIT",
    "load_human_it",
    "load_human_it_group",
    "load_judgements",
    "load_monkey_it",
    "load_stimulus_set",
    "stimulus_ids",
]

FOLDER = "kriegeskorte2008_92images"
SUPPLEMENT = f"{FOLDER}/Kriegeskorte_Neuron2008_supplementalData.mat"
BRAIN_RDMS = f"{FOLDER}/92_brainRDMs.mat"
BEHAVIOUR_RDMS = f"{FOLDER}/92_behavRDMs.mat"
N_STIMULI = 92

#: Degrees of visual angle of the images in the human fMRI experiment (Kriegeskorte, Mur & Bandettini 2008).
SOURCE_VISUAL_DEGREES = 2.9
#: Degrees of visual angle of the images in the monkey recordings (Kiani et al. 2007; the lab's set-up as described
#: for Lehky et al. 2011: the largest dimension 7 degrees).
MONKEY_VISUAL_DEGREES = 7.0

CITATION = """@article{Kriegeskorte2008matching,
  author  = {Kriegeskorte, Nikolaus and Mur, Marieke and Ruff, Douglas A. and Kiani, Roozbeh and Bodurka, Jerzy and
             Esteky, Hossein and Tanaka, Keiji and Bandettini, Peter A.},
  title   = {Matching categorical object representations in inferior temporal cortex of man and monkey},
  journal = {Neuron},
  volume  = {60},
  number  = {6},
  pages   = {1126--1141},
  year    = {2008},
  doi     = {10.1016/j.neuron.2008.10.043}
}
@article{Nili2014toolbox,
  author  = {Nili, Hamed and Wingfield, Cai and Walther, Alexander and Su, Li and Marslen-Wilson, William and
             Kriegeskorte, Nikolaus},
  title   = {A toolbox for representational similarity analysis},
  journal = {PLoS Computational Biology},
  volume  = {10},
  number  = {4},
  pages   = {e1003553},
  year    = {2014},
  doi     = {10.1371/journal.pcbi.1003553},
  note    = {Data: github.com/rsagroup/rsatoolbox, demos/92imageData (MIT)}
}"""

CITATION_MONKEY = (
    CITATION
    + """
@article{Kiani2007object,
  author  = {Kiani, Roozbeh and Esteky, Hossein and Mirpour, Koorosh and Tanaka, Keiji},
  title   = {Object category structure in response patterns of neuronal population in monkey inferior temporal cortex},
  journal = {Journal of Neurophysiology},
  volume  = {97},
  number  = {6},
  pages   = {4296--4309},
  year    = {2007},
  doi     = {10.1152/jn.00024.2007}
}"""
)

CITATION_JUDGEMENTS = (
    CITATION
    + """
@article{Mur2013human,
  author  = {Mur, Marieke and Meys, Mirjam and Bodurka, Jerzy and Goebel, Rainer and Bandettini, Peter A. and
             Kriegeskorte, Nikolaus},
  title   = {Human object-similarity judgments reflect and transcend the primate-{IT} object representation},
  journal = {Frontiers in Psychology},
  volume  = {4},
  pages   = {128},
  year    = {2013},
  doi     = {10.3389/fpsyg.2013.00128}
}"""
)


def stimulus_ids() -> tuple[str, ...]:
    """The 92 ids in the RDMs' order."""
    return tuple(f"kriegeskorte2008/image{i + 1:02d}" for i in range(N_STIMULI))


def _path(data_dir: Path, relative: str) -> Path:
    path = Path(data_dir) / relative
    if not path.is_file():
        raise DataNotFoundError(f"{path} not found; set CORTEXBOX_DATA_DIR or pass data_dir")
    return path


@lru_cache(maxsize=4)
def _supplement(path: Path) -> dict:
    return scipy.io.loadmat(path)


def _ppm(image: np.ndarray) -> bytes:
    image = np.ascontiguousarray(image, dtype=np.uint8)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image, got shape {image.shape}")
    height, width, _ = image.shape
    return f"P6\n{width} {height}\n255\n".encode("ascii") + image.tobytes()


def load_stimulus_set(data_dir: Path, *, visual_degrees: float = SOURCE_VISUAL_DEGREES) -> StimulusSet:
    """The 92 images (175 x 175 RGB) as PPM bytes, in the RDMs' order."""
    structs = _supplement(_path(data_dir, SUPPLEMENT))["stimuli_92objs"]
    if structs.shape != (1, N_STIMULI):
        raise ValueError(f"stimuli_92objs has shape {structs.shape}, expected (1, {N_STIMULI})")
    images = {sid: _ppm(structs[0, i]["image"]) for i, sid in enumerate(stimulus_ids())}
    return StimulusSet.from_bytes("Kriegeskorte2008.92images", images, visual_degrees=visual_degrees)


def stimulus_categories(data_dir: Path) -> list[str]:
    """Each image's category (human/nonhuman bodypart/face, natural/artificial inanimate)."""
    structs = _supplement(_path(data_dir, SUPPLEMENT))["stimuli_92objs"]
    return [str(structs[0, i]["category"][0]) for i in range(N_STIMULI)]


def _group_rdm(data_dir: Path, name: str) -> np.ndarray:
    groups = _supplement(_path(data_dir, SUPPLEMENT))["RDMs_mIT_hIT_fig1"]
    for k in range(groups.shape[1]):
        if str(groups[0, k]["name"][0]) == name:
            return squareform(np.asarray(groups[0, k]["RDM"], dtype=np.float64).ravel(), checks=False)
    raise ValueError(f"no group RDM named {name!r} in {SUPPLEMENT}")


def load_monkey_it(data_dir: Path) -> RDMTarget:
    """Monkey IT group RDM (674 neurons, Kiani et al. 2007), one 'subject' ``mIT``."""
    return RDMTarget(_group_rdm(data_dir, "mIT_674neurons")[None], ("mIT",), stimulus_ids())


def load_human_it_group(data_dir: Path) -> RDMTarget:
    """Human IT group RDM (316 voxels, mean of 4 subjects x 2 sessions) from the supplemental file."""
    return RDMTarget(_group_rdm(data_dir, "hITvisStim_316vx")[None], ("hIT-group",), stimulus_ids())


def load_human_it(data_dir: Path) -> RDMTarget:
    """Human IT RDM per subject (BE, KO, SN, TI), the mean of the subject's two sessions."""
    structs = scipy.io.loadmat(_path(data_dir, BRAIN_RDMS))["RDMs"]
    if structs.shape != (1, 4, 2):
        raise ValueError(f"RDMs in {BRAIN_RDMS} has shape {structs.shape}, expected (1, 4, 2)")
    rdms, subjects = [], []
    for s in range(structs.shape[1]):
        names = [str(structs[0, s, k]["name"][0]) for k in range(2)]  # 'hIT | BE | Session: 1'
        subject = {name.split("|")[1].strip() for name in names}
        if len(subject) != 1:
            raise ValueError(f"{BRAIN_RDMS}: sessions of one column name different subjects: {names}")
        sessions = [np.asarray(structs[0, s, k]["RDM"], dtype=np.float64) for k in range(2)]
        rdms.append((sessions[0] + sessions[1]) / 2)
        subjects.append(subject.pop())
    return RDMTarget(np.stack(rdms), tuple(subjects), stimulus_ids())


def load_judgements(data_dir: Path) -> RDMTarget:
    """Similarity-judgement RDMs of 16 subjects (Mur et al. 2013)."""
    structs = scipy.io.loadmat(_path(data_dir, BEHAVIOUR_RDMS))["rdms_behav_92"]
    rdms = [np.asarray(structs[0, k]["RDM"], dtype=np.float64) for k in range(structs.shape[1])]
    subjects = [str(structs[0, k]["name"][0]).split("|")[-1].strip() for k in range(structs.shape[1])]
    return RDMTarget(np.stack(rdms), tuple(subjects), stimulus_ids())


class _Kriegeskorte2008(RDMBenchmark):
    version = 2  # v2: each recording's own stimulus size (human 2.9, monkey 7 degrees); v1 used 2.9 for all
    region = "IT"
    source_visual_degrees = SOURCE_VISUAL_DEGREES

    def _load_stimulus_set(self) -> StimulusSet:
        return load_stimulus_set(self.data_dir, visual_degrees=self.source_visual_degrees)

    def _images_at(self, visual_degrees: float) -> StimulusSet:
        """The 92 images at `visual_degrees`: this benchmark's own set when the size is its own."""
        if visual_degrees == self.source_visual_degrees:
            return self.stimulus_set
        return load_stimulus_set(self.data_dir, visual_degrees=visual_degrees)


_COMMON = (
    "The 92 object images of Kriegeskorte et al. 2008 (175 x 175 px, objects on grey; human and non-human faces and "
    "bodies, natural and artificial inanimate objects), each benchmark showing them at its own recording's size "
    "(human fMRI 2.9 degrees: Kriegeskorte, Mur & Bandettini 2008, Front. Syst. Neurosci. 2:4; monkey IT 7 degrees: "
    "the largest dimension, as the Kiani/Tanaka lab's set-up is described for Lehky et al. 2011, a secondary source; "
    "judgements: no published size, 2.9 assumed). "
    "Model: the committed IT layer's RDM, 1 - Pearson r between the stimuli's unit vectors (Brain-Score 'rdm'), "
    "compared by Spearman rho over the upper triangle (4186 pairs). "
)


class Kriegeskorte2008HumanIT(_Kriegeskorte2008):
    """``Kriegeskorte2008.hIT-rdm``: human IT fMRI RDMs (4 subjects), ceiling-normalised."""

    identifier = "Kriegeskorte2008.hIT-rdm"
    citation = CITATION
    description = (
        _COMMON + "Target: human IT fMRI RDMs (316 most visually responsive voxels) of 4 subjects, each the mean of the "
        "subject's 2 sessions. Raw = mean over subjects of rho(model RDM, subject RDM); error = its standard error over "
        "subjects. Ceiling (Nili et al. 2014): upper bound = mean over subjects of rho(subject RDM, mean RDM of all 4) "
        "= 0.661 (Brain-Score's RSA ceiling), leave-one-subject-out lower bound = 0.379, both recorded. Ceiled = raw / "
        "upper bound (unclipped, as Brain-Score's RSA; a model reproducing the group-mean RDM exactly scores 1). "
        "Layer selection: the IT layer is chosen on the monkey IT RDM (same images, independent recordings), never "
        "on the human data scored here; Kriegeskorte2008.judgements-rdm reuses this choice. Kriegeskorte2008.mIT-rdm "
        "chooses on the human IT RDM instead, so a model's IT layer there may differ (no IT data of other images "
        "exist to choose one shared layer on)."
    )

    def _data_files(self) -> list[str]:
        return [SUPPLEMENT, BRAIN_RDMS]

    def _load_target(self) -> RDMTarget:
        return load_human_it(self.data_dir)

    def _load_selection(self) -> tuple[StimulusSet, RDMTarget]:
        return self._images_at(MONKEY_VISUAL_DEGREES), load_monkey_it(self.data_dir)


class Kriegeskorte2008MonkeyIT(_Kriegeskorte2008):
    """``Kriegeskorte2008.mIT-rdm``: monkey IT group RDM, no ceiling (raw reported)."""

    identifier = "Kriegeskorte2008.mIT-rdm"
    citation = CITATION_MONKEY
    description = (
        _COMMON + "Target: the monkey IT RDM of 674 neurons (Kiani et al. 2007), one group RDM. Raw = rho(model RDM, "
        "monkey IT RDM). NO CEILING: with a single group RDM there is no between-subject or between-repeat "
        "variability to estimate one from, so ceiling and ceiled are None and the raw rho is reported (not "
        "comparable to ceiled scores). Layer selection: the IT layer is chosen on the human IT group RDM (same "
        "images, independent recordings), never on the monkey data scored here; it may therefore differ from the "
        "IT layer of the human benchmarks, which is chosen on this monkey RDM. Images at 7 degrees here, at 2.9 "
        "for the selection on the human RDM."
    )
    source_visual_degrees = MONKEY_VISUAL_DEGREES

    def _data_files(self) -> list[str]:
        return [SUPPLEMENT]

    def _load_target(self) -> RDMTarget:
        return load_monkey_it(self.data_dir)

    def _load_selection(self) -> tuple[StimulusSet, RDMTarget]:
        return self._images_at(SOURCE_VISUAL_DEGREES), load_human_it_group(self.data_dir)


class Kriegeskorte2008Judgements(_Kriegeskorte2008):
    """``Kriegeskorte2008.judgements-rdm``: 16 subjects' similarity-judgement RDMs (Mur et al. 2013), ceiled."""

    identifier = "Kriegeskorte2008.judgements-rdm"
    citation = CITATION_JUDGEMENTS
    description = (
        _COMMON + "Target: similarity-judgement RDMs of 16 human subjects (Mur et al. 2013; images arranged by "
        "similarity on a screen). The model's IT layer is compared (Mur et al. relate the judgements to the IT "
        "representation). Raw = mean over subjects of rho(model RDM, subject RDM); error = its standard error over "
        "subjects. Ceiling (Nili et al. 2014): upper bound = mean over subjects of rho(subject RDM, mean RDM of all "
        "16) = 0.575, leave-one-subject-out lower bound = 0.478, both recorded; ceiled = raw / upper bound "
        "(unclipped). Layer selection: the same IT commitment as Kriegeskorte2008.hIT-rdm (its selection_source: "
        "chosen once on the monkey IT RDM, same images), never on the judgements."
    )

    @cached_property
    def selection_source(self) -> Kriegeskorte2008HumanIT:
        """The benchmark whose stored IT choice this one reuses (the same selection data: the monkey IT RDM)."""
        return Kriegeskorte2008HumanIT(data_dir=self.data_dir, cache_dir=self.cache_dir)

    def _data_files(self) -> list[str]:
        return [SUPPLEMENT, BEHAVIOUR_RDMS]

    def _load_target(self) -> RDMTarget:
        return load_judgements(self.data_dir)

    def _load_selection(self) -> tuple[StimulusSet, RDMTarget]:
        return self._images_at(MONKEY_VISUAL_DEGREES), load_monkey_it(self.data_dir)
