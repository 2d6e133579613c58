"""Optimal interpolation with a climatological background covariance B (Gandin 1963; Lorenc 1981):
    x^a = x^b + K (y - H(x^b)),   K = B H^T (H B H^T + R)^{-1},
H linearised at the background mean (the element-wise operator's derivative, by autograd).
B is the sample covariance of a climatology (e.g. a long nature run). Every member is updated
with the same gain, so OI also runs on a single state; B is dense (n x n).
"""
from __future__ import annotations

import torch

from daflow.da.base import Filter
from daflow.core.observations import ObsBatch

MAX_STATE = 20_000


class OptimalInterpolation(Filter):
    name = "oi"
    min_members = 1
    differentiates = True  # H is linearised by autograd
    max_state = MAX_STATE  # B is dense

    def __init__(self, grid, covariance: torch.Tensor, **options):
        super().__init__(grid, **options)
        self.covariance = covariance   # (n, n)

    def update(self, x: torch.Tensor, hx: torch.Tensor, obs: ObsBatch) -> torch.Tensor:
        at = x.mean(0)[obs.index].detach().requires_grad_(True)
        slope = torch.autograd.grad(obs.operate(at[None]).sum(), at)[0]            # dH/dx, (p,)
        BHt = self.covariance[:, obs.index] * slope                                # (n, p)
        HBHt = BHt[obs.index] * slope[:, None] + torch.diag(obs.error_std**2)      # (p, p)
        return x + torch.linalg.solve(HBHt, (obs.value - hx).mT).mT @ BHt.mT


def climatological_covariance(states: torch.Tensor) -> torch.Tensor:
    """Sample covariance (n, n) of states (samples, n)."""
    if states.shape[1] > MAX_STATE:
        raise ValueError(f"OI needs a dense covariance; state size {states.shape[1]} > {MAX_STATE}")
    anomalies = states - states.mean(0)
    return anomalies.mT @ anomalies / (states.shape[0] - 1)
