"""3D-Var (Lorenc 1986; Courtier et al. 1998) in control variables, and the pieces 4D-Var shares.

The analysis minimises
    J(x) = 1/2 (x - x_b)^T B^{-1} (x - x_b) + 1/2 sum_k |R_k^{-1/2} (y_k - H_k(G_k(x)))|^2
with G_k = identity for 3D-Var (4D-Var: the model from the window start to observation time k).
With B = U U^T (U the symmetric square root) and x = x_b + U v, the preconditioned cost is
    J(v) = 1/2 |v|^2 + 1/2 |r(v)|^2,  r(v) = R^{-1/2} (y - H(G(x_b + U v))),
whose Hessian I + L^T L (L the Jacobian of R^{-1/2} H G U) is well conditioned.
Minimisers: ``cg`` - incremental Gauss-Newton (Courtier, Thepaut & Hollingsworth 1994): each outer
loop linearises at the current v and solves (I + L^T L) dv = L^T r - v by conjugate gradients
(Hestenes & Stiefel 1952), L v by forward-mode and L^T r by reverse-mode autograd (the tangent-
linear and adjoint models); ``lbfgs`` - L-BFGS (Liu & Nocedal 1989) on the full non-linear J(v),
gradient by autograd. With a linear H, one outer loop of ``cg`` is exact: the analysis is the
Kalman/OI mean x_b + B H^T (H B H^T + R)^{-1} (y - H x_b) (DAPPER's ``Var3D``).

B is either ``b_scale`` times the sample covariance of a climatology (DAPPER's xB), or parametric:
b_std^2 times a correlation rho(d / b_length) between horizontal columns (the same for every
level, levels uncorrelated), Gaussian rho = exp(-r^2 / 2) or SOAR rho = (1 + r) exp(-r)
(second-order auto-regressive; Thiebaux 1976), d in grid units on model grids and km on
latitude/longitude grids; a periodic axis of length P is a circle, d its chord
(P / pi) sin(pi delta / P), and on the sphere d is the chord through the Earth, 2 R sin(theta / 2)
for the angle theta between the points, so that the correlations of the embedding stay positive
definite (both functions are positive definite in Euclidean space, hence on any subset of it). Of the
great-circle distance R theta neither is positive definite on the sphere (Gneiting 2013, "Strictly and
non-strictly positive definite functions on spheres"): on a 9 x 18 global grid with a 3000 km length
B had negative eigenvalues, which its square root cannot represent, and the analysis was 0.002 K (SOAR,
6000 km: 0.77 K) away from the Kalman mean with that B. Below 1500 km the chord is within 0.25% of the
arc.
Each member of an ensemble is analysed with the same B.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from daflow.da.base import Filter, split_settings
from daflow.core.grid import StateGrid
from daflow.core.observations import ObsBatch

MAX_STATE = 20_000
CORRELATIONS = ("gaussian", "soar")
MINIMIZERS = ("cg", "lbfgs")


@dataclass(frozen=True)
class VarSettings:
    """B and minimiser settings of 3D-Var (and 4D-Var, which adds the window).

    b_scale: factor on B; b_std, b_length, b_correlation: parametric B (instead of a climatology);
    minimizer: "cg" (incremental Gauss-Newton) or "lbfgs"; outer_loops: Gauss-Newton outer loops
    (and L-BFGS restarts); inner_iterations: CG iterations (L-BFGS iterations) per outer loop;
    tolerance: relative reduction of the gradient norm that stops the inner loop.
    """

    b_scale: float = 1.0
    b_std: float | None = None
    b_length: float | None = None
    b_correlation: str = "gaussian"
    minimizer: str = "cg"
    outer_loops: int = 10   # as DAPPER's Var4D (nIter = 10); a converged run stops earlier (increment RMS < tolerance)
    inner_iterations: int = 100
    tolerance: float = 1e-8

    def __post_init__(self):
        if not self.b_scale > 0:
            raise ValueError(f"b_scale must be positive, got {self.b_scale}")
        if self.b_std is not None and not self.b_std > 0:
            raise ValueError(f"b_std must be positive, got {self.b_std}")
        if self.b_length is not None and not self.b_length > 0:
            raise ValueError(f"b_length must be positive, got {self.b_length}")
        if self.b_correlation not in CORRELATIONS:
            raise ValueError(f"b_correlation must be one of {', '.join(CORRELATIONS)}")
        if self.minimizer not in MINIMIZERS:
            raise ValueError(f"minimizer must be one of {', '.join(MINIMIZERS)}")
        if self.outer_loops < 1 or self.inner_iterations < 1:
            raise ValueError("outer_loops and inner_iterations must be >= 1")


def correlation_matrix(grid: StateGrid, length: float, kind: str, dtype: torch.dtype) -> torch.Tensor:
    """Correlation (columns, columns) of the horizontal columns at distance d: rho(d / length)."""
    points, box = grid.column_positions(np.arange(grid.columns))
    delta = np.abs(points[:, None, :] - points[None, :, :])
    if box is not None:   # periodic model grids: chord of each axis' circle, so that rho stays positive definite
        dist = np.sqrt((((box / np.pi) * np.sin(np.pi * delta / box)) ** 2).sum(-1))
    else:                 # points on the sphere (km): the chord, not the arc, for the same reason
        dist = np.sqrt((delta**2).sum(-1))
    r = dist / length
    rho = np.exp(-0.5 * r**2) if kind == "gaussian" else (1 + r) * np.exp(-r)
    return torch.from_numpy(rho).to(dtype)


def background_covariance(grid: StateGrid, settings: VarSettings, covariance: torch.Tensor | None,
                          dtype: torch.dtype) -> torch.Tensor:
    """B (n, n): b_scale x the climatological ``covariance``, or b_scale b_std^2 rho between columns."""
    if grid.size > MAX_STATE:
        raise ValueError(f"variational B is dense here; state size {grid.size} > {MAX_STATE}")
    if covariance is not None:
        if settings.b_std is not None or settings.b_length is not None:
            raise ValueError("give either a climatology or b_std and b_length, not both")
        return settings.b_scale * covariance.to(dtype)
    if settings.b_std is None or settings.b_length is None:
        raise ValueError("needs a climatology, or b_std and b_length")
    rho = correlation_matrix(grid, settings.b_length, settings.b_correlation, dtype)
    return settings.b_scale * settings.b_std**2 * torch.kron(torch.eye(grid.levels, dtype=dtype), rho)


def symmetric_sqrt(B: torch.Tensor) -> torch.Tensor:
    """U = V diag(sqrt(max(lam, 0))) V^T with B = V diag(lam) V^T, so that U U^T = B."""
    lam, V = torch.linalg.eigh(B)
    return (V * lam.clamp_min(0).sqrt()) @ V.mT


def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(-1, keepdim=True)


EXPLICIT_JACOBIAN = 2**22   # members x p x n below which the linearised operator is formed as a matrix


def linearise(residual: Callable[[torch.Tensor], torch.Tensor], v: torch.Tensor):
    """(r, tangent, adjoint) at v: r = residual(v) (M, p), tangent(dv) = dr/dv dv (forward mode,
    the tangent-linear model), adjoint(w) = (dr/dv)^T w (reverse mode, the adjoint model). Small
    problems form the Jacobian (M, p, n) once, so that each CG iteration is
    two small matrix products instead of two passes through the model; it is built by reverse mode (one pass
    per row) when p <= n, else by forward mode (one pass per column). Each pass runs on all M members at once
    with the same unit (co)tangent in every row: row m of the residual depends on row m of v only, so the
    result's row m is member m's Jacobian row (or column). (Differentiating residual(u[None])[0] member by
    member, as before, evaluated every member's Jacobian with the background of member 0: exact for a linear
    H, wrong for arctan, where Gauss-Newton then stalled away from the minimum, |grad J| 1-30.)"""
    with torch.enable_grad():
        r, pullback = torch.func.vjp(residual, v)
    members, p, n = r.shape[0], r.shape[1], v.shape[1]
    if members * p * n <= EXPLICIT_JACOBIAN:
        with torch.enable_grad():
            if p <= n:                                   # one reverse pass per observation
                unit = torch.eye(p, dtype=r.dtype, device=r.device)[:, None, :].expand(p, members, p)
                J = torch.func.vmap(lambda w: pullback(w)[0])(unit).permute(1, 0, 2).detach()            # (M, p, n)
            else:                                        # one forward pass per state variable
                unit = torch.eye(n, dtype=v.dtype, device=v.device)[:, None, :].expand(n, members, n)
                J = torch.func.vmap(lambda t: torch.func.jvp(residual, (v,), (t,))[1])(unit).permute(1, 2, 0).detach()
        return r.detach(), lambda dv: (J @ dv[..., None])[..., 0], lambda w: (J.mT @ w[..., None])[..., 0]
    return (r.detach(), lambda dv: torch.func.jvp(residual, (v,), (dv,))[1].detach(),
            lambda w: pullback(w)[0].detach())


def gauss_newton_cg(residual: Callable[[torch.Tensor], torch.Tensor], v: torch.Tensor, outer: int, inner: int,
                    tolerance: float) -> torch.Tensor:
    """Minimise 1/2 |v|^2 + 1/2 |residual(v)|^2 row by row (members independent): incremental
    Gauss-Newton, CG on (I + L^T L) dv = -(v + L^T r) per outer loop, L = d residual / dv; CG stops
    when the gradient norm has fallen by ``tolerance`` from that of the first outer loop, the outer
    loops when the increment's RMS is below ``tolerance`` too. Each row's increment is halved until its
    cost does not rise (damped Gauss-Newton; Nocedal & Wright 2006, section 10.3): the full step, the
    minimiser of the linearised cost, is kept wherever it lowers J, always for a linear H; from the flat
    tail of a saturating H (arctan with a precise observation) the tangent's step overshoots by tens of
    spreads, and undamped the analysis went there."""
    tiny = torch.finfo(v.dtype).tiny
    stop = None
    for _ in range(outer):
        r, tangent, adjoint = linearise(residual, v)
        g = -v - adjoint(r)                              # minus the gradient of J
        dv = torch.zeros_like(v)
        res, p = g.clone(), g.clone()
        rr = _rowdot(res, res)
        if stop is None:
            stop = tolerance**2 * rr.clamp_min(tiny)
        for _ in range(inner):
            if bool((rr <= stop).all()):
                break
            Ap = p + adjoint(tangent(p))
            alpha = torch.where(rr <= stop, torch.zeros_like(rr), rr / _rowdot(p, Ap).clamp_min(tiny))
            dv = dv + alpha * p
            res = res - alpha * Ap
            rr_new = _rowdot(res, res)
            p = res + (rr_new / rr.clamp_min(tiny)) * p
            rr = rr_new
        dv = _damped(residual, v, r, dv)
        v = v + dv
        if float(dv.square().mean()) <= tolerance**2:
            break
    return v


HALVINGS = 30


def _damped(residual: Callable[[torch.Tensor], torch.Tensor], v: torch.Tensor, r: torch.Tensor,
            dv: torch.Tensor) -> torch.Tensor:
    """dv (M, n) with each row halved until J(v + dv) <= J(v), J = 1/2 |v|^2 + 1/2 |residual(v)|^2 per row
    (r = residual(v)); after HALVINGS halvings the row's step is dropped."""
    cost = 0.5 * (v.square().sum(-1) + r.square().sum(-1))
    scale = torch.ones(v.shape[0], 1, dtype=v.dtype, device=v.device)
    with torch.no_grad():
        for _ in range(HALVINGS):
            trial = v + scale * dv
            worse = ~(0.5 * (trial.square().sum(-1) + residual(trial).square().sum(-1)) <= cost)    # NaN is worse
            if not bool(worse.any()):
                return scale * dv
            scale = torch.where(worse[:, None], 0.5 * scale, scale)
    return torch.where(worse[:, None], 0.0, scale) * dv


