"""Scoring one model on one benchmark, as one self-contained job.

`score_model` takes only plain, serialisable arguments (a ScoreRequest) and reaches everything else (Docker, the
registry, the activation cache) from them, so the same function runs in `cortexbox score`, the queue's consumer
(orchestrator/scoring/queue.py: a worker, the web app, an ingestion) or a Celery worker. It records the run before
doing anything, attaches it to the benchmark's registered version (scoring/versions.py), and records its end
(score, or the failure of scoring/failures.py with the container's log) on every path.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from cortexbox.benchmarks import neuroid_assembly
from cortexbox.benchmarks.rdm_benchmark import DegenerateRDM
from cortexbox.orchestrator import conformance, image_registry
from cortexbox.orchestrator.cache import ActivationCache, stimulus_keys
from cortexbox.orchestrator.errors import CortexboxError, FailureClass, ModelFailure, UserError
from cortexbox.orchestrator.provenance import code_version, library_versions
from cortexbox.orchestrator.run_events import RunEventLog, owner
from cortexbox.orchestrator.runtime import ModelSession, SandboxLimits, open_session
from cortexbox.orchestrator.scoring import fair, versions
from cortexbox.orchestrator.scoring.failures import failure_of
from cortexbox.registry import Registry
from cortexbox.registry.store import NameTaken

#: Budget for the results of one extraction run held in memory during layer selection;
#: candidate layers are grouped into runs that fit.
SELECTION_GROUP_BYTES = 1536 * 1024**2


@dataclass
class ScoreRequest:
    benchmark: str
    image: str | None = None
    endpoint: str | None = None
    use_cache: bool = True
    database_url: str | None = None
    cache_dir: str | None = None
    limits: SandboxLimits = field(default_factory=SandboxLimits.configured)
    #: Deadline of an extraction run: a fixed allowance plus this much per stimulus.
    seconds_per_stimulus: float = 2.0
    #: The registry's ScoreJob this request answers (scoring/workers.py): its run is linked to it at once, and its
    #: score names it (unique: a job delivered twice stores one score).
    job_id: int | None = None
    #: Seed of the stimulus order and repeat probes (scoring/fair.py); None: a fresh one, recorded in the provenance.
    order_seed: int | None = None
    #: Stimuli sent twice per image run to catch a lookup of seen pixels (scoring/fair.py); 0: none. None: fair.PROBES
    #: for a model image, none for an endpoint (the operator's own server, never a submission: e.g. a replay of stored
    #: activations by pixel hash in a parity test).
    repeat_probes: int | None = None


@dataclass
class ScoreOutcome:
    run_id: int
    model: str
    digest: str
    benchmark: str
    benchmark_version: int
    raw: float
    error: float | None
    ceiling: float | None
    ceiled: float | None
    layer: str
    from_cache: bool
    timings: dict[str, float]
    provenance: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: (event, data) callbacks drive progress displays: "stage" {text}, "progress" {done, total, label}; score_model
#: also stores them (and "status", "score", "failed", "done") in the registry, see orchestrator/run_events.py.
EventSink = Callable[[str, dict], None]


def _no_events(event: str, data: dict) -> None:
    pass


class _Job:
    def __init__(self, request: ScoreRequest, registry: Registry, cache: ActivationCache, events: EventSink):
        self.request = request
        self.registry = registry
        self.cache = cache
        self.events = events
        self.session: ModelSession | None = None
        self.recorded = False  # the session's model description is stored in the registry
        self.timings: dict[str, float] = {}
        self.from_cache = True
        #: Stimuli asked for and sent to the model, over every extraction of this job.
        self.cache_stats: dict[str, int] = {}
        #: Every extraction run's order and ids come from this seed (scoring/fair.py); its runs' probe reports.
        self.order_seed = request.order_seed if request.order_seed is not None else fair.new_seed()
        self.fair_runs: list[dict] = []
        self.repeat_probes = request.repeat_probes if request.repeat_probes is not None else fair.PROBES if request.image else 0
        #: Outputs that answered a repeat probe inconsistently in a layer selection: never chosen, never cached.
        self.inconsistent: set[str] = set()

    # -- the model, started only when something must actually run -------------------------
    def _session(self) -> ModelSession:
        if self.session is None:
            self._open()
        if not self.recorded:  # the model's description, stored once per session (a ModelFailure if it lies)
            self.description = self.session.description
            self._check_conformance()
            self._record_model()
            self.recorded = True
        return self.session

    def _open(self) -> None:
        self.events("stage", {"text": "starting the model"})
        t0 = time.perf_counter()
        self.session = open_session(image=self.request.image, endpoint=self.request.endpoint, limits=self.request.limits)
        self.timings["start_s"] = time.perf_counter() - t0
        self.recorded = False

    def _check_conformance(self) -> None:
        """A model image's metadata checked against what it does on public stimuli (orchestrator/conformance.py),
        once per digest: a liar fails the run as nonconformant before any benchmark stimulus is sent."""
        self.conformance = None
        if not self.request.image:
            return  # an endpoint is the operator's own server, never a submission
        known = self.registry.model_by_digest(self.session.image_id)
        if known is not None and conformance.passed(known.info):
            self.conformance = known.info["conformance"]
            return
        self.events("stage", {"text": "checking the model's metadata on public stimuli"})
        self.conformance = conformance.check(self.session, self.description,
                                             seconds_per_stimulus=self.request.seconds_per_stimulus)

    def _record_model(self) -> None:
        info = self.description.to_dict()
        if self.conformance is not None:
            info["conformance"] = self.conformance
        if self.request.image:
            digest = self.session.image_id
        else:
            digest = f"endpoint:{info['model_id']}@{info['model_version']}"
        image_ref = self.request.image or self.request.endpoint
        if self.request.image and not image_registry.is_digest_reference(image_ref):
            known = self.registry.model_by_digest(digest)
            if known is not None and image_registry.is_digest_reference(known.image_ref):
                image_ref = known.image_ref  # a local tag never replaces the registry reference other engines pull
        try:
            self.model_row = self.registry.upsert_model(digest, info["model_id"], info["model_version"], image_ref, info)
        except NameTaken as e:  # the model's model_id is only its claim
            raise ModelFailure(FailureClass.REJECTED, str(e)) from None

    def validate(self, bench) -> None:
        """Raises the user's mistakes before the run's row exists, so that they never show up in `cortexbox runs`
        as failed runs: not exactly one of image and endpoint, the benchmark's data missing (DataNotFoundError),
        Docker not running, no such image, no model server at the endpoint (an endpoint is connected to here: that
        fails only with a UserError; what the model says about itself is checked once the run is recorded)."""
        if (self.request.image is None) == (self.request.endpoint is None):
            raise UserError("give exactly one of an image and an endpoint", "`cortexbox score --help`")
        bench.data_hash  # noqa: B018 - hashes the data files (cached): DataNotFoundError when they are missing
        if self.request.image:
            from cortexbox.orchestrator.runtime import check_runtime, docker_client

            docker = docker_client()
            try:
                # A reference by digest that names our registry is pulled when this engine lacks it, and checked.
                self.image_digest = image_registry.local_image(docker, self.request.image).id
            except UserError:
                raise
            except Exception:  # noqa: BLE001 - ImageNotFound and friends
                raise UserError(
                    f"no Docker image {self.request.image!r} on this machine",
                    "build one with `cortexbox image build <project dir>` or list them with `docker images`",
                ) from None
            check_runtime(docker, (self.request.limits or SandboxLimits()).runtime)
        else:
            self._open()

    def _resolve_model(self) -> None:
        """Finds the model's stored description by image digest (looked up by `validate`), so a fully cached
        score needs no container at all."""
        self.model_row = None
        self.description = None
        if self.request.image and self.request.use_cache:
            self.model_row = self.registry.model_by_digest(self.image_digest)
            if self.model_row is not None and not conformance.passed(self.model_row.info):
                self.model_row = None  # registered before its metadata was checked: started and checked now
        if self.model_row is None:
            self._session()

    @property
    def cacheable(self) -> bool:
        # An endpoint's code can change under the same name: never trust a cache for it.
        return self.request.use_cache and self.request.image is not None

    @property
    def info(self) -> dict:
        return self.model_row.info

    # -- extraction --------------------------------------------------------------------------
    def extract(self, stimulus_set, layers: list[str], label: str, strict: bool = True) -> dict[str, np.ndarray]:
        """(stimuli x features) float32 per output (layers and behaviours alike). Rows the cache
        holds for these very stimuli (by placed content, whichever benchmark or selection computed
        them) are reused; only stimuli missing for some output are sent to the model (a text part
        goes with its whole context). What is sent goes under random ids, in a shuffled order, with repeat
        probes (scoring/fair.py); the rows are back in the set's order before anything else sees them. An output
        that fails a probe fails the run (``strict``), or in a layer selection is only noted in `inconsistent`."""
        degrees = float(self.info["visual_degrees"])
        ids = list(stimulus_set.stimulus_ids)
        n = len(ids)
        digest = self.model_row.digest
        writable = self.request.image is not None  # an endpoint's code can change under the same name
        keys = stimulus_keys(stimulus_set, degrees) if (self.cacheable or writable) else None
        indexes = {layer: self.cache.index(digest, layer) for layer in layers} if self.cacheable else {}
        missing = {
            layer: [i for i, key in enumerate(keys) if key not in indexes[layer]] if layer in indexes else list(range(n))
            for layer in layers
        }
        run_layers = [layer for layer in layers if missing[layer]]
        send_set = stimulus_set
        if run_layers:
            wanted = sorted(set().union(*(missing[layer] for layer in run_layers)))
            if len(wanted) < n:
                if hasattr(stimulus_set, "iter_text"):  # whole contexts, in the set's order
                    contexts = list(dict.fromkeys(stimulus_set.parts[i][2] for i in wanted))
                    send_set = stimulus_set.subset(contexts, f"{stimulus_set.identifier}[missing]")
                else:
                    send_set = stimulus_set.subset([ids[i] for i in wanted], f"{stimulus_set.identifier}[missing]")
        send_ids = list(send_set.stimulus_ids) if run_layers else []
        position = {sid: i for i, sid in enumerate(ids)}
        send = [position[sid] for sid in send_ids]
        self.cache_stats["stimuli"] = self.cache_stats.get("stimuli", 0) + n
        self.cache_stats["sent"] = self.cache_stats.get("sent", 0) + len(send)
        self.events("cache", {"label": label, "stimuli": n, "cached": n - len(send), "sent": len(send), "outputs": len(layers)})
        found: dict[str, np.ndarray] = {}
        result = None
        if run_layers:
            self.from_cache = False
            session = self._session()
            self.events("stage", {"text": f"{label}: {len(send)} of {n} stimuli, {len(run_layers)} output(s)"})
            t0 = time.perf_counter()
            plan = fair.RunPlan.make(send_set, self.order_seed, label, self.repeat_probes)
            result = session.client.run(
                session.description,
                plan.stream(send_set, degrees),
                plan.ids,
                layers=[name for name in run_layers if name in self.info["layers"]],
                behaviours=[name for name in run_layers if name not in self.info["layers"]],
                timeout_s=60 + self.request.seconds_per_stimulus * len(plan.ids),
                # Progress counts the set's stimuli: the repeat probes are a share of the wire, not stimuli to report.
                on_progress=lambda done, total: self.events(
                    "progress", {"done": round(done * plan.n / total) if total else done, "total": plan.n, "label": label}),
                run_id=plan.run_id,
            )
            session.check_budgets()  # a run folder over its budget, stopped only after the run ended
            report = plan.restore(result.outputs, strict)  # rows in the set's order; INCONSISTENT when strict
            self.fair_runs.append(report)
            self.inconsistent.update(report.get("inconsistent", ()))
            self.timings[f"{label}_extract_s"] = self.timings.get(f"{label}_extract_s", 0.0) + time.perf_counter() - t0
        for layer in layers:
            if layer not in run_layers:
                found[layer] = self.cache.gather(indexes[layer], keys)
                continue
            values = result.outputs.pop(layer)
            stored = False
            if writable and layer not in self.inconsistent:
                try:
                    self.cache.put(digest, layer, [keys[i] for i in send], values)  # float32 outputs only
                    stored = values.dtype == np.float32
                except OSError as e:  # e.g. a full disk: the cache is an optimisation, the run goes on
                    self.events("stage", {"text": f"activation cache: rows of {layer} not stored ({e})"})
            if len(send) == n:  # send_set is the whole set, in its order
                found[layer] = values
            elif stored and self.cacheable:
                # every row is on disk now: free the model's rows first, then assemble from the shards (one
                # full-size array in memory at a time)
                features = values.shape[1]
                del values
                index = self.cache.index(digest, layer)
                if index.features == features and not index.missing(keys):
                    found[layer] = self.cache.gather(index, keys)
                else:  # pragma: no cover - rows removed under us: send them all again
                    found[layer] = self.extract(stimulus_set, [layer], label, strict)[layer]
            else:
                out = np.empty((n, values.shape[1]), dtype=values.dtype)
                out[send] = values
                del values
                sent = set(send)
                rest = [i for i in range(n) if i not in sent]
                found[layer] = self.cache.gather(indexes[layer], [keys[i] for i in rest], out=out, positions=rest)
        return found

    # -- layer commitment --------------------------------------------------------------------
    def commit_layer(self, bench) -> tuple[str, dict]:
        """The model's layer for the benchmark's region: its own commitment, a stored choice,
        or a fresh, reproducible choice on the benchmark's selection data (never its test data)."""
        region = bench.region
        declared = self.info.get("region_layers", {}).get(region)
        if declared:
            return declared, {"method": "declared by the model"}
        candidates = list(self.info.get("commitment_layers") or self.info["layers"])
        if bench.modality == "text":
            # Language: a fixed relative depth, decided before any scoring (never selected on scored data).
            from cortexbox.benchmarks.language import LANGUAGE_LAYER_DEPTH, committed_layer

            layer = committed_layer(candidates)
            return layer, {"method": "relative_depth", "depth": LANGUAGE_LAYER_DEPTH, "candidates": len(candidates)}
        if bench.selection_stimulus_set is None:
            raise UserError(f"{bench.identifier} has no selection data and the model commits no layer to {region}")
        # Benchmarks that borrow another's selection data share its key, and so its stored choice.
        source = bench.selection_source or bench
        key = f"{source.identifier}@{source.version}:selection"
        if self.cacheable:
            stored = self.registry.commitment(self.model_row.id, region, key)
            if stored is not None and stored.layer in candidates:
                return stored.layer, {"method": "selection", "selection_key": key, "layer_scores": stored.layer_scores, "stored": True}
        if len(candidates) == 1:
            scores = {candidates[0]: None}
        else:
            scores = self._score_candidates(bench, candidates)
        # A layer whose score is undefined (None, NaN: e.g. a constant RDM) ranks last; one that answered a repeat
        # probe inconsistently (scoring/fair.py) is chosen only if every layer did (its scored run then fails).
        best = max(candidates, key=lambda layer: (layer not in self.inconsistent, scores[layer] if scores[layer] is not None
                                                  and math.isfinite(scores[layer]) else -math.inf))
        left_out = sorted(self.inconsistent & set(candidates))
        if self.cacheable:
            self.registry.save_commitment(self.model_row.id, region, best, key, scores)
        return best, {"method": "selection", "selection_key": key, "layer_scores": scores, "stored": False,
                      **({"inconsistent": left_out} if left_out else {})}

    def _score_candidates(self, bench, candidates: list[str]) -> dict[str, float]:
        selection = bench.selection_stimulus_set
        n = len(selection)
        groups: list[list[str]] = []
        size = 0
        for layer in candidates:
            nbytes = n * math.prod(self.info["layers"][layer]) * 4
            if groups and size + nbytes <= SELECTION_GROUP_BYTES:
                groups[-1].append(layer)
                size += nbytes
            else:
                groups.append([layer])
                size = nbytes
        scores: dict[str, float] = {}
        t0 = time.perf_counter()
        for i, group in enumerate(groups):
            arrays = self.extract(selection, group, label=f"layer selection {i + 1}/{len(groups)}", strict=False)
            for layer in group:
                assembly = neuroid_assembly(arrays.pop(layer), selection.stimulus_ids, layer=layer, model=self.model_row.name)
                score = float(bench.score_for_selection(assembly))
                scores[layer] = score if math.isfinite(score) else None  # JSON has no NaN
                self.events("stage", {"text": f"selection: {layer} scored {score:.3f}"})
        self.timings["selection_s"] = time.perf_counter() - t0
        return scores


