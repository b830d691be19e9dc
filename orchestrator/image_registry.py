"""Images travel by digest: an image registry of our own, pushes that return the registry's digest, and pulls
by digest that are checked.

A worker on another engine does not have the image it must score, and a tag can be moved under it. So a model
image goes into a registry (Debian's ``docker-registry``, the CNCF Distribution registry 2.8, run by
:class:`RegistryServer` on a loopback address) and is named from then on by its manifest digest,
``127.0.0.1:5000/cortexbox/pixels@sha256:…``. :func:`push` returns that digest; :func:`ensure_image` makes an
engine hold exactly those bytes, and checks them:

* the manifest is fetched from the registry and its bytes must hash to the digest asked for (a registry that
  serves other bytes under a digest is refused before anything is pulled);
* after ``docker pull name@digest``, the image must carry that reference in its ``RepoDigests`` and its id (the
  digest of its config) must be the config the manifest names.

The image id is what the activation cache and the registry database key a model by; the manifest digest is how
the registry names the same bytes; the second check binds the two. Air-gapped users take the same path: ``docker
load`` a tarball, then ``cortexbox models add`` pushes it into the local registry (nothing leaves the host).

Docker already treats ``127.0.0.0/8`` as an insecure (plain HTTP) registry, so no ``daemon.json`` is needed. The
registry has no authentication and no TLS, which is why :class:`RegistryServer` listens only on loopback: any
local user may push, none may change what a digest names.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import re
import secrets
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cortexbox.benchmarks.settings import settings
from cortexbox.orchestrator.errors import UserError

__all__ = [
    "DEFAULT_ADDRESS",
    "DigestMismatch",
    "Manifest",
    "RegistryError",
    "RegistryImage",
    "RegistryServer",
    "RegistryUnavailable",
    "ensure_image",
    "fetch_manifest",
    "is_digest_reference",
    "local_image",
    "push",
    "split_reference",
]

logger = logging.getLogger(__name__)

DEFAULT_ADDRESS = "127.0.0.1:5000"
#: Debian's package of the CNCF Distribution registry.
REGISTRY_BINARY = "docker-registry"
#: Distribution refuses manifests over 4 MiB; so do we, before parsing what the registry sent.
MAX_MANIFEST_BYTES = 4 << 20
_MANIFEST_TYPES = ("application/vnd.docker.distribution.manifest.v2+json", "application/vnd.oci.image.manifest.v1+json")
_LIST_TYPES = ("application/vnd.docker.distribution.manifest.list.v2+json", "application/vnd.oci.image.index.v1+json")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_REFERENCE = re.compile(r"(?P<name>[^@\s]+)@(?P<digest>sha256:[0-9a-f]{64})")
_HTTP_TIMEOUT_S = 10.0
#: No proxy for the registry: it is on loopback (or the LAN), and an http_proxy of the environment must not see it.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

Log = Callable[[str], None]


class RegistryError(UserError):
    """The registry refused, lacks what was asked, or is misconfigured (one line and a hint)."""


class RegistryUnavailable(RegistryError):
    """The registry cannot be reached right now (stopped, restarting): transient, worth retrying."""


class DigestMismatch(RegistryError):
    """Bytes that do not match the digest they were asked for: never run."""


@dataclass(frozen=True)
class Manifest:
    """A single-platform image manifest as the registry holds it, its bytes already checked against `digest`."""

    digest: str  # sha256 of the manifest's bytes: the registry digest
    media_type: str
    config_digest: str  # the image config's digest, i.e. the image id Docker gives the pulled image
    layers_bytes: int  # compressed size of the layers, what a pull transfers at most


@dataclass(frozen=True)
class RegistryImage:
    """An image in a registry, named by digest."""

    reference: str  # e.g. "127.0.0.1:5000/cortexbox/pixels@sha256:…", what workers pull and run
    digest: str  # the registry (manifest) digest
    image_id: str  # the config digest: the local image id on every engine that holds it

    @property
    def registry(self) -> str | None:
        return split_reference(self.reference)[0]

    @property
    def repository(self) -> str:
        return split_reference(self.reference)[1]


# -- references ----------------------------------------------------------------------------------
def _is_registry_host(component: str) -> bool:
    """Docker's rule: a first path component with a dot or a port, or ``localhost``, names a registry."""
    return "." in component or ":" in component or component == "localhost"


def is_digest_reference(image: str) -> bool:
    """Whether `image` is ``name@sha256:<64 hex>`` (tags and image ids are not)."""
    return _REFERENCE.fullmatch(image.strip()) is not None


