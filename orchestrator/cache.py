"""Activations already computed, on disk, one row per stimulus, so that no model sees a stimulus twice.

A row is keyed by what determines it: the image digest, the output (layer or behaviour) and the
*content* of the stimulus as the model receives it — for an image, SHA-256 over the placed pixels
(shape and bytes after ``place_on_screen``); for a text part, SHA-256 over its whole context (every
part's text, in order) and its position in it, since a part's activations depend on its context.
Stimulus ids and stimulus sets play no part: a benchmark is assembled from rows that any earlier
benchmark (or layer selection) computed for the same pixels, and only the missing stimuli are sent
to the model.

Layout, under ``$CORTEXBOX_HOME/activations/rows/`` (folders of the earlier per-set cache beside it
are ignored)::

    rows/<sha256(digest, output)[:40]>/
        about.json                      digest and output, for people
        <stamp>-<pid>-<rand>.f32        a shard: rows x features float32, C order, raw
        <stamp>-<pid>-<rand>.json       its index: {"features": F, "keys": [one per row]}

Writes are append-only: a put writes a new shard with the rows not yet stored, each file to a
temp name then renamed into place, the shard before its index. A shard is visible only through
its index file, so a writer killed mid-way leaves at most an unreferenced temp file or shard
(ignored, and swept later), and concurrent writers (two scoring processes) never touch the same
file; where two of them raced to store the same stimulus, the older shard's row is used. Reads
copy each needed row once, straight from the shard file into the result (runs of consecutive rows
in one read); nothing holds a shard in memory. Files are not fsynced (a
shard of the pixels model on the Cowley sessions is 2.8 GB): that covers killed processes, not
power loss; after an OS crash a shard whose size does not match its index is skipped and its rows
are recomputed.

Entries of the earlier per-stimulus-set cache (``activations/??/<sha>.npy`` + ``.json``) are not
read; ``cortexbox gc`` deletes them.

Budget. The cache has a cap (``$CORTEXBOX_CACHE_MAX_BYTES``, e.g. ``20g``, ``500m`` or bytes; by
default the smaller of 32 GiB and half of the space it could use, i.e. its own files plus the free
space of its file system: layer selection alone stores about 11 GB for the MobileNet template).
A put that leaves the cache above its cap evicts whole shards, least recently used first, down to
90% of the cap (``cortexbox cache prune`` does it on demand). A shard's last use is the mtime of its
index file, touched by every read of it: one ``utime`` per shard and read, no database.

Eviction never breaks a run, in any process: a :class:`RowIndex` holds every shard it lists open
with a shared ``flock`` until it is dropped (a job keeps its indexes for one extraction), and a put
holds the shards of its keys (the new one, and those that had some of them already) the same way
until the cache indexes that output or puts again, which covers a job's put-then-read-back. The evictor
removes a shard only under an exclusive non-blocking ``flock`` (index file first, then the shard),
so a shard in use is skipped and counted as in use, and a reader that locks a shard after it was
removed sees it unlinked and treats its rows as missing (they are recomputed). Locks die with
their process, so a killed run pins nothing; no lease files, no grace periods, no pid bookkeeping.
The cap can therefore be exceeded by what live runs hold, never by what they left behind.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import resource
import secrets
import tempfile
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from cortexbox.benchmarks.settings import settings
from cortexbox.orchestrator import budgets
from cortexbox.orchestrator.errors import UserError

#: Version of the row-key formulas below; part of every key.
KEY_VERSION = b"cortexbox-row-v1"
#: Rows copied per block when writing a selection of rows to a shard (bounds the temporaries).
_BLOCK_ROWS = 256
#: Temp files older than this are leftovers of killed writers.
_STALE_TMP_S = 3600.0
#: The default cap: at most this many bytes ...
DEFAULT_MAX_BYTES = 32 * 1024**3
#: ... and at most this share of the space the cache could use (its own files plus the free space).
DEFAULT_DISK_SHARE = 0.5
#: Environment variable that sets the cap (a size such as ``20g``).
MAX_BYTES_ENV = "CORTEXBOX_CACHE_MAX_BYTES"
#: Eviction after a put frees down to this share of the cap, so that the next puts do not evict again at once.
_LOW_WATER = 0.9


def parse_size(text: str) -> int:
    """:func:`budgets.parse_size`, a bad size being the user's mistake."""
    try:
        return budgets.parse_size(text)
    except ValueError:
        raise UserError(f"not a size: {text!r}", "write e.g. 20g, 500m, 1.5GiB or a number of bytes") from None


