"""``daflow ingest``: GRIB, NetCDF and climate-index text into the data contract.

Each source is opened lazily in contract names, the sources are joined (along ``time`` when they
hold the same variables, merged when they hold different ones), then variables, times and a
bounding box are selected and the result is chunked with dask, so that writing streams chunk by
chunk instead of loading a large file whole. Observation files pass through quality control
instead: concatenated along ``obs``, with missing values, duplicates and times outside ``--time``
flagged in ``qc``.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from daflow.errors import DaflowWarning, DataError, InputMissing, OptionError
from daflow.io.grib import is_grib, open_grib
from daflow.io.indices import open_index_text
from daflow.io.netcdf import is_netcdf, open_netcdf
from daflow.obs.qc import quality_control


def open_source(path: str | os.PathLike, filters: dict[str, str] | None = None, errors: str | None = None,
                blacklist: set[str] | None = None) -> xr.Dataset:
    """Open one input of any supported format, lazily, in contract names.

    Reports (BUFR, ODB-2, station CSV) become observation datasets, with errors from the table
    ``errors`` (TOML, see :func:`daflow.obs.reports.error_table`) and ``blacklist`` stations flagged.
    """
    path = Path(path)
    if not path.is_file():
        raise InputMissing(path, "no such file")
    if path.stat().st_size == 0:
        raise DataError(path, "empty file")
    reader = _report_reader(path)
    if reader is not None:
        if filters:
            raise DataError(path, "--filter applies to GRIB files only")
        from daflow.obs.reports import error_table, to_dataset

        return to_dataset(reader(path), path, error_table(errors), blacklist)
    if is_netcdf(path):  # first: a NetCDF made from GRIB may say "GRIB" in its attributes
        kind, opened = "NetCDF", open_netcdf(path)
    elif is_grib(path):
        return open_grib(path, filters)
    else:
        kind, opened = "text", open_index_text(path)
    if filters:
        raise DataError(path, f"--filter applies to GRIB files only; this is a {kind} file")
    return opened


def _report_reader(path: Path):
    from daflow.io.bufr import is_bufr, read_bufr
    from daflow.io.odb import is_odb, read_odb
    from daflow.io.stations import is_station_csv, read_station_csv

    if is_netcdf(path):
        return None
    if is_odb(path):
        return read_odb
    if is_bufr(path) and not is_grib(path):
        return read_bufr
    if is_station_csv(path):
        return read_station_csv
    return None


def ingest(
    sources: Sequence[str | os.PathLike],
    variables: Sequence[str] = (),
    filters: dict[str, str] | None = None,
    bbox: tuple[float, float, float, float] | None = None,
    time: str | None = None,
    chunks: dict[str, int | str] | None = None,
    name: str | None = None,
    renames: dict[str, str] | None = None,
    errors: str | None = None,
    blacklist: str | None = None,
) -> xr.Dataset:
    """Return the joined, selected, dask-chunked dataset (nothing is loaded yet).

    ``errors`` (a TOML error table) and ``blacklist`` (a file of station identifiers) apply to reports.
    """
    from daflow.obs.reports import read_blacklist

    banned = read_blacklist(blacklist) if blacklist else None
    parts = [open_source(s, filters, errors, banned) for s in sources]
    label = ", ".join(map(str, sources))
    kinds = {p.attrs.get("daflow_kind") for p in parts}
    if "observations" in kinds:
        if kinds != {"observations"}:
            raise DataError(label, "observation files cannot be joined with states")
        return _observations(parts, label, time)
    ds = parts[0] if len(parts) == 1 else _join(parts, sources)
    if variables:
        missing = [v for v in variables if v not in ds.data_vars]
        if missing:
            raise DataError(label, f"no variable {', '.join(missing)}; it has {', '.join(map(str, ds.data_vars))}")
        ds = ds[list(variables)]
    if name:
        if len(ds.data_vars) != 1:
            raise DataError(label, f"--name needs a single series; found {', '.join(map(str, ds.data_vars))} (use --rename OLD=NEW)")
        renames = {next(iter(ds.data_vars)): name, **(renames or {})}
    if renames:
        missing = [old for old in renames if old not in ds.variables]
        if missing:
            raise DataError(label, f"--rename: no variable {', '.join(missing)}")
        taken = [f"{old}={new}" for old, new in renames.items() if new != old and new in ds.variables and new not in renames]
        if taken:
            raise OptionError("rename", f"{', '.join(taken)}: the name is already taken (rename that variable too)")
        ds = ds.rename(renames)
    if time:
        ds = select_time(ds, time, label)
    if bbox:
        ds = select_bbox(ds, bbox, label)
    return ds.chunk(_chunks(ds, chunks))


def _observations(parts: list[xr.Dataset], label: str, window: str | None) -> xr.Dataset:
    """Observation files concatenated and quality-controlled (flagged in ``qc``, never dropped)."""
    obs = xr.concat(parts, dim="obs", combine_attrs="drop_conflicts") if len(parts) > 1 else parts[0]
    missing = [v for v in ("value", "error_std", "time", "variable") if v not in obs]
    if missing:
        raise DataError(label, f"observation file lacks {', '.join(missing)}")
    obs, counts = quality_control(obs, parse_time_window(window) if window else None)
    flagged = {k: v for k, v in counts.items() if v}
    if flagged:
        listed = ", ".join(f"{v} {k}" for k, v in flagged.items())
        warnings.warn(f"{label}: qc flagged {sum(flagged.values())} of {obs.sizes['obs']} observations ({listed}); "
                      "they are kept in the file and not assimilated", DaflowWarning, stacklevel=2)
    return obs


def _join(parts: list[xr.Dataset], sources) -> xr.Dataset:
    try:
        ds = xr.combine_by_coords(parts, combine_attrs="drop_conflicts", join="outer")
    except ValueError as err:
        raise DataError(", ".join(map(str, sources)), f"cannot join these inputs ({err})") from err
    if "time" in ds.indexes and not ds.indexes["time"].is_unique:
        raise DataError(", ".join(map(str, sources)), "the inputs overlap in time")
    return ds


def parse_time_window(text: str) -> tuple[object, object]:
    """'START/END' in ISO-8601 (either side may be empty; a trailing Z means UTC)."""
    if "/" not in text:
        raise ValueError(f"--time {text!r}: expected START/END")
    return tuple(_instant(p) for p in text.split("/", 1))


def _instant(text: str):
    text = text.strip()
    if not text:
        return None
    try:
        return float(text)  # model time of the Lorenz and SQG runs
    except ValueError:
        pass
    stamp = pd.Timestamp(text)
    return stamp.tz_convert("UTC").tz_localize(None) if stamp.tzinfo else stamp


def select_time(ds: xr.Dataset, window: str, label: str) -> xr.Dataset:
    if "time" not in ds.dims:
        raise DataError(label, "--time: the input has no time dimension")
    try:
        start, end = parse_time_window(window)
        out = ds.sel(time=slice(start, end))
    except (ValueError, TypeError) as err:
        raise DataError(label, f"--time {window}: {err}") from err
    if out.sizes["time"] == 0:
        raise DataError(label, f"--time {window} selects no time (the input spans "
                               f"{ds['time'].values[0]} to {ds['time'].values[-1]})")
    return out


def select_bbox(ds: xr.Dataset, bbox: tuple[float, float, float, float], label: str) -> xr.Dataset:
    """Keep grid points inside W,S,E,N (degrees); a box may cross the date line or 0 deg."""
    if "lat" not in ds.coords or "lon" not in ds.coords:
        raise DataError(label, "--bbox needs latitude and longitude coordinates")
    west, south, east, north = bbox
    width = (east - west) % 360 or (360.0 if east != west else 0.0)
    lat, lon = ds["lat"], ds["lon"]
    rel = (lon - west) % 360
    inside = (lat >= south) & (lat <= north) & (rel <= width)
    if not bool(inside.any()):
        raise DataError(label, f"--bbox {west},{south},{east},{north} holds no grid point")
    if lat.ndim == 1 and lon.ndim == 1:
        lon_idx = np.flatnonzero((rel <= width).values)
        lon_idx = lon_idx[np.argsort(rel.values[lon_idx], kind="stable")]
        out = ds.isel(lon=lon_idx, lat=np.flatnonzero(((lat >= south) & (lat <= north)).values))
        return out.assign_coords(lon=("lon", west + rel.values[lon_idx], ds["lon"].attrs))
    rows, cols = (np.flatnonzero(inside.any(d).values) for d in inside.dims[::-1])
    return ds.isel({inside.dims[0]: slice(rows[0], rows[-1] + 1), inside.dims[1]: slice(cols[0], cols[-1] + 1)})


def parse_chunks(text: str) -> dict[str, int | str]:
    """'time=24,member=1' -> {'time': 24, 'member': 1}; 'auto' values are passed to dask."""
    out: dict[str, int | str] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        dim, sep, size = item.partition("=")
        if not sep or not dim:
            raise ValueError(f"--chunks {text!r}: expected DIM=SIZE[,DIM=SIZE]")
        size = size.strip()
        if size != "auto":
            try:
                size = int(size)
            except ValueError:
                raise ValueError(f"--chunks {item!r}: the size is a whole number or auto") from None
            if size < 1:
                raise ValueError(f"--chunks {item!r}: the size must be at least 1")
        out[dim.strip()] = size
    return out


def _chunks(ds: xr.Dataset, chunks: dict[str, int | str] | None) -> dict[str, int | str]:
    """Default: dask's automatic chunk size along time, whole along the other dims."""
    if chunks is None:
        return {"time": "auto"} if "time" in ds.dims else {}
    unknown = [d for d in chunks if d not in ds.dims]
    if unknown:
        raise DataError(None, f"--chunks: no dimension {', '.join(unknown)}; the data has {', '.join(map(str, ds.dims))}")
    return chunks
