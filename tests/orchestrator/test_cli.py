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
    board = json.loads(result.stdout)
    assert board["rows"] == [] and board["root"] == "average" and board["domains"] == ["vision", "language"]


def _seed_real_tree(url: str) -> dict[str, int]:
    """Three image models and a text model on leaves of the real benchmark tree (and one benchmark outside it):
    a complete model, one with a failed leaf, one with a clipped score, a language model, a tie."""
    from cortexbox.registry import Registry

    reg = Registry(url)
    bench = {name: reg.upsert_benchmark(name, 1, f"{i:064x}", region=region, ceiling=ceiling) for i, (name, region, ceiling) in enumerate([
        ("Cowley2023.V4-sessions-pls", "V4", 0.5), ("Kriegeskorte2008.hIT-rdm", "IT", 0.6),
        ("Geirhos2019.edges-error_consistency", "", 0.8), ("Geirhos2019.silhouettes-error_consistency", "", 0.8),
        ("Kriegeskorte2008.judgements-rdm", "IT", 0.7), ("Cowley2023.V4-pls", "V4", 0.76),
        ("Futrell2018-pearsonr", "reading_times", 0.79)])}
    ids = {name: reg.upsert_model(f"sha256:{i:064x}", name, "1", f"cortexbox/{name}", {}).id
           for i, name in enumerate(["alexnet", "mobilenet", "pixels", "tie", "unigram"], start=1)}
    ceiled = {
        "alexnet": {"Cowley2023.V4-sessions-pls": 0.3, "Kriegeskorte2008.hIT-rdm": 0.4, "Geirhos2019.edges-error_consistency": 0.2,
                    "Geirhos2019.silhouettes-error_consistency": 0.1, "Kriegeskorte2008.judgements-rdm": 0.5, "Cowley2023.V4-pls": 0.9},
        "mobilenet": {"Cowley2023.V4-sessions-pls": 0.35, "Kriegeskorte2008.hIT-rdm": 1.4, "Kriegeskorte2008.judgements-rdm": 0.6},
        "pixels": {"Cowley2023.V4-sessions-pls": 0.05, "Kriegeskorte2008.hIT-rdm": 0.1, "Kriegeskorte2008.judgements-rdm": 0.2},
        "tie": {"Cowley2023.V4-sessions-pls": 0.05, "Kriegeskorte2008.hIT-rdm": 0.1, "Kriegeskorte2008.judgements-rdm": 0.2},
        "unigram": {"Futrell2018-pearsonr": 0.4},
    }
    for model, values in ceiled.items():
        for name, value in values.items():
            b = bench[name]
            run = reg.start_run(f"cortexbox/{model}", name)
            reg.update_run(run, model_id=ids[model], benchmark_id=b.id)
            reg.add_score(run_id=run.id, model_id=ids[model], benchmark_id=b.id, raw=value / 2, error=0.01, ceiling=b.ceiling,
                          ceiled=value, layer="l1", values=[value / 2] * 10, provenance={})
            reg.update_run(run, status="succeeded")
    failed = reg.start_run("cortexbox/mobilenet", "Geirhos2019.edges-error_consistency")
    reg.update_run(failed, model_id=ids["mobilenet"], benchmark_id=bench["Geirhos2019.edges-error_consistency"].id,
                   status="failed", failure_class="timeout", error="too slow")
    return ids


def _invoke(*args: str) -> str:
    """The CLI in this process (fast: no second interpreter), on a console wide enough that no cell wraps."""
    from typer.testing import CliRunner

    from cortexbox.orchestrator import cli

    width = cli.out.width
    cli.out.width = 400
    try:
        result = CliRunner().invoke(cli.app, list(args))
    finally:
        cli.out.width = width
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


