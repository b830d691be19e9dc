"""The web pages escape what a model wrote (its model_id, version, layer names, errors, log tail): Jinja's
autoescape is on for every template, and the SVG plots escape their labels."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from cortexbox.registry import Registry

SCRIPT = "<script>alert('evil')</script>"
NAME = f'evil"><img src=x onerror=alert(1)>{SCRIPT}'


def test_every_template_autoescapes():
    from cortexbox.orchestrator.web.app import HERE, _templates

    autoescape = _templates().autoescape
    names = sorted(p.name for p in (HERE / "templates").iterdir() if p.suffix == ".html")
    assert names
    for name in names:
        assert (autoescape(name) if callable(autoescape) else autoescape) is True, name


@pytest.fixture
def hostile(tmp_path):
    url = f"sqlite:///{tmp_path / 'hostile.db'}"
    reg = Registry(url)
    bench = reg.upsert_benchmark("Alpha2020.V4-pls", 1, "a" * 64, region="V4", ceiling=0.8, ceiling_error=0.01)
    model = reg.upsert_model("sha256:" + "1" * 64, NAME, SCRIPT, f"cortexbox/x{SCRIPT}",
                             {"visual_degrees": 8, "layers": {SCRIPT: [4]}, "behaviours": {}, "description": SCRIPT})
    run = reg.start_run(f"cortexbox/x{SCRIPT}", bench.identifier)
    reg.update_run(run, model_id=model.id, benchmark_id=bench.id)
    prov = {"image_digest": model.digest, "benchmark_version": 1, "data_hash": bench.data_hash, "code_version": "0" * 16,
            "metric": {}, "layer": SCRIPT,
            "layer_commitment": {"method": "selection", "selection_key": "k", "layer_scores": {SCRIPT: 0.4, "l2": 0.2}}}
    reg.add_score(run_id=run.id, model_id=model.id, benchmark_id=bench.id, raw=0.5, error=0.01, ceiling=0.8, ceiled=0.3,
                  layer=SCRIPT, values=[0.5] * 10, provenance=prov)
    reg.update_run(run, status="succeeded")
    failed = reg.start_run(f"cortexbox/x{SCRIPT}", bench.identifier)
    reg.update_run(failed, model_id=model.id, benchmark_id=bench.id, status="failed", failure_class="model_error",
                   error=SCRIPT, log_tail=f"loading\n{SCRIPT}\n")
    return url, model.id, failed.id


def test_pages_escape_model_text(hostile):
    from cortexbox.orchestrator.web import create_app

    url, model_id, run_id = hostile
    tree = {"neural": {"V4": ["Alpha2020.V4-pls"]}}
    with TestClient(create_app(url, tree=tree)) as client:
        for path in ("/", f"/models/{model_id}", "/runs", "/benchmarks", "/benchmarks/Alpha2020.V4-pls",
                     f"/compare?a={model_id}&b={model_id}", f"/runs/{run_id}/live"):
            page = client.get(path)
            assert page.status_code == 200, (path, page.status_code)
            html = page.text
            assert SCRIPT not in html and "<img src=x" not in html, path
        model_page = client.get(f"/models/{model_id}").text
        assert "&lt;script&gt;" in model_page  # shown, escaped
