"""Generative DA (storm) on real ERA5 2 m temperature beside OI, biharmonic inpainting and persistence.

Data: ERA5 t2m over the UK, March 2019, hourly, 33 x 49 (0.25 deg), read with ``daflow.io.ingest``.
Three periods that do not overlap:

- training, 2019-03-01..17 (408 hours): the denoiser (the last 10% of those frames give its
  validation loss) and OI's climatological covariance;
- validation, 2019-03-18..24 (168 hours): every setting chosen by looking at scores (training
  epochs, guidance, sampler steps, EDM churn, history inflation, SDA's gamma; OI's covariance scale) is the best of its
  candidates here, by the CRPS on the unobserved points (a proper score: it rewards accuracy and
  calibration together);
- test, 2019-03-25..31 (168 hours): each method is run once with the settings chosen on validation.

Every hour a fixed random set of the grid points (``--fractions``, e.g. 5% and 1%; one mask per
fraction, the same for validation and test) is observed with error 0.5 K (synthetic: ERA5 value +
N(0, 0.5^2)). Every method reconstructs the full field hour by hour, cycling on its own previous
analyses (never the true field):

- storm: posterior ensemble p(x_t | its own K previous analyses, y_t) drawn by
  :func:`daflow.nn.diffusion.posterior_sample` (MMPS guidance by default: Rozet et al. 2024); each
  member keeps its own history; trained with smoothly perturbed histories (``[training]
  history_noise``) and optionally sampled with each member's history perturbed the same way
  (``history_inflation``, additive inflation), where validation chose it;
- oi: :class:`daflow.da.oi.OptimalInterpolation` with the previous OI analysis as background and
  B = the covariance of the 1-hour changes x_t - x_{t-1} over the training period, times a scale
  chosen on validation (the background error of a persisted analysis is its own error plus that change);
- biharmonic: ``skimage.restoration.inpaint_biharmonic`` of the hour's observations
  (:func:`daflow.da.inpaint.inpaint`; needs no background);
- persistence: the previous hour's OI analysis, unchanged (what the new observations add).

Each period's cycle starts from the biharmonic fill of the observations of the K hours before it
(same mask, same error), for every method. Scores over the period's hours, on the unobserved
points: RMSE of the (ensemble mean) analysis (time mean of the spatial RMSE), CRPS (the mean
absolute error for a single analysis), bias (mean of analysis - truth), spread/skill = time-mean ensemble spread / time-mean RMSE,
and the chi-square of storm's rank histogram (Hamill 2001; M + 1 bins over every unobserved point
and hour; 0 for a perfectly flat histogram, about M for a calibrated ensemble of independent
cases, far more for spatially correlated errors).
"""
from __future__ import annotations

import argparse
import itertools
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from daflow.core.grid import StateGrid
from daflow.core.observations import ObsBatch
from daflow.da.inpaint import inpaint
from daflow.da.oi import OptimalInterpolation, climatological_covariance
from daflow.io.ingest import ingest
from daflow.nn.data import read_series
from daflow.nn.generative import GenerativeModel
from daflow.nn.training import train
from daflow.obs.operators import get_operator
from daflow.score.metrics import crps_ensemble, rank_histogram, truth_rank
from daflow.settings import sample_data_dir

GRIB = "grib/era5-2mt-2019-03-uk.grib"
VALIDATION_START, TEST_START = np.datetime64("2019-03-18T00:00"), np.datetime64("2019-03-25T00:00")
ERROR_STD = 0.5


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def architecture_toml(width: int, depth: int, patch: int, history_noise: float, centre: str, seed: int = 0) -> str:
    return (f"[architecture]\nwidth = {width}\ndepth = {depth}\nheads = 4\npatch = {patch}\n"
            f"[normalisation]\npredict = \"state\"\ncentre = \"{centre}\"\n[training]\nbatch_size = 32\nlearning_rate = 0.001\n"
            f"history_noise = {history_noise}\nseed = {seed}\n")


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
    """analyses (T, M, n), truth (T, n): RMSE, CRPS, bias (mean of ensemble mean - truth), spread,
    rank-histogram chi-square on the unobserved points."""
    a, t = analyses[:, :, unobserved], truth[:, unobserved]
    rmse = np.sqrt(((a.mean(1) - t) ** 2).mean(-1)).mean()
    crps = np.mean([crps_ensemble(a[k], t[k]).mean() for k in range(len(t))])
    out = {"rmse": float(rmse), "crps": float(crps), "bias": float((a.mean(1) - t).mean())}
    if a.shape[1] > 1:
        spread = np.sqrt(a.var(1, ddof=1).mean(-1)).mean()
        counts = rank_histogram(truth_rank(a.transpose(1, 0, 2), t, np.random.default_rng(0)), a.shape[1])
        expected = counts.sum() / len(counts)
        out.update(spread=float(spread), spread_skill=float(spread / rmse),
                   rank_chi2=float(((counts - expected) ** 2 / expected).sum()), rank_counts=counts.tolist())
    return out


