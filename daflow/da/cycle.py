"""Assimilation on datasets: build the method, then the one cycle of :mod:`daflow.core.cycle`.

``assimilate`` cycles from ``init`` (forecasting with the model stored in it between observation
times) or analyses ``background`` once; both are xarray datasets in memory. Files are read and
written by the callers (``daflow.api``, ``cli/``).
"""
from __future__ import annotations

import inspect
from dataclasses import fields
from typing import Any

import numpy as np
import torch
import xarray as xr

from daflow.core.cycle import DIAGNOSTICS, add_observation_diagnostics, analyse_once, cycle
from daflow.core.grid import StateGrid
from daflow.core.state import state_from_dataset
from daflow.da import filter_class
from daflow.da.base import Filter
from daflow.errors import DataError, OptionError

__all__ = ["DIAGNOSTICS", "add_observation_diagnostics", "assimilate", "covariance_from_dataset", "make_filter", "method_options"]


def method_options(method: str) -> set[str]:
    """The keyword options filter ``method`` takes (its settings dataclass and constructor)."""
    cls = filter_class(method)
    accepted = {f.name for f in fields(cls.settings_class)} if cls.settings_class else set()
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            accepted |= {name for name, p in inspect.signature(klass.__init__).parameters.items()
                         if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    return accepted - {"self", "grid"}


def make_filter(method: str, grid: StateGrid, **options: Any) -> Filter:
    """The filter ``method`` with the options it takes (None values are left to its defaults)."""
    given = {k: v for k, v in options.items() if v is not None}
    extra = sorted(set(given) - method_options(method))
    if extra:
        raise OptionError(extra[0], f"method {method} does not take {', '.join(extra)}")
    return filter_class(method)(grid, **given)  # type: ignore[no-any-return]


def assimilate(method: str, obs: xr.Dataset, init: xr.Dataset | None = None, background: xr.Dataset | None = None,
               climatology: xr.Dataset | None = None, save_background: bool = False,
               dtype: torch.dtype = torch.float64, names: dict[str, object] | None = None, **options: Any) -> xr.Dataset:
    """Cycle from ``init`` or analyse ``background`` once (exactly one given); the ``analysis`` dataset.

    ``names`` maps "init", "background", "obs", "climatology" to the sources named in errors.
    """
    names = names or {}
    if (init is None) == (background is None):
        raise OptionError("init", "give exactly one of init (cycling) and background (one analysis)")
    if save_background and init is None:
        raise OptionError("save_background", "save_background goes with init (cycling)")
    source = "init" if init is not None else "background"
    state = state_from_dataset(init if init is not None else background, names.get(source), dtype=dtype)  # type: ignore[arg-type]
    grid = StateGrid.from_model(state.model)
    if ("covariance" in method_options(method)) != (climatology is not None):
        needs = "needs" if climatology is None else "does not take"
        raise OptionError("climatology", f"method {method} {needs} a climatology (the background covariance B)")
    if climatology is not None:
        options["covariance"] = covariance_from_dataset(climatology, grid, dtype, names.get("climatology"))
    filt = make_filter(method, grid, **options)
    pair = (names.get(source), names.get("obs"))
    if init is not None:
        return cycle(state, obs, filt, save_background=save_background, names=pair)
    return analyse_once(state, obs, filt, names=pair)


def covariance_from_dataset(ds: xr.Dataset, grid: StateGrid, dtype: torch.dtype, source: object = None) -> torch.Tensor:
    """Sample covariance over the times (and members) of ``grid.variable`` in a state dataset."""
    from daflow.da.oi import climatological_covariance

    name = None if source is None else str(source)
    if grid.variable not in ds.data_vars:
        raise DataError(name, f"no variable {grid.variable}")
    var = ds[grid.variable]
    if tuple(var.sizes.get(d, -1) for d in grid.dims) != grid.shape:
        raise DataError(name, f"{grid.variable} is not on the grid of the ensemble {dict(zip(grid.dims, grid.shape))}")
    samples = var.transpose(..., *grid.dims).values.reshape(-1, grid.size)
    if samples.shape[0] < 2 or not np.isfinite(samples).all():
        raise DataError(name, "needs at least two finite states for a covariance")
    try:
        return climatological_covariance(torch.from_numpy(samples).to(dtype))
    except ValueError as err:
        raise DataError(name, str(err)) from None