def split_reference(reference: str) -> tuple[str | None, str, str]:
    """``(registry, repository, digest)`` of a digest reference; registry is None when the name has none.

    Raises
    ------
    RegistryError
        `reference` is a tag or an id, not ``name@sha256:…``.
    """
    match = _REFERENCE.fullmatch(reference.strip())
    if match is None:
        raise RegistryError(f"{reference!r} is not a reference by digest (name@sha256:<64 hex digits>)",
                            "workers pull images by digest only; `cortexbox models add IMAGE` prints one")
    name = re.sub(r":[^/]*$", "", match["name"])  # a tag before the digest (name:tag@sha256:…) is ignored, as Docker does
    first, _, rest = name.partition("/")
    if rest and _is_registry_host(first):
        return first, rest, match["digest"]
    return None, name, match["digest"]


def _repository_for(image: str, tags: list[str]) -> str:
    """The repository an image is pushed under: its name without registry and tag, else its first tag's."""
    names = [image] if not (_DIGEST.fullmatch(image) or re.fullmatch(r"[0-9a-f]{12,64}", image)) else list(tags)
    for name in names:
        name = name.split("@", 1)[0]
        first, _, rest = name.partition("/")
        if rest and _is_registry_host(first):
            name = rest
        name = re.sub(r":[^/]*$", "", name)
        if re.fullmatch(r"[a-z0-9]+(?:[._-]+[a-z0-9]+)*(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*", name):
            return name
    return "models/untagged"


def _check_address(address: str) -> tuple[str, int]:
    host, sep, port = address.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RegistryError(f"image registry address {address!r} is not HOST:PORT",
                            "write e.g. CORTEXBOX_IMAGE_REGISTRY=127.0.0.1:5000")
    return host.strip("[]"), int(port)


def configured_registry() -> str | None:
    """The registry of ``$CORTEXBOX_IMAGE_REGISTRY`` (host:port), or None: models stay on their engine, as before."""
    address = settings().image_registry
    if address:
        _check_address(address)
    return address


# -- the registry's HTTP API ---------------------------------------------------------------------
def _get(url: str, *, accept: str = "", limit: int = MAX_MANIFEST_BYTES) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with _OPENER.open(request, timeout=_HTTP_TIMEOUT_S) as response:
            body = response.read(limit + 1)
            return response.status, dict(response.headers), body
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers or {}), e.read(64 << 10)
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise RegistryUnavailable(f"cannot reach the image registry at {url.split('/v2/')[0]} ({reason})",
                                  "start it with `cortexbox registry serve`, or unset CORTEXBOX_IMAGE_REGISTRY") from None


def ping(address: str) -> None:
    """Raises RegistryUnavailable unless a Distribution registry answers at `address`."""
    status, headers, _ = _get(f"http://{address}/v2/", limit=4096)
    if status != 200 or "registry/2.0" not in {k.lower(): v for k, v in headers.items()}.get("docker-distribution-api-version", ""):
        raise RegistryUnavailable(f"no image registry answers at {address} (HTTP {status})",
                                  "start one with `cortexbox registry serve`, or check CORTEXBOX_IMAGE_REGISTRY")


