"""The registry on SQLite and on a real PostgreSQL server (Debian's, started here)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from cortexbox.registry import Registry

PG_BIN = Path("/usr/lib/postgresql")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url():
    """A throwaway PostgreSQL cluster on 127.0.0.1, removed afterwards."""
    bins = sorted(PG_BIN.glob("*/bin/initdb"))
    if not bins:
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL server binaries are missing in CI (apt-get install postgresql)")
        pytest.skip("PostgreSQL server binaries are not installed")
    bindir = bins[-1].parent
    data = Path(tempfile.mkdtemp(prefix="cortexbox-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(data, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "cortexbox", "--auth=trust"],
                   check=True, capture_output=True)
    server = subprocess.Popen(
        [*as_user, str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(data),
         "-c", "listen_addresses=127.0.0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            ready = subprocess.run([str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)], capture_output=True)
            if ready.returncode == 0:
                break
            time.sleep(0.1)
        subprocess.run([*as_user, str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "cortexbox", "registry"],
                       check=True, capture_output=True)
        yield f"postgresql+psycopg2://cortexbox@127.0.0.1:{port}/registry"
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def registry(request, tmp_path):
    if request.param == "sqlite":
        return Registry(f"sqlite:///{tmp_path / 'r.db'}")
    return Registry(request.getfixturevalue("postgres_url"))


def _unique(text: str) -> str:
    # The PostgreSQL database is shared by the session's tests.
    return f"{text}-{time.monotonic_ns()}"


def test_scores_round_trip_with_provenance(registry):
    digest = _unique("sha256:aaa")
    model = registry.upsert_model(digest, "m", "1", "tag:m", {"layers": {"a": [3]}})
    bench = registry.upsert_benchmark(_unique("B.V4-pls"), 1, "hash1", region="V4", ceiling=0.8, ceiling_error=0.01)
    run = registry.start_run("tag:m", bench.identifier)
    registry.add_score(run_id=run.id, model_id=model.id, benchmark_id=bench.id, raw=0.5, error=0.02, ceiling=0.8,
                       ceiled=0.3125, layer="a", values=[0.5] * 10, provenance={"seeds": {"split": 1}})
    registry.update_run(run, status="succeeded", timings={"total_s": 1.0})
    rows = [r for r in registry.leaderboard() if r.benchmark == bench.identifier]
    assert len(rows) == 1 and rows[0].ceiled == pytest.approx(0.3125) and rows[0].digest == digest
    (score, m, b), = [t for t in registry.scores() if t[2].identifier == bench.identifier]
    assert score.provenance == {"seeds": {"split": 1}} and score.values == [0.5] * 10
    assert registry.model_by_digest(digest).info == {"layers": {"a": [3]}}
    finished = [r for r in registry.runs() if r.id == run.id][0]
    assert finished.status == "succeeded" and finished.finished_at is not None


def test_changed_data_needs_a_new_version(registry):
    name = _unique("B.V4-pls")
    registry.upsert_benchmark(name, 1, "hash1")
    with pytest.raises(ValueError, match="new version"):
        registry.upsert_benchmark(name, 1, "hash2")
    assert registry.upsert_benchmark(name, 2, "hash2").version == 2


def test_leaderboard_counts_only_the_latest_version_and_latest_score(registry):
    name = _unique("B.IT-pls")
    model = registry.upsert_model(_unique("sha256:bbb"), "m", "1", "", {})
    v1 = registry.upsert_benchmark(name, 1, "h1")
    v2 = registry.upsert_benchmark(name, 2, "h2")
    for bench, raw in ((v1, 0.9), (v2, 0.1), (v2, 0.2)):
        run = registry.start_run("m", name)
        registry.add_score(run_id=run.id, model_id=model.id, benchmark_id=bench.id, raw=raw)
    rows = [r for r in registry.leaderboard() if r.benchmark == name]
    assert [(r.version, r.raw) for r in rows] == [(2, 0.2)]


def test_layer_commitments_are_remembered(registry):
    model = registry.upsert_model(_unique("sha256:ccc"), "m", "1", "", {})
    assert registry.commitment(model.id, "V4", "sel@1") is None
    registry.save_commitment(model.id, "V4", "layer3", "sel@1", {"layer3": 0.4, "layer2": 0.3})
    stored = registry.commitment(model.id, "V4", "sel@1")
    assert stored.layer == "layer3" and stored.layer_scores["layer2"] == 0.3
