"""NetCDF inputs through netCDF4, opened lazily (no dask chunks yet: the caller chunks)."""
from __future__ import annotations

import os

import xarray as xr

from daflow.errors import DataError
from daflow.io.contract import sorted_in_time
from daflow.io.conventions import to_contract_names

NETCDF_MAGIC = (b"CDF\x01", b"CDF\x02", b"CDF\x05", b"\x89HDF")


def is_netcdf(path: str | os.PathLike) -> bool:
    with open(path, "rb") as f:
        return f.read(4) in NETCDF_MAGIC


def open_netcdf(path: str | os.PathLike) -> xr.Dataset:
    """Open a NetCDF file in contract names; a daflow file keeps its kind and history."""
    try:
        ds = xr.open_dataset(path, engine="netcdf4")
    except (OSError, ValueError) as err:
        raise DataError(path, f"cannot read NetCDF ({err})") from err
    return sorted_in_time(to_contract_names(ds), path)
