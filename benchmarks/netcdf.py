"""Brain-Score's netCDF assembly format, read and written.

Brain-Score (brain-score/core ``supported_data_standards/brainio``) keeps every coordinate of a dim in a pandas
MultiIndex in memory (``DataAssembly`` / ``gather_indexes``) but stores plain 1-D coordinate variables on disk:
``write_netcdf`` runs ``reset_index`` on every index, drops attrs that are DataFrames, DataArrays or ``None``, and
writes a dataset whose single data variable is named ``data`` (zlib, level 9). ``AssemblyLoader`` opens it with
``xr.open_dataarray`` and renames a legacy ``image_id`` coordinate to ``stimulus_id``.

:func:`read_assembly` and :func:`write_assembly` do the same with plain :class:`xarray.DataArray` objects, so their
files load here and ours load in their tools (``NeuroidAssembly(xr.open_dataarray(path))``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from .dims import STIMULUS_ID

__all__ = ["flatten_multiindex", "read_assembly", "write_assembly"]


def flatten_multiindex(assembly: xr.DataArray) -> xr.DataArray:
    """Turn every MultiIndex (Brain-Score's in-memory layout) into plain coordinates on its dim."""
    multi = [name for name, index in assembly.indexes.items() if isinstance(index, pd.MultiIndex)]
    if multi:
        assembly = assembly.reset_index(multi)
        # xarray keeps a leftover coordinate named like the dim (the flattened tuples); drop it
        leftovers = [name for name in multi if name in assembly.coords and assembly[name].dims == (name,)]
        assembly = assembly.drop_vars(leftovers)
    return assembly


def read_assembly(path: str | os.PathLike[str], *, group: str | None = None) -> xr.DataArray:
    """Load an assembly written by Brain-Score's ``write_netcdf`` (or :func:`write_assembly`) into memory.

    Parameters
    ----------
    path : path
        A netCDF file holding one data variable.
    group : str, optional
        netCDF group (Brain-Score stores extras in groups).

    Returns
    -------
    xarray.DataArray
        Plain coordinates (no MultiIndex); ``image_id`` copied to ``stimulus_id`` when only the former exists.

    Raises
    ------
    FileNotFoundError, ValueError
        Missing file, or a file with no or several data variables.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"assembly file {path} not found")
    with xr.open_dataset(path, group=group) as dataset:
        names = list(dataset.data_vars)
        if len(names) != 1:
            raise ValueError(f"{path}: expected one data variable in a Brain-Score assembly, found {names}")
        assembly = dataset[names[0]].load()
    assembly.name = None if names[0] in ("data", "__xarray_dataarray_variable__") else names[0]
    assembly = flatten_multiindex(assembly)
    if "image_id" in assembly.coords and STIMULUS_ID not in assembly.coords:
        assembly = assembly.assign_coords({STIMULUS_ID: (assembly["image_id"].dims, assembly["image_id"].values)})
    for name in list(assembly.coords):  # netCDF stores strings as object arrays already; keep bytes readable
        values = assembly[name].values
        if values.dtype.kind == "S":
            assembly = assembly.assign_coords({name: (assembly[name].dims, values.astype(str).astype(object))})
    return assembly


def write_assembly(
    assembly: xr.DataArray,
    path: str | os.PathLike[str],
    *,
    compress: bool = True,
    group: str | None = None,
    append: bool = False,
) -> Path:
    """Write ``assembly`` as Brain-Score's ``write_netcdf`` does (data variable ``data``, plain coordinates).

    Parameters
    ----------
    assembly : xarray.DataArray
        Any assembly; MultiIndexes are flattened, attrs that netCDF cannot hold (None, DataFrames, DataArrays,
        dicts) are dropped, booleans become 0/1.
    path : path
    compress : bool, default=True
        zlib level 9, as Brain-Score.
    group : str, optional
    append : bool, default=False

    Returns
    -------
    pathlib.Path
    """
    path = Path(path)
    assembly = flatten_multiindex(assembly.copy())
    attrs = {}
    for key, value in assembly.attrs.items():
        if value is None or isinstance(value, (pd.DataFrame, xr.DataArray, dict)):
            continue
        attrs[key] = int(value) if isinstance(value, (bool, np.bool_)) else value
    assembly.attrs = attrs
    for name in list(assembly.coords):  # netCDF4 cannot store object arrays of mixed types; strings are fine
        values = assembly[name].values
        if values.dtype == object and not all(isinstance(v, str) for v in values.ravel().tolist()):
            assembly = assembly.assign_coords({name: (assembly[name].dims, values.astype(str).astype(object))})
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset = assembly.to_dataset(name="data", promote_attrs=True)
    encoding = {"data": {"zlib": True, "complevel": 9}} if compress else {}
    dataset.to_netcdf(path, mode="a" if append else "w", group=group, encoding=encoding, engine="netcdf4")
    return path

