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
    """Neighbour lists of every state column among observations at ``obs_columns``: on a periodic line
    (Lorenz-96) the observations where the taper exceeds CUTOFF are a contiguous run of the sorted
    positions (two binary searches per column, rows in blocks that stay in cache); elsewhere k-d tree
    queries of the nearest observations within the support (scipy's C code, the torch threads' count of
    workers). Entries of taper 0 (beyond the cut-off, or padding) have neighbour 0."""
    half_width = HALF_WIDTH_PER_RADIUS * radius
    state_points, box = grid.column_positions(np.arange(grid.columns))
    obs_points, _ = grid.column_positions(obs_columns)
    reach = _CUT_R * half_width * (1 + 1e-9)    # beyond: taper <= CUTOFF (the margin only admits zeros)
    if box is not None and len(box) == 1 and 2 * reach < box[0] and len(obs_points):
        neighbours, taper = _periodic_line(state_points[:, 0], obs_points[:, 0], float(box[0]), reach, half_width)
    else:
        neighbours, taper = _tree(state_points, obs_points, box, 2.0 * half_width, half_width)
    return LocalObservations(torch.from_numpy(neighbours), torch.from_numpy(np.sqrt(taper, out=taper)).to(dtype))


def _cut_radius() -> float:
    """r in (1, 2) where the Gaspari-Cohn taper falls to CUTOFF (bisection; it decreases monotonically)."""
    low, high = 1.0, 2.0
    for _ in range(60):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if gaspari_cohn(np.array([mid]))[0] > CUTOFF else (low, mid)
    return high


_CUT_R = _cut_radius()
LINE_BLOCK = 16384   # state points per block of the periodic-line lists: temporaries of ~K * 128 KiB


def _taper(dist: np.ndarray, half_width: float) -> np.ndarray:
    found = np.isfinite(dist)
    taper = np.where(found, gaspari_cohn(np.where(found, dist, 0.0) / half_width), 0.0)
    taper[taper <= CUTOFF] = 0.0
    return taper


def _periodic_line(state: np.ndarray, obs: np.ndarray, period: float, reach: float,
                   half_width: float) -> tuple[np.ndarray, np.ndarray]:
    """(neighbours, taper) (columns, K) on a circle of ``period`` (reach < period / 2)."""
    order = np.argsort(obs, kind="stable")
    ring = np.concatenate([obs[order] - period, obs[order], obs[order] + period])   # covers [s - reach, s + reach]
    which = np.tile(order, 3)
    first = np.searchsorted(ring, state - reach, side="left")
    count = np.searchsorted(ring, state + reach, side="right") - first
    width = max(1, int(count.max(initial=0)))
    neighbours = np.empty((len(state), width), np.int64)
    taper = np.empty((len(state), width))
    offsets = np.arange(width)
    windows = np.lib.stride_tricks.sliding_window_view(np.append(ring, np.full(width, np.inf)), width)
    indices = np.lib.stride_tricks.sliding_window_view(np.append(which, np.zeros(width, np.int64)), width)
    for start in range(0, len(state), LINE_BLOCK):
        rows = slice(start, start + LINE_BLOCK)
        dist = np.abs(windows[first[rows]] - state[rows, None])                     # (rows, width) row gathers
        dist[offsets >= count[rows, None]] = np.inf
        taper[rows] = _taper(dist, half_width)
        neighbours[rows] = np.where(taper[rows] > 0, indices[first[rows]], 0)
    return neighbours, taper


def _tree(state: np.ndarray, obs: np.ndarray, box: np.ndarray | None, support: float,
          half_width: float) -> tuple[np.ndarray, np.ndarray]:
    """(neighbours, taper) (columns, K) of the observations within ``support`` (great-circle km on
    geographic grids) by k-d tree queries, nearest first."""
    geographic = box is None
    reach = 2 * 6371.0 * np.sin(min(support / (2 * 6371.0), np.pi / 2)) if geographic else support
    obs_tree = cKDTree(obs, boxsize=box) if box is not None else cKDTree(obs)  # periodic: [0, box)
    threads = max(1, torch.get_num_threads())
    counts = obs_tree.query_ball_point(state, reach, return_length=True, workers=threads)
    width = max(1, int(np.max(counts, initial=0)))
    # the `width` nearest (by distance, so the kept ones come first), inf / len(obs) beyond the reach
    dist, cols = obs_tree.query(state, k=width, distance_upper_bound=reach, workers=threads)
    dist, cols = dist.reshape(len(state), width), cols.reshape(len(state), width)
    found = np.isfinite(dist)
    if geographic:
        dist[found] = great_circle_km(dist[found])
    taper = _taper(dist, half_width)
    width = max(1, int((taper > 0).sum(1).max(initial=0)))
    return np.ascontiguousarray(np.where(taper > 0, cols, 0)[:, :width]), np.ascontiguousarray(taper[:, :width])
