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
    join: str = "exact",
    select: dict[str, str] | None = None,
) -> xr.Dataset:
    """Return the joined, selected, dask-chunked dataset (nothing is loaded yet).

    ``errors`` (a TOML error table) and ``blacklist`` (a file of station identifiers) apply to reports.
    ``join`` lines up the times of inputs of different variables (:func:`_join`); ``select`` picks one
    value along a dimension (``{"member": "0"}``, ``{"month": "7"}``), dropping it. A dimension of the
    result that the data contract does not know (e.g. ``month`` of a climatology) is kept, with a warning.
    """
    from daflow.obs.reports import read_blacklist

    banned = read_blacklist(blacklist) if blacklist else None
    parts = [open_source(s, filters, errors, banned) for s in sources]
    label = ", ".join(map(str, sources))
    kinds = {p.attrs.get("daflow_kind") for p in parts}
    if "observations" not in kinds and (errors or blacklist):
        raise OptionError("obs_errors" if errors else "blacklist", "applies to report files (BUFR, ODB-2, station CSV)")
    if "observations" in kinds:
        if kinds != {"observations"}:
            raise DataError(label, "observation files cannot be joined with states")
        if select or join != "exact" or renames:
            raise OptionError("sel" if select else "join" if join != "exact" else "rename",
                              "applies to gridded states, not to observation files")
        return _observations(parts, label, time, variables, bbox)
    ds = parts[0] if len(parts) == 1 else _join(parts, sources, join)
    if select:
        ds = select_values(ds, select, label)
    _check_dimensions(ds, label)
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


def _observations(parts: list[xr.Dataset], label: str, window: str | None, variables: Sequence[str] = (),
                  bbox: tuple[float, float, float, float] | None = None) -> xr.Dataset:
    """Observation files concatenated, the reports of ``variables`` inside ``bbox`` kept, and quality-controlled
    (flagged in ``qc``, never dropped)."""
    obs = xr.concat(parts, dim="obs", combine_attrs="drop_conflicts") if len(parts) > 1 else parts[0]
    missing = [v for v in ("value", "error_std", "time", "variable") if v not in obs]
    if missing:
        raise DataError(label, f"observation file lacks {', '.join(missing)}")
    keep = np.ones(obs.sizes["obs"], bool)
    if variables:
        observed = obs["variable"].values.astype(str)
        absent = sorted(set(variables) - set(observed))
        if absent:
            raise DataError(label, f"no report of {', '.join(absent)} (the reports are of {', '.join(np.unique(observed))})")
        keep &= np.isin(observed, list(variables))
    if bbox is not None:
        if "lat" not in obs or "lon" not in obs:
            raise DataError(label, "--bbox needs report latitudes and longitudes")
        _, south, _, north = bbox
        lat, (east_of_west, width) = obs["lat"].values, _east_of_west(obs["lon"].values, bbox)
        keep &= (lat >= south) & (lat <= north) & (east_of_west <= width)
    if not keep.all():
        if not keep.any():
            raise DataError(label, "no report is of the variables and inside the box asked for")
        obs = obs.isel(obs=np.flatnonzero(keep))
    obs, counts = quality_control(obs, time_window_for(obs["time"], window, label) if window else None)
    flagged = {k: v for k, v in counts.items() if v}
    if flagged:
        listed = ", ".join(f"{v} {k}" for k, v in flagged.items())
        warnings.warn(f"{label}: qc flagged {sum(flagged.values())} of {obs.sizes['obs']} observations ({listed}); "
                      "they are kept in the file and not assimilated", DaflowWarning, stacklevel=2)
    return obs


JOINS = ("exact", "inner", "outer")


