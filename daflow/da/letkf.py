"""Local ensemble transform Kalman filter (Hunt, Kostelich & Szunyogh 2007).

Every horizontal column gets its own ETKF analysis from the observations within the
Gaspari-Cohn support of ``loc_radius`` (grid units on model grids, km on geographic grids), each
observation's R^{-1} scaled by its taper (:mod:`daflow.da.localization`); all levels of a column
share its weights. All local analyses are batched (in blocks of columns to bound memory), not a
Python loop over grid points: :func:`~daflow.da.base.ensemble_transform` takes the symmetric square
roots from one ``eigh`` for few columns or small ensembles, and from the Newton-Schulz iteration
(matrix products, in cache-sized chunks shared among the torch threads) for many. Neighbour lists
are reused while the observation network stays the same.
"""
from __future__ import annotations

import numpy as np
import torch

from daflow.da.base import Filter, ensemble_transform, normalised_departures
from daflow.da.localization import local_observations
from daflow.core.observations import ObsBatch

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
        S_obs = S.mT.contiguous()                                       # (p, N): gathers rows
        width = local.neighbours.shape[1]
        block = max(1, BLOCK_BYTES // (x.element_size() * members * (width + members)))
        parts = []
        for start in range(0, columns, block):
            nb, root = local.neighbours[start:start + block], local.root_taper[start:start + block]  # (B, K)
            flat = nb.reshape(-1)
            S_loc = S_obs.index_select(0, flat).view(*nb.shape, members).mul_(root.unsqueeze(-1))  # (B, K, N)
            W = ensemble_transform(S_loc.mT, d.index_select(0, flat).view(nb.shape).mul_(root))  # (B, N, N)
            parts.append(W.mT @ A[:, :, start:start + block].permute(2, 0, 1).contiguous())    # (B, N, L)
        increments = parts[0] if len(parts) == 1 else torch.cat(parts)                         # (C, N, L)
        return mean + increments.permute(1, 2, 0).reshape(members, -1)
