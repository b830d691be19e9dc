"""Model templates in process, the image builder's pure parts, and one image built and served for real.

The templates are imported by path, as the SDK would import them in their images. The torch
and TF Lite ones are skipped where the host lacks that package (their images have it; the
`docker` tests below exercise the MobileNet image in CI either way).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from cortexbox.orchestrator import images
from cortexbox.sdk import Model, Stimulus

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "model_templates"
DATA = images.default_data_dir()
CORAL = DATA / "coral_mobilenet_tflite"
#: The three labelled images that ship with the Coral MobileNets, and their expected top-1 class.
LABELLED = {"grace_hopper.bmp": "military uniform", "cat.bmp": "Egyptian cat", "parrot.jpg": "macaw"}

needs_coral = pytest.mark.skipif(not CORAL.is_dir(), reason=f"the Coral MobileNet data are not at {CORAL}")


def load_template(name: str):
    """Imports model_templates/<name>/model.py under a unique module name."""
    path = TEMPLATES / name / "model.py"
    spec = importlib.util.spec_from_file_location(f"cortexbox_template_{name.replace('-', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def require(package: str) -> None:
    if importlib.util.find_spec(package) is None:
        pytest.skip(
            f"{package} is not importable on this host (the template's image has it); pip install it to run this test"
        )


def read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


@pytest.fixture(scope="module")
def labelled() -> list[Stimulus]:
    if not CORAL.is_dir():
        pytest.skip(f"the Coral MobileNet data are not at {CORAL}")
    return [Stimulus(name, pixels=read_rgb(CORAL / name)) for name in LABELLED]


def check_outputs(model: Model, stimuli: list[Stimulus], names: list[str]) -> dict[str, np.ndarray]:
    """Every declared layer comes back with its declared shape and dtype, finite."""
    declared = {o.name: o for o in model.layers()}
    out = model.activations(stimuli, names)
    assert set(out) == set(names)
    for name in names:
        array = np.asarray(out[name])
        assert array.shape == (len(stimuli), *declared[name].shape), name
        assert array.dtype == np.dtype(declared[name].dtype), name
        assert np.isfinite(array).all(), name
    return out


# -- pixels ------------------------------------------------------------------------------------
def test_pixels_layer_is_the_image_at_256():
    module = load_template("pixels")
    model = module.PixelsModel()
    model.load()
    assert [o.name for o in model.layers()] == ["pixels"]
    assert set(model.region_layers.values()) == {"pixels"}
    rng = np.random.default_rng(0)
    stimuli = [
        Stimulus("a", pixels=rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)),
        Stimulus("b", pixels=np.full((256, 256, 3), 7, np.uint8)),
    ]
    out = check_outputs(model, stimuli, ["pixels"])["pixels"]
    assert out.min() >= 0 and out.max() <= 255
    np.testing.assert_array_equal(out[1], 7.0)  # a 256 x 256 image is passed through untouched


@pytest.mark.parametrize("method", ["bicubic", "bilinear"])
def test_numpy_resize_matches_pillow(method):
    """Brain-Score resizes with Pillow; the templates reimplement it in numpy.

    Identical where one side changes size or Pillow runs the horizontal pass first (all Pillow
    versions up to 12 do); Pillow 13 sometimes starts with the vertical pass, which moves a few
    values by a few levels.
    """
    from PIL import Image

    from cortexbox.sdk.imaging import resize

    filters = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
    rng = np.random.default_rng(1)
    for shape, size in [((300, 400, 3), (300, 256)), ((90, 70, 3), (256, 70)), ((37, 513, 3), (37, 224))]:
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        expected = np.asarray(Image.fromarray(image).resize(size[::-1], filters[method]))
        np.testing.assert_array_equal(resize(image, *size, method=method), expected)
    if CORAL.is_dir():
        for name in LABELLED:
            image = read_rgb(CORAL / name)
            expected = np.asarray(Image.fromarray(image).resize((256, 256), filters[method])).astype(int)
            diff = np.abs(resize(image, 256, 256, method=method).astype(int) - expected)
            assert diff.max() <= 4 and diff.mean() < 0.25, (name, diff.max(), diff.mean())


# -- tflite-mobilenet ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mobilenet():
    require("ai_edge_litert")
    if not CORAL.is_dir():
        pytest.skip(f"the Coral MobileNet data are not at {CORAL}")
    module = load_template("tflite-mobilenet")
    model = module.MobileNetV2(model_path=CORAL / "mobilenet_v2_1.0_224_quant.tflite", num_threads=1)
    model.load()
    return model


def test_mobilenet_exposes_every_activation(mobilenet):
    names = [o.name for o in mobilenet.layers()]
    assert len(names) == 66 and len(set(names)) == 66
    assert names[0] == "MobilenetV2/Conv/Relu6" and names[-1] == "MobilenetV2/Predictions/Softmax"
    assert "MobilenetV2/expanded_conv_16/project" in names and "MobilenetV2/Logits/AvgPool" in names
    assert not any(";" in n or "weights" in n.lower() or n.endswith(("/biases", "/add_fold")) for n in names)
    assert [(o.name, o.shape) for o in mobilenet.behaviour_outputs()] == [("logits", (1001,))]
    assert dict(mobilenet.region_layers) == {}
    assert mobilenet.metadata["weights_sha256"] == "7aad0c74c5e3c06e5eb3c827e13304fdd68a83da6087d92ee169c24ff9fd4776"


def test_mobilenet_classifies_the_labelled_images(mobilenet, labelled):
    labels = (CORAL / "imagenet_labels.txt").read_text().splitlines()
    assert len(labels) == 1001 and labels[0] == "background"
    names = [o.name for o in mobilenet.layers()]
    out = check_outputs(mobilenet, labelled, names)
    logits = mobilenet.behaviours(labelled, ["logits"])["logits"]  # reuses the pass above
    assert logits.shape == (3, 1001) and logits.dtype == np.float32
    assert [labels[i] for i in logits.argmax(axis=1)] == list(LABELLED.values())
    fresh = mobilenet.behaviours(labelled, ["logits"])["logits"]  # a pass of its own
    np.testing.assert_array_equal(fresh, logits)
    # Dequantised: the softmax layer is the softmax of the logits, up to its 1/256 quantisation.
    softmax = np.exp(logits - logits.max(axis=1, keepdims=True))
    softmax /= softmax.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(out["MobilenetV2/Predictions/Softmax"], softmax, atol=2 / 256)
    assert out["MobilenetV2/Conv/Relu6"].min() >= 0 and out["MobilenetV2/Conv/Relu6"].max() <= 6.01


# -- pytorch-vision ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def alexnet_module():
    require("torch")
    return load_template("pytorch-vision")


def test_alexnet_layers_and_logits(alexnet_module):
    model = alexnet_module.AlexNetModel(num_threads=1)
    model.load()
    rng = np.random.default_rng(2)
    stimuli = [
        Stimulus("a", pixels=rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)),
        Stimulus("b", pixels=rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)),
    ]
    names = [o.name for o in model.layers()]
    assert names[0] == "features.1" and names[-1] == "classifier.6" and len(names) == 11
    out = check_outputs(model, stimuli, names)
    logits = model.behaviours(stimuli, ["logits"])["logits"]
    assert logits.shape == (2, 1000)
    np.testing.assert_array_equal(logits, out["classifier.6"])
    assert (out["features.2"] >= 0).all()  # after ReLU and max-pool
    # The same seed gives the same network in every process and build.
    again = alexnet_module.AlexNetModel(num_threads=1)
    again.load()
    np.testing.assert_array_equal(again.behaviours(stimuli, ["logits"])["logits"], logits)


def test_alexnet_loads_real_weights(alexnet_module, tmp_path, monkeypatch):
    import torch

    net = alexnet_module.AlexNet()
    torch.nn.init.constant_(net.classifier[6].bias, 3.0)
    torch.save(net.state_dict(), tmp_path / "alexnet.pt")
    monkeypatch.setenv("WEIGHTS_PATH", str(tmp_path / "alexnet.pt"))
    model = alexnet_module.AlexNetModel(num_threads=1)
    model.load()
    assert model.metadata["weights"] == "alexnet.pt" and len(model.metadata["weights_sha256"]) == 64
    assert torch.equal(model.net_.classifier[6].bias, torch.full((1000,), 3.0))


def test_alexnet_threads_follow_the_environment(alexnet_module, monkeypatch):
    import torch

    monkeypatch.setenv("CORTEXBOX_NUM_THREADS", "1")
    assert alexnet_module.cpu_quota() == 1  # the SDK's, as the template uses it
    before = torch.get_num_threads()
    try:
        model = alexnet_module.AlexNetModel()
        model.load()
        assert torch.get_num_threads() == 1 and model.metadata["threads"] == "1"
    finally:
        torch.set_num_threads(before)


# -- the builder, without Docker -----------------------------------------------------------------
def test_every_template_is_a_complete_project():
    for name in ("pixels", "pytorch-vision", "tflite-mobilenet"):
        folder = TEMPLATES / name
        config = images.load_project(folder)
        assert config.name == f"cortexbox/{name}"
        dockerfile = (folder / "Dockerfile").read_text()
        code = [line for line in dockerfile.splitlines() if line and not line.startswith("#")]
        assert code[0] == "ARG BASE_IMAGE=cortexbox/base:bookworm" and code[1].startswith("FROM ${BASE_IMAGE} AS ")
        assert (
            "USER 65534:65534" in dockerfile
            and 'ENTRYPOINT ["python", "-m", "cortexbox.sdk", "serve", "model:' in dockerfile
        )
        requirements = images.read_requirements(folder / "requirements.txt")
        assert requirements and all("==" in r for r in requirements), f"{name}: pin every requirement exactly"
        for source in config.assets.values():
            assert source.startswith("{data}/"), f"{name}: assets come from the data folder, never from git"
            if DATA.is_dir():
                assert Path(source.replace("{data}", str(DATA))).is_file(), source
        assert (folder / "README.md").is_file()


def test_load_project_reports_what_is_wrong(tmp_path):
    with pytest.raises(images.ImageBuildError, match="cortexbox.toml is missing"):
        images.load_project(tmp_path)
    (tmp_path / "cortexbox.toml").write_text("[image]\n")
    with pytest.raises(images.ImageBuildError, match=r"needs \[image\] name"):
        images.load_project(tmp_path)
    (tmp_path / "cortexbox.toml").write_text('[image]\nname = "x/y"\n[assets]\n"a/b" = "{data}/c"\n')
    assert images.load_project(tmp_path) == images.ProjectConfig("x/y", {"a/b": "{data}/c"})


def test_assets_never_leave_the_context(tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    (project / "cortexbox.toml").write_text('[image]\nname = "x/y"\n[assets]\n"../escape" = "data.bin"\n')
    (project / "data.bin").write_bytes(b"x")
    monkeypatch.setattr(images, "build_sdk_wheel", lambda dest: Path(dest) / "sdk.whl")
    monkeypatch.setattr(images, "ensure_wheelhouse", lambda reqs, cache, log: Path(cache))
    monkeypatch.setattr(images, "select_wheels", lambda reqs, house, dest: [])
    with pytest.raises(images.ImageBuildError, match="leaves the build context"):
        images.assemble_context(project, tmp_path / "context", wheelhouse=tmp_path / "wheels")


def test_requirements_and_tags():
    assert images._split_tag("cortexbox/base:bookworm") == ("cortexbox/base", "bookworm")
    assert images._split_tag("localhost:5000/x") == ("localhost:5000/x", "latest")
    platforms = images._platform_args("3.11", (2, 36))
    # ai-edge-litert 2.x ships manylinux_2_27 wheels only: without that tag pip falls back to 1.4.0.
    assert "manylinux_2_27_x86_64" in platforms and "manylinux_2_36_x86_64" in platforms
    assert "manylinux_2_37_x86_64" not in platforms
    assert any(r.startswith("protobuf") for r in images.sdk_requirements())


# -- Docker ------------------------------------------------------------------------------------
@pytest.mark.docker
def test_pixels_image_builds_serves_and_is_content_addressed(docker_client, base_image):
    """build_model_image end to end; the ID it returns is the one Docker reports; the image
    serves under the orchestrator's hardening flags."""
    tag = f"cortexbox/pixels:test-{uuid.uuid4().hex[:8]}"
    built = images.build_model_image(docker_client, TEMPLATES / "pixels", tag=tag, base_image=base_image)
    try:
        assert built.tag == tag and built.image_id.startswith("sha256:")
        inspected = subprocess.run(
            ["docker", "image", "inspect", "--format", "{{.Id}}", tag], capture_output=True, text=True, check=True
        ).stdout.strip()
        assert inspected == built.image_id
        config = docker_client.images.get(tag).attrs["Config"]
        assert config["User"] == "65534:65534"
        assert config["Entrypoint"] == ["python", "-m", "cortexbox.sdk", "serve", "model:PixelsModel"]
        image = np.random.default_rng(3).integers(0, 256, (120, 160, 3), dtype=np.uint8)
        info, outputs = serve_and_run(tag, {"s1": image, "s2": image[::-1].copy()}, layers=["pixels"])
        assert info.model_id == "pixels" and [layer.name for layer in info.layers] == ["pixels"]
        from cortexbox.sdk.imaging import resize
        np.testing.assert_array_equal(outputs["pixels"]["s1"], resize(image, 256, 256).astype(np.float32))
    finally:
        docker_client.images.remove(tag)


