"""What the boards show, computed from one snapshot of the registry's rows: the web pages, the JSON API and
``cortexbox leaderboard`` all read it here, so the CLI and the web rank the same models with the same numbers."""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass, field
from typing import Any

from sqlmodel import select

from cortexbox.benchmarks import NOT_AGGREGATED, get_benchmark, list_benchmarks
from cortexbox.orchestrator.aggregation import (
    Leaf,
    NodeResult,
    TreeNode,
    aggregate,
    benchmark_tree,
    child_shares,
    latest_leaves,
    is_engineering,
    rank,
    takes_part,
    unaggregated,
)
from cortexbox.orchestrator.statistics import (
    ItemSide,
    ItemsMismatch,
    PairedReplicates,
    ceiled_split_values,
    compare_aggregate,
    compare_items,
    compare_items_aggregate,
    compare_values,
    leaf_seed,
    score_interval,
    test_fraction,
    weighted_interval,
)
from cortexbox.registry import Benchmark, LayerCommitment, Model, Registry, Run, Score

logger = logging.getLogger(__name__)

VIEWS = ("brainscore", "scored")


@dataclass
class Snapshot:
    models: dict[int, Model]
    benchmarks: list[Benchmark]
    scores: list[Score]
    runs: list[Run]
    tree: TreeNode
    leaves: dict[int, dict[str, Leaf]] = field(default_factory=dict)
    results: dict[int, NodeResult] = field(default_factory=dict)
    #: registered benchmarks outside the tree (shown, never averaged in), with the reason
    unaggregated: dict[str, str] = field(default_factory=dict)
    extra: dict[int, list[NodeResult]] = field(default_factory=dict)

    @functools.cached_property
    def score_by_id(self) -> dict[int, Score]:
        return {s.id: s for s in self.scores}

    @functools.cached_property
    def benchmark_by_id(self) -> dict[int, Benchmark]:
        return {b.id: b for b in self.benchmarks}

    @functools.cached_property
    def latest_benchmarks(self) -> dict[str, Benchmark]:
        latest: dict[str, Benchmark] = {}
        for b in self.benchmarks:
            if b.identifier not in latest or b.version > latest[b.identifier].version:
                latest[b.identifier] = b
        return latest

    @functools.cached_property
    def intervals(self) -> dict[int, dict[str, Any] | None]:
        return {s.id: score_interval(s) for s in self.scores}


EXTRA = "not aggregated"


def builtin_benchmarks() -> dict[str, Any]:
    """The benchmarks this installation defines (identifier -> benchmark object; nothing is loaded or hashed)."""
    out: dict[str, Any] = {}
    for identifier in list_benchmarks():
        try:
            out[identifier] = get_benchmark(identifier)
        except Exception as e:  # noqa: BLE001 - e.g. no data folder here: still listed, without facts
            logger.info("cannot describe %s: %s", identifier, e)
            out[identifier] = None
    return out


def load(registry: Registry, tree_spec: Any = None) -> Snapshot:
    """All rows, the tree (``tree_spec``, else the benchmarks package's tree, else the default by region) and every
    model's aggregate. A broken tree raises ``BenchmarkTreeError``; a leaf must name a benchmark that is built in
    or registered."""
    with registry.session() as s:
        models = {m.id: m for m in s.exec(select(Model).order_by(Model.id))}
        benchmarks = list(s.exec(select(Benchmark).order_by(Benchmark.identifier, Benchmark.version)))
        scores = list(s.exec(select(Score).order_by(Score.id)))
        runs = list(s.exec(select(Run).order_by(Run.id)))
    latest = {}
    for b in benchmarks:
        if b.identifier not in latest or b.version > latest[b.identifier].version:
            latest[b.identifier] = b
    tree = benchmark_tree(latest.values(), tree_spec, known=set(latest) | set(list_benchmarks()))
    snap = Snapshot(models, benchmarks, scores, runs, tree)
    snap.leaves = latest_leaves(scores, benchmarks, runs)
    snap.results = {m: aggregate(tree, snap.leaves.get(m, {})) for m in models}
    snap.unaggregated = unaggregated(tree, latest.values())
    snap.extra = {m: [aggregate(TreeNode(b, benchmark=b), snap.leaves.get(m, {}), EXTRA) for b in snap.unaggregated] for m in models}
    return snap


