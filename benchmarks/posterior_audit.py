"""Hidden-case audit of the posterior sampler (issue 16, 6th session): closed-form oracles beyond the issue's settings.

Every denoiser is the exact E[x0 | x] of a Gaussian prior N(m, C), so every error is the sampler's
(daflow.nn.diffusion.posterior_sample, default settings unless a group says otherwise):

- ``gaussian GROUP``: 2000 members against the Kalman posterior, largest |mean error| / posterior std and
  |variance ratio - 1| over every coordinate (pass: 0.1 and 0.15). Groups: dims (2-D to 64-D, error/prior std
  0.01-10), ops (local average of 3 points, differences, all / one coordinate observed), field (16 x 16, exponential
  and Gaussian covariance of length 3), units (mean 280, std 5), units64 (64-D in K, Pa and 1e-3 units), hard
  (precise observations, 0.01 prior std, dense), misc (1 or 2 members, other seeds, a 3-D shape, float64), few
  (1 and 2 members pooled over many calls, generator=None);
- ``field64 MEAN STD``: a 64 x 64 periodic field, Gaussian covariance of length 4 points (FFT denoiser), observed at
  0.1%-100% of the points with error/prior std 0.01-10, 32 members: finite, RMSE at the observed points of the
  ensemble mean against the truth beside the prior's and the Kalman mean's, z-RMS of the ensemble mean about the
  Kalman mean (32 exact samples: 0.18) and mean variance ratio;
- ``arctan``: y = arctan(x1) + e in 2-D, correlations 0 / 0.5 / 0.95, y = arctan(+-3) (3 prior std) and 1.5 (14),
  against the quadrature oracle (scalar_observation_posterior; importance sampling of 4e5 prior draws beside it).

    python benchmarks/posterior_audit.py gaussian dims     # ... ops, field, units, units64, hard, misc, few
    python benchmarks/posterior_audit.py field64 280 5
    python benchmarks/posterior_audit.py arctan
"""
from __future__ import annotations

import math
import sys
import time

import torch

from daflow.nn.diffusion import gaussian_denoiser, posterior_sample, scalar_observation_posterior

F64 = torch.float64


def denoiser(C, mu):
    lam, U = torch.linalg.eigh(C)

    def d(x, sigma):
        s2 = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1) ** 2
        flat = x.reshape(x.shape[0], -1) - mu.to(x.dtype)
        u, lam_ = U.to(x.dtype), lam.to(x.dtype)
        return (mu.to(x.dtype) + ((flat @ u) * (lam_ / (lam_ + s2))) @ u.T).reshape(x.shape)
    return d


def kalman(C, mu, H, r, y):
    K = C @ H.T @ torch.linalg.inv(H @ C @ H.T + torch.diag(r**2))
    return mu + K @ (y - H @ mu), C - K @ H @ C


def ar(n, rho):
    i = torch.arange(n, dtype=F64)
    return rho ** (i[:, None] - i[None, :]).abs()


def field(n, length, kind):
    yy, xx = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    p = torch.stack([yy.flatten(), xx.flatten()], 1).double()
    d = torch.cdist(p, p)
    return torch.exp(-d / length) if kind == "exp" else torch.exp(-0.5 * (d / length) ** 2) + 1e-6 * torch.eye(n * n, dtype=F64)


def pick(n, idx):
    H = torch.zeros(len(idx), n, dtype=F64)
    H[range(len(idx)), idx] = 1
    return H


def average3(n, centres):
    H = torch.zeros(len(centres), n, dtype=F64)
    for k, c in enumerate(centres):
        H[k, c - 1:c + 2] = 1 / 3
    return H


def difference(n, pairs):
    H = torch.zeros(len(pairs), n, dtype=F64)
    for k, (a, b) in enumerate(pairs):
        H[k, a], H[k, b] = 1, -1
    return H


