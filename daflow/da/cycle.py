"""Assimilation on datasets: build the method, then the one cycle of :mod:`daflow.core.cycle`.

``assimilate`` cycles from ``init`` (forecasting with the model stored in it between observation
times) or analyses ``background`` once; every input is an xarray dataset in memory. Files are
read and written by the callers (``daflow.api``, ``cli/``). OI of a ``background`` without a
climatology is the surface analysis with a parametric B (:mod:`daflow.da.surface`).
"""
from __future__ import annotations

import inspect
import warnings
from dataclasses import fields
from typing import Any

import numpy as np
import torch
import xarray as xr

from daflow.core.cycle import DIAGNOSTICS, add_observation_diagnostics, analyse_once, cycle, model_forward
from daflow.core.grid import StateGrid
from daflow.core.state import State, state_from_dataset
from daflow.da import filter_class
from daflow.da.base import Filter
from daflow.errors import DaflowWarning, DataError, OptionError

__all__ = ["DIAGNOSTICS", "add_observation_diagnostics", "accepted_options", "assimilate", "covariance_from_dataset",
           "make_filter", "model_forward"]

OPTION_NAMES = {"covariance": "climatology"}  # library argument -> the option (dataset) that supplies it
SURFACE_OPTIONS = ("b_std", "b_length", "b_correlation", "qc_k", "orography")  # of OI's surface analysis


def accepted_options(cls: Any) -> tuple[set[str], set[str]]:
    """(every option the filter class takes, those it requires), from its settings and constructors."""
    accepted = {f.name for f in fields(cls.settings_class)} if cls.settings_class else set()
    required = set()
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            for name, p in list(inspect.signature(klass.__init__).parameters.items())[2:]:
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                    accepted.add(name)
                    if p.default is p.empty:
                        required.add(name)
    return accepted, required


def make_filter(method: str, grid: StateGrid, **options: Any) -> Filter:
    """The filter ``method`` with the options it takes (None values are left to its defaults)."""
    cls = filter_class(method)
    accepted, required = accepted_options(cls)
    given = {k: v for k, v in options.items() if v is not None}
    extra = sorted(set(given) - accepted)
    if extra:
        raise OptionError(OPTION_NAMES.get(extra[0], extra[0]),
                          f"method {method} does not take {', '.join(OPTION_NAMES.get(e, e) for e in extra)}")
    missing = sorted(required - set(given))
    if missing:
        raise OptionError(OPTION_NAMES.get(missing[0], missing[0]),
                          f"method {method} needs {', '.join(OPTION_NAMES.get(m, m) for m in missing)}")
    try:
        return cls(grid, **given)  # type: ignore[no-any-return]
    except ValueError as err:  # a setting the method rejects (checked before any computation): a usage error
        named = [k for k in sorted(accepted, key=len, reverse=True) if k in str(err)]
        raise OptionError(OPTION_NAMES.get(named[0], named[0]) if named else "method", f"method {method}: {err}") from None


