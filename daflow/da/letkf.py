"""Local ensemble transform Kalman filter (Hunt, Kostelich & Szunyogh 2007).

Every horizontal column gets its own ETKF analysis from the observations within the
Gaspari-Cohn support of ``loc_radius`` (grid units on model grids, km on geographic grids), each
observation's R^{-1} scaled by its taper (:mod:`daflow.da.localization`); all levels of a column
share its weights. All local analyses are batched (in blocks of columns to bound memory), not a
Python loop over grid points. Many columns with ensembles of at least NEWTON_SCHULZ_MEMBERS go through
one fused pass per chunk of columns (chunks shared among the torch threads): gather the local
[S | d] rows, S d, and R^T [A, S d] with R R^T = G^{-1} (R within float32 rounding of G^{-1/2}) from the
Newton-Schulz iteration on S^T S in float32 finished in float64 by thin products only
(:func:`~daflow.da.base.inverse_sqrt_times`); then the increment
W^T A = sqrt(N - 1) R^T A + 1 (R^T S d)^T (R^T A) without forming W. Few columns or small ensembles take the weights from
one batched ``eigh`` (:func:`~daflow.da.base.ensemble_transform`). Neighbour lists are reused while the
observation network stays the same.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from daflow.da.base import (Filter, ensemble_transform, in_chunks, inverse_sqrt_times,
                            uses_newton_schulz)
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
        Sd_obs = torch.empty(hx.shape[1], members + 1, dtype=hx.dtype, device=hx.device)  # (p, N + 1): rows [s_o, d_o]
        hx_mean = hx.mean(0)
        torch.sub(hx.mT, hx_mean.unsqueeze(-1), out=Sd_obs[:, :members]).div_(obs.error_std.unsqueeze(-1))
        torch.sub(obs.value, hx_mean, out=Sd_obs[:, members]).div_(obs.error_std)   # (normalised_departures, transposed)
        if not uses_newton_schulz(columns, members):
            return self._eigh_update(x, mean, Sd_obs[:, :members], Sd_obs[:, members], local)
        xv, mv = x.view(members, levels, columns), mean.view(1, levels, columns)
        analysis = torch.empty_like(x)
        av = analysis.view(members, levels, columns)
        root_n = math.sqrt(members - 1)

        def chunk(part: slice) -> None:
            nb, root = local.neighbours[part], local.root_taper[part]                        # (b, K)
            Sd_loc = Sd_obs.index_select(0, nb.reshape(-1)).view(*nb.shape, members + 1).mul_(root.unsqueeze(-1))
            S = Sd_loc[:, :, :members]                                                       # (b, K, N)
            Sd = S.mT @ Sd_loc[:, :, members:]                                               # (b, N, 1)
            A = (xv[:, :, part] - mv[:, :, part]).permute(2, 0, 1)                          # (b, N, L)
            V = inverse_sqrt_times(S, members - 1.0, torch.cat([A, Sd], -1))                # R^T [A, S d]
            if V is None:                                                                   # eigh (float64): W then W^T A
                increment = ensemble_transform(S.mT, Sd_loc[:, :, members]).mT @ A
            else:
                # W = sqrt(N - 1) R + (R R^T S d) 1^T (R R^T = G^{-1}): W^T A = sqrt(N - 1) R^T A + 1 (R^T S d)^T (R^T A)
                RA, RSd = V[:, :, :-1], V[:, :, -1:]
                increment = RA.mul(root_n).add_(RSd.mT @ RA)
            torch.add(mv[:, :, part], increment.permute(1, 2, 0), out=av[:, :, part])

        in_chunks(columns, chunk, x.device)
        return analysis

    def _eigh_update(self, x, mean, S_obs, d, local):
        """Few columns or small ensembles: all local weights from one batched eigh (in blocks of columns)."""
        members, levels, columns = x.shape[0], self.grid.levels, self.grid.columns
        A = (x - mean).view(members, levels, columns)                   # (N, L, C)
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
