"""Building and validating neural and model assemblies (plain :class:`xarray.DataArray` objects).

Conventions (see :mod:`cortexbox.benchmarks.dims`): dims ``("presentation", "neuroid")``; ``stimulus_id`` on
presentation; a unique ``neuroid_id`` on neuroid; raw recordings keep one presentation per repeat with a
``repetition`` coordinate, as Brain-Score stores them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
import xarray as xr

from .dims import EXPECTED_DIMS, NEUROID, NEUROID_ID, PRESENTATION, REPETITION, STIMULUS_ID

logger = logging.getLogger(__name__)

__all__ = [
    "AssemblyValidationError",
    "average_repetition",
    "check_stimulus_ids_match",
    "neuroid_assembly",
    "validate_assembly",
]

#: Rows checked at a time for NaN / inf, so that a 640 x 400,000 float32 matrix needs no full-size temporary.
_FINITE_CHECK_ROWS = 32


class AssemblyValidationError(ValueError):
    """An assembly does not have the dims, coords or values a metric or benchmark needs."""


def _examples(values: Sequence[object], limit: int = 5) -> str:
    shown = ", ".join(repr(v) for v in list(values)[:limit])
    more = len(values) - limit
    return shown + (f", ... ({more} more)" if more > 0 else "")


def neuroid_assembly(
    values: np.ndarray,
    stimulus_ids: Sequence[str],
    layer: str,
    model: str = "",
) -> xr.DataArray:
    """Wrap a model layer's activations as a ``(presentation, neuroid)`` assembly.

    Parameters
    ----------
    values : numpy.ndarray of shape (n_stimuli, n_features)
        Activations, one row per stimulus. Not flattened and not copied: the caller passes a 2-D array (flatten
        conv maps before calling).
    stimulus_ids : sequence of str, length n_stimuli
        The ``stimulus_id`` of each row; must be unique.
    layer : str
        Layer name, stored in the ``layer`` coordinate and in each ``neuroid_id``.
    model : str, default=""
        Model identifier; ``neuroid_id`` is ``f"{model}.{layer}.{i}"``.

    Returns
    -------
    xarray.DataArray
        Dims ``("presentation", "neuroid")``; coords ``stimulus_id`` (presentation), ``neuroid_id``, ``layer``,
        ``neuroid_num`` (neuroid).

    Raises
    ------
    ValueError
        If ``values`` is not 2-D, the number of ids differs from the number of rows, or the ids are not unique.
    """
    values = np.asarray(values)
    if values.ndim != 2:
        raise ValueError(
            f"values must be 2-D (n_stimuli, n_features); got shape {values.shape}. Flatten feature maps first."
        )
    stimulus_ids = [str(s) for s in stimulus_ids]
    n_stimuli, n_features = values.shape
    if len(stimulus_ids) != n_stimuli:
        raise ValueError(f"got {len(stimulus_ids)} stimulus_ids for {n_stimuli} rows of values")
    if len(set(stimulus_ids)) != n_stimuli:
        duplicated = pd.Index(stimulus_ids)[pd.Index(stimulus_ids).duplicated()].unique().tolist()
        raise ValueError(f"stimulus_ids must be unique; duplicated: {_examples(duplicated)}")
    neuroid_num = np.arange(n_features)
    neuroid_ids = np.array([f"{model}.{layer}.{i}" for i in range(n_features)], dtype=object)
    return xr.DataArray(
        values,
        dims=(PRESENTATION, NEUROID),
        coords={
            STIMULUS_ID: (PRESENTATION, np.array(stimulus_ids, dtype=object)),
            NEUROID_ID: (NEUROID, neuroid_ids),
            "layer": (NEUROID, np.full(n_features, layer, dtype=object)),
            "neuroid_num": (NEUROID, neuroid_num),
        },
        attrs={"model": model, "layer": layer},
    )


def _coord_on(assembly: xr.DataArray, coord: str, dim: str) -> np.ndarray:
    if coord not in assembly.coords:
        raise AssemblyValidationError(
            f"assembly has no {coord!r} coordinate on {dim!r}; coords present: {sorted(map(str, assembly.coords))}"
        )
    if assembly[coord].dims != (dim,):
        raise AssemblyValidationError(
            f"coordinate {coord!r} must lie on dim {dim!r} only; it lies on {assembly[coord].dims}"
        )
    return np.asarray(assembly[coord].values)


def _check_finite(values: np.ndarray, assembly: xr.DataArray) -> None:
    for start in range(0, values.shape[0], _FINITE_CHECK_ROWS):
        block = values[start : start + _FINITE_CHECK_ROWS]
        finite = np.isfinite(block)
        if finite.all():
            continue
        rows, cols = np.nonzero(~finite)
        n_bad = int((~finite).sum())
        row, col = start + int(rows[0]), int(cols[0])
        stimulus = assembly[STIMULUS_ID].values[row]
        neuroid = assembly[NEUROID_ID].values[col]
        raise AssemblyValidationError(
            f"assembly holds non-finite values (NaN or inf): first at presentation {row} (stimulus_id={stimulus!r}),"
            f" neuroid {col} (neuroid_id={neuroid!r}); {n_bad} in presentations {start}..{start + block.shape[0] - 1}"
        )


def validate_assembly(
    assembly: xr.DataArray,
    *,
    require_finite: bool = True,
    require_unique_stimuli: bool = True,
) -> xr.DataArray:
    """Check a ``(presentation, neuroid)`` assembly and return it transposed to that order.

    Parameters
    ----------
    assembly : xarray.DataArray
        Dims ``presentation`` and ``neuroid`` in either order; coords ``stimulus_id`` on presentation and a unique
        ``neuroid_id`` on neuroid; numeric values.
    require_finite : bool, default=True
        Whether NaN or inf values are an error (checked a few rows at a time; no full-size temporary).
    require_unique_stimuli : bool, default=True
        Whether every ``stimulus_id`` must occur once (one row per stimulus).

    Returns
    -------
    xarray.DataArray
        The same data (a view, not a copy), dims ordered ``("presentation", "neuroid")``.

    Raises
    ------
    AssemblyValidationError
        A ``ValueError`` naming the dim, coordinate or value at fault.
    """
    if not isinstance(assembly, xr.DataArray):
        raise AssemblyValidationError(f"expected an xarray.DataArray, got {type(assembly).__name__}")
    if set(assembly.dims) != set(EXPECTED_DIMS) or assembly.ndim != len(EXPECTED_DIMS):
        raise AssemblyValidationError(
            f"expected dims {set(EXPECTED_DIMS)}, got {tuple(assembly.dims)} with sizes {dict(assembly.sizes)}"
        )
    assembly = assembly.transpose(*EXPECTED_DIMS)
    if assembly.sizes[PRESENTATION] == 0 or assembly.sizes[NEUROID] == 0:
        raise AssemblyValidationError(f"assembly is empty: sizes {dict(assembly.sizes)}")
    if not np.issubdtype(assembly.dtype, np.number) or np.issubdtype(assembly.dtype, np.complexfloating):
        raise AssemblyValidationError(f"assembly values must be real numbers, got dtype {assembly.dtype}")
    stimulus_ids = _coord_on(assembly, STIMULUS_ID, PRESENTATION)
    neuroid_ids = _coord_on(assembly, NEUROID_ID, NEUROID)
    if require_unique_stimuli:
        index = pd.Index(stimulus_ids)
        if not index.is_unique:
            duplicated = index[index.duplicated()].unique().tolist()
            raise AssemblyValidationError(
                f"stimulus_id must be unique (one presentation per stimulus); {len(duplicated)} duplicated:"
                f" {_examples(duplicated)}"
            )
    neuroid_index = pd.Index(neuroid_ids)
    if not neuroid_index.is_unique:
        duplicated = neuroid_index[neuroid_index.duplicated()].unique().tolist()
        raise AssemblyValidationError(
            f"neuroid_id must be unique; {len(duplicated)} duplicated: {_examples(duplicated)}"
        )
    if require_finite and np.issubdtype(assembly.dtype, np.floating):
        _check_finite(np.asarray(assembly.values), assembly)
    return assembly


def check_stimulus_ids_match(
    actual: Sequence[str] | np.ndarray, expected: Sequence[str] | np.ndarray, *, what: str = "assembly"
) -> np.ndarray:
    """Return ``index`` such that ``actual[index] == expected``, or raise if the two id sets differ.

    Parameters
    ----------
    actual : sequence of str
        Unique stimulus ids in the order they came (e.g. a model assembly's rows).
    expected : sequence of str
        Unique stimulus ids in the order wanted (e.g. the recording's).
    what : str
        Name used in the error message.

    Raises
    ------
    ValueError
        If ids are missing from or extra to ``actual``.
    """
    actual_index = pd.Index(np.asarray(actual, dtype=object))
    expected_index = pd.Index(np.asarray(expected, dtype=object))
    missing = expected_index.difference(actual_index, sort=False)
    extra = actual_index.difference(expected_index, sort=False)
    if len(missing) or len(extra):
        parts = [f"{what} stimulus_ids do not match the benchmark's {len(expected_index)} stimuli"]
        if len(missing):
            parts.append(f"{len(missing)} missing: {_examples(missing.tolist())}")
        if len(extra):
            parts.append(f"{len(extra)} unexpected: {_examples(extra.tolist())}")
        raise AssemblyValidationError("; ".join(parts))
    return actual_index.get_indexer(expected_index)


def average_repetition(assembly: xr.DataArray) -> xr.DataArray:
    """Average presentations of the same ``stimulus_id`` (e.g. the repeats of a raw recording).

    Brain-Score's ``average_repetition`` groups by every presentation coordinate except ``repetition``; here the
    grouping key is ``stimulus_id`` alone, so other presentation coordinates are dropped unless constant within a
    stimulus (``stimulus_id``-level metadata is kept). NaN values are skipped, as ``mean(skipna=True)``.

    Parameters
    ----------
    assembly : xarray.DataArray
        Dims ``(presentation, neuroid)`` with ``stimulus_id`` on presentation.

    Returns
    -------
    xarray.DataArray
        One presentation per stimulus, ordered by first occurrence; neuroid coords kept.
    """
    assembly = assembly.transpose(PRESENTATION, NEUROID)
    stimulus_ids = np.asarray(assembly[STIMULUS_ID].values)
    codes, uniques = pd.factorize(stimulus_ids)
    values = np.asarray(assembly.values, dtype=np.float64)
    present = ~np.isnan(values)
    sums = np.zeros((len(uniques), values.shape[1]))
    counts = np.zeros_like(sums)
    np.add.at(sums, codes, np.where(present, values, 0.0))
    np.add.at(counts, codes, present)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts
    coords: dict[str, tuple[str, np.ndarray]] = {STIMULUS_ID: (PRESENTATION, np.asarray(uniques, dtype=object))}
    first = pd.Series(np.arange(len(codes))).groupby(codes).first().to_numpy()
    for name, coord in assembly.coords.items():
        if name == STIMULUS_ID or name == REPETITION:
            continue
        if coord.dims == (PRESENTATION,):
            column = np.asarray(coord.values)
            per_stimulus = pd.Series(column).groupby(codes).nunique(dropna=False).to_numpy()
            if (per_stimulus == 1).all():
                coords[str(name)] = (PRESENTATION, column[first])
        elif coord.dims == (NEUROID,):
            coords[str(name)] = (NEUROID, np.asarray(coord.values))
    return xr.DataArray(means, dims=(PRESENTATION, NEUROID), coords=coords, attrs=dict(assembly.attrs))
