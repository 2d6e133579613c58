"""Gaspari-Cohn localisation of R for local analyses (Hunt, Kostelich & Szunyogh 2007, sec. 2.3).

Gaspari & Cohn (1999), eq. 4.10: a compactly supported fifth-order piecewise rational function of
r = d / c, equal to 1 at r = 0 and 0 for r >= 2. As in DAPPER (Sakov & Bertino 2011), the user's
radius L is the length at which the taper equals exp(-1/2), like a Gaussian of standard deviation
L: the half-width is c = sqrt(10/3) L ~ 1.82 L, and the support 2c. Tapers below 1e-3 are cut.
Each state column gets the observations within the support and the square roots of their tapers,
which scale the rows of R^{-1/2} (R_loc^{-1} = taper R^{-1}).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree

from daflow.core.grid import StateGrid, great_circle_km

HALF_WIDTH_PER_RADIUS = 1.82
CUTOFF = 1e-3


def gaspari_cohn(r: np.ndarray) -> np.ndarray:
    """Gaspari & Cohn (1999) eq. 4.10 at r = d / c (0 for r >= 2), by Horner's rule."""
    r = np.abs(np.asarray(r, dtype=np.float64))
    out = np.zeros_like(r)
    inner, outer = r <= 1, (r > 1) & (r < 2)
    a = r[inner]
    out[inner] = (((-0.25 * a + 0.5) * a + 0.625) * a - 5.0 / 3.0) * a * a + 1.0
    b = r[outer]
    out[outer] = ((((b / 12.0 - 0.5) * b + 0.625) * b + 5.0 / 3.0) * b - 5.0) * b + 4.0 - 2.0 / (3.0 * b)
    return out


@dataclass
class LocalObservations:
    """For each state column, up to K observations (padded): positions into the batch and sqrt(taper)."""

    neighbours: torch.Tensor   # (columns, K) long, padding points at 0
    root_taper: torch.Tensor   # (columns, K), 0 on padding


def local_observations(grid: StateGrid, obs_columns: np.ndarray, radius: float,
                       dtype: torch.dtype = torch.float64) -> LocalObservations:
    """Neighbour lists of every state column among observations at ``obs_columns`` (k-d tree queries of the
    nearest observations within the support, in scipy's C code and the torch threads' count of workers)."""
    half_width = HALF_WIDTH_PER_RADIUS * radius
    support = 2.0 * half_width
    state_points, box = grid.column_positions(np.arange(grid.columns))
    obs_points, _ = grid.column_positions(obs_columns)
    geographic = box is None
    reach = 2 * 6371.0 * np.sin(min(support / (2 * 6371.0), np.pi / 2)) if geographic else support
    obs_tree = cKDTree(obs_points, boxsize=box) if box is not None else cKDTree(obs_points)  # periodic: [0, box)
    threads = max(1, torch.get_num_threads())
    counts = obs_tree.query_ball_point(state_points, reach, return_length=True, workers=threads)
    width = max(1, int(np.max(counts, initial=0)))
    # the `width` nearest (by distance, so the kept ones come first), inf / len(obs) beyond the reach
    dist, cols = obs_tree.query(state_points, k=width, distance_upper_bound=reach, workers=threads)
    dist, cols = dist.reshape(len(state_points), width), cols.reshape(len(state_points), width)
    found = np.isfinite(dist)
    if geographic:
        dist[found] = great_circle_km(dist[found])
    taper = np.where(found, gaspari_cohn(np.where(found, dist, 0.0) / half_width), 0.0)
    taper[taper <= CUTOFF] = 0.0
    kept = taper > 0
    width = max(1, int(kept.sum(1).max(initial=0)))
    neighbours = np.where(kept, cols, 0)[:, :width].astype(np.int64)
    return LocalObservations(torch.from_numpy(np.ascontiguousarray(neighbours)),
                             torch.from_numpy(np.sqrt(taper[:, :width])).to(dtype))
