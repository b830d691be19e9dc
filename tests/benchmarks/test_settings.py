"""One settings object reads the environment, and nothing is found from where the code lies (issue 10, item 9).

Each variable reaches the code that uses it through ``cortexbox.benchmarks.settings`` (read on every call, so
monkeypatching works); no other module reads ``os.environ``; the data folder, the demo's templates, the SDK that
images install and the code version in provenance work from a non-editable install outside any checkout.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from cortexbox.benchmarks.errors import UserError
from cortexbox.benchmarks.settings import Settings, describe, settings

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cortexbox.orchestrator.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd, env={**os.environ, **(env or {})})


def test_every_variable_reaches_its_user(monkeypatch, tmp_path):
    """Set each variable and read it back where the code uses it: the object is read on every call."""
    from cortexbox.benchmarks.data import resolve_data_dir
    from cortexbox.orchestrator import images, ingest, runtime
    from cortexbox.orchestrator.budgets import WireBudgets
    from cortexbox.orchestrator.cache import ActivationCache, default_cache_dir
    from cortexbox.registry.store import default_url

    home, data, weights = tmp_path / "home", tmp_path / "data", tmp_path / "weights"
    for name, value in {"CORTEXBOX_HOME": home, "CORTEXBOX_DATA_DIR": data, "CORTEXBOX_RUN_DIR": tmp_path / "runs",
                        "CORTEXBOX_SCOPE": "s-1", "CORTEXBOX_SANDBOX": "pids=77", "CORTEXBOX_WIRE": "stall_timeout_s=7",
                        "CORTEXBOX_ENDPOINT_TIMEOUT_S": "2.5", "CORTEXBOX_CACHE_MAX_BYTES": "3m",
                        "CORTEXBOX_ASSET_ROOTS": str(weights), "CORTEXBOX_WHEELHOUSE": tmp_path / "wh"}.items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.delenv("CORTEXBOX_DATABASE_URL", raising=False)
    assert default_url() == f"sqlite:///{home / 'registry.db'}" and home.is_dir()
    assert ingest.home_dir() == home and default_cache_dir() == home / "activations"
    assert resolve_data_dir() == data.resolve() == images.asset_roots()[0].parent
    assert images.asset_roots()[-1] == weights.resolve() and images.default_wheelhouse() == tmp_path / "wh"
    assert runtime.runs_root() == tmp_path / "runs" and runtime.scope() == "s-1"
    assert runtime.SandboxLimits.configured().pids == 77 and WireBudgets.from_env().stall_timeout_s == 7
    assert settings().endpoint_timeout_s == 2.5
    assert ActivationCache(tmp_path / "cache").max_bytes() == 3 * 2**20
    monkeypatch.setenv("CORTEXBOX_DATABASE_URL", "postgresql+psycopg2://u:pw@/db")
    monkeypatch.setenv("CORTEXBOX_SCOPE", "s-2")
    assert default_url() == "postgresql+psycopg2://u:pw@/db" and runtime.scope() == "s-2"


def test_no_module_reads_the_environment_itself():
    """Only the settings module reads os.environ (copying it into a child's environment is not reading it)."""
    offenders, scanned = [], 0
    for package in ("orchestrator", "benchmarks", "registry"):
        for path in (REPO / package).rglob("*.py"):
            scanned += 1
            if path.name == "settings.py" and package == "benchmarks":
                continue
            tree = ast.parse(path.read_text())
            copies = {id(n.args[0]) for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "dict"
                      and n.args and isinstance(n.args[0], ast.Attribute)}
            for node in ast.walk(tree):
                if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv") and id(node) not in copies:
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert scanned > 50 and not offenders, (scanned, offenders)


def test_defaults_and_the_data_folder_from_the_current_directory(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    empty = Settings.from_env({})
    assert empty.home == Path.home() / ".cortexbox" and empty.database_url is None and empty.data_dir is None
    assert empty.scope == "default" and empty.sandbox == empty.wire == empty.cache_max_bytes == ""
    assert empty.endpoint_timeout_s == 60.0 and empty.asset_roots == ()
    assert empty.registry_url == f"sqlite:///{Path.home() / '.cortexbox' / 'registry.db'}"
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "checkout").mkdir()
    monkeypatch.chdir(tmp_path / "checkout")
    assert Settings.from_env({}).data_dir == tmp_path / "shared" / "data"
    assert Settings.from_env({"CORTEXBOX_DATA_DIR": "elsewhere", "CORTEXBOX_SCOPE": " "}).data_dir == tmp_path / "checkout" / "elsewhere"
    with pytest.raises(UserError, match="CORTEXBOX_ENDPOINT_TIMEOUT_S='soon'"):
        Settings.from_env({"CORTEXBOX_ENDPOINT_TIMEOUT_S": "soon"})


def test_without_a_data_folder_benchmarks_are_described_and_reading_data_names_the_variable(monkeypatch, tmp_path):
    from cortexbox.benchmarks import DataNotFoundError, get_benchmark, resolve_data_dir

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CORTEXBOX_DATA_DIR", raising=False)
    with pytest.raises(DataNotFoundError, match="CORTEXBOX_DATA_DIR is not set"):
        resolve_data_dir()
    bench = get_benchmark("Kriegeskorte2008.hIT-rdm")
    assert bench.identifier == "Kriegeskorte2008.hIT-rdm" and bench.region == "IT"
    with pytest.raises(DataNotFoundError, match="CORTEXBOX_DATA_DIR"):
        bench.data_hash


def test_settings_command_prints_each_value_and_its_source(monkeypatch):
    from typer.testing import CliRunner

    from cortexbox.orchestrator.cli import app

    monkeypatch.setenv("CORTEXBOX_SCOPE", "from-env")
    monkeypatch.setenv("CORTEXBOX_DATABASE_URL", "postgresql://me:hunter2@db/x")
    monkeypatch.setenv("CORTEXBOX_WIRE", "")
    monkeypatch.delenv("CORTEXBOX_ENDPOINT_TIMEOUT_S", raising=False)
    rows = json.loads(CliRunner().invoke(app, ["settings", "--json"]).stdout)
    assert rows == describe() and [r["name"] for r in rows] == [f.name for f in dataclasses.fields(Settings)]
    by_name = {r["name"]: r for r in rows}
    assert by_name["scope"]["value"] == "from-env" and by_name["scope"]["source"] == "env"
    assert by_name["database_url"]["value"] == "postgresql://me:***@db/x"
    assert by_name["wire"]["source"] == "default" and by_name["endpoint_timeout_s"]["value"] == 60.0
    text = CliRunner().invoke(app, ["settings"])
    assert text.exit_code == 0 and "hunter2" not in text.stdout
    lines = text.stdout.splitlines()
    assert len(lines) == len(rows)
    assert "scope = from-env  (from $CORTEXBOX_SCOPE)" in lines
    assert "endpoint_timeout_s = 60.0  (default: 60; set $CORTEXBOX_ENDPOINT_TIMEOUT_S)" in lines


@pytest.mark.slow
def test_demo_finds_its_templates_from_the_current_directory_or_says_so(monkeypatch, tmp_path):
    from cortexbox.orchestrator.demo import TEMPLATES, templates_dir

    monkeypatch.chdir(REPO)
    assert templates_dir(None) == Path("model_templates") and templates_dir(REPO / "model_templates") == REPO / "model_templates"
    monkeypatch.chdir(tmp_path)
    for folder, words in ((None, "no model_templates/ folder"), (tmp_path / "nowhere", "no such folder"),
                          (tmp_path, f"has no template {', '.join(TEMPLATES)}")):
        with pytest.raises(UserError, match=words) as caught:
            templates_dir(folder)
        assert "--templates" in caught.value.hint
    result = cli("demo", cwd=tmp_path)  # before anything is built: no Docker needed
    assert result.returncode == 2 and "Traceback" not in result.stderr and result.stdout == "", result.stderr
    assert "no model_templates/ folder" in result.stderr and "--templates DIR" in result.stderr


def test_the_compose_stack_needs_a_checkout(monkeypatch):
    from cortexbox.orchestrator import deploy
    from cortexbox.orchestrator.images import ImageBuildError

    assert deploy.checkout_root() == REPO
    monkeypatch.setattr(deploy, "checkout_root", lambda: None)
    with pytest.raises(ImageBuildError, match="source checkout"):
        deploy.build_stack(None)  # refused before the engine is asked anything


@pytest.mark.slow
def test_a_non_editable_install_outside_any_checkout(tmp_path):
    """Wheels of this checkout installed into a plain folder, inside some other git repository (as a .venv inside a
    checkout is): images still get the SDK, provenance records the release and no commit, and no data folder is
    guessed from where the package lies."""
    from cortexbox.orchestrator import deploy, images

    wheels = tmp_path / "wheels"
    reference = images.build_sdk_wheel(wheels)
    deploy.build_package_wheel(wheels)
    other = tmp_path / "other-repo"
    site = other / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--disable-pip-version-check",
                    "--target", str(site), *map(str, wheels.glob("*.whl"))], check=True, capture_output=True)
    git = ["git", "-C", str(other), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    (tmp_path / "cwd").mkdir()
    probe = textwrap.dedent(f"""
        import sys
        sys.path[:0] = [{str(site)!r}, {sysconfig.get_paths()["purelib"]!r}]  # no .pth: this checkout's editable finders stay out
        import json, cortexbox.sdk
        from cortexbox.orchestrator import images, provenance
        from cortexbox.benchmarks import DataNotFoundError, resolve_data_dir
        assert images.__file__.startswith({str(site)!r}) and cortexbox.sdk.__file__.startswith({str(site)!r})
        try:
            resolve_data_dir()
            data = None
        except DataNotFoundError as e:
            data = str(e)
        wheel = images.build_sdk_wheel({str(tmp_path / "rebuilt")!r})
        print(json.dumps({{"checkout": str(provenance.checkout_root()), "version": provenance.code_version(),
                          "sdk_source": str(images.sdk_source_dir()), "requirements": images.sdk_requirements(),
                          "wheel": str(wheel), "data": data}}))
    """)
    done = subprocess.run([sys.executable, "-S", "-c", probe], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path / "cwd", env={k: v for k, v in os.environ.items() if k != "CORTEXBOX_DATA_DIR"})
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["checkout"] == "None" and seen["sdk_source"] == "None"
    assert seen["version"] == "0.1.0"  # the release alone: not the commit of the repository it happens to lie in
    assert seen["data"] and "CORTEXBOX_DATA_DIR" in seen["data"]

    def parsed(requirements):
        return sorted((r.name, str(r.specifier)) for r in map(Requirement, requirements))

    assert parsed(seen["requirements"]) == parsed(images.sdk_requirements())

    def package_files(wheel):
        return sorted(n for n in zipfile.ZipFile(wheel).namelist() if ".dist-info/" not in n)

    assert package_files(seen["wheel"]) == package_files(reference) != []