@pytest.mark.docker
@needs_coral
def test_mobilenet_image_classifies_the_labelled_images(template_image):
    """The TF Lite image under the hardening flags: all layers declared, the three labels right."""
    tag = template_image("tflite-mobilenet")
    stimuli = {name: read_rgb(CORAL / name) for name in LABELLED}
    info, outputs = serve_and_run(tag, stimuli, layers=["MobilenetV2/Logits/AvgPool"], behaviours=["logits"])
    assert len(info.layers) == 66 and [b.name for b in info.behaviours] == ["logits"]
    labels = (CORAL / "imagenet_labels.txt").read_text().splitlines()
    assert {name: labels[int(np.argmax(outputs["logits"][name]))] for name in LABELLED} == LABELLED
    assert outputs["MobilenetV2/Logits/AvgPool"]["cat.bmp"].shape == (1, 1, 1280)


def serve_and_run(image: str, stimuli: dict[str, np.ndarray], layers=(), behaviours=()):
    """Runs `image` as the orchestrator does (no network, read-only, no capabilities, user nobody),
    streams `stimuli` through one Run and returns (ModelInfo, {output: {stimulus id: array}}).
    The container is removed whatever happens."""
    import grpc
    from cortexbox.model.v1 import model_service_pb2 as pb
    from cortexbox.model.v1 import model_service_pb2_grpc as pb_grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    folder = Path(tempfile.mkdtemp(prefix="cortexbox-test-sock-"))
    os.chmod(folder, 0o777)
    name = f"cortexbox-test-{uuid.uuid4().hex[:8]}"
    cmd = [
        "docker",
        "run",
        "-d",
        "--name",
        name,
        "--network",
        "none",
        "--read-only",
        "--tmpfs",
        "/tmp:rw,noexec,nosuid,size=64m",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "-u",
        "65534:65534",
        "--cpus",
        "1",
        "-e",
        "CORTEXBOX_SOCKET=/run/cortexbox/model.sock",
        "-v",
        f"{folder}:/run/cortexbox",
        image,
    ]
    subprocess.run(cmd, check=True, capture_output=True)
    channel = None
    try:
        socket = folder / "model.sock"
        channel = grpc.insecure_channel(f"unix://{socket}", options=[("grpc.max_receive_message_length", 64 << 20)])
        health = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + 60
        while True:
            try:
                if (
                    health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    == health_pb2.HealthCheckResponse.SERVING
                ):
                    break
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True)
                pytest.fail(f"{image} did not become SERVING in 60 s:\n{logs.stdout}{logs.stderr}")
            time.sleep(0.1)
        stub = pb_grpc.ModelServiceStub(channel)
        info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)

        def requests():
            yield pb.RunRequest(config=pb.RunConfig(run_id="test", layers=list(layers), behaviours=list(behaviours)))
            for sid, pixels in stimuli.items():
                tensor = pb.Tensor(data_type=pb.DATA_TYPE_UINT8, shape=list(pixels.shape), data=pixels.tobytes())
                yield pb.RunRequest(stimulus=pb.Stimulus(id=sid, pixels=tensor))

        headers, buffers, summary = {}, {}, None
        for response in stub.Run(requests(), timeout=120):
            kind = response.WhichOneof("item")
            if kind == "header":
                headers[response.header.tensor_id] = response.header
                buffers[response.header.tensor_id] = bytearray(response.header.byte_size)
            elif kind == "chunk":
                chunk = response.chunk
                buffers[chunk.tensor_id][chunk.offset : chunk.offset + len(chunk.data)] = chunk.data
            elif kind == "summary":
                summary = response.summary
        assert summary is not None and summary.stimuli == len(stimuli)
        outputs: dict[str, dict[str, np.ndarray]] = {}
        for tensor_id, header in headers.items():
            assert header.data_type == pb.DATA_TYPE_FLOAT32
            array = np.frombuffer(bytes(buffers[tensor_id]), dtype="<f4").reshape(list(header.shape))
            for i, sid in enumerate(header.stimulus_ids):
                outputs.setdefault(header.name, {})[sid] = array[i]
        return info, outputs
    finally:
        if channel is not None:
            channel.close()
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def test_stage_tracker_finds_each_earlier_stage_image():
    tracker = images._StageTracker()
    for line in ["Step 1/6 : ARG BASE_IMAGE=cortexbox/base:bookworm", "Step 2/6 : FROM ${BASE_IMAGE} AS build",
                 " ---> 47f5063dcaf0", "Step 3/6 : RUN echo hi", " ---> Running in 0123456789ab", " ---> 9a23a21b9e2b",
                 "Step 4/6 : FROM ${BASE_IMAGE}", " ---> 47f5063dcaf0", "Step 5/6 : COPY --from=build /x /x",
                 " ---> Using cache", " ---> 3ce70ae91d40"]:
        tracker.feed(line)
    assert tracker.finished() == {"build": "9a23a21b9e2b"}  # the last stage is the image itself


