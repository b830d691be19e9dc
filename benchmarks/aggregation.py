"""The benchmark tree scores are aggregated over.

:func:`tree` returns one dict whose keys are ROOTS, as on Brain-Score's website (``shared/research/brainscore.md``
4.9): ``vision`` (Brain-Score's ``average_vision``: ``neural`` -> ``V4``, ``IT``; ``behaviour``), ``language``
(``average_language``: ``neural``, ``behaviour``), and the engineering roots ``engineering_vision`` and
``engineering_language``. Leaves are benchmark identifiers, every other node is a parent.
``cortexbox.orchestrator.aggregation.benchmark_tree`` reads it.

The roots are separate leaderboards on Brain-Score and are never averaged into each other: a model's aggregate is the
brain root (``vision`` or ``language``) it takes part in, and the other domain is shown as missing, not as 0.
Engineering roots are shown as their own columns (raw scores: accuracies, no ceiling or ceiling 1) and never enter
a brain score.

How parents are computed (Brain-Score's leaderboard rule, ``brain-score.web`` ``benchmarks/sql/mv.sql``; implemented
in ``cortexbox.orchestrator.aggregation``):

* a leaf's value is its score's ``value`` (``ceiled``, or ``raw`` without a ceiling) clipped to [0, 1];
* inside a root, a PARENT IS THE UNWEIGHTED MEAN OF ITS DIRECT CHILDREN, not of all leaves below it: ``vision`` =
  mean(``neural``, ``behaviour``), ``neural`` = mean(``V4``, ``IT``), ``behaviour`` = mean of its three leaves;
* a benchmark a model was not (successfully) scored on counts as 0 in its parent.

Registered benchmarks that are deliberately not in the tree are listed, with the reason, in :data:`NOT_AGGREGATED`
(a run that repeats leaves, a second metric on the same recordings, a benchmark without a ceiling, a model property).
Every registered benchmark is in exactly one of the two (``tests/benchmarks/test_benchmarks_aggregation.py``).
"""

from __future__ import annotations

import copy
from typing import Union

from .brennan2016 import ROIS
from .syntaxgym import SUITES

__all__ = [
    "BENCHMARK_TREE", "ENGINEERING", "ENGINEERING_ROOTS", "NOT_AGGREGATED", "ROOTS", "Tree", "language_tree", "tree",
    "tree_leaves",
]

Tree = Union[dict[str, "Tree"], list[str]]

#: Engineering benchmarks (accuracy, ceiling 1): Brain-Score keeps them in a separate root, never in ``vision``.
ENGINEERING: list[str] = ["Geirhos2019.edges-top1", "Geirhos2019.silhouettes-top1"]

#: The 31 SyntaxGym 2020 suites (``syntaxgym-<suite>``), Brain-Score's ``SyntaxGym`` parent under engineering.
_SYNTAXGYM_SUITES = [f"syntaxgym-{suite}" for suite in SUITES]

#: The aggregation tree (see the module docstring). Use :func:`tree` for a copy.
BENCHMARK_TREE: dict[str, Tree] = {
    "vision": {
        "neural": {
            "V4": ["Cowley2023.V4-sessions-pls"],
            "IT": ["Kriegeskorte2008.hIT-rdm"],
        },
        "behaviour": [
            "Geirhos2019.edges-error_consistency",
            "Geirhos2019.silhouettes-error_consistency",
            "Kriegeskorte2008.judgements-rdm",
        ],
    },
    "language": {
        "neural": [f"Brennan2016.{roi}-ridge" for roi in ROIS],
        "behaviour": ["Futrell2018-pearsonr"],
    },
    "engineering_vision": list(ENGINEERING),
    "engineering_language": {"SyntaxGym": list(_SYNTAXGYM_SUITES), "next_word": ["NaturalStories-accuracy"]},
}

#: The brain roots (separate leaderboards, never averaged into each other) and the engineering roots (raw scores,
#: shown beside them, never part of a brain score).
ROOTS: tuple[str, ...] = ("vision", "language")
ENGINEERING_ROOTS: tuple[str, ...] = ("engineering_vision", "engineering_language")

#: Registered benchmarks that are reported but not averaged into any root, and why.
NOT_AGGREGATED: dict[str, str] = {
    "Cowley2023.V4-pls": "session 210325 only; Cowley2023.V4-sessions-pls scores it with three more sessions",
    "Cowley2023.V4-sessions-ridge": "the recordings of Cowley2023.V4-sessions-pls with another regression",
    "Kriegeskorte2008.mIT-rdm": "no ceiling: its raw rho is not on the scale of ceiled scores",
    "Geirhos2019.cueconflict-shape_bias": "a property of the model (no ceiling), not a similarity to data",
    "syntaxgym2020": "the mean of the 31 syntaxgym-<suite> leaves in one run; engineering_language/SyntaxGym "
    "averages the suites themselves",
    "Futrell2018-spillover_dll": "a gain in held-out log-likelihood in nats per word (unbounded, no ceiling): clipping it "
    "to [0, 1] and averaging it with ceiled scores would mean nothing; language/behaviour keeps Futrell2018-pearsonr",
}


def tree() -> dict[str, Tree]:
    """A deep copy of :data:`BENCHMARK_TREE`; each parent is the unweighted mean of its direct children."""
    return copy.deepcopy(BENCHMARK_TREE)


def tree_leaves(node: Tree | None = None) -> list[str]:
    """Every benchmark identifier in the tree (or under ``node``), depth first."""
    node = BENCHMARK_TREE if node is None else node
    if isinstance(node, list):
        return list(node)
    return [leaf for child in node.values() for leaf in tree_leaves(child)]


def language_tree() -> dict[str, object]:
    """The language roots of the one benchmark tree (:func:`tree`): ``language`` (Brain-Score's
    ``average_language``) -> ``neural`` (story fMRI, one leaf per ROI), ``behaviour`` (reading times); and
    ``engineering_language`` -> ``SyntaxGym`` (one leaf per suite), ``next_word`` (Natural Stories next-word accuracy):
    raw accuracies, never part of ``language``."""
    full = tree()
    return {root: full[root] for root in ("language", "engineering_language")}