def run(name, C, mu, H, ratio, members=2000, seed=0, dtype=torch.float32, shape=None):
    """Truth and y drawn from the prior (seed), r = ratio x the observed quantity's prior std."""
    n = C.shape[0]
    shape = shape or (n,)
    g = torch.Generator().manual_seed(seed)
    truth = mu + torch.linalg.cholesky(C + 1e-10 * C.diagonal().mean() * torch.eye(n, dtype=F64)) @ torch.randn(n, generator=g, dtype=F64)
    r = ratio * (H @ C @ H.T).diagonal().sqrt()
    y = H @ truth + r * torch.randn(len(r), generator=g, dtype=F64)
    mean, cov = kalman(C, mu, H, r, y)
    start = time.perf_counter()
    s = posterior_sample(denoiser(C, mu), shape, lambda x: x.reshape(x.shape[0], -1) @ H.to(x.dtype).T, y.to(dtype), r.to(dtype),
                         members=members, generator=g)
    seconds = time.perf_counter() - start
    assert s.shape == (members, *shape), s.shape
    s = s.double().reshape(members, n)
    merr = ((s.mean(0) - mean).abs() / cov.diagonal().sqrt()).max().item() if members > 1 else float("nan")
    verr = ((s.var(0) / cov.diagonal()) - 1).abs().max().item() if members > 1 else float("nan")
    finite = bool(torch.isfinite(s).all())
    ok = finite and merr <= 0.1 and verr <= 0.15
    print(f"| {name} | {ratio} | {merr:.3f} | {verr:.3f} | {finite} | {'pass' if ok else 'FAIL'} | {seconds:.0f} |", flush=True)
    return s, mean, cov


