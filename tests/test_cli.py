"""The CLI's contract with people and scripts: one-line errors with hints, JSON on stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def cortexbox(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cortexbox.orchestrator.cli", *args],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )


def assert_one_line_error(result: subprocess.CompletedProcess, words: str, code: int = 2) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    assert words in result.stderr
    assert result.stdout == ""


def test_unknown_benchmark_names_the_known_ones():
    result = cortexbox("score", "--benchmark", "Nonexistent.V9-pls", "--model", "whatever")
    assert_one_line_error(result, "Nonexistent.V9-pls")
    assert "Cowley2023.V4-pls" in result.stderr


def test_docker_not_running_says_how_to_start_it():
    result = cortexbox(
        "score", "--benchmark", "Cowley2023.V4-pls", "--model", "whatever",
        env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"},
    )
    assert_one_line_error(result, "cannot reach the Docker engine")
    assert "dockerd" in result.stderr


def test_model_and_endpoint_are_exclusive():
    result = cortexbox("score", "--benchmark", "Cowley2023.V4-pls")
    assert_one_line_error(result, "exactly one of --model")


def test_unreachable_endpoint_is_a_user_error():
    result = cortexbox("score", "--benchmark", "Cowley2023.V4-pls", "--endpoint", "unix:///nonexistent/model.sock",
                       env={"CORTEXBOX_ENDPOINT_TIMEOUT_S": "2"})
    assert_one_line_error(result, "no usable model server")


def test_empty_leaderboard_as_json():
    result = cortexbox("leaderboard", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


@pytest.mark.docker
def test_missing_image_is_a_user_error(docker_client):
    result = cortexbox("score", "--benchmark", "Cowley2023.V4-pls", "--model", "cortexbox/does-not-exist:never")
    assert_one_line_error(result, "no Docker image")
    assert "cortexbox image build" in result.stderr


def test_watch_follows_a_run_from_the_registry(tmp_path):
    from cortexbox.orchestrator.run_events import RunEventLog
    from cortexbox.registry import Registry

    url = f"sqlite:///{tmp_path / 'watch.db'}"
    registry = Registry(url)
    ok, bad = registry.start_run("cortexbox/m", "B.V4-x"), registry.start_run("cortexbox/m", "B.IT-x")
    log = RunEventLog(registry, ok.id, benchmark="B.V4-x", min_interval=0)
    log("stage", {"text": "benchmark: 4 stimuli"})
    log("progress", {"done": 4, "total": 4, "label": "benchmark"})
    log.finish("succeeded", ("score", {"model": "m", "ceiled": 0.25, "raw": 0.5, "layer": "l1"}))
    registry.update_run(ok, status="succeeded")
    RunEventLog(registry, bad.id, benchmark="B.IT-x").finish("failed", ("failed", {"failure_class": "crash", "error": "boom"}))
    registry.update_run(bad, status="failed", failure_class="crash")
    env = {"CORTEXBOX_DATABASE_URL": url}
    result = cortexbox("watch", str(ok.id), "--json", env=env)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["event"] for e in lines] == ["stage", "progress", "score", "done"] and lines[2]["data"]["ceiled"] == 0.25
    failed = cortexbox("watch", str(bad.id), env=env)
    assert failed.returncode == 1 and "crash" in failed.stderr and "boom" in failed.stderr
    assert_one_line_error(cortexbox("watch", env=env), "no run is running")
