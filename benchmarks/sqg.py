"""SQG: daflow's batched torch model beside a straightforward single-member NumPy implementation.

Prints seconds per model step for 1, 20 and 100 members at N = 64 and 128 (torch, one batched call
per step) and per single-member step of the NumPy reference (numpy.fft, same equations, same
dtype), the per-member-step ratio, the time of the step's FFTs alone for 20 members (the ratio's
ceiling: ``speedup_cap_fft_only_N64_M20``), and the largest difference between the two after one day from
the same state in float64 (they implement the same scheme, so it must be round-off). With
``--nature FILE`` (a ``daflow forecast`` state file) it draws the kinetic-energy spectrum of the
run's last ``--frames`` frames as a PNG (``--spectrum``), with the k^-5/3 line of SQG turbulence.

    .venv/bin/python benchmarks/sqg.py [--quick] [--threads N] [--json out.json]
        [--nature truth.nc --spectrum sqg_ke_spectrum.png]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from typing import Any

import numpy as np
import torch

from daflow.models.sqg import SQG
from daflow.threads import SMALL_WORK, default_threads


class NumpySQG:
    """One member, numpy.fft, sqgturb's scheme written out plainly (3/2-padded Jacobian with
    sqgturb's factor 2.25, RK4, hyperdiffusion integrating factor, relaxation to the jet, spectrum
    kept between the steps of one ``advance``); state theta (2, N, N) in K."""

    def __init__(self, N=64, L=20e6, H=10e3, f=1e-4, nsq=1e-4, U=30.0, tdiab=864000.0, diff_order=8,
                 diff_efold=86400.0, theta0=300.0, g=9.8, dt=1200.0, dtype=np.float32):
        self.N, self.Np, self.dt, self.tdiab = N, 3 * N // 2, dt, tdiab
        self.real, self.cplx = dtype, (np.complex64 if dtype == np.float32 else np.complex128)
        scale = f * theta0 / g
        k = 2 * np.pi / L * np.fft.rfftfreq(N, 1.0 / N)[None, :]
        l = 2 * np.pi / L * np.fft.fftfreq(N, 1.0 / N)[:, None]  # noqa: E741
        kappa = np.sqrt(k**2 + l**2)
        mu = np.maximum(kappa * np.sqrt(nsq) * H / f, 1e-30)
        self.coth = np.where(kappa > 0, H / mu / np.tanh(mu) / scale, 0.0).astype(dtype)
        self.csch = np.where(kappa > 0, H / mu / np.sinh(mu) / scale, 0.0).astype(dtype)
        kp = 2 * np.pi / L * np.fft.rfftfreq(self.Np, 1.0 / self.Np)[None, :]
        lp = 2 * np.pi / L * np.fft.fftfreq(self.Np, 1.0 / self.Np)[:, None]
        self.ik = (1j * kp * np.ones_like(lp)).astype(self.cplx)
        self.il = (1j * lp * np.ones_like(kp)).astype(self.cplx)
        self.hyperdiff = np.exp(-(dt / diff_efold) * (kappa / (np.pi * N / L)) ** diff_order).astype(dtype)
        y = np.arange(N) * L / N
        l0 = 2 * np.pi / L
        mu0 = l0 * np.sqrt(nsq) * H / f
        jet = -scale * (mu0 * 0.5 * U / (l0 * H)) / np.tanh(0.5 * mu0) * np.cos(l0 * y)
        self.theta_eq = np.fft.rfft2(np.broadcast_to(jet[None, :, None], (2, N, N)).astype(dtype), norm="forward")

    def pad(self, spec):
        n = self.N // 2
        out = np.zeros((2, self.Np, self.Np // 2 + 1), self.cplx)
        out[:, :n, :n], out[:, -n:, :n] = spec[:, :n, :n], spec[:, -n:, :n]
        out[:, :n, n], out[:, -n:, n] = np.conj(spec[:, :n, n]), np.conj(spec[:, -n:, n])
        return out

    def tendency(self, theta):
        psi = np.empty_like(theta)
        psi[0] = self.csch * theta[1] - self.coth * theta[0]
        psi[1] = self.coth * theta[1] - self.csch * theta[0]
        psi_pad, theta_pad, shape = self.pad(psi), self.pad(theta), (self.Np, self.Np)
        u = -np.fft.irfft2(self.il * psi_pad, s=shape, norm="forward")
        v = np.fft.irfft2(self.ik * psi_pad, s=shape, norm="forward")
        theta_x = np.fft.irfft2(self.ik * theta_pad, s=shape, norm="forward")
        theta_y = np.fft.irfft2(self.il * theta_pad, s=shape, norm="forward")
        advection = np.fft.rfft2(u * theta_x + v * theta_y, norm="forward")
        n, jac = self.N // 2, np.zeros_like(theta)
        jac[:, :n, :n], jac[:, -n:, :n] = advection[:, :n, :n], advection[:, -n:, :n]
        return (self.theta_eq - theta) / self.tdiab - 2.25 * jac

    def advance(self, x, steps):
        theta, dt = np.fft.rfft2(x, norm="forward"), self.dt
        for _ in range(steps):
            k1 = self.tendency(theta)
            k2 = self.tendency(theta + 0.5 * dt * k1)
            k3 = self.tendency(theta + 0.5 * dt * k2)
            k4 = self.tendency(theta + dt * k3)
            theta = self.hyperdiff * (theta + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4))
        return np.fft.irfft2(theta, s=(self.N, self.N), norm="forward").astype(self.real)


def seconds_per_step(runs: dict, repeats: int, steps: int, clock=time.perf_counter) -> dict:
    """Best seconds per step of each ``runs[name] = (advance, x)`` over ``repeats`` rounds, one call
    ``advance(x, steps)`` per run and round, the runs interleaved within each round: on a shared
    machine the load drifts, and interleaving exposes every run to the same moments (the ratio of
    two runs is what the benchmark reports). ``clock``: wall time, or ``time.thread_time`` (the
    CPU time of the calling thread, which does all the work when torch has one thread): a shared
    machine takes the core away from the process for whole time slices, more often during the
    longer batched calls than during the short single-member ones, and CPU time leaves that out."""
    states = {name: advance(x, 1) for name, (advance, x) in runs.items()}
    best = dict.fromkeys(runs, math.inf)
    for _ in range(repeats):
        for name, (advance, _x) in runs.items():
            start = clock()
            advance(states[name], steps)
            best[name] = min(best[name], (clock() - start) / steps)
    return best


def transforms_only(model: SQG, members: int):
    """An ``advance(x, steps)`` that runs only the FFTs of ``members``' steps (``members`` a multiple of
    ``model.CHUNK``): per chunk and RK4 stage the four batched transforms of ``SQG._tendency_into`` on arrays
    of their shapes. Its time is a floor for the model's step, which adds the spectral products, the copies
    and the RK4 updates."""
    work, half, P = model._buffers(members), model.N // 2, model.n_pad
    chunk = min(members, model.CHUNK)
    product = torch.zeros(chunk, 2, P, P, dtype=model.dtype)
    columns = torch.zeros(chunk, 2, half + 1, P, dtype=model.cdtype)

    def advance(x, steps):
        for _ in range(steps * 4 * (members // chunk)):
            torch.fft.ifft(work["fields"], dim=-1, norm="forward")
            torch.fft.irfft(work["padded"], n=P, dim=-1, norm="forward")
            torch.fft.rfft(product, dim=-1, norm="forward")
            torch.fft.fft(columns, dim=-1, norm="forward")
        return x
    return advance


def agreement() -> float:
    """Max |torch - numpy| (K) after 72 steps (1 day) in float64 from a state spun up 10 days."""
    model = SQG(dtype=torch.float64)
    x = model.advance(model.random_state(1, torch.Generator().manual_seed(3)), 1200.0, 720)
    reference, y = NumpySQG(dtype=np.float64), x[0].numpy().copy()
    x, y = model.advance(x, 1200.0, 72), reference.advance(y, 72)
    return float(np.abs(x[0].numpy() - y).max())


def kinetic_energy_spectrum(path: str, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """(wavenumber index, KE per unit wavenumber) of the last ``frames`` frames, both lids averaged."""
    import xarray as xr

    ds = xr.open_dataset(path)
    theta = ds["theta"]
    theta = theta.isel(member=0) if "member" in theta.dims else theta
    model = SQG(**json.loads(ds.attrs["daflow_model_params"]), dtype=torch.float64)
    spec = torch.fft.rfft2(torch.from_numpy(theta.values[-frames:].astype(np.float64)), norm="forward")
    psi = model.streamfunction(spec)                                      # (time, lid, N, N/2+1)
    weights = torch.ones(model.N // 2 + 1, dtype=torch.float64)
    weights[1:-1] = 2.0
    energy = 0.5 * model.kappa2 * psi.abs() ** 2 * weights              # KE of each mode
    shell = torch.round(model.kappa2.sqrt() * model.L / (2 * math.pi)).long()
    ke = torch.zeros(int(shell.max()) + 1, dtype=torch.float64)
    ke.index_add_(0, shell.flatten(), energy.mean(dim=(0, 1)).flatten())
    waves = np.arange(1, model.N // 2)
    return waves, ke.numpy()[1:model.N // 2]


def plot_spectrum(waves, ke, path: str) -> float:
    """Write the log-log spectrum with a k^-5/3 guide; return the fitted slope over k = 5..20."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fit = (waves >= 5) & (waves <= 20)
    slope = float(np.polyfit(np.log(waves[fit]), np.log(ke[fit]), 1)[0])
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.loglog(waves, ke, label="daflow SQG nature run")
    ax.loglog(waves[fit], ke[fit][0] * (waves[fit] / waves[fit][0]) ** (-5 / 3), "k--", label="k$^{-5/3}$")
    ax.set_xlabel("total wavenumber (cycles per domain)")
    ax.set_ylabel("kinetic energy (m$^2$ s$^{-2}$ per wavenumber)")
    ax.set_title(f"SQG kinetic-energy spectrum (fitted slope {slope:.2f})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return slope


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (about a minute)")
    parser.add_argument("--threads", type=int, help="torch threads (default: daflow's policy, daflow/threads.py)")
    parser.add_argument("--json", metavar="FILE", help="write the figures as one JSON object")
    parser.add_argument("--nature", metavar="FILE", help="nature-run state file for the KE spectrum")
    parser.add_argument("--frames", type=int, default=200, help="last frames of --nature to average")
    parser.add_argument("--spectrum", metavar="PNG", default="sqg_ke_spectrum.png", help="spectrum plot path")
    args = parser.parse_args()
    torch.set_num_threads(args.threads or (1 if 20 * 2 * 64 * 64 < SMALL_WORK else default_threads()))
    figures: dict[str, Any] = {"threads": torch.get_num_threads(), "load_average_1min": os.getloadavg()[0]}
    # one thread: its CPU time (the time it had a core); more: wall time, the parallel speed-up included
    clock = time.thread_time if torch.get_num_threads() == 1 else time.perf_counter
    figures["clock"] = clock.__name__
    repeats, steps = (5, 5) if args.quick else (10, 20)
    figures["max_abs_diff_K_torch_vs_numpy_1day_float64"] = agreement()
    print(f"threads {figures['threads']}, clock {figures['clock']}, load average {figures['load_average_1min']:.1f}")
    print(f"torch vs numpy after 1 day (float64): max |diff| = {figures['max_abs_diff_K_torch_vs_numpy_1day_float64']:.2e} K")
    for n in (64, 128):
        reference = NumpySQG(N=n, dtype=np.float32)
        model = SQG(N=n)
        x = model.random_state(100, torch.Generator().manual_seed(0))
        runs = {0: (reference.advance, x[0].numpy())}
        runs.update({m: (lambda s, k, model=model: model.advance(s, 1200.0, k), x[:m].clone()) for m in (1, 20, 100)})
        runs["fft"] = (transforms_only(model, 20), x[:20].clone())
        best = seconds_per_step(runs, repeats, steps, clock)
        numpy_step = best[0]
        figures[f"numpy_N{n}_s_per_step"] = numpy_step
        print(f"N={n:3d} numpy 1 member: {numpy_step * 1e3:8.2f} ms/step")
        for members in (1, 20, 100):
            torch_step = best[members]
            ratio = numpy_step / (torch_step / members)
            figures[f"torch_N{n}_M{members}_s_per_step"] = torch_step
            figures[f"speedup_per_member_step_N{n}_M{members}"] = ratio
            print(f"N={n:3d} torch {members:3d} members: {torch_step * 1e3:8.2f} ms/step, "
                  f"{torch_step / members * 1e3:6.3f} ms/member-step, {ratio:5.1f}x numpy per member-step")
        cap = numpy_step / (best["fft"] / 20)
        figures[f"fft_only_N{n}_M20_s_per_step"], figures[f"speedup_cap_fft_only_N{n}_M20"] = best["fft"], cap
        print(f"N={n:3d} its FFTs alone, 20 members: {best['fft'] / 20 * 1e3:6.3f} ms/member-step: "
              f"at most {cap:4.1f}x numpy per member-step if nothing else cost anything")
    figures["speedup_per_member_step"] = figures["speedup_per_member_step_N64_M20"]
    figures["forecast_20_members_36_steps_s"] = 36 * figures["torch_N64_M20_s_per_step"]
    print(f"20-member 12-hour forecast (36 steps, N=64), model time only: {figures['forecast_20_members_36_steps_s']:.2f} s")
    if args.nature:
        waves, ke = kinetic_energy_spectrum(args.nature, args.frames)
        figures["ke_spectrum_slope_k5_20"] = plot_spectrum(waves, ke, args.spectrum)
        print(f"KE spectrum slope over k = 5..20: {figures['ke_spectrum_slope_k5_20']:.2f} (k^-5/3 = -1.67); plot {args.spectrum}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(figures, out, indent=1)


if __name__ == "__main__":
    main()