def gaussian(group: str) -> None:
    print("| case | error / prior std | max mean err / post. std | max variance err | finite | result | s |\n"
          "| --- | --- | --- | --- | --- | --- | --- |")
    z = lambda n: torch.zeros(n, dtype=F64)  # noqa: E731
    C2 = torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=F64)
    C64 = ar(64, 0.9)
    every8 = list(range(0, 64, 8))
    if group == "dims":
        for ratio in (0.01, 0.1, 1, 3, 10):
            run("2-D corr 0.8, x1 observed", C2, z(2), pick(2, [0]), ratio)
        run("16-D AR 0.7, every 4th", ar(16, 0.7), z(16), pick(16, list(range(0, 16, 4))), 0.3)
        for ratio in (0.01, 0.1, 1, 3, 10):
            run("64-D AR 0.9, every 8th", C64, z(64), pick(64, every8), ratio)
    elif group == "ops":
        for ratio in (0.1, 1.0):
            run("64-D, mean of 3 points, every 8th", C64, z(64), average3(64, list(range(1, 64, 8))), ratio)
            run("64-D, x_i - x_i+3, 8 pairs", C64, z(64), difference(64, [(i, i + 3) for i in range(0, 60, 8)]), ratio)
            run("64-D, all observed", C64, z(64), pick(64, list(range(64))), ratio)
            run("64-D, one observed", C64, z(64), pick(64, [30]), ratio)
    elif group == "field":
        for kind in ("exp", "gauss"):
            for ratio in (0.1, 1.0):
                run(f"16 x 16 {kind} length 3, every 9th", field(16, 3.0, kind), z(256), pick(256, list(range(0, 256, 9))), ratio,
                    shape=(16, 16))
    elif group == "units":
        mu2 = torch.tensor([280.0, 280.0], dtype=F64)
        for ratio in (0.1, 1.0):
            run("2-D mean 280 std 5", 25 * C2, mu2, pick(2, [0]), ratio)
        run("2-D mean 0 std 5", 25 * C2, z(2), pick(2, [0]), 0.1)
        run("2-D mean 280 std 1", C2, mu2, pick(2, [0]), 0.1)
        run("2-D mean 0 std 0.1", C2 / 100, z(2), pick(2, [0]), 0.1)
        run("16 x 16 mean 280 std 5", 25 * field(16, 3.0, "exp"), torch.full((256,), 280.0, dtype=F64),
            pick(256, list(range(0, 256, 9))), 0.1, shape=(16, 16))
    elif group == "units64":
        for ratio in (0.01, 0.1, 1, 3, 10):
            run("64-D mean 280 std 5, every 8th", 25 * C64, torch.full((64,), 280.0, dtype=F64), pick(64, every8), ratio)
        run("64-D mean 101325 std 1000, mean of 3", 1e6 * C64, torch.full((64,), 101325.0, dtype=F64),
            average3(64, list(range(1, 64, 8))), 0.1)
        run("64-D mean 0 std 1e-3, differences", 1e-6 * C64, z(64), difference(64, [(i, i + 3) for i in range(0, 60, 8)]), 0.1)
    elif group == "hard":
        run("64-D all observed", C64, z(64), pick(64, list(range(64))), 0.01)
        run("64-D mean of 3, every 2nd", C64, z(64), average3(64, list(range(1, 63, 2))), 0.01)
        for kind in ("exp", "gauss"):
            for step in (3, 1):
                run(f"16 x 16 {kind} length 3, every {step}", field(16, 3.0, kind), z(256), pick(256, list(range(0, 256, step))), 0.01,
                    shape=(16, 16))
    elif group == "misc":
        for m in (1, 2):
            s, _, _ = run(f"members={m} (shape only)", C2, z(2), pick(2, [0]), 0.3, members=m)
        for seed in (11, 12345):
            run(f"seed {seed}", C2, z(2), pick(2, [0]), 0.3, seed=seed)
        run("3-D shape (2, 3, 4)", ar(24, 0.8), z(24), pick(24, [0, 7, 13]), 0.3, shape=(2, 3, 4))
        run("float64", C2, z(2), pick(2, [0]), 0.3, dtype=F64)
    elif group == "few":
        mean, cov = kalman(C2, z(2), pick(2, [0]), torch.tensor([0.3], dtype=F64), torch.tensor([1.0], dtype=F64))
        for m, calls in ((1, 400), (2, 200)):
            s = torch.cat([posterior_sample(denoiser(C2, z(2)), (2,), lambda x: x[:, :1], torch.tensor([1.0]), torch.tensor([0.3]),
                                            members=m, generator=torch.Generator().manual_seed(100 + c)) for c in range(calls)]).double()
            merr = ((s.mean(0) - mean).abs() / cov.diagonal().sqrt()).max().item()
            verr = ((s.var(0) / cov.diagonal()) - 1).abs().max().item()
            ok = merr <= 3 / len(s) ** 0.5 and verr <= 0.15
            print(f"| members={m}, {calls} calls pooled | 0.3 | {merr:.3f} | {verr:.3f} | {bool(torch.isfinite(s).all())} | "
                  f"{'pass' if ok else 'FAIL'} (3 / sqrt({len(s)})) | |", flush=True)
        s = posterior_sample(denoiser(C2, z(2)), (2,), lambda x: x[:, :1], torch.tensor([1.0]), torch.tensor([0.3]), members=2000).double()
        merr = ((s.mean(0) - mean).abs() / cov.diagonal().sqrt()).max().item()
        verr = ((s.var(0) / cov.diagonal()) - 1).abs().max().item()
        print(f"| generator=None | 0.3 | {merr:.3f} | {verr:.3f} | {bool(torch.isfinite(s).all())} | "
              f"{'pass' if merr <= 0.1 and verr <= 0.15 else 'FAIL'} | |")
    else:
        raise SystemExit(f"unknown group {group!r}")


