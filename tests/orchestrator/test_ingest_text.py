"""`cortexbox benchmarks ingest --modality text`: a text recording cut from the real Brennan et al. 2016 "Alice"
fMRI becomes a versioned language benchmark through the same path as image recordings, a text model (the unigram
template, served in this process) is scored on it end to end, an image model is refused, and damaged copies fail
with a message naming the problem and change nothing.

The recording (an honest construction from the released data): the 362 volumes are cut into blocks of 5 (10 s);
a block's text part is the words whose onset falls 6 s (the HRF's peak) before the block's volumes; its response
is each subject's linearly detrended, z-scored ROI time course averaged over the block. Neuroids are the 6 ROIs
and the 27 subjects are the repetitions (so the internal-consistency ceiling is the split-half reliability of the
subject-averaged response); the parts of the chapter form one cumulative context, as Brennan2016 streams it.
"""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from cortexbox.benchmarks.brennan2016 import (
    _TEXTGRID,
    FIRST_VOLUME_S,
    N_VOLUMES,
    ROIS,
    SUBJECTS,
    TR_S,
    _read_textgrid,
)
from cortexbox.benchmarks.netcdf import write_assembly
from cortexbox.registry import Registry
from scipy.signal import detrend

from tests.conftest import DATA_DIR, REPO
from tests.orchestrator.test_cli import cortexbox

ALICE = DATA_DIR / "brennan2016_alice_fmri"
IDENTIFIER = "Smith2026.language-linear"
BLOCK = 5  # volumes per stimulus
LAG_S = 6.0