def score_model(
    request: ScoreRequest,
    *,
    registry: Registry | None = None,
    cache: ActivationCache | None = None,
    events: EventSink | None = None,
) -> ScoreOutcome:
    """Scores one model on one benchmark and stores the result; see the module docstring."""
    events = events or _no_events
    registry = registry or Registry(request.database_url)
    bench = versions.resolve_benchmark(request.benchmark, registry)
    cache = cache or ActivationCache(request.cache_dir)
    job = _Job(request, registry, cache, events)
    try:
        job.validate(bench)
    except BaseException:
        if job.session is not None:
            job.session.close()
        raise
    run = registry.start_run(request.image or request.endpoint or "", bench.identifier)
    if request.job_id is not None:
        _link_job(registry, request.job_id, run.id)
    events = job.events = RunEventLog(registry, run.id, events, benchmark=bench.identifier)
    t_start = time.perf_counter()
    try:
        events("status", {"status": "running", "model_ref": run.model_ref, **owner()})
        events("stage", {"text": f"{bench.identifier}: ceiling"})
        ceiling = bench.ceiling
        # The same registration path as `cortexbox benchmarks ingest` / `sync`: new or changed data
        # becomes the next version, with jobs queued for the other registered models.
        bench_row = versions.register_benchmark(
            bench, registry=registry,
            exclude_models=lambda m: bool(request.image) and request.image in (m.image_ref, m.digest),
        )
        registry.update_run(run, benchmark_id=bench_row.id)
        job._resolve_model()
        registry.update_run(run, model_id=job.model_row.id)
        wanted = bench.modality
        offered = job.info.get("modality", "image")
        if wanted != offered:
            raise ModelFailure(
                FailureClass.REJECTED, f"{bench.identifier} needs a {wanted} model; this model takes {offered} stimuli"
            )
        if bench.kind == "behaviour":
            layer = bench.behaviour
            if layer not in job.info["behaviours"]:
                raise ModelFailure(
                    FailureClass.REJECTED,
                    f"{bench.identifier} needs the behaviour {layer!r}, which the model does not offer "
                    f"(it offers: {', '.join(job.info['behaviours']) or 'none'})",
                )
            commitment = {"method": "behaviour", "output": layer}
        else:
            layer, commitment = job.commit_layer(bench)
        stimuli = bench.stimulus_set
        values = job.extract(stimuli, [layer], label="benchmark")[layer]
        events("stage", {"text": f"{bench.identifier}: scoring layer {layer}"})
        t0 = time.perf_counter()
        assembly = neuroid_assembly(values, stimuli.stimulus_ids, layer=layer, model=job.model_row.name)
        del values
        try:
            score = bench.score(assembly)
        except DegenerateRDM as e:  # the model's outputs, not the benchmark: a failed run with a class, no traceback
            raise ModelFailure(FailureClass.BAD_OUTPUT, f"layer {layer}: {e}") from None
        error = score.error if score.error is not None and math.isfinite(score.error) else None  # e.g. a single RDM comparison
        job.timings["score_s"] = time.perf_counter() - t0
        job.timings["total_s"] = time.perf_counter() - t_start
        items = _score_items(score)  # per-item values, stored apart (score_items) for paired comparisons
        info = job.info
        provenance = {
            "image_digest": job.model_row.digest,
            "image_ref": request.image or request.endpoint,
            # The registry's (manifest) digest of these bytes (image_registry checks it names image_digest's config),
            # for every model registered by reference by digest, whichever name this run was given.
            "registry_digest": (job.model_row.image_ref.rsplit("@", 1)[1]
                                if image_registry.is_digest_reference(job.model_row.image_ref) else None),
            "model_id": info["model_id"],
            "model_version": info["model_version"],
            "sdk_version": info.get("metadata", {}).get("cortexbox_sdk_version", ""),
            "benchmark": bench.identifier,
            "benchmark_version": bench_row.version,  # the registered version this score is attached to
            "data_hash": bench.data_hash,
            "stimulus_set": stimuli.identifier,
            "stimulus_set_hash": stimuli.hash,
            "placement": stimuli.placement_key(float(info["visual_degrees"])),
            "code_version": code_version(),
            "libraries": library_versions(),
            "wire_budgets": job.session.client.budgets.to_dict() if job.session is not None else None,
            # The simple per-item form lives in score_items (compressed), not twice as JSON (~200 KB for 9,700 words).
            "metric": {k: v for k, v in score.attrs.items() if k not in ("item_values", "item_ids")},
            "items": None if items is None else {"kind": items.kind, "n_items": items.n_items,
                                                 "bytes": len(items.to_bytes())},
            "ceiling": None if ceiling is None else ceiling.to_dict(),
            "layer": layer,
            "layer_commitment": commitment,
            "activations_from_cache": job.from_cache,
            "activation_cache": dict(job.cache_stats),
            # Random ids, shuffled order and repeat probes of every extraction run (scoring/fair.py), reproducible
            # from the seed (ids aside: they are random and meaningless).
            "stimulus_order": {"seed": job.order_seed, "ids": "random per run", "runs": job.fair_runs},
            # The container's budgets (runtime.SandboxLimits) when one ran for this score; else those asked for.
            "sandbox": (job.session.sandbox if job.session is not None and job.session.sandbox
                        else request.limits.to_dict() if request.image else None),
        }
        _add_score(
            registry,
            job_id=request.job_id,
            run_id=run.id,
            model_id=job.model_row.id,
            benchmark_id=bench_row.id,
            raw=score.raw,
            error=error,
            ceiling=score.ceiling,
            ceiled=score.ceiled,
            layer=layer,
            values=list(score.values),
            provenance=provenance,
            items=items,
        )
        outcome = ScoreOutcome(
            run_id=run.id,
            model=job.model_row.name,
            digest=job.model_row.digest,
            benchmark=bench.identifier,
            benchmark_version=bench_row.version,
            raw=score.raw,
            error=error,
            ceiling=score.ceiling,
            ceiled=score.ceiled,
            layer=layer,
            from_cache=job.from_cache,
            timings=job.timings,
            provenance=provenance,
        )
        events.finish("succeeded", ("score", {k: v for k, v in outcome.to_dict().items() if k != "provenance"}
                                    | {"model_id": job.model_row.id}))
        registry.update_run(run, status="succeeded", timings=job.timings)
        return outcome
    except BaseException as e:
        # a model's failure is classified from its container's state and log; every failure is recorded the same way
        diagnosed = job.session.diagnose(e) if isinstance(e, ModelFailure) and job.session is not None else e
        failure = failure_of(diagnosed)
        events.finish("failed", ("failed", failure.event()))
        registry.update_run(run, **failure.run_fields(), timings=job.timings)
        if isinstance(diagnosed, Exception):
            diagnosed.run_id = run.id  # type: ignore[attr-defined] - lets a queue link its job to the failed run
        if diagnosed is not e:
            raise diagnosed from None
        raise
    finally:
        events.close()
        cache.close()  # the run's last pins on cache shards (its indexes are gone with its extractions)
        if job.session is not None:
            job.session.close()


