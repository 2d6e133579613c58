"""Local ensemble transform Kalman filter (Hunt, Kostelich & Szunyogh 2007).

Every horizontal column gets its own ETKF analysis from the observations within the
Gaspari-Cohn support of ``loc_radius`` (grid units on model grids, km on geographic grids), each
observation's R^{-1} scaled by its taper (:mod:`daflow.da.localization`); all levels of a column
share its weights. All local analyses are one batched ``eigh`` (in blocks of columns to bound
memory), not a Python loop over grid points. Neighbour lists are reused while the observation
network stays the same.
"""
from __future__ import annotations

import numpy as np
import torch

from daflow.da.base import Filter, ensemble_transform, normalised_departures
from daflow.da.localization import local_observations
from daflow.da.observations import ObsBatch

BLOCK_BYTES = 256 * 2**20


class LETKF(Filter):
    name = "letkf"

    def __init__(self, grid, loc_radius: float = 4.0, **options):
        super().__init__(grid, **options)
        if not loc_radius > 0:
            raise ValueError("--loc-radius must be positive")
        self.loc_radius = loc_radius
        self._network: tuple[np.ndarray, object] | None = None

    def _local(self, obs: ObsBatch, dtype):
        if self._network is None or not np.array_equal(self._network[0], obs.column):
            self._network = (obs.column, local_observations(self.grid, obs.column, self.loc_radius, dtype))
        return self._network[1]

    def update(self, x: torch.Tensor, hx: torch.Tensor, obs: ObsBatch) -> torch.Tensor:
        members, levels, columns = x.shape[0], self.grid.levels, self.grid.columns
        local = self._local(obs, x.dtype)
        mean = x.mean(0)
        A = (x - mean).view(members, levels, columns)                   # (N, L, C)
        S, d = normalised_departures(hx, obs)                           # (N, p), (p,)
        out = torch.empty_like(A)
        width = local.neighbours.shape[1]
        block = max(1, BLOCK_BYTES // (x.element_size() * members * (width + members)))
        for start in range(0, columns, block):
            cols = slice(start, min(columns, start + block))
            nb, root = local.neighbours[cols], local.root_taper[cols]   # (B, K)
            S_loc = S[:, nb].permute(1, 0, 2) * root[:, None, :]        # (B, N, K)
            W = ensemble_transform(S_loc, d[nb] * root)                 # (B, N, N)
            A_col = A[:, :, cols].permute(2, 0, 1)                      # (B, N, L)
            out[:, :, cols] = (W.mT @ A_col).permute(1, 2, 0)
        return mean + out.reshape(members, -1)