def lbfgs(residual: Callable[[torch.Tensor], torch.Tensor], v: torch.Tensor, outer: int, inner: int,
          tolerance: float) -> torch.Tensor:
    """Minimise sum over rows of 1/2 |v|^2 + 1/2 |residual(v)|^2 with torch's L-BFGS (strong Wolfe)."""
    v = v.detach().clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([v], max_iter=inner, history_size=20, line_search_fn="strong_wolfe",
                                  tolerance_grad=tolerance, tolerance_change=1e-14)

    def closure():
        optimizer.zero_grad()
        cost = 0.5 * (v.square().sum() + residual(v).square().sum())
        cost.backward()
        return cost

    with torch.enable_grad():
        for _ in range(outer):
            optimizer.step(closure)
    return v.detach()


def minimise(settings: VarSettings, residual: Callable[[torch.Tensor], torch.Tensor], v0: torch.Tensor) -> torch.Tensor:
    method = gauss_newton_cg if settings.minimizer == "cg" else lbfgs
    return method(residual, v0, settings.outer_loops, settings.inner_iterations, settings.tolerance)


class VariationalFilter(Filter):
    """Shared set-up of 3D-Var and 4D-Var: settings, B and its square root U."""

    min_members = 1
    differentiates = True
    settings_class = VarSettings
    max_state = MAX_STATE  # B is dense

    def __init__(self, grid, covariance: torch.Tensor | None = None, **options):
        self.settings, rest = split_settings(self.settings_class, options)
        super().__init__(grid, **rest)
        dtype = covariance.dtype if covariance is not None else torch.float64
        self.B = background_covariance(grid, self.settings, covariance, dtype)
        self.U = symmetric_sqrt(self.B)


class Var3D(VariationalFilter):
    name = "3dvar"

    def update(self, x: torch.Tensor, hx: torch.Tensor, obs: ObsBatch) -> torch.Tensor:
        U = self.U.to(x.dtype)
        background = x.detach()

        def residual(v):
            return (obs.value - obs.apply(background + v @ U)) / obs.error_std

        v = minimise(self.settings, residual, torch.zeros_like(background))
        return background + v @ U                        # U symmetric: U v per row is v @ U