# -- formatting helpers ------------------------------------------------------------------------------------------------
def fmt(x: float | None, digits: int = 3) -> str:
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def short(digest: str, n: int = 12) -> str:
    return digest.split(":", 1)[-1][:n]


# -- intervals of aggregates -------------------------------------------------------------------------------------------
def _leaf_se(snap: Snapshot, leaf: Leaf) -> float | None:
    if leaf.score_id is None:
        return None
    interval = snap.intervals.get(leaf.score_id)
    if not interval:
        return None
    part = interval["ceiled"] or interval["raw"]
    return part.get("se")


def _weights(node: NodeResult, view: str, w: float = 1.0, out: dict[str, float] | None = None) -> dict[str, float]:
    out = {} if out is None else out
    if node.leaf is not None:
        if node.leaf.status == "scored":
            out[node.leaf.benchmark] = out.get(node.leaf.benchmark, 0.0) + w
        return out
    for child, share in child_shares(node, view):  # a "roots" top node counts only the model's own domain(s)
        _weights(child, view, w * share, out)
    return out


def node_interval(snap: Snapshot, model_id: int, node: NodeResult, view: str) -> dict[str, Any] | None:
    """Interval of a node's value in a view: the leaf's own interval at a leaf, else the normal interval of the
    weighted sum of scored leaves (independent benchmarks; a missing leaf is a fixed 0 in the Brain-Score view)."""
    leaves = snap.leaves.get(model_id, {})
    if node.leaf is not None:
        if node.leaf.status != "scored":
            return None
        interval = snap.intervals.get(node.leaf.score_id)
        if not interval:
            return None
        part = interval["ceiled"] or interval["raw"]
        return {"low": max(0.0, part["low"]), "high": min(1.0, part["high"]), "level": part["level"], "method": part["method"]}
    weights = _weights(node, view)
    if not weights:
        return None
    parts = [(w, leaves[b].value, _leaf_se(snap, leaves[b])) for b, w in weights.items()]
    combined = weighted_interval(parts)
    if combined is None:
        return None
    return {"low": max(0.0, combined.low), "high": min(1.0, combined.high), "level": combined.level, "method": combined.method}


# -- leaderboard -------------------------------------------------------------------------------------------------------
def columns(tree: TreeNode) -> list[dict[str, Any]]:
    """The nodes below the root, in tree order, as leaderboard columns."""
    cols: list[dict[str, Any]] = []

    def visit(node: TreeNode, path: str, depth: int) -> None:
        for child in node.children:
            p = f"{path}/{child.name}"
            cols.append({"path": p, "name": child.name, "leaf": child.is_leaf, "benchmark": child.benchmark, "depth": depth})
            visit(child, p, depth + 1)

    visit(tree, tree.name, 0)
    return cols


def extra_columns(snap: Snapshot) -> list[dict[str, Any]]:
    return [{"path": f"{EXTRA}/{b}", "name": b, "leaf": True, "benchmark": b, "depth": 0, "extra": True, "reason": reason}
            for b, reason in snap.unaggregated.items()]


def node_dict(snap: Snapshot, model_id: int, node: NodeResult) -> dict[str, Any]:
    d = {
        "path": node.path,
        "name": node.name,
        "value": node.value,
        "scored_value": node.scored_value,
        "interval": node_interval(snap, model_id, node, "brainscore"),
        "scored_interval": node_interval(snap, model_id, node, "scored"),
        "missing": node.missing,
        "missing_weight": node.missing_weight,
        "coverage": node.coverage,
        "n_leaves": node.n_leaves,
        "n_scored": node.n_scored,
    }
    if node.leaf is not None:
        d["leaf"] = node.leaf.to_dict()
    return d


def cell_text(node: dict[str, Any], view: str = "brainscore") -> str:
    """A board cell as plain text, in the words of the web's cell (``_cell.html``): a number, or why there is none
    ("missing", "failed (class)", "invalid (NaN)"), never a 0 that was not scored."""
    leaf = node.get("leaf")
    if leaf and leaf["status"] != "scored":
        return {"failed": f"failed ({leaf.get('failure_class')})", "invalid": "invalid (NaN)"}.get(leaf["status"], "missing")
    value = node["value"] if view == "brainscore" else node["scored_value"]
    if value is None:
        return "missing"
    text = fmt(value) + (" clipped" if leaf and leaf.get("clipped") else "")
    return text + (f" ({len(node['missing'])} missing)" if node.get("missing") else "")