def default_cache_dir() -> Path:
    return settings().home / "activations"


# -- stimulus keys ---------------------------------------------------------------------------------
def image_key(pixels: np.ndarray) -> str:
    """Key of one placed image: SHA-256 over its shape, dtype and pixel bytes."""
    pixels = np.ascontiguousarray(pixels)
    h = hashlib.sha256(KEY_VERSION + b"\0image\0")
    h.update(f"{pixels.dtype.str}{pixels.shape}".encode())
    h.update(pixels.data)
    return h.hexdigest()


def text_keys(parts: Sequence[tuple[str, str, str]]) -> list[str]:
    """Keys of text parts ``(id, text, context_id)``: each part's whole context and its position in it."""
    contexts: dict[str, list[str]] = {}
    for _, text, context in parts:
        contexts.setdefault(context, []).append(text)
    context_hash = {}
    for context, texts in contexts.items():
        h = hashlib.sha256(KEY_VERSION + b"\0text\0")
        for text in texts:
            data = text.encode("utf-8")
            h.update(len(data).to_bytes(8, "big") + data)
        context_hash[context] = h.hexdigest()
    keys, position = [], {}
    for _, _, context in parts:
        i = position.get(context, 0)
        position[context] = i + 1
        keys.append(hashlib.sha256(f"{context_hash[context]}:{i}".encode()).hexdigest())
    return keys


_KEY_MEMO: OrderedDict[tuple[str, str], list[str]] = OrderedDict()


def stimulus_keys(stimulus_set, target_visual_degrees: float | None) -> list[str]:
    """One row key per stimulus of ``stimulus_set`` (in its order), as placed for a model spanning
    ``target_visual_degrees``. Placing costs about a millisecond an image; remembered per process."""
    placement = stimulus_set.placement_key(target_visual_degrees)
    memo_key = (stimulus_set.hash, placement)
    if memo_key in _KEY_MEMO:
        _KEY_MEMO.move_to_end(memo_key)
        return list(_KEY_MEMO[memo_key])
    if hasattr(stimulus_set, "iter_text"):
        keys = text_keys(list(stimulus_set.iter_text()))
    else:
        keys = [image_key(pixels) for _, pixels in stimulus_set.iter_placed(target_visual_degrees)]
    _KEY_MEMO[memo_key] = keys
    while len(_KEY_MEMO) > 32:
        _KEY_MEMO.popitem(last=False)
    return list(keys)


