"""GRIB through cfgrib/ecCodes, opened lazily so that dask can stream it.

cfgrib builds one hypercube per file; a file mixing level types or grids cannot be one cube, and
cfgrib's ``DatasetBuildError`` lists the ``filter_by_keys`` that would work: we turn those into
``--filter KEY=VALUE`` choices. cfgrib skips corrupted messages with a log record and returns what
it could read; we turn that record into an error, so a damaged file never yields a silently
shorter dataset. Grids that are not a lat/lon product (reduced Gaussian, unstructured) come out of
cfgrib along ``values``; they become the contract's ``point`` dimension with ``lat(point)`` and
``lon(point)``. Variables that cfgrib leaves out of the cube become one-line warnings.
"""
from __future__ import annotations

import logging
import os
import re
import warnings

import numpy as np
import xarray as xr

from daflow.errors import DaflowWarning, DataError
from daflow.io.conventions import to_contract_names

GRIB_MAGIC = b"GRIB"


def is_grib(path: str | os.PathLike) -> bool:
    """A GRIB edition 1 or 2 message starts within the first 4 KiB (after a WMO header, if any)."""
    with open(path, "rb") as f:
        return GRIB_MAGIC in f.read(4096)


class _CfgribLog(logging.Handler):
    """Collect what cfgrib logs (with tracebacks): skipped variables, corrupted messages."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.skipped: list[str] = []
        self.corrupted = False

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        found = re.search(r"shortName='([^']+)'", message)
        if found:
            self.skipped.append(found.group(1))
        self.corrupted |= "corrupted" in message


def open_grib(path: str | os.PathLike, filters: dict[str, str] | None = None) -> xr.Dataset:
    """Open one GRIB file as a lazy dataset in contract names (time = valid time)."""
    logger = logging.getLogger("cfgrib")
    log = _CfgribLog()
    logger.addHandler(log)
    logger.propagate = False
    kwargs = {"indexpath": "", "filter_by_keys": _typed(filters or {})}
    try:
        ds = xr.open_dataset(path, engine="cfgrib", backend_kwargs=kwargs, decode_timedelta=True)
    except Exception as err:  # cfgrib and gribapi raise many unrelated types
        raise DataError(path, _explain(err)) from err
    finally:
        logger.removeHandler(log)
        logger.propagate = True
    if log.corrupted:
        raise DataError(path, "corrupted or truncated GRIB message(s); ecCodes cannot decode the file whole")
    if not ds.data_vars:
        raise DataError(path, f"no GRIB messages match --filter {_show(filters)}")
    for name in dict.fromkeys(log.skipped):
        warnings.warn(f"{path}: skipped GRIB variable {name} (it does not fit the others' "
                      f"levels); ingest it alone with --filter shortName={name}", DaflowWarning, stacklevel=2)
    level_types = {v.attrs.get("GRIB_typeOfLevel") for v in ds.data_vars.values()}
    level_name = level_types.pop() if len(level_types) == 1 else None
    ds = _valid_time(ds, path)
    if "number" in ds.coords and "number" not in ds.dims:
        ds = ds.drop_vars("number")
    if level_name in ds.coords and level_name not in ds.dims:
        ds = ds.drop_vars(level_name)  # a single-level field (surface, 2 m): no level dim
    ds.attrs["source"] = f"GRIB file {os.path.basename(path)} decoded by cfgrib/ecCodes"
    ds = to_contract_names(ds, level_name)
    if "values" in ds.dims:
        ds = ds.rename_dims(values="point")
    return ds


def _valid_time(ds: xr.Dataset, path) -> xr.Dataset:
    """Index states by valid time: (reference time, step) becomes one ``time`` dimension."""
    if "step" in ds.dims and "time" in ds.dims:
        ds = ds.stack(valid=("time", "step"))
        valid = ds["valid_time"].values
        ds = ds.drop_vars(["valid", "time", "step", "valid_time"]).rename(valid="time")
        ds = ds.assign_coords(time=valid)
    elif "step" in ds.dims:
        ds = ds.swap_dims(step="valid_time").drop_vars(["time", "step"]).rename(valid_time="time")
    elif "valid_time" in ds.coords:
        valid = np.atleast_1d(ds["valid_time"].values)
        ds = ds.drop_vars([n for n in ("valid_time", "step", "time") if n in ds.coords])
        ds = ds.assign_coords(time=("time", valid)) if "time" in ds.dims else ds.expand_dims(time=valid)
    if not ds.indexes["time"].is_unique:
        raise DataError(path, "several messages share one valid time; select one forecast with --filter step=H or dataDate=YYYYMMDD")
    ds["time"].attrs = {"standard_name": "time", "long_name": "valid time"}
    return ds


def _typed(filters: dict[str, str]) -> dict[str, object]:
    """cfgrib compares filter values with typed GRIB keys: '850' must be the integer 850."""
    typed = {}
    for key, value in filters.items():
        try:
            typed[key] = int(value)
        except ValueError:
            try:
                typed[key] = float(value)
            except ValueError:
                typed[key] = value
    return typed


def _show(filters) -> str:
    return " ".join(f"{k}={v}" for k, v in (filters or {}).items()) or "(none)"


def _explain(err: Exception) -> str:
    text = str(err)
    choices = re.findall(r"filter_by_keys=\{'(\w+)': '?([^'}]+)'?\}", text)
    if choices:
        listed = ", ".join(f"--filter {k}={v}" for k, v in choices)
        return f"heterogeneous GRIB (several level types or grids in one file); choose one of: {listed}"
    if type(err).__module__.startswith(("gribapi", "eccodes")):
        return f"ecCodes cannot read the file ({type(err).__name__}: {text or 'no detail'})"
    return f"cannot decode GRIB ({type(err).__name__}: {text.splitlines()[0] if text else ''})"
