"""The benchmark tree scores are aggregated over.

:func:`tree` returns ``{"vision": {"neural": {"V4": [...], "IT": [...]}, "behaviour": [...]}}``: leaves are benchmark
identifiers, every other node is a parent. ``cortexbox.orchestrator.aggregation.benchmark_tree`` reads it.

How parents are computed (Brain-Score's leaderboard rule, ``brain-score.web`` ``benchmarks/sql/mv.sql``; implemented
in ``cortexbox.orchestrator.aggregation``):

* a leaf's value is its score's ``value`` (``ceiled``, or ``raw`` without a ceiling) clipped to [0, 1];
* a PARENT IS THE UNWEIGHTED MEAN OF ITS DIRECT CHILDREN, not of all leaves below it: ``vision`` =
  mean(``neural``, ``behaviour``), ``neural`` = mean(``V4``, ``IT``), ``behaviour`` = mean of its three leaves;
* a benchmark a model was not (successfully) scored on counts as 0 in its parent.

Registered benchmarks that are deliberately not in the tree are listed, with the reason, in :data:`NOT_AGGREGATED`
(engineering accuracies, a second metric on the same recordings, a benchmark without a ceiling, a model property).
Every registered benchmark is in exactly one of the two (``tests/benchmarks/test_benchmarks_aggregation.py``).
"""

from __future__ import annotations

import copy
from typing import Union

__all__ = ["BENCHMARK_TREE", "ENGINEERING", "NOT_AGGREGATED", "Tree", "tree", "tree_leaves"]

Tree = Union[dict[str, "Tree"], list[str]]

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
}

#: Engineering benchmarks (accuracy, ceiling 1): Brain-Score keeps them in a separate root, never in ``vision``.
ENGINEERING: list[str] = ["Geirhos2019.edges-top1", "Geirhos2019.silhouettes-top1"]

#: Registered benchmarks that are reported but not averaged into ``vision``, and why.
NOT_AGGREGATED: dict[str, str] = {
    **{identifier: "engineering (accuracy; Brain-Score's separate engineering root)" for identifier in ENGINEERING},
    "Cowley2023.V4-pls": "session 210325 only; Cowley2023.V4-sessions-pls scores it with three more sessions",
    "Cowley2023.V4-sessions-ridge": "the recordings of Cowley2023.V4-sessions-pls with another regression",
    "Kriegeskorte2008.mIT-rdm": "no ceiling: its raw rho is not on the scale of ceiled scores",
    "Geirhos2019.cueconflict-shape_bias": "a property of the model (no ceiling), not a similarity to data",
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