class Case:
    """The truth and one fraction's observations over one period (K spin-up hours, then ``hours`` scored)."""

    def __init__(self, field: np.ndarray, obs: np.ndarray, mask: np.ndarray, start: int, hours: int, k: int):
        self.shape = field.shape[1:]
        n = self.shape[0] * self.shape[1]
        self.truth = field[start - k:start + hours].reshape(-1, n)
        self.obs, self.mask, self.k, self.hours = obs[start - k:start + hours], mask, k, hours
        self.unobserved = np.setdiff1d(np.arange(n), mask)
        self.init = np.stack([biharmonic(self.obs[j], mask, self.shape).ravel() for j in range(k)])  # (k, n)

    def score(self, analyses: np.ndarray) -> dict:
        return scores(analyses, self.truth[self.k:], self.unobserved)


def storm_candidates(guidances: str, epochs, steps: str, churn: str, inflation: str, gammas: str) -> list[dict]:
    """Every storm setting to score on validation: the product of the comma-separated candidate lists,
    SDA's gamma varying only for SDA (the other guidances do not use it: one candidate each)."""
    out = []
    for guidance, e, n, c, s in itertools.product(guidances.split(","), epochs, [int(v) for v in steps.split(",")],
                                                  floats(churn), floats(inflation)):
        for gamma in (floats(gammas) if guidance == "sda" else [None]):
            out.append({"guidance": guidance, "epochs": e, "steps": n, "churn": c, "history_inflation": s, "gamma": gamma})
    return out


def run_storm(model_dir: str, case: Case, members: int, seed: int, steps: int, churn: float, inflation: float,
              guidance: str, cg_iterations: int, gamma: float | None) -> np.ndarray:
    """(hours, members, n) storm analyses cycled on its own analyses."""
    model = GenerativeModel(model_dir, sample_steps=steps, churn=churn, history_inflation=inflation)
    generator = torch.Generator().manual_seed(seed)
    k, shape = case.k, case.shape
    history = torch.from_numpy(case.init).float().reshape(1, k, 1, *shape).repeat(members, 1, 1, 1, 1)
    out = []
    for t in range(k, k + case.hours):
        extra = {} if gamma is None else {"gamma": gamma}
        analysis = model.next_frames(history, generator, [(0, obs_batch(case.obs[t], case.mask))], guidance=guidance,
                                     cg_iterations=cg_iterations, **extra)
        out.append(analysis[:, 0, 0].reshape(members, -1).double().numpy())
        history = torch.cat([history[:, 1:], analysis[:, :1]], dim=1)
    return np.stack(out)