@pytest.mark.parametrize("query", ["", "?domain=vision", "?domain=language", "?view=scored&domain=vision"])
def test_cli_and_web_show_the_same_board(tmp_path, monkeypatch, query):
    """One door: `cortexbox leaderboard` and the web board read the same query module, so for the same registry
    rows they rank the same models with the same aggregates, columns and cells."""
    from urllib.parse import parse_qs

    from fastapi.testclient import TestClient

    from cortexbox.orchestrator.web import create_app

    url = f"sqlite:///{tmp_path / 'board.db'}"
    ids = _seed_real_tree(url)
    monkeypatch.setenv("CORTEXBOX_DATABASE_URL", url)
    params = {k: v[0] for k, v in parse_qs(query.lstrip("?")).items()}
    args = [arg for k, v in params.items() for arg in (f"--{k}", v)]
    cli_board = json.loads(_invoke("leaderboard", "--json", *args))
    with TestClient(create_app(url)) as client:
        web_board = client.get("/api/leaderboard" + query).json()
        html = client.get("/" + query).text
    assert cli_board == web_board
    rows = [(r["rank"], r["model"], r["ranked_by"]["value" if params.get("view") != "scored" else "scored_value"]) for r in web_board["rows"]]
    if not params:
        # by hand: alexnet vision = mean(neural (0.3 + 0.4) / 2, behaviour (0.2 + 0.1 + 0.5) / 3) = 0.30833;
        # mobilenet: IT clipped to 1 -> neural 0.675, behaviour (0 + 0 + 0.6) / 3 = 0.2 -> 0.4375;
        # pixels and tie: neural 0.075, behaviour 0.2 / 3 -> 0.07083 each, a shared rank; unigram: language 0.2
        assert [(rank, model) for rank, model, _ in rows] == [(1, "mobilenet"), (2, "alexnet"), (3, "unigram"), (4, "pixels"), (4, "tie")]
        assert [round(v, 5) for *_, v in rows] == [0.4375, 0.30833, 0.2, 0.07083, 0.07083]
    # the text table shows the same rows, in the same order, with the same cells as the page
    from cortexbox.orchestrator.board_text import board_columns
    from cortexbox.orchestrator.web.data import cell_text

    text = _invoke("leaderboard", *args)
    lines = [line for line in text.splitlines() if line.startswith("│")]
    assert len(lines) == len(rows)
    view = params.get("view", "brainscore")
    for line, r in zip(lines, web_board["rows"]):
        cells = [c.strip() for c in line.strip("│").split("│")]
        assert cells[0] == str(r["rank"]) and cells[1] == r["model"]
        assert cells[2].split(" ")[0] == cell_text(r["ranked_by"], view).split(" ")[0]
        assert cells[4:-1] == [cell_text(r["nodes"][c["path"]], view) for c in board_columns(web_board)]
        assert f'href="/models/{r["model_id"]}"' in html
    if params.get("domain") == "vision":
        assert "unigram" not in text and {r["model"] for r in web_board["rows"]} == set(ids) - {"unigram"}
        mobilenet = next(line for line in lines if "mobilenet" in line)
        assert "failed (timeout)" not in mobilenet  # a leaf: shown with --leaves
        assert "failed (timeout)" in next(line for line in _invoke("leaderboard", "--leaves", *args).splitlines() if "mobilenet" in line)


def test_cli_per_benchmark_rows_are_the_web_benchmark_page(tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from cortexbox.orchestrator.web import create_app

    url = f"sqlite:///{tmp_path / 'board.db'}"
    _seed_real_tree(url)
    monkeypatch.setenv("CORTEXBOX_DATABASE_URL", url)
    name = "Kriegeskorte2008.hIT-rdm"
    cli_page = json.loads(_invoke("leaderboard", "--benchmark", name, "--json"))
    with TestClient(create_app(url)) as client:
        assert cli_page == client.get(f"/api/benchmarks/{name}").json()
    assert [(r["rank"], r["model"]) for r in cli_page["scores"]] == [(1, "mobilenet"), (2, "alexnet"), (3, "pixels"), (3, "tie")]
    lines = [line for line in _invoke("leaderboard", "--benchmark", name).splitlines() if line.startswith("│")]
    assert [line.split("│")[2].strip() for line in lines] == ["mobilenet", "alexnet", "pixels", "tie"]
    assert "1.0000 clipped" in lines[0]
    # a benchmark outside the tree keeps its per-benchmark rows; an unknown one is a one-line error
    assert [r["model"] for r in json.loads(_invoke("leaderboard", "-b", "Cowley2023.V4-pls", "--json"))["scores"]] == ["alexnet"]
    assert_one_line_error(cortexbox("leaderboard", "--benchmark", "Nope.V9", env={"CORTEXBOX_DATABASE_URL": url}), "no benchmark 'Nope.V9'")
    assert_one_line_error(cortexbox("leaderboard", "--domain", "audio", env={"CORTEXBOX_DATABASE_URL": url}), "not a domain")


def test_a_broken_tree_stops_the_cli_board_with_one_line(tmp_path, monkeypatch, capsys):
    import cortexbox.benchmarks as package
    from cortexbox.orchestrator import cli

    url = f"sqlite:///{tmp_path / 'board.db'}"
    _seed_real_tree(url)
    monkeypatch.setenv("CORTEXBOX_DATABASE_URL", url)
    monkeypatch.setattr(package, "tree", lambda: {"vision": {"neural": {"V4": ["Cowley2023.V4-sessions-pls"], "IT": ["Cowley2023.V4-sessions-pls"]}}})
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["leaderboard"])
    captured = capsys.readouterr()
    assert exit_info.value.code == 1 and captured.out == "" and "Traceback" not in captured.err
    assert "Cowley2023.V4-sessions-pls appears twice, under vision/neural/V4 and vision/neural/IT" in captured.err


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
    from tests.orchestrator.test_terminal import HOSTILE as RAW

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
    from tests.orchestrator.test_terminal import assert_inert

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
    from tests.orchestrator.test_terminal import HOSTILE, assert_inert

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
