"""Fair scoring: nothing a model receives tells it which benchmark stimulus it is looking at, except the stimulus
itself (issue 13 item 4; threat T12 of ``../shared/research/competitions.md``).

Every extraction run is planned here, from a per-run seed that the score's provenance records (``stimulus_order``):

* **Ids.** Each stimulus goes out under a fresh random id (``secrets.token_hex``), a text context under a fresh
  random context id, and the run under a random run id, so a model cannot key its answers on the benchmark's ids, on
  a context's name, or on whether a run is a layer selection or the scored one. Ids come from ``secrets``, not from the seed: they
  are meaningless to an honest model, and a recorded seed must not let anyone predict them.
* **Order.** Images go in a shuffled order. Text keeps reading order inside a context (a story read word by word is a
  context: the order is the stimulus), and the contexts themselves, which the protocol scores independently, are
  shuffled. The rows that come back are put back into the benchmark's order, in place, before anything else (the
  cache, the metric) sees them; a model whose outputs are a function of each stimulus therefore scores exactly as
  without the shuffle (the pixels, AlexNet and unigram templates: the same numbers to the last digit). The activation cache is keyed by the placed pixels or the context's text, never by ids or
  order, so it is unaffected.
* **Repeat probes.** An image run of a model image (not of an endpoint: the operator's own server, never a
  submission) also re-sends ``probes`` of its stimuli (4 by default) at random later positions, each under a new id
  and with one pixel of the placed image changed by 1 (one channel, +1, or -1 at 255). An honest model answers
  nearly the same; a model that answers from a lookup of exact pixels seen before (a hash of the bytes
  -> stored answer, anything else for unknown bytes) answers the probe differently, and the run fails with
  ``FailureClass.INCONSISTENT``, with the probe's numbers in the message (a competition wants a failure clearly
  explained, not a silently stored flag). In a layer selection an inconsistent layer is left out of the choice (and
  not cached) instead: a layer of hashed noise must not fail an otherwise honest model; the scored run is strict.
  Probe rows never reach the score or the cache. The tolerance, per numeric output: a probe fails when its rows are
  farther from its original's than ``PROBE_RTOL`` (25%) of the run's between-stimulus spread (the median distance of
  its rows from their mean) plus ``PROBE_NOISE`` (1e-5) of the median row norm (float noise, batches of other sizes),
  *and* nearer some other image's rows than its original's. Measured: float models move by under 0.1% of the spread
  (AlexNet, pixels); the quantized MobileNet template, whose uint8 rounding carries a one-pixel change deep into the
  network, by up to 11% (its softmax up to a third of the way to the nearest other image); exact repeats give the
  same rows there, and AlexNet's differ by 3e-6 of the spread (float sums that depend on the batch). A lookup's
  answer to unseen bytes (a constant, at best the mean answer) is as far from the stored answer as images are from
  each other. String outputs (labels) are not compared: a label may honestly flip at a decision boundary. What it
  does not catch: a lookup by near-duplicate (a perceptual hash ignores a one-pixel change); outputs riding on a
  constant offset 1e5 times their spread (the float-noise allowance then hides them); text models (no imperceptible
  change of a text exists). The held-out private split is the defence there.
"""

from __future__ import annotations

import math
import secrets
import zlib
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from cortexbox.orchestrator.errors import FailureClass, ModelFailure

#: Stimuli sent twice per image run (fewer when the run has fewer).
PROBES = 4
#: A probe's rows may differ by this share of the run's between-stimulus spread ...
PROBE_RTOL = 0.25
#: ... plus this share of the median row norm (float noise); past both, a probe fails when it is also nearer another
#: image's rows than its original's.
PROBE_NOISE = 1e-5
#: Rows sampled to estimate the spread and the norm (read one at a time: a layer's row may be millions of values).
SPREAD_SAMPLE = 64


def new_seed() -> int:
    """A fresh per-job seed (63 bits: it is stored as JSON and in SQL integers)."""
    return secrets.randbits(63)


def _fresh_ids(n: int, avoid: set[str] | None = None) -> list[str]:
    ids: list[str] = []
    seen = set(avoid or ())
    while len(ids) < n:
        candidate = secrets.token_hex(8)
        if candidate not in seen:
            seen.add(candidate)
            ids.append(candidate)
    return ids


