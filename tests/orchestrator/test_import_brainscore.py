"""`cortexbox import brainscore`: plugins that download are refused before anything is written (fast, no Docker);
Brain-Score's pixels plugin is imported from the brainscore-vision wheel, built into a real image, and its container
returns the activations Brain-Score's own code computes in-process for the same pixels (the reference runs under a
Brain-Score venv, /tmp/bs-venv or $BS_VENV), and scores on Kriegeskorte2008.hIT-rdm as those in-process activations
do through the same scoring path (docker, slow).

Where each side's placement happens: the orchestrator places the benchmark's stimuli at the model's visual degrees
(benchmarks/stimuli.py, Brain-Score's place_on_screen reproduced) and sends those pixels; the test places them with
the same code, writes them as PNG (lossless) and gives those files to Brain-Score's ``activations_model``, so both
sides start from identical pixels and both run the plugin's own preprocessing from a PNG file.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from cortexbox.orchestrator.importers import brainscore
from cortexbox.orchestrator.importers.brainscore import PluginRefused, import_plugin, scan_plugin
from tests.orchestrator.test_cli import assert_one_line_error, cortexbox

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "model_templates"
REFERENCE = REPO / "perf" / "brainscore_reference.py"
BS_VENV = Path(os.environ.get("BS_VENV", "/tmp/bs-venv"))
BENCHMARK = "Kriegeskorte2008.hIT-rdm"
#: pixels: uint8 values through float32 on both sides, so exactly equal; the score then too (same arrays, same code).
PIXELS_TOLERANCE = 0.0
SCORE_TOLERANCE = 1e-12

DOWNLOADING_MODEL = '''\
import torchvision
from brainscore_core.supported_data_standards.brainio.s3 import load_weight_file
from brainscore_vision.model_helpers.activations.pytorch import PytorchWrapper

BIBTEX = """@article{x, url = {https://example.org/paper.pdf}}"""


def get_model():
    weights = load_weight_file(bucket="brainscore-storage", folder_name="brainscore-vision/models",
                               relative_path="mine/weights.pth", version_id="null", sha1="0")
    net = torchvision.models.resnet18(pretrained=True)
    return PytorchWrapper(identifier="mine", model=net, preprocessing=None)
'''


def _plugin(folder: Path, model_py: str, requirements: str = "torch\ntorchvision\n", name: str = "mine") -> Path:
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text(
        "from brainscore_vision import model_registry\nfrom .model import get_model\n"
        f"model_registry['{name}'] = lambda: get_model()\n"
    )
    (folder / "model.py").write_text(model_py)
    (folder / "requirements.txt").write_text(requirements)
    return folder


def test_a_plugin_that_downloads_is_refused_naming_what_it_needs(tmp_path):
    folder = _plugin(tmp_path / "mine", DOWNLOADING_MODEL)
    out = tmp_path / "project"
    with pytest.raises(PluginRefused) as refused:
        import_plugin(str(folder), out, templates=TEMPLATES)
    message = str(refused.value)
    assert "needs a download at run time" in message
    assert "load_weight_file" in message and "relative_path='mine/weights.pth'" in message and "S3" in message
    assert "resnet18(pretrained=True)" in message
    assert "example.org" not in message  # a URL inside a bibtex string is no download
    assert "ship its weights" in refused.value.hint
    assert not out.exists()  # refused before anything is written


def test_the_cli_refuses_in_one_line(tmp_path):
    folder = _plugin(tmp_path / "mine", DOWNLOADING_MODEL)
    result = cortexbox("import", "brainscore", str(folder), "--no-build", "--out", str(tmp_path / "project"),
                       "--templates", str(TEMPLATES))
    assert_one_line_error(result, "needs a download at run time")
    assert "load_weight_file" in result.stderr and "hint:" in result.stderr
    assert not (tmp_path / "project").exists()


@pytest.mark.parametrize("code, what", [
    ("import torch\nnet = torch.hub.load('pytorch/vision', 'resnet18')\n", "a model from torch.hub"),
    ("from torch.hub import load_state_dict_from_url\nw = load_state_dict_from_url(URL)\n", "weights from a URL"),
    ("import timm\nnet = timm.create_model('resnet18', pretrained=True)\n", "pretrained weights"),
    ("from transformers import AutoModel\nnet = AutoModel.from_pretrained('x/y')\n", "Hugging Face"),
    ("from torchvision.models import resnet18, ResNet18_Weights\nnet = resnet18(weights=ResNet18_Weights.DEFAULT)\n",
     "pretrained torchvision weights"),
    ("WEIGHTS = 'https://example.org/w.pth'\n", "the URL https://example.org/w.pth"),
    ("import gdown\n", "Google Drive"),
])
def test_the_scan_finds_each_kind_of_download(code, what):
    scan = scan_plugin({"model.py": code.encode()}, "mine")
    assert any(what in f.what for f in scan.downloads), scan.downloads


def test_requirements_from_urls_and_setup_py_count_as_downloads():
    scan = scan_plugin({"requirements.txt": b"torch\nCORnet @ git+https://github.com/x/CORnet.git\n",
                        "setup.py": b"from setuptools import setup\n"}, "mine")
    whats = " ".join(f.what for f in scan.downloads)
    assert "git+https://github.com/x/CORnet.git" in whats and "setup.py" in whats


def test_a_plugin_without_downloads_becomes_a_project_with_its_pins(tmp_path):
    model_py = (
        "import functools\nimport torch\nfrom torchvision.models import resnet18\n"
        "from brainscore_vision.model_helpers.activations.pytorch import PytorchWrapper, load_preprocess_images\n"
        "from brainscore_vision.model_helpers.brain_transformation import ModelCommitment\n"
        "def get_model():\n    torch.manual_seed(1)\n"
        "    w = PytorchWrapper(identifier='mine', model=resnet18(pretrained=False),\n"
        "                       preprocessing=functools.partial(load_preprocess_images, image_size=224))\n"
        "    return ModelCommitment(identifier='mine', activations_model=w, layers=['layer1'])\n"
    )
    folder = _plugin(tmp_path / "mine", model_py)
    (folder / "test.py").write_text("import pytest\n")  # Brain-Score's plugin test: neither scanned nor copied
    project = import_plugin(str(folder), tmp_path / "project", templates=TEMPLATES)
    out = project.project_dir
    assert project.identifier == "mine" and project.image_name == "cortexbox/brainscore-mine"
    assert "torch==2.13.0+cpu" in project.requirements and "torchvision==0.28.0" in project.requirements
    requirements = (out / "requirements.txt").read_text().splitlines()
    assert "torchvision==0.28.0" in requirements and "numpy==1.26.4" in requirements
    assert (out / "plugin" / "mine" / "model.py").read_text() == model_py
    assert not (out / "plugin" / "mine" / "test.py").exists()
    config = json.loads((out / brainscore.CONFIG_FILE).read_text())
    assert config["identifier"] == "mine" and config["plugin_dir"] == "mine" and config["seed"] == 0
    assert 'name = "cortexbox/brainscore-mine"' in (out / "cortexbox.toml").read_text()
    for name in brainscore.TEMPLATE_FILES:
        assert (out / name).is_file(), name


def test_an_unknown_module_is_refused_by_name(tmp_path):
    folder = _plugin(tmp_path / "mine", "import spikingjelly\n", requirements="spikingjelly\n")
    with pytest.raises(PluginRefused, match="module spikingjelly") as refused:
        import_plugin(str(folder), tmp_path / "project", templates=TEMPLATES)
    assert "EXTRA_REQUIREMENTS" in refused.value.hint


def test_several_registrations_need_a_choice(tmp_path):
    folder = _plugin(tmp_path / "mine", "x = 1\n", requirements="")
    (folder / "__init__.py").write_text("model_registry['a'] = 1\nmodel_registry[\"b\"] = 2\n")
    result = cortexbox("import", "brainscore", str(folder), "--no-build", "--out", str(tmp_path / "p"),
                       "--templates", str(TEMPLATES))
    assert_one_line_error(result, "registers 2 models: a, b")
    project = import_plugin(str(folder), tmp_path / "p", model="b", templates=TEMPLATES)
    assert project.identifier == "b"


@pytest.mark.slow
def test_brainscore_plugins_from_the_wheel_are_found_or_refused(tmp_path):
    """The brainscore-vision wheel (fetched hash-checked into the wheelhouse once): CORnet-S is refused for its S3
    weights and its git requirement; pixels is found by its identifier and written."""
    with pytest.raises(PluginRefused) as refused:
        import_plugin("CORnet-S", tmp_path / "cornet", templates=TEMPLATES)
    assert "cornet_s/cornet_s_epoch43.pth.tar" in str(refused.value) and "git+https" in str(refused.value)
    project = import_plugin("pixels", tmp_path / "pixels", templates=TEMPLATES)
    assert project.requirements == () and project.source.startswith("brainscore-vision 2.4.2")
    assert (project.project_dir / "plugin/pixels/region_layer_map/pixels.json").is_file()


# -- the real thing ----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def bs_python() -> Path:
    """The Brain-Score venv's python (built by perf/parity_brainscore.py --setup-venv when missing), with h5py,
    which ModelCommitment's import of LayerPCA needs (the metric parity does not)."""
    python = BS_VENV / "bin" / "python"
    probe = [str(python), "-c", "import brainscore_vision, h5py"]
    if not python.exists() or subprocess.run(probe, capture_output=True).returncode != 0:
        subprocess.run([str(REPO / ".venv/bin/python"), str(REPO / "perf/parity_brainscore.py"), "--setup-venv"],
                       check=True, timeout=900, env={**os.environ, "BS_VENV": str(BS_VENV)})
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "h5py==3.16.0"], check=True, timeout=300)
    subprocess.run(probe, check=True, capture_output=True)
    return python


class _Replay:
    """An SDK model that answers with Brain-Score's in-process activations, looked up by the placed pixels' hash:
    scoring it runs those very numbers through cortexbox's scoring path."""

    def __new__(cls, arrays: dict, by_hash: dict, shapes: dict, degrees: float, regions: dict):
        from cortexbox.sdk import Model, Output, StimulusError

        class Replay(Model):
            model_id = "brainscore-pixels-inprocess"
            model_version = "1"
            visual_degrees = degrees
            region_layers = regions
            max_batch_size = 64

            def layers(self):
                return [Output(name, shape) for name, shape in shapes.items()]

            def activations(self, stimuli, layers):
                rows = []
                for s in stimuli:
                    key = hashlib.sha256(np.ascontiguousarray(s.pixels).tobytes()).hexdigest()
                    if key not in by_hash:
                        raise StimulusError(s.id, "not among the stimuli Brain-Score ran")
                    rows.append(by_hash[key])
                return {name: arrays[name][rows].reshape(len(rows), *shapes[name]).astype(np.float32) for name in layers}

        return Replay()


@pytest.mark.slow
def test_pixels_plugin_image_equals_brainscore_in_process(docker_client, base_image, data_dir, bs_python, tmp_path):
    from cortexbox.benchmarks import get_benchmark
    from cortexbox.orchestrator.importers.brainscore import import_and_build
    from cortexbox.orchestrator.runtime import open_session
    from cortexbox.sdk import serve
    from PIL import Image

    tag = "cortexbox-test/brainscore-pixels:parity"
    project, built = import_and_build("pixels", tmp_path / "project", tag=tag, templates=TEMPLATES)
    try:
        # The container: what it declares, and its activations for the benchmark's placed stimuli.
        with open_session(image=tag) as session:
            description = session.description
            info = description.raw
            degrees = info.visual_degrees
            stimulus_set = get_benchmark(BENCHMARK).stimulus_set
            placed = list(stimulus_set.iter_placed(degrees))
            ids = [sid for sid, _ in placed]
            result = session.client.run(description, placed, ids, layers=description.layers, timeout_s=600)
        assert degrees == 8.0 and dict(info.region_layers) == {r: "pixels" for r in ("V1", "V2", "V4", "IT")}
        assert description.layers == ["pixels"]
        assert result.stimulus_ids == ids

        # Brain-Score in-process, on PNG files of the same pixels.
        paths = []
        for i, (_, pixels) in enumerate(placed):
            paths.append(tmp_path / f"stimulus-{i:03d}.png")
            Image.fromarray(pixels).save(paths[-1])
        reference = tmp_path / "reference.npz"
        done = subprocess.run([str(bs_python), "-W", "ignore", str(REFERENCE), str(project.project_dir), str(reference),
                               *map(str, paths)], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        meta = json.loads(reference.with_suffix(".json").read_text())
        arrays = dict(np.load(reference))
        assert meta["layers"] == ["pixels"] and meta["visual_degrees"] == degrees
        assert meta["region_layer_map"] == dict(info.region_layers)
        assert meta["stimulus_paths"] == [str(p) for p in paths]
        theirs = arrays["pixels"]
        ours = result.outputs["pixels"]
        assert theirs.shape == ours.shape == (len(ids), 256 * 256 * 3)
        assert np.abs(ours.astype(np.float64) - theirs.astype(np.float64)).max() <= PIXELS_TOLERANCE

        # The score of the container equals the score of Brain-Score's in-process activations, both through
        # `cortexbox score` (the replay server serves the reference arrays by pixel hash).
        container = cortexbox("score", "--model", tag, "--benchmark", BENCHMARK, "--json", timeout=600)
        assert container.returncode == 0, container.stderr[-3000:]
        by_hash = {hashlib.sha256(np.ascontiguousarray(p).tobytes()).hexdigest(): i for i, (_, p) in enumerate(placed)}
        replay = _Replay(arrays, by_hash, {"pixels": (256, 256, 3)}, degrees, dict(info.region_layers))
        address = f"unix://{tmp_path}/replay.sock"
        server, _ = serve(replay, address, block=False)
        try:
            inprocess = cortexbox("score", "--endpoint", address, "--benchmark", BENCHMARK, "--json", timeout=600)
        finally:
            server.stop(0)
        assert inprocess.returncode == 0, inprocess.stderr[-3000:]
        a, b = json.loads(container.stdout), json.loads(inprocess.stdout)
        assert a["layer"] == b["layer"] == "pixels"
        assert abs(a["raw"] - b["raw"]) <= SCORE_TOLERANCE and abs(a["ceiled"] - b["ceiled"]) <= SCORE_TOLERANCE
        assert 0 < a["ceiled"] < 1
    finally:
        docker_client.images.remove(tag, force=True)
