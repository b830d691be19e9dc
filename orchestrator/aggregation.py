"""Aggregate scores over the benchmark tree, with Brain-Score's semantics and an honest second view.

Brain-Score's website (brain-score.web ``benchmarks/sql/mv.sql``; ``shared/research/brainscore.md`` 4.9):

* only the **latest version** of each benchmark counts; per (model, benchmark) the latest score on that version;
* a leaf's value is its ceiled score **clipped to [0, 1]** (the raw score where a benchmark has no ceiling);
* a parent is the **unweighted mean of its direct children**, bottom-up;
* a **missing or failed child counts as 0**; a parent all of whose children are missing is itself missing.

The tree may have several ROOTS (``vision``, ``language``, ``engineering_vision``, ``engineering_language``): they
are separate leaderboards on Brain-Score and are never averaged into each other. Their common top node (``mode ==
"roots"``) takes the mean over the brain roots a model TAKES PART IN (any leaf scored, failed or invalid there), so an
image model's aggregate is its vision score and the language root is shown missing, never a real 0 (and vice versa);
engineering roots (names starting ``engineering``) are reported as their own columns from raw scores and never enter
that aggregate. Inside a root, the rules above hold unchanged.

That "0" is the Brain-Score-compatible number (``value``), but a missing leaf is never presented as a real 0:
every node lists its missing leaves and ``missing_weight``, the share of the node's value that rests on leaves
without a score. The second view (``scored_value``) averages, at every level, only the children that have a score,
so that it answers "how good is the model where it was measured" -- next to ``coverage`` saying how much was.

A broken tree (a leaf naming no known benchmark, a benchmark twice, a cycle, an inner node without leaves, two
siblings with one name, a tree that cannot be read) raises :class:`BenchmarkTreeError` naming the problem: a
leaderboard over a silently repaired tree would rank models by something nobody wrote down.

Everything here is a pure function of rows (``Score``, ``Benchmark``, ``Run``) and a tree; nothing touches a
database, so it is tested against hand-computed trees.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cortexbox.orchestrator.errors import CortexboxError

__all__ = [
    "BenchmarkTreeError",
    "Leaf",
    "NodeResult",
    "TreeNode",
    "aggregate",
    "aggregate_all",
    "clip01",
    "default_tree_spec",
    "latest_leaves",
    "leaf_weights",
    "tree_from_spec",
    "benchmark_tree",
    "check_tree",
    "child_shares",
    "is_engineering",
    "rank",
    "unaggregated",
]


# -- the tree ---------------------------------------------------------------------------------------------------
class BenchmarkTreeError(CortexboxError, ValueError):
    """The benchmark tree is broken; the message names the node and the problem."""


@dataclass(frozen=True)
class TreeNode:
    """A node of the benchmark tree: an inner node (``children``) or a leaf (``benchmark`` identifier)."""

    name: str
    children: tuple[TreeNode, ...] = ()
    benchmark: str | None = None
    #: "mean": the unweighted mean of the children (Brain-Score's parent); "roots": the top node over separate
    #: roots (see the module docstring)
    mode: str = "mean"

    @property
    def is_leaf(self) -> bool:
        return self.benchmark is not None

    def leaves(self) -> list[str]:
        if self.is_leaf:
            return [self.benchmark]  # type: ignore[list-item]
        return [leaf for child in self.children for leaf in child.leaves()]

    def walk(self) -> Iterable[TreeNode]:
        yield self
        for child in self.children:
            yield from child.walk()

    def to_dict(self) -> dict[str, Any]:
        if self.is_leaf:
            return {"name": self.name, "benchmark": self.benchmark}
        d: dict[str, Any] = {"name": self.name, "children": [c.to_dict() for c in self.children]}
        if self.mode != "mean":
            d["mode"] = self.mode
        return d


#: Names of brain roots (Brain-Score's ``average_<domain>``); any top-level name starting "engineering" is an
#: engineering root.
BRAIN_ROOTS = ("vision", "language", "average_vision", "average_language")
ROOTS_NAME = "average"


def is_engineering(name: str) -> bool:
    """Whether a root is an engineering root (raw scores; never part of a brain score)."""
    return name.startswith("engineering")


def _is_roots_spec(spec: Any) -> bool:
    return isinstance(spec, Mapping) and bool(spec) and all(
        str(k) in BRAIN_ROOTS or is_engineering(str(k)) for k in spec
    )


def tree_from_spec(spec: Any, name: str = "average") -> TreeNode:
    """Builds a tree from a nested spec: ``{name: spec}`` for inner nodes, a list of benchmark identifiers (or
    of further specs) for a node's leaves, or an existing :class:`TreeNode`; checked by :func:`check_tree`.

    Raises
    ------
    BenchmarkTreeError
        A cycle, a node that is neither a mapping, a list nor an identifier, an empty identifier, or any problem
        :func:`check_tree` finds. An inner node without leaves is an error, not dropped: Brain-Score's tree holds
        only benchmark types that exist, and a dropped branch would change every parent's weights unnoticed."""
    tree = spec if isinstance(spec, TreeNode) else _from_spec(spec, name, name, ())
    check_tree(tree)
    return tree


