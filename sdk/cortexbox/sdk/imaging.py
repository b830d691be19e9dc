"""Image helpers for model authors, numpy only: Pillow's resampling without Pillow.

Brain-Score's models resize stimuli with Pillow; `resize` reproduces Pillow's fixed-point,
antialiased resampling (bicubic or bilinear), so a numpy-only image can preprocess exactly as
a Pillow-based one (tests/orchestrator/test_images.py compares them).
"""

from __future__ import annotations

import numpy as np

_PRECISION_BITS = 32 - 8 - 2  # Pillow's fixed point for 8-bit images


def _bicubic(x: np.ndarray) -> np.ndarray:
    a = -0.5
    x = np.abs(x)
    return np.where(x < 1, ((a + 2) * x - (a + 3)) * x * x + 1, np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, 0.0))


def _bilinear(x: np.ndarray) -> np.ndarray:
    return np.maximum(1.0 - np.abs(x), 0.0)


#: name -> (kernel, support in input pixels at scale 1), as in Pillow's Resample.c
_FILTERS = {"bicubic": (_bicubic, 2.0), "bilinear": (_bilinear, 1.0)}


def _coefficients(in_size: int, out_size: int, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Source indices and fixed-point weights, both (out_size, taps), of one resampling pass."""
    kernel, support = _FILTERS[method]
    scale = in_size / out_size
    filterscale = max(scale, 1.0)  # widen the kernel when shrinking: antialiasing
    support *= filterscale
    centers = (np.arange(out_size) + 0.5) * scale
    first = np.maximum((centers - support + 0.5).astype(np.int64), 0)
    stop = np.minimum((centers + support + 0.5).astype(np.int64), in_size)
    taps = int(np.ceil(support)) * 2 + 1
    index = first[:, None] + np.arange(taps)[None, :]
    weights = kernel((index - centers[:, None] + 0.5) / filterscale)
    weights[index >= stop[:, None]] = 0.0
    totals = weights.sum(axis=1, keepdims=True)
    weights = np.divide(weights, totals, out=np.zeros_like(weights), where=totals != 0)
    fixed = np.trunc(weights * (1 << _PRECISION_BITS) + np.where(weights < 0, -0.5, 0.5)).astype(np.int64)
    return np.minimum(index, in_size - 1), fixed


def _resample_axis(image: np.ndarray, out_size: int, axis: int, method: str) -> np.ndarray:
    index, fixed = _coefficients(image.shape[axis], out_size, method)
    moved = np.moveaxis(image, axis, 0).astype(np.int64)
    total = np.full((out_size, *moved.shape[1:]), 1 << (_PRECISION_BITS - 1), dtype=np.int64)
    spread = (slice(None),) + (None,) * (moved.ndim - 1)
    for k in range(index.shape[1]):
        total += moved[index[:, k]] * fixed[:, k][spread]
    return np.moveaxis(np.clip(total >> _PRECISION_BITS, 0, 255).astype(np.uint8), 0, axis)


def resize(pixels: np.ndarray, height: int, width: int, method: str = "bicubic") -> np.ndarray:
    """Resizes an H x W x C uint8 image as Pillow's ``Image.resize((width, height), method)`` does.

    Antialiased (the kernel widens when shrinking); horizontal pass first, each pass rounded to
    uint8 as Pillow does; an axis that keeps its size is not touched.
    """
    image = np.asarray(pixels, dtype=np.uint8)
    if image.shape[1] != width:
        image = _resample_axis(image, width, 1, method)
    if image.shape[0] != height:
        image = _resample_axis(image, height, 0, method)
    return np.ascontiguousarray(image)
