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
    """Gaspari & Cohn (1999) eq. 4.10 at r = d / c (0 for r >= 2)."""
    r = np.abs(np.asarray(r, dtype=np.float64))
    out = np.zeros_like(r)
    inner, outer = r <= 1, (r > 1) & (r < 2)
    a = r[inner]
    out[inner] = -0.25 * a**5 + 0.5 * a**4 + 0.625 * a**3 - 5.0 / 3.0 * a**2 + 1.0
    b = r[outer]
    out[outer] = b**5 / 12.0 - 0.5 * b**4 + 0.625 * b**3 + 5.0 / 3.0 * b**2 - 5.0 * b + 4.0 - 2.0 / (3.0 * b)
    return out


@dataclass
class LocalObservations:
    """For each state column, up to K observations (padded): positions into the batch and sqrt(taper)."""

    neighbours: torch.Tensor   # (columns, K) long, padding points at 0
    root_taper: torch.Tensor   # (columns, K), 0 on padding


def local_observations(grid: StateGrid, obs_columns: np.ndarray, radius: float,
                       dtype: torch.dtype = torch.float64) -> LocalObservations:
    """Neighbour lists of every state column among observations at ``obs_columns`` (k-d tree)."""
    half_width = HALF_WIDTH_PER_RADIUS * radius
    support = 2.0 * half_width
    state_points, box = grid.column_positions(np.arange(grid.columns))
    obs_points, _ = grid.column_positions(obs_columns)
    geographic = box is None
    reach = 2 * 6371.0 * np.sin(min(support / (2 * 6371.0), np.pi / 2)) if geographic else support
    if box is not None:  # cKDTree's periodic box needs positions in [0, box)
        state_tree, obs_tree = cKDTree(state_points, boxsize=box), cKDTree(obs_points, boxsize=box)
    else:
        state_tree, obs_tree = cKDTree(state_points), cKDTree(obs_points)
    pairs = state_tree.sparse_distance_matrix(obs_tree, reach, output_type="ndarray")
    rows, cols, dist = pairs["i"], pairs["j"], pairs["v"]
    if geographic:
        dist = great_circle_km(dist)
    taper = gaspari_cohn(dist / half_width)
    good = taper > CUTOFF
    rows, cols, taper = rows[good], cols[good], taper[good]
    order = np.lexsort((cols, rows))
    rows, cols, taper = rows[order], cols[order], taper[order]
    counts = np.bincount(rows, minlength=grid.columns)
    width = max(1, int(counts.max(initial=0)))
    slot = np.arange(rows.size) - np.repeat(np.cumsum(counts) - counts, counts)
    neighbours = np.zeros((grid.columns, width), dtype=np.int64)
    root = np.zeros((grid.columns, width))
    neighbours[rows, slot] = cols
    root[rows, slot] = np.sqrt(taper)
    return LocalObservations(torch.from_numpy(neighbours), torch.from_numpy(root).to(dtype))