def _from_spec(spec: Any, name: str, path: str, parents: tuple[int, ...]) -> TreeNode:
    if isinstance(spec, TreeNode):
        return spec
    if isinstance(spec, str):
        if not spec.strip():
            raise BenchmarkTreeError(f"benchmark tree: an empty benchmark identifier under {path}")
        return TreeNode(name=spec, benchmark=spec)
    if id(spec) in parents:
        raise BenchmarkTreeError(f"benchmark tree: a cycle: {path} contains itself")
    parents = parents + (id(spec),)
    children: list[TreeNode] = []
    if isinstance(spec, Mapping):
        for child_name, child_spec in spec.items():
            children.append(_from_spec(child_spec, str(child_name), f"{path}/{child_name}", parents))
    elif isinstance(spec, Sequence):
        for item in spec:
            child_name = item if isinstance(item, str) else name
            children.append(_from_spec(item, child_name, f"{path}/{child_name}" if isinstance(item, str) else path, parents))
    else:
        raise BenchmarkTreeError(f"benchmark tree: {path} is a {type(spec).__name__}, not a mapping, a list or a benchmark identifier")
    return TreeNode(name=name, children=tuple(children))


def check_tree(tree: TreeNode, known: Iterable[str] | None = None) -> None:
    """Raises :class:`BenchmarkTreeError` for an inner node without children, two siblings with one name (their
    columns would collide), a benchmark that appears twice, or (with ``known``) a leaf naming a benchmark that is
    not in ``known``."""
    seen: dict[str, str] = {}
    known_set = None if known is None else set(known)

    def visit(node: TreeNode, path: str) -> None:
        if node.is_leaf:
            if node.benchmark in seen:
                raise BenchmarkTreeError(f"benchmark tree: {node.benchmark} appears twice, under {seen[node.benchmark]} and {path}")
            seen[node.benchmark] = path  # type: ignore[index]
            if known_set is not None and node.benchmark not in known_set:
                raise BenchmarkTreeError(f"benchmark tree: the leaf {node.benchmark} under {path} names no known benchmark "
                                         "(neither built in nor registered)")
            return
        if not node.children:
            raise BenchmarkTreeError(f"benchmark tree: {path} has no benchmarks below it (an empty inner node)")
        names = [c.name for c in node.children]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise BenchmarkTreeError(f"benchmark tree: {path} has two children named {twice[0]}")
        for child in node.children:
            visit(child, f"{path}/{child.name}" if not child.is_leaf else path)

    visit(tree, tree.name)


NEURAL_REGIONS = ("V1", "V2", "V4", "IT")
BEHAVIOUR_REGIONS = ("", "behaviour", "behavior")


def default_tree_spec(benchmarks: Iterable[Any]) -> dict[str, Any]:
    """The local default tree, vision -> neural -> {V1, V2, V4, IT, other regions} and vision -> behaviour, with
    every known benchmark identifier placed by its region (``Benchmark.region``; an empty region or "behaviour"
    means behavioural)."""
    by_region: dict[str, set[str]] = {}
    for b in benchmarks:
        by_region.setdefault(getattr(b, "region", "") or "", set()).add(b.identifier)
    neural: dict[str, list[str]] = {r: sorted(by_region[r]) for r in NEURAL_REGIONS if by_region.get(r)}
    for region in sorted(by_region):
        if region not in NEURAL_REGIONS and region.lower() not in BEHAVIOUR_REGIONS:
            neural[region] = sorted(by_region[region])
    behaviour = sorted(set().union(*(by_region.get(r, set()) for r in BEHAVIOUR_REGIONS)))
    # only the branches that have benchmarks: an empty inner node is an error in a written tree
    return {k: v for k, v in (("neural", neural), ("behaviour", behaviour)) if v}