def assimilate(method: str, obs: xr.Dataset, init: xr.Dataset | None = None, background: xr.Dataset | None = None,
               climatology: xr.Dataset | None = None, save_background: bool = False,
               dtype: torch.dtype = torch.float64, names: dict[str, object] | None = None, **options: Any) -> xr.Dataset:
    """Cycle from ``init`` or analyse ``background`` once (exactly one given); the ``analysis`` dataset.

    ``names`` maps "init", "background", "obs", "climatology", "orography" to the sources named in errors.
    """
    names = names or {}
    if (init is None) == (background is None):
        raise OptionError("init", "give exactly one of init (cycling) and background (one analysis)")
    if save_background and init is None:
        raise OptionError("save_background", "save_background goes with init (cycling)")
    surface = {k: options.pop(k) for k in SURFACE_OPTIONS if k in options}
    if method == "oi" and climatology is None and background is not None:  # OI's surface analysis: a parametric B
        if surface.get("qc_k") == 0:  # no background check
            surface["qc_k"] = float("inf")
        return _surface_analysis(background, obs, names, **surface)
    if (background is not None and climatology is None and method in ENSEMBLE_FROM_B and not _has_model(background)
            and "member" not in background.dims):  # an ingested ensemble is analysed as it is (gridded_state below)
        members = options.pop("members", None)  # a single forecast: an ensemble drawn from the parametric B
        if members is None or members < 2:
            raise OptionError("members", f"method {method} on a single forecast (no model) needs members >= 2 drawn from B")
        from daflow.da.surface import analyse_forecast_ensemble

        return analyse_forecast_ensemble(background.load(), obs, method, members, surface.get("b_std"), surface.get("b_length"),
                                         names=(str(names.get("background") or "background"), str(names.get("obs") or "observations")),
                                         **options)
    accepted = accepted_options(filter_class(method))[0]
    given = [k for k, v in surface.items() if v is not None and k not in accepted]
    if given:
        raise OptionError(given[0], f"method {method} does not take {', '.join(given)} "
                          "(a parametric B goes with oi and a background but no climatology, 3dvar and 4dvar)")
    options.update({k: v for k, v in surface.items() if k not in given})
    source = "init" if init is not None else "background"
    start = init if init is not None else background
    assert start is not None
    gridded = background is not None and not _has_model(background)
    state = (gridded_state(background, obs, names.get(source), dtype) if gridded and background is not None
             else state_from_dataset(start, names.get(source), dtype=dtype))
    grid = StateGrid.from_model(state.model)
    dense = getattr(filter_class(method), "max_state", None)   # methods with a dense n x n B
    if dense is not None and grid.size > dense:
        raise DataError(_str(names.get(source)), f"method {method} needs a dense B (n x n); state size {grid.size} > {dense}")
    if climatology is not None:
        if "covariance" not in accepted:
            raise OptionError("climatology", f"method {method} does not take climatology")
        options["covariance"] = covariance_from_dataset(climatology, grid, dtype, names.get("climatology"))
    filt = make_filter(method, grid, **options)
    pair = (names.get(source), names.get("obs"))
    if init is not None:
        return cycle(state, obs, filt, save_background=save_background, names=pair)
    result = analyse_once(state, obs, filt, names=pair)
    if gridded and background is not None:  # the variables not analysed, and the coordinates' attributes, as in the background
        last = background.sel(time=result["time"].values)
        result = result.assign_coords({d: last[d] for d in grid.dims if d in last.coords})
        for name, var in last.data_vars.items():
            if name not in result:
                result[name] = var
        result.attrs = {**background.attrs, **result.attrs}
    return result


class GriddedModel:
    """The layout of a gridded variable of a dataset without a model (e.g. an ingested GRIB ensemble):
    enough to analyse it once, nothing to step it."""

    name = "gridded"

    def __init__(self, variable: str, var: xr.DataArray, ds: xr.Dataset, dtype: torch.dtype):
        self.variable, self.dtype = variable, dtype
        self.dims = tuple(str(d) for d in var.dims if d not in ("member", "time"))
        self.state_shape = tuple(var.sizes[d] for d in self.dims)
        self._coords = {d: ds[d].values if d in ds.coords else np.arange(var.sizes[d]) for d in self.dims}
        self.units = str(var.attrs.get("units", "1"))
        self.time_units = "s"
        self.params: dict[str, Any] = {}

    def coords(self) -> dict[str, np.ndarray]:
        return self._coords

    def attrs(self, dt: float) -> dict[str, Any]:
        return {}


