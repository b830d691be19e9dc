"""Images travel by digest (issue 12, part 4): a real registry (Debian's docker-registry), a push from the first
engine, a pull by digest on a second engine that never had the image, a model served from it, the registry
stopped and started again under a pull, and digests that do not match refused.

The pixels template is pushed once for the module (a few hundred MB of I/O); everything else re-uses it.
"""

from __future__ import annotations

import io
import os
import secrets
import shutil
import socket
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from cortexbox.orchestrator import image_registry
from cortexbox.orchestrator.errors import UserError
from cortexbox.orchestrator.image_registry import (
    DigestMismatch,
    RegistryError,
    RegistryServer,
    RegistryUnavailable,
    ensure_image,
    fetch_manifest,
    push,
    split_reference,
)
from tests.orchestrator.test_cli import cortexbox

DIGEST = "sha256:" + "ab" * 32


# -- references and settings (no Docker) ---------------------------------------------------------
def test_references_by_digest_are_split_and_tags_refused():
    assert split_reference(f"127.0.0.1:5000/cortexbox/pixels@{DIGEST}") == ("127.0.0.1:5000", "cortexbox/pixels", DIGEST)
    assert split_reference(f"localhost:5000/pixels:latest@{DIGEST}") == ("localhost:5000", "pixels", DIGEST)
    assert split_reference(f"cortexbox/pixels@{DIGEST}") == (None, "cortexbox/pixels", DIGEST)
    for bad in ("127.0.0.1:5000/cortexbox/pixels:latest", "cortexbox/pixels", DIGEST, f"x@{DIGEST[:-1]}", f"x@{DIGEST}0"):
        assert not image_registry.is_digest_reference(bad)
        with pytest.raises(RegistryError, match="not a reference by digest"):
            split_reference(bad)


def test_the_registry_setting_reaches_its_users(monkeypatch):
    monkeypatch.delenv("CORTEXBOX_IMAGE_REGISTRY", raising=False)
    assert image_registry.configured_registry() is None
    with pytest.raises(UserError, match="no image registry is configured"):
        push(object(), "cortexbox/pixels")
    monkeypatch.setenv("CORTEXBOX_IMAGE_REGISTRY", "127.0.0.1:5999")
    assert image_registry.configured_registry() == "127.0.0.1:5999"
    monkeypatch.setenv("CORTEXBOX_IMAGE_REGISTRY", "127.0.0.1")
    with pytest.raises(RegistryError, match="not HOST:PORT"):
        image_registry.configured_registry()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_registry_server_refuses_other_interfaces_and_busy_ports(image_registry_server, tmp_path):
    with pytest.raises(RegistryError, match="loopback only"):
        RegistryServer(f"0.0.0.0:{_free_port()}", tmp_path / "a").start()
    with pytest.raises(RegistryError, match="already in use"):
        RegistryServer(image_registry_server.address, tmp_path / "b").start()
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    with pytest.raises(RegistryUnavailable, match="cannot reach the image registry"):
        fetch_manifest(f"127.0.0.1:{_free_port()}", "x", DIGEST)


