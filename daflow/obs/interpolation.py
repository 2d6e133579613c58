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
