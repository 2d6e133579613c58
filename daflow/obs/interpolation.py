"""Horizontal interpolation from a grid (regular lat/lon or a list of points) to report locations.

Grid points and reports are placed on the unit sphere; H takes, for each report, the ``k`` nearest
grid points (k-d tree on the 3-D positions, chord distance) and weights them by inverse squared
great-circle distance (Shepard 1968), w_i = d_i^-2 / sum_j d_j^-2; a report on a grid point takes
that point's value. H is a sparse (reports x grid points) matrix, so it applies to NumPy arrays or,
through :meth:`PointInterpolator.torch`, differentiably to torch tensors.
"""
from __future__ import annotations

import numpy as np

EARTH_RADIUS_KM = 6371.0


def unit_xyz(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    lat, lon = np.radians(np.asarray(lat, np.float64)), np.radians(np.asarray(lon, np.float64))
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=-1)


def chord_to_km(chord: np.ndarray) -> np.ndarray:
    """Great-circle distance (km) of a chord on the unit sphere."""
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.clip(chord / 2, 0, 1))


def km_to_chord(km: float) -> float:
    return float(2 * np.sin(min(km / EARTH_RADIUS_KM, np.pi) / 2))


class PointInterpolator:
    """Inverse-distance weights of the ``k`` nearest grid points (grid given by flat lat/lon arrays)."""

    def __init__(self, lat: np.ndarray, lon: np.ndarray, k: int = 4):
        from scipy.spatial import cKDTree

        self.xyz = unit_xyz(np.ravel(lat), np.ravel(lon))
        self.tree = cKDTree(self.xyz)
        self.k = min(k, len(self.xyz))

    def weights(self, lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(index (p, k), weight (p, k), distance to the nearest grid point in km (p,))."""
        chord, index = self.tree.query(unit_xyz(lat, lon), k=self.k)
        chord, index = chord.reshape(len(chord), -1), index.reshape(len(index), -1)
        km = chord_to_km(chord)
        with np.errstate(divide="ignore"):
            w = 1.0 / km**2
        on_point = km[:, 0] < 1e-6
        w[on_point] = 0.0
        w[on_point, 0] = 1.0
        return index, w / w.sum(axis=1, keepdims=True), km[:, 0]

    def apply(self, field: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        """H(field) at the reports: field (..., grid points) -> (..., p)."""
        index, w, _ = self.weights(lat, lon)
        return (np.asarray(field)[..., index] * w).sum(-1)

    def torch(self, lat: np.ndarray, lon: np.ndarray):
        """H as a function of torch tensors (..., grid points) -> (..., p), differentiable."""
        import torch

        index, w, _ = self.weights(lat, lon)
        index_t, w_t = torch.from_numpy(index), torch.from_numpy(w)
        return lambda x: (x[..., index_t] * w_t.to(x.dtype)).sum(-1)


class BilinearInterpolator:
    """Bilinear weights on a regular latitude/longitude grid (1-D ascending ``lat`` and ``lon`` axes).

    For a report in the cell [lat_i, lat_i+1] x [lon_j, lon_j+1] with fractions a, b along latitude
    and longitude, H = (1-a)(1-b) x_ij + (1-a) b x_i,j+1 + a (1-b) x_i+1,j + a b x_i+1,j+1 over the
    field flattened as (lat, lon). A global longitude axis wraps (the cell between the last and the
    first longitude); a report outside the grid gets NaN weights (it is not verified or assimilated).
    """

    def __init__(self, lat: np.ndarray, lon: np.ndarray):
        self.lat = np.asarray(lat, np.float64)
        self.lon = np.asarray(lon, np.float64) % 360.0
        order = np.argsort(self.lon, kind="stable")
        self.lon_sorted, self.lon_order = self.lon[order], order
        step = np.diff(self.lon_sorted).max() if len(self.lon) > 1 else 360.0
        self.wraps = 360.0 - (self.lon_sorted[-1] - self.lon_sorted[0]) <= step + 1e-9

    def weights(self, lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(index (p, 4), weight (p, 4), distance placeholder (p,) of zeros)."""
        lat, lon = np.asarray(lat, np.float64), np.asarray(lon, np.float64) % 360.0
        nlat, nlon = len(self.lat), len(self.lon_sorted)
        i = np.clip(np.searchsorted(self.lat, lat, side="right") - 1, 0, nlat - 2)
        a = (lat - self.lat[i]) / (self.lat[i + 1] - self.lat[i])
        j = np.searchsorted(self.lon_sorted, lon, side="right") - 1
        if self.wraps:
            j = j % nlon
            right = (j + 1) % nlon
            width = (self.lon_sorted[right] - self.lon_sorted[j]) % 360.0
            b = ((lon - self.lon_sorted[j]) % 360.0) / width
        else:
            j = np.clip(j, 0, nlon - 2)
            right = j + 1
            b = (lon - self.lon_sorted[j]) / (self.lon_sorted[right] - self.lon_sorted[j])
        outside = (a < -1e-9) | (a > 1 + 1e-9) | (b < -1e-9) | (b > 1 + 1e-9)
        cols_j, cols_r = self.lon_order[j], self.lon_order[right]
        index = np.stack([i * nlon + cols_j, i * nlon + cols_r, (i + 1) * nlon + cols_j, (i + 1) * nlon + cols_r], axis=1)
        w = np.stack([(1 - a) * (1 - b), (1 - a) * b, a * (1 - b), a * b], axis=1)
        w[outside] = np.nan
        return index, w, np.zeros(len(lat))

    def apply(self, field: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        index, w, _ = self.weights(lat, lon)
        return (np.asarray(field)[..., index] * w).sum(-1)


def interpolator_for(field) -> PointInterpolator | BilinearInterpolator:
    """Bilinear on a (lat, lon) field, inverse-distance on a ``point`` field (an xarray DataArray)."""
    if "point" in field.dims:
        return PointInterpolator(field["lat"].values, field["lon"].values)
    return BilinearInterpolator(field["lat"].values, field["lon"].values)
