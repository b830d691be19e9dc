"""Image tarballs (``docker save``) from strangers, checked before any of their bytes reach the engine.

``receive`` streams an upload to disk with a running count and stops past the cap (nothing is buffered whole).
``check_archive`` reads only the tar headers, manifest.json and the image config: exactly one image, a sane
manifest (one entry; config and layers are regular files inside the archive), names that are relative with no
``..``, links that stay inside the archive, no device files or FIFOs, a bounded number of entries and layers, a
bounded unpacked size (compressed layers are decompressed and counted, never stored). ``load_stream`` then hands
the engine the same archive without its tags (``RepoTags`` and the ``repositories`` file), so that an upload can
never re-point a tag of this host (``cortexbox/base``, another team's image) at its own bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import posixpath
import tarfile
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cortexbox.orchestrator.budgets import parse_size
from cortexbox.orchestrator.errors import UserError

#: Defaults of a competition's caps (its spec may lower or raise them).
MAX_UPLOAD_BYTES = 4 * 1024**3
MAX_UNPACKED_BYTES = 8 * 1024**3
MAX_LAYERS = 64
MAX_ENTRIES = 10_000
#: manifest.json and the config are read into memory: they must be small.
MAX_JSON_BYTES = 1024**2
CHUNK = 1024**2


class ArchiveRejected(UserError):
    """The tarball is not one sane image: HTTP 400, nothing stored."""


class UploadTooLarge(UserError):
    """Past the upload cap: HTTP 413, nothing stored."""


@dataclass(frozen=True)
class Limits:
    upload_bytes: int = MAX_UPLOAD_BYTES
    unpacked_bytes: int = MAX_UNPACKED_BYTES
    layers: int = MAX_LAYERS
    entries: int = MAX_ENTRIES

    @classmethod
    def from_spec(cls, spec: dict) -> Limits:
        """A competition's ``limits`` ({"upload": "2g", "unpacked": "6g", "layers": 64}), defaults for the rest."""
        limits = spec.get("limits") or {}
        return cls(
            upload_bytes=parse_size(str(limits.get("upload", MAX_UPLOAD_BYTES))),
            unpacked_bytes=parse_size(str(limits.get("unpacked", MAX_UNPACKED_BYTES))),
            layers=int(limits.get("layers", MAX_LAYERS)),
            entries=int(limits.get("entries", MAX_ENTRIES)),
        )


@dataclass
class ArchiveInfo:
    """What the checked archive holds: its image id (sha256 of its config: the id the engine will give it)."""

    image_id: str
    config: str
    layers: list[str]
    repo_tags: list[str]
    upload_bytes: int
    unpacked_bytes: int
    dropped: list[str] = field(default_factory=list)  # entries not sent to the engine (tags)
    #: sha256 of the config's ordered rootfs diff_ids: the image's filesystem, whatever its config (labels, ENV, CMD)
    #: says. The engine checks every layer against its diff_id on load, so once loaded it names these very bytes.
    layers_digest: str | None = None


async def receive(chunks: AsyncIterator[bytes], dest: Path, cap: int) -> int:
    """Writes the streamed body to ``dest`` and returns its size; past ``cap`` bytes, stops reading, removes the
    file and raises UploadTooLarge."""
    size = 0
    try:
        with open(dest, "wb") as f:
            async for chunk in chunks:
                size += len(chunk)
                if size > cap:
                    raise UploadTooLarge(f"the upload is larger than this competition's cap of {cap} bytes",
                                         "make the image smaller (fewer, smaller layers)")
                f.write(chunk)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return size


def _safe_name(name: str) -> str:
    if not name or "\x00" in name or name.startswith("/") or "\\" in name:
        raise ArchiveRejected(f"the archive holds an entry with an unsafe name ({name[:80]!r})", "use `docker save`")
    norm = posixpath.normpath(name)
    if norm == ".." or norm.startswith("../") or "/../" in f"/{name}/":
        raise ArchiveRejected(f"the archive holds an entry outside itself ({name[:80]!r})", "use `docker save`")
    return norm