def fetch_manifest(address: str, repository: str, digest: str) -> Manifest:
    """The manifest `digest` of `repository`, after checking that its bytes hash to `digest`.

    Raises
    ------
    RegistryUnavailable
        The registry cannot be reached, or answered with a server error.
    RegistryError
        It has no such manifest, or it is a multi-platform list, or not a manifest at all.
    DigestMismatch
        It served bytes that do not hash to `digest`.
    """
    url = f"http://{address}/v2/{repository}/manifests/{digest}"
    status, headers, body = _get(url, accept=", ".join(_MANIFEST_TYPES + _LIST_TYPES))
    if status >= 500:
        raise RegistryUnavailable(f"the image registry at {address} failed (HTTP {status}) on {repository}@{digest[:19]}",
                                  "see the registry's log; retry once it is healthy")
    if status == 404:
        raise RegistryError(f"the image registry at {address} has no image {repository}@{digest}",
                            "push it first (`cortexbox models add IMAGE`), and check the digest")
    if status != 200:
        raise RegistryError(f"the image registry at {address} refused {repository}@{digest[:19]} (HTTP {status})",
                            "check the registry's configuration")
    if len(body) > MAX_MANIFEST_BYTES:
        raise RegistryError(f"the manifest of {repository}@{digest[:19]} is over {MAX_MANIFEST_BYTES} bytes", "not an image of ours")
    actual = "sha256:" + hashlib.sha256(body).hexdigest()
    if actual != digest:
        raise DigestMismatch(f"the image registry at {address} served {repository}@{digest[:19]} with bytes of digest {actual[:19]}",
                             "its storage was changed or is corrupt: nothing was pulled; push the image again")
    try:
        doc = json.loads(body)
        media_type = doc.get("mediaType") or headers.get("Content-Type", "")
        if media_type in _LIST_TYPES:
            raise RegistryError(f"{repository}@{digest[:19]} is a multi-platform list, not one image",
                                "push a single-platform image (what `docker push` of a local image makes)")
        config = doc["config"]["digest"]
        layers = sum(int(layer["size"]) for layer in doc["layers"])
    except (ValueError, KeyError, TypeError, AttributeError):
        raise RegistryError(f"{repository}@{digest[:19]} is not an image manifest", "push the image with docker push") from None
    if not isinstance(config, str) or not _DIGEST.fullmatch(config):
        raise RegistryError(f"{repository}@{digest[:19]} names no sha256 image config", "push the image with docker push")
    return Manifest(digest=digest, media_type=media_type, config_digest=config, layers_bytes=layers)


# -- push ----------------------------------------------------------------------------------------
def _docker_stream_error(event: dict) -> str | None:
    if not isinstance(event, dict):
        return None
    error = event.get("error") or (event.get("errorDetail") or {}).get("message")
    return str(error)[:500] if error else None


def _unavailable(message: str) -> bool:
    return any(s in message for s in ("connection refused", "connection reset", "no such host", "i/o timeout", "EOF",
                                      "503 Service Unavailable", "502 Bad Gateway"))


def push(client, image: str, *, registry: str | None = None, repository: str | None = None, log: Log = logger.info) -> RegistryImage:
    """Pushes the local image `image` (tag or id) to `registry` (default ``$CORTEXBOX_IMAGE_REGISTRY``) and returns
    it named by the registry's digest.

    It is tagged ``REGISTRY/REPOSITORY:id-<image id>`` on the engine (a tag that names its content, so pushing
    the same image again is a no-op and concurrent pushes of different images never fight over one tag), pushed,
    and the manifest the registry then holds under the returned digest is checked to name this image's config.

    Raises
    ------
    UserError
        No registry configured, no such image on the engine.
    RegistryUnavailable
        The registry cannot be reached.
    RegistryError, DigestMismatch
        The push failed, or the registry does not hold this image under the digest Docker reported.
    """
    import docker.errors

    registry = registry or configured_registry()
    if not registry:
        raise UserError("no image registry is configured", "set CORTEXBOX_IMAGE_REGISTRY=127.0.0.1:5000 and run `cortexbox registry serve`")
    _check_address(registry)
    try:
        local = client.images.get(image)
    except docker.errors.ImageNotFound:
        raise UserError(f"no Docker image {image!r} on this machine",
                        "build one with `cortexbox image build <project dir>`, `docker load` a tarball, or list them with `docker images`") from None
    ping(registry)
    repository = repository or _repository_for(image, list(local.tags))
    target, tag = f"{registry}/{repository}", "id-" + local.id.split(":", 1)[1][:40]
    local.tag(target, tag=tag)
    t0 = time.perf_counter()
    digest = None
    for event in client.api.push(target, tag=tag, stream=True, decode=True):
        error = _docker_stream_error(event)
        if error:
            cls = RegistryUnavailable if _unavailable(error) else RegistryError
            raise cls(f"pushing {image} to {registry} failed: {error}", "see `docker info` and the registry's log")
        aux = event.get("aux") if isinstance(event, dict) else None
        if isinstance(aux, dict) and _DIGEST.fullmatch(str(aux.get("Digest", ""))):
            digest = aux["Digest"]
    if digest is None:
        raise RegistryError(f"pushing {image} to {registry} reported no digest", "see the Docker engine's log")
    manifest = fetch_manifest(registry, repository, digest)
    if manifest.config_digest != local.id:
        raise DigestMismatch(f"{registry} holds {repository}@{digest[:19]} as image {manifest.config_digest[:19]}, "
                             f"not the pushed {local.id[:19]}", "another writer raced this push; push again")
    log(f"pushed {image} as {target}@{digest} ({manifest.layers_bytes / 1e6:.0f} MB compressed, {time.perf_counter() - t0:.1f} s)")
    return RegistryImage(reference=f"{target}@{digest}", digest=digest, image_id=local.id)