@pytest.mark.docker
def test_rebuilding_a_multi_stage_image_leaves_no_dangling_stage(docker_client, base_image, tmp_path):
    """The legacy builder leaves each earlier stage untagged; ours are named, and a rebuild removes the one it replaced."""
    tag = f"cortexbox-test/stages-{uuid.uuid4().hex[:8]}:latest"
    stage_tag = f"cortexbox-stage/{tag.split(':')[0].replace('/', '--')}--build:latest"
    (tmp_path / "Dockerfile").write_text(
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE} AS build\nCOPY marker /marker\nRUN cat /marker > /copied\n"
        "FROM ${BASE_IMAGE}\nCOPY --from=build /copied /copied\n")

    def dangling() -> set[str]:
        return {i.id for i in docker_client.images.list(filters={"dangling": True})}

    stage_ids = []
    try:
        for marker in ("one", "two"):
            (tmp_path / "marker").write_text(marker)
            images.build_image(docker_client, tmp_path, tag, base_image=base_image, network_mode="none", log=lambda line: None)
            stage_ids.append(docker_client.images.get(stage_tag).id)
        assert stage_ids[0] != stage_ids[1]
        assert not set(stage_ids) & dangling(), "a stage image was left untagged"
        with pytest.raises(Exception):
            docker_client.images.get(stage_ids[0])  # the replaced stage is gone
    finally:
        for ref in (tag, stage_tag):
            try:
                docker_client.images.remove(ref, force=True)
            except Exception:  # noqa: BLE001
                pass