def _insert(node: TreeNode, region: str, identifier: str) -> tuple[TreeNode, bool]:
    """``node`` with ``identifier`` added as a leaf of the first inner node named ``region``."""
    if node.is_leaf:
        return node, False
    if node.name == region and all(c.is_leaf for c in node.children):
        return TreeNode(node.name, node.children + (TreeNode(identifier, benchmark=identifier),)), True
    children = list(node.children)
    for i, child in enumerate(children):
        children[i], done = _insert(child, region, identifier)
        if done:
            return TreeNode(node.name, tuple(children)), True
    return node, False


def _provided_spec() -> Any:
    from cortexbox import benchmarks as benchmarks_package

    provided = getattr(benchmarks_package, "tree", None)
    if not callable(provided):
        return None
    try:
        return provided()
    except Exception as e:  # a tree that cannot be read is reported, never replaced by another one
        raise BenchmarkTreeError(f"benchmark tree: cortexbox.benchmarks.tree() failed: {type(e).__name__}: {e}") from e


def benchmark_tree(benchmarks: Iterable[Any], spec: Any = None, known: Iterable[str] | None = None) -> TreeNode:
    """The tree to aggregate over: ``spec`` if given, else ``cortexbox.benchmarks.tree()`` where the benchmarks
    package provides one, else :func:`default_tree_spec` over the registry's benchmarks.

    A spec whose keys are all roots (``vision``, ``language``, ``engineering_*``) gives a top node named
    ``average`` with ``mode == "roots"`` (see the module docstring); a spec with a single brain root gives that root.

    With a given tree, a registered benchmark that is not in it and not deliberately left out
    (``cortexbox.benchmarks.NOT_AGGREGATED``) -- an ingested recording, say -- joins the leaf group named like its
    region (e.g. ``V4``) when there is one; otherwise it is reported by :func:`unaggregated`, never averaged in
    silently. A tree leaf that nobody has been scored on yet is part of the average (missing for every model), as
    on Brain-Score; with ``known`` (the identifiers that exist: built in or registered), a leaf outside it is a
    :class:`BenchmarkTreeError`, as is a leaf also listed in ``NOT_AGGREGATED``."""
    benchmarks = list(benchmarks)
    if spec is None:
        spec = _provided_spec()
    if spec is None:
        default = default_tree_spec(benchmarks)
        return tree_from_spec(default, "vision") if default else TreeNode("vision")  # nothing registered yet
    tree = _from_spec(spec, "vision", "vision", ()) if not isinstance(spec, TreeNode) else spec
    if len(tree.children) == 1 and not tree.children[0].is_leaf and tree.children[0].name in BRAIN_ROOTS:
        tree = tree.children[0]
    elif _is_roots_spec(spec):
        tree = TreeNode(ROOTS_NAME, tree.children, mode="roots")
    check_tree(tree, known)  # after unwrapping, so that the problem is named by the path the board shows
    placed = set(tree.leaves())
    left_out = _not_aggregated()
    both = sorted(placed & set(left_out))
    if both:
        raise BenchmarkTreeError(f"benchmark tree: {both[0]} is a leaf and also listed as not aggregated ({left_out[both[0]]})")
    for b in sorted(benchmarks, key=lambda b: b.identifier):
        if b.identifier in placed or b.identifier in left_out or not getattr(b, "region", ""):
            continue
        tree, done = _insert(tree, b.region, b.identifier)
        if done:
            placed.add(b.identifier)
    return tree


def _not_aggregated() -> dict[str, str]:
    from cortexbox import benchmarks as benchmarks_package

    return dict(getattr(benchmarks_package, "NOT_AGGREGATED", {}) or {})


def unaggregated(tree: TreeNode, benchmarks: Iterable[Any]) -> dict[str, str]:
    """Registered benchmarks outside ``tree``, with the reason they are not averaged in."""
    placed = set(tree.leaves())
    reasons = _not_aggregated()
    return {
        b.identifier: reasons.get(b.identifier, "not in the benchmark tree")
        for b in sorted(benchmarks, key=lambda b: b.identifier)
        if b.identifier not in placed
    }


def leaf_weights(tree: TreeNode) -> dict[str, float]:
    """Each leaf's weight in the root's unweighted-mean-of-children average (the product of 1/#children along
    its path; :func:`check_tree` allows each benchmark once). Under a ``roots`` node each brain root
    weighs 1 (as if it were the model's only domain) and engineering roots 0."""
    weights: dict[str, float] = {}

    def visit(node: TreeNode, w: float) -> None:
        if node.is_leaf:
            weights[node.benchmark] = weights.get(node.benchmark, 0.0) + w  # type: ignore[index]
            return
        for child in node.children:
            if node.mode == "roots":
                visit(child, 0.0 if is_engineering(child.name) else w)
            else:
                visit(child, w / len(node.children))

    visit(tree, 1.0)
    return weights


