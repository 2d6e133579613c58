"""The posterior sampler (daflow.nn.diffusion.posterior_sample) against exact oracles, guidance by guidance.

The denoiser is the exact E[x0 | x] of a Gaussian prior, so every error is the sampler's:

1. the issue's case (2-D prior, unit variances, correlation 0.8, y = 1 on the first coordinate,
   error 0.3): mean and variance of both coordinates for MMPS, SDA (gamma 1e-3 and 1e-2) and DPS
   against the Kalman posterior;
2. the discretisation bias of the deterministic sampler with MMPS, without sampling noise: for a
   Gaussian prior and linear H the sampler is affine in its start noise, so one run from 0 gives the
   sample mean and one run per basis vector the covariance (64-D AR(1) prior of correlation 0.9,
   every 8th point observed, error/prior std 0.1 and 1), against the number of steps;
3. an arctan operator in 2-D against importance sampling of 2 * 10^6 prior draws (MMPS default, without
   the Langevin corrections and with churn instead). The validation and test grids that chose the
   default corrections: benchmarks/posterior_grid.py;
4. observation errors that differ by orders of magnitude in one set of observations (copies of the 64-D
   prior, every second point observed, error/prior std 0.01, 0.1, 1 and 10 together), where MMPS's
   CG system is ill-conditioned: largest mean error / posterior std and variance error per copy.

    python benchmarks/posterior_oracle.py [--members 2000]
"""
from __future__ import annotations

import argparse
import time

import torch

from daflow.nn.diffusion import (SamplerSettings, _guided_denoiser, edm_sample, gaussian_denoiser, kalman_posterior,
                                   posterior_sample)


def issue_case(members: int) -> None:
    C = torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=torch.float64)
    y, r = torch.tensor([1.0], dtype=torch.float64), 0.3
    mean, cov = kalman_posterior(C, [0], r, y)
    print(f"1. 2-D, y = 1, error {r}, {members} samples, default steps (32); exact mean "
          f"{mean[0]:.3f} {mean[1]:.3f}, variance {cov[0, 0]:.3f} {cov[1, 1]:.3f}")
    print("| guidance | mean x1 | var x1 | mean x2 | var x2 | seconds |\n| --- | --- | --- | --- | --- | --- |")
    for name, settings in (("mmps", {}), ("sda gamma 1e-3", {"guidance": "sda", "gamma": 1e-3}),
                           ("sda gamma 1e-2", {"guidance": "sda", "gamma": 1e-2}), ("dps zeta 1", {"guidance": "dps"})):
        start = time.perf_counter()
        s = posterior_sample(gaussian_denoiser(C), (2,), lambda x: x[:, :1], y, torch.tensor([r], dtype=torch.float64),
                             members=members, generator=torch.Generator().manual_seed(0), **settings)
        m, v = s.mean(0), s.var(0)
        print(f"| {name} | {m[0]:.3f} | {v[0]:.3f} | {m[1]:.3f} | {v[1]:.3f} | {time.perf_counter() - start:.1f} |")


def discretisation() -> None:
    i = torch.arange(64, dtype=torch.float64)
    C = 0.9 ** (i[:, None] - i[None, :]).abs()
    idx = list(range(0, 64, 8))
    y = torch.linspace(-1, 1, 8, dtype=torch.float64)
    print("\n2. 64-D, every 8th point observed, MMPS deterministic sampler, exact moments of the sampled distribution:"
          " largest |mean error| / posterior std and |variance ratio - 1| over the 64 points")
    print("| steps | r = 0.1 mean | r = 0.1 variance | r = 1 mean | r = 1 variance |\n| --- | --- | --- | --- | --- |")
    for steps in (8, 16, 24, 32, 48, 64):
        row = []
        for r in (0.1, 1.0):
            mean, cov = kalman_posterior(C, idx, r, y)
            cfg = SamplerSettings(steps=steps)
            guided = _guided_denoiser(gaussian_denoiser(C), lambda x: x[:, idx], y,
                                      torch.full((8,), r, dtype=torch.float64), cfg, torch.float64)
            out = edm_sample(guided, torch.cat([torch.zeros(1, 64, dtype=torch.float64), torch.eye(64, dtype=torch.float64)]), cfg)
            M = (out[1:] - out[0]).T
            row += [((out[0] - mean).abs() / cov.diagonal().sqrt()).max().item(),
                    ((M @ M.T).diagonal() / cov.diagonal() - 1).abs().max().item()]
        print(f"| {steps} | " + " | ".join(f"{v:.4f}" for v in row) + " |")