def gridded_state(ds: xr.Dataset, obs: xr.Dataset, source: object, dtype: torch.dtype) -> State:
    """The last frame of the variable ``obs`` observes in an ensemble dataset without daflow_model attributes."""
    name_ = _str(source)
    if "time" not in ds.dims or ds.sizes["time"] == 0:
        raise DataError(name_, "has no time: no state to analyse")
    observed = sorted(set(obs["variable"].values.astype(str))) if "variable" in obs else []
    found = [n for n in observed if n in ds.data_vars]
    if len(found) != 1:
        have = ", ".join(str(n) for n in ds.data_vars if "time" in ds[n].dims)
        raise DataError(name_, f"the observations are of {', '.join(observed) or 'no variable'}; exactly one of the "
                               f"variables ({have}) must be observed to analyse a dataset without a model")
    var = ds[found[0]]
    if "member" not in var.dims:  # one deterministic forecast: a one-member state (3D-Var; an ensemble method says it needs more)
        var = var.expand_dims(member=1)
    model = GriddedModel(found[0], var, ds, dtype)
    last = var.isel(time=-1).transpose("member", *model.dims)
    x = torch.from_numpy(np.ascontiguousarray(last.values, dtype=np.float64)).to(dtype)
    if not bool(torch.isfinite(x).all()):
        raise DataError(name_, f"{found[0]} has NaN or Inf in its last frame")
    return State(model, 0.0, x, ds["time"].values[-1], True)  # type: ignore[arg-type]


ENSEMBLE_FROM_B = ("letkf", "etkf", "enkf", "ensf")


def _has_model(ds: xr.Dataset) -> bool:
    from daflow.models import params_from_attrs

    try:
        params_from_attrs(ds.attrs)
    except (KeyError, ValueError):
        return False
    return True


def _surface_analysis(background: xr.Dataset, obs: xr.Dataset, names: dict[str, object], b_std: Any = None, b_length: Any = None,
                      b_correlation: Any = None, qc_k: Any = None, orography: xr.Dataset | None = None) -> xr.Dataset:
    from daflow.da.surface import analyse_forecast

    oro = None
    if orography is not None:
        found = [n for n in ("z", "orography", "orog", "hgt") if n in orography.data_vars]
        if not found:
            raise DataError(_str(names.get("orography")), "no orography variable (z, orography, orog or hgt)")
        oro = orography[found[0]].squeeze(drop=True).load()
        if found[0] == "z":
            oro = oro / 9.80665  # surface geopotential -> height
    return analyse_forecast(background.load(), obs, b_std, b_length, b_correlation or "gaussian", 5.0 if qc_k is None else qc_k, oro,
                            names=(str(names.get("background") or "background"), str(names.get("obs") or "observations")))


def covariance_from_dataset(ds: xr.Dataset, grid: StateGrid, dtype: torch.dtype, source: object = None) -> torch.Tensor:
    """Sample covariance over the times (and members) of ``grid.variable`` in a state dataset."""
    from daflow.da.oi import climatological_covariance

    name = _str(source)
    if grid.variable not in ds.data_vars:
        raise DataError(name, f"no variable {grid.variable}")
    var = ds[grid.variable]
    if var.sizes.get("time", 1) < 2:
        raise DataError(name, "a climatology needs at least two times")
    if tuple(var.sizes.get(d, -1) for d in grid.dims) != grid.shape:
        raise DataError(name, f"{grid.variable} is not on the grid of the ensemble {dict(zip(grid.dims, grid.shape))}")
    samples = var.transpose(..., *grid.dims).values.reshape(-1, grid.size)
    finite = np.isfinite(samples).all(axis=1)
    if finite.sum() < 2:
        raise DataError(name, f"needs at least two finite states for a covariance ({finite.sum()} of {len(finite)} are)")
    if not finite.all():
        warnings.warn(f"{name}: left {(~finite).sum()} of {len(finite)} states holding NaN/Inf out of the covariance",
                      DaflowWarning, stacklevel=2)
        samples = samples[finite]
    try:
        return climatological_covariance(torch.from_numpy(samples).to(dtype))
    except ValueError as err:
        raise DataError(name, str(err)) from None


def _str(source: object) -> str | None:
    return None if source is None else str(source)
