"""`cortexbox benchmarks ingest`: a recording cut from the real Cowley data becomes a versioned
benchmark; damaged copies fail with a message naming the problem and change nothing."""

from __future__ import annotations

import csv
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from cortexbox.benchmarks.netcdf import write_assembly
from cortexbox.registry import Registry
from tests.conftest import DATA_DIR
from tests.orchestrator.test_cli import cortexbox

COWLEY = DATA_DIR / "cowley2023_v4"


def make_recording(folder: Path, session: str = "210225", n_images: int = 120, n_neurons: int = 20,
                   repeats: bool = False) -> tuple[Path, Path]:
    """Writes (assembly.nc, images/) cut from one Cowley session, as a contributor would."""
    folder.mkdir(parents=True, exist_ok=True)
    images = folder / "images"
    images.mkdir()
    with zipfile.ZipFile(COWLEY / "images" / f"images_{session}.zip") as archive:
        names = {Path(n).name: n for n in archive.namelist() if n.endswith(".jpg")}
        for i in range(n_images):
            (images / f"img{i + 1:04d}.jpg").write_bytes(archive.read(names[f"image{i + 1:04d}.jpg"]))
    if repeats:
        raw = np.load(COWLEY / "responses_raw" / f"responses_{session}.npy")[:n_neurons, :n_images]  # (neurons, images, reps)
        rows, ids, reps = [], [], []
        for i in range(n_images):
            for r in range(raw.shape[2]):
                if not np.isnan(raw[0, i, r]):
                    rows.append(raw[:, i, r])
                    ids.append(f"img{i + 1:04d}")
                    reps.append(r)
        values = np.array(rows)
        coords = {"stimulus_id": ("presentation", ids), "repetition": ("presentation", reps)}
    else:
        values = np.load(COWLEY / "responses_repeat_averaged" / f"responses_{session}.npy")[:n_neurons, :n_images].T
        coords = {"stimulus_id": ("presentation", [f"img{i + 1:04d}" for i in range(n_images)])}
    coords["neuroid_id"] = ("neuroid", [f"{session}.n{j}" for j in range(n_neurons)])
    assembly = xr.DataArray(values, dims=("presentation", "neuroid"), coords=coords)
    path = folder / "assembly.nc"
    write_assembly(assembly, path)
    return path, images


def ingest(assembly, stimuli, *extra, identifier="Test2026.V4-pls"):
    return cortexbox("benchmarks", "ingest", str(assembly), "--stimuli", str(stimuli), "--identifier", identifier,
                     "--region", "V4", "--visual-degrees", "8", "--json", *extra, timeout=300)


def registry_state(home: Path):
    registry = Registry()
    return [(b.identifier, b.version) for b in registry.benchmarks()], sorted(p.name for p in (home / "benchmarks").glob("*/*"))