def domains(snap: Snapshot) -> list[str]:
    """The brain roots of a multi-domain tree (``vision``, ``language``): Brain-Score keeps one leaderboard each."""
    if snap.tree.mode != "roots":
        return []
    return [c.name for c in snap.tree.children if not is_engineering(c.name)]


def leaderboard(snap: Snapshot, view: str = "brainscore", domain: str | None = None) -> dict[str, Any]:
    """Ranked rows. With ``domain`` (a brain root), only the models taking part in that domain, ranked by it, with
    the columns of that domain and its engineering root, as on Brain-Score's separate vision and language
    leaderboards; without it, every model ranked by the overall aggregate, with every column."""
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}")
    if domain is not None and domain not in domains(snap):
        raise ValueError(f"domain must be one of {domains(snap)}")
    key = "value" if view == "brainscore" else "scored_value"

    def ranked_node(result: NodeResult) -> NodeResult | None:
        if domain is None:
            return result
        node = result.find(f"{result.path}/{domain}")
        return node if node is not None and takes_part(node) else None

    ranked = {m: ranked_node(r) for m, r in snap.results.items()}
    ranks = rank({m: getattr(n, key) for m, n in ranked.items() if n is not None})
    rows = []
    for model_id, result in snap.results.items():
        if ranked[model_id] is None:
            continue
        model = snap.models[model_id]
        nodes = {n.path: node_dict(snap, model_id, n) for n in result.walk()}
        nodes.update({n.path: node_dict(snap, model_id, n) for n in snap.extra.get(model_id, [])})
        rows.append({
            "rank": ranks[model_id],
            "model_id": model_id,
            "model": model.name,
            "version": model.version,
            "digest": model.digest,
            "image_ref": model.image_ref,
            "aggregate": nodes[result.path],
            "ranked_by": nodes[ranked[model_id].path],
            "domains": [d for d in domains(snap) if (n := result.find(f"{result.path}/{d}")) is not None and takes_part(n)],
            "nodes": nodes,
        })
    rows.sort(key=lambda r: (r["rank"] is None, r["rank"] or 0, r["model"]))
    cols, extra = columns(snap.tree), extra_columns(snap)
    if domain is not None:
        own = (f"{snap.tree.name}/{domain}/", f"{snap.tree.name}/engineering_{domain}")
        cols = [c for c in cols if c["path"].startswith(own)]
        extra = [c for c in extra if any(r["nodes"][c["path"]]["leaf"]["status"] != "not scored" for r in rows)]
    return {
        "view": view,
        "domain": domain,
        "domains": domains(snap),
        "tree": snap.tree.to_dict(),
        "root": snap.tree.name,
        "columns": cols,
        "extra_columns": extra,
        "rows": rows,
        "semantics": {
            "brainscore": "parent = unweighted mean of its children; ceiled scores clipped to [0, 1]; latest benchmark "
            "version only; missing or failed children count as 0 (and are listed as missing)",
            "scored": "parent = mean of the children that have a score; coverage says how much of the Brain-Score "
            "weight was scored",
            "intervals": "95%: the bootstrap stored with each score at scoring time (stimuli, and neuroids or subjects "
            "where the metric has them; seed recorded), else for older scores the corrected resampled t over "
            "cross-validation splits; aggregates combine benchmarks as independent (normal)",
        },
    }


# -- model page ------------------------------------------------------------------------------------------------------
def score_dict(snap: Snapshot, score: Score, counted: set[int] | None = None) -> dict[str, Any]:
    bench = snap.benchmark_by_id.get(score.benchmark_id)
    prov = score.provenance or {}
    return {
        "id": score.id,
        "run_id": score.run_id,
        "model_id": score.model_id,
        "benchmark": bench.identifier if bench else None,
        "benchmark_version": bench.version if bench else None,
        "latest_version": bench is not None and snap.latest_benchmarks[bench.identifier].version == bench.version,
        "counts": counted is not None and score.id in counted,
        "raw": score.raw,
        "error": score.error,
        "ceiling": score.ceiling,
        "ceiled": score.ceiled,
        "layer": score.layer,
        "values": score.values,
        "interval": snap.intervals.get(score.id),
        "image_digest": prov.get("image_digest"),
        "data_hash": prov.get("data_hash") or (bench.data_hash if bench else None),
        "code_version": prov.get("code_version"),
        "layer_commitment": prov.get("layer_commitment"),
        "provenance": prov,
        "created_at": score.created_at.isoformat(timespec="seconds") if score.created_at else None,
    }