@dataclass
class RunPlan:
    """The wire side of one extraction run of ``stimulus_set`` (the stimuli to send, in the set's order).

    ``wire`` lists what goes out, in order: ``i >= 0`` is the set's stimulus ``i``; ``-1 - j`` is probe ``j``, a copy of
    stimulus ``probed[j]`` with pixel ``probe_pixels[j]`` (fractions of height and width, channel) changed by 1."""

    seed: int
    label: str
    text: bool
    wire: list[int]
    ids: list[str]
    run_id: str
    probed: list[int] = field(default_factory=list)
    probe_pixels: list[tuple[float, float, int]] = field(default_factory=list)
    context_ids: dict[str, str] = field(default_factory=dict)

    @classmethod
    def make(cls, stimulus_set, seed: int, label: str, probes: int = PROBES) -> RunPlan:
        """Shuffles (independent items only: images, or whole contexts of text) and places the repeat probes; the
        same seed, label and set give the same plan (ids aside)."""
        rng = np.random.default_rng([seed, zlib.crc32(label.encode("utf-8"))])
        n = len(stimulus_set)
        text = hasattr(stimulus_set, "iter_text")
        if text:
            members: dict[Any, list[int]] = {}
            for i, (_, _, context) in enumerate(stimulus_set.parts):
                members.setdefault(context or ("", i), []).append(i)  # no context id: the part is a context alone
            contexts = list(members)
            order = [i for c in rng.permutation(len(contexts)) for i in members[contexts[c]]]
            probed: list[int] = []
        else:
            order = [int(i) for i in rng.permutation(n)]
            probed = [int(i) for i in rng.choice(n, size=min(max(probes, 0), n), replace=False)] if n else []
        wire = list(order)
        pixels = []
        for j, i in enumerate(probed):  # each probe somewhere after its original
            after = wire.index(i) + 1
            wire.insert(int(rng.integers(after, len(wire) + 1)), -1 - j)
            pixels.append((float(rng.random()), float(rng.random()), int(rng.integers(3))))
        plan = cls(seed=seed, label=label, text=text, wire=wire, ids=_fresh_ids(len(wire)), run_id=secrets.token_hex(8),
                   probed=probed, probe_pixels=pixels)
        if text:
            named = [c for c in contexts if isinstance(c, str)]
            plan.context_ids = dict(zip(named, _fresh_ids(len(named)))) | {"": ""}
        return plan

    @property
    def n(self) -> int:
        """Stimuli of the set (probes excluded)."""
        return len(self.wire) - len(self.probed)

    def stream(self, stimulus_set, degrees: float) -> Iterator[tuple[str, Any] | tuple[str, str, str]]:
        """What the client sends, in wire order: (id, pixels) or (id, text, context id). Images are placed one at a
        time (in the shuffled order, straight from the set's store); only the probed originals are kept, until
        their probe has gone."""
        if self.text:
            parts = stimulus_set.parts
            for sid, i in zip(self.ids, self.wire):
                _, text, context = parts[i]
                yield sid, text, self.context_ids[context]
            return
        names = stimulus_set.stimulus_ids
        ordered = stimulus_set.subset([names[i] for i in self.wire if i >= 0], f"{stimulus_set.identifier}[shuffled]")
        placed = iter(ordered.iter_placed(degrees))
        keep = set(self.probed)
        kept: dict[int, np.ndarray] = {}
        for sid, i in zip(self.ids, self.wire):
            if i >= 0:
                _, pixels = next(placed)
                if i in keep:
                    kept[i] = pixels
                yield sid, pixels
            else:
                j = -1 - i
                yield sid, _nudged(kept.pop(self.probed[j]), self.probe_pixels[j])

    def restore(self, outputs: dict[str, np.ndarray], strict: bool = True) -> dict[str, Any]:
        """Checks the repeat probes, then puts each output's rows back into the set's order, in place, and drops the
        probe rows (``outputs[name]`` becomes the set's rows); returns the probe report. ``strict``: an inconsistent
        output fails the run (ModelFailure INCONSISTENT); else it is only named in the report's ``inconsistent``
        (a layer selection leaves such a layer out rather than failing the model)."""
        report, failures = self.check_probes(outputs)
        if strict and failures:
            raise ModelFailure(FailureClass.INCONSISTENT, next(iter(failures.values())))
        source = self._source()
        for name, values in list(outputs.items()):
            _permute_rows(values, source)
            outputs[name] = values[: self.n]
        return report

    def _source(self) -> np.ndarray:
        """For each row of the set's order, the wire row it came back in; then the probe rows."""
        source = np.empty(len(self.wire), dtype=np.int64)
        probes = []
        for position, i in enumerate(self.wire):
            if i >= 0:
                source[i] = position
            else:
                probes.append(position)
        source[self.n:] = probes
        return source

    def check_probes(self, outputs: dict[str, np.ndarray]) -> tuple[dict[str, Any], dict[str, str]]:
        """Compares each probe's rows with its original's, per numeric output (see the module docstring): the run's
        report, and a message per inconsistent output."""
        position = {i: p for p, i in enumerate(self.wire)}
        worst = 0.0
        failures: dict[str, str] = {}
        sample = [p for p, i in enumerate(self.wire) if i >= 0]
        if len(sample) > SPREAD_SAMPLE:
            sample = sorted(int(p) for p in np.random.default_rng([self.seed, 1]).choice(sample, SPREAD_SAMPLE, replace=False))
        for name, values in outputs.items():
            if values.dtype == object or not self.probed:
                continue
            spread, norm = _scale(values, sample)
            allowed = PROBE_RTOL * spread + PROBE_NOISE * norm
            for j, i in enumerate(self.probed):
                probe = values[position[-1 - j]].astype(np.float64)
                distance = float(np.linalg.norm(values[position[i]] - probe))
                worst = max(worst, distance / allowed if allowed > 0 else (0.0 if distance == 0 else math.inf))
                if distance <= allowed or name in failures:
                    continue
                others = [p for p in sample if p != position[i]]  # computed only for a suspicious probe
                nearest = min((float(np.linalg.norm(values[p] - probe)) for p in others), default=math.inf)
                if distance >= nearest:
                    failures[name] = (
                        f"repeat probe: the same image, sent again later in the run under a new id with one pixel "
                        f"changed by 1 (of 255), got outputs of {name!r} that differ by {distance:.4g}: more than "
                        f"{allowed:.4g} ({PROBE_RTOL:.0%} of the {spread:.4g} between different images, plus float noise) "
                        f"and farther than another image's outputs ({nearest:.4g}). Answers must come from the pixels, "
                        f"not from a lookup of images seen before (run seed {self.seed}, {self.label}, probe {j + 1} of "
                        f"{len(self.probed)})"
                    )
        report = {"label": self.label, "stimuli": self.n, "probes": len(self.probed),
                  "worst_probe_ratio": None if not self.probed else round(worst, 6)}
        if failures:
            report["inconsistent"] = sorted(failures)
        return report, failures