def _read_json(tar: tarfile.TarFile, member: tarfile.TarInfo, what: str):
    if member.size > MAX_JSON_BYTES:
        raise ArchiveRejected(f"{what} is {member.size} bytes, more than {MAX_JSON_BYTES}", "use `docker save`")
    f = tar.extractfile(member)
    try:
        return json.loads(f.read()) if f is not None else None
    except ValueError:
        raise ArchiveRejected(f"{what} is not JSON", "use `docker save`") from None


def _unpacked_size(tar: tarfile.TarFile, member: tarfile.TarInfo, budget: int) -> int:
    """The layer's size once decompressed (gzip), counted in chunks and never more than ``budget`` + 1 chunk."""
    f = tar.extractfile(member)
    head = f.read(2)
    if head != b"\x1f\x8b":
        return member.size
    f.seek(0)
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    total = 0
    try:
        while chunk := f.read(CHUNK):
            total += len(inflate.decompress(chunk, CHUNK))
            while inflate.unconsumed_tail:
                total += len(inflate.decompress(inflate.unconsumed_tail, CHUNK))
                if total > budget:
                    return total
            if total > budget:
                return total
    except (zlib.error, gzip.BadGzipFile):
        raise ArchiveRejected(f"layer {member.name!r} is not a valid gzip stream", "use `docker save`") from None
    return total