def run_dict(run: Run) -> dict[str, Any]:
    return {
        "id": run.id,
        "model_id": run.model_id,
        "benchmark_id": run.benchmark_id,
        "model_ref": run.model_ref,
        "benchmark": run.benchmark_identifier,
        "status": run.status,
        "failure_class": run.failure_class,
        "error": run.error,
        "log_tail": run.log_tail,
        "timings": run.timings,
        "started_at": run.started_at.isoformat(timespec="seconds") if run.started_at else None,
        "finished_at": run.finished_at.isoformat(timespec="seconds") if run.finished_at else None,
    }


def layer_curves(registry: Registry, snap: Snapshot, model_id: int) -> list[dict[str, Any]]:
    """Per region (and selection data), the layer-by-layer selection scores and the chosen layer: from the stored
    layer commitments, and from scores' provenance where no commitment row holds them."""
    curves: dict[tuple[str, str], dict[str, Any]] = {}
    with registry.session() as s:
        for c in s.exec(select(LayerCommitment).where(LayerCommitment.model_id == model_id).order_by(LayerCommitment.id)):
            scores = {k: v for k, v in (c.layer_scores or {}).items()}
            curves[(c.region, c.selection_key)] = {"region": c.region, "selection_key": c.selection_key, "chosen": c.layer, "layer_scores": scores}
    for score in snap.scores:
        if score.model_id != model_id:
            continue
        commitment = (score.provenance or {}).get("layer_commitment") or {}
        if commitment.get("layer_scores"):
            bench = snap.benchmark_by_id.get(score.benchmark_id)
            key = (bench.region if bench else "", commitment.get("selection_key", ""))
            curves.setdefault(key, {"region": key[0], "selection_key": key[1], "chosen": score.layer, "layer_scores": commitment["layer_scores"]})
    return [c for c in curves.values() if any(v is not None for v in c["layer_scores"].values())]


def model_page(registry: Registry, snap: Snapshot, model_id: int) -> dict[str, Any]:
    model = snap.models[model_id]
    result = snap.results[model_id]
    counted = {leaf.score_id for leaf in snap.leaves.get(model_id, {}).values() if leaf.score_id is not None}
    scores = [score_dict(snap, s, counted) for s in reversed(snap.scores) if s.model_id == model_id]
    runs = [run_dict(r) for r in reversed(snap.runs) if r.model_id == model_id]
    ranks = rank({m: r.value for m, r in snap.results.items()})
    return {
        "model_id": model_id,
        "model": model.name,
        "version": model.version,
        "digest": model.digest,
        "image_ref": model.image_ref,
        "info": model.info,
        "rank": ranks[model_id],
        "n_models": len(snap.models),
        "nodes": [node_dict(snap, model_id, n) | {"depth": n.path.count("/")} for n in result.walk()],
        "extra_nodes": [node_dict(snap, model_id, n) | {"reason": snap.unaggregated[n.name]} for n in snap.extra.get(model_id, [])],
        "scores": scores,
        "layer_curves": layer_curves(registry, snap, model_id),
        "runs": runs,
    }


# -- benchmark page ----------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def _benchmark_facts(identifier: str, data_hash: str) -> dict[str, Any]:
    """#stimuli, #neuroids and metric of a benchmark, read from its definition (cached per data hash); {} where it
    cannot be loaded here."""
    try:
        from cortexbox.orchestrator.scoring import resolve_benchmark

        bench = resolve_benchmark(identifier)
        if bench.data_hash != data_hash:
            return {}
        info = bench.info()
        return {k: info.get(k) for k in ("n_stimuli", "n_neuroids", "metric", "normalization", "source_visual_degrees", "kind") if k in info}
    except Exception as e:  # noqa: BLE001 - facts are optional on the page
        logger.info("no facts for %s: %s", identifier, e)
        return {}


