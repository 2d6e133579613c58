"""EnSF with and without inpainting vs a tuned LETKF on SQG 64 x 64 with partial observations.

The setting of Liang et al. (2025): a nature run (random start spun up 100 days), 12-hourly cycles,
20 members started from climatology (states of the nature run long after the experiment window,
48 h apart, not the truth), observations on a fixed random mask of 25% or 6.25% of the columns (the
same points on both levels), linear y = x + N(0, 1 K^2) or arctan y = arctan(x) + N(0, 0.01^2).
Methods, all on the same truth, observations and initial ensemble: EnSF with default options and
``inpaint`` none / each inpainting method, and the LETKF over a small grid of localisation radius x
RTPS x a factor on its observation-error standard deviation (the usual remedy when an ensemble
linearises a saturating operator such as arctan; the best by unobserved-point RMSE reported). Scores are time means over the cycles after
``--spinup``: RMSE of the ensemble mean over observed and over unobserved points (K), spread (root of
the mean member variance), CRPS and spread/skill (time-mean spread over time-mean RMSE, all points).
``--png`` draws truth / observations / analysis means of one
cycle (the last) for the first scenario.

    .venv/bin/python benchmarks/ensf_sqg.py --quick --json ensf_sqg.json
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import json
import time

import numpy as np
import torch

from daflow.da.ensf import EnSF
from daflow.da.inpaint import METHODS as INPAINT_METHODS
from daflow.da.letkf import LETKF
from daflow.core.grid import StateGrid
from daflow.core.observations import ObsBatch
from daflow.errors import DataError
from daflow.models import get_model
from daflow.core.state import advance
from daflow.score.metrics import crps_ensemble

SPINUP_STEPS, EVERY, MEMBERS, CLIMATE_GAP = 7200, 36, 20, 4
ERROR = {"linear": 1.0, "arctan": 0.01}
OPERATOR = {"linear": lambda v: v, "arctan": torch.atan}


@functools.lru_cache(maxsize=8)
def nature_run(cycles, seed):
    """(model, truth (cycles, n) at the analysis times, climatological initial ensemble (N, n)).

    Cached: the scenarios of one seed share it (callers must not modify the tensors)."""
    g = torch.Generator().manual_seed(seed)
    model = get_model("sqg")
    x = advance(model, model.random_state(1, g), model.default_dt, SPINUP_STEPS)
    frames = []
    for _ in range(cycles + 1 + CLIMATE_GAP * MEMBERS):
        x = advance(model, x, model.default_dt, EVERY)
        frames.append(x.reshape(-1))
    frames = torch.stack(frames)
    truth, ensemble = frames[1:cycles + 1], frames[cycles + CLIMATE_GAP::CLIMATE_GAP][:MEMBERS]
    return model, truth, ensemble


def observations(truth, fraction, kind, seed):
    """(mask (columns,) bool, ObsBatch per cycle): fixed random columns, both levels."""
    rng = np.random.default_rng(seed)
    columns = truth.shape[1] // 2
    mask = np.zeros(columns, dtype=bool)
    mask[rng.choice(columns, int(round(fraction * columns)), replace=False)] = True
    where = np.flatnonzero(mask)
    index = torch.from_numpy(np.concatenate([where, columns + where]))
    batches = []
    for k in range(truth.shape[0]):
        clean = OPERATOR[kind](truth[k, index])
        value = clean + ERROR[kind] * torch.from_numpy(rng.normal(size=index.numel())).to(truth.dtype)
        batches.append(ObsBatch(time=float(k), rows=np.arange(index.numel()), value=value,
                                error_std=torch.full_like(value, ERROR[kind]), index=index,
                                column=np.concatenate([where, where]), operators=[(OPERATOR[kind], None)]))
    return mask, batches


def cycle(filt, model, start, truth, batches, mask, spinup):
    """Time-mean scores after ``spinup`` cycles and the last analysis mean; inf (and the cycle) when the filter blows up."""
    observed = np.concatenate([mask, mask])

    def diverged(k):  # k: the cycle (0-based) whose forecast or analysis blew up
        return {"rmse_observed": float("inf"), "rmse_unobserved": float("inf"), "spread": float("nan"),
                "crps": float("inf"), "spread_skill": float("nan"), "s_per_cycle": float("nan"),
                "blew_up_at_cycle": k}, None

    x, scores, t0 = start.clone(), [], time.perf_counter()
    for k, batch in enumerate(batches):
        try:
            x = advance(model, x.view(-1, *model.state_shape), model.default_dt, EVERY).view(x.shape[0], -1)
        except DataError:  # an analysis so wild that the model blows up
            return diverged(k)
        x = filt.transform(x, batch).detach()
        if not torch.isfinite(x).all():
            return diverged(k)
        if k >= spinup:
            ens, y = x.numpy(), truth[k].numpy()
            err2 = (ens.mean(0) - y) ** 2
            scores.append([np.sqrt(err2[observed].mean()), np.sqrt(err2[~observed].mean()),
                           np.sqrt(ens.var(0, ddof=1).mean()), crps_ensemble(ens, y).mean(), np.sqrt(err2.mean())])
    mean = np.mean(scores, axis=0, dtype=np.float64).tolist()
    return ({"rmse_observed": mean[0], "rmse_unobserved": mean[1], "spread": mean[2], "crps": mean[3],
             "spread_skill": mean[2] / mean[4],
             "s_per_cycle": (time.perf_counter() - t0) / len(batches)}, x.mean(0).numpy())


def scenario(fraction, kind, seed, cycles, spinup, methods, letkf_grid, ensf_options=None):
    model, truth, start = nature_run(cycles, seed)
    mask, batches = observations(truth, fraction, kind, seed + 1)
    grid = StateGrid.from_model(model)
    rows, means = [], {}
    for method in methods:
        scores, means[f"ensf+{method}"] = cycle(EnSF(grid, inpaint=method, seed=seed, **(ensf_options or {})), model, start, truth,
                                                batches, mask, spinup)
        rows.append({"method": f"ensf+{method}", **scores})
        print(json.dumps({"fraction": fraction, "operator": kind, "seed": seed, **rows[-1]}), flush=True)
    letkf = {}
    for radius, rtps, factor in letkf_grid:
        inflated = [dataclasses.replace(b, error_std=factor * b.error_std) for b in batches]
        letkf[(radius, rtps, factor)] = cycle(LETKF(grid, loc_radius=radius, rtps=rtps), model, start, truth,
                                              inflated, mask, spinup)
        print(json.dumps({"fraction": fraction, "operator": kind, "seed": seed, "method": "letkf", "loc_radius": radius,
                          "rtps": rtps, "obs_error_factor": factor, **letkf[(radius, rtps, factor)][0]}), flush=True)
    if letkf:  # an empty grid (--letkf-radius '') runs EnSF only
        best = min(letkf, key=lambda key: letkf[key][0]["rmse_unobserved"])
        rows.append({"method": "letkf", "loc_radius": best[0], "rtps": best[1], "obs_error_factor": best[2],
                     **letkf[best][0]})
        means["letkf"] = letkf[best][1]  # None when every LETKF diverged
    grid_rows = [{"loc_radius": r, "rtps": p, "obs_error_factor": f, **scores} for (r, p, f), (scores, _) in letkf.items()]
    return {"fraction": fraction, "operator": kind, "seed": seed, "cycles": cycles, "spinup": spinup,
            "rows": rows, "letkf_grid": grid_rows}, (truth[-1].numpy(), mask, batches[-1], means, model.state_shape)


def first_analysis(fraction, kind, seed, cycles, methods, ensf_options=None, wild=60.0):
    """The first analysis only (same truth, observations and background as ``scenario``): per method, the
    number of member-point values beyond ``wild`` K (the truth stays within about 26 K), the largest |value|
    and the mean's RMSE at observed and unobserved points (K)."""
    model, truth, start = nature_run(cycles, seed)
    mask, batches = observations(truth, fraction, kind, seed + 1)
    observed = np.concatenate([mask, mask])
    background = advance(model, start.view(-1, *model.state_shape), model.default_dt, EVERY).view(start.shape[0], -1)
    rows = []
    for method in methods:
        t0 = time.perf_counter()
        filt = EnSF(StateGrid.from_model(model), inpaint=method, seed=seed, **(ensf_options or {}))
        ens = filt.transform(background.clone(), batches[0]).detach().numpy()
        err2 = (ens.mean(0) - truth[0].numpy()) ** 2
        rows.append({"fraction": fraction, "operator": kind, "seed": seed, "method": f"ensf+{method}",
                     "beyond": int((np.abs(ens) > wild).sum()), "largest": float(np.abs(ens).max()),
                     "rmse_observed": float(np.sqrt(err2[observed].mean())),
                     "rmse_unobserved": float(np.sqrt(err2[~observed].mean())), "seconds": time.perf_counter() - t0})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def draw(path, title, truth, mask, batch, means, shape):
    """Level 0: truth, observations (blank where unobserved), analysis mean of each method."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("truth", truth)]
    obs = np.full(truth.shape, np.nan)
    obs[batch.index.numpy()] = batch.value.numpy()
    panels.append(("observations", obs))
    panels += [(f"{name} mean", m) for name, m in means.items() if m is not None]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.9))
    lo, hi = np.nanpercentile(truth, [1, 99])
    for ax, (name, field) in zip(axes, panels):
        level0 = field.reshape(shape)[0]
        ax.imshow(level0, origin="lower", cmap="RdBu_r", **({} if name == "observations" else {"vmin": lo, "vmax": hi}))
        ax.set_title(name, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="25%% linear only, 10 cycles (4 spin-up), none / biharmonic, one LETKF")
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--spinup", type=int, default=100)
    parser.add_argument("--scenarios", default="0.0625:arctan,0.0625:linear,0.25:arctan,0.25:linear",
                        help="comma-separated FRACTION:OPERATOR (linear|arctan)")
    parser.add_argument("--methods", default=",".join(("none", *INPAINT_METHODS)), help="EnSF --inpaint values ('' for none: the LETKF grid only)")
    parser.add_argument("--letkf-radius", default="4,8", help="LETKF localisation radii (grid points; '' for no LETKF)")
    parser.add_argument("--letkf-rtps", default="0.5,0.9", help="LETKF RTPS factors")
    parser.add_argument("--letkf-obs-error", default="1,3", help="LETKF factors on the observation-error std")
    parser.add_argument("--seeds", default="31")
    parser.add_argument("--ensf-options", default="{}", help='EnSF options other than the defaults, JSON (e.g. \'{"eps_b": 0.2}\')')
    parser.add_argument("--png", default="ensf_sqg.png")
    parser.add_argument("--first-analysis", action="store_true",
                        help="only the first analysis of each scenario and seed: member-point values beyond 60 K, RMSE")
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.quick:
        args.cycles, args.spinup, args.scenarios, args.methods = 10, 4, "0.25:linear", "none,biharmonic"
        args.letkf_radius, args.letkf_rtps, args.letkf_obs_error = "4", "0.9", "1"
    letkf_grid = list(itertools.product(*([float(v) for v in a.split(",") if v] for a in (
        args.letkf_radius, args.letkf_rtps, args.letkf_obs_error))))
    if args.first_analysis:
        rows = [first_analysis(float(spec.split(":")[0]), spec.split(":")[1], seed, args.cycles,
                               [m for m in args.methods.split(",") if m], json.loads(args.ensf_options))
                for spec, seed in itertools.product(args.scenarios.split(","), map(int, args.seeds.split(",")))]
        if args.json:
            with open(args.json, "w") as f:
                json.dump([r for rr in rows for r in rr], f, indent=1)
        return
    results = []
    for i, (spec, seed) in enumerate(itertools.product(args.scenarios.split(","), map(int, args.seeds.split(",")))):
        fraction, kind = spec.split(":")
        result, picture = scenario(float(fraction), kind, seed, args.cycles, args.spinup,
                                   [m for m in args.methods.split(",") if m], letkf_grid, json.loads(args.ensf_options))
        results.append(result)
        if i == 0 and args.png:
            draw(args.png, f"SQG level 0, {float(fraction):.2%} observed, {kind}, cycle {args.cycles}", *picture)
        none = next((r for r in result["rows"] if r["method"] == "ensf+none"), None)
        letkf = next((r for r in result["rows"] if r["method"] == "letkf"), None)
        print(f"\n{float(fraction):.2%} observed, {kind}, seed {seed} ({args.cycles} cycles, scored after {args.spinup})")
        print(f"{'method':22s} {'rmse obs':>9s} {'rmse unobs':>10s} {'spread':>7s} {'crps':>6s} {'/LETKF unobs':>12s}"
              f" {'/none unobs':>11s} {'spr/skill':>9s} {'s/cycle':>8s}")
        for r in result["rows"]:
            ratio_none = r["rmse_unobserved"] / none["rmse_unobserved"] if none else float("nan")
            ratio_letkf = r["rmse_unobserved"] / letkf["rmse_unobserved"] if letkf else float("nan")
            print(f"{r['method']:22s} {r['rmse_observed']:9.3f} {r['rmse_unobserved']:10.3f} {r['spread']:7.3f} "
                  f"{r['crps']:6.3f} {ratio_letkf:12.3f} {ratio_none:11.3f} "
                  f"{r['spread_skill']:9.2f} {r['s_per_cycle']:8.2f}")
        if letkf:
            print(f"(LETKF: best of radius x RTPS x obs-error factor {letkf_grid}: radius {letkf['loc_radius']}, "
                  f"RTPS {letkf['rtps']}, obs-error factor {letkf['obs_error_factor']})", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=float)


if __name__ == "__main__":
    main()
