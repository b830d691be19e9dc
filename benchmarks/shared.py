"""One benchmark instance per (identifier, data folder, cache folder), shared by everything in the process.

Sharing means a ceiling, a data hash and loaded assemblies are computed once. :func:`~.registry.get_benchmark` hands
out these instances, and so do the benchmarks that borrow another's layer-selection data (``selection_source``):
they name the lender's class directly, so this module imports no benchmark and nothing imports the registry back.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .data import configured_data_dir

__all__ = ["shared_instance"]

_instances: dict[tuple[str, Path | None, Path | None], Any] = {}
_lock = threading.RLock()  # a factory may itself ask for a shared instance


def shared_instance(
    factory: Callable[..., Any],
    identifier: str | None = None,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Any:
    """The one instance of benchmark ``identifier`` (default ``factory.identifier``) for these folders, made by
    ``factory(data_dir=..., cache_dir=...)`` the first time."""
    identifier = identifier or factory.identifier  # type: ignore[attr-defined]
    key = (identifier, configured_data_dir(data_dir), None if cache_dir is None else Path(cache_dir).resolve())
    with _lock:
        if key not in _instances:
            _instances[key] = factory(data_dir=key[1], cache_dir=key[2])
        return _instances[key]
