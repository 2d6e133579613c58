"""Generative DA (storm) on real ERA5 2 m temperature beside OI, biharmonic inpainting and persistence.

Data: ERA5 t2m over the UK, March 2019, hourly, 33 x 49 (0.25 deg), read with ``daflow.io.ingest``.
The denoiser is trained on 2019-03-01..24 (the last 10% of those frames validate); the test is
2019-03-25..31 (168 hours). Every test hour, 5% of the grid points (one fixed random mask) are
observed with error 0.5 K (synthetic: ERA5 value + N(0, 0.5^2)). Every method reconstructs the full
field hour by hour, cycling on its own previous analyses (never the true field):

- storm: posterior ensemble p(x_t | its own K previous analyses, y_t), SDA guidance
  (:mod:`daflow.nn.diffusion`); each member keeps its own history; trained with smoothly perturbed
  histories (``--history-noise``, :func:`daflow.nn.training.history_perturbation`), since the
  histories it cycles on are its own analyses, and sampled with each member's history perturbed
  the same way (``--history-inflation``, additive inflation); ``--predict increment`` trains
  the network on x_t - x_{t-1} instead of x_t (:mod:`daflow.nn.normalisation`);
- oi: :class:`daflow.da.oi.OptimalInterpolation` with the previous OI analysis as background and
  B = the covariance of the 1-hour changes x_t - x_{t-1} over the training period, times
  ``--oi-scale`` (the background error of a persisted analysis is its own error plus that change);
- biharmonic: ``skimage.restoration.inpaint_biharmonic`` of the hour's observations
  (:func:`daflow.da.inpaint.inpaint`; needs no background);
- persistence: the previous hour's OI analysis, unchanged (what the new observations add).

The cycle starts from the biharmonic fill of the observations of the K hours before the test
(same mask, same error), for every method. Scores over the test hours, on the unobserved points:
RMSE of the (ensemble mean) analysis (time mean of the spatial RMSE), CRPS (the mean absolute
error for a single analysis), spread/skill = time-mean ensemble spread / time-mean RMSE.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from daflow.da.inpaint import inpaint
from daflow.core.grid import StateGrid
from daflow.core.observations import ObsBatch
from daflow.da.oi import OptimalInterpolation, climatological_covariance
from daflow.io.ingest import ingest
from daflow.nn.data import read_series
from daflow.nn.generative import GenerativeModel
from daflow.nn.normalisation import PREDICT
from daflow.nn.training import DEFAULT_PREDICT, train
from daflow.obs.operators import get_operator
from daflow.score.metrics import crps_ensemble
from daflow.settings import sample_data_dir

GRIB = "grib/era5-2mt-2019-03-uk.grib"
TEST_START = np.datetime64("2019-03-25T00:00")
FRACTION, ERROR_STD = 0.05, 0.5


def architecture_toml(width: int, depth: int, patch: int, predict: str, batch: int, lr: float, history_noise: float) -> str:
    return (f"[architecture]\nwidth = {width}\ndepth = {depth}\nheads = 4\npatch = {patch}\n"
            f"[normalisation]\npredict = \"{predict}\"\n[training]\nbatch_size = {batch}\nlearning_rate = {lr}\n"
            f"history_noise = {history_noise}\n")


def observations(truth: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(T, p) synthetic observations of truth (T, ny, nx) at the flat indices ``mask``."""
    flat = truth.reshape(truth.shape[0], -1)[:, mask]
    return flat + ERROR_STD * rng.standard_normal(flat.shape)


def obs_batch(values: np.ndarray, mask: np.ndarray) -> ObsBatch:
    """One hour's observations (p,) at flat state indices ``mask`` (p,), identity operator."""
    return ObsBatch(time=0.0, rows=np.arange(len(mask)), value=torch.tensor(values),
                    error_std=torch.full((len(mask),), ERROR_STD, dtype=torch.float64),
                    index=torch.from_numpy(mask), column=mask, operators=[(get_operator("identity"), None)])