def make_text_recording(folder: Path, n_blocks: int | None = None, subjects=SUBJECTS, repeats: bool = True,
                        encoding: str = "utf-8") -> tuple[Path, Path]:
    """Writes (assembly.nc, sentences.csv) cut from the Alice fMRI, as a contributor would."""
    folder.mkdir(parents=True, exist_ok=True)
    words = _read_textgrid(DATA_DIR / _TEXTGRID)
    series = {}
    for subject in subjects:
        data = np.loadtxt(ALICE / "alice_data_shared" / "10mm" / f"{subject}-timecourses.txt")
        y = detrend(data, axis=0)
        series[subject] = (y - y.mean(axis=0)) / y.std(axis=0)
    parts, rows, ids, reps = [], [], [], []
    for b in range(N_VOLUMES // BLOCK):
        start = FIRST_VOLUME_S + TR_S * b * BLOCK - LAG_S
        text = " ".join(w for onset, w in words if start <= onset < start + TR_S * BLOCK)
        if not text:
            continue
        sid = f"alice.block{b:03d}"
        parts.append((sid, text))
        block = slice(b * BLOCK, (b + 1) * BLOCK)
        if repeats:
            for r, subject in enumerate(subjects):
                rows.append(series[subject][block].mean(axis=0))
                ids.append(sid)
                reps.append(r)
        else:
            rows.append(np.concatenate([series[s][block].mean(axis=0) for s in subjects]))
            ids.append(sid)
    if n_blocks is not None:
        keep = {sid for sid, _ in parts[:n_blocks]}
        parts = parts[:n_blocks]
        mask = [sid in keep for sid in ids]
        rows = [r for r, m in zip(rows, mask) if m]
        reps = [r for r, m in zip(reps, mask) if m] if repeats else reps
        ids = [s for s, m in zip(ids, mask) if m]
    coords = {"stimulus_id": ("presentation", ids)}
    if repeats:
        coords["repetition"] = ("presentation", reps)
        coords["neuroid_id"] = ("neuroid", list(ROIS))
    else:
        coords["neuroid_id"] = ("neuroid", [f"{s}.{roi}" for s in subjects for roi in ROIS])
    write_assembly(xr.DataArray(np.array(rows), dims=("presentation", "neuroid"), coords=coords), folder / "assembly.nc")
    with open(folder / "sentences.csv", "w", newline="", encoding=encoding) as handle:
        writer = csv.writer(handle)
        writer.writerow(["stimulus_id", "sentence", "story"])
        writer.writerows((sid, text, "alice") for sid, text in parts)
    return folder / "assembly.nc", folder / "sentences.csv"


def ingest(assembly, stimuli, *extra, identifier=IDENTIFIER):
    return cortexbox("benchmarks", "ingest", str(assembly), "--stimuli", str(stimuli), "--modality", "text",
                     "--identifier", identifier, "--region", "language", "--json", *extra, timeout=300)


def registry_state(home: Path):
    registry = Registry()
    return [(b.identifier, b.version) for b in registry.benchmarks()], sorted(p.name for p in (home / "benchmarks").glob("*/*"))


@pytest.fixture
def unigram_endpoint(tmp_path):
    """The unigram template's model, served by the SDK in this process (no Docker)."""
    pytest.importorskip("wordfreq")
    from cortexbox.sdk import serve

    spec = importlib.util.spec_from_file_location("unigram_model", REPO / "model_templates" / "unigram" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    address = f"unix://{tmp_path}/unigram.sock"
    server, _ = serve(module.Unigram(), address, block=False)
    yield address
    server.stop(0)


def test_text_recording_is_ingested_versioned_and_scored(tmp_path, _isolated_home, unigram_endpoint):
    assembly, sentences = make_text_recording(tmp_path / "rec")
    dry = ingest(assembly, sentences, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert plan["status"] == "planned" and plan["version"] == 1 and plan["metric"] == "linear_predictivity"
    assert plan["facts"]["modality"] == "text" and plan["facts"]["contexts"] == 1
    assert plan["facts"]["repetitions"] == 27 and plan["facts"]["neuroids"] == 6
    assert plan["facts"]["stimuli"] >= 60
    assert 0.3 < plan["ceiling"] < 1.0  # split-half reliability over subjects of the block-averaged ROI responses
    assert registry_state(_isolated_home) == ([], [])  # a dry run changes nothing

    first = json.loads(ingest(assembly, sentences).stdout)
    assert first["status"] == "registered" and first["ceiling"] == plan["ceiling"]
    assert json.loads(ingest(assembly, sentences).stdout)["status"] == "unchanged"
    row = Registry().benchmark_versions(IDENTIFIER)[-1]
    assert json.loads((Path(row.definition["folder"]) / "definition.json").read_text())["modality"] == "text"

    # a text model, end to end through `cortexbox score --endpoint`
    result = cortexbox("score", "--endpoint", unigram_endpoint, "--benchmark", IDENTIFIER, "--json", timeout=300)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["layer"] == "log_frequency"  # the only layer: the fixed-depth rule of language neural benchmarks
    assert outcome["provenance"]["layer_commitment"]["method"] == "relative_depth"
    assert outcome["benchmark_version"] == 1 and outcome["ceiling"] == pytest.approx(plan["ceiling"])
    assert -1 < outcome["raw"] < 1 and 0 <= outcome["ceiled"] <= 1
    assert outcome["ceiled"] == pytest.approx(min(max(outcome["raw"] / outcome["ceiling"], 0), 1))
    assert outcome["provenance"]["metric"]["metric_name"] == "linear_predictivity"
    print("unigram on the Alice text recording:", {k: outcome[k] for k in ("raw", "error", "ceiling", "ceiled")})

    # an image model is refused on the text benchmark (the existing modality check)
    from cortexbox.sdk import serve

    from tests.orchestrator.test_score_endpoint import TwoLayers

    address = f"unix://{tmp_path}/image.sock"
    server, _ = serve(TwoLayers(), address, block=False)
    try:
        refused = cortexbox("score", "--endpoint", address, "--benchmark", IDENTIFIER, "--json", timeout=300)
    finally:
        server.stop(0)
    assert refused.returncode != 0 and "needs a text model" in refused.stderr, refused.stderr

    # changed data: the next version, and the registered text model is queued for it (modality filter)
    changed, sentences2 = make_text_recording(tmp_path / "rec2", n_blocks=50)
    second = json.loads(ingest(changed, sentences2, "--no-score").stdout)
    assert second["status"] == "registered" and second["version"] == 2
    assert second["models_to_score"] == []  # an endpoint model has no image digest: nothing to queue
    assert [b.version for b in Registry().benchmark_versions(IDENTIFIER)] == [1, 2]


def test_without_repetitions_the_score_is_raw_only(tmp_path, _isolated_home):
    from cortexbox.benchmarks import neuroid_assembly
    from cortexbox.orchestrator.ingest import ingest_recording
    from cortexbox.orchestrator.scoring import resolve_benchmark

    assembly, sentences = make_text_recording(tmp_path / "rec", subjects=SUBJECTS[:4], repeats=False)
    plan = ingest_recording(assembly, sentences, identifier="Smith2026.alice-linear", region="language", modality="text")
    assert plan.status == "registered" and plan.ceiling is None and plan.facts["neuroids"] == 24
    bench = resolve_benchmark("Smith2026.alice-linear")
    assert bench.modality == "text" and bench.kind == "neural" and bench.ceiling is None
    # word count per block: a crude but honest feature of the text part
    features = np.array([[len(text.split())] for _, text, _ in bench.stimulus_set.iter_text()], dtype=np.float32)
    score = bench.score(neuroid_assembly(features, bench.stimulus_set.stimulus_ids, layer="words"))
    assert score.ceiling is None and score.ceiled is None and np.isfinite(score.raw)
    assert "no ceiling" in score.attrs["normalization"]


def _rewrite_csv(path: Path, edit) -> None:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    rows = edit(rows)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)


@pytest.mark.parametrize("damage, words", [
    ("missing_text", ["have no text in the CSV", "alice.block"]),
    ("extra_and_duplicate", ["belong to no presentation", "'alice.extra'", "duplicate stimulus_id", "'alice.block001'"]),
    ("empty_text", ["empty or whitespace-only text"]),
    ("not_utf8", ["is not UTF-8"]),
    ("nan", ["NaN or infinite value"]),
    ("wrong_dims", ["dims must be presentation and neuroid"]),
    ("too_few", ["only 12 distinct stimuli", "at least 20"]),
])
def test_damaged_text_recordings_fail_naming_the_problem_and_change_nothing(tmp_path, _isolated_home, damage, words):
    assembly, sentences = make_text_recording(tmp_path / "rec", n_blocks=12 if damage == "too_few" else 30,
                                              subjects=SUBJECTS[:4])
    if damage == "missing_text":
        _rewrite_csv(sentences, lambda rows: rows[:-3])
    elif damage == "extra_and_duplicate":
        _rewrite_csv(sentences, lambda rows: rows + [["alice.extra", "a sentence nobody heard", "alice"], rows[2]])
    elif damage == "empty_text":
        _rewrite_csv(sentences, lambda rows: [rows[0], [rows[1][0], "   ", rows[1][2]]] + rows[2:])
    elif damage == "not_utf8":
        sentences.write_bytes(sentences.read_bytes() + "alice.cafe,un caf\u00e9 au lait,alice\n".encode("latin-1"))
    elif damage in ("nan", "wrong_dims"):
        data = xr.load_dataarray(assembly)
        if damage == "nan":
            data[3, 2] = np.nan
        else:
            data = data.expand_dims(time_bin=2)  # two time bins, in the wrong place too
        assembly.unlink()
        write_assembly(data, assembly)
    before = registry_state(_isolated_home)
    result = ingest(assembly, sentences)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr, result.stderr
    assert registry_state(_isolated_home) == before == ([], [])


def test_every_problem_is_reported_at_once(tmp_path):
    from cortexbox.benchmarks.recordings import RecordingError
    from cortexbox.benchmarks.text_recordings import read_text_recording

    assembly, sentences = make_text_recording(tmp_path / "rec", n_blocks=30, subjects=SUBJECTS[:3])
    _rewrite_csv(sentences, lambda rows: [rows[0], [rows[1][0], "", rows[1][2]]] + rows[2:-1] + [["x.y", "hello", "other"]])
    data = xr.load_dataarray(assembly)
    data[0, 0] = np.nan
    assembly.unlink()
    write_assembly(data, assembly)
    with pytest.raises(RecordingError) as caught:
        read_text_recording(assembly, sentences)
    text = str(caught.value)
    for word in ("NaN", "empty or whitespace-only", "have no text", "belong to no presentation"):
        assert word in text, text


def test_only_text_models_are_queued_for_a_text_recording(tmp_path, _isolated_home):
    from cortexbox.orchestrator.ingest import ingest_recording

    registry = Registry()
    registry.upsert_model("sha256:" + "1" * 64, "vision", "1", "v", {"modality": "image"})
    registry.upsert_model("sha256:" + "2" * 64, "lm", "1", "t", {"modality": "text"})
    assembly, sentences = make_text_recording(tmp_path / "rec", n_blocks=30, subjects=SUBJECTS[:4])
    plan = ingest_recording(assembly, sentences, identifier=IDENTIFIER, region="language", modality="text", registry=registry)
    assert plan.status == "registered" and plan.models_to_score == ["lm"]
    assert [(m.name, b.identifier) for _, m, b in registry.queued_jobs()] == [("lm", IDENTIFIER)]


def test_a_failing_transaction_leaves_neither_rows_nor_data(tmp_path, _isolated_home, monkeypatch):
    from cortexbox.orchestrator.ingest import ingest_recording

    assembly, sentences = make_text_recording(tmp_path / "rec", n_blocks=30, subjects=SUBJECTS[:4])

    def fails(self, items):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(Registry, "register_benchmark_versions", fails)
    with pytest.raises(RuntimeError, match="went away"):
        ingest_recording(assembly, sentences, identifier=IDENTIFIER, region="language", modality="text")
    assert registry_state(_isolated_home) == ([], [])
    assert list((_isolated_home / "benchmarks").rglob("*")) == [(_isolated_home / "benchmarks" / IDENTIFIER)]