def test_repeated_recording_gets_a_ceiling_and_versions(tmp_path, _isolated_home):
    assembly, images = make_recording(tmp_path / "rec", session="210325", n_images=100, repeats=True)
    dry = ingest(assembly, images, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert plan["status"] == "planned" and plan["version"] == 1
    assert 0.5 < plan["ceiling"] < 0.95  # split-half reliability of these 20 neurons
    assert plan["facts"]["repetitions"] == 10
    assert registry_state(_isolated_home) == ([], [])  # a dry run changes nothing

    first = json.loads(ingest(assembly, images).stdout)
    assert first["status"] == "registered" and first["ceiling"] == plan["ceiling"]
    assert json.loads(ingest(assembly, images).stdout)["status"] == "unchanged"

    # changed data: a new version; the old one stays
    changed, images2 = make_recording(tmp_path / "rec2", session="210325", n_images=90, repeats=True)
    second = json.loads(ingest(changed, images2).stdout)
    assert second["status"] == "registered" and second["version"] == 2
    assert registry_state(_isolated_home) == ([("Test2026.V4-pls", 1), ("Test2026.V4-pls", 2)], ["v1", "v2"])
    listed = json.loads(cortexbox("benchmarks", "list", "--json").stdout)
    mine = [b for b in listed if b["identifier"] == "Test2026.V4-pls"]
    assert mine and mine[0]["version"] == 2 and mine[0]["stimuli"] == 90


def _damage_nan(assembly: Path, images: Path, tmp: Path):
    a = xr.load_dataarray(assembly)
    a[3, 2] = np.nan
    a.to_netcdf(assembly)
    return assembly, images


def _damage_missing_image(assembly, images, tmp):
    (images / "img0007.jpg").unlink()
    return assembly, images


def _damage_extra_image(assembly, images, tmp):
    (images / "stray.jpg").write_bytes((images / "img0001.jpg").read_bytes())
    return assembly, images


def _damage_unreadable_image(assembly, images, tmp):
    (images / "img0005.jpg").write_bytes(b"this is not a jpeg")
    return assembly, images


def _damage_duplicate_neuroid(assembly, images, tmp):
    a = xr.load_dataarray(assembly)
    ids = a["neuroid_id"].values.copy()
    ids[1] = ids[0]
    a = a.assign_coords(neuroid_id=("neuroid", ids))
    assembly.unlink()
    a.to_netcdf(assembly)
    return assembly, images


def _damage_wrong_dims(assembly, images, tmp):
    a = xr.load_dataarray(assembly).rename({"neuroid": "neuron"})
    assembly.unlink()
    a.to_netcdf(assembly)
    return assembly, images


def _damage_csv_duplicates(assembly, images, tmp):
    table = tmp / "stimuli.csv"
    files = sorted(images.iterdir())
    with open(table, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["stimulus_id", "filename"])
        for p in files:
            w.writerow([p.stem, p.name])
        w.writerow([files[0].stem, files[0].name])
        for p in files:  # the CSV lives beside the images in this layout
            (tmp / p.name).write_bytes(p.read_bytes())
    return assembly, table


DAMAGE = {
    "NaN values": (_damage_nan, "NaN"),
    "missing image": (_damage_missing_image, "img0007"),
    "extra image": (_damage_extra_image, "stray"),
    "unreadable image": (_damage_unreadable_image, "cannot be decoded"),
    "duplicate neuroid ids": (_damage_duplicate_neuroid, "duplicate neuroid_id"),
    "wrong dims": (_damage_wrong_dims, "dims"),
    "duplicate rows in the stimulus CSV": (_damage_csv_duplicates, "appears twice"),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_damaged_recordings_fail_clearly_and_change_nothing(tmp_path, _isolated_home, kind):
    damage, words = DAMAGE[kind]
    assembly, images = make_recording(tmp_path / "rec", n_images=40, n_neurons=5)
    assembly, stimuli = damage(assembly, images, tmp_path)
    result = ingest(assembly, stimuli)
    assert result.returncode == 2, result.stdout
    assert "Traceback" not in result.stderr
    assert words in result.stderr
    assert registry_state(_isolated_home) == ([], [])


def test_a_csv_with_a_zip_is_accepted(tmp_path, _isolated_home):
    assembly, images = make_recording(tmp_path / "rec", n_images=30, n_neurons=5)
    with zipfile.ZipFile(tmp_path / "stimuli.zip", "w") as archive, open(tmp_path / "stimuli.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["stimulus_id", "filename"])
        for p in sorted(images.iterdir()):
            archive.write(p, f"stimuli/{p.name}")
            w.writerow([p.stem, p.name])
    result = ingest(assembly, tmp_path / "stimuli.csv", "--stimuli-zip", str(tmp_path / "stimuli.zip"), "--dry-run")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["ceiling"] is None and plan["facts"]["stimuli"] == 30


@pytest.mark.docker
def test_ingesting_scores_every_registered_model(tmp_path, _isolated_home, template_image):
    tag = template_image("pixels")
    added = cortexbox("models", "add", tag, "--json")
    assert added.returncode == 0, added.stderr
    assembly, images = make_recording(tmp_path / "rec", n_images=200, n_neurons=30)
    result = ingest(assembly, images)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["status"] == "registered" and outcome["models_to_score"] == ["pixels"]
    (scored,) = outcome["scored"]
    assert scored["status"] == "succeeded" and scored["benchmark"] == "Test2026.V4-pls"
    assert scored["ceiled"] is None and 0.05 < scored["raw"] < 0.8  # no repetitions: raw r only
    page = json.loads(cortexbox("leaderboard", "--benchmark", "Test2026.V4-pls", "--json").stdout)
    assert page["version"] == 1 and [(r["rank"], r["model"]) for r in page["scores"]] == [(1, "pixels")]


def test_a_failing_transaction_leaves_neither_rows_nor_data(tmp_path, _isolated_home, monkeypatch):
    from cortexbox.orchestrator.ingest import ingest_recording

    assembly, images = make_recording(tmp_path / "rec", n_images=30, n_neurons=5)

    def fails(self, items):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(Registry, "register_benchmark_versions", fails)
    with pytest.raises(RuntimeError, match="went away"):
        ingest_recording(assembly, images, identifier="Test2026.V4-pls", region="V4", visual_degrees=8)
    assert registry_state(_isolated_home) == ([], [])
    assert list((_isolated_home / "benchmarks").rglob("*")) == [(_isolated_home / "benchmarks" / "Test2026.V4-pls")]


def test_only_image_models_are_queued_for_a_recording(tmp_path, _isolated_home):
    from cortexbox.orchestrator.ingest import ingest_recording

    registry = Registry()
    registry.upsert_model("sha256:" + "1" * 64, "vision", "1", "v", {"modality": "image"})
    registry.upsert_model("sha256:" + "2" * 64, "lm", "1", "t", {"modality": "text"})
    assembly, images = make_recording(tmp_path / "rec", n_images=30, n_neurons=5)
    plan = ingest_recording(assembly, images, identifier="Test2026.V4-pls", region="V4", visual_degrees=8, registry=registry)
    assert plan.status == "registered" and plan.models_to_score == ["vision"]
    assert [(m.name, b.identifier) for _, m, b in registry.queued_jobs()] == [("vision", "Test2026.V4-pls")]