def biharmonic(values: np.ndarray, mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(ny, nx) biharmonic extension of the observations at ``mask``."""
    field = np.zeros(shape[0] * shape[1])
    field[mask] = values
    observed = np.zeros(field.shape, dtype=bool)
    observed[mask] = True
    return inpaint(field.reshape(1, *shape), observed.reshape(shape), "biharmonic")[0]


def scores(analyses: np.ndarray, truth: np.ndarray, unobserved: np.ndarray) -> dict:
    """analyses (T, M, n), truth (T, n): RMSE, CRPS, spread on the unobserved points."""
    a, t = analyses[:, :, unobserved], truth[:, unobserved]
    rmse = np.sqrt(((a.mean(1) - t) ** 2).mean(-1)).mean()
    spread = np.sqrt(a.var(1, ddof=1).mean(-1)).mean() if a.shape[1] > 1 else 0.0
    crps = np.mean([crps_ensemble(a[k], t[k]).mean() for k in range(len(t))])
    return {"rmse": float(rmse), "crps": float(crps), "spread": float(spread), "spread_skill": float(spread / rmse)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Reduced configuration (about 1-3 minutes).")
    parser.add_argument("--json", help="Write the figures as one JSON object to this file.")
    parser.add_argument("--png", default="era5_t2m.png", help="Figure of one test hour [era5_t2m.png].")
    parser.add_argument("--epochs", type=int, help="Training epochs [quick 10, full 200].")
    parser.add_argument("--history", type=int, default=2, help="K history frames [2].")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--patch", type=int, default=4)
    parser.add_argument("--predict", choices=PREDICT, default=DEFAULT_PREDICT,
                        help=f"The network's target: the state or its increment from the last history frame [{DEFAULT_PREDICT}].")
    parser.add_argument("--history-noise", type=float, default=0.3,
                        help="RMS of the smooth perturbation of the history frames in training, in units of the "
                             "t2m standard deviation ([training] history_noise) [0.3].")
    parser.add_argument("--members", type=int, help="Posterior samples [quick 8, full 16].")
    parser.add_argument("--sample-steps", type=int, default=16, help="Sampler steps [16].")
    parser.add_argument("--guidance", choices=["sda", "mmps", "dps"], default="sda",
                        help="storm guidance (the figures in benchmarks/README.md are SDA's) [sda].")
    parser.add_argument("--gamma", type=float, default=1e-3, help="SDA guidance gamma (dimensionless) [1e-3].")
    parser.add_argument("--churn", type=float, default=0.0, help="EDM stochastic churn of the sampler [0].")
    parser.add_argument("--hours", type=int, help="Test hours scored [quick 24, full 168].")
    parser.add_argument("--history-inflation", type=float, default=0.8,
                        help="storm: RMS of the smooth field added to each member's history before every sampling, "
                             "in units of the t2m standard deviation (additive inflation) [0.8].")
    parser.add_argument("--true-history", action="store_true",
                        help="storm conditions every hour on the true K previous hours instead of its own analyses "
                             "(not cycled: the calibration of one analysis step).")
    parser.add_argument("--oi-scale", type=float, default=1.0, help="Factor on the OI covariance [1].")
    parser.add_argument("--model-dir", help="Keep the checkpoint here (default: a temporary directory); "
                        "an existing one is resumed up to --epochs (training time then counts only the new epochs).")
    parser.add_argument("--threads", type=int, default=2, help="torch threads [2].")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    epochs = args.epochs or (10 if args.quick else 200)
    members = args.members or (8 if args.quick else 16)
    steps = args.sample_steps
    hours = args.hours or (24 if args.quick else 168)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)

    ds = ingest([sample_data_dir() / GRIB]).load()
    times = ds["time"].values
    split = int(np.searchsorted(times, TEST_START))
    field = ds["t2m"].values.astype(np.float64)                      # (time, ny, nx)
    shape = field.shape[1:]
    n = shape[0] * shape[1]
    rng = np.random.default_rng(args.seed)
    mask = np.sort(rng.choice(n, size=round(FRACTION * n), replace=False))
    unobserved = np.setdiff1d(np.arange(n), mask)
    k = args.history
    first = split - k                                                # spin-up hours before the test
    truth = field[first:split + hours].reshape(-1, n)                # (k + hours, n)
    obs = observations(field[first:split + hours], mask, rng)        # (k + hours, p)
    print(f"ERA5 t2m {shape[0]} x {shape[1]}, train {split} h, test {hours} h, {len(mask)} observed points "
          f"({FRACTION:.0%}), error {ERROR_STD} K; storm: K={k}, predict {args.predict}, "
          f"history noise {args.history_noise}, history inflation {args.history_inflation}, {epochs} epochs, "
          f"{members} members, {steps} steps, {args.guidance} guidance, gamma={args.gamma}, churn={args.churn}")

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir or f"{tmp}/model"
        config = Path(tmp) / "arch.toml"
        config.write_text(architecture_toml(args.width, args.depth, args.patch, args.predict, 32, 1e-3, args.history_noise))
        start = time.perf_counter()
        train(read_series(ds.isel(time=slice(0, split)), "t2m", GRIB), k, epochs, model_dir, str(config),
              resume=(Path(model_dir) / "config.json").exists())
        train_seconds = time.perf_counter() - start
        model = GenerativeModel(model_dir, sample_steps=steps, churn=args.churn, history_inflation=args.history_inflation)
        print(f"trained in {train_seconds:.0f} s")

        init = np.stack([biharmonic(obs[j], mask, shape).ravel() for j in range(k)])   # (k, n)
        results, seconds = {}, {}
        generator = torch.Generator().manual_seed(args.seed)
        start = time.perf_counter()
        history = torch.from_numpy(init).float().reshape(1, k, 1, *shape).repeat(members, 1, 1, 1, 1)
        storm = []
        for t in range(k, k + hours):
            if args.true_history:  # the true K previous hours instead of its own analyses
                history = torch.from_numpy(truth[t - k:t]).float().reshape(1, k, 1, *shape).repeat(members, 1, 1, 1, 1)
            analysis = model.next_frames(history, generator, [(0, obs_batch(obs[t], mask))], guidance=args.guidance,
                                         gamma=args.gamma)
            storm.append(analysis[:, 0, 0].reshape(members, n).double().numpy())
            history = torch.cat([history[:, 1:], analysis[:, :1]], dim=1)
        results["storm"], seconds["storm"] = np.stack(storm), time.perf_counter() - start

    start = time.perf_counter()
    increments = np.diff(field[:split].reshape(split, n), axis=0)
    grid = StateGrid("t2m", ("lat", "lon"), shape, {"lat": ds["lat"].values, "lon": ds["lon"].values})
    oi = OptimalInterpolation(grid, covariance=args.oi_scale * climatological_covariance(torch.from_numpy(increments)))
    x = torch.from_numpy(init[-1:])
    oi_analyses, persistence = [], []
    for t in range(k, k + hours):
        persistence.append(x.numpy())
        x = oi.transform(x, obs_batch(obs[t], mask))
        oi_analyses.append(x.numpy())
    results["oi"], seconds["oi"] = np.stack(oi_analyses), time.perf_counter() - start
    results["persistence"], seconds["persistence"] = np.stack(persistence), seconds["oi"]
    start = time.perf_counter()
    results["biharmonic"] = np.stack([biharmonic(obs[t], mask, shape).ravel()[None] for t in range(k, k + hours)])
    seconds["biharmonic"] = time.perf_counter() - start

    figures = {name: scores(a, truth[k:], unobserved) for name, a in results.items()}
    best = min(("oi", "biharmonic", "persistence"), key=lambda m: figures[m]["rmse"])
    print(f"{'method':<12} {'RMSE unobs K':>12} {'CRPS K':>8} {'spread/skill':>12} {'seconds':>8}")
    for name, f in figures.items():
        print(f"{name:<12} {f['rmse']:12.3f} {f['crps']:8.3f} {f['spread_skill']:12.2f} {seconds[name]:8.1f}")
    ratio = figures["storm"]["rmse"] / figures[best]["rmse"]
    print(f"storm / best baseline ({best}) RMSE ratio: {ratio:.3f} (bar <= 0.8); "
          f"spread/skill {figures['storm']['spread_skill']:.2f} (bar 0.7-1.3); training {train_seconds:.0f} s (bar < 1800)")
    plot(args.png, truth[k:], results, mask, shape, hour=hours // 2, when=times[split + hours // 2])
    if args.json:
        Path(args.json).write_text(json.dumps({
            "rmse_unobserved": {m: figures[m]["rmse"] for m in ("storm", "oi", "biharmonic", "persistence")},
            "crps": {m: figures[m]["crps"] for m in ("storm", "oi", "biharmonic", "persistence")},
            "spread_skill": {"storm": figures["storm"]["spread_skill"]},
            "train_seconds": train_seconds}, indent=1))


def plot(path: str, truth: np.ndarray, results: dict, mask: np.ndarray, shape, hour: int, when) -> None:
    """Truth, observations and each method's (mean) analysis at one test hour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    observed = np.full(truth.shape[1], np.nan)
    observed[mask] = truth[hour, mask]
    panels = {"truth (ERA5)": truth[hour], "observed points": observed,
              **{f"{m} (mean)" if a.shape[1] > 1 else m: a[hour].mean(0) for m, a in results.items()}}
    lo, hi = np.percentile(truth[hour], [1, 99])
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.5), constrained_layout=True)
    for ax, (title, values) in zip(axes.flat, panels.items()):
        image = ax.imshow(values.reshape(shape), origin="lower", vmin=lo, vmax=hi, cmap="RdYlBu_r")
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(image, ax=axes, label="t2m (K)", shrink=0.8)
    fig.suptitle(f"ERA5 t2m, {str(when)[:16]}, 5% observed")
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
