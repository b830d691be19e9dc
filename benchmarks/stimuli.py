"""Stimulus sets and Brain-Score's ``place_on_screen``.

A :class:`StimulusSet` is an ordered list of stimulus ids with the encoded image bytes behind them (in a zip file
or in memory). Images are read one at a time; nothing holds the whole set decoded.

``place_on_screen`` semantics (brain-score/vision: ``brainscore_vision/benchmark_helpers/screen.py``,
``ImageConverter``), reproduced here:

* ``ratio = target_visual_degrees / source_visual_degrees``; if the two are equal the image file is used as is.
* ``target_size = round(ratio * (width, height))`` with numpy's round-half-to-even.
* ``ratio >= 1``: a new RGB canvas of ``target_size`` filled with PIL's ``'gray'`` (RGB 128, 128, 128); the
  image is pasted at ``round((target_size - size) / 2)``. The image keeps its own pixel size: the screen grows.
* ``ratio < 1``: centre crop to ``target_size`` with left/top ``round((size - target_size) / 2)``. Nothing is
  resized after cropping: Brain-Score writes the cropped image as is, and the model's own preprocessing resizes.
* Brain-Score then saves the converted image under the original file name (``image.save(path)``), i.e. in the
  source format with Pillow's default settings; for JPEG sources that is a second lossy encode (quality 75).
  :meth:`StimulusSet.iter_placed` repeats that round trip by default (``reencode=True``) so a model receives the
  same pixels it would in Brain-Score; ``reencode=False`` returns the converted pixels before encoding.
"""

from __future__ import annotations

import hashlib
import io
import logging
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

__all__ = ["GREY", "StimulusSet", "apply_ratio", "place_image_on_screen"]

#: PIL's ``'gray'`` colour, Brain-Score's background for enlarged images.
GREY: tuple[int, int, int] = (128, 128, 128)


def apply_ratio(image: Image.Image, ratio: float, background_color: str | tuple[int, int, int] = "gray") -> Image.Image:
    """Brain-Score's ``ImageConverter.apply_ratio``: enlarge onto a grey screen or centre-crop.

    Parameters
    ----------
    image : PIL.Image.Image
        The source image (any mode PIL can paste into RGB).
    ratio : float
        ``target_visual_degrees / source_visual_degrees``.
    background_color : str or tuple, default="gray"
        Canvas colour when ``ratio >= 1`` (PIL colour name or RGB tuple).

    Returns
    -------
    PIL.Image.Image
        RGB canvas of ``round(ratio * size)`` with the image centred (``ratio >= 1``), or the centre crop of that
        size in the image's own mode (``ratio < 1``).
    """
    if not ratio > 0:
        raise ValueError(f"ratio must be positive, got {ratio}")
    image_size = np.array(image.size)
    target_size = (ratio * image_size).round().astype(int)
    if ratio >= 1:
        canvas = Image.new("RGB", (int(target_size[0]), int(target_size[1])), background_color)
        top_left = ((target_size - image_size) / 2).round().astype(int)
        canvas.paste(image, (int(top_left[0]), int(top_left[1])))
        return canvas
    left, upper = ((image_size - target_size) / 2).round().astype(int)
    right, lower = np.array([left, upper]) + target_size
    return image.crop((int(left), int(upper), int(right), int(lower)))


def place_image_on_screen(
    encoded: bytes,
    *,
    target_visual_degrees: float,
    source_visual_degrees: float,
    reencode: bool = True,
) -> np.ndarray:
    """Decode one image and place it on screen as Brain-Score does; return ``HxWx3`` uint8 RGB.

    Parameters
    ----------
    encoded : bytes
        The image file's bytes (JPEG, PNG, ...).
    target_visual_degrees, source_visual_degrees : float
        Degrees the model's input spans and degrees the image spanned in the experiment.
    reencode : bool, default=True
        When the image is changed (degrees differ), encode it again in its source format with Pillow's defaults
        and decode that, as Brain-Score's ``image.save(target_path)`` does before the model reads the file.
    """
    with Image.open(io.BytesIO(encoded)) as image:
        image.load()
        source_format = image.format
        placed: Image.Image
        if target_visual_degrees == source_visual_degrees:
            placed = image
        else:
            placed = apply_ratio(image, target_visual_degrees / source_visual_degrees)
            if reencode and source_format:
                buffer = io.BytesIO()
                placed.save(buffer, format=source_format)
                buffer.seek(0)
                placed = Image.open(buffer)
                placed.load()
        return np.asarray(placed.convert("RGB"), dtype=np.uint8)


class _Store:
    """Where a stimulus set's encoded images live."""

    @contextmanager
    def reader(self) -> Iterator[Callable[[str], bytes]]:  # pragma: no cover - interface
        raise NotImplementedError
        yield


class _ZipStore(_Store):
    def __init__(self, path: Path, members: Mapping[str, str]) -> None:
        self.path = Path(path)
        self.members = dict(members)

    @contextmanager
    def reader(self) -> Iterator[Callable[[str], bytes]]:
        with zipfile.ZipFile(self.path) as archive:
            yield lambda stimulus_id: archive.read(self.members[stimulus_id])


class _MemoryStore(_Store):
    def __init__(self, blobs: Mapping[str, bytes]) -> None:
        self.blobs = dict(blobs)

    @contextmanager
    def reader(self) -> Iterator[Callable[[str], bytes]]:
        yield lambda stimulus_id: self.blobs[stimulus_id]