def _score_items(score):
    """The per-item values a benchmark score was built from (``Score.items`` or the simple ``item_values`` form),
    or None: a malformed simple form costs the paired comparisons, not the score."""
    from cortexbox.benchmarks.metrics.items import item_values_of

    try:
        return item_values_of(score)
    except ValueError as e:
        import logging

        logging.getLogger(__name__).warning("the score's per-item values are not stored: %s", e)
        return None


class DuplicateScore(CortexboxError):
    """Another delivery of the same job stored its score first (score.job_id is unique): this run's score is not
    stored, and the job keeps the one it has."""


def _link_job(registry: Registry, job_id: int, run_id: int) -> None:
    from sqlalchemy import update

    from cortexbox.registry import ScoreJob

    with registry.session() as s:
        s.exec(update(ScoreJob).where(ScoreJob.id == job_id).values(run_id=run_id))
        s.commit()


def _add_score(registry: Registry, *, job_id: int | None, **fields: Any) -> None:
    from sqlalchemy.exc import IntegrityError
    from sqlmodel import select

    from cortexbox.registry import Score

    if job_id is None:
        registry.add_score(**fields)
        return
    try:
        registry.add_score(job_id=job_id, **fields)
    except IntegrityError:
        with registry.session() as s:
            if s.exec(select(Score.id).where(Score.job_id == job_id)).first() is None:
                raise
        raise DuplicateScore(f"job {job_id} already has its score (stored by another delivery)") from None