# -- pull by digest ------------------------------------------------------------------------------
def _held(client, reference: str):
    """The engine's image for `reference` when the engine itself records having pulled or pushed it by that digest."""
    import docker.errors

    try:
        image = client.images.get(reference)
    except docker.errors.ImageNotFound:
        return None
    return image if reference in (image.attrs.get("RepoDigests") or []) else None


def _pull(client, registry: str, repository: str, digest: str) -> None:
    import docker.errors

    try:
        for event in client.api.pull(f"{registry}/{repository}", tag=digest, stream=True, decode=True):
            error = _docker_stream_error(event)
            if error:
                cls = RegistryUnavailable if _unavailable(error) else RegistryError
                raise cls(f"pulling {registry}/{repository}@{digest[:19]} failed: {error}", "see the registry's log")
    except docker.errors.APIError as e:
        message = str(e.explanation or e)[:500]
        cls = RegistryUnavailable if _unavailable(message) else RegistryError
        raise cls(f"pulling {registry}/{repository}@{digest[:19]} failed: {message}", "see the registry's log") from None


def ensure_image(client, reference: str, *, retry_s: float = 30.0, log: Log = logger.info) -> RegistryImage:
    """Makes the engine of `client` hold the image ``REGISTRY/REPO@sha256:…`` and returns it, checked.

    An engine that already records the reference (it pulled or pushed those bytes) is used as is, without the
    registry. Otherwise the manifest is fetched and checked against the digest, the image pulled by digest, and
    the result checked: the reference is in its ``RepoDigests`` and its id is the manifest's config. While the
    registry cannot be reached (stopped, restarting) it is retried with backoff for up to `retry_s` seconds.

    Raises
    ------
    RegistryError
        Not a digest reference; a reference without a registry that the engine lacks; no such image in the registry.
    RegistryUnavailable
        The registry stayed unreachable for `retry_s`.
    DigestMismatch
        The registry's bytes or the pulled image do not match the digest (the pulled reference is removed again).
    """
    registry, repository, digest = split_reference(reference)
    reference = reference.strip()
    held = _held(client, reference)
    if held is not None:
        return RegistryImage(reference=reference, digest=digest, image_id=held.id)
    if registry is None:
        raise RegistryError(f"no Docker image {reference!r} on this engine, and the reference names no registry",
                            "pull by a reference that names our registry, e.g. 127.0.0.1:5000/NAME@sha256:…")
    deadline = time.monotonic() + retry_s
    delay = 0.5
    t0 = time.perf_counter()
    while True:
        try:
            manifest = fetch_manifest(registry, repository, digest)
            _pull(client, registry, repository, digest)
            break
        except RegistryUnavailable:
            if time.monotonic() + delay > deadline:
                raise
            log(f"image registry {registry} unreachable, retrying in {delay:.1f} s")
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
    pulled = _held(client, reference)
    image = pulled
    if image is None:
        import docker.errors

        try:
            image = client.images.get(reference)
        except docker.errors.ImageNotFound:
            raise RegistryError(f"the engine reports no image {reference} after pulling it", "see the Docker engine's log") from None
    if pulled is None or image.id != manifest.config_digest:
        _forget(client, reference)
        raise DigestMismatch(f"the image pulled as {reference} is {image.id[:19]}, but the registry's manifest names "
                             f"{manifest.config_digest[:19]}", "the engine or the registry is corrupt: nothing was run")
    log(f"pulled {reference} ({manifest.layers_bytes / 1e6:.0f} MB compressed, {time.perf_counter() - t0:.1f} s)")
    return RegistryImage(reference=reference, digest=digest, image_id=image.id)


def _forget(client, reference: str) -> None:
    """Drops the reference a failed check pulled, so that nothing runs it by that name."""
    try:
        client.images.remove(reference)
    except Exception as e:  # noqa: BLE001 - the check's error is the one to report
        logger.warning("could not remove %s after a failed check: %s", reference, e)


def local_image(client, image: str):
    """The engine's image for `image` (a tag, an id or a reference by digest), pulling and checking a reference
    by digest that names a registry when the engine lacks it (:func:`ensure_image`). What a scoring job calls
    before it starts a container, so a worker on another engine runs exactly the registered bytes.

    Raises
    ------
    UserError
        No such image (with a hint), or any RegistryError of :func:`ensure_image`.
    """
    import docker.errors

    if is_digest_reference(image):
        ensure_image(client, image)
    try:
        return client.images.get(image)
    except docker.errors.ImageNotFound:
        raise UserError(
            f"no Docker image {image!r} on this machine",
            "build one with `cortexbox image build <project dir>` or list them with `docker images`",
        ) from None