class StimulusSet:
    """An ordered set of images identified by ``stimulus_id``.

    Build one with :meth:`from_zip` or :meth:`from_bytes`. Images are streamed: :meth:`iter_placed` decodes one
    image at a time.

    Attributes
    ----------
    identifier : str
        Name of the set, e.g. ``"Cowley2023.210325"``.
    visual_degrees : float
        Degrees of visual angle the images spanned in the experiment (the ``source_visual_degrees`` of
        ``place_on_screen``).
    """

    def __init__(self, identifier: str, stimulus_ids: Sequence[str], store: _Store, visual_degrees: float) -> None:
        ids = [str(s) for s in stimulus_ids]
        if len(set(ids)) != len(ids):
            raise ValueError(f"stimulus ids of {identifier!r} are not unique")
        if not visual_degrees > 0:
            raise ValueError(f"visual_degrees must be positive, got {visual_degrees}")
        self.identifier = identifier
        self._stimulus_ids = ids
        self._id_set = frozenset(ids)
        self._store = store
        self.visual_degrees = float(visual_degrees)
        self._hash: str | None = None

    # construction -------------------------------------------------------------------------------------------
    @classmethod
    def from_zip(
        cls, identifier: str, path: str | Path, members: Mapping[str, str], *, visual_degrees: float
    ) -> StimulusSet:
        """Images inside a zip file; ``members`` maps each stimulus id (in order) to its member name."""
        return cls(identifier, list(members), _ZipStore(Path(path), members), visual_degrees)

    @classmethod
    def from_bytes(cls, identifier: str, images: Mapping[str, bytes], *, visual_degrees: float) -> StimulusSet:
        """Images held in memory as encoded bytes; ``images`` maps stimulus id (in order) to file bytes."""
        return cls(identifier, list(images), _MemoryStore(images), visual_degrees)

    def subset(self, stimulus_ids: Sequence[str], identifier: str) -> StimulusSet:
        """A new set with the given ids (in the given order) from the same store."""
        known = set(self._stimulus_ids)
        unknown = [s for s in stimulus_ids if s not in known]
        if unknown:
            raise KeyError(f"{len(unknown)} ids not in {self.identifier!r}: {unknown[:5]}")
        return StimulusSet(identifier, stimulus_ids, self._store, self.visual_degrees)

    # basic accessors ----------------------------------------------------------------------------------------
    @property
    def stimulus_ids(self) -> list[str]:
        """The ids, in the set's order (a copy)."""
        return list(self._stimulus_ids)

    def __len__(self) -> int:
        return len(self._stimulus_ids)

    def __contains__(self, stimulus_id: object) -> bool:
        return stimulus_id in self._id_set

    def __repr__(self) -> str:
        return f"StimulusSet({self.identifier!r}, n={len(self)}, visual_degrees={self.visual_degrees})"

    def iter_bytes(self) -> Iterator[tuple[str, bytes]]:
        """Yield ``(stimulus_id, encoded image bytes)`` in order, reading one image at a time."""
        with self._store.reader() as read:
            for stimulus_id in self._stimulus_ids:
                yield stimulus_id, read(stimulus_id)

    @property
    def hash(self) -> str:
        """SHA-256 (hex) over every ``stimulus_id`` and its image bytes, in order.

        For each stimulus: the UTF-8 id, a NUL byte, the byte length as 8-byte big-endian, then the bytes.
        Computed once and cached.
        """
        if self._hash is None:
            digest = hashlib.sha256()
            for stimulus_id, blob in self.iter_bytes():
                digest.update(stimulus_id.encode("utf-8") + b"\0" + len(blob).to_bytes(8, "big"))
                digest.update(blob)
            self._hash = digest.hexdigest()
        return self._hash

    # placement ----------------------------------------------------------------------------------------------
    def placement_key(self, target_visual_degrees: float) -> str:
        """Identify a placement for caching, in Brain-Score's format ``target{t:.2f}--source{s:.2f}``.

        Combine it with :attr:`hash` (or :attr:`identifier`) to key a cache of placed images.
        """
        return f"target{float(target_visual_degrees):.2f}--source{self.visual_degrees:.2f}"

    def iter_placed(self, target_visual_degrees: float, *, reencode: bool = True) -> Iterator[tuple[str, np.ndarray]]:
        """Yield ``(stimulus_id, image)`` with each image placed on screen as Brain-Score's ``place_on_screen``.

        Parameters
        ----------
        target_visual_degrees : float
            Degrees of visual angle the model's input spans (Brain-Score's ``model.visual_degrees()``).
        reencode : bool, default=True
            Repeat Brain-Score's save-and-reload of converted images (see the module docstring).

        Yields
        ------
        tuple of (str, numpy.ndarray)
            The id and an ``(H, W, 3)`` uint8 RGB array. Deterministic; one image decoded at a time.
        """
        if not target_visual_degrees > 0:
            raise ValueError(f"target_visual_degrees must be positive, got {target_visual_degrees}")
        for stimulus_id, blob in self.iter_bytes():
            yield stimulus_id, place_image_on_screen(
                blob,
                target_visual_degrees=float(target_visual_degrees),
                source_visual_degrees=self.visual_degrees,
                reencode=reencode,
            )
