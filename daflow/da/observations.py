"""Observation files -> per-time batches that any filter can use (generic over grids).

A state is flattened in the order of its dims, ``(level, y, x)``, ``(level, lat, lon)`` or
``(i,)``: flat index = level * columns + column, where a column is one horizontal point. An
observation (contract in DESIGN.md) names its state variable, operator, time and location (grid
indices ``i`` or ``y``/``x``, or ``lat``/``lon`` matched to the nearest grid point, plus
``level``); :func:`observation_batches` checks all of it against the grid and groups the good
(qc = 0) observations by time. ``ObsBatch.apply`` is H(x) for an ensemble (differentiable torch).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
import xarray as xr

from daflow.errors import DataError
from daflow.io.contract import horizontal_dims
from daflow.obs.operators import get_operator

EARTH_RADIUS_KM = 6371.0


@dataclass
class StateGrid:
    """Layout and geometry of one gridded state variable."""

    variable: str
    dims: tuple[str, ...]           # e.g. ("i",), ("level", "y", "x"), ("level", "lat", "lon")
    shape: tuple[int, ...]
    coords: dict[str, np.ndarray]   # coordinate values along each dim

    @classmethod
    def from_model(cls, model) -> "StateGrid":
        return cls(model.variable, tuple(model.dims), tuple(model.state_shape), model.coords())

    @property
    def hdims(self) -> tuple[str, ...]:
        return horizontal_dims(self.dims)

    @property
    def levels(self) -> int:
        return self.shape[self.dims.index("level")] if "level" in self.dims else 1

    @property
    def columns(self) -> int:
        return int(np.prod([self.shape[self.dims.index(d)] for d in self.hdims]))

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def column_positions(self, columns: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(points (len(columns), k), periodic box or None) for distances between columns.

        Model grids (``i``, ``y``/``x``) are periodic, in grid units; geographic grids are points
        on the sphere in km (Euclidean chord distance; see :func:`great_circle_km`).
        """
        hshape = [self.shape[self.dims.index(d)] for d in self.hdims]
        index = np.unravel_index(columns, hshape)
        if self.hdims == ("lat", "lon"):
            lat = np.radians(self.coords["lat"][index[0]])
            lon = np.radians(self.coords["lon"][index[1]])
            xyz = np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=1)
            return EARTH_RADIUS_KM * xyz, None
        return np.stack(index, axis=1).astype(np.float64), np.array(hshape, dtype=np.float64)


def great_circle_km(chord_km: np.ndarray) -> np.ndarray:
    """Great-circle distance of a chord through the Earth."""
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.clip(chord_km / (2 * EARTH_RADIUS_KM), 0, 1))


@dataclass
class ObsBatch:
    """The good observations at one time, located in the flattened state."""

    time: object                      # float model time or datetime64
    rows: np.ndarray                  # (p,) positions in the observation file
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


REQUIRED = ("value", "error_std", "time", "variable", "operator")


def observation_batches(obs: xr.Dataset, grid: StateGrid, source=None,
                        dtype: torch.dtype = torch.float64) -> list[ObsBatch]:
    """Good observations grouped by time (ascending); DataError naming ``source`` on bad input."""
    missing = [v for v in REQUIRED if v not in obs.variables]
    if missing:
        raise DataError(source, f"missing observation variable(s) {', '.join(missing)}")
    keep = np.flatnonzero(obs["qc"].values == 0) if "qc" in obs.variables else np.arange(obs.sizes["obs"])
    if keep.size == 0:
        raise DataError(source, "no observation with qc = 0")
    sel = obs.isel(obs=keep)
    value = sel["value"].values.astype(np.float64)
    error = sel["error_std"].values.astype(np.float64)
    if not np.isfinite(value).all():
        raise DataError(source, "observation values contain NaN or Inf")
    if not (np.isfinite(error).all() and (error > 0).all()):
        raise DataError(source, "error_std must be finite and positive")
    variables = np.unique(sel["variable"].values.astype(str))
    if any(v != grid.variable for v in variables):
        raise DataError(source, f"observes variable(s) {', '.join(variables)}; the state has {grid.variable}")
    flat, column = _flat_index(sel, grid, source)
    operator_names = sel["operator"].values.astype(str)
    names = np.unique(operator_names)
    for name in names:
        try:
            get_operator(name)
        except ValueError as err:
            raise DataError(source, str(err)) from None
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


def _flat_index(obs: xr.Dataset, grid: StateGrid, source) -> tuple[np.ndarray, np.ndarray]:
    """(flat state index, column index) of every observation; DataError when off the grid."""
    hdims = grid.hdims
    sizes = dict(zip(grid.dims, grid.shape))
    index = []
    for dim in hdims:
        if dim not in obs.variables:
            raise DataError(source, f"observations have no location {dim!r} for a state on {', '.join(grid.dims)}")
        where = obs[dim].values
        if dim in ("lat", "lon"):
            index.append(_nearest(where, grid.coords[dim], dim, source))
        else:
            if not (np.isfinite(where).all() and np.all(where == np.round(where))):
                raise DataError(source, f"grid index {dim} must be whole numbers")
            where = where.astype(np.int64)
            bad = (where < 0) | (where >= sizes[dim])
            if bad.any():
                raise DataError(source, f"{bad.sum()} observation(s) outside the grid: {dim} = {where[bad][0]} "
                                f"not in 0..{sizes[dim] - 1}")
            index.append(where)
    column = np.ravel_multi_index(index, [sizes[d] for d in hdims]) if index else np.zeros(obs.sizes["obs"], np.int64)
    if "level" in grid.dims:
        if "level" not in obs.variables:
            raise DataError(source, "observations have no level for a state with levels")
        levels = grid.coords["level"]
        match = np.isclose(obs["level"].values[:, None], levels[None, :])
        if not match.any(axis=1).all():
            bad = obs["level"].values[~match.any(axis=1)][0]
            raise DataError(source, f"observation level {bad} is not a level of the state ({', '.join(map(str, levels))})")
        level = match.argmax(axis=1)
    else:
        level = np.zeros_like(column)
    return level * grid.columns + column, column


def _nearest(where: np.ndarray, axis: np.ndarray, dim: str, source) -> np.ndarray:
    """Index of the nearest grid coordinate; DataError beyond half a grid spacing from the grid."""
    spacing = np.abs(np.diff(axis)).max() if axis.size > 1 else 0.0
    delta = where[:, None] - axis[None, :]
    if dim == "lon":
        delta = (delta + 180.0) % 360.0 - 180.0
    nearest = np.abs(delta).argmin(axis=1)
    off = np.abs(np.take_along_axis(delta, nearest[:, None], 1)[:, 0]) > 0.5 * spacing + 1e-9
    if off.any():
        raise DataError(source, f"{off.sum()} observation(s) outside the grid: {dim} = {where[off][0]}")
    return nearest