def _unregistered_page(identifier: str) -> dict[str, Any]:
    """A built-in benchmark no score or sync has registered yet: what its code says, no version in the registry."""
    bench = builtin_benchmarks().get(identifier)
    return {
        "identifier": identifier, "registered": False, "version": getattr(bench, "version", None), "versions": [],
        "region": getattr(bench, "region", ""), "kind": getattr(bench, "kind", None),
        "description": getattr(bench, "description", ""), "citation": getattr(bench, "citation", ""),
        "ceiling": None, "ceiling_error": None, "data_hash": None, "definition": None, "n_stimuli": None,
        "n_neuroids": None, "facts": {}, "scores": [], "points": [],
        "note": f"not registered yet: `cortexbox benchmarks sync {identifier}` registers it (data hash, ceiling), "
        "and scoring a model on it does too",
    }


def benchmark_page(snap: Snapshot, identifier: str) -> dict[str, Any]:
    """A benchmark's versions, facts and every model's standing on its latest version, ranked by the leaf value
    (``rank``: SQL RANK(); failed and invalid rows unranked). KeyError for an identifier that is neither
    registered nor built in."""
    versions = [b for b in snap.benchmarks if b.identifier == identifier]
    if not versions:
        if identifier in list_benchmarks():
            return _unregistered_page(identifier)
        raise KeyError(identifier)
    latest = snap.latest_benchmarks[identifier]
    facts = dict(_benchmark_facts(identifier, latest.data_hash))
    if not facts and isinstance(latest.definition, dict):
        facts = {k: latest.definition.get(k) for k in ("n_stimuli", "n_neuroids") if k in latest.definition}
    rows = []
    for model_id, leaves in snap.leaves.items():
        leaf = leaves.get(identifier)
        if leaf is None or model_id not in snap.models:
            continue
        score = snap.score_by_id.get(leaf.score_id) if leaf.score_id else None
        rows.append({
            "model_id": model_id,
            "model": snap.models[model_id].name,
            "digest": snap.models[model_id].digest,
            "leaf": leaf.to_dict(),
            "score": score_dict(snap, score) if score else None,
        })
    # Ties of the clipped value are broken by the unclipped one: on a benchmark without a ceiling (a ΔLL in nats,
    # which may be negative) every negative score would otherwise share the rank of 0. Aggregates still clip.
    ranks = rank({i: None if r["leaf"]["value"] is None
                  else (r["leaf"]["value"], r["leaf"]["unclipped"] if r["leaf"]["unclipped"] is not None
                        else r["leaf"]["value"])
                  for i, r in enumerate(rows)})
    for i, r in enumerate(rows):
        r["rank"] = ranks[i]
    rows.sort(key=lambda r: (r["rank"] is None, r["rank"] or 0, r["model"]))
    return {
        "identifier": identifier,
        "registered": True,
        "version": latest.version,
        "versions": [{"version": b.version, "data_hash": b.data_hash, "created_at": b.created_at.isoformat(timespec="seconds")} for b in versions],
        "region": latest.region,
        "description": latest.description,
        "citation": latest.citation,
        "ceiling": latest.ceiling,
        "ceiling_error": latest.ceiling_error,
        "data_hash": latest.data_hash,
        "definition": latest.definition,
        "n_stimuli": facts.get("n_stimuli"),
        "n_neuroids": facts.get("n_neuroids"),
        "facts": facts,
        "scores": rows,
        "points": [(r["model"], r["leaf"]["value"], f"/models/{r['model_id']}") for r in rows if r["leaf"]["status"] == "scored"],
    }


def benchmarks_list(snap: Snapshot) -> list[dict[str, Any]]:
    """Every benchmark: the registered ones (latest version) and the built-in ones not registered yet. The registry
    holds a benchmark only once something registered it (a score, ``benchmarks sync`` or ``ingest``), so listing
    registry rows alone showed 1 of 51 after the old demo."""
    out = []
    for identifier, b in sorted(snap.latest_benchmarks.items()):
        n = sum(1 for leaves in snap.leaves.values() if leaves.get(identifier) and leaves[identifier].status == "scored")
        out.append({"identifier": identifier, "registered": True, "version": b.version, "region": b.region,
                    "ceiling": b.ceiling, "data_hash": b.data_hash, "n_scored_models": n, "description": b.description,
                    "in_tree": identifier in snap.tree.leaves(), "not_aggregated": snap.unaggregated.get(identifier)})
    for identifier, bench in builtin_benchmarks().items():
        if identifier in snap.latest_benchmarks:
            continue
        out.append({"identifier": identifier, "registered": False, "version": getattr(bench, "version", None),
                    "region": getattr(bench, "region", ""), "ceiling": None, "data_hash": None, "n_scored_models": 0,
                    "description": getattr(bench, "description", ""), "in_tree": identifier in snap.tree.leaves(),
                    "not_aggregated": NOT_AGGREGATED.get(identifier)})
    out.sort(key=lambda r: r["identifier"])
    return out


