"""Scoring as one unit (orchestrator/scoring/): imports run one way, one failure mapping, one queue consumer."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from cortexbox.orchestrator.errors import FailureClass, ModelFailure, UserError
from cortexbox.orchestrator.scoring import ScoreRequest, execute, failure_of, run_queued_jobs
from cortexbox.registry import Benchmark, Registry

SCORING = Path(__file__).resolve().parents[2] / "orchestrator" / "scoring"
#: What scoring must never import: these import scoring.
ABOVE = ("cortexbox.orchestrator.ingest", "cortexbox.orchestrator.web", "cortexbox.orchestrator.cli", "cortexbox.orchestrator.demo")


def test_scoring_never_imports_ingest_web_or_cli():
    """Every import in the package, at module level or inside a function, and what importing it loads."""
    found = []
    for path in sorted(SCORING.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom) else
                     [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            found += [(path.name, n) for n in names if n in ABOVE or n.startswith(tuple(a + "." for a in ABOVE))]
    assert len(list(SCORING.glob("*.py"))) >= 5 and found == []
    loaded = subprocess.run([sys.executable, "-c", "import sys, cortexbox.orchestrator.scoring; "
                             f"print([m for m in sys.modules if m.rsplit('.', 1)[0] in {ABOVE!r} or m in {ABOVE!r}])"],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"


def test_one_mapping_from_failure_to_record():
    model = failure_of(ModelFailure(FailureClass.OUT_OF_MEMORY, "killed", log_tail="tail\n"))
    assert (model.kind, model.failure_class, model.error, model.log_tail) == ("model", "out_of_memory", "killed", "tail\n")
    assert model.run_fields() == {"status": "failed", "failure_class": "out_of_memory", "error": "killed", "log_tail": "tail\n"}
    user = failure_of(UserError("no Docker image 'x'", "build one"))
    assert (user.kind, user.failure_class, user.hint) == ("user", None, "build one") and user.event()["hint"] == "build one"
    assert failure_of(KeyboardInterrupt()).failure_class == "cancelled"
    bug = failure_of(RuntimeError("x" * 10_000))
    assert bug.kind == "internal" and bug.failure_class is None and bug.error.startswith("RuntimeError: x")
    assert len(bug.error) == 4000 and bug.log_tail is None  # a log tail is only ever the model's


@pytest.fixture
def queued(tmp_path):
    registry = Registry(f"sqlite:///{tmp_path / 'r.db'}")
    models = [registry.upsert_model("sha256:" + c * 64, name, "1", f"cortexbox/{name}", {"modality": "image"})
              for c, name in (("1", "good"), ("2", "crashes"), ("3", "buggy"))]
    registry.register_benchmark_with_jobs(Benchmark(identifier="Smith2026.V4-pls", version=1, data_hash="a" * 64),
                                          [m.id for m in models])
    return registry


def _jobs(registry):
    from sqlmodel import select

    from cortexbox.registry import ScoreJob

    with registry.session() as s:
        return [(j.model_id, j.status, j.run_id) for j in s.exec(select(ScoreJob).order_by(ScoreJob.id))]


def test_the_consumer_records_every_end_and_goes_on(queued):
    def score(request, *, registry, events=None):
        run = registry.start_run(request.image, request.benchmark)
        if request.image.startswith("sha256:2"):
            e = ModelFailure(FailureClass.CRASH, "exited 1", log_tail="boom")
            e.run_id = run.id
            raise e
        if request.image.startswith("sha256:3"):
            raise ZeroDivisionError("a bug")
        return SimpleNamespace(run_id=run.id, benchmark_version=1, raw=0.5, ceiled=0.6)

    results = run_queued_jobs(queued, score=score)
    assert [(r["model"], r["status"]) for r in results] == [("good", "succeeded"), ("crashes", "failed"), ("buggy", "failed")]
    assert results[1]["failure"]["failure_class"] == "crash" and results[1]["error"] == "crash: exited 1"
    assert results[2]["failure"]["kind"] == "internal" and results[2]["error"] == "ZeroDivisionError: a bug"
    # the job rows: ended, linked to their runs where one exists
    assert [(status, run_id is not None) for _, status, run_id in _jobs(queued)] == [
        ("succeeded", True), ("failed", True), ("failed", False)]
    assert run_queued_jobs(queued, score=score) == []  # nothing left queued


def test_an_interrupted_job_goes_back_to_the_queue(queued):
    def score(request, *, registry, events=None):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_queued_jobs(queued, score=score)
    assert [status for _, status, _ in _jobs(queued)] == ["queued", "queued", "queued"]


def test_execute_without_a_queued_job_is_what_the_web_uses(queued):
    result = execute(ScoreRequest(benchmark="Nobody2020.V1-pls", image="cortexbox/x"), registry=queued)
    assert result["status"] == "failed" and result["failure"]["kind"] == "user"
    assert "unknown benchmark" in result["error"] and result["failure"]["hint"]
    assert queued.runs() == []  # a user's mistake never becomes a run
