"""T14 (decoding bombs), as a guard: nothing on the orchestrator's side decodes model-controlled bytes with a
decoder that can run code or build arbitrary objects. Model data arrives as protobuf messages and raw little-endian
tensor bytes (read with np.frombuffer); stored arrays are ``.npz`` read with ``allow_pickle=False``. A pickle bomb
therefore has nothing to detonate in; this test fails the day someone adds such a decoder to our code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["orchestrator", "benchmarks", "registry", "sdk/cortexbox/sdk"]

#: module.function calls that can execute code or build arbitrary objects from bytes.
UNSAFE = {("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"), ("cPickle", "loads"),
          ("marshal", "loads"), ("marshal", "load"), ("dill", "loads"), ("dill", "load"),
          ("joblib", "load"), ("torch", "load"), ("shelve", "open"), ("yaml", "unsafe_load")}


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name):
            yield node, node.func.value.id, node.func.attr


def unsafe_decoders(source: str) -> list[str]:
    """The unsafe decoding calls in `source`, as 'module.function' strings."""
    found = []
    for node, module, name in _calls(ast.parse(source)):
        if (module, name) in UNSAFE:
            found.append(f"{module}.{name}")
        elif module in ("np", "numpy") and name == "load":
            if any(k.arg == "allow_pickle" and not (isinstance(k.value, ast.Constant) and k.value.value is False)
                   for k in node.keywords):
                found.append("numpy.load(allow_pickle=...)")
        elif module == "yaml" and name == "load":
            if not any(k.arg == "Loader" and "Safe" in ast.unparse(k.value) for k in node.keywords):
                found.append("yaml.load without SafeLoader")
    return found


def test_the_guard_sees_what_it_guards_against():
    assert unsafe_decoders("import pickle\npickle.loads(b)") == ["pickle.loads"]
    assert unsafe_decoders("np.load(f, allow_pickle=True)") == ["numpy.load(allow_pickle=...)"]
    assert unsafe_decoders("np.load(f, allow_pickle=False)") == []
    assert unsafe_decoders("yaml.load(s)") == ["yaml.load without SafeLoader"]
    assert unsafe_decoders("torch.load(path)") == ["torch.load"]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_code_of_ours_unpickles(package):
    offenders = {str(path.relative_to(ROOT)): found
                 for path in sorted((ROOT / package).rglob("*.py")) if "_pb2" not in path.name
                 if (found := unsafe_decoders(path.read_text()))}
    assert not offenders, offenders
