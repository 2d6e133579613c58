"""EDM diffusion (Karras, Aittala, Aila & Laine 2022): denoiser, score-matching loss, samplers, guidance.

The forward process adds Gaussian noise of standard deviation sigma to a (normalised) state:
x_sigma = x_0 + sigma n. The network F is wrapped so that the denoiser
D(x; sigma) = c_skip x + c_out F(c_in x; sigma) estimates E[x_0 | x_sigma], with
c_skip = s^2 / (sigma^2 + s^2), c_out = sigma s / sqrt(sigma^2 + s^2), c_in = 1 / sqrt(sigma^2 + s^2)
(s: the data's standard deviation, 1 after normalisation). Denoising score matching trains D with
the loss lambda(sigma) |D(x_0 + sigma n; sigma) - x_0|^2, lambda = 1 / c_out^2, ln sigma ~ N(-1.2, 1.2^2);
the score is grad log p_sigma(x) = (D(x; sigma) - x) / sigma^2.

Sampling integrates the probability-flow ODE dx/dsigma = (x - D(x; sigma)) / sigma from sigma_max
to 0 with Heun's method on the schedule sigma_i = (s_max^(1/rho) + i/(n-1) (s_min^(1/rho) -
s_max^(1/rho)))^rho, rho = 7; ``churn`` > 0 adds EDM's stochastic step (noise raised by a factor
1 + churn before each step: a discretised reverse SDE).

Posterior sampling (assimilation) replaces the prior score by the posterior score
grad log p(x | y) = grad log p_sigma(x) + grad_x log p(y | x), i.e. D'(x) = D(x) + sigma^2 grad_x log p(y | x),
with the likelihood evaluated through the denoised estimate x_0 = D(x; sigma):
- SDA (Rozet & Louppe 2023, "Score-based data assimilation"): p(y | x) ~ N(y; H(x_0), Sigma_y + gamma (s_y sigma)^2 I),
  sigma being the noise level of the network's normalised target and s_y the physical units per unit
  of that target at the observed level (the training standard deviation of the state, or of its
  one-step increment, :mod:`daflow.nn.normalisation`), so that gamma is dimensionless whatever the units;
- DPS (Chung et al. 2023, "Diffusion posterior sampling"): grad_x log p(y | x) ~ -zeta grad_x |y - H(x_0)|_R / sigma^2
  with |r|_R the norm of the residual weighted by Sigma_y^-1/2 (the step normalised by the residual).
- MMPS (Rozet et al. 2024), the default of :func:`posterior_sample`: p(y | x) ~ N(y; H(x_0), Sigma_y + A Sigma A^T)
  with Tweedie's covariance Sigma = Cov[x_0 | x] = sigma^2 dD/dx, through vector-Jacobian products and
  conjugate gradients; exact for a Gaussian prior and linear H, so it samples the Kalman posterior
  with the prior's exact denoiser (tests/test_posterior.py), with no parameter to tune.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn

from daflow.errors import DataError
from daflow.nn.transformer import Architecture, SpatioTemporalTransformer

P_MEAN, P_STD, SIGMA_DATA = -1.2, 1.2, 1.0


class Denoiser(nn.Module):
    """D(x; sigma | history) with EDM preconditioning around the transformer F."""

    def __init__(self, arch: Architecture):
        super().__init__()
        self.arch = arch
        self.net = SpatioTemporalTransformer(arch)

    def forward(self, history: torch.Tensor, noisy: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        # history: (B, K, C, ny, nx); noisy: (B, T, C, ny, nx); sigma: (B,)
        s = sigma.reshape(-1, 1, 1, 1, 1)
        c_skip = SIGMA_DATA**2 / (s**2 + SIGMA_DATA**2)
        c_out = s * SIGMA_DATA / (s**2 + SIGMA_DATA**2).sqrt()
        c_in = 1 / (s**2 + SIGMA_DATA**2).sqrt()
        return c_skip * noisy + c_out * self.net(history, c_in * noisy, sigma)


def score_matching_loss(denoiser: Denoiser, history: torch.Tensor, target: torch.Tensor,
                        log_sigma_normal: torch.Tensor, noise: torch.Tensor, area: torch.Tensor | float = 1.0) -> torch.Tensor:
    """Mean of lambda(sigma) |D(x0 + sigma n; sigma) - x0|^2 over the batch; the randomness comes in.

    log_sigma_normal: (B,) standard normal draws; noise: like target; area: weights of the grid rows
    (ny, 1) of mean 1 (cos(latitude) on a global grid, :func:`daflow.nn.training.sphere`), 1 otherwise.
    """
    sigma = (P_MEAN + P_STD * log_sigma_normal).exp()
    s = sigma.reshape(-1, 1, 1, 1, 1)
    weight = (s**2 + SIGMA_DATA**2) / (s * SIGMA_DATA) ** 2
    denoised = denoiser(history, target + s * noise, sigma)
    return (weight * area * (denoised - target) ** 2).mean()


def sigma_schedule(steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> torch.Tensor:
    """The EDM noise levels sigma_0 > ... > sigma_{n-1}, followed by 0: (steps + 1,)."""
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    sigmas = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)])


@dataclass(frozen=True)
class Likelihood:
    """Observations y = H(x) + e, e ~ N(0, diag(error_std^2)), on the physical (denormalised) state.

    observe: maps a (B, T, C, ny, nx) physical state to (B, n_obs) observation equivalents.
    method: "sda" (Gaussian form with gamma) or "dps" (step zeta); scale: (n_obs,) physical units per
    unit of the normalised target at each observation (s_y of the SDA variance), 1 by default.
    """

    observe: Callable[[torch.Tensor], torch.Tensor]
    value: torch.Tensor      # (n_obs,)
    error_std: torch.Tensor  # (n_obs,)
    method: str = "sda"
    gamma: float = 1e-2
    zeta: float = 1.0
    scale: torch.Tensor | float = 1.0

    def log_likelihood(self, physical: torch.Tensor, sigma: float) -> torch.Tensor:
        """(B,) log p(y | x) from the denoised physical state (B, T, C, ny, nx)."""
        residual = self.value - self.observe(physical)  # (B, n_obs)
        if self.method == "sda":
            return -0.5 * (residual**2 / (self.error_std**2 + self.gamma * (self.scale * sigma) ** 2)).sum(-1)
        if self.method == "dps":
            return -self.zeta * (residual / self.error_std).norm(dim=-1) / max(sigma, 1e-3) ** 2
        raise ValueError(f"unknown guidance {self.method!r}; choose sda or dps")


@dataclass(frozen=True)
class SamplerSettings:
    """Posterior sampler settings (the defaults need no tuning; see :func:`posterior_sample`).

    guidance: "mmps" (Tweedie covariance), "sda" (gamma) or "dps" (zeta); steps: EDM noise levels;
    churn: EDM's S_churn (noise raised by 1 + min(churn / steps, sqrt(2) - 1) before each step while
    churn_min <= sigma <= churn_max); corrections: Langevin corrector steps after each step that
    ends at a noise level corrections_min <= sigma <= corrections_max, of size tau sigma^2 (SDA's
    predictor-corrector; 8 at sigma <= 1.5 by default, see :func:`posterior_sample`);
    cg_iterations / cg_tolerance: conjugate gradients of MMPS, at most cg_iterations, stopped once the residual
    is below cg_tolerance (precise observations of a smooth field need up to about 32); data_mean / data_std: the prior's mean
    (a float or a tensor of the sample's shape) and typical standard deviation, which set the units the
    schedule and corrections are in (None: estimated from the denoiser, see :func:`prior_moments`).
    """

    guidance: str = "mmps"
    steps: int = 32
    churn: float = 0.0
    churn_min: float = 0.0
    churn_max: float = float("inf")
    corrections: int = 8
    tau: float = 0.5
    corrections_min: float = 0.0
    corrections_max: float = 1.5
    cg_iterations: int = 32
    cg_tolerance: float = 1e-4
    gamma: float = 1e-2
    zeta: float = 1.0
    scale: object = 1.0  # SDA's s_y: physical units per unit of the sampled variable, a float or (n_obs,)
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    data_mean: object = None
    data_std: float | None = None

    def __post_init__(self):
        if self.guidance not in ("mmps", "sda", "dps"):
            raise DataError(None, f"unknown guidance {self.guidance!r}; choose mmps, sda or dps")
        bad = [name for name in ("steps", "sigma_min", "sigma_max", "rho", "cg_iterations")
               if not getattr(self, name) > 0] + [name for name in ("churn", "corrections", "tau", "gamma", "zeta")
                                                  if not getattr(self, name) >= 0]
        if self.data_std is not None and not 0 < self.data_std < float("inf"):
            bad.append("data_std")
        if bad or self.sigma_min >= self.sigma_max:
            raise DataError(None, f"sampler setting(s) {', '.join(bad) or 'sigma_min >= sigma_max'} out of range")


def posterior_sample(denoiser: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], shape: tuple[int, ...] | int,
                     observe: Callable[[torch.Tensor], torch.Tensor] | None, value: torch.Tensor | None,
                     error_std: torch.Tensor | float | None, *, members: int, generator: torch.Generator | None = None,
                     **settings) -> torch.Tensor:
    """(members, *shape) samples of p(x | y), y = observe(x) + e, e ~ N(0, diag(error_std^2)).

    ``denoiser(x, sigma)`` returns E[x_0 | x] for x = x_0 + sigma n of shape (B, *shape), sigma a (B,)
    tensor; ``observe`` maps (B, *shape) to (B, n_obs) and must be differentiable (autograd);
    ``observe=None`` samples the prior. ``settings``: the fields of :class:`SamplerSettings`.

    MMPS guidance (Rozet, Andry, Lanusse & Louppe 2024, "Learning diffusion priors from observations
    by expectation maximization", eq. 8-10): p(x_0 | x) ~ N(D(x), Sigma), with Tweedie's
    Sigma = Cov[x_0 | x] = sigma^2 dD/dx, and H linearised at D(x) (A = dH/dx_0) give
    p(y | x) ~ N(y; H(D(x)), R + sigma^2 A dD/dx A^T), hence the posterior denoiser
    D'(x) = D(x) + sigma^2 (dD/dx)^T A^T (R + sigma^2 A (dD/dx) A^T)^-1 (y - H(D(x))).
    The system is solved by conjugate gradients on R^-1/2 (...) R^-1/2, Jacobi-preconditioned (its diagonal
    taken with Sigma ~ sigma^2 / (1 + sigma^2) I and diag(A A^T) by a Hutchinson probe, so that observations
    whose errors differ by orders of magnitude converge together), each product being one
    vector-Jacobian product through the denoiser (dD/dx is symmetric for an exact denoiser, so
    (dD/dx)^T serves for dD/dx) and one Jacobian-vector product of H; a row stops as soon as a
    Rayleigh quotient of the system falls below 1, which only a non-symmetric or indefinite learned
    dD/dx can give (:func:`conjugate_gradient`, ``floor``). For a Gaussian prior and linear H
    this is the exact posterior score, so the sampler then draws the Kalman posterior up to its
    discretisation. SDA and DPS (module docstring; s_y = ``scale``) are kept for comparison.

    The sampler is EDM's (Karras et al. 2022, algorithm 2): Heun steps of dx/dsigma = (x - D'(x)) / sigma
    on the schedule of :func:`sigma_schedule`, with optional churn and, by default, 8 Langevin
    corrections (tau 0.5) after every step that ends at sigma <= 1.5 (in units of the data's standard
    deviation). For a nonlinear H the linearisation at D(x) makes D' wrong where Sigma is large, and
    the deterministic flow carries that error to sigma = 0; the corrections re-equilibrate x towards
    p_sigma(x | y) at the levels where the approximation has become good and the Langevin steps
    still mix (sigma comparable to the posterior spread), which removes the bias (figures and the
    validation / test grids: benchmarks/README.md, posterior_oracle). They cost 8 more evaluations
    of D' on each level below 1.5 (14 of 32); without observations (``observe=None``, a forecast) none
    are made unless ``corrections`` is given.

    The noise levels (sigma_max = 80, corrections below 1.5, the preconditioner) are in units of the
    data's standard deviation about its mean, as for a network trained on normalised data. A prior in
    physical units (say a temperature of mean 280 K and standard deviation 5 K) is sampled in the
    standardised variable z = (x - m) / s, with D_z(z; sigma) = (D(m + s z; s sigma) - m) / s and
    H_z(z) = H(m + s z), an exact change of variables; m and s are ``data_mean`` and ``data_std``, or
    by default :func:`prior_moments` of the denoiser (without them the flow would start sigma_max
    about 0, so that a mean of 280 ended 280 / 80 prior standard deviations off).
    """
    shape = (shape,) if isinstance(shape, int) else tuple(shape)  # an int n, a list or a torch.Size: (n,) etc.
    if observe is None:  # the prior's flow needs no correction: the corrections default to none
        settings = {"corrections": 0, **settings}
    cfg = SamplerSettings(**settings)
    dtype = value.dtype if isinstance(value, torch.Tensor) and value.is_floating_point() else torch.get_default_dtype()
    if members < 1:
        raise DataError(None, f"members must be at least 1, got {members}")
    loc, spread = prior_moments(denoiser, shape, dtype, cfg.sigma_max) if cfg.data_mean is None or cfg.data_std is None \
        else (None, None)
    loc = torch.as_tensor(cfg.data_mean if cfg.data_mean is not None else loc, dtype=dtype)
    spread = float(cfg.data_std if cfg.data_std is not None else spread)
    if (loc != 0).any() or spread != 1:  # sample z = (x - loc) / spread
        denoiser, observe = _standardised(denoiser, observe, loc, spread)
        cfg = replace(cfg, scale=cfg.scale * spread)  # SDA's s_y: physical units per unit of z
    seen = {"derivative": False}  # whether H had a non-zero derivative at any denoised state
    guided = _prior_denoiser(denoiser, dtype) if observe is None else \
        _guided_denoiser(denoiser, observe, value, error_std, cfg, dtype, seen)
    noise = torch.randn((members, *shape), generator=generator, dtype=dtype)
    out = edm_sample(guided, noise, cfg, generator)
    if observe is not None and not seen["derivative"]:
        raise DataError(None, STEP_OPERATOR)
    if not torch.isfinite(out).all():
        raise DataError(None, f"the sampler diverged (non-finite samples) with {cfg.guidance} guidance"
                        + ("" if cfg.guidance == "mmps" else "; the default mmps guidance needs no tuning"))
    return loc + spread * out


def prior_moments(denoiser: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], shape: tuple[int, ...],
                  dtype: torch.dtype, sigma_max: float = 80.0, probes: int = 16) -> tuple[torch.Tensor, float]:
    """The prior's mean m (``shape``) and root-mean-square standard deviation s, from its denoiser alone.

    At a noise level sigma much larger than the data's spread, E[x_0 | x] ~ m + Cov[x_0] (x - m) / sigma^2,
    so the denoiser at x = m' + sigma z (z Rademacher probes, m' the current estimate) gives m as the
    probes' mean of D and s^2 = tr Cov[x_0] / n as sigma E[z . (D - m)] / n (Stein's identity, Hutchinson's
    estimator). Evaluated at sigma = sigma_max s' for the current estimate s' (first s' = 1, m' = 0), and
    repeated until s changes by less than a factor 2: one evaluation of ``probes`` states for data that are
    already standardised, a few more for data in other units. The probes are fixed (seed 0), so the
    estimate, and with it a seeded sample, is reproducible.
    """
    z = (2 * torch.randint(0, 2, (probes, *shape), generator=torch.Generator().manual_seed(0)) - 1).to(dtype)
    loc, spread = torch.zeros(shape, dtype=dtype), 1.0
    with torch.no_grad():
        for _ in range(12):
            sigma = sigma_max * spread
            d = denoiser(loc + sigma * z, torch.full((probes,), sigma, dtype=dtype))
            if not torch.isfinite(d).all():
                raise DataError(None, f"the denoiser returned non-finite values at noise level {sigma:.3g}")
            loc = d.mean(0)
            new = float((sigma * (z * (d - loc)).mean()).clamp_min(0).sqrt())
            if not new > 0:  # a prior without spread (a point mass): keep the units
                break
            done = 0.5 <= new / spread <= 2
            spread = new
            if done:
                break
    return loc, spread


def _standardised(denoiser, observe, loc: torch.Tensor, spread: float):
    """The denoiser and observation operator of z = (x - loc) / spread (see :func:`posterior_sample`)."""
    def standard(z: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return (denoiser(loc + spread * z, spread * sigma) - loc) / spread

    def observe_standard(z0: torch.Tensor) -> torch.Tensor:
        return observe(loc + spread * z0)
    return standard, (None if observe is None else observe_standard)


def _prior_denoiser(denoiser, dtype):
    def prior(x: torch.Tensor, sigma: float) -> torch.Tensor:
        with torch.no_grad():
            return denoiser(x, torch.full((x.shape[0],), sigma, dtype=x.dtype))
    return prior


def _observation_arrays(value, error_std, dtype):
    value = torch.as_tensor(value, dtype=dtype).reshape(-1)
    error = torch.as_tensor(error_std, dtype=dtype).reshape(-1)
    error = error.expand(value.shape) if error.numel() == 1 else error
    if error.shape != value.shape:
        raise DataError(None, f"{error.numel()} observation error(s) for {value.numel()} observation(s)")
    if not (torch.isfinite(value).all() and torch.isfinite(error).all()):
        raise DataError(None, "observation values and errors must be finite")
    if not (error > 0).all():
        raise DataError(None, "observation error standard deviations must be positive")
    return value, error


def _observe_checked(observe, x0: torch.Tensor, n_obs: int) -> torch.Tensor:
    try:
        y0 = observe(x0)
    except RuntimeError as err:
        raise DataError(None, f"the observation operator failed: {str(err).splitlines()[0]}") from None
    if not isinstance(y0, torch.Tensor) or y0.shape != (x0.shape[0], n_obs):
        raise DataError(None, f"the observation operator returned shape {getattr(y0, 'shape', type(y0))}, "
                        f"not ({x0.shape[0]}, {n_obs})")
    if x0.requires_grad and not y0.requires_grad:
        raise DataError(None, "the observation operator is not differentiable (autograd sees no dependence on the state)")
    return y0


STEP_OPERATOR = ("the observation operator is not differentiable: its derivative is zero at every sampled state (a step "
                 "function such as round, floor or sign?), so the observations would be ignored")


def _guided_denoiser(denoiser, observe, value, error_std, cfg: SamplerSettings, dtype, seen: dict | None = None):
    """D'(x; sigma) = D(x) + sigma^2 grad_x log p(y | x) for the guidance of ``cfg``; ``seen["derivative"]``
    becomes True once H has a non-zero derivative at a denoised state (autograd gives an exact 0 for a
    step function, which is differentiable to autograd but carries no information to the guidance)."""
    value, error = _observation_arrays(value, error_std, dtype)
    n_obs = value.numel()
    seen = {} if seen is None else seen

    def note_derivative(y0: torch.Tensor, x0: torch.Tensor) -> None:
        if not seen.get("derivative"):  # A^T w for random weights w: zero for every member only if A = 0
            w = torch.randn(y0.shape, generator=torch.Generator().manual_seed(1), dtype=y0.dtype)
            grad, = torch.autograd.grad(y0, x0, w, retain_graph=True, allow_unused=True)
            seen["derivative"] = grad is not None and bool((grad != 0).any())

    signs: dict[tuple, torch.Tensor] = {}  # MMPS: a fixed Rademacher state per batch shape, for diag(A A^T)

    def guided(x: torch.Tensor, sigma: float) -> torch.Tensor:
        sig = torch.full((x.shape[0],), sigma, dtype=x.dtype)
        with torch.enable_grad():
            x_ = x.detach().requires_grad_(True)
            x0 = denoiser(x_, sig)
            if cfg.guidance != "mmps":
                y0 = _observe_checked(observe, x0, n_obs)
                note_derivative(y0, x0)
                residual = value - y0
                if cfg.guidance == "sda":
                    loglik = -0.5 * (residual**2 / (error**2 + cfg.gamma * (cfg.scale * sigma) ** 2)).sum()
                else:
                    loglik = -cfg.zeta * (residual / error).norm(dim=-1).sum() / max(sigma, 1e-3) ** 2
                grad, = torch.autograd.grad(loglik, x_)
                return (x0 + sigma**2 * grad).detach()
            point = x0.detach().requires_grad_(True)
            y0 = _observe_checked(observe, point, n_obs)
            note_derivative(y0, point)
            probe = torch.zeros_like(y0, requires_grad=True)
            adjoint, = torch.autograd.grad(y0, point, probe, create_graph=True)  # A^T probe, linear in probe
            if not adjoint.requires_grad:  # autograd's derivative of H is a constant 0 (round, floor, sign)
                raise DataError(None, STEP_OPERATOR)

            def a_transpose(v: torch.Tensor) -> torch.Tensor:
                return torch.autograd.grad(y0, point, v, retain_graph=True)[0]

            def a_times(w: torch.Tensor) -> torch.Tensor:  # A w = d(w . A^T u)/du
                out, = torch.autograd.grad(adjoint, probe, w, retain_graph=True, allow_unused=True)
                return torch.zeros_like(y0) if out is None else out

            def covariance(w: torch.Tensor) -> torch.Tensor:  # sigma^2 (dD/dx)^T w
                return sigma**2 * torch.autograd.grad(x0, x_, w, retain_graph=True)[0]

            def system(u: torch.Tensor) -> torch.Tensor:  # (I + R^-1/2 A Sigma A^T R^-1/2) u
                return u + a_times(covariance(a_transpose(u / error))) / error

            if point.shape not in signs:
                draw = torch.randint(0, 2, point.shape, generator=torch.Generator().manual_seed(0))
                signs[point.shape] = (2 * draw - 1).to(point.dtype)
            with torch.no_grad():
                residual = (value - y0.detach()) / error
                # Jacobi preconditioner: diag of the system with Sigma ~ sigma^2 / (1 + sigma^2) I (data of unit
                # variance) and diag(A A^T) from E[(A s)^2] over Rademacher s (Hutchinson), averaged over members
                rows = a_times(signs[point.shape]).square().mean(0)
                diagonal = 1 + sigma**2 / (1 + sigma**2) * rows / error**2
            u = conjugate_gradient(system, residual, cfg.cg_iterations, cfg.cg_tolerance, floor=1.0, diagonal=diagonal)
            score, = torch.autograd.grad(x0, x_, a_transpose(u / error))
        return (x0.detach() + sigma**2 * score).detach()

    return guided


def gaussian_denoiser(covariance: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor | float], torch.Tensor]:
    """The exact denoiser of a Gaussian prior x_0 ~ N(0, C): E[x_0 | x_0 + sigma n] = C (C + sigma^2 I)^-1 x
    = U diag(l / (l + sigma^2)) U^T x with C = U diag(l) U^T.

    The returned ``denoise(x, sigma)`` takes x of shape (B, *shape) with prod(shape) = n and sigma a
    float or a (B,) tensor, as :func:`posterior_sample` calls it; with it every error of a posterior
    sample is the sampler's, and :func:`kalman_posterior` is the exact answer (a closed-form oracle).
    """
    eigenvalues, vectors = torch.linalg.eigh(covariance)

    def denoise(x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        s2 = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1) ** 2
        u, lam = vectors.to(x.dtype), eigenvalues.to(x.dtype)
        flat = x.reshape(x.shape[0], -1)
        return (((flat @ u) * (lam / (lam + s2))) @ u.T).reshape(x.shape)
    return denoise


def kalman_posterior(covariance: torch.Tensor, index, error_std: torch.Tensor | float,
                     value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of x | y for x ~ N(0, C), y = x[index] + e, e ~ N(0, diag(error_std^2)):
    K = C H^T (H C H^T + R)^-1, mean K y, covariance C - K H C (float64; ``error_std`` one value or one per observation)."""
    C = covariance.double()
    index = torch.as_tensor(index, dtype=torch.long).reshape(-1)
    H = torch.zeros(len(index), C.shape[0], dtype=torch.float64)
    H[torch.arange(len(index)), index] = 1.0
    error = torch.as_tensor(error_std, dtype=torch.float64).reshape(-1).expand(len(index))
    gain = C @ H.T @ torch.linalg.inv(H @ C @ H.T + torch.diag(error**2))
    return gain @ torch.as_tensor(value, dtype=torch.float64).reshape(-1), C - gain @ H @ C