# -- leaves ---------------------------------------------------------------------------------------------------------
def clip01(x: float) -> float:
    return min(max(x, 0.0), 1.0)


@dataclass
class Leaf:
    """One model's standing on one benchmark (latest version): a score, or why there is none."""

    benchmark: str
    status: str  # "scored" | "failed" | "not scored" | "invalid" (a score that is NaN)
    value: float | None = None  # clipped ceiled (or raw, without a ceiling) score; None unless scored
    unclipped: float | None = None
    clipped: bool = False
    version: int | None = None
    score_id: int | None = None
    failure_class: str | None = None
    run_id: int | None = None
    raw: float | None = None  # the raw score, clipped to [0, 1]: what engineering roots use

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _latest_versions(benchmarks: Iterable[Any]) -> dict[str, int]:
    latest: dict[str, int] = {}
    for b in benchmarks:
        latest[b.identifier] = max(latest.get(b.identifier, b.version), b.version)
    return latest


def latest_leaves(
    scores: Iterable[Any], benchmarks: Iterable[Any], runs: Iterable[Any] = ()
) -> dict[int, dict[str, Leaf]]:
    """Per model id, per benchmark identifier, the :class:`Leaf` from the latest score on the latest version.

    Parameters
    ----------
    scores : Score rows (need ``id``, ``model_id``, ``benchmark_id``, ``raw``, ``ceiled``)
    benchmarks : Benchmark rows (need ``id``, ``identifier``, ``version``)
    runs : Run rows (need ``id``, ``model_id``, ``benchmark_id``, ``status``, ``failure_class``); a model with a
        failed run and no score on a benchmark's latest version is marked "failed" rather than "not scored".
    """
    benchmarks = list(benchmarks)
    by_id = {b.id: b for b in benchmarks}
    latest = _latest_versions(benchmarks)
    out: dict[int, dict[str, Leaf]] = {}
    for s in sorted(scores, key=lambda s: s.id):
        b = by_id.get(s.benchmark_id)
        if b is None or b.version != latest[b.identifier]:
            continue
        value = s.ceiled if s.ceiled is not None else s.raw
        if value is None or not math.isfinite(value):
            leaf = Leaf(b.identifier, "invalid", version=b.version, score_id=s.id, run_id=getattr(s, "run_id", None))
        else:
            v = clip01(float(value))
            raw = s.raw if s.raw is not None and math.isfinite(s.raw) else None
            leaf = Leaf(b.identifier, "scored", v, float(value), v != value, b.version, s.id, run_id=getattr(s, "run_id", None),
                        raw=None if raw is None else clip01(float(raw)))
        out.setdefault(s.model_id, {})[b.identifier] = leaf  # later ids replace earlier ones
    for r in sorted(runs, key=lambda r: r.id):
        b = by_id.get(getattr(r, "benchmark_id", None))
        if r.status != "failed" or r.model_id is None or b is None or b.version != latest[b.identifier]:
            continue
        existing = out.get(r.model_id, {}).get(b.identifier)
        if existing is None or existing.status == "failed":
            out.setdefault(r.model_id, {})[b.identifier] = Leaf(
                b.identifier, "failed", version=b.version, failure_class=r.failure_class or "error", run_id=r.id
            )
    return out


# -- aggregation ----------------------------------------------------------------------------------------------------
@dataclass
class NodeResult:
    """A model's aggregate at one node of the tree.

    ``value``: Brain-Score-compatible (missing children count as 0; None when nothing below is scored).
    ``scored_value``: the mean over children that have a score, recursively (None when nothing is scored).
    ``missing``: leaves below without a usable score (never shown as a real 0); ``missing_weight``: their share of
    ``value`` (0: complete; 1: nothing scored). ``coverage`` = 1 - missing_weight.
    """

    name: str
    path: str
    value: float | None
    scored_value: float | None
    missing: list[str]
    missing_weight: float
    n_leaves: int
    n_scored: int
    children: list[NodeResult] = field(default_factory=list)
    leaf: Leaf | None = None
    mode: str = "mean"
    #: names of the children that enter ``value`` (all of them, except under a ``roots`` node); None at a leaf
    counted: list[str] | None = None

    @property
    def coverage(self) -> float:
        return 1.0 - self.missing_weight

    @property
    def complete(self) -> bool:
        return not self.missing

    def find(self, path: str) -> NodeResult | None:
        for node in self.walk():
            if node.path == path or node.name == path:
                return node
        return None

    def walk(self) -> Iterable[NodeResult]:
        yield self
        for child in self.children:
            yield from child.walk()

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "path": self.path,
            "value": self.value,
            "scored_value": self.scored_value,
            "missing": self.missing,
            "missing_weight": self.missing_weight,
            "coverage": self.coverage,
            "n_leaves": self.n_leaves,
            "n_scored": self.n_scored,
        }
        if self.mode != "mean":
            d["mode"] = self.mode
            d["counted"] = self.counted
        if self.leaf is not None:
            d["leaf"] = self.leaf.to_dict()
        if self.children:
            d["children"] = [c.to_dict() for c in self.children]
        return d