def _join(parts: list[xr.Dataset], sources, join: str = "exact") -> xr.Dataset:
    """Files of the same variables are concatenated along time; files of different variables are merged.

    Every other coordinate (member, level, lat, lon, ...) must be the same in all inputs: nothing is
    padded with NaN. Merged inputs must share their times unless ``join`` asks for the ``inner``
    (common times) or ``outer`` (union, NaN where an input has no value) join of the time axes.
    """
    label = ", ".join(map(str, sources))
    if join not in JOINS:
        raise OptionError("join", f"join is one of {', '.join(JOINS)}, not {join!r}")
    groups: dict[frozenset, list[tuple[xr.Dataset, str]]] = {}
    for ds, source in zip(parts, sources):
        groups.setdefault(frozenset(map(str, ds.data_vars)), []).append((ds, str(source)))
    joined = [_concat_in_time(group, label) for group in groups.values()]
    if len(joined) == 1:
        return joined[0][0]
    first, first_name = joined[0]
    seen = dict.fromkeys(map(str, first.data_vars), first_name)
    for ds, name in joined[1:]:
        _same_coordinates(first, first_name, ds, name, label)
        for var in map(str, ds.data_vars):
            if var in seen:
                raise DataError(label, f"variable {var} is in {seen[var]} and {name} alongside different variables "
                                       "(select with --var, or rename with --rename)")
            seen[var] = name
    axes = [(name, ds.indexes["time"]) for ds, name in joined if "time" in ds.indexes]
    if len(axes) > 1 and join == "exact" and not all(axes[0][1].equals(t) for _, t in axes[1:]):
        (a, ta), (b, tb) = axes[0], next((n, t) for n, t in axes[1:] if not axes[0][1].equals(t))
        common = len(ta.intersection(tb))
        raise DataError(label, f"the times differ: {a} has {len(ta)} ({_span(ta)}), {b} has {len(tb)} ({_span(tb)}); "
                               f"--join inner keeps the {common} common time(s), --join outer takes the union padded with NaN")
    return xr.merge([ds for ds, _ in joined], join=join, combine_attrs="drop_conflicts", compat="override")


def _concat_in_time(group: list[tuple[xr.Dataset, str]], label: str) -> tuple[xr.Dataset, str]:
    if len(group) == 1:
        return group[0]
    first, first_name = group[0]
    for ds, name in group[1:]:
        _same_coordinates(first, first_name, ds, name, label, same_dims=True)
    missing = [name for ds, name in group if "time" not in ds.dims]
    if missing:
        raise DataError(label, f"{missing[0]} has no time dimension: files of the same variables are joined along time")
    ds = xr.concat([g[0] for g in group], dim="time", data_vars="minimal", coords="minimal", compat="override",
                   combine_attrs="drop_conflicts")
    if not ds.indexes["time"].is_unique:
        raise DataError(label, "the inputs overlap in time")
    return ds.sortby("time"), " + ".join(name for _, name in group)


def _same_coordinates(a: xr.Dataset, a_name: str, b: xr.Dataset, b_name: str, label: str, same_dims: bool = False) -> None:
    """DataError naming the first coordinate other than time in which two inputs differ."""
    if same_dims:
        for var in a.data_vars:
            if set(a[var].dims) != set(b[var].dims):
                raise DataError(label, f"{var} has dimensions ({', '.join(map(str, a[var].dims))}) in {a_name} but "
                                       f"({', '.join(map(str, b[var].dims))}) in {b_name}")
    for dim in sorted(set(map(str, a.dims)) & set(map(str, b.dims)) - {"time"}):
        if a.sizes[dim] != b.sizes[dim]:
            raise DataError(label, f"{a_name} has {a.sizes[dim]} {dim} values, {b_name} {b.sizes[dim]}: "
                                   "refusing to pad the difference with NaN")
        if dim in a.coords and dim in b.coords:
            x, y = a[dim].values, b[dim].values
            equal = np.allclose(x, y, rtol=0, atol=1e-6) if x.dtype.kind in "fiu" and y.dtype.kind in "fiu" else (x == y).all()
            if not equal:
                k = int(np.flatnonzero(~np.isclose(x, y, rtol=0, atol=1e-6) if x.dtype.kind in "fiu" else x != y)[0])
                raise DataError(label, f"{a_name} and {b_name} differ in {dim} ({x[k]} vs {y[k]} at index {k}): "
                                       "refusing to join on unequal coordinates")


def _span(index: pd.Index) -> str:
    return f"{index[0]} to {index[-1]}" if len(index) else "none"


def select_values(ds: xr.Dataset, select: dict[str, str], label: str) -> xr.Dataset:
    """One value along each named dimension (dropped, except time); the value is read as the coordinate's type."""
    for dim, text in select.items():
        if dim not in ds.dims:
            raise DataError(label, f"--sel {dim}={text}: no dimension {dim}; the data has {', '.join(map(str, ds.dims))}")
        index = ds.indexes.get(dim)
        value: object = text
        if index is None:
            try:
                value = int(text)
                ds = ds.isel({dim: value})
            except (ValueError, IndexError):
                raise DataError(label, f"--sel {dim}={text}: {dim} has no coordinate; give a position 0..{ds.sizes[dim] - 1}") from None
            continue
        try:
            if index.dtype.kind in "iuf":
                value = float(text)
            elif index.dtype.kind == "M":
                value = _instant(text)
            ds = ds.sel({dim: [value] if dim == "time" else value})  # a state keeps its time axis
        except (KeyError, ValueError, TypeError):
            shown = ", ".join(map(str, index[:8])) + (", ..." if len(index) > 8 else "")
            raise DataError(label, f"--sel {dim}={text}: no such {dim}; it takes {shown}") from None
        ds = ds.drop_vars(dim) if dim in ds.coords and ds[dim].ndim == 0 else ds
    return ds