def run_baselines(case: Case, grid: StateGrid, covariance: torch.Tensor, scale: float) -> dict:
    """(hours, 1, n) analyses of OI (cycled), persistence of OI, biharmonic."""
    oi = OptimalInterpolation(grid, covariance=scale * covariance)
    x = torch.from_numpy(case.init[-1:])
    oi_analyses, persistence = [], []
    for t in range(case.k, case.k + case.hours):
        persistence.append(x.numpy())
        x = oi.transform(x, obs_batch(case.obs[t], case.mask))
        oi_analyses.append(x.numpy())
    bih = [biharmonic(case.obs[t], case.mask, case.shape).ravel()[None] for t in range(case.k, case.k + case.hours)]
    return {"oi": np.stack(oi_analyses), "persistence": np.stack(persistence), "biharmonic": np.stack(bih)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Reduced configuration (about a minute on a quiet machine): "
                        "2 epochs, 4 members, 8 steps, 4 validation and 4 test hours, one candidate per setting.")
    parser.add_argument("--json", help="Write the figures as one JSON object to this file.")
    parser.add_argument("--png", help="Figure of one test hour per fraction (FILE with the fraction appended).")
    parser.add_argument("--fractions", default="0.05,0.01", help="Observed fractions of the grid [0.05,0.01].")
    parser.add_argument("--epochs", default="100,200", help="Candidate training epochs; each checkpoint continues the "
                        "previous one [100,200].")
    parser.add_argument("--sample-steps", default="16,32", help="Candidate sampler steps [16,32].")
    parser.add_argument("--churn", default="0", help="Candidate EDM churn values [0].")
    parser.add_argument("--history-inflation", default="0,0.4,0.8", help="Candidate history inflations (RMS of the smooth "
                        "field added to each member's history, in units of the t2m std) [0,0.4,0.8].")
    parser.add_argument("--oi-scale", default="0.5,1,2", help="Candidate factors on OI's covariance [0.5,1,2].")
    parser.add_argument("--guidance", default="mmps", help="Candidate storm guidances, of mmps, sda, dps [mmps].")
    parser.add_argument("--gamma", default="1e-3", help="Candidate SDA gammas (the likelihood's variance R + gamma "
                        "sigma^2 Sigma; larger: weaker guidance at large sigma) [1e-3].")
    parser.add_argument("--cg-iterations", type=int, default=8, help="MMPS conjugate-gradient iterations [8] (not tuned).")
    parser.add_argument("--history", type=int, default=2, help="K history frames [2].")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--patch", type=int, default=4)
    parser.add_argument("--history-noise", type=float, default=0.3,
                        help="[training] history_noise, in units of the t2m std [0.3] (not tuned).")
    parser.add_argument("--centre", choices=("climate", "history"), default="climate",
                        help="[normalisation] centre of a NEW checkpoint: the training mean, or each window's last history "
                        "frame's domain mean (daflow.nn.normalisation) [climate]; existing checkpoints keep their own.")
    parser.add_argument("--train-seed", type=int, default=0, help="[training] seed of a NEW checkpoint: initial weights, "
                        "data order, noises [0]; --seed sets the masks, observations and sampling.")
    parser.add_argument("--validation-only", action="store_true", help="Stop after validation (no test run), e.g. "
                        "to compare checkpoints on validation before the test is run once with the chosen one.")
    parser.add_argument("--members", type=int, help="Posterior samples [quick 4, full 16].")
    parser.add_argument("--validation-hours", type=int, help="Validation hours scored [quick 4, full 168].")
    parser.add_argument("--hours", type=int, help="Test hours scored [quick 4, full 168].")
    parser.add_argument("--model-dir", help="Keep the checkpoints here (MODEL_DIR/eEPOCHS; default: a temporary "
                        "directory); existing ones are reused or resumed.")
    parser.add_argument("--threads", type=int, default=2, help="torch threads [2].")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        for name, value in (("epochs", "2"), ("sample_steps", "8"), ("history_inflation", "0"), ("oi_scale", "1")):
            if parser.get_default(name) == getattr(args, name):
                setattr(args, name, value)
    members = args.members or (4 if args.quick else 16)
    val_hours = args.validation_hours or (4 if args.quick else 168)
    hours = args.hours or (4 if args.quick else 168)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)

    ds = ingest([sample_data_dir() / GRIB]).load()
    times = ds["time"].values
    v0, t0 = (int(np.searchsorted(times, d)) for d in (VALIDATION_START, TEST_START))
    field = ds["t2m"].values.astype(np.float64)                      # (time, ny, nx)
    shape = field.shape[1:]
    n = shape[0] * shape[1]
    k = args.history
    grid = StateGrid("t2m", ("lat", "lon"), shape, {"lat": ds["lat"].values, "lon": ds["lon"].values})
    covariance = climatological_covariance(torch.from_numpy(np.diff(field[:v0].reshape(v0, n), axis=0)))
    report: dict = {"periods": {"training": [str(times[0])[:10], str(times[v0 - 1])[:10]],
                                "validation": [str(times[v0])[:10], str(times[v0 + val_hours - 1])[:13]],
                                "test": [str(times[t0])[:10], str(times[t0 + hours - 1])[:13]]},
                    "members": members, "guidance": args.guidance, "fractions": {},
                    "mean_t2m_K": {"training": float(field[:v0].mean()), "validation": float(field[v0:v0 + val_hours].mean()),
                                   "test": float(field[t0:t0 + hours].mean())}}

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.model_dir or f"{tmp}/model")
        root.mkdir(parents=True, exist_ok=True)
        config = root / "arch.toml"
        config.write_text(architecture_toml(args.width, args.depth, args.patch, args.history_noise, args.centre, args.train_seed))
        series = read_series(ds.isel(time=slice(0, v0)), "t2m", GRIB)
        checkpoints, previous, train_seconds = {}, None, {}
        for e in sorted(int(v) for v in args.epochs.split(",")):
            d = root / f"e{e}"
            if previous is not None and not (d / "config.json").exists():
                shutil.rmtree(d, ignore_errors=True)
                shutil.copytree(previous, d)
            start = time.perf_counter()
            train(series, k, e, str(d), str(config), resume=(d / "config.json").exists())
            train_seconds[e] = time.perf_counter() - start
            checkpoints[e], previous = str(d), d
        report["train_seconds"] = train_seconds
        print(f"ERA5 t2m {shape[0]} x {shape[1]}: train {v0} h, validation {val_hours} h, test {hours} h; error "
              f"{ERROR_STD} K; storm: K={k}, {args.guidance}, {members} members; training seconds {train_seconds}")
        print("  mean t2m (K) over the scored hours: " + ", ".join(f"{p} {v:.2f}" for p, v in report["mean_t2m_K"].items()))

        for fraction in floats(args.fractions):
            rng = np.random.default_rng([args.seed, round(fraction * 1e4)])
            mask = np.sort(rng.choice(n, size=round(fraction * n), replace=False))
            obs = field.reshape(len(field), n)[:, mask] + ERROR_STD * rng.standard_normal((len(field), len(mask)))
            val, test = Case(field, obs, mask, v0, val_hours, k), Case(field, obs, mask, t0, hours, k)
            print(f"\n{fraction:.0%} observed ({len(mask)} points)")
            # validation: every candidate of storm and of OI's scale, scored by CRPS on the unobserved points
            candidates = []
            for setting in storm_candidates(args.guidance, checkpoints, args.sample_steps, args.churn,
                                            args.history_inflation, args.gamma):
                start = time.perf_counter()
                s = val.score(run_storm(checkpoints[setting["epochs"]], val, members, args.seed, setting["steps"],
                                        setting["churn"], setting["history_inflation"], setting["guidance"],
                                        args.cg_iterations, setting["gamma"]))
                candidates.append({**setting, **s, "seconds": time.perf_counter() - start})
                print(f"  validation storm {setting}: RMSE {s['rmse']:.3f} CRPS {s['crps']:.3f} bias {s['bias']:+.3f} "
                      f"spread/skill {s['spread_skill']:.2f} ({candidates[-1]['seconds']:.0f} s)", flush=True)
            oi_candidates = {scale: val.score(run_baselines(val, grid, covariance, scale)["oi"]) for scale in floats(args.oi_scale)}
            best = min(candidates, key=lambda c: c["crps"])
            scale = min(oi_candidates, key=lambda c: oi_candidates[c]["crps"])
            chosen = {key: best[key] for key in ("guidance", "epochs", "steps", "churn", "history_inflation", "gamma")}
            val_baselines = {m: val.score(a) for m, a in run_baselines(val, grid, covariance, scale).items()}
            print(f"  chosen on validation: storm {chosen}, OI scale {scale}")
            report["fractions"][str(fraction)] = {
                "observed_points": len(mask), "validation": {"storm": candidates, "oi_scale": {str(c): v for c, v in oi_candidates.items()},
                                                             "baselines": val_baselines}, "chosen": {**chosen, "oi_scale": scale}}
            if args.validation_only:
                if args.json:
                    Path(args.json).write_text(json.dumps(report, indent=1))
                continue
            # test: once, with the chosen settings
            start = time.perf_counter()
            results = {"storm": run_storm(checkpoints[chosen["epochs"]], test, members, args.seed, chosen["steps"],
                                          chosen["churn"], chosen["history_inflation"], chosen["guidance"], args.cg_iterations,
                                          chosen["gamma"])}
            seconds = {"storm": time.perf_counter() - start}
            start = time.perf_counter()
            results.update(run_baselines(test, grid, covariance, scale))
            seconds.update({m: (time.perf_counter() - start) / 3 for m in ("oi", "persistence", "biharmonic")})
            figures = {m: {**test.score(a), "seconds": seconds[m]} for m, a in results.items()}
            best_baseline = min(("oi", "biharmonic", "persistence"), key=lambda m: figures[m]["rmse"])
            ratio = figures["storm"]["rmse"] / figures[best_baseline]["rmse"]
            print(f"  test ({hours} h)\n  {'method':<12} {'RMSE unobs K':>12} {'CRPS K':>8} {'bias K':>7} {'spread/skill':>12} "
                  f"{'rank chi2':>10} {'seconds':>8}")
            for m, f in figures.items():
                print(f"  {m:<12} {f['rmse']:12.3f} {f['crps']:8.3f} {f['bias']:+7.3f} {f.get('spread_skill', float('nan')):12.2f} "
                      f"{f.get('rank_chi2', float('nan')):10.0f} {f['seconds']:8.1f}")
            print(f"  storm / best baseline ({best_baseline}) RMSE: {ratio:.3f} (bar <= 0.75); spread/skill "
                  f"{figures['storm']['spread_skill']:.2f} (bar 0.8-1.2)", flush=True)
            report["fractions"][str(fraction)].update(test=figures, best_baseline=best_baseline, storm_over_best_baseline=ratio)
            if args.png:
                plot(f"{args.png.removesuffix('.png')}_{fraction:g}.png", test.truth[k:], results, mask, shape,
                     hours // 2, times[t0 + hours // 2], fraction)
            if args.json:
                Path(args.json).write_text(json.dumps(report, indent=1))


def plot(path: str, truth: np.ndarray, results: dict, mask: np.ndarray, shape, hour: int, when, fraction: float) -> None:
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
    fig.suptitle(f"ERA5 t2m, {str(when)[:16]}, {fraction:.0%} observed")
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
