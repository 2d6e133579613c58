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
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

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
                        log_sigma_normal: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Mean of lambda(sigma) |D(x0 + sigma n; sigma) - x0|^2 over the batch; the randomness comes in.

    log_sigma_normal: (B,) standard normal draws; noise: like target.
    """
    sigma = (P_MEAN + P_STD * log_sigma_normal).exp()
    s = sigma.reshape(-1, 1, 1, 1, 1)
    weight = (s**2 + SIGMA_DATA**2) / (s * SIGMA_DATA) ** 2
    denoised = denoiser(history, target + s * noise, sigma)
    return (weight * (denoised - target) ** 2).mean()


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


@torch.no_grad()
def sample(denoiser: Denoiser, history: torch.Tensor, noise: torch.Tensor, steps: int = 32, churn: float = 0.0,
           likelihood: Likelihood | None = None, to_physical: Callable[[torch.Tensor], torch.Tensor] | None = None,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Heun sampler of the (posterior) probability-flow ODE/SDE; returns normalised target frames.

    history: (B, K, C, ny, nx) normalised context; noise: (B, T, C, ny, nx) standard normal start;
    with ``likelihood``, ``to_physical`` maps normalised frames to physical units for H.
    """
    sigmas = sigma_schedule(steps).to(noise.dtype)
    x = noise * sigmas[0]
    gain = min(churn / steps, 2**0.5 - 1)

    def drift(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:  # dx/dsigma = (x - D'(x)) / sigma
        sig = sigma.expand(x.shape[0])
        if likelihood is None:
            return (x - denoiser(history, x, sig)) / sigma
        with torch.enable_grad():
            x_ = x.detach().requires_grad_(True)
            denoised = denoiser(history, x_, sig)
            grad, = torch.autograd.grad(likelihood.log_likelihood(to_physical(denoised), float(sigma)).sum(), x_)
        return (x - (denoised.detach() + sigma**2 * grad)) / sigma

    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
        if gain > 0:  # raise the noise level to sigma_hat = (1 + gain) sigma with fresh noise
            sigma_hat = sigma * (1 + gain)
            x = x + (sigma_hat**2 - sigma**2).sqrt() * torch.randn(x.shape, generator=generator, dtype=x.dtype)
            sigma = sigma_hat
        d = drift(x, sigma)
        x_next = x + (sigma_next - sigma) * d
        if sigma_next > 0:  # Heun correction
            x_next = x + (sigma_next - sigma) * 0.5 * (d + drift(x_next, sigma_next))
        x = x_next
    return x