def check_archive(path: Path, limits: Limits = Limits()) -> ArchiveInfo:
    """Checks the tarball at ``path`` (module docstring) and returns what it holds; ArchiveRejected otherwise."""
    try:
        tar = tarfile.open(path, "r:")  # plain tar only: `docker save` writes no compressed archive
    except (tarfile.TarError, OSError):
        raise ArchiveRejected("the upload is not a tar archive", "send the output of `docker save IMAGE`") from None
    with tar:
        members: dict[str, tarfile.TarInfo] = {}
        try:
            for member in tar:
                if len(members) >= limits.entries:
                    raise ArchiveRejected(f"the archive has more than {limits.entries} entries", "use `docker save`")
                name = _safe_name(member.name)
                if member.isdev() or member.isfifo():
                    raise ArchiveRejected(f"the archive holds a device file or FIFO ({name[:80]!r})", "use `docker save`")
                if member.issym() or member.islnk():
                    target = member.linkname
                    resolved = _safe_name(posixpath.join(posixpath.dirname(name), target) if member.issym() else target)
                    if target.startswith("/"):
                        raise ArchiveRejected(f"link {name[:80]!r} points outside the archive", "use `docker save`")
                    member = tarfile.TarInfo(name)  # keep the entry, resolved below
                    member.type, member.linkname = tarfile.SYMTYPE, resolved
                elif not (member.isfile() or member.isdir()):
                    raise ArchiveRejected(f"the archive holds an entry of an unknown kind ({name[:80]!r})", "use `docker save`")
                if name in members:
                    raise ArchiveRejected(f"the archive holds {name[:80]!r} twice", "use `docker save`")
                members[name] = member
        except tarfile.TarError as e:
            raise ArchiveRejected(f"the tar archive is damaged ({e})", "send the output of `docker save IMAGE`") from None

        def regular(name: object, what: str) -> tarfile.TarInfo:
            if not isinstance(name, str):
                raise ArchiveRejected(f"manifest.json: {what} is not a path", "use `docker save`")
            norm, seen = _safe_name(name), 0
            while norm in members and members[norm].issym() and seen < 8:
                norm, seen = members[norm].linkname, seen + 1
            member = members.get(norm)
            if member is None or not member.isfile():
                raise ArchiveRejected(f"manifest.json: {what} {name[:80]!r} is not a file in the archive", "use `docker save`")
            return member

        if "manifest.json" not in members or not members["manifest.json"].isfile():
            raise ArchiveRejected("the archive has no manifest.json", "send the output of `docker save IMAGE` (one image)")
        manifest = _read_json(tar, members["manifest.json"], "manifest.json")
        if not isinstance(manifest, list) or len(manifest) != 1 or not isinstance(manifest[0], dict):
            count = len(manifest) if isinstance(manifest, list) else "no list of"
            raise ArchiveRejected(f"the archive must hold exactly one image; its manifest.json lists {count} image(s)",
                                  "save one image: `docker save IMAGE > image.tar`")
        entry = manifest[0]
        config_member = regular(entry.get("Config"), "Config")
        layers = entry.get("Layers")
        if not isinstance(layers, list) or not layers:
            raise ArchiveRejected("manifest.json: the image has no layers", "use `docker save`")
        if len(layers) > limits.layers:
            raise ArchiveRejected(f"the image has {len(layers)} layers, more than {limits.layers}",
                                  "squash layers (fewer RUN/COPY steps)")
        layer_members = [regular(layer, "layer") for layer in layers]
        config = _read_json(tar, config_member, "the image config")
        diff_ids = (config.get("rootfs") or {}).get("diff_ids") if isinstance(config, dict) else None
        if not isinstance(diff_ids, list) or len(diff_ids) != len(layers):
            raise ArchiveRejected("the image config's rootfs does not match its layers", "use `docker save`")
        f = tar.extractfile(config_member)
        image_id = "sha256:" + hashlib.sha256(f.read()).hexdigest()
        unpacked = sum(m.size for m in members.values() if m.isfile())
        if unpacked > limits.unpacked_bytes:
            raise ArchiveRejected(f"the archive unpacks to {unpacked} bytes, more than {limits.unpacked_bytes}",
                                  "make the image smaller")
        for member in layer_members:
            budget = limits.unpacked_bytes - unpacked + member.size
            size = _unpacked_size(tar, member, budget)
            unpacked += size - member.size
            if unpacked > limits.unpacked_bytes:
                raise ArchiveRejected(f"the image's layers unpack to more than {limits.unpacked_bytes} bytes",
                                      "make the image smaller")
        tags = entry.get("RepoTags") or []
        return ArchiveInfo(image_id=image_id, config=config_member.name, layers=[m.name for m in layer_members],
                           repo_tags=[str(t)[:200] for t in tags] if isinstance(tags, list) else [],
                           upload_bytes=path.stat().st_size, unpacked_bytes=unpacked,
                           dropped=[n for n in ("repositories",) if n in members],
                           layers_digest=layers_digest(diff_ids))


def layers_digest(diff_ids: list) -> str:
    """The filesystem's fingerprint: sha256 of the ordered diff_ids, one a line."""
    return "sha256:" + hashlib.sha256("\n".join(str(d) for d in diff_ids).encode()).hexdigest()


def load_stream(path: Path) -> Iterator[bytes]:
    """The archive as the engine should load it: every entry as it is, but manifest.json without ``RepoTags`` and
    no ``repositories`` file; streamed in 1 MiB pieces (call only after ``check_archive``)."""
    with tarfile.open(path, "r:") as tar:
        for member in tar:
            if member.name == "repositories":
                continue
            if member.name == "manifest.json":
                manifest = json.loads(tar.extractfile(member).read())
                manifest[0]["RepoTags"] = None
                data = json.dumps(manifest).encode()
                info = tarfile.TarInfo("manifest.json")
                info.size, info.mode, info.mtime = len(data), 0o644, member.mtime
                yield info.tobuf(tarfile.PAX_FORMAT)
                yield data + b"\0" * (-len(data) % tarfile.BLOCKSIZE)
                continue
            yield member.tobuf(tarfile.PAX_FORMAT)
            if member.isfile():
                f = tar.extractfile(member)
                while chunk := f.read(CHUNK):
                    yield chunk
                yield b"\0" * (-member.size % tarfile.BLOCKSIZE)
    yield b"\0" * (2 * tarfile.BLOCKSIZE)
