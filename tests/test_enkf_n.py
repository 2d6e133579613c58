"""EnKF-N: its inflation minimises Bocquet's dual cost (checked by a brute-force scalar search),
primal and dual forms agree, the analysis is the Kalman filter of the l1-inflated ensemble, and
DAPPER's sakov2008 numbers (0.21 with N = 24, 0.18 with xN = 2) at reduced length."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar
from test_filters import GRID, MEMBERS, kalman, obs_dataset, sakov2008_rmse, sample_cov

from daflow.core.grid import StateGrid
from daflow.da.cycle import make_filter
from daflow.core.observations import observation_batches


@pytest.fixture(params=[0.3, 2.0], ids=["small-spread", "large-innovation"])
def case(request):
    g = torch.Generator().manual_seed(4)
    ens = 1 + request.param * torch.randn(MEMBERS, 12, generator=g, dtype=torch.float64)
    index = np.arange(0, 12, 2)
    batch = observation_batches(obs_dataset(index, np.linspace(-2, 4, len(index)), error=0.5), GRID)[0]
    return ens, batch


def dual_cost_minimiser(ens, batch, xn=1.0, bounds=(0.2, 20)):
    """argmin over l1 of d^T (l1^2 S^T S + N1 I)^{-1} d + eN / l1^2 + cL log l1^2 (Bocquet et al.
    2015, with DAPPER's mode-corrected eN, cL), written with p x p matrices and a scalar search."""
    n = ens.shape[0]
    n1 = n - 1
    hx = ens[:, batch.index].numpy()
    S = (hx - hx.mean(0)) / batch.error_std.numpy()
    d = (batch.value.numpy() - hx.mean(0)) / batch.error_std.numpy()
    s2 = np.zeros(n)
    sv = np.linalg.svd(S, compute_uv=False)
    s2[:len(sv)] = sv**2
    eN, cL = (n + 1) / n, n / n1
    mc = math.sqrt((eN / cL) ** (np.mean(1 / (s2 + n1)) * n1))
    eN, cL = xn * eN / mc, xn * cL * mc
    _, sv, Wt = np.linalg.svd(S, full_matrices=False)                      # S^T S = W diag(sv^2) W^T
    sv, along = sv[:n1], Wt[:n1] @ d                                        # N anomalies summing to 0: rank N - 1
    across = d @ d - along @ along                                          # |d|^2 outside S^T's range

    def cost(l1):                                                           # d^T (l1^2 S^T S + N1 I)^{-1} d + ...
        return (along**2 / (l1**2 * sv**2 + n1)).sum() + across / n1 + eN / l1**2 + cL * np.log(l1**2)

    log = minimize_scalar(lambda t: cost(math.exp(t)), bounds=tuple(map(math.log, bounds)), method="bounded",
                          options={"xatol": 1e-10}).x
    return math.exp(log)


@pytest.mark.parametrize("dual", [False, True])
@pytest.mark.parametrize("xn", [1.0, 2.0])
def test_inflation_minimises_the_dual_cost(case, dual, xn):
    ens, batch = case
    filt = make_filter("enkf-n", GRID, dual=dual, xn=xn)
    filt.analyse(ens, batch)
    # dual: Newton to |dl1| < 1e-4; primal: Newton on w with an approximate Hessian (DAPPER), same optimum
    assert filt.last_inflation == pytest.approx(dual_cost_minimiser(ens, batch, xn), rel=2e-3)


@pytest.mark.parametrize("dual", [False, True])
def test_collapsed_ensemble_facing_large_innovations(dual):
    """Members 1e-6 apart (an ensemble collapsed onto precise observations) and innovations 3e5 of the
    spread: the inflation is still the dual cost's minimiser (about 10^5). The anomalies sum to zero only to
    rounding, and that rounding, divided by the tiny zeta, used to push w along 1, out of S S^T's range,
    until the iteration reached Inf (ZeroDivisionError, exit 70 through the CLI)."""
    g = torch.Generator().manual_seed(7)
    ens = 3.0 + 1e-6 * torch.randn(MEMBERS, 12, generator=g, dtype=torch.float64)
    index = np.arange(12)
    batch = observation_batches(obs_dataset(index, 3.0 + 0.3 * np.sin(index), error=1e-6), GRID)[0]
    filt = make_filter("enkf-n", GRID, dual=dual)
    analysis, _ = filt.analyse(ens, batch)
    assert torch.isfinite(analysis).all()
    # (the dual Newton stops on |d l1| < 1e-4 where the cost is flat in l1: within 1% at l1 ~ 2e5)
    assert filt.last_inflation == pytest.approx(dual_cost_minimiser(ens, batch, bounds=(1.0, 1e12)), rel=1e-2 if dual else 2e-3)


def test_analysis_is_the_kalman_filter_of_the_inflated_ensemble(case):
    ens, batch = case
    filt = make_filter("enkf-n", GRID)
    analysis, diag = filt.analyse(ens, batch)
    mean = ens.mean(0)
    inflated = mean + filt.last_inflation * (ens - mean)
    kmean, kcov = kalman(inflated, batch)
    torch.testing.assert_close(analysis.mean(0), kmean)
    torch.testing.assert_close(sample_cov(analysis), kcov)
    torch.testing.assert_close(diag.analysis_mean, kmean[batch.index])
    rotated, _ = make_filter("enkf-n", GRID, rotate=True, seed=2).analyse(ens, batch)
    torch.testing.assert_close(rotated.mean(0), kmean)
    torch.testing.assert_close(sample_cov(rotated), kcov)


def test_a_huge_ensemble_approaches_the_kalman_filter():
    """Linear-Gaussian, 10 variables, every other one observed: with 20,000 members drawn from N(m, P) the
    EnKF-N's inflation tends to 1 (the hyperprior concentrates on the sample covariance) and its analysis to the
    Kalman filter's with the true P, within the sampling error (about 1 / sqrt(N) of the analysis spread).
    The N x N eigendecomposition of S S^T took minutes and 3 GB at this size; the thin SVD of S (N x p) takes
    milliseconds."""
    n, members = 10, 20_000
    grid = StateGrid("x", ("i",), (n,), {"i": np.arange(n)})
    g = torch.Generator().manual_seed(0)
    L = 0.4 * torch.randn(n, n, generator=g, dtype=torch.float64)
    P = L @ L.T + 0.2 * torch.eye(n, dtype=torch.float64)
    m = torch.randn(n, generator=g, dtype=torch.float64)
    ens = m + torch.randn(members, n, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(P).T
    index = np.arange(0, n, 2)
    batch = observation_batches(obs_dataset(index, np.sin(index), error=0.7), grid)[0]
    filt = make_filter("enkf-n", grid)
    analysis, _ = filt.analyse(ens, batch)
    H = torch.zeros(len(index), n, dtype=torch.float64)
    H[torch.arange(len(index)), torch.as_tensor(index)] = 1
    K = P @ H.T @ torch.linalg.inv(H @ P @ H.T + 0.49 * torch.eye(len(index), dtype=torch.float64))
    mean, cov = m + K @ (batch.value - H @ m), (torch.eye(n, dtype=torch.float64) - K @ H) @ P
    assert abs(filt.last_inflation - 1) < 1e-3
    assert float(((analysis.mean(0) - mean) / cov.diagonal().sqrt()).abs().max()) < 5 / math.sqrt(members)
    assert float(((sample_cov(analysis) - cov).abs().max() / cov.abs().max())) < 10 / math.sqrt(members)


def test_bad_settings():
    with pytest.raises(ValueError, match="xn"):
        make_filter("enkf-n", GRID, xn=0.0)
    with pytest.raises(ValueError, match="does not take loc_radius"):
        make_filter("enkf-n", GRID, loc_radius=3.0)


def test_dapper_sakov2008_enkf_n():
    """DAPPER sakov2008: EnKF_N(N=24, rot=True) 0.21, EnKF_N(N=24, rot=True, xN=2) 0.18; no inflation tuned."""
    assert sakov2008_rmse("enkf-n", 24, cycles=500, rotate=True, seed=1) <= 0.23
    assert sakov2008_rmse("enkf-n", 24, cycles=500, rotate=True, xn=2.0, seed=1) <= 0.20