def test_registry_serve_stops_on_sigterm_and_keeps_nothing_running(tmp_path):
    """`cortexbox registry serve` in the foreground: answers, and SIGTERM stops it and its process."""
    import subprocess
    import sys

    if not shutil.which("docker-registry"):
        pytest.skip("docker-registry is not installed")
    address = f"127.0.0.1:{_free_port()}"
    serve = subprocess.Popen([sys.executable, "-m", "cortexbox.orchestrator.cli", "registry", "serve", "--address", address,
                              "--data", str(tmp_path / "data")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                image_registry.ping(address)
                break
            except RegistryUnavailable:
                assert serve.poll() is None and time.monotonic() < deadline, serve.stderr.read() if serve.poll() is not None else "timeout"
                time.sleep(0.2)
        serve.terminate()
        _, stderr = serve.communicate(timeout=30)
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait(timeout=10)
    assert f"image registry on {address}" in stderr and "Traceback" not in stderr
    with pytest.raises(RegistryUnavailable):  # the registry process went with it
        image_registry.ping(address)
    assert (tmp_path / "data" / "config.yml").is_file()
    deadline = time.monotonic() + 10  # and no registry process of this config is left (terminated as it came up)
    while (left := _processes_with(str(tmp_path / "data" / "config.yml"))) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left


def _processes_with(word: str) -> list[int]:
    """Live (not zombie) processes whose command line holds `word`."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and word in (proc / "cmdline").read_bytes().decode("utf-8", "replace") \
                    and ") Z " not in (proc / "stat").read_text():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


# -- a real push and pulls on a second engine ----------------------------------------------------
@pytest.fixture(scope="module")
def pushed(docker_client, template_image, image_registry_server):
    """The pixels template pushed once to the session's registry (repository cortexbox/pixels, as models add names it)."""
    tag = template_image("pixels")
    t0 = time.perf_counter()
    image = push(docker_client, tag, registry=image_registry_server.address)
    print(f"push of {tag}: {time.perf_counter() - t0:.1f} s")
    yield image
    local_tag = f"{image_registry_server.address}/cortexbox/pixels:id-{image.image_id.split(':')[1][:40]}"
    docker_client.images.remove(local_tag)  # only our tag; the image keeps its own


def _forget_on(engine, reference: str) -> None:
    import docker.errors

    try:
        engine.client.images.remove(reference, force=True)  # the second engine is ours alone
    except docker.errors.ImageNotFound:
        pass


@pytest.mark.docker
def test_push_names_the_image_by_its_registry_digest(docker_client, pushed, image_registry_server):
    registry, repository, digest = split_reference(pushed.reference)
    assert (registry, repository, digest) == (image_registry_server.address, "cortexbox/pixels", pushed.digest)
    local = docker_client.images.get(pushed.image_id)
    assert pushed.image_id == local.id and pushed.digest != local.id
    assert pushed.reference in local.attrs["RepoDigests"]
    manifest = fetch_manifest(registry, repository, digest)
    assert manifest.config_digest == local.id and manifest.layers_bytes > 10_000_000
    t0 = time.perf_counter()
    assert push(docker_client, local.id, registry=registry, repository=repository) == pushed  # by id; same bytes, same digest
    assert time.perf_counter() - t0 < 30  # nothing to upload again


@pytest.mark.docker
def test_a_second_engine_pulls_by_digest_checks_and_serves_the_model(second_engine, pushed, docker_client):
    import docker.errors

    from cortexbox.orchestrator.runtime import ContainerSession

    engine = second_engine.client
    assert engine.info()["DockerRootDir"] != docker_client.info()["DockerRootDir"]
    # It brought a bridge of its own: the first engine's docker0 (its builds' network) is still there.
    assert os.path.exists(f"/sys/class/net/{second_engine.bridge}")
    assert os.path.exists("/sys/class/net/docker0"), "starting the second engine removed the first engine's docker0"
    _forget_on(second_engine, pushed.reference)
    with pytest.raises(docker.errors.ImageNotFound):
        engine.images.get(pushed.reference)
    t0 = time.perf_counter()
    pulled = ensure_image(engine, pushed.reference)
    print(f"pull of pixels by digest on the second engine: {time.perf_counter() - t0:.1f} s")
    assert pulled == pushed
    image = engine.images.get(pushed.reference)
    assert image.id == pushed.image_id and pushed.reference in image.attrs["RepoDigests"]
    assert ensure_image(engine, pushed.reference) == pushed  # held now: no registry needed
    # The model runs on the second engine from what it pulled: the runtime resolves the reference itself.
    session = ContainerSession(engine, pushed.reference)
    try:
        assert session.image_id == pushed.image_id
        assert session.container.attrs["Image"] == pushed.image_id
        assert engine.containers.get(session.container.id).status == "running"
        with pytest.raises(docker.errors.NotFound):
            docker_client.containers.get(session.container.id)  # not on the first engine
        layer = session.description.layers[0]
        rng = np.random.default_rng(0)
        items = [(f"s{i}", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for i in range(4)]
        result = session.client.run(session.description, items, [sid for sid, _ in items], layers=[layer], timeout_s=120)
        assert result.outputs[layer].shape[0] == 4 and np.isfinite(result.outputs[layer]).all()
        assert result.outputs[layer].std() > 0
    finally:
        session.close()


@pytest.mark.docker
@pytest.mark.slow
def test_pulls_resume_when_the_registry_is_stopped_and_started_again(second_engine, pushed, image_registry_server):
    engine = second_engine.client
    _forget_on(second_engine, pushed.reference)
    image_registry_server.stop()
    assert not image_registry_server.running
    with pytest.raises(RegistryUnavailable, match="cannot reach the image registry"):
        ensure_image(engine, pushed.reference, retry_s=0)
    done: dict = {}

    def pull() -> None:
        try:
            done["image"] = ensure_image(engine, pushed.reference, retry_s=90)
        except Exception as e:  # noqa: BLE001 - reported below
            done["error"] = e

    worker = threading.Thread(target=pull)
    worker.start()
    time.sleep(2)  # the pull is retrying against the stopped registry
    assert worker.is_alive() and not done
    image_registry_server.start()  # same storage, same port
    worker.join(timeout=180)
    assert not worker.is_alive(), "the pull did not resume"
    assert done.get("image") == pushed, done.get("error")
    assert engine.images.get(pushed.reference).id == pushed.image_id


@pytest.fixture
def tiny_image(docker_client):
    """A one-file image of our own (imported from a tarball: no build, no base), removed at the end."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        content = secrets.token_bytes(64)
        info = tarfile.TarInfo("hello")
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    tag = f"cortexbox-test/tiny-{secrets.token_hex(4)}:t"
    docker_client.api.import_image_from_data(buffer.getvalue(), repository=tag.split(":")[0], tag="t")
    image = docker_client.images.get(tag)
    yield tag
    docker_client.images.remove(image.id, force=True)


@pytest.mark.docker
def test_digests_that_do_not_match_are_refused(docker_client, second_engine, image_registry_server, tiny_image):
    import docker.errors

    engine, address = second_engine.client, image_registry_server.address
    # A digest the registry never had.
    with pytest.raises(RegistryError, match="has no image") as missing:
        ensure_image(engine, f"{address}/cortexbox/pixels@{DIGEST}")
    assert "\n" not in str(missing.value) and missing.value.hint
    # A tag is no pin.
    with pytest.raises(RegistryError, match="not a reference by digest"):
        ensure_image(engine, f"{address}/cortexbox/pixels:latest")
    # A registry whose storage was changed under a digest: refused before anything is pulled.
    pushed = push(docker_client, tiny_image, registry=address, repository="cortexbox-test/tiny")
    hexdigest = pushed.digest.split(":")[1]
    blob = Path(image_registry_server.root, "docker/registry/v2/blobs/sha256", hexdigest[:2], hexdigest, "data")
    assert blob.is_file()
    blob.write_bytes(blob.read_bytes() + b"\n")  # still a valid manifest naming the same image, other bytes
    with pytest.raises(DigestMismatch, match="bytes of digest"):
        ensure_image(engine, pushed.reference)
    with pytest.raises(docker.errors.ImageNotFound):
        engine.images.get(pushed.reference)
    # The runtime refuses it the same way, as a one-line user error, and starts nothing.
    from cortexbox.orchestrator.runtime import ContainerSession

    with pytest.raises(DigestMismatch):
        ContainerSession(engine, pushed.reference)


@pytest.mark.docker
def test_models_add_pushes_and_records_the_registry_reference(pushed, image_registry_server, tmp_path, docker_client):
    """With a registry configured, models add pushes and registers the reference by registry digest; without
    one it registers the tag as before."""
    import json

    from cortexbox.registry import Registry

    home = tmp_path / "home"
    added = cortexbox("models", "add", pushed.image_id, "--json",
                      env={"CORTEXBOX_HOME": str(home), "CORTEXBOX_IMAGE_REGISTRY": image_registry_server.address})
    assert added.returncode == 0, added.stderr
    out = json.loads(added.stdout)
    assert out == {"model": "pixels", "digest": pushed.image_id, "reference": pushed.reference, "registry_digest": pushed.digest}
    (row,) = Registry(f"sqlite:///{home / 'registry.db'}").models()
    assert (row.digest, row.image_ref) == (pushed.image_id, pushed.reference)

    plain = cortexbox("models", "add", pushed.image_id, "--json", env={"CORTEXBOX_HOME": str(tmp_path / "plain")})
    assert plain.returncode == 0, plain.stderr
    assert json.loads(plain.stdout) == {"model": "pixels", "digest": pushed.image_id}
    (row,) = Registry(f"sqlite:///{tmp_path / 'plain' / 'registry.db'}").models()
    assert row.image_ref == pushed.image_id

    down = cortexbox("models", "add", pushed.image_id,
                     env={"CORTEXBOX_HOME": str(tmp_path / "down"), "CORTEXBOX_IMAGE_REGISTRY": f"127.0.0.1:{_free_port()}"})
    assert down.returncode == 2 and "Traceback" not in down.stderr and "cannot reach the image registry" in down.stderr
    assert "hint: start it with `cortexbox registry serve`" in down.stderr


def test_registry_help_texts_are_plain():
    for command in (["registry"], ["registry", "serve"], ["registry", "push"], ["registry", "pull"]):
        result = cortexbox(*command, "--help", env={"COLUMNS": "200"})
        assert result.returncode == 0 and "Usage: cortexbox" in result.stdout, (command, result.stderr)
        assert "``" not in result.stdout and "<bool>" not in result.stdout


@pytest.mark.docker
@pytest.mark.slow
def test_a_score_on_the_second_engine_runs_the_pulled_image_and_records_the_registry_digest(
        second_engine, pushed, data_dir, tmp_path):
    """`cortexbox score` bound to the second engine (DOCKER_HOST) by reference: pulled, checked, scored; the
    score's provenance names the registry digest and the image id the registry's manifest names."""
    import json

    from cortexbox.registry import Registry

    _forget_on(second_engine, pushed.reference)
    home = tmp_path / "home"
    result = cortexbox("score", "--model", pushed.reference, "--benchmark", "Kriegeskorte2008.hIT-rdm", "--json",
                       env={"DOCKER_HOST": second_engine.host, "CORTEXBOX_HOME": str(home), "CORTEXBOX_DATA_DIR": str(data_dir)},
                       timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout)["digest"] == pushed.image_id
    assert second_engine.client.images.get(pushed.reference).id == pushed.image_id
    registry = Registry(f"sqlite:///{home / 'registry.db'}")
    ((score, model, _),) = list(registry.scores())
    assert score.provenance["registry_digest"] == pushed.digest
    assert score.provenance["image_ref"] == pushed.reference and score.provenance["image_digest"] == pushed.image_id
    assert model.image_ref == pushed.reference
    # The same bytes scored on the first engine by their local id (a container runs: --no-cache): the model keeps
    # the reference other engines pull, and this score too names the registry digest.
    again = cortexbox("score", "--model", pushed.image_id, "--benchmark", "Kriegeskorte2008.hIT-rdm", "--json", "--no-cache",
                      env={"CORTEXBOX_HOME": str(home), "CORTEXBOX_DATA_DIR": str(data_dir)}, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    scores = sorted(registry.scores(), key=lambda row: row[0].id)
    assert len(scores) == 2 and scores[1][0].provenance["image_ref"] == pushed.image_id
    assert scores[1][0].provenance["registry_digest"] == pushed.digest
    assert registry.model_by_digest(pushed.image_id).image_ref == pushed.reference