def takes_part(node: NodeResult) -> bool:
    """Whether any leaf below has a row for the model (scored, failed or invalid)."""
    return any(n.leaf is not None and n.leaf.status != "not scored" for n in node.walk())


def aggregate(tree: TreeNode, leaves: Mapping[str, Leaf], _path: str = "", _raw: bool = False) -> NodeResult:
    """A model's :class:`NodeResult` at ``tree`` from its leaves (benchmark identifier -> :class:`Leaf`; an
    identifier absent from ``leaves`` is "not scored")."""
    path = f"{_path}/{tree.name}" if _path else tree.name
    if tree.is_leaf:
        leaf = leaves.get(tree.benchmark) or Leaf(tree.benchmark, "not scored")  # type: ignore[arg-type]
        scored = leaf.status == "scored"
        value = (leaf.raw if _raw and leaf.raw is not None else leaf.value) if scored else None
        return NodeResult(
            name=tree.name,
            path=path,
            value=value,
            scored_value=value,
            missing=[] if scored else [tree.benchmark],  # type: ignore[list-item]
            missing_weight=0.0 if scored else 1.0,
            n_leaves=1,
            n_scored=int(scored),
            leaf=leaf,
        )
    roots = tree.mode == "roots"
    children = [
        aggregate(child, leaves, path, _raw or (roots and is_engineering(child.name)) or (not _path and is_engineering(tree.name)))
        for child in tree.children
    ]
    if roots:
        brain = [c for c in children if not is_engineering(c.name)]
        counted = [c for c in brain if takes_part(c)]
        over = counted or brain
    else:
        counted = over = children
    n = len(counted)
    any_scored = any(c.value is not None for c in counted)
    value = sum(c.value or 0.0 for c in counted) / n if any_scored else None
    with_scores = [c.scored_value for c in counted if c.scored_value is not None]
    scored_value = sum(with_scores) / len(with_scores) if with_scores else None
    return NodeResult(
        name=tree.name,
        path=path,
        value=value,
        scored_value=scored_value,
        missing=[m for c in over for m in c.missing],
        missing_weight=sum(c.missing_weight for c in counted) / n if n else 1.0,
        n_leaves=sum(c.n_leaves for c in over),
        n_scored=sum(c.n_scored for c in over),
        children=children,
        mode=tree.mode,
        counted=[c.name for c in counted],
    )


def child_shares(node: NodeResult, view: str = "brainscore") -> list[tuple[NodeResult, float]]:
    """Each child of ``node`` that enters its value in ``view`` ("brainscore": missing children count as 0;
    "scored": only children with a score), with its share of that value. Under a ``roots`` node only the brain
    roots the model takes part in count."""
    pool = [c for c in node.children if c.name in set(node.counted)] if node.counted is not None else list(node.children)
    if view != "brainscore":
        pool = [c for c in pool if c.scored_value is not None]
    return [(c, 1.0 / len(pool)) for c in pool]


def aggregate_all(
    tree: TreeNode, scores: Iterable[Any], benchmarks: Iterable[Any], runs: Iterable[Any] = (), model_ids: Iterable[int] = ()
) -> dict[int, NodeResult]:
    """:func:`aggregate` for every model (those in ``model_ids`` too, even with nothing scored)."""
    leaves = latest_leaves(scores, benchmarks, runs)
    ids = sorted(set(leaves) | set(model_ids))
    return {m: aggregate(tree, leaves.get(m, {})) for m in ids}


def rank(values: Mapping[int, float | None]) -> dict[int, int | None]:
    """SQL ``RANK()`` over descending values (ties share a rank, the next rank skips); None is unranked."""
    ordered = sorted((v, k) for k, v in values.items() if v is not None)
    ordered.reverse()
    ranks: dict[int, int | None] = {k: None for k, v in values.items() if v is None}
    previous: float | None = None
    current = 0
    for position, (v, k) in enumerate(ordered, start=1):
        if previous is None or v != previous:
            current = position
            previous = v
        ranks[k] = current
    return ranks
