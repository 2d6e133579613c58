"""Posterior sampler defaults on nonlinear and linear oracles: a validation grid (to choose settings on) and
a separate test grid (never tuned on), each case one call of :func:`daflow.nn.diffusion.posterior_sample`
with the exact denoiser of a Gaussian prior, so that every error is the sampler's.

- nonlinear: y = h(x_1) + e on a Gaussian prior, against the quadrature oracle
  :func:`daflow.nn.diffusion.scalar_observation_posterior` (exact up to the quadrature);
  validation: h = arctan, 2-D prior of unit variances and correlation 0.8, y in {-1.2, -0.5, 0, 0.8},
  error in {0.05, 0.1, 0.3, 1}; test: y in {-1, -0.3, 0.4, 1.1}, error in {0.07, 0.2, 0.5, 2}, 2-D
  correlation 0.5 and 0.95 and a 16-D AR(1) prior of correlation 0.7, plus h = sinh(x_1 / 2) on the
  2-D 0.8 prior (test only);
- linear: every coordinate against the Kalman posterior (:func:`daflow.nn.diffusion.kalman_posterior`),
  2-D (correlation 0.8, y = 1) and 64-D (AR(1) 0.9, every 8th point, y from -1 to 1), error/prior std
  0.1, 0.3, 1, 3 (validation) and 0.05, 0.5, 2, 10 (test, 64-D also every 4th point).

Prints one row per case (largest |mean error| / posterior std over the coordinates and largest
|variance ratio - 1|), then the worst of each grid and the sampler's seconds.

    python benchmarks/posterior_grid.py [--members 4000] [--grid validation|test|both] [--settings "{'churn': 0}"]
"""
from __future__ import annotations

import argparse
import ast
import math
import time
from functools import partial

import torch

from daflow.nn.diffusion import gaussian_denoiser, kalman_posterior, posterior_sample, scalar_observation_posterior


def ar1(n: int, rho: float) -> torch.Tensor:
    i = torch.arange(n, dtype=torch.float64)
    return rho ** (i[:, None] - i[None, :]).abs()


def pair(rho: float) -> torch.Tensor:
    return torch.tensor([[1.0, rho], [rho, 1.0]], dtype=torch.float64)


OPERATORS = {"arctan": torch.atan, "sinh": lambda x: torch.sinh(x / 2)}


def nonlinear_cases(grid: str):
    if grid == "validation":
        return [("arctan", "2-D 0.8", y, r) for y in (-1.2, -0.5, 0.0, 0.8) for r in (0.05, 0.1, 0.3, 1.0)]
    cases = [("arctan", prior, y, r) for prior in ("2-D 0.5", "2-D 0.95", "16-D AR 0.7")
             for y in (-1.0, -0.3, 0.4, 1.1) for r in (0.07, 0.2, 0.5, 2.0)]
    return cases + [("sinh", "2-D 0.8", y, r) for y in (-1.5, 0.3, 2.0) for r in (0.05, 0.3)]


PRIORS = {"2-D 0.8": pair(0.8), "2-D 0.5": pair(0.5), "2-D 0.95": pair(0.95), "16-D AR 0.7": ar1(16, 0.7),
          "64-D AR 0.9": ar1(64, 0.9)}


def linear_cases(grid: str):
    ratios = (0.1, 0.3, 1.0, 3.0) if grid == "validation" else (0.05, 0.5, 2.0, 10.0)
    cases = [("2-D 0.8", (0,), r) for r in ratios] + [("64-D AR 0.9", tuple(range(0, 64, 8)), r) for r in ratios]
    if grid == "test":
        cases += [("64-D AR 0.9", tuple(range(0, 64, 4)), r) for r in ratios]
    return cases


def observe(op: str, idx: tuple[int, ...], x: torch.Tensor) -> torch.Tensor:
    return x[:, list(idx)] if op == "linear" else OPERATORS[op](x[:, :1])


def score(samples: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> tuple[float, float]:
    s = samples.double().reshape(samples.shape[0], -1)
    return (((s.mean(0) - mean).abs() / var.sqrt()).max().item(), (s.var(0) / var - 1).abs().max().item())


def run(grid: str, members: int, settings: dict) -> tuple[float, float, float]:
    worst_m = worst_v = seconds = 0.0
    print(f"\n{grid} grid, {members} samples, settings {settings or 'default'}")
    print("| operator | prior | y | error | mean error / std | variance error |\n| --- | --- | --- | --- | --- | --- |")
    rows = [(op, prior, (0,), torch.tensor([y], dtype=torch.float64), r) for op, prior, y, r in nonlinear_cases(grid)]
    rows += [("linear", prior, idx, (torch.tensor([1.0], dtype=torch.float64) if len(idx) == 1 else
                                     torch.linspace(-1, 1, len(idx), dtype=torch.float64)), r)
             for prior, idx, r in linear_cases(grid)]
    for k, (op, prior, idx, y, r) in enumerate(rows):
        C = PRIORS[prior]
        if op == "linear":
            mean, cov = kalman_posterior(C, list(idx), r, y)
            var = cov.diagonal()
        else:
            mean, var = scalar_observation_posterior(C, OPERATORS[op], y.item(), r)
        h = partial(observe, op, idx)
        start = time.perf_counter()
        s = posterior_sample(gaussian_denoiser(C), (C.shape[0],), h, y.float(), torch.full((len(idx),), float(r)),
                             members=members, generator=torch.Generator().manual_seed(100 + k), **settings)
        seconds += time.perf_counter() - start
        m, v = score(s, mean, var)
        worst_m, worst_v = max(worst_m, m), max(worst_v, v)
        label = f"{y.item():+.1f}" if len(idx) == 1 else f"{len(idx)} obs"
        print(f"| {op} | {prior} | {label} | {r} | {m:.2f} | {v:.2f} |", flush=True)
    print(f"| worst | | | | {worst_m:.2f} | {worst_v:.2f} |\n{grid}: worst mean error {worst_m:.3f} std, "
          f"worst variance error {worst_v:.3f}, sampler {seconds:.1f} s")
    return worst_m, worst_v, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=4000)
    parser.add_argument("--grid", choices=("validation", "test", "both"), default="both")
    parser.add_argument("--settings", default="{}", help="sampler settings, a Python dict literal")
    args = parser.parse_args()
    settings = ast.literal_eval(args.settings)
    for grid in (("validation", "test") if args.grid == "both" else (args.grid,)):
        run(grid, args.members, settings)
    print(f"(sampling noise: mean {1 / math.sqrt(args.members):.3f} std, variance {math.sqrt(2 / args.members):.3f})")


if __name__ == "__main__":
    main()
