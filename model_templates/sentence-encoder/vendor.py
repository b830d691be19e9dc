"""Fills vendor/ with the --no-deps wheels listed in vendor.txt (PyPI, through pip; sha256-checked).

Run once before building the image (`python model_templates/<template>/vendor.py`); downloads are cached in
$CORTEXBOX_WHEELHOUSE/nodeps (default ~/.cache/cortexbox/wheelhouse/nodeps), so later runs need no network.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def cache_dir() -> Path:
    base = os.environ.get("CORTEXBOX_WHEELHOUSE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cortexbox" / "wheelhouse"
    return Path(base) / "nodeps"


def pinned() -> list[tuple[str, str]]:
    out = []
    for line in (HERE / "vendor.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement, digest = line.split()
            out.append((requirement, digest.removeprefix("sha256=")))
    return out


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def main() -> int:
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    vendor = HERE / "vendor"
    vendor.mkdir(exist_ok=True)
    for requirement, digest in pinned():
        name, version = requirement.split("==")
        stem = f"{name.replace('-', '_')}-{version}-"
        found = [p for p in cache.glob(f"{stem}*.whl") if sha256(p) == digest]
        if not found:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
                 "-d", str(cache), requirement],
                check=True,
            )
            found = [p for p in cache.glob(f"{stem}*.whl") if sha256(p) == digest]
        if not found:
            print(f"{requirement}: no wheel with sha256 {digest} in {cache}", file=sys.stderr)
            return 1
        target = vendor / found[0].name
        if not target.exists() or sha256(target) != digest:
            shutil.copyfile(found[0], target)
        print(f"vendor/{target.name} ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