def _check_dimensions(ds: xr.Dataset, label: str) -> None:
    """Warn (once) when a data variable lies along a dimension the contract does not know.

    ingest converts what it is given (e.g. a monthly climatology along ``month``), so such a file is
    written, but no other command could read it: the warning names the dimension and the ``--sel``
    that makes it a state.
    """
    from daflow.io.contract import CANONICAL_DIMS, unknown_dims

    bounds = {str(v.attrs["bounds"]) for v in ds.variables.values() if "bounds" in v.attrs}
    for name, var in ds.data_vars.items():
        if str(name) in bounds or str(name).endswith(("_bnds", "_bounds")):
            continue
        unknown = unknown_dims(var.dims)
        if unknown:
            dim = unknown[0]
            values = ds[dim].values if dim in ds.coords else np.arange(ds.sizes[dim])
            shown = ", ".join(map(str, values[:6])) + (", ..." if len(values) > 6 else "")
            warnings.warn(f"{label}: {name} has a dimension {dim} ({shown}) that no other daflow command reads "
                          f"(they take {', '.join(CANONICAL_DIMS)}); kept as it is; pick one with --sel {dim}={values[0]}",
                          DaflowWarning,
                          stacklevel=2)
            return


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
    start, end = time_window_for(ds["time"], window, label)
    out = ds.sel(time=slice(start, end))
    if out.sizes["time"] == 0:
        raise DataError(label, f"--time {window} selects no time (the input spans "
                               f"{ds['time'].values.min()} to {ds['time'].values.max()})")
    return out


def time_window_for(times: xr.DataArray, window: str, label: str) -> tuple[object, object]:
    """The bounds of ``window`` for these times; DataError when a bound is a date and the times are model times, or the reverse."""
    try:
        start, end = parse_time_window(window)
    except ValueError as err:
        raise DataError(label, f"--time {window}: {err}") from err
    calendar = np.issubdtype(times.dtype, np.datetime64)
    if any(bound is not None and isinstance(bound, float) == calendar for bound in (start, end)):
        kind = "calendar dates" if calendar else "model times (numbers)"
        raise DataError(label, f"--time {window}: the input's times are {kind}, "
                               f"{times.values.min()} to {times.values.max()}")
    return start, end


def select_bbox(ds: xr.Dataset, bbox: tuple[float, float, float, float], label: str) -> xr.Dataset:
    """Keep grid points inside W,S,E,N (degrees); a box may cross the date line or 0 deg."""
    if "lat" not in ds.coords or "lon" not in ds.coords:
        raise DataError(label, "--bbox needs latitude and longitude coordinates")
    west, south, east, north = bbox
    lat, (rel, width) = ds["lat"], _east_of_west(ds["lon"], bbox)
    inside = (lat >= south) & (lat <= north) & (rel <= width)
    if not bool(inside.any()):
        raise DataError(label, f"--bbox {west},{south},{east},{north} holds no grid point")
    if lat.ndim == 1 and ds["lon"].ndim == 1:
        lon_idx = np.flatnonzero((rel <= width).values)
        lon_idx = lon_idx[np.argsort(rel.values[lon_idx], kind="stable")]
        out = ds.isel(lon=lon_idx, lat=np.flatnonzero(((lat >= south) & (lat <= north)).values))
        return out.assign_coords(lon=("lon", west + rel.values[lon_idx], ds["lon"].attrs))
    rows, cols = (np.flatnonzero(inside.any(d).values) for d in inside.dims[::-1])
    return ds.isel({inside.dims[0]: slice(rows[0], rows[-1] + 1), inside.dims[1]: slice(cols[0], cols[-1] + 1)})


def _east_of_west(lon, bbox: tuple[float, float, float, float]):
    """(degrees east of the box's west edge in [0, 360), the box's width): inside when the first is <= the second."""
    west, _, east, _ = bbox
    return (lon - west) % 360, (east - west) % 360 or (360.0 if east != west else 0.0)


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