def _scale(values: np.ndarray, rows: list[int]) -> tuple[float, float]:
    """The median distance of ``values[rows]`` from their mean row, and their median norm; float64, one row at a time."""
    mean = np.zeros(values.shape[1], dtype=np.float64)
    for r in rows:
        mean += values[r]
    mean /= max(len(rows), 1)
    spread = [float(np.linalg.norm(values[r] - mean)) for r in rows]
    norms = [float(np.linalg.norm(values[r].astype(np.float64))) for r in rows]
    return float(np.median(spread)), float(np.median(norms))


def _nudged(pixels: np.ndarray, where: tuple[float, float, int]) -> np.ndarray:
    """A copy of ``pixels`` (HxWx3 uint8) with one value changed by 1: +1, or -1 where it is 255."""
    out = np.array(pixels, dtype=np.uint8, copy=True)
    y, x, c = where
    row, col = min(int(y * out.shape[0]), out.shape[0] - 1), min(int(x * out.shape[1]), out.shape[1] - 1)
    out[row, col, c] = out[row, col, c] - 1 if out[row, col, c] == 255 else out[row, col, c] + 1
    return out


def _permute_rows(values: np.ndarray, source: np.ndarray) -> None:
    """``values[k] = old values[source[k]]`` for every row, in place (one row of scratch: a layer's rows may be GBs)."""
    done = np.zeros(len(source), dtype=bool)
    for start in range(len(source)):
        if done[start]:
            continue
        done[start] = True
        if source[start] == start:
            continue
        scratch = values[start].copy()
        k = start
        while True:
            s = int(source[k])
            if s == start:
                values[k] = scratch
                break
            values[k] = values[s]
            done[s] = True
            k = s
