"""A model's metadata is a claim: the conformance run checks it against what the model does (threat T10).

Before a model image is registered (`cortexbox models add`) or scored (scoring/job.py, once per image digest), the
orchestrator runs every output the model declares on a handful of public stimuli made here (images drawn from a
seed, or public sentences; never a recording) and checks:

* visual degrees: an image model's span is in `DEGREES` (the wire contract only asks for (0, 360]);
* regions: each region's committed layer, and each commitment layer, is a declared layer (validate_model_info);
* layers and behaviours: each answers for every stimulus, finite, at its declared shape (the client checks both
  while streaming); a declared output that fails while others work is a lie about what the model serves;
* label spaces: the behaviours benchmarks ask for answer in theirs (`logits`: the 1000 ImageNet classes, or 1001
  with a background class; `surprisal`: bits, never negative; `next_word`: a non-empty word).

A lie fails as ``nonconformant`` with one line naming it. A model broken as a whole (every output fails, it
crashes, runs out of memory or time) keeps its own class: that is not a lie, and the scoring run would say the same.
The outcome is stored with the model's description (``info["conformance"]``), so a registered image is checked once.
"""

from __future__ import annotations

import io
import math
import time
from typing import Any

import numpy as np

from cortexbox.orchestrator.client import ModelDescription, check_output_budgets
from cortexbox.orchestrator.errors import FailureClass, ModelFailure, ProtocolViolation

#: Bumped when the checks change: a model checked under an older version is checked again.
VERSION = 1
#: Degrees of visual angle an image model may span. Brain-Score's models commit 8; an experiment shows 2-20.
#: Outside this, placing a stimulus shrinks it to a few pixels or blows one pixel up to the whole input.
DEGREES = (1.0, 60.0)
#: Public stimuli per conformance run: more than one batch of most models, so batches are compared too.
N_IMAGES = 6
#: Text: two contexts of public sentences, parts of a word each.
SENTENCES = ("The old man walked slowly along the river", "Colorless green ideas sleep furiously tonight")
#: Results held per conformance run (float32 rows of every stimulus); outputs beyond it go in further runs.
GROUP_BYTES = 256 * 1024**2
#: Failures that a single output can cause; when others work, the output's declaration is the lie.
_PER_OUTPUT = (FailureClass.MODEL_ERROR, FailureClass.BAD_OUTPUT, FailureClass.REJECTED)


class Nonconformant(ModelFailure):
    def __init__(self, message: str):
        super().__init__(FailureClass.NONCONFORMANT, message)


def public_images(n: int = N_IMAGES) -> dict[str, bytes]:
    """`n` 96x96 PNG images from a fixed seed: gradients, stripes, a disc and noise, each unlike the others."""
    from PIL import Image

    rng = np.random.default_rng(20261208)
    y, x = np.mgrid[0:96, 0:96] / 95.0
    images = {}
    for i in range(n):
        kind = i % 4
        if kind == 0:
            base = np.stack([x ** (1 + i), y, 1 - x], axis=-1)
        elif kind == 1:
            base = np.repeat((np.sin((x + i * y) * (6 + i) * np.pi) > 0)[..., None], 3, axis=-1).astype(float)
        elif kind == 2:
            base = np.repeat((((x - 0.5) ** 2 + (y - 0.4) ** 2) < 0.08 + 0.02 * i)[..., None], 3, axis=-1) * rng.random(3)
        else:
            base = rng.random((96, 96, 3))
        buffer = io.BytesIO()
        Image.fromarray((np.clip(base, 0, 1) * 255).astype(np.uint8), "RGB").save(buffer, format="PNG")
        images[f"conformance-{i}"] = buffer.getvalue()
    return images


def public_stimuli(description: ModelDescription) -> list[tuple]:
    """What the conformance run sends: (id, pixels) placed at the model's degrees, or (id, word, context)."""
    if description.modality == "text":
        return [(f"c{c}-w{w}", word, f"c{c}") for c, sentence in enumerate(SENTENCES)
                for w, word in enumerate(sentence.split())]
    from cortexbox.benchmarks.stimuli import StimulusSet

    stimulus_set = StimulusSet.from_bytes("cortexbox.conformance", public_images(), visual_degrees=8.0)
    return list(stimulus_set.iter_placed(target_visual_degrees=description.raw.visual_degrees))


def check_claims(description: ModelDescription) -> None:
    """What can be checked without running the model: degrees, regions, label spaces by declaration."""
    raw = description.raw
    if description.modality == "image":
        low, high = DEGREES
        if not (math.isfinite(raw.visual_degrees) and low <= raw.visual_degrees <= high):
            raise Nonconformant(f"visual_degrees {raw.visual_degrees:g} is outside {low:g}-{high:g} degrees "
                                "(the span of the model's input; Brain-Score's models commit 8)")
    layers = set(description.layers)
    for region, layer in raw.region_layers.items():  # validate_model_info refuses these already; said here again
        if layer not in layers:
            raise Nonconformant(f"region {region!r} is committed to {layer!r}, which is not one of its layers")
    for name in description.behaviours:
        output = description.outputs[name]
        if name == "logits" and (description.modality != "image" or output.features not in (1000, 1001)):
            raise Nonconformant(f"behaviour 'logits' has {output.features} classes: the label space is the 1000 "
                                "ImageNet classes (1001 with a background class first)")
        if name in ("surprisal", "next_word") and (description.modality != "text" or output.features != 1):
            raise Nonconformant(f"behaviour {name!r} must be one value per part of a text model (declared "
                                f"{list(output.shape)} on a {description.modality} model)")


