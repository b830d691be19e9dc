"""Shared helpers of the community tests: small hand-made `docker save` archives (good and bad), accounts and
teams, and a competition spec."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cortexbox.orchestrator.community.accounts import add_team, add_user, join_team


def _add(tar: tarfile.TarFile, name: str, data: bytes, **fields) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in fields.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data))


def layer_bytes(files: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in (files or {"hello.txt": b"hello\n"}).items():
            _add(tar, name, data)
    return buffer.getvalue()


def image_archive(path: Path, *, manifest=None, layers: int = 1, extra=None, config=None, tags=("evil/base:latest",),
                  layer_data: bytes | None = None) -> Path:
    """A `docker save`-shaped archive; ``manifest``/``config`` replace the right ones; ``extra`` is a callback
    (tar) adding entries."""
    layer = layer_data if layer_data is not None else layer_bytes()
    diff = "sha256:" + hashlib.sha256(layer).hexdigest()
    cfg = config if config is not None else {"architecture": "amd64", "os": "linux", "config": {},
                                              "rootfs": {"type": "layers", "diff_ids": [diff] * layers}}
    cfg_bytes = json.dumps(cfg).encode()
    cfg_name = hashlib.sha256(cfg_bytes).hexdigest() + ".json"
    names = [f"l{i}/layer.tar" for i in range(layers)]
    entry = {"Config": cfg_name, "RepoTags": list(tags), "Layers": names}
    with tarfile.open(path, "w") as tar:
        _add(tar, cfg_name, cfg_bytes)
        for name in names:
            _add(tar, name, layer)
        _add(tar, "manifest.json", json.dumps(manifest if manifest is not None else [entry]).encode())
        if extra:
            extra(tar)
    return path


def spec(slug: str = "comp", *, quota: int = 2, closes_in: timedelta = timedelta(days=7), limits=None,
         public=("Kriegeskorte2008.hIT-rdm",), private=("Kriegeskorte2008.judgements-rdm",)) -> dict:
    now = datetime.now(timezone.utc)
    return {"slug": slug, "title": f"Competition {slug}", "quota_per_day": quota, "limits": limits or {},
            "tracks": [{"name": "it", "visibility": "public", "benchmarks": {"IT": list(public)}},
                       {"name": "heldout", "visibility": "private", "benchmarks": list(private)}],
            "phases": [{"name": "main", "opens": (now - timedelta(days=1)).isoformat(),
                        "closes": (now + closes_in).isoformat()}]}


def people(registry) -> dict[str, str]:
    """An admin (organiser) and two teams of one member each, plus a user without a team; their tokens."""
    tokens = {}
    for name, admin in (("org", True), ("alice", False), ("bob", False), ("eve", False), ("carol", False)):
        tokens[name] = add_user(registry, name, admin=admin)[1]
    add_team(registry, "red", "alice")
    add_team(registry, "blue", "bob")
    join_team(registry, "red", "carol")
    return tokens


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
