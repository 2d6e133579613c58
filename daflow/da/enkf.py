"""Stochastic ensemble Kalman filter with perturbed observations (Burgers, van Leeuwen & Evensen
1998; Evensen 2009). Each member is updated with its own perturbed observation y + e_j,
e_j ~ N(0, R), perturbations centred to zero mean. In ensemble space (members as rows):
    X^a = X + D S^T G^{-1} A,   D_j = (y + e_j - H(x_j)) / sigma,  S = (H(X) - mean H(X)) / sigma,
    G = S S^T + (N-1) I  (N x N); by the push-through identity this is the Kalman gain
    K = P H^T (H P H^T + R)^{-1} with P = A^T A / (N-1), at O(N^2 p) cost instead of O(p^3).
"""
from __future__ import annotations

import torch

from daflow.da.base import Filter, normalised_departures
from daflow.core.observations import ObsBatch


class StochasticEnKF(Filter):
    name = "enkf"

    def update(self, x: torch.Tensor, hx: torch.Tensor, obs: ObsBatch) -> torch.Tensor:
        members = x.shape[0]
        S, _ = normalised_departures(hx, obs)                             # (N, p)
        noise = torch.randn(hx.shape, generator=self.generator, dtype=x.dtype)
        noise = noise - noise.mean(0)
        D = (obs.value + obs.error_std * noise - hx) / obs.error_std     # (N, p)
        gram = S @ S.mT + (members - 1) * torch.eye(members, dtype=x.dtype)
        A = x - x.mean(0)
        return x + torch.linalg.solve(gram, S @ D.mT).mT @ A