def check_labels(description: ModelDescription, outputs: dict[str, np.ndarray]) -> None:
    """The answers of behaviours in their label spaces (shapes and finiteness are the client's)."""
    for name, values in outputs.items():
        if name == "surprisal" and (values < 0).any():
            raise Nonconformant(f"behaviour 'surprisal' answered {float(values.min()):g}: bits of -log2 p are never negative")
        if name == "next_word" and any(not str(v).strip() for v in values.reshape(-1)):
            raise Nonconformant("behaviour 'next_word' answered an empty word")


def _groups(description: ModelDescription, names: list[str], n: int, budgets) -> list[list[str]]:
    """The outputs in runs that each fit the wire budgets and hold at most GROUP_BYTES of results (an output over
    either alone is its own group: the client refuses one over the budgets as the protocol violation it is)."""
    groups: list[list[str]] = []
    for name in names:
        for group in groups:
            try:
                check_output_budgets(description, [*group, name], n, budgets)
            except ProtocolViolation:
                continue
            if n * 4 * sum(description.outputs[g].features for g in [*group, name]) > GROUP_BYTES:
                continue
            group.append(name)
            break
        else:
            groups.append([name])
    return groups


def _role(description: ModelDescription, name: str) -> str:
    regions = sorted(r for r, layer in description.raw.region_layers.items() if layer == name)
    kind = "layer" if name in description.layers else "behaviour"
    return f"{kind} {name!r}" + (f" (committed to {', '.join(regions)})" if regions else "")


def check(session, description: ModelDescription | None = None, *, seconds_per_stimulus: float = 2.0) -> dict[str, Any]:
    """Runs the conformance checks on a started session; the record to store with the model, or Nonconformant.
    Failures that are not a lie (a crash, memory, time, a broken wire) are raised as they are, to be diagnosed."""
    description = description or session.description
    t0 = time.perf_counter()
    check_claims(description)
    stimuli = public_stimuli(description)
    ids = [item[0] for item in stimuli]
    client = session.client
    names = [*description.layers, *description.behaviours]
    timeout_s = 60 + seconds_per_stimulus * len(ids)

    def run(group: list[str]) -> dict[str, np.ndarray]:
        result = client.run(description, iter(stimuli), ids, timeout_s=timeout_s,
                            layers=[g for g in group if g in description.layers],
                            behaviours=[g for g in group if g not in description.layers])
        session.check_budgets()
        return result.outputs

    runs = 0
    for group in _groups(description, names, len(ids), client.budgets):
        runs += 1
        try:
            outputs = run(group)
        except ModelFailure as e:
            if e.failure not in _PER_OUTPUT:
                raise
            failing, first = _failing_outputs(run, group, names, e)
            if len(failing) == len(names):  # nothing works: a broken model, not a lie; its own class
                raise
            name, failure = failing[0], first
            raise Nonconformant(f"{_role(description, name)} is declared but fails on public stimuli while "
                                f"{len(names) - len(failing)} other output(s) work: {failure}") from None
        check_labels(description, outputs)
    return {"version": VERSION, "passed": True, "stimuli": len(ids), "outputs": len(names), "runs": runs,
            "seconds": round(time.perf_counter() - t0, 3)}


def _failing_outputs(run, group: list[str], names: list[str], error: ModelFailure) -> tuple[list[str], ModelFailure]:
    """Which outputs of a failed group fail alone (each in its own run), and the first such failure."""
    if len(group) == 1:
        failing, first = list(group), error
    else:
        failing, first = [], error
        for name in group:
            try:
                run([name])
            except ModelFailure as e:
                if e.failure not in _PER_OUTPUT:
                    raise
                if not failing:
                    first = e
                failing.append(name)
        if not failing:  # fails together, never alone: the group's failure, on its first output
            failing = list(group)
    if len(failing) < len(names) and len(failing) == len(group) and len(group) < len(names):
        # every output of this group failed; whether the others work is known only once they are run
        others = [n for n in names if n not in group]
        try:
            run(others[:1])
        except ModelFailure as e:
            if e.failure not in _PER_OUTPUT:
                raise
            failing = [*failing, *others]  # broken as a whole
    return failing, first


def passed(info: dict | None) -> bool:
    """Whether a stored model description records a passed conformance run of the current checks."""
    record = (info or {}).get("conformance") or {}
    return bool(record.get("passed")) and record.get("version") == VERSION
