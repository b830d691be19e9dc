"""`cortexbox metric`: scores precomputed netCDF assemblies with no model; bad input is a one-line error."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from cortexbox.benchmarks.metrics import load_metric
from cortexbox.benchmarks.netcdf import write_assembly
from tests.orchestrator.test_cli import assert_one_line_error, cortexbox


def _assembly(values: np.ndarray, prefix: str) -> xr.DataArray:
    return xr.DataArray(values, dims=("presentation", "neuroid"), coords={
        "stimulus_id": ("presentation", np.array([f"s{i:03d}" for i in range(values.shape[0])], dtype=object)),
        "neuroid_id": ("neuroid", np.array([f"{prefix}{j}" for j in range(values.shape[1])], dtype=object)),
    })


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("metric")
    rng = np.random.default_rng(0)
    latent = rng.standard_normal((60, 4))
    source = _assembly(latent @ rng.standard_normal((4, 30)) + rng.standard_normal((60, 30)), "f")
    target = _assembly(latent @ rng.standard_normal((4, 5)) + rng.standard_normal((60, 5)), "n")
    write_assembly(source, folder / "source.nc")
    write_assembly(target, folder / "target.nc")
    nan = target.copy()
    nan[2, 1] = np.nan
    write_assembly(nan, folder / "nan.nc")
    write_assembly(source.isel(presentation=slice(5, None)), folder / "short.nc")
    return folder, source, target


def test_metric_json_equals_the_library_score(files):
    folder, source, target = files
    result = cortexbox("metric", "ridge", "--source", str(folder / "source.nc"), "--target", str(folder / "target.nc"), "--json")
    assert result.returncode == 0, result.stderr
    score = json.loads(result.stdout)
    expected = load_metric("ridge")(source, target)
    assert score["raw"] == pytest.approx(expected.raw, abs=1e-12)
    assert score["error"] == pytest.approx(expected.error, abs=1e-12)
    assert len(score["values"]) == 10 and score["attrs"]["metric"] == "ridge"


def test_metric_plain_output_and_params(files):
    folder, _, _ = files
    result = cortexbox("metric", "rdm_cv", "--source", str(folder / "source.nc"), "--target", str(folder / "target.nc"),
                       "--param", "n_splits=3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("rdm_cv: ") and "(3 value(s); ShuffleSplit)" in result.stdout


def test_metric_defaults_are_brainscores(files):
    """`cortexbox metric pls` stratifies on object_name as Brain-Score's load_metric('pls') does, and says so."""
    folder, source, target = files
    labels = np.array([f"obj{i % 3}" for i in range(target.sizes["presentation"])], dtype=object)
    write_assembly(target.assign_coords(object_name=("presentation", labels)), folder / "objects.nc")
    args = ["metric", "pls", "--source", str(folder / "source.nc"), "--target", str(folder / "objects.nc")]
    plain = cortexbox(*args)
    assert plain.returncode == 0, plain.stderr
    assert "(10 value(s); StratifiedShuffleSplit on object_name)" in plain.stdout
    score = json.loads(cortexbox(*args, "--json").stdout)
    expected = load_metric("pls")(source, target.assign_coords(object_name=("presentation", labels)))
    assert score["raw"] == pytest.approx(expected.raw, abs=1e-12)
    assert score["attrs"]["cross_validation"]["stratification_coord"] == "object_name"
    off = json.loads(cortexbox(*args, "--json", "--param", "stratification_coord=null").stdout)
    assert off["attrs"]["cross_validation"]["splitter"] == "ShuffleSplit" and off["raw"] != score["raw"]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["nope"], "unknown metric 'nope'"),
        (["pls", "--target", "nan.nc"], "non-finite"),
        (["pls", "--source", "short.nc"], "5 missing"),
        (["pls", "--source", "absent.nc"], "not found"),
        (["pls", "--param", "bogus=1"], "bad parameters for pls"),
    ],
    ids=["unknown", "nan", "misaligned", "missing-file", "bad-param"],
)
def test_metric_bad_input_is_one_line(files, args, words):
    folder, _, _ = files
    name, *rest = args
    paths = {"--source": "source.nc", "--target": "target.nc"}
    for flag, value in zip(rest[::2], rest[1::2]):
        if flag in paths:
            paths[flag] = value
    extra = [a for flag, value in zip(rest[::2], rest[1::2]) if flag == "--param" for a in (flag, value)]
    result = cortexbox("metric", name, "--source", str(folder / paths["--source"]), "--target", str(folder / paths["--target"]), *extra)
    assert_one_line_error(result, words)
