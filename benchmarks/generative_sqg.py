"""Generative DA (storm) on the SQG nature run with 6.25% observed, beside EnSF and the LETKF.

A nature run of the two-lid SQG model (:mod:`daflow.models.sqg`, N x N x 2 levels) is written with
``daflow forecast`` every ``--every`` steps. The first ``--train`` frames train the denoiser; the
next ``--cycles`` frames are the test. Every test time, 6.25% of the grid points (a fixed random
mask, ``daflow ingest --observe --pattern fixed``) are observed with error 1 K. Every method starts
from the same ensemble: M pairs of consecutive frames drawn from the training period (climatology,
never the test truth), placed at the test's initial time, and cycles on its own analyses:

- storm: ``daflow.assimilate(method="storm", init=...)``, SDA guidance (history = its own analyses);
- EnSF: ``daflow.da.ensf`` with its defaults (biharmonic inpainting of the unobserved points),
  forecasting every member with the SQG model between observation times;
- LETKF: ``daflow.da.letkf`` (localisation radius ``--loc-radius`` grid points, RTPS ``--rtps``).

Scores over the test cycles: RMSE of the analysis mean against the truth (time mean of the spatial
RMSE, all points), mean ensemble spread, CRPS, and wall time.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from daflow import api
from daflow.io.contract import write_dataset
from daflow.nn.data import read_series
from daflow.nn.training import train
from daflow.score.metrics import crps_ensemble

DAFLOW = str(Path(sys.executable).with_name("daflow"))


def daflow(*args) -> None:
    subprocess.run([DAFLOW, *map(str, args), "--quiet"], check=True)


def initial_ensemble(truth: xr.Dataset, train_frames: int, first_test: int, members: int, history: int,
                     rng: np.random.Generator) -> xr.Dataset:
    """``members`` runs of ``history`` consecutive training frames, timed to end at frame first_test - 1."""
    starts = rng.choice(train_frames - history, size=members, replace=False)
    times = truth["time"].values[first_test - history:first_test]
    frames = [truth.isel(time=slice(s, s + history)).assign_coords(time=times) for s in starts]
    return xr.concat(frames, dim="member").transpose("member", "time", ...).assign_coords(member=np.arange(members))


def scores(analysis: xr.Dataset, truth: xr.Dataset, name: str) -> dict:
    a = analysis[name].transpose("member", "time", ...).values
    t = truth[name].sel(time=analysis["time"].values).values
    members = a.shape[0]
    rmse = np.sqrt(((a.mean(0) - t) ** 2).reshape(len(t), -1).mean(-1)).mean()
    spread = np.sqrt(a.var(0, ddof=1).reshape(len(t), -1).mean(-1)).mean() if members > 1 else 0.0
    crps = crps_ensemble(a, t).mean()
    return {"rmse": float(rmse), "spread": float(spread), "crps": float(crps)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Reduced configuration.")
    parser.add_argument("--json", help="Write the figures as one JSON object to this file.")
    parser.add_argument("--n", type=int, default=64, help="Grid points per side [64].")
    parser.add_argument("--every", type=int, default=9, help="Model steps (1200 s) between frames [9 = 3 h].")
    parser.add_argument("--train", type=int, help="Training frames [quick 200, full 600].")
    parser.add_argument("--cycles", type=int, help="Test cycles [quick 10, full 40].")
    parser.add_argument("--members", type=int, default=16, help="Ensemble size of every method [16].")
    parser.add_argument("--epochs", type=int, help="storm training epochs [quick 10, full 60].")
    parser.add_argument("--history", type=int, default=2)
    parser.add_argument("--guidance", choices=["sda", "mmps", "dps"], default="sda",
                        help="storm guidance (the figures in benchmarks/README.md are SDA's) [sda].")
    parser.add_argument("--gamma", type=float, default=1.0, help="storm SDA gamma (dimensionless) [1].")
    parser.add_argument("--sample-steps", type=int, default=10, help="storm sampler steps [10].")
    parser.add_argument("--loc-radius", type=float, default=4.0, help="LETKF localisation radius, grid points [4].")
    parser.add_argument("--rtps", type=float, default=0.5, help="LETKF relaxation to prior spread [0.5].")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    n_train = args.train or (200 if args.quick else 600)
    cycles = args.cycles or (10 if args.quick else 40)
    epochs = args.epochs or (10 if args.quick else 60)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    figures, seconds = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        w = Path(tmp)
        frames = n_train + cycles
        daflow("forecast", "--model", "sqg", "--param", f"N={args.n}", "--init", "random", "--spinup", 3000,
               "--steps", args.every * (frames - 1), "--output-every", args.every, "--seed", args.seed, "-o", w / "truth.nc")
        truth = xr.open_dataset(w / "truth.nc").load()
        name = [v for v in truth.data_vars if "time" in truth[v].dims][0]
        write_dataset(truth.isel(time=slice(n_train, frames)), w / "test.nc", "state")
        daflow("ingest", w / "test.nc", "--observe", "--fraction", 0.0625, "--pattern", "fixed", "--error-std", 1.0,
               "--seed", args.seed + 1, "-o", w / "obs.nc")
        write_dataset(initial_ensemble(truth, n_train, n_train, args.members, args.history, rng), w / "init.nc", "state")
        print(f"SQG {args.n} x {args.n} x 2, frames every {args.every * 1200 / 3600:g} h, train {n_train} frames, "
              f"test {cycles - 1} cycles, 6.25% observed (error 1 K), {args.members} members")

        config = w / "arch.toml"
        config.write_text("[architecture]\nwidth = 64\ndepth = 3\nheads = 4\npatch = 8\n[training]\nbatch_size = 32\n")
        start = time.perf_counter()
        train(read_series(truth.isel(time=slice(0, n_train)), name, "truth"), args.history, epochs, str(w / "model"), str(config))
        train_seconds = time.perf_counter() - start
        start = time.perf_counter()
        storm = api.assimilate(method="storm", checkpoint=str(w / "model"), obs=w / "obs.nc", init=w / "init.nc",
                                  members=args.members, seed=args.seed, guidance=args.guidance, gamma=args.gamma,
                               sample_steps=args.sample_steps)
        seconds["storm"] = time.perf_counter() - start
        figures["storm"] = scores(storm, truth, name)
        for method, options in (("ensf", {}), ("letkf", {"loc_radius": args.loc_radius, "rtps": args.rtps})):
            start = time.perf_counter()
            analysis = api.assimilate(method=method, obs=w / "obs.nc", init=w / "init.nc", dtype="float32",
                                         seed=args.seed, **options)
            seconds[method] = time.perf_counter() - start
            figures[method] = scores(analysis, truth, name)
    clim = float(truth[name].isel(time=slice(0, n_train)).std("time").mean())
    print(f"storm trained {epochs} epochs in {train_seconds:.0f} s; climatological std {clim:.2f} K")
    print(f"{'method':<8} {'RMSE K':>8} {'spread K':>9} {'CRPS K':>8} {'seconds':>8}")
    for method, f in figures.items():
        print(f"{method:<8} {f['rmse']:8.3f} {f['spread']:9.3f} {f['crps']:8.3f} {seconds[method]:8.1f}")
    for other in ("ensf", "letkf"):
        print(f"storm / {other} RMSE: {figures['storm']['rmse'] / figures[other]['rmse']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rmse": {m: f["rmse"] for m, f in figures.items()},
                                               "spread": {m: f["spread"] for m, f in figures.items()},
                                               "crps": {m: f["crps"] for m, f in figures.items()},
                                               "seconds": seconds, "train_seconds": train_seconds}, indent=1))


if __name__ == "__main__":
    main()
