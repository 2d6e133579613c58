"""The data contract between subcommands (DESIGN.md, "The data contract").

Every file daflow writes is NetCDF4 following CF-1.10 with global attributes ``daflow_kind``,
``daflow_version`` and a ``history`` line per command (newest first, as NCO and CDO write it).
Data variables keep their dimensions in the canonical order
``member, time, level, lat, lon`` / ``member, time, level, y, x`` / ``member, time, i`` /
``member, time, level, point`` (unstructured grids, with ``lat(point)`` and ``lon(point)``).
Readers check ``daflow_kind`` and the dimensions they need, and fail with one line naming the file.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from pathlib import Path

import xarray as xr

from daflow import __version__
from daflow.errors import DaflowWarning, DataError, InputMissing, OutputError
from daflow.io.atomic import atomic_path
from daflow.io.history import history_line
from daflow.progress import dask_progress

KINDS = ("state", "observations", "analysis", "scores", "causal")
CONVENTIONS = "CF-1.10"
CANONICAL_DIMS = ("member", "time", "level", "lat", "lon", "y", "x", "i", "point")


def unknown_dims(dims: Iterable) -> list[str]:
    """The dimensions among ``dims`` that the contract does not know (e.g. a climatology's ``month``)."""
    return [str(d) for d in dims if d not in CANONICAL_DIMS]


def canonical_order(ds: xr.Dataset) -> xr.Dataset:
    """Transpose every data variable to the canonical order; other dims go first."""
    out = ds.copy()
    for name, var in ds.data_vars.items():
        known = [d for d in CANONICAL_DIMS if d in var.dims]
        out[name] = var.transpose(*unknown_dims(var.dims), *known)
    return out


def stamp(ds: xr.Dataset, kind: str, command: str | None = None) -> xr.Dataset:
    """Return ``ds`` with the contract's global attributes and a new history line."""
    if kind not in KINDS:
        raise ValueError(f"unknown daflow_kind {kind!r}")
    previous = str(ds.attrs.get("history", "")).strip()
    line = history_line(command)
    out = ds.copy()
    out.attrs = {
        **ds.attrs,
        "Conventions": CONVENTIONS,
        "daflow_kind": kind,
        "daflow_version": __version__,
        "history": f"{line}\n{previous}" if previous else line,
    }
    return out


def open_dataset(
    path: str | os.PathLike,
    kinds: Iterable[str] | None = ("state",),
    dims: Iterable[str] = (),
    chunks: dict | None = None,
) -> xr.Dataset:
    """Open a daflow file, checking its kind and required dimensions.

    ``kinds=None`` accepts any NetCDF file (used by ``ingest``). Raises :class:`InputMissing`
    (exit 66) when the file is absent, :class:`DataError` (exit 65) when it is not what is needed.
    """
    path = Path(path)
    if not path.is_file():
        raise InputMissing(path, "no such file")
    try:
        ds = xr.open_dataset(path, engine="netcdf4", chunks=chunks)
    except (OSError, ValueError) as err:
        raise DataError(path, f"not a readable NetCDF file ({err})") from err
    if kinds is not None:
        kinds = tuple(kinds)
        kind = ds.attrs.get("daflow_kind")
        if kind not in kinds:
            ds.close()
            found = f"daflow_kind {str(kind)!r}" if kind else "no daflow_kind attribute"
            raise DataError(path, f"{found}; expected {' or '.join(kinds)}")
    missing = [d for d in dims if d not in ds.dims]
    if missing:
        ds.close()
        raise DataError(path, f"missing dimension(s) {', '.join(missing)}")
    return sorted_in_time(ds, path)


def sorted_in_time(ds: xr.Dataset, source: str | os.PathLike | None = None) -> xr.Dataset:
    """``ds`` with its time axis increasing: an unsorted axis is sorted (with a warning), a repeated time is a DataError."""
    if "time" not in ds.dims or "time" not in ds.indexes:
        return ds
    index = ds.indexes["time"]
    if index.is_monotonic_increasing and index.is_unique:
        return ds
    if not index.is_unique:
        repeated = index[index.duplicated()][0]
        ds.close()
        raise DataError(source, f"time {repeated} appears more than once")
    warnings.warn(f"{source}: the time axis is not in increasing order; sorted on read", DaflowWarning, stacklevel=3)
    return ds.sortby("time")


def write_dataset(ds: xr.Dataset, path: str | os.PathLike, kind: str) -> Path:
    """Stamp ``ds`` as ``kind`` and write it atomically (dask-backed data stream chunk by chunk)."""
    ds = canonical_order(stamp(ds, kind))
    for name, var in ds.variables.items():
        # Source encodings (packing, chunking, time units) do not carry over: xarray picks them.
        var.encoding = {"_FillValue": None} if name in ds.coords and var.dtype.kind == "f" else {}
    with atomic_path(path) as tmp, dask_progress(f"writing {Path(path).name}"):
        try:
            ds.to_netcdf(tmp, engine="netcdf4", format="NETCDF4")
        except RuntimeError as err:  # HDF5 reports EFBIG / ENOSPC without an errno
            if "NetCDF" not in str(err):
                raise
            raise OutputError(path, f"writing failed ({err}): file-size limit, full disk or I/O error") from err
    return Path(path)