# -- the store -------------------------------------------------------------------------------------
def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _pin(path: Path) -> int | None:
    """An open descriptor of the shard ``path`` holding a shared lock (the evictor then skips it), or None
    when the shard is gone or being evicted right now."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        if os.fstat(fd).st_nlink == 0:  # evicted between our open and our lock
            raise OSError("evicted")
    except OSError:
        os.close(fd)
        return None
    return fd


_fd_headroom = False


def _ensure_fd_headroom() -> None:
    """Held shards are open files (one per shard of every output a job reads at once, hundreds for a
    layer selection): raise the soft limit on open files towards the hard one, once per process."""
    global _fd_headroom
    if _fd_headroom:
        return
    _fd_headroom = True
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
        if soft != resource.RLIM_INFINITY and soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (OSError, ValueError):
        pass


class _Shard:
    __slots__ = ("path", "rows", "features", "fd", "release", "__weakref__")

    def __init__(self, path: Path, rows: int, features: int, fd: int | None = None):
        self.path, self.rows, self.features, self.fd = path, rows, features, fd
        # closing the descriptor releases the pin: explicitly, or when the last index using the shard goes
        self.release = weakref.finalize(self, os.close, fd) if fd is not None else None


class RowIndex:
    """Where each stored row of one (digest, output) lives: key -> (shard, row). Every listed shard is
    pinned (open, shared lock) while the index lives, so no eviction can remove a row it promises;
    ``close()`` (or dropping the index) releases them."""

    def __init__(self, features: int | None, rows: dict[str, tuple[_Shard, int]]):
        self.features = features
        self.rows = rows

    def __contains__(self, key: str) -> bool:
        return key in self.rows

    def __len__(self) -> int:
        return len(self.rows)

    def missing(self, keys: Iterable[str]) -> list[str]:
        return [k for k in keys if k not in self.rows]

    def close(self) -> None:
        for shard, _ in self.rows.values():
            if shard.release is not None:
                shard.release()
                shard.fd = None
        self.rows = {}
        self.features = None


@dataclass
class ShardFile:
    """One indexed shard as the evictor sees it."""

    folder: Path
    name: str
    bytes: int
    last_used_ns: int


@dataclass
class CacheUsage:
    """What the cache holds: its indexed shards (oldest use first) and every other byte (temp files,
    unindexed shards, about files) under ``rows/``."""

    root: Path
    shards: list[ShardFile] = field(default_factory=list)
    other_bytes: int = 0

    @property
    def total_bytes(self) -> int:
        return sum(s.bytes for s in self.shards) + self.other_bytes


@dataclass
class Eviction:
    removed: int = 0  # shards
    freed_bytes: int = 0
    in_use: int = 0  # shards a live process holds, kept
    in_use_bytes: int = 0
    total_bytes: int = 0  # what the cache holds afterwards

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class ActivationCache:
    """The row store under ``root`` with a byte cap: ``max_bytes`` if given, else ``$CORTEXBOX_CACHE_MAX_BYTES``,
    else the default (see the module docstring)."""

    def __init__(self, root: Path | None = None, max_bytes: int | str | None = None):
        self.root = Path(root or default_cache_dir())
        self._cap_source = "configured"
        configured = settings().cache_max_bytes
        if max_bytes is None and configured:
            max_bytes, self._cap_source = configured, f"${MAX_BYTES_ENV}"
            try:
                parse_size(max_bytes)
            except UserError:
                raise UserError(f"{MAX_BYTES_ENV}={max_bytes!r} is not a size", "write e.g. 20g, 500m or a number of bytes") from None
        self._max_bytes = parse_size(max_bytes) if isinstance(max_bytes, str) else max_bytes
        #: folder -> descriptors of the shards holding the keys of this cache's last put, pinned until read back
        self._fresh: dict[Path, list[int]] = {}
        weakref.finalize(self, _close_fresh, self._fresh)

    def _dir(self, digest: str, output: str) -> Path:
        name = hashlib.sha256(f"{digest}\0{output}".encode()).hexdigest()[:40]
        return self.root / "rows" / name

    # -- the budget --------------------------------------------------------------------------------
    def free_bytes(self) -> int:
        """Free space (for unprivileged writers) on the cache's file system."""
        path = self.root
        while not path.exists() and path != path.parent:
            path = path.parent
        stat = os.statvfs(path)
        return stat.f_bavail * stat.f_frsize

    def max_bytes(self, usage: CacheUsage | None = None) -> int:
        """The cap in bytes: the configured one, else min(32 GiB, half of (own files + free space))."""
        if self._max_bytes is not None:
            return int(self._max_bytes)
        used = (usage or self.usage()).total_bytes
        return int(min(DEFAULT_MAX_BYTES, DEFAULT_DISK_SHARE * (used + self.free_bytes())))

    @property
    def cap_source(self) -> str:
        if self._max_bytes is not None:
            return self._cap_source
        return f"default: min({DEFAULT_MAX_BYTES // 1024**3} GiB, {DEFAULT_DISK_SHARE:.0%} of cache + free space)"

    def usage(self) -> CacheUsage:
        """Every file under ``rows/``; one ``stat`` each, no index read."""
        usage = CacheUsage(self.root)
        try:
            folders = list(os.scandir(self.root / "rows"))
        except FileNotFoundError:
            return usage
        for folder in folders:
            if not folder.is_dir(follow_symlinks=False):
                continue
            try:
                entries = {e.name: e.stat(follow_symlinks=False) for e in os.scandir(folder.path) if e.is_file(follow_symlinks=False)}
            except FileNotFoundError:  # evicted under us
                continue
            for name, st in entries.items():
                if name.endswith(".json") and name != "about.json" and not name.startswith("."):
                    shard = entries.get(name[:-5] + ".f32")
                    if shard is not None:
                        usage.shards.append(ShardFile(Path(folder.path), name[:-5], st.st_size + shard.st_size, st.st_mtime_ns))
                        continue
                if not (name.endswith(".f32") and name[:-4] + ".json" in entries):
                    usage.other_bytes += st.st_size
        usage.shards.sort(key=lambda s: (s.last_used_ns, s.name))
        return usage

    def report(self) -> dict:
        """Usage by (image digest, output), largest first, with the total, the cap and the free disk."""
        usage = self.usage()
        by_folder: dict[Path, dict] = {}
        for shard in usage.shards:
            entry = by_folder.setdefault(shard.folder, {"shards": 0, "bytes": 0, "last_used_ns": 0})
            entry["shards"] += 1
            entry["bytes"] += shard.bytes
            entry["last_used_ns"] = max(entry["last_used_ns"], shard.last_used_ns)
        outputs = []
        for folder, entry in by_folder.items():
            try:
                about = json.loads((folder / "about.json").read_text())
                digest, output = str(about["digest"]), str(about["output"])
            except (OSError, ValueError, KeyError, TypeError):
                digest, output = "", f"? ({folder.name})"
            outputs.append({"digest": digest, "output": output, **entry, "last_used": entry["last_used_ns"] / 1e9})
            del outputs[-1]["last_used_ns"]
        outputs.sort(key=lambda o: (-o["bytes"], o["digest"], o["output"]))
        return {
            "path": str(self.root), "total_bytes": usage.total_bytes, "max_bytes": self.max_bytes(usage),
            "cap": self.cap_source, "free_bytes": self.free_bytes(), "shards": len(usage.shards),
            "other_bytes": usage.other_bytes, "outputs": outputs,
        }

    def evict(self, to_bytes: int) -> Eviction:
        """Removes indexed shards, least recently used first, until the cache holds at most ``to_bytes``
        (``0``: everything not in use). A shard pinned by any live process is kept and counted in ``in_use``."""
        usage = self.usage()
        result = Eviction(total_bytes=usage.total_bytes)
        for shard in usage.shards:
            if result.total_bytes <= to_bytes:
                break
            if self._remove_shard(shard):
                result.removed += 1
                result.freed_bytes += shard.bytes
                result.total_bytes -= shard.bytes
            elif (shard.folder / f"{shard.name}.json").exists():
                result.in_use += 1
                result.in_use_bytes += shard.bytes
        if result.removed or to_bytes == 0:
            self._remove_empty_folders(p for p in (self.root / "rows").glob("*") if p.is_dir())
            result.total_bytes = self.usage().total_bytes
        return result

    def prune(self, to_bytes: int | None = None) -> Eviction:
        """Evicts down to ``to_bytes`` (default: the cap) after sweeping what killed writers left behind."""
        for folder in (self.root / "rows").glob("*"):
            if folder.is_dir():
                self._sweep(folder)
        return self.evict(self.max_bytes() if to_bytes is None else to_bytes)

    def _enforce_cap(self) -> None:
        usage = self.usage()
        cap = self.max_bytes(usage)
        if usage.total_bytes > cap:
            self.evict(int(cap * _LOW_WATER))

    @staticmethod
    def _remove_shard(shard: ShardFile) -> bool:
        path = shard.folder / f"{shard.name}.f32"
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:  # another evictor was first
            return False
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # pinned by a reader (or being removed by another evictor)
                return False
            try:
                os.unlink(shard.folder / f"{shard.name}.json")  # invisible first, then gone
            except FileNotFoundError:
                return False
            try:
                os.unlink(path)
            except FileNotFoundError:  # swept as unindexed in between
                pass
            return True
        finally:
            os.close(fd)

    @staticmethod
    def _remove_empty_folders(folders: Iterable[Path]) -> None:
        """Folders left with only their about.json go (a put racing with this retries, see ``put``)."""
        for folder in folders:
            try:
                if [p.name for p in folder.iterdir()] == ["about.json"]:
                    (folder / "about.json").unlink()
                    folder.rmdir()
            except OSError:
                pass

    # -- rows ----------------------------------------------------------------------------------------
    def remove_legacy(self) -> tuple[int, int]:
        """Deletes the entries of the earlier per-stimulus-set cache (``<root>/??/<sha>.npy`` and ``.json``), which
        nothing reads any more; returns (files, bytes) removed. ``cortexbox gc`` calls it."""
        files = size = 0
        for folder in self.root.glob("??"):
            if not folder.is_dir() or folder.name == "rows":
                continue
            for path in folder.iterdir():
                if path.suffix in (".npy", ".json") and path.is_file():
                    size += path.stat().st_size
                    path.unlink()
                    files += 1
            try:
                folder.rmdir()
            except OSError:  # something else lives there: leave it
                pass
        return files, size

    @staticmethod
    def _shard_metas(folder: Path):
        """(index path, shard path, keys, features) of each readable index in ``folder``, oldest first."""
        try:
            names = sorted(p.name for p in folder.iterdir() if p.suffix == ".json" and p.name != "about.json" and not p.name.startswith("."))
        except FileNotFoundError:
            return
        for name in names:  # oldest first: the first stored row of a key is the one used
            meta_path = folder / name
            try:
                meta = json.loads(meta_path.read_text())
                keys, n_features = list(meta["keys"]), int(meta["features"])
                if meta.get("dtype", "float32") != "float32":
                    continue
            except (OSError, ValueError, KeyError, TypeError):
                continue  # recompute rather than fail
            yield meta_path, meta_path.with_suffix(".f32"), keys, n_features

    def index(self, digest: str, output: str) -> RowIndex:
        """Every stored row of ``output`` of the image ``digest``, each shard pinned while the index lives
        (unreadable, short or concurrently evicted shards are skipped: their rows count as missing)."""
        _ensure_fd_headroom()
        folder = self._dir(digest, output)
        rows: dict[str, tuple[_Shard, int]] = {}
        features = None
        for _, shard_path, keys, n_features in self._shard_metas(folder):
            if features is not None and n_features != features:
                continue
            fd = _pin(shard_path)
            if fd is None:
                continue
            if os.fstat(fd).st_size != len(keys) * n_features * 4:
                os.close(fd)
                continue
            features = n_features
            shard = _Shard(shard_path, len(keys), n_features, fd)
            for row, key in enumerate(keys):
                rows.setdefault(key, (shard, row))
        for fd in self._fresh.pop(folder, []):  # this index pins the put's shards now
            os.close(fd)
        return RowIndex(features, rows)

    def gather(self, index: RowIndex, keys: Sequence[str], out: np.ndarray | None = None, positions: Sequence[int] | None = None) -> np.ndarray:
        """Copies the rows of ``keys`` (all stored) into ``out[positions]`` (a new (len(keys), F) float32
        array when ``out`` is None). Each run of consecutive shard rows bound for consecutive positions is
        read straight into ``out`` with one positioned read from the pinned shard (no intermediate copy; a
        memory map's fancy indexing measured 25x slower than ``np.load`` for the same bytes). Marks each
        shard read as just used."""
        if out is None:
            out = np.empty((len(keys), index.features), dtype=np.float32)
            positions = range(len(keys))
        positions = list(positions)
        if not out.flags.c_contiguous or out.dtype != np.float32:
            raise ValueError("gather needs a C-contiguous float32 output array")
        by_shard: dict[Path, tuple[_Shard, list[int], list[int]]] = {}
        for position, key in zip(positions, keys):
            shard, row = index.rows[key]
            entry = by_shard.setdefault(shard.path, (shard, [], []))
            entry[1].append(position)
            entry[2].append(row)
        for shard, where, rows in by_shard.values():
            row_bytes = shard.features * 4
            order = sorted(range(len(rows)), key=rows.__getitem__)
            fd = shard.fd if shard.fd is not None else os.open(shard.path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                i = 0
                while i < len(order):
                    j = i + 1
                    while j < len(order) and rows[order[j]] == rows[order[j - 1]] + 1 and where[order[j]] == where[order[j - 1]] + 1:
                        j += 1
                    first_row, first_position, count = rows[order[i]], where[order[i]], j - i
                    view = memoryview(out[first_position : first_position + count]).cast("B")
                    done = 0
                    while done < len(view):
                        got = os.preadv(fd, [view[done:]], first_row * row_bytes + done)
                        if not got:
                            raise OSError(f"{shard.path} is shorter than its index says")
                        done += got
                    i = j
            finally:
                if fd != shard.fd:
                    os.close(fd)
            try:  # last use, for the evictor's LRU order
                os.utime(shard.path.with_suffix(".json"))
            except OSError:
                pass
        return out

    def put(self, digest: str, output: str, keys: Sequence[str], values: np.ndarray, rows: Sequence[int] | None = None) -> int:
        """Appends the rows ``values[rows]`` (default: all) under their ``keys`` (one per selected row),
        skipping keys already stored or repeated; returns the number of rows written. Every shard holding
        one of ``keys`` stays pinned until this cache indexes the output or puts again; then, if the cache
        is over its cap, shards are evicted."""
        if values.dtype != np.float32 or values.ndim != 2:
            return 0
        rows = list(range(len(values))) if rows is None else list(rows)
        if len(rows) != len(keys):
            raise ValueError("one key per row")
        folder = self._dir(digest, output)
        for attempt in range(3):
            try:
                written = self._put(folder, digest, output, keys, values, rows)
                break
            except (FileNotFoundError, FileExistsError):  # an evictor removed the (empty) folder under us
                if attempt == 2:
                    raise
        if written:
            try:
                self._enforce_cap()
            except OSError:  # the rows are stored; the next put evicts
                pass
        return written

    def _put(self, folder: Path, digest: str, output: str, keys: Sequence[str], values: np.ndarray, rows: list[int]) -> int:
        folder.mkdir(parents=True, exist_ok=True)
        self._sweep(folder)
        about = folder / "about.json"

        def write_about() -> None:  # again after the shard: an evictor may have emptied the folder meanwhile
            if not about.exists():
                _atomic_write(about, lambda f: f.write(json.dumps({"digest": digest, "output": output}).encode()))

        write_about()
        held: list[int] = []  # pins of the shards that hold this put's keys, old ones and the new one
        try:
            # keys stored already count only where their shard could be pinned: one being evicted right
            # now is written again, so that every key of this put can be read back
            wanted, stored, features = set(keys), set(), None
            for _, shard_path, shard_keys, n_features in self._shard_metas(folder):
                if features is not None and n_features != features:
                    continue
                fd = _pin(shard_path)
                if fd is None:
                    continue
                if os.fstat(fd).st_size != len(shard_keys) * n_features * 4:
                    os.close(fd)
                    continue
                features = n_features
                found = wanted.intersection(shard_keys) - stored
                if found:
                    stored |= found
                    held.append(fd)
                else:
                    os.close(fd)
            if features is not None and features != values.shape[1]:
                raise _Skip
            new_keys, new_rows, seen = [], [], set()
            for key, row in zip(keys, rows):
                if key not in stored and key not in seen:
                    seen.add(key)
                    new_keys.append(key)
                    new_rows.append(row)
            if new_keys:
                name = f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}"

                def write_rows(f) -> None:
                    if new_rows == list(range(len(values))) and values.flags.c_contiguous:
                        f.write(values.data)
                        return
                    for start in range(0, len(new_rows), _BLOCK_ROWS):
                        f.write(np.ascontiguousarray(values[new_rows[start : start + _BLOCK_ROWS]]).data)

                shard_path = folder / f"{name}.f32"
                _atomic_write(shard_path, write_rows)
                fd = _pin(shard_path)  # before its index makes it visible to evictors
                if fd is not None:
                    held.append(fd)
                meta = {"features": int(values.shape[1]), "dtype": "float32", "keys": new_keys}
                _atomic_write(folder / f"{name}.json", lambda f: f.write(json.dumps(meta).encode()))
                write_about()
        except _Skip:
            for fd in held:
                os.close(fd)
            return 0
        except BaseException:
            for fd in held:
                os.close(fd)
            raise
        _close_fresh(self._fresh)  # an earlier put's rows have been read back (or never will be)
        if held:
            self._fresh[folder] = held
        return len(new_keys)

    def close(self) -> None:
        """Releases the pins of this cache's recent puts (indexes release their own)."""
        _close_fresh(self._fresh)

    @staticmethod
    def _sweep(folder: Path) -> None:
        """Removes temp files and unindexed shards that killed writers left behind (after an hour)."""
        now = time.time()
        leftovers = list(folder.glob(".tmp-*"))
        leftovers += [p for p in folder.glob("*.f32") if not p.with_suffix(".json").exists()]
        for path in leftovers:
            try:
                if now - path.stat().st_mtime > _STALE_TMP_S:
                    path.unlink()
            except OSError:
                pass


def _close_fresh(fresh: dict[Path, list[int]]) -> None:
    while fresh:
        _, fds = fresh.popitem()
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass


class _Skip(Exception):
    """A put that stores nothing (its output has another width than the stored rows)."""