# -- the registry process ------------------------------------------------------------------------
def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class RegistryServer:
    """A ``docker-registry`` process of ours: storage in `root` (default ``$CORTEXBOX_HOME/registry-data``), listening
    on the loopback `address` only (it has no authentication), deletes off (a digest, once pushed, stays).

    Its HTTP secret is kept in `root`, so an upload in flight survives a restart. Used by ``cortexbox registry
    serve`` and by the tests; as a context manager it stops the process on exit.
    """

    def __init__(self, address: str = DEFAULT_ADDRESS, root: str | Path | None = None, binary: str = REGISTRY_BINARY):
        self.address = address
        self.root = Path(root) if root is not None else settings().home / "registry-data"
        self.binary = binary
        self.process: subprocess.Popen | None = None

    @property
    def log_path(self) -> Path:
        return self.root / "registry.log"

    def _config(self) -> Path:
        secret_file = self.root / "http-secret"
        if not secret_file.exists():
            secret_file.write_text(secrets.token_hex(32) + "\n")
            secret_file.chmod(0o600)
        config = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(self.root)}, "delete": {"enabled": False}},
            "http": {"addr": self.address, "secret": secret_file.read_text().strip(),
                     "headers": {"X-Content-Type-Options": ["nosniff"]}},
        }
        path = self.root / "config.yml"
        path.write_text(json.dumps(config, indent=1) + "\n")  # YAML 1.2 reads JSON
        path.chmod(0o600)
        return path

    def log_tail(self, size: int = 2000) -> str:
        try:
            return self.log_path.read_bytes()[-size:].decode("utf-8", "replace").strip()
        except OSError:
            return ""

    def start(self, timeout_s: float = 30.0) -> "RegistryServer":
        """Starts the process and waits (at most `timeout_s`) until it answers.

        Raises
        ------
        RegistryError
            Not installed, a non-loopback or busy address, or the process exited or did not answer in time.
        """
        if self.process is not None and self.process.poll() is None:
            return self
        host, port = _check_address(self.address)
        if not _loopback(host):
            raise RegistryError(f"the image registry listens on loopback only, not {host}",
                                "it has no authentication; give 127.0.0.1:PORT (workers elsewhere need TLS and auth in front)")
        binary = shutil.which(self.binary)
        if binary is None:
            raise RegistryError(f"{self.binary} is not installed", "apt-get install docker-registry (scripts/setup.sh does)")
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Go's listener: TIME_WAIT of our last run is no user
            try:
                probe.bind((host if host != "localhost" else "127.0.0.1", port))
                probe.listen(1)
            except OSError:
                raise RegistryError(f"{self.address} is already in use",
                                    "another registry may be running there; pick another port, e.g. --address 127.0.0.1:5001") from None
        self.root.mkdir(parents=True, exist_ok=True)
        config = self._config()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([binary, "serve", str(config)], stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_until_answering(timeout_s)
        except BaseException:  # also Ctrl-C or SIGTERM while waiting: the process is ours to stop
            self.stop()
            raise
        return self

    def _wait_until_answering(self, timeout_s: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise RegistryError(f"the image registry exited at start (code {self.process.returncode}): {self.log_tail(300)}",
                                    f"see {self.log_path}")
            try:
                ping(self.address)
                return
            except RegistryUnavailable:
                if time.monotonic() > deadline:
                    raise RegistryError(f"the image registry did not answer on {self.address} within {timeout_s:.0f} s",
                                        f"see {self.log_path}") from None
                time.sleep(0.1)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stops the process: SIGTERM, then SIGKILL after `timeout_s`."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout_s)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> "RegistryServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def serve(address: str = DEFAULT_ADDRESS, root: str | Path | None = None, log: Log = logger.info) -> None:
    """Runs the registry in the foreground until it exits or the process is interrupted (Ctrl-C, SIGTERM)."""
    server = RegistryServer(address, root)
    log(f"image registry on {address}, storage {server.root} (Ctrl-C stops it)")
    try:
        server.start()
        assert server.process is not None
        code = server.process.wait()
        if code:
            raise RegistryError(f"the image registry exited with code {code}: {server.log_tail(300)}", f"see {server.log_path}")
    finally:
        server.stop()
