"""Ensemble transform Kalman filter (Bishop, Etherton & Majumdar 2001; symmetric square root of
Hunt, Kostelich & Szunyogh 2007): x_a = mean + W^T A with W from :func:`ensemble_transform`;
``rotate`` multiplies the square root by a random mean-preserving rotation each analysis
(Sakov & Oke 2008), as DAPPER's ``EnKF('Sqrt', rot=True)``. Ensembles larger than THIN_MEMBERS and than the
observation count take the same update from the thin SVD of S (:func:`~daflow.da.base.thin_square_root`), without
the N x N matrix G and its eigendecomposition (10^4 members took minutes).
"""
from __future__ import annotations

import torch

from daflow.da.base import Filter, ensemble_transform, mean_preserving_rotation, normalised_departures, thin_square_root
from daflow.core.observations import ObsBatch


THIN_MEMBERS = 256   # above this many members, and more than the observations: the thin SVD of S (base.thin_square_root)


class ETKF(Filter):
    name = "etkf"

    def __init__(self, grid, rotate: bool = False, **options):
        super().__init__(grid, **options)
        self.rotate = rotate

    def update(self, x: torch.Tensor, hx: torch.Tensor, obs: ObsBatch) -> torch.Tensor:
        mean = x.mean(0)
        S, d = normalised_departures(hx, obs)                 # (N, p), (p,)
        if x.shape[0] > max(THIN_MEMBERS, S.shape[1]):        # more members than observations: no N x N matrix
            increment, anomalies = thin_square_root(S.double(), d.double(), x - mean)   # the SVD in float64
            if self.rotate:                                    # (T Q)^T A = Q^T T^T A
                anomalies = mean_preserving_rotation(x.shape[0], self.generator, x.dtype).mT @ anomalies
            return mean + increment + anomalies
        W = ensemble_transform(S[None], d[None])[0]            # (N, N)
        if self.rotate:
            w = W.mean(1, keepdim=True)                        # the mean weights (every column of W - T)
            W = w + (W - w) @ mean_preserving_rotation(x.shape[0], self.generator, x.dtype)
        return mean + W.mT @ (x - mean)
