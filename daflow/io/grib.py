"""GRIB through cfgrib/ecCodes, opened lazily so that dask can stream it.

cfgrib builds one hypercube per file; a file mixing level types or grids cannot be one cube, and
cfgrib's ``DatasetBuildError`` lists the ``filter_by_keys`` that would work: we turn those into
``--filter KEY=VALUE`` choices. cfgrib skips corrupted messages with a log record and returns what
it could read; we turn that record into an error, so a damaged file never yields a silently
shorter dataset. Grids that are not a lat/lon product (reduced Gaussian, unstructured) come out of
cfgrib along ``values``; they become the contract's ``point`` dimension with ``lat(point)`` and
``lon(point)``. Variables that cfgrib leaves out of the cube become one-line warnings that give
the ``--filter`` that reads them (the filters already given plus the variable's ``paramId``:
cfgrib's names such as ``u10`` are not GRIB shortNames, which is ``10u``).

What the contract cannot represent is refused: spectral coefficients (gridType ``sh``), a grid
without coordinates, a regular grid whose decoded coordinates are not evenly spaced (an
inconsistent header: ecCodes then yields latitudes such as -90, -88, ..., -70, 90). ecCodes prints
its own ``ECCODES ERROR`` lines straight to file descriptor 2; :func:`ecCodes_stderr` keeps them
off the user's terminal and the first one goes into the one-line error.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator

import numpy as np
import xarray as xr

from daflow.errors import DaflowWarning, DataError
from daflow.io.conventions import to_contract_names

GRIB_MAGIC = b"GRIB"
SPECTRAL = ("sh", "rotated_sh", "stretched_sh", "stretched_rotated_sh")


def is_grib(path: str | os.PathLike) -> bool:
    """A GRIB edition 1 or 2 message starts within the first 4 KiB (after a WMO header, if any)."""
    with open(path, "rb") as f:
        return GRIB_MAGIC in f.read(4096)


@contextlib.contextmanager
def ecCodes_stderr() -> Iterator[list[str]]:
    """Capture what ecCodes writes to file descriptor 2 (``ECCODES ERROR : ...`` from C) while the
    block runs: the list yielded receives those messages (prefix removed); anything else written
    there meanwhile is passed on to stderr afterwards."""
    messages: list[str] = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no descriptor 2 (a daemon): nothing to capture
        yield messages
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield messages
        finally:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            other = []
            for line in sink.read().decode("utf-8", "replace").splitlines():
                if line.startswith("ECCODES"):
                    messages.append(line.split(":", 1)[-1].strip())
                elif line.strip():
                    other.append(line)
            if other:
                sys.stderr.write("\n".join(other) + "\n")


class _CfgribLog(logging.Handler):
    """Collect what cfgrib logs (with tracebacks): skipped variables, corrupted messages."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.skipped: dict[str, str] = {}  # cfgrib's variable name -> paramId
        self.corrupted = False

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        found = re.search(r"paramId==(\d+) shortName='([^']+)'", message)
        if found:
            self.skipped.setdefault(found.group(2), found.group(1))
        self.corrupted |= "corrupted" in message


def open_grib(path: str | os.PathLike, filters: dict[str, str] | None = None) -> xr.Dataset:
    """Open one GRIB file as a lazy dataset in contract names (time = valid time)."""
    logger = logging.getLogger("cfgrib")
    log = _CfgribLog()
    logger.addHandler(log)
    logger.propagate = False
    kwargs = {"indexpath": "", "filter_by_keys": _typed(filters or {})}
    try:
        with ecCodes_stderr() as said:
            ds = xr.open_dataset(path, engine="cfgrib", backend_kwargs=kwargs, decode_timedelta=True)
    except Exception as err:  # cfgrib and gribapi raise many unrelated types
        raise DataError(path, _explain(err, said)) from err
    finally:
        logger.removeHandler(log)
        logger.propagate = True
    if log.corrupted:
        raise DataError(path, "corrupted or truncated GRIB message(s); ecCodes cannot decode the file whole")
    if not ds.data_vars:
        raise DataError(path, f"no GRIB messages match --filter {_show(filters)}{_near_misses(path, filters or {})}")
    for name, param in log.skipped.items():
        choice = _show({**(filters or {}), "paramId": param}, sep=" --filter ")
        warnings.warn(f"{path}: skipped GRIB variable {name} (paramId {param}; it does not fit the others' "
                      f"levels); ingest it alone with --filter {choice}", DaflowWarning, stacklevel=2)
    _check_grid(ds, path)
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
    if "time" not in ds.dims:
        raise DataError(path, "the GRIB messages have no valid date (ecCodes cannot read dataDate/dataTime)")
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


