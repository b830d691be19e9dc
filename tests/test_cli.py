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
    assert stored_runs() == []  # a mistake, not a failed run


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


# -- every user mistake: one line and a hint, exit 2, no traceback, no run stored ---------------------------------


def assert_mistake(result: subprocess.CompletedProcess, words: str) -> None:
    """Exit 2, exactly `error: ...` and `hint: ...` on stderr, nothing on stdout."""
    assert_one_line_error(result, words)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("hint: "), result.stderr


def stored_runs(env: dict | None = None) -> list:
    result = cortexbox("runs", "--json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize(("args", "words"), [
    (["scor"], "No such command 'scor'"),
    (["score"], "Missing option '--benchmark'"),
    (["score", "--benchmark"], "'--benchmark' requires an argument"),
    (["score", "-b", "Cowley2023.V4-pls", "--model", "m", "--cpus", "many"], "Invalid value for '--cpus'"),
    (["score", "-b", "Cowley2023.V4-pls", "--model", "m", "--memory", "lots"], "--memory 'lots' is not a size"),
    (["runs", "--limit", "0"], "Invalid value for '--limit'"),
    (["watch", "not-a-number"], "Invalid value"),
    (["image", "build", "/nonexistent/project"], "does not exist"),
    (["--no-such-option"], "No such option"),
])
def test_usage_mistakes_are_one_line_with_a_hint(args, words):
    assert_mistake(cortexbox(*args), words)


def test_a_project_without_cortexbox_toml_is_a_mistake_even_without_docker(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    result = cortexbox("image", "build", str(tmp_path), env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert_mistake(result, "cortexbox.toml is missing")


def test_missing_data_folder_is_a_mistake_and_no_run(tmp_path):
    env = {"CORTEXBOX_DATA_DIR": str(tmp_path / "no-data-here")}
    result = cortexbox("score", "--benchmark", "Cowley2023.V4-pls", "--model", "whatever", env=env)
    assert_mistake(result, "not found")
    assert "CORTEXBOX_DATA_DIR" in result.stderr
    assert stored_runs(env) == []


def test_docker_not_running_and_no_endpoint_server_store_no_run():
    for args, env in ((["--model", "whatever"], {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}),
                      (["--endpoint", "unix:///nonexistent/model.sock"], None)):
        result = cortexbox("score", "--benchmark", "Cowley2023.V4-pls", *args, env=env)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert stored_runs() == []


def test_help_texts_are_plain():
    """No RST double backticks and no type labels on flags (`--json <bool>`) in any command's help."""
    commands = [[], ["score"], ["leaderboard"], ["runs"], ["watch"], ["worker"], ["demo"], ["gc"], ["metric"], ["web"],
                ["image"], ["image", "base"], ["image", "build"], ["image", "stack"], ["benchmarks"], ["benchmarks", "list"],
                ["benchmarks", "sync"], ["benchmarks", "ingest"], ["models"], ["models", "add"], ["models", "list"]]
    for command in commands:
        result = cortexbox(*command, "--help", env={"COLUMNS": "200"})
        assert result.returncode == 0, (command, result.stderr)
        assert "Usage: cortexbox" in result.stdout
        for noise in ("``", "<bool>"):
            assert noise not in result.stdout, (command, noise, result.stdout)


# -- text a model controls reaches the terminal inert (issue 11, finding 5) ----------------------------------------

def _hostile_registry(tmp_path) -> tuple[dict, int]:
    """A registry whose model, run, error, log tail and events say what a red-team model said."""
    from cortexbox.orchestrator.run_events import RunEventLog
    from cortexbox.registry import Registry
    from tests.test_terminal import HOSTILE as RAW

    HOSTILE = RAW.replace("\ud800", "")  # protobuf strings are valid UTF-8, and so is what the registry stores
    url = f"sqlite:///{tmp_path / 'hostile.db'}"
    registry = Registry(url)
    model = registry.upsert_model("sha256:" + "e" * 64, "evil[/]\x1b]0;t\x07", "1\x1b[2J", "cortexbox/evil", {"model_id": HOSTILE})
    run = registry.start_run("cortexbox/evil[/]\x1b[2J", "B.V4-x")
    log = RunEventLog(registry, run.id, benchmark="B.V4-x", min_interval=0)
    log("stage", {"text": f"selection: {HOSTILE} scored 0.5"})
    log("progress", {"done": 1, "total": 2, "label": HOSTILE})
    log.finish("failed", ("failed", {"failure_class": "model_error", "error": HOSTILE, "log_tail": f"line 1\n{HOSTILE}\n"}))
    registry.update_run(run, model_id=model.id, status="failed", failure_class="model_error", error=HOSTILE,
                        log_tail=f"line 1\n{HOSTILE}\n")
    return {"CORTEXBOX_DATABASE_URL": url}, run.id


def test_runs_watch_and_models_show_model_text_inert(tmp_path):
    from tests.test_terminal import assert_inert

    env, run_id = _hostile_registry(tmp_path)
    for args, code in ((["runs"], 0), (["models", "list"], 0), (["watch", str(run_id)], 1)):
        result = cortexbox(*args, env=env)
        assert result.returncode == code and "Traceback" not in result.stderr, (args, result.stderr)
        assert_inert(result.stdout + result.stderr)
        assert "[/]" in result.stdout + result.stderr, args  # markup shown as text, not parsed
    watched = cortexbox("watch", str(run_id), env=env).stderr
    assert "failed (model_error)" in watched and "line 1" in watched and "score 0.9999 [/]" in watched


def test_a_model_failure_report_is_inert(capsys):
    """The score command's failure report (class, the model's message, its log tail) through main()."""
    from cortexbox.orchestrator import cli
    from cortexbox.orchestrator.errors import FailureClass, ModelFailure, UserError
    from tests.test_terminal import HOSTILE, assert_inert

    def fail(error):
        @cli.app.command("raise-for-test", hidden=True)
        def _raise() -> None:
            raise error

        try:
            with pytest.raises(SystemExit) as exit_:
                cli.main(["raise-for-test"])
        finally:
            cli.app.registered_commands.pop()
        return exit_.value.code, capsys.readouterr()

    code, printed = fail(ModelFailure(FailureClass.MODEL_ERROR, HOSTILE, log_tail=f"loading\n{HOSTILE}\n"))
    assert code == 1 and printed.out == ""
    assert_inert(printed.err)
    assert printed.err.startswith("model failed (model_error): evil") and "[/] [bold red]x[/]" in printed.err
    assert "loading" in printed.err
    code, printed = fail(UserError(f"no image {HOSTILE}", hint="[/]"))
    assert code == 2
    assert_inert(printed.err)
    assert printed.err.splitlines()[1] == "hint: [/]"
