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
read; ``cortexbox gc`` deletes them. Nothing is evicted: layer selection stores every candidate
layer's rows for the selection images (about 9 GB for the MobileNet template on Cowley's 300).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import tempfile
import time
from collections import OrderedDict
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

#: Version of the row-key formulas below; part of every key.
KEY_VERSION = b"cortexbox-row-v1"
#: Rows copied per block when writing a selection of rows to a shard (bounds the temporaries).
_BLOCK_ROWS = 256
#: Temp files older than this are leftovers of killed writers.
_STALE_TMP_S = 3600.0


def default_cache_dir() -> Path:
    home = Path(os.environ.get("CORTEXBOX_HOME") or Path.home() / ".cortexbox")
    return home / "activations"


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


class _Shard:
    __slots__ = ("path", "rows", "features")

    def __init__(self, path: Path, rows: int, features: int):
        self.path, self.rows, self.features = path, rows, features


class RowIndex:
    """Where each stored row of one (digest, output) lives: key -> (shard, row)."""

    def __init__(self, features: int | None, rows: dict[str, tuple[_Shard, int]]):
        self.features = features
        self.rows = rows

    def __contains__(self, key: str) -> bool:
        return key in self.rows

    def __len__(self) -> int:
        return len(self.rows)

    def missing(self, keys: Iterable[str]) -> list[str]:
        return [k for k in keys if k not in self.rows]


class ActivationCache:
    def __init__(self, root: Path | None = None):
        self.root = Path(root or default_cache_dir())

    def _dir(self, digest: str, output: str) -> Path:
        name = hashlib.sha256(f"{digest}\0{output}".encode()).hexdigest()[:40]
        return self.root / "rows" / name

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

    def index(self, digest: str, output: str) -> RowIndex:
        """Every stored row of ``output`` of the image ``digest`` (unreadable shards are skipped)."""
        folder = self._dir(digest, output)
        rows: dict[str, tuple[_Shard, int]] = {}
        features = None
        try:
            names = sorted(p.name for p in folder.iterdir() if p.suffix == ".json" and p.name != "about.json")
        except FileNotFoundError:
            return RowIndex(None, rows)
        for name in names:  # oldest first: the first stored row of a key is the one used
            meta_path = folder / name
            shard_path = meta_path.with_suffix(".f32")
            try:
                meta = json.loads(meta_path.read_text())
                keys, n_features = list(meta["keys"]), int(meta["features"])
                if meta.get("dtype", "float32") != "float32" or shard_path.stat().st_size != len(keys) * n_features * 4:
                    continue
            except (OSError, ValueError, KeyError, TypeError):
                continue  # recompute rather than fail
            if features is None:
                features = n_features
            elif n_features != features:
                continue
            shard = _Shard(shard_path, len(keys), n_features)
            for row, key in enumerate(keys):
                rows.setdefault(key, (shard, row))
        return RowIndex(features, rows)

    def gather(self, index: RowIndex, keys: Sequence[str], out: np.ndarray | None = None, positions: Sequence[int] | None = None) -> np.ndarray:
        """Copies the rows of ``keys`` (all stored) into ``out[positions]`` (a new (len(keys), F) float32
        array when ``out`` is None). Each run of consecutive shard rows bound for consecutive positions is
        read straight into ``out`` with one ``readinto`` (no intermediate copy; a memory map's fancy
        indexing measured 25x slower than ``np.load`` for the same bytes)."""
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
            with open(shard.path, "rb", buffering=0) as f:
                i = 0
                while i < len(order):
                    j = i + 1
                    while j < len(order) and rows[order[j]] == rows[order[j - 1]] + 1 and where[order[j]] == where[order[j - 1]] + 1:
                        j += 1
                    first_row, first_position, count = rows[order[i]], where[order[i]], j - i
                    view = memoryview(out[first_position : first_position + count]).cast("B")
                    f.seek(first_row * row_bytes)
                    done = 0
                    while done < len(view):
                        got = f.readinto(view[done:])
                        if not got:
                            raise OSError(f"{shard.path} is shorter than its index says")
                        done += got
                    i = j
        return out

    def put(self, digest: str, output: str, keys: Sequence[str], values: np.ndarray, rows: Sequence[int] | None = None) -> int:
        """Appends the rows ``values[rows]`` (default: all) under their ``keys`` (one per selected row),
        skipping keys already stored or repeated; returns the number of rows written."""
        if values.dtype != np.float32 or values.ndim != 2:
            return 0
        rows = list(range(len(values))) if rows is None else list(rows)
        if len(rows) != len(keys):
            raise ValueError("one key per row")
        folder = self._dir(digest, output)
        folder.mkdir(parents=True, exist_ok=True)
        self._sweep(folder)
        about = folder / "about.json"
        if not about.exists():
            _atomic_write(about, lambda f: f.write(json.dumps({"digest": digest, "output": output}).encode()))
        stored = self.index(digest, output)
        if stored.features is not None and stored.features != values.shape[1]:
            return 0
        new_keys, new_rows, seen = [], [], set()
        for key, row in zip(keys, rows):
            if key not in stored and key not in seen:
                seen.add(key)
                new_keys.append(key)
                new_rows.append(row)
        if not new_keys:
            return 0
        name = f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}"

        def write_rows(f) -> None:
            if new_rows == list(range(len(values))) and values.flags.c_contiguous:
                f.write(values.data)
                return
            for start in range(0, len(new_rows), _BLOCK_ROWS):
                f.write(np.ascontiguousarray(values[new_rows[start : start + _BLOCK_ROWS]]).data)

        _atomic_write(folder / f"{name}.f32", write_rows)
        meta = {"features": int(values.shape[1]), "dtype": "float32", "keys": new_keys}
        _atomic_write(folder / f"{name}.json", lambda f: f.write(json.dumps(meta).encode()))
        return len(new_keys)

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