def _check_grid(ds: xr.Dataset, path) -> None:
    """DataError for a grid the contract cannot hold: spectral, without coordinates, or an inconsistent regular grid."""
    for name, var in ds.data_vars.items():
        grid = var.attrs.get("GRIB_gridType", "unknown")
        if grid in SPECTRAL:
            raise DataError(path, f"{name} is on gridType {grid} (spherical-harmonic coefficients, not values at grid "
                                  "points); transform it to a grid first (e.g. cdo sp2gp or MIR)")
        if "values" in var.dims and not {"latitude", "longitude"} <= set(ds.coords):
            raise DataError(path, f"{name} is on gridType {grid}, for which ecCodes gives no latitudes and longitudes")
        if not grid.startswith("regular_"):
            continue
        for coord, key in (("latitude", "j"), ("longitude", "i")):
            if coord not in ds.coords or ds[coord].ndim != 1 or ds[coord].size < 2:
                continue
            step = np.diff(ds[coord].values.astype(float))
            if coord == "longitude":
                step %= 360.0
            uneven = grid == "regular_ll" and np.ptp(step) > max(2.5e-3, 1e-3 * abs(float(np.mean(step))))
            if uneven or not ((step > 0).all() or (step < 0).all()):
                values = ds[coord].values
                shown = ", ".join(f"{v:g}" for v in values[:4]) + (f", ..., {', '.join(f'{v:g}' for v in values[-2:])}"
                                                                   if values.size > 6 else "")
                increment = var.attrs.get(f"GRIB_{key}DirectionIncrementInDegrees", "?")
                raise DataError(path, f"inconsistent {grid} grid of {name}: {values.size} {coord}s with increment "
                                      f"{increment} deg do not span the grid's first and last points (ecCodes decodes {shown})")


def _near_misses(path, filters: dict[str, str]) -> str:
    """What the file has for the keys of a filter that matched nothing (cfgrib's names are not GRIB keys)."""
    import eccodes

    if not filters:
        return ""
    found: dict[str, set[str]] = {key: set() for key in filters}
    aliases: dict[str, str] = {}
    with ecCodes_stderr(), open(path, "rb") as f:
        for _ in range(100_000):
            try:
                handle = eccodes.codes_grib_new_from_file(f)
            except Exception:  # noqa: BLE001 (a damaged message ends the scan)
                break
            if handle is None:
                break
            try:
                for key in filters:
                    with contextlib.suppress(Exception):
                        found[key].add(str(eccodes.codes_get(handle, key, ktype=str)))
                with contextlib.suppress(Exception):
                    aliases[str(eccodes.codes_get(handle, "cfVarName", ktype=str))] = str(eccodes.codes_get(handle, "shortName", ktype=str))
            finally:
                eccodes.codes_release(handle)
    notes = []
    for key, value in filters.items():
        if key == "shortName" and value not in found[key] and value in aliases:
            notes.append(f"{value} is cfgrib's name for the GRIB shortName {aliases[value]}: use --filter shortName={aliases[value]}")
        elif found[key] and value not in found[key]:
            values = sorted(found[key])
            notes.append(f"{key} takes {', '.join(values[:12])}{', ...' if len(values) > 12 else ''} in this file")
        elif not found[key]:
            notes.append(f"no message has the key {key}")
    return f" ({'; '.join(notes)})" if notes else ""


def _show(filters, sep: str = " ") -> str:
    return sep.join(f"{k}={v}" for k, v in (filters or {}).items()) or "(none)"


def _explain(err: Exception, said: list[str] | None = None) -> str:
    text = str(err)
    choices = re.findall(r"filter_by_keys=\{([^}]*)\}", text)
    if choices:
        listed = ", ".join("--filter " + " --filter ".join(f"{k}={v}" for k, v in re.findall(r"'(\w+)': '?([^',]+)'?", c))
                           for c in choices)
        return f"heterogeneous GRIB (several level types or grids in one file); choose one of: {listed}"
    detail = f"; ecCodes: {said[0]}" if said else ""
    if type(err).__module__.startswith(("gribapi", "eccodes")):
        return f"ecCodes cannot read the file ({type(err).__name__}: {text or 'no detail'}{detail})"
    return f"cannot decode GRIB ({type(err).__name__}: {text.splitlines()[0] if text else ''}{detail})"
