"""Grids and the one rule that places observations on them.

A state is flattened in the order of its dims, ``(level, y, x)``, ``(level, lat, lon)``,
``(level, point)`` or ``(i,)``: flat index = level * columns + column, where a column is one
horizontal point. Four horizontal layouts:

- ``i``: Lorenz variables on a periodic ring (grid indices);
- ``y``/``x``: a periodic model grid (grid indices, e.g. SQG);
- ``lat``/``lon``: a regular geographic grid (degrees; longitude wraps at 360);
- ``point``: unstructured points with per-point ``lat``/``lon`` coordinates (ECMWF's reduced
  Gaussian grids as cfgrib reads them).

:func:`locate` puts observations on a grid: grid indices must be whole and inside; geographic
locations go to the nearest grid point, and are off the grid beyond half a grid spacing (regular:
the largest spacing along the axis; unstructured: the largest nearest-neighbour distance).
Distances between columns (localisation) are in grid units on model grids and great-circle km on
the sphere.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from daflow.errors import DataError

EARTH_RADIUS_KM = 6371.0
HORIZONTAL_DIMS = (("lat", "lon"), ("y", "x"), ("i",), ("point",))


def horizontal_dims(dims: Iterable[str]) -> tuple[str, ...]:
    """The horizontal dims of a variable: ('lat','lon'), ('y','x'), ('i',), ('point',) or ()."""
    dims = tuple(dims)
    for group in HORIZONTAL_DIMS:
        if all(d in dims for d in group):
            return group
    return ()


def geographic_points(field: Any, source: str | None, purpose: str) -> tuple[np.ndarray, np.ndarray]:
    """Flat lat/lon of a field on a (point) or a (lat, lon) grid; ``purpose`` completes the error."""
    if "point" in field.dims:
        return field["lat"].values, field["lon"].values
    if "lat" in field.dims and "lon" in field.dims:
        lat, lon = np.meshgrid(field["lat"].values, field["lon"].values, indexing="ij")
        return lat.ravel(), lon.ravel()
    raise DataError(source, f"{field.name} has dims {tuple(field.dims)}: {purpose} needs a (point) or (lat, lon) grid")


def unit_vectors(lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
    """(n, 3) points on the unit sphere."""
    lat, lon = np.radians(lat_deg), np.radians(lon_deg)
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=-1)


def great_circle_km(chord_km: np.ndarray) -> np.ndarray:
    """Great-circle distance of a chord through the Earth."""
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.clip(chord_km / (2 * EARTH_RADIUS_KM), 0, 1))  # type: ignore[no-any-return]


@dataclass
class StateGrid:
    """Layout and geometry of one gridded state variable.

    ``coords`` holds the coordinate values along each dim and, for an unstructured ``point``
    grid, the per-point ``lat`` and ``lon``.
    """

    variable: str
    dims: tuple[str, ...]           # e.g. ("i",), ("level", "y", "x"), ("level", "lat", "lon"), ("point",)
    shape: tuple[int, ...]
    coords: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def from_model(cls, model: Any) -> StateGrid:
        return cls(model.variable, tuple(model.dims), tuple(model.state_shape), model.coords())

    @classmethod
    def from_dataarray(cls, var: Any, dims: Iterable[str] | None = None) -> StateGrid:
        """The grid of an xarray variable over ``dims`` (default: all but member and time)."""
        dims = tuple(dims) if dims is not None else tuple(d for d in var.dims if d not in ("member", "time"))
        coords = {d: np.asarray(var[d].values) if d in var.coords else np.arange(var.sizes[d]) for d in dims}
        if horizontal_dims(dims) == ("point",):
            for name, aliases in (("lat", ("lat", "latitude")), ("lon", ("lon", "longitude"))):
                found = [a for a in aliases if a in var.coords]
                if found:
                    coords[name] = np.asarray(var[found[0]].values, dtype=np.float64)
        return cls(str(var.name), dims, tuple(var.sizes[d] for d in dims), coords)

    @property
    def hdims(self) -> tuple[str, ...]:
        return horizontal_dims(self.dims)

    @property
    def levels(self) -> int:
        return self.shape[self.dims.index("level")] if "level" in self.dims else 1

    @property
    def hshape(self) -> list[int]:
        return [self.shape[self.dims.index(d)] for d in self.hdims]

    @property
    def columns(self) -> int:
        return int(np.prod(self.hshape))

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def geographic(self) -> bool:
        return self.hdims in (("lat", "lon"), ("point",))

    def column_lat_lon(self, columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(lat, lon) in degrees of geographic columns."""
        if self.hdims == ("point",):
            return self.coords["lat"][columns], self.coords["lon"][columns]
        index = np.unravel_index(columns, self.hshape)
        return self.coords["lat"][index[0]], self.coords["lon"][index[1]]

    def column_positions(self, columns: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(points (len(columns), k), periodic box or None) for distances between columns.

        Model grids (``i``, ``y``/``x``) are periodic, in grid units; geographic grids are points
        on the sphere in km (Euclidean chord distance; see :func:`great_circle_km`).
        """
        if self.geographic:
            return EARTH_RADIUS_KM * unit_vectors(*self.column_lat_lon(columns)), None
        index = np.unravel_index(columns, self.hshape)
        return np.stack(index, axis=1).astype(np.float64), np.array(self.hshape, dtype=np.float64)


def locate(where: Mapping[str, Any], grid: StateGrid, count: int, source: object = None) -> tuple[np.ndarray, np.ndarray]:
    """(flat state index, column index) of ``count`` observations at ``where`` (name -> (count,) array).

    ``where`` needs the grid's horizontal locations (``i``; ``y``, ``x``; ``lat``, ``lon`` for
    both geographic layouts) and ``level`` when the grid has levels. DataError naming ``source``
    when a location is missing or off the grid.
    """
    name = None if source is None else str(source)
    hdims = grid.hdims
    sizes = dict(zip(grid.dims, grid.shape))
    needed = ("lat", "lon") if hdims == ("point",) else hdims
    for dim in needed:
        if dim not in where:
            raise DataError(name, f"observations have no location {str(dim)!r} for a state on {', '.join(grid.dims)}")
    if hdims == ("point",):
        column = _nearest_point(np.asarray(where["lat"], np.float64), np.asarray(where["lon"], np.float64), grid, name)
    elif hdims:
        index = []
        for dim in hdims:
            at = np.asarray(where[dim])
            if dim in ("lat", "lon"):
                index.append(_nearest(at.astype(np.float64), grid.coords[dim], dim, name))
                continue
            if not (np.isfinite(at).all() and np.all(at == np.round(at))):
                raise DataError(name, f"grid index {dim} must be whole numbers")
            at = at.astype(np.int64)
            bad = (at < 0) | (at >= sizes[dim])
            if bad.any():
                raise DataError(name, f"{bad.sum()} observation(s) outside the grid: {dim} = {at[bad][0]} not in 0..{sizes[dim] - 1}")
            index.append(at)
        column = np.ravel_multi_index(index, grid.hshape)
    else:
        column = np.zeros(count, np.int64)
    if "level" in grid.dims:
        if "level" not in where:
            raise DataError(name, "observations have no level for a state with levels")
        levels = grid.coords["level"]
        wanted = np.asarray(where["level"])
        match = np.isclose(wanted[:, None], levels[None, :])
        if not match.any(axis=1).all():
            bad = wanted[~match.any(axis=1)][0]
            raise DataError(name, f"observation level {bad} is not a level of the state ({', '.join(map(str, levels))})")
        level = match.argmax(axis=1)
    else:
        level = np.zeros_like(column)
    return level * grid.columns + column, column


def _nearest(where: np.ndarray, axis: np.ndarray, dim: str, source: str | None) -> np.ndarray:
    """Index of the nearest coordinate on a regular axis (longitude wraps); off beyond half a spacing."""
    spacing = np.abs(np.diff(axis)).max() if axis.size > 1 else 0.0
    delta = where[:, None] - axis[None, :]
    if dim == "lon":
        delta = (delta + 180.0) % 360.0 - 180.0
    nearest = np.abs(delta).argmin(axis=1)
    off = np.abs(np.take_along_axis(delta, nearest[:, None], 1)[:, 0]) > 0.5 * spacing + 1e-9
    if off.any():
        raise DataError(source, f"{off.sum()} observation(s) outside the grid: {dim} = {where[off][0]}")
    return nearest  # type: ignore[no-any-return]


def _nearest_point(lat: np.ndarray, lon: np.ndarray, grid: StateGrid, source: str | None) -> np.ndarray:
    """Nearest point of an unstructured grid on the sphere; off beyond half its largest point spacing."""
    from scipy.spatial import cKDTree

    if "lat" not in grid.coords or "lon" not in grid.coords:
        raise DataError(source, "the unstructured (point) grid has no lat/lon coordinates")
    points = unit_vectors(grid.coords["lat"], grid.coords["lon"])
    tree = cKDTree(points)
    distance, nearest = tree.query(unit_vectors(lat, lon))
    spacing = tree.query(points, k=2)[0][:, 1].max() if len(points) > 1 else 0.0
    off = distance > 0.5 * spacing + 1e-12
    if off.any():
        raise DataError(source, f"{off.sum()} observation(s) outside the grid: lat, lon = {lat[off][0]}, {lon[off][0]}")
    return np.asarray(nearest, dtype=np.int64)
