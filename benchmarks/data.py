"""Where benchmark data lives, and content hashes of the files a benchmark is defined by.

Data is read in place, never copied into the repository. The directory is, in order: the ``data_dir`` argument,
the environment variable ``CORTEXBOX_DATA_DIR``, or ``../shared/data`` from the current directory when it exists
(the layout of a checkout next to the shared data folder); see :mod:`.settings`. Without any, reading data raises
:class:`DataNotFoundError` naming the variable; benchmarks can still be made and described.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from .errors import UserError
from .settings import settings

__all__ = ["DATA_DIR_ENV", "DataNotFoundError", "configured_data_dir", "files_hash", "resolve_data_dir", "sha256_file"]

DATA_DIR_ENV = "CORTEXBOX_DATA_DIR"


class DataNotFoundError(UserError, FileNotFoundError):
    """A benchmark's data files are not where the data directory says: the user's set-up, not a model's failure."""

    hint = f"point {DATA_DIR_ENV} at the folder holding the benchmark data (e.g. ../shared/data)"


def configured_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The data directory: ``data_dir``, else ``$CORTEXBOX_DATA_DIR``, else ``../shared/data`` from the current
    directory when it exists, else ``None`` (nothing configured)."""
    if data_dir is not None:
        return Path(data_dir).expanduser().resolve()
    return settings().data_dir


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """:func:`configured_data_dir`, or a :class:`DataNotFoundError` naming ``$CORTEXBOX_DATA_DIR`` when there is none."""
    found = configured_data_dir(data_dir)
    if found is None:
        raise DataNotFoundError(
            f"no data folder: ${DATA_DIR_ENV} is not set and {Path('..', 'shared', 'data')} does not exist "
            f"from {Path.cwd()}"
        )
    return found


def sha256_file(path: str | os.PathLike[str], *, chunk_size: int = 1 << 20) -> str:
    """SHA-256 (hex) of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def files_hash(root: Path, relative_paths: Iterable[str]) -> str:
    """SHA-256 (hex) over several files: for each path in sorted order, ``path NUL sha256(file) LF``.

    Renaming, adding, removing or changing any file changes the hash; the order the paths are given in does not.
    """
    digest = hashlib.sha256()
    for relative in sorted(relative_paths):
        path = root / relative
        if not path.is_file():
            raise DataNotFoundError(f"data file {path} not found (set {DATA_DIR_ENV} or pass data_dir)")
        digest.update(f"{relative}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()
