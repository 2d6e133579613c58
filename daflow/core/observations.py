"""Observations: a dataset (or arrays) -> per-time batches located in the flattened state.

An observation (the ``observations`` contract) names its state variable, operator, time and
location (grid indices ``i`` or ``y``/``x``, or ``lat``/``lon``, plus ``level``); qc != 0 marks it
unused. :func:`observation_batches` checks all of it against a :class:`StateGrid` (placing it with
:func:`daflow.core.grid.locate`) and groups the good observations by time. ``ObsBatch.apply`` is
H(x) for an ensemble (differentiable torch). :func:`observations` builds the dataset from arrays.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import xarray as xr

from daflow.core.grid import StateGrid, locate
from daflow.errors import DataError
from daflow.obs.operators import get_operator

REQUIRED = ("value", "error_std", "time", "variable", "operator")
LOCATIONS = ("i", "y", "x", "lat", "lon", "level")


@dataclass
class ObsBatch:
    """The good observations at one time, located in the flattened state."""

    time: Any                         # float model time or datetime64
    rows: np.ndarray                  # (p,) positions in the observation dataset
    value: torch.Tensor               # (p,)
    error_std: torch.Tensor           # (p,)
    index: torch.Tensor               # (p,) flat state index
    column: np.ndarray                # (p,) horizontal column (for localisation)
    operators: list[tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor | None]]  # (H, positions or None = all)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """H(x): (members, n) -> (members, p)."""
        return self.operate(x.index_select(-1, self.index))

    def subset(self, keep: np.ndarray) -> "ObsBatch":
        """The observations where ``keep`` (p,) is True, operators' positions renumbered."""
        idx = np.flatnonzero(keep)
        where = torch.from_numpy(idx)
        renumber = np.full(len(keep), -1)
        renumber[idx] = np.arange(len(idx))
        operators = []
        for operator, positions in self.operators:
            kept = None if positions is None else positions.numpy()[keep[positions.numpy()]]
            if kept is None or len(kept):
                operators.append((operator, None if kept is None else torch.from_numpy(renumber[kept])))
        return replace(self, rows=self.rows[idx], value=self.value[where], error_std=self.error_std[where],
                       index=self.index[where], column=self.column[idx], operators=operators)

    def operate(self, at: torch.Tensor) -> torch.Tensor:
        """The operators on state values already at the observed points, (members, p)."""
        if len(self.operators) == 1:
            return self.operators[0][0](at)
        out = torch.empty_like(at)
        for operator, positions in self.operators:
            out[:, positions] = operator(at[:, positions])
        return out


@dataclass
class Diagnostics:
    """Observation-space equivalents, each (p,): mean and spread of H(x) before and after."""

    background_mean: torch.Tensor
    background_spread: torch.Tensor
    analysis_mean: torch.Tensor
    analysis_spread: torch.Tensor

    @classmethod
    def of(cls, hx_background: torch.Tensor, hx_analysis: torch.Tensor) -> Diagnostics:
        """From H(x) of both ensembles, (members, p)."""
        return cls(hx_background.mean(0), spread(hx_background), hx_analysis.mean(0), spread(hx_analysis))


def spread(values: torch.Tensor) -> torch.Tensor:
    """Ensemble standard deviation over dim 0 (zero for one member)."""
    return values.std(0) if values.shape[0] > 1 else torch.zeros_like(values[0])


def observations(value: Any, error_std: Any, time: Any, variable: str | Any, operator: str | Any = "identity",
                 qc: Any = None, attrs: dict | None = None, **locations: Any) -> xr.Dataset:
    """An ``observations`` dataset from arrays (scalars broadcast): locations as keywords (i=, y=, x=, lat=, lon=, level=)."""
    value = np.asarray(value, dtype=np.float64)
    count = value.shape[0]

    def column(values: Any, dtype: Any = None) -> np.ndarray:
        out = np.asarray(values, dtype=dtype)
        return np.broadcast_to(out, (count,)).copy() if out.ndim == 0 else out

    unknown = set(locations) - set(LOCATIONS)
    if unknown:
        raise ValueError(f"unknown observation location(s) {', '.join(sorted(unknown))}; choose from {', '.join(LOCATIONS)}")
    data = {"value": column(value), "error_std": column(error_std, np.float64), "time": column(time),
            "variable": column(variable, str), "operator": column(operator, str),
            "qc": column(0 if qc is None else qc, np.int8)}
    data.update({k: column(v) for k, v in locations.items()})
    return xr.Dataset({k: ("obs", v) for k, v in data.items()}, coords={"obs": np.arange(count)}, attrs=dict(attrs or {}))


def observation_batches(obs: xr.Dataset, grid: StateGrid, source: object = None,
                        dtype: torch.dtype = torch.float64) -> list[ObsBatch]:
    """Good observations grouped by time (ascending); DataError naming ``source`` on bad input."""
    name = None if source is None else str(source)
    missing = [v for v in REQUIRED if v not in obs.variables]
    if missing:
        raise DataError(name, f"missing observation variable(s) {', '.join(missing)}")
    keep = np.flatnonzero(obs["qc"].values == 0) if "qc" in obs.variables else np.arange(obs.sizes["obs"])
    if keep.size == 0:
        raise DataError(name, "no observation with qc = 0")
    sel = obs.isel(obs=keep)
    value = sel["value"].values.astype(np.float64)
    error = sel["error_std"].values.astype(np.float64)
    if not np.isfinite(value).all():
        raise DataError(name, "observation values contain NaN or Inf")
    if not (np.isfinite(error).all() and (error > 0).all()):
        raise DataError(name, "error_std must be finite and positive")
    variables = np.unique(sel["variable"].values.astype(str))
    if any(v != grid.variable for v in variables):
        raise DataError(name, f"observes variable(s) {', '.join(variables)}; the state has {grid.variable}")
    where = {d: sel[d].values for d in LOCATIONS if d in sel.variables}
    flat, column = locate(where, grid, sel.sizes["obs"], name)
    operator_names = sel["operator"].values.astype(str)
    names = np.unique(operator_names)
    for op in names:
        try:
            get_operator(op)
        except ValueError as err:
            raise DataError(name, str(err)) from None
    times = sel["time"].values
    order = np.argsort(times, kind="stable")
    unique, starts = np.unique(times[order], return_index=True)
    bounds = np.append(starts, len(order))
    batches = []
    for t, lo, hi in zip(unique, bounds[:-1], bounds[1:]):
        idx = order[lo:hi]
        ops = operator_names[idx]
        operators = [(get_operator(n), None if len(names) == 1 else torch.from_numpy(np.flatnonzero(ops == n)))
                     for n in names]
        batches.append(ObsBatch(time=t, rows=keep[idx], value=torch.tensor(value[idx], dtype=dtype),
                                error_std=torch.tensor(error[idx], dtype=dtype),
                                index=torch.from_numpy(flat[idx]), column=column[idx], operators=operators))
    return batches