# -- comparison ------------------------------------------------------------------------------------------------------
#: Replicates and seed of the paired bootstrap over stored items on the compare page and API.
COMPARE_N_BOOT = 1000
COMPARE_SEED = 0
#: Paired replicates already drawn in this process, by (registry, score A, score B, their times, benchmark, n_boot,
#: seed): scores never change, and an RDM leaf with many subjects takes seconds to resample.
_REPLICATES: dict[tuple[Any, ...], PairedReplicates] = {}
_REPLICATES_MAX = 256


def _paired(registry: Registry, sa: Score, sb: Score, identifier: str, sides: dict[int, ItemSide], n_boot: int,
            seed: int) -> PairedReplicates:
    key = (str(registry.engine.url), sa.id, sb.id, sa.created_at, sb.created_at, identifier, n_boot, seed)
    if key not in _REPLICATES:
        if len(_REPLICATES) >= _REPLICATES_MAX:
            _REPLICATES.pop(next(iter(_REPLICATES)))
        _REPLICATES[key] = PairedReplicates(sides[sa.id], sides[sb.id], n_boot=n_boot, seed=leaf_seed(seed, identifier))
    return _REPLICATES[key]


def _item_sides(registry: Registry | None, scores: list[Score]) -> dict[int, ItemSide]:
    """Each score's stored items as a comparison side (scores without items, or whose items cannot be read or
    re-normalised, are left out: they are compared on their splits)."""
    from cortexbox.benchmarks.metrics.items import ItemValues

    if registry is None:
        return {}
    sides: dict[int, ItemSide] = {}
    by_id = {s.id: s for s in scores}
    for score_id, row in registry.score_items(list(by_id)).items():
        try:
            side = ItemSide.of(by_id[score_id], ItemValues.from_bytes(row.kind, row.payload))
        except ValueError as e:
            logger.warning("items of score %s cannot be read: %s", score_id, e)
            continue
        if side is not None:
            sides[score_id] = side
    return sides


