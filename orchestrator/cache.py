"""Activations already computed, on disk, so that scoring a model again does not rerun it.

An entry is keyed by everything that determines the numbers: the image digest, the stimulus
set's hash, the layer and the placement on screen. Entries are written atomically (a temp
file renamed into place), so a killed run never leaves a half-written entry behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class CacheKey:
    image_digest: str
    stimulus_set_hash: str
    output: str
    placement: str

    def digest(self) -> str:
        text = json.dumps(self.__dict__, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


def default_cache_dir() -> Path:
    home = Path(os.environ.get("CORTEXBOX_HOME") or Path.home() / ".cortexbox")
    return home / "activations"


class ActivationCache:
    def __init__(self, root: Path | None = None):
        self.root = Path(root or default_cache_dir())

    def _path(self, key: CacheKey) -> Path:
        d = key.digest()
        return self.root / d[:2] / f"{d}.npy"

    def get(self, key: CacheKey, stimulus_ids: list[str]) -> np.ndarray | None:
        """The cached (stimuli x features) array, or None. The stored ids must match."""
        path = self._path(key)
        meta = path.with_suffix(".json")
        if not path.exists() or not meta.exists():
            return None
        try:
            if json.loads(meta.read_text()).get("stimulus_ids") != stimulus_ids:
                return None
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return None  # unreadable: recompute rather than fail

    def put(self, key: CacheKey, stimulus_ids: list[str], values: np.ndarray) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"key": key.__dict__, "stimulus_ids": stimulus_ids, "shape": list(values.shape)}
        for target, write in (
            (path, lambda f: np.save(f, values, allow_pickle=False)),
            (path.with_suffix(".json"), lambda f: f.write(json.dumps(meta).encode())),
        ):
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as f:
                    write(f)
                os.replace(tmp, target)
            except BaseException:
                os.unlink(tmp)
                raise