def arctan(members: int) -> None:
    C = torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=torch.float64)
    prior = torch.randn(2_000_000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) @ torch.linalg.cholesky(C).T
    print(f"\n3. y = arctan(x1) + e, 2-D, {members} samples against importance sampling: mean error / posterior std, variance ratio")
    print("| y, error | settings | mean x1 | mean x2 | var x1 | var x2 |\n| --- | --- | --- | --- | --- | --- |")
    for y, r in ((1.0, 0.1), (1.0, 0.3), (0.5, 0.3), (-1.2, 0.05)):
        logw = -0.5 * ((y - torch.atan(prior[:, 0])) / r) ** 2
        w = (logw - logw.max()).exp()
        w /= w.sum()
        mean = (w[:, None] * prior).sum(0)
        var = (w[:, None] * (prior - mean) ** 2).sum(0)
        for name, settings in (("default", {}), ("no corrections", {"corrections": 0}),
                               ("churn 30, no corrections", {"churn": 30.0, "corrections": 0})):
            s = posterior_sample(gaussian_denoiser(C), (2,), lambda x: torch.atan(x[:, :1]), torch.tensor([y], dtype=torch.float64),
                                 torch.tensor([r], dtype=torch.float64), members=members,
                                 generator=torch.Generator().manual_seed(1), **settings)
            e, q = (s.mean(0) - mean) / var.sqrt(), s.var(0) / var
            print(f"| {y}, {r} | {name} | {e[0]:+.2f} | {e[1]:+.2f} | {q[0]:.2f} | {q[1]:.2f} |")


def mixed_errors(members: int) -> None:
    i = torch.arange(64, dtype=torch.float64)
    ratios = (0.01, 0.1, 1.0, 10.0)
    C = torch.block_diag(*[0.9 ** (i[:, None] - i[None, :]).abs()] * len(ratios))
    idx = [b * 64 + j for b in range(len(ratios)) for j in range(0, 64, 2)]
    y = (2 * torch.linspace(-1, 1, 32, dtype=torch.float64)).repeat(len(ratios))
    r = torch.tensor(ratios, dtype=torch.float64).repeat_interleave(32)
    mean, cov = kalman_posterior(C, idx, r, y)
    print(f"\n4. errors {', '.join(map(str, ratios))} x prior std in one set of observations (4 copies of the 64-D prior, "
          f"every second point observed), {members} samples, defaults")
    print("| error / prior std | mean error / posterior std | variance ratio - 1 |\n| --- | --- | --- |")
    start = time.perf_counter()
    s = posterior_sample(gaussian_denoiser(C), (C.shape[0],), lambda x: x[:, idx], y, r, members=members,
                         generator=torch.Generator().manual_seed(6)).double()
    merr = ((s.mean(0) - mean).abs() / cov.diagonal().sqrt()).view(len(ratios), 64).amax(1)
    verr = (s.var(0) / cov.diagonal() - 1).abs().view(len(ratios), 64).amax(1)
    for ratio, m, v in zip(ratios, merr, verr):
        print(f"| {ratio} | {m:.3f} | {v:.3f} |")
    print(f"({time.perf_counter() - start:.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=2000)
    args = parser.parse_args()
    issue_case(args.members)
    discretisation()
    arctan(args.members)
    mixed_errors(args.members)


if __name__ == "__main__":
    main()