def scalar_observation_posterior(covariance: torch.Tensor, observe: Callable[[torch.Tensor], torch.Tensor], value: float,
                                 error_std: float, index: int = 0, points: int = 200_001) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variances of x | y for x ~ N(0, C) and one nonlinear observation y = h(x_i) + e, e ~ N(0, r^2)
    (float64), by quadrature: a closed-form oracle for :func:`posterior_sample` with a nonlinear ``observe``.

    p(x_i | y) ~ N(x_i; 0, C_ii) N(y; h(x_i), r^2) is one-dimensional: its mean m and variance v come from
    the trapezoid rule on ``points`` nodes over +-12 prior std (``observe`` maps a tensor of x_i values
    elementwise). Every other coordinate is Gaussian given x_i, x_j | x_i ~ N(b_j x_i, C_jj - b_j C_ij) with
    b_j = C_ij / C_ii, so E[x_j | y] = b_j m and Var[x_j | y] = C_jj - b_j C_ij + b_j^2 v.
    """
    C = covariance.double()
    sd = C[index, index].sqrt()
    x = torch.linspace(-12, 12, points, dtype=torch.float64) * sd
    logw = -0.5 * (x / sd) ** 2 - 0.5 * ((value - observe(x).double()) / error_std) ** 2
    w = (logw - logw.max()).exp()
    w = w / w.sum()
    m = (w * x).sum()
    v = (w * (x - m) ** 2).sum()
    b = C[:, index] / C[index, index]
    return b * m, C.diagonal() - b * C[:, index] + b**2 * v


def conjugate_gradient(operator: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, iterations: int,
                       tolerance: float = 0.0, floor: float = 0.0, diagonal: torch.Tensor | None = None) -> torch.Tensor:
    """Batched (preconditioned) CG for operator(u) = b, one system per row of b (B, n).

    ``diagonal`` (n,) or (B, n), positive: an approximation of the operator's diagonal, used as the
    Jacobi preconditioner (Golub & Van Loan, algorithm 11.5.1), which removes the ill-conditioning that
    unequal scales of the unknowns cause. From u = 0; stops when every row's residual norm is
    below ``tolerance`` |b|; a row whose curvature p^T A p is not positive, or is below ``floor`` p^T p
    (up to a relative 1e-4), stops moving for good. ``floor`` = 1 suits an operator that should be I + a
    positive semi-definite matrix (MMPS's I + R^-1/2 A Sigma A^T R^-1/2), whose Rayleigh quotients are all
    at least 1: a smaller one shows that Sigma is not what it should be (a learned denoiser's dD/dx need be
    neither symmetric nor positive semi-definite), where CG would otherwise take arbitrarily large steps.
    """
    tiny = torch.finfo(b.dtype).tiny
    with torch.no_grad():
        u, r = torch.zeros_like(b), b.clone()
        target = tolerance**2 * (r * r).sum(-1, keepdim=True)
        z = r if diagonal is None else r / diagonal
        p = z.clone()
        rz = (r * z).sum(-1, keepdim=True)
        active = torch.ones_like(rz, dtype=torch.bool)
    for _ in range(iterations):
        ap = operator(p).detach()
        with torch.no_grad():
            curvature = (p * ap).sum(-1, keepdim=True)
            active = active & (curvature > 0) & (curvature >= (1 - 1e-4) * floor * (p * p).sum(-1, keepdim=True))
            alpha = torch.where(active, rz / curvature.clamp_min(tiny), 0.0)
            u = u + alpha * p
            r = r - alpha * ap
            if bool((((r * r).sum(-1, keepdim=True) <= target) | ~active).all()):
                break
            z = r if diagonal is None else r / diagonal
            rz_next = (r * z).sum(-1, keepdim=True)
            p = z + torch.where(rz > 0, rz_next / rz.clamp_min(tiny), 0.0) * p
            rz = rz_next
    return u


def edm_sample(denoise: Callable[[torch.Tensor, float], torch.Tensor], noise: torch.Tensor, cfg: SamplerSettings,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """EDM's stochastic Heun sampler with Langevin corrections, from standard normal ``noise``.

    ``denoise(x, sigma)`` is the (posterior) denoiser D'. Each step optionally raises the noise level
    to sigma_hat = (1 + g) sigma with fresh noise (churn), takes a Heun step of
    dx/dsigma = (x - D'(x)) / sigma to the next level, then ``corrections`` Langevin steps
    x <- x + delta s + sqrt(2 delta) z with s = (D'(x) - x) / sigma^2, delta = tau sigma^2 (the variance
    of p_sigma is at least sigma^2 in every direction, so tau < 2 is stable; SDA's corrector, Rozet &
    Louppe 2023, divides delta by mean(eps^2), which is unstable in few dimensions).
    """
    sigmas = sigma_schedule(cfg.steps, cfg.sigma_min, cfg.sigma_max, cfg.rho).tolist()
    x = noise * sigmas[0]
    gain_max = min(cfg.churn / cfg.steps, 2**0.5 - 1)

    def randn():
        return torch.randn(x.shape, generator=generator, dtype=x.dtype)

    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
        gain = gain_max if cfg.churn_min <= sigma <= cfg.churn_max else 0.0
        if gain > 0:
            sigma_hat = sigma * (1 + gain)
            x = x + (sigma_hat**2 - sigma**2) ** 0.5 * randn()
            sigma = sigma_hat
        d = (x - denoise(x, sigma)) / sigma
        x_next = x + (sigma_next - sigma) * d
        if sigma_next > 0:
            x_next = x + (sigma_next - sigma) * 0.5 * (d + (x_next - denoise(x_next, sigma_next)) / sigma_next)
            for _ in range(cfg.corrections if cfg.corrections_min <= sigma_next <= cfg.corrections_max else 0):
                eps = (x_next - denoise(x_next, sigma_next)) / sigma_next
                x_next = x_next - sigma_next * cfg.tau * eps + sigma_next * (2 * cfg.tau) ** 0.5 * randn()
        x = x_next
    return x


@torch.no_grad()
def sample(denoiser: Denoiser, history: torch.Tensor, noise: torch.Tensor, steps: int = 32, churn: float = 0.0,
           likelihood: Likelihood | None = None, to_physical: Callable[[torch.Tensor], torch.Tensor] | None = None,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Heun sampler of the (posterior) probability-flow ODE/SDE with SDA/DPS guidance; normalised target frames.

    history: (B, K, C, ny, nx) normalised context; noise: (B, T, C, ny, nx) standard normal start;
    with ``likelihood``, ``to_physical`` maps normalised frames to physical units for H.
    """
    def denoise(x: torch.Tensor, sigma: float) -> torch.Tensor:
        sig = torch.full((x.shape[0],), sigma, dtype=x.dtype)
        if likelihood is None:
            return denoiser(history, x, sig)
        with torch.enable_grad():
            x_ = x.detach().requires_grad_(True)
            denoised = denoiser(history, x_, sig)
            grad, = torch.autograd.grad(likelihood.log_likelihood(to_physical(denoised), sigma).sum(), x_)
        return denoised.detach() + sigma**2 * grad

    return edm_sample(denoise, noise, SamplerSettings(steps=steps, churn=churn), generator)