def compare(snap: Snapshot, a: int, b: int, *, registry: Registry | None = None, n_boot: int = COMPARE_N_BOOT,
            seed: int = COMPARE_SEED) -> dict[str, Any]:
    """Paired comparison of models ``a`` and ``b`` per benchmark and per aggregate node: on the stored per-item values
    when both scores have them (``registry`` gives access to them), else on the per-split values; each comparison's
    ``basis`` says which."""
    la, lb = snap.leaves.get(a, {}), snap.leaves.get(b, {})
    benches = []
    split_values: dict[int, dict[str, list[float]]] = {a: {}, b: {}}
    test_over_train: dict[str, float] = {}
    item_sides: dict[int, dict[str, ItemSide]] = {a: {}, b: {}}
    replicates: dict[str, PairedReplicates] = {}
    scored = {m: {k: snap.score_by_id.get(leaf.score_id) for k, leaf in ls.items() if leaf.status == "scored"}
              for m, ls in ((a, la), (b, lb))}
    sides = _item_sides(registry, [s for m in (a, b) for s in scored[m].values() if s is not None])
    for identifier in snap.tree.leaves() + list(snap.unaggregated):
        row: dict[str, Any] = {"benchmark": identifier, "a": la.get(identifier, Leaf(identifier, "not scored")).to_dict(),
                               "b": lb.get(identifier, Leaf(identifier, "not scored")).to_dict(), "comparison": None, "note": ""}
        sa = scored[a].get(identifier)
        sb = scored[b].get(identifier)
        if sa and sb and sa.id in sides and sb.id in sides:
            try:
                paired = _paired(registry, sa, sb, identifier, sides, n_boot, seed)  # type: ignore[arg-type]
            except ItemsMismatch as e:
                row["note"] = f"items cannot be paired ({e}); "
            else:
                replicates[identifier] = paired
                item_sides[a][identifier], item_sides[b][identifier] = sides[sa.id], sides[sb.id]
                row["comparison"] = compare_items(sides[sa.id], sides[sb.id], replicates=paired).to_dict()
                row["difference"] = la[identifier].value - lb[identifier].value
                left = paired.left_out
                if left["only_a"] or left["only_b"]:
                    row["note"] = (f"on the {paired.m} shared items ({left['only_a']} only A, {left['only_b']} only B"
                                   " left out)")
        elif sa and sb:
            row["note"] = "no stored items (scored before they were kept): "
        if sa and sb and row["comparison"] is None:
            train, test = test_fraction(sa.provenance)
            tot = test / train
            same_splits = len(sa.values) == len(sb.values) >= 2 and \
                ((sa.provenance or {}).get("metric") or {}).get("random_state") == ((sb.provenance or {}).get("metric") or {}).get("random_state")
            if same_splits:
                ca, cb = ceiled_split_values(sa), ceiled_split_values(sb)
                split_values[a][identifier], split_values[b][identifier] = ca, cb
                test_over_train[identifier] = tot
                row["comparison"] = compare_values(ca, cb, test_over_train=tot).to_dict()
                row["difference"] = la[identifier].value - lb[identifier].value
                row["note"] += "paired over splits" if row["note"] else ""
            else:
                row["note"] += "splits differ: no paired test"
        elif not (sa and sb):
            row["note"] = "not scored for both models"
        benches.append(row)
    nodes = []
    ra, rb = snap.results[a], snap.results[b]
    for na, nb in zip(ra.walk(), rb.walk()):
        if na.leaf is not None:
            continue
        weights = _node_leaf_weights(na)
        both = sorted(k for k in weights if k in scored[a] and k in scored[b])
        if both and all(k in replicates for k in both):  # every leaf both models were scored on has paired items
            comparison, shared, left_out = compare_items_aggregate(
                weights, item_sides[a], item_sides[b], n_boot=n_boot, seed=seed, replicates=replicates)
        else:
            tot = max(test_over_train.values(), default=0.1 / 0.9)
            comparison, shared, left_out = compare_aggregate(weights, split_values[a], split_values[b], test_over_train=tot)
        nodes.append({
            "path": na.path, "name": na.name,
            "a": {"value": na.value, "scored_value": na.scored_value, "missing": na.missing},
            "b": {"value": nb.value, "scored_value": nb.scored_value, "missing": nb.missing},
            "difference": None if na.value is None or nb.value is None else na.value - nb.value,
            "comparison": comparison.to_dict() if comparison else None,
            "shared_leaves": shared, "left_out": sorted(set(weights) - set(shared)),
        })
    return {
        "a": {"model_id": a, "model": snap.models[a].name, "digest": snap.models[a].digest},
        "b": {"model_id": b, "model": snap.models[b].name, "digest": snap.models[b].digest},
        "benchmarks": benches,
        "aggregates": nodes,
        "method": f"paired bootstrap over the stored per-item values where both scores have them ({n_boot} replicates,"
        f" seed {seed}, one stream per benchmark): the same resampled stimuli (items) for both models, each score"
        " recomputed as defined and ceiled with its ceiling fixed, percentile interval and two-sided bootstrap p;"
        " aggregates resample every leaf that way when all their shared leaves have items. Otherwise (scores made"
        " before items were kept) paired over cross-validation splits (same stimuli and random_state); corrected"
        " resampled t-test (Nadeau & Bengio 2003), two-sided, alpha 0.05; effect size Cohen's d_z over splits;"
        " aggregates over the leaves both models were scored on, weighted as in the tree",
    }


def _node_leaf_weights(node: NodeResult, w: float = 1.0, out: dict[str, float] | None = None) -> dict[str, float]:
    out = {} if out is None else out
    if node.leaf is not None:
        out[node.leaf.benchmark] = out.get(node.leaf.benchmark, 0.0) + w
        return out
    for child, share in child_shares(node):
        _node_leaf_weights(child, w * share, out)
    return out
