"""Gridded state series as (time, level, y, x) frames for the generative model, and their checks.

A state variable with dims ``(time, [level,] y, x)`` or ``(time, [level,] lat, lon)`` (optionally
``member`` first) becomes a float32 array (member, time, levels, ny, nx). Times become seconds
(datetime64 since 1970, or the float model time), and consecutive frames must be one time step
apart. The checkpoint's ``data`` section records what the model was trained on; a file given to
a trained model must match it (variable, dims, grid shape and coordinates, levels, units, time step),
else DataError (exit 65).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from daflow.errors import DataError
from daflow.core.grid import horizontal_dims


@dataclass
class Series:
    """frames: (member, time, C, ny, nx) float32; seconds: (time,) float64."""

    variable: str
    dims: tuple[str, ...]        # state dims after (member, time), as in the file
    frames: np.ndarray
    seconds: np.ndarray
    calendar: bool               # time axis is datetime64
    coords: dict[str, np.ndarray]
    attrs: dict                  # the variable's attributes (units, standard_name, ...)

    @property
    def time_step(self) -> float:
        steps = np.unique(np.round(np.diff(self.seconds), 6))
        return float(steps[0]) if steps.size else float("nan")


def pick_variable(ds: xr.Dataset, name: str | None, source) -> str:
    """The variable to model: ``name``, or the only gridded variable with a time dimension."""
    if name is not None:
        if name not in ds.data_vars:
            raise DataError(source, f"no variable {str(name)!r} (has {', '.join(map(str, ds.data_vars))})")
        return name
    gridded = [str(n) for n, v in ds.data_vars.items() if "time" in v.dims and len(horizontal_dims(v.dims)) == 2]
    if len(gridded) != 1:
        points = [str(n) for n, v in ds.data_vars.items() if "point" in v.dims]
        if not gridded and points:
            raise DataError(source, f"{', '.join(points)} on an unstructured point grid; the generative model needs a 2-D grid "
                                    "(lat, lon or y, x): regrid first")
        raise DataError(source, f"{'no' if not gridded else 'several'} gridded variable(s) with time; choose one with --var")
    return gridded[0]


def read_series(ds: xr.Dataset, name: str | None, source) -> Series:
    """The frames of variable ``name`` (see the module docstring); DataError when not a 2-D gridded series."""
    name = pick_variable(ds, name, source)
    var = ds[name]
    hdims = horizontal_dims(var.dims)
    if len(hdims) != 2 or "time" not in var.dims:
        where = " (an unstructured point grid: regrid first)" if "point" in var.dims else ""
        raise DataError(source, f"{name} has dims {var.dims}{where}; the generative model needs time and a 2-D grid")
    extra = set(var.dims) - {"member", "time", "level", *hdims}
    if extra:
        raise DataError(source, f"{name} has unexpected dims {', '.join(sorted(extra))}")
    dims = tuple(d for d in ("level", *hdims) if d in var.dims)
    var = var.transpose(*[d for d in ("member", "time") if d in var.dims], *dims)
    frames = var.values.astype(np.float32)
    if "member" not in var.dims:
        frames = frames[None]
    if "level" not in var.dims:
        frames = frames[:, :, None]
    if not np.isfinite(frames).all():
        raise DataError(source, f"{name} contains NaN or Inf")
    times = ds["time"].values
    calendar = np.issubdtype(times.dtype, np.datetime64)
    seconds = (times.astype("datetime64[ns]").astype(np.int64) / 1e9) if calendar else times.astype(np.float64)
    if seconds.size > 1 and not (np.diff(seconds) > 0).all():
        raise DataError(source, "time is not increasing")
    coords = {d: ds[d].values for d in dims if d in ds.coords}
    return Series(name, dims, frames, seconds, bool(calendar), coords, dict(var.attrs))


def describe(series: Series) -> dict:
    """The checkpoint's record of the training data (JSON-serialisable)."""
    return {"variable": series.variable, "dims": list(series.dims), "shape": list(series.frames.shape[2:]),
            "time_step": series.time_step, "calendar": series.calendar,
            "attrs": {k: str(v) for k, v in series.attrs.items()},
            "coords": {d: np.asarray(v, dtype=np.float64).tolist() for d, v in series.coords.items()
                       if np.issubdtype(np.asarray(v).dtype, np.number)}}


def check_matches(series: Series, data: dict, source, checkpoint) -> None:
    """DataError unless ``series`` has the variable, dims and grid the checkpoint was trained on."""
    if series.variable != data["variable"]:
        raise DataError(source, f"variable {str(series.variable)!r}, but {checkpoint} was trained on {str(data['variable'])!r}")
    if list(series.dims) != data["dims"] or list(series.frames.shape[2:]) != data["shape"]:
        raise DataError(source, f"grid {dict(zip(series.dims, series.frames.shape[2:]))} does not match "
                        f"{checkpoint}'s {dict(zip(data['dims'], data['shape']))}")
    for dim, trained in data.get("coords", {}).items():  # checkpoints written before the coordinates were recorded: none
        given = series.coords.get(dim)
        if given is None or not np.issubdtype(np.asarray(given).dtype, np.number):
            continue
        given, trained = np.asarray(given, dtype=np.float64), np.asarray(trained, dtype=np.float64)
        if given.shape != trained.shape or not np.allclose(given, trained, rtol=1e-5, atol=1e-6 * max(1.0, np.abs(trained).max())):
            raise DataError(source, f"{dim} coordinates {_span(given)} do not match {checkpoint}'s {_span(trained)}: "
                            "the model was trained on another grid")
    units, trained_units = series.attrs.get("units"), data.get("attrs", {}).get("units")
    if units is not None and trained_units is not None and str(units) != trained_units:
        raise DataError(source, f"{series.variable} is in {str(units)!r}, but {checkpoint} was trained on {trained_units!r}")
    step, trained_step = series.time_step, data.get("time_step")
    if np.isfinite(step) and trained_step is not None and np.isfinite(trained_step) and not np.isclose(step, trained_step, rtol=1e-6):
        raise DataError(source, f"time step {step:g} s, but {checkpoint} was trained on a time step of {trained_step:g} s")


def _span(values: np.ndarray) -> str:
    return f"{values[0]:g}..{values[-1]:g} ({values.size})" if values.size else "(none)"
