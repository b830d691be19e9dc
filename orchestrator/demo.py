"""The main job (``cortexbox demo``): build the offline base image and the three vision templates, score each on
the vision brain benchmarks of the benchmark tree, so that every model ends with a real, ranked aggregate.

Why those benchmarks: the board ranks by the tree's ``vision`` root (Brain-Score's ``average_vision``: neural V4
and IT, behaviour); a benchmark outside the tree (such as ``Cowley2023.V4-pls``) enters no aggregate, so scoring
only that one left every model unranked. A model that offers no behaviour output the benchmark needs (pixels has
no logits) is not sent to that benchmark: its leaf stays missing and counts as 0, as on Brain-Score, instead of a
failed run.

Everything it does is re-used on a second run: Docker's layer cache for the images, the activation cache and the
layer commitments for the scores (a second run starts no container for a score it has).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cortexbox.orchestrator.errors import ModelFailure, UserError

__all__ = ["TEMPLATES", "BuildLog", "DemoResult", "ScoreLines", "intro", "run", "templates_dir", "vision_brain_benchmarks"]

#: The vision templates the demo builds and scores, in this order.
TEMPLATES = ("pixels", "pytorch-vision", "tflite-mobilenet")

#: Benchmarks that share stimuli go one after the other (the activation cache serves the second); neural before
#: behaviour, so that a model's offered behaviours are known (from its first score) before a behaviour benchmark.
_ORDER = ("Kriegeskorte2008.hIT-rdm", "Kriegeskorte2008.judgements-rdm", "Cowley2023.V4-sessions-pls")

Say = Callable[[str], None]

#: Where the templates are when ``--templates`` is not given: the checkout's folder, from its root (``make demo``).
DEFAULT_TEMPLATES = Path("model_templates")


def templates_dir(folder: Path | None, names: Sequence[str] = TEMPLATES) -> Path:
    """The folder holding the templates `names`: `folder`, else ``./model_templates``. Looked up from the current
    directory, never from where the package lies, so an installed cortexbox finds them too; a folder that lacks
    one is a UserError before anything is built."""
    hint = "run from the cortexbox checkout's root, or pass --templates DIR (the repository's model_templates/)"
    if folder is None:
        folder = DEFAULT_TEMPLATES
        if not folder.is_dir():
            raise UserError(f"no {DEFAULT_TEMPLATES}/ folder in {Path.cwd()}", hint)
    elif not folder.is_dir():
        raise UserError(f"--templates {folder}: no such folder", hint)
    missing = [name for name in names if not (folder / name).is_dir()]
    if missing:
        raise UserError(f"{folder.resolve()} has no template {', '.join(missing)}", hint)
    return folder


#: Leaves the default demo leaves to ``--full``: on 2 cores MobileNet's V4 layer selection (66 layers, PLS) and the
#: four sessions' 4,240 images take 5-10 minutes of the demo's 10-minute budget on their own.
FULL_ONLY = ("Cowley2023.V4-sessions-pls",)


def vision_brain_benchmarks(*, full: bool = True) -> list[str]:
    """The leaves of the tree's ``vision`` root (never the engineering roots), in the order the demo scores them;
    without `full`, less :data:`FULL_ONLY` (their leaves then show missing, counted as 0, as on Brain-Score)."""
    from cortexbox.benchmarks import tree, tree_leaves

    leaves = tree_leaves(tree()["vision"])
    chosen = [b for b in leaves if full or b not in FULL_ONLY]
    return sorted(chosen, key=lambda b: (_ORDER.index(b) if b in _ORDER else len(_ORDER), leaves.index(b)))


class BuildLog:
    """A build's output as lines: our own stage lines and Docker's ``Step n/m`` at once, the rest (debootstrap's
    per-package lines, pip, compiler output) at most one every ``every_s`` seconds, so a long build is never
    silent and never floods."""

    KEEP = ("Step ", "building ", "built ", "base image", "debootstrap ", "packing ", "importing ", "wheelhouse ",
            "downloading ", "Successfully")

    def __init__(self, say: Say, every_s: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self.say, self.every_s, self.clock = say, every_s, clock
        self.last = -every_s

    def __call__(self, line: str) -> None:
        line = line.rstrip()
        if not line:
            return
        now = self.clock()
        if line.startswith(self.KEEP) or now - self.last >= self.every_s:
            self.last = now
            self.say("  " + line[:160])


class ScoreLines:
    """A score's events as lines: every stage, and a progress line at most every ``every_s`` seconds."""

    def __init__(self, say: Say, every_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.say, self.every_s, self.clock = say, every_s, clock
        self.last = clock()

    def __call__(self, event: str, data: dict) -> None:
        now = self.clock()
        if event == "stage":
            self.last = now
            self.say(f"    {data.get('text', '')}")
        elif event == "progress" and now - self.last >= self.every_s:
            self.last = now
            self.say(f"    {data.get('label', '')}: {data.get('done')} / {data.get('total')}")


@dataclass
class DemoResult:
    """What the demo did: per model the image digest, what it scored, what it left out and why, what failed."""

    images: dict[str, str] = field(default_factory=dict)
    scored: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    wall_s: float = 0.0
    loadavg: tuple[float, float, float] = (0.0, 0.0, 0.0)


def intro(names: Sequence[str], benchmarks: Sequence[str]) -> str:
    """What the demo is about to do, and why these benchmarks."""
    if list(benchmarks) == vision_brain_benchmarks():
        why = ("the leaves of the benchmark tree's vision root (Brain-Score's average_vision: neural V4 and IT, "
               "behaviour), so every model gets a real, ranked vision aggregate")
    elif list(benchmarks) == vision_brain_benchmarks(full=False):
        why = ("the leaves of the benchmark tree's vision root (Brain-Score's average_vision) but "
               f"{', '.join(FULL_ONLY)}, which takes 5-10 more minutes on 2 cores (`cortexbox demo --full` scores it: "
               "until then its leaf shows missing and counts as 0), so every model gets a real, ranked vision aggregate")
    else:
        why = "as asked (--benchmark)"
    return (f"cortexbox demo: build the offline base image and {len(names)} template model(s) ({', '.join(names)}), "
            f"score each on {len(benchmarks)} benchmark(s): {', '.join(benchmarks)}; {why}. A model without the "
            "behaviour output a benchmark needs (pixels has no logits) is left out of it: missing, counted as 0, as on "
            "Brain-Score. Then the ranked board, the same as the web's.")


def _needs(identifier: str) -> str | None:
    """The behaviour output a benchmark needs (``logits``), or None for a neural benchmark."""
    from cortexbox.benchmarks import get_benchmark

    bench = get_benchmark(identifier)
    return getattr(bench, "behaviour", None) if getattr(bench, "kind", "neural") == "behaviour" else None


def run(
    templates_dir: Path,
    names: Sequence[str] = TEMPLATES,
    benchmarks: Sequence[str] | None = None,
    *,
    use_cache: bool = True,
    say: Say = print,
    events: Callable[[str, str], Callable[[str, dict], None]] | None = None,
) -> DemoResult:
    """Builds the base image and each template in ``names`` (from ``templates_dir``), scores each on
    ``benchmarks`` (default :func:`vision_brain_benchmarks`) and returns what happened; ``say`` receives every
    line to show, ``events(model, benchmark)`` a progress sink per score. A model's failure on one benchmark is
    reported and the demo goes on; a user's mistake (no Docker, no data) ends it."""
    from cortexbox.orchestrator import images
    from cortexbox.orchestrator.scoring import ScoreRequest, score_model
    from cortexbox.orchestrator.runtime import docker_client
    from cortexbox.registry import Registry

    benchmarks = list(benchmarks or vision_brain_benchmarks())
    result = DemoResult()
    t0 = time.perf_counter()
    docker = docker_client()
    say("[1/3] the offline base image (first time: debootstrap, about a minute)")
    images.build_base_image(docker, log=BuildLog(say))
    say(f"[2/3] the template images: {', '.join(names)} (first time: a few minutes; then Docker's cache)")
    tags = {}
    for name in names:
        built = images.build_model_image(docker, templates_dir / name, log=BuildLog(say))
        tags[name] = built.tag
        result.images[name] = built.image_id
    say(f"[3/3] scoring {len(names)} model(s) on {len(benchmarks)} benchmark(s): {', '.join(benchmarks)}")
    registry = Registry()
    for name in names:
        offered: list[str] | None = None  # known after the model's first score (its description is stored)
        for identifier in benchmarks:
            needs = _needs(identifier)
            if needs is not None and offered is not None and needs not in offered:
                reason = f"needs the behaviour {needs!r}; {name} offers {', '.join(offered) or 'none'}"
                result.skipped.append({"model": name, "benchmark": identifier, "reason": reason})
                say(f"  {name} on {identifier}: left out ({reason}; counts as 0, shown missing)")
                continue
            t1 = time.perf_counter()
            try:
                outcome = score_model(ScoreRequest(benchmark=identifier, image=tags[name], use_cache=use_cache), registry=registry,
                                      events=events(name, identifier) if events else None)
            except ModelFailure as e:
                result.failed.append({"model": name, "benchmark": identifier, "failure": e.failure.value, "error": e.message})
                say(f"  {name} on {identifier}: FAILED ({e.failure.value}): {e.message}")
                continue
            wall = time.perf_counter() - t1
            row = registry.model_by_digest(outcome.digest)
            offered = list((row.info or {}).get("behaviours") or {}) if row is not None else offered
            value = outcome.ceiled if outcome.ceiled is not None else outcome.raw
            result.scored.append({"model": name, "benchmark": identifier, "value": value, "raw": outcome.raw,
                                  "layer": outcome.layer, "wall_s": round(wall, 1), "from_cache": outcome.from_cache})
            kind = "ceiled" if outcome.ceiled is not None else "raw"
            say(f"  {name} on {identifier}: {kind} {value:.4f} (raw {outcome.raw:.4f}), layer {outcome.layer}, "
                f"{wall:.0f} s" + (" (activations from cache)" if outcome.from_cache else ""))
    result.wall_s = time.perf_counter() - t0
    result.loadavg = os.getloadavg()
    return result