def field64(mu0: float, sd0: float) -> None:
    n, length = 64, 4.0
    k = torch.fft.fftfreq(n, dtype=F64)
    spec = torch.exp(-0.5 * (2 * torch.pi * length) ** 2 * (k[:, None] ** 2 + k[None, :] ** 2))
    spec = spec / spec.mean() * sd0**2 + 1e-8 * sd0**2

    def denoise(x, sigma):
        s2 = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1, 1) ** 2
        sp = spec.to(x.dtype)
        return mu0 + torch.fft.ifft2(torch.fft.fft2(x - mu0) * (sp / (sp + s2))).real

    c = torch.fft.ifft2(spec).real.reshape(-1)
    every = torch.arange(n * n)
    print(f"64 x 64, mean {mu0}, std {sd0}, 32 members\n| density | error / prior std | obs. | finite | RMSE at obs.: prior / "
          "ensemble mean / Kalman mean | z-RMS vs Kalman | variance ratio | s |\n| --- | --- | --- | --- | --- | --- | --- | --- |")
    for density in (0.001, 0.01, 0.05, 0.1, 1.0):
        for ratio in (0.01, 0.1, 1.0, 10.0):
            g = torch.Generator().manual_seed(7)
            truth = mu0 + torch.fft.ifft2(torch.fft.fft2(torch.randn(n, n, generator=g, dtype=F64)) * spec.sqrt()).real.reshape(-1)
            idx = torch.randperm(n * n, generator=g)[:max(1, round(density * n * n))].sort().values
            r = ratio * sd0
            y = truth[idx] + r * torch.randn(len(idx), generator=g, dtype=F64)
            cross = c[((every[:, None] // n - idx // n) % n) * n + (every[:, None] % n - idx % n) % n]  # C[:, idx]
            gain = torch.linalg.solve(cross[idx] + r**2 * torch.eye(len(idx), dtype=F64), cross.T).T
            mean, var = mu0 + gain @ (y - mu0), c[0] - (gain * cross).sum(1)
            start = time.perf_counter()
            s = posterior_sample(denoise, (n, n), lambda x, idx=idx: x.reshape(x.shape[0], -1)[:, idx], y.float(),
                                 torch.full((len(idx),), r), members=32, generator=g).double().reshape(32, -1)
            seconds = time.perf_counter() - start
            m = s.mean(0)
            rmse = [(truth[idx] - v).pow(2).mean().sqrt().item() for v in (mu0, m[idx], mean[idx])]
            zrms = ((m - mean) / var.sqrt()).pow(2).mean().sqrt().item()
            print(f"| {density:.1%} | {ratio} | {len(idx)} | {bool(torch.isfinite(s).all())} | {rmse[0]:.3g} / {rmse[1]:.3g} / "
                  f"{rmse[2]:.3g} | {zrms:.3f} | {(s.var(0) / var).mean().item():.3f} | {seconds:.0f} |", flush=True)


def arctan() -> None:
    print("| corr. | y | error | mean err x1, x2 / post. std | variance ratio x1, x2 | IS - quadrature (post. std) | result |\n"
          "| --- | --- | --- | --- | --- | --- | --- |")
    for rho in (0.0, 0.5, 0.95):
        C = torch.tensor([[1.0, rho], [rho, 1.0]], dtype=F64)
        for y in (math.atan(3.0), math.atan(-3.0), 1.5):
            for r in (0.05, 0.1, 0.3):
                mean, var = scalar_observation_posterior(C, torch.atan, y, r)
                prior = torch.randn(400_000, 2, generator=torch.Generator().manual_seed(0), dtype=F64) @ torch.linalg.cholesky(C).T
                logw = -0.5 * ((y - torch.atan(prior[:, 0])) / r) ** 2
                w = (logw - logw.max()).exp()
                w /= w.sum()
                importance = (w[:, None] * prior).sum(0)
                s = posterior_sample(gaussian_denoiser(C), (2,), lambda x: torch.atan(x[:, :1]), torch.tensor([y]), torch.tensor([r]),
                                     members=2000, generator=torch.Generator().manual_seed(1)).double()
                e, q = (s.mean(0) - mean) / var.sqrt(), s.var(0) / var
                ok = bool(torch.isfinite(s).all()) and e.abs().max() <= 0.15 and (q - 1).abs().max() <= 0.15
                print(f"| {rho} | {y:.3f} | {r} | {e[0]:+.3f}, {e[1]:+.3f} | {q[0]:.3f}, {q[1]:.3f} | "
                      f"{((importance - mean).abs() / var.sqrt()).max():.3f} | {'pass' if ok else 'FAIL'} |", flush=True)


def main() -> None:
    what = sys.argv[1:] or ["gaussian", "dims"]
    if what[0] == "gaussian":
        gaussian(what[1])
    elif what[0] == "field64":
        field64(float(what[1]), float(what[2]))
    elif what[0] == "arctan":
        arctan()
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
