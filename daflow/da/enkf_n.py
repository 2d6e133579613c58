"""Finite-size ensemble Kalman filter, EnKF-N (Bocquet 2011; Bocquet, Raanes & Hannart 2015), as
DAPPER's ``EnKF_N``: the ETKF with an inflation l1 of the prior anomalies estimated at every
analysis, so that no inflation needs tuning.

With S = R^{-1/2} (H(X) - mean) (members x p), d = R^{-1/2} (y - mean H(X)), N members, N1 = N - 1,
and S S^T = V diag(lam) V^T, the hyperprior over the prior covariance gives the (primal) cost
    J(w) = 1/2 |d - S^T w|^2 + 1/2 N1 cL log(eN + |w|^2),
whose minimiser w_a fixes zeta_a = N1 cL / (eN + |w_a|^2) and l1 = sqrt(N1 / zeta_a) (the
``dual`` form minimises instead over l1: D(l1) = sum_i u_i^2 / (l1^2 lam_i + N1) + eN / l1^2
+ cL log l1^2, u = V^T S d / sqrt(lam)). Both by Newton's method, as DAPPER (xtol 1e-4, ytol 1e-7;
primal with the approximate Hessian S S^T + zeta I). The hyperprior constants
eN = (N + 1) / N, cL = N / N1 get the mode correction of Bocquet et al. (2015, eq. 36) as DAPPER:
mc = sqrt((eN / cL) ** I_KH), I_KH = N1 mean(1 / (lam + N1)); eN /= mc, cL *= mc; then both times
``xn`` (> 1: more certain hyperprior, for nearly linear or deterministic systems).
The update is the ETKF's on the inflated anomalies l1 A:
    x_a = mean + (w + T)^T l1 A,  w = V diag(1 / (l1^2 lam + N1)) V^T l1 S d,
    T = sqrt(N1) V diag((l1^2 lam + N1)^{-1/2}) V^T,
with V and lam from the thin SVD of S (min(N, p) columns; T is the identity on the rest), applied to A without
forming T: O(N p min(N, p) + N n min(N, p)) rather than an N x N eigendecomposition (10^4 members took minutes),
followed (``rotate``) by a random mean-preserving rotation of the anomalies (Sakov & Oke 2008).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from daflow.da.base import Filter, mean_preserving_rotation, normalised_departures, split_settings, thin_square_root
from daflow.core.observations import ObsBatch


@dataclass(frozen=True)
class EnKFNSettings:
    """xn: hyperprior certainty multiplier (DAPPER's xN); dual: Newton on l1 instead of w;
    rotate: random mean-preserving rotation after each analysis."""

    xn: float = 1.0
    dual: bool = False
    rotate: bool = False

    def __post_init__(self):
        if not self.xn > 0:
            raise ValueError(f"xn must be positive, got {self.xn}")


def hyperprior(lam: torch.Tensor, members: int, xn: float) -> tuple[float, float]:
    """(eN, cL) with the mode correction of Bocquet et al. (2015) and the ``xn`` boost (DAPPER's
    ``hyperprior_coeffs`` with g = 0); ``lam`` the min(N, p) largest eigenvalues of S S^T, the other
    N - len(lam) being 0."""
    n1 = members - 1
    eN, cL = (members + 1) / members, members / n1
    i_kh = (float((1.0 / (lam + n1)).sum()) + (members - lam.numel()) / n1) * n1 / members
    mc = math.sqrt((eN / cL) ** i_kh)
    return xn * eN / mc, xn * cL * mc


def newton(gradient, step, cost, x0, xtol: float = 1e-4, ytol: float = 1e-7, itermax: int = 100):
    """DAPPER's ``Newton_m``: x <- x - step(x, g(x)) until |g| <= ytol or |dx| <= xtol, each step halved
    until ``cost`` does not increase (a full step where it decreases, as DAPPER's). The safeguard is not
    DAPPER's: an ensemble that collapsed onto precise observations meets innovations of 10^5 of its
    spread, the cost is nearly flat along the anomalies' small directions, and the full steps of the
    approximate Hessian diverged to Inf."""
    x, g = x0, gradient(x0)
    dx_norm, k, f = math.inf, 0, cost(x0)
    while float(torch.linalg.vector_norm(torch.as_tensor(g))) > ytol and dx_norm > xtol and k < itermax:
        dx = step(x, g)
        for _ in range(60):
            trial = cost(x - dx)
            if trial <= f:                     # (NaN fails)
                f = trial
                break
            dx = dx / 2
        x = x - dx
        g = gradient(x)
        dx_norm, k = float(torch.linalg.vector_norm(torch.as_tensor(dx))), k + 1
    return x


def inflation_factor(S: torch.Tensor, d: torch.Tensor, lam: torch.Tensor, V: torch.Tensor,
                     eN: float, cL: float, dual: bool) -> float:
    """l1, the EnKF-N prior inflation (of the anomalies, not the covariance)."""
    n1 = S.shape[0] - 1
    moves = lam > lam.max() * S.shape[1] * torch.finfo(lam.dtype).eps   # S S^T's range: 1 (anomalies sum to 0) is not in it,
    # and the rounding error of that sum, divided by a tiny zeta (or lam), must not move w (or l1) along it
    if dual:
        c2 = torch.where(moves, (V.mT @ (S @ d)).square(), 0.0)   # lam_i u_i^2

        def grad(l1):
            den = l1 * l1 * lam + n1
            return -2 * l1 * float((c2 / den.square()).sum()) - 2 * eN / l1**3 + 2 * cL / l1

        def step(l1, g):
            den = l1 * l1 * lam + n1
            hess = 8 * l1 * l1 * float((lam * c2 / den.pow(3)).sum()) + 6 * eN / l1**4 - 2 * cL / l1**2
            return g / hess

        u2 = torch.where(moves, c2 / lam, 0.0)                  # u_i^2, 0 outside the range like c2

        def dual_cost(l1):
            return float((u2 / (l1 * l1 * lam + n1)).sum()) + eN / l1**2 + cL * math.log(l1 * l1) if l1 > 0 else math.inf

        return float(newton(grad, step, dual_cost, 1.0))

    def zeta(w):
        return n1 * cL / (eN + float(w @ w))

    def grad(w):
        return -(S @ (d - S.mT @ w)) + w * zeta(w)

    def step(w, g):
        return V @ torch.where(moves, (V.mT @ g) / (lam + zeta(w)), 0.0)

    def cost(w):
        return 0.5 * float((d - S.mT @ w).square().sum()) + 0.5 * n1 * cL * math.log(eN + float(w @ w))

    w = newton(grad, step, cost, torch.zeros(S.shape[0], dtype=S.dtype))
    return math.sqrt(n1 / zeta(w))


class EnKFN(Filter):
    name = "enkf-n"
    settings_class = EnKFNSettings

    def __init__(self, grid, **options):
        self.settings, rest = split_settings(EnKFNSettings, options)
        super().__init__(grid, **rest)
        self.last_inflation = float("nan")   # l1 of the latest analysis

    def update(self, x: torch.Tensor, hx: torch.Tensor, obs: ObsBatch) -> torch.Tensor:
        members = x.shape[0]
        mean = x.mean(0)
        S, d = normalised_departures(hx, obs)                                 # (N, p), (p,)
        V, sv, _ = torch.linalg.svd(S, full_matrices=False)   # S S^T = V diag(lam) V^T, V (N, min(N, p)); 0 elsewhere
        lam = sv.square()
        eN, cL = hyperprior(lam, members, self.settings.xn)
        l1 = inflation_factor(S, d, lam, V, eN, cL, self.settings.dual)
        self.last_inflation = l1
        increment, anomalies = thin_square_root(S, d, x - mean, l1, (V, lam))   # l1 w^T A, l1 T^T A
        if self.settings.rotate:                                              # (T Q)^T A = Q^T T^T A
            anomalies = mean_preserving_rotation(members, self.generator, x.dtype).mT @ anomalies
        return mean + increment + anomalies
