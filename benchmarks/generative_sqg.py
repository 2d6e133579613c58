"""Generative DA (storm) on SQG beside EnSF and the tuned LETKF: 6.25% and 25% observed, arctan and linear.

The setting of ``benchmarks/ensf_sqg.py`` (Liang et al. 2025), whose functions make the truth, the
observations and the initial ensemble, so that all three methods see the same ones: an SQG 64 x 64
x 2 nature run, 12-hourly cycles, ``--members`` members started from climatology (states of the
nature run long after the experiment window), a fixed random mask of 6.25% or 25% of the columns
observed on both levels, y = x + N(0, 1 K^2) (linear) or y = arctan(x) + N(0, 0.01^2) (arctan).

- storm: :class:`daflow.nn.generative.GenerativeModel`, K = 1 history frame (each member's own previous
  analysis), drawing p(x_t | x_{t-12 h}, y_t) with :func:`daflow.nn.diffusion.posterior_sample` and
  its default MMPS guidance (Rozet et al. 2024); the sampler settings are the defaults or the
  command line's, never chosen on these scores. The denoiser is trained on ``--train-frames`` frames,
  12 h apart, of ``--train-runs`` independent SQG runs branched from a spun-up state of another seed
  (neither the test's nor the validation's truth);
- EnSF: :class:`daflow.da.ensf.EnSF` with its defaults (nothing tuned);
- LETKF: the best by unobserved-point RMSE of localisation radius x RTPS x a factor on the
  observation-error std (``--letkf-*``), chosen on a VALIDATION nature run (seed ``--seed`` + 100,
  its own observations and initial ensemble) and then run once on the test.

Scores on the test (seed ``--seed``), time means over the cycles after ``--spinup``: RMSE of the
ensemble mean over the unobserved and the observed points (K), spread, spread/skill (unobserved)
and CRPS. ``--quick``: 25% linear only, a tiny model, 4 cycles; about a minute on a quiet machine.

    .venv/bin/python benchmarks/generative_sqg.py --quick --json gsqg.json
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from daflow.core.grid import StateGrid
from daflow.core.state import advance
from daflow.da.ensf import EnSF
from daflow.da.letkf import LETKF
from daflow.models import get_model
from daflow.nn.data import Series
from daflow.nn.generative import GenerativeModel
from daflow.nn.training import train
from daflow.score.metrics import crps_ensemble

sys.path.insert(0, str(Path(__file__).parent))
from ensf_sqg import EVERY, SPINUP_STEPS, cycle, observations  # noqa: E402
from ensf_sqg import nature_run as _nature_run  # noqa: E402

nature_run = functools.lru_cache(maxsize=None)(_nature_run)  # the same truth for every scenario of a seed

def training_series(frames: int, runs: int, seed: int, decorrelate: int) -> Series:
    """``frames`` SQG frames, EVERY steps apart, from ``runs`` runs branched from one spun-up state.

    The runs start from the state plus N(0, 0.1^2) noise and run ``decorrelate`` frames before any is kept."""
    model = get_model("sqg")
    g = torch.Generator().manual_seed(seed)
    x = advance(model, model.random_state(1, g), model.default_dt, SPINUP_STEPS)
    x = x.repeat(runs, 1, 1, 1) + 0.1 * torch.randn((runs, *x.shape[1:]), generator=g, dtype=x.dtype)
    per_run = -(-frames // runs)
    kept = []
    for k in range(decorrelate + per_run):
        x = advance(model, x, model.default_dt, EVERY)
        if k >= decorrelate:
            kept.append(x.numpy().astype(np.float32))
    stack = np.stack(kept, axis=1)  # (runs, time, 2, ny, nx)
    return Series("pv", ("level", "y", "x"), stack, np.arange(per_run) * EVERY * model.default_dt, False, {}, {})


def storm_cycle(model: GenerativeModel, start, truth, batches, mask, spinup, seed):
    """ensf_sqg.cycle's scores for storm: each member's history is its own previous analysis."""
    observed = np.concatenate([mask, mask])
    history = start.reshape(start.shape[0], 1, 2, *get_model("sqg").state_shape[1:]).float()
    generator = torch.Generator().manual_seed(seed)
    scores, t0 = [], time.perf_counter()
    for k, batch in enumerate(batches):
        history = model.next_frames(history, generator, [(0, batch)])
        if not torch.isfinite(history).all():
            return {"rmse_observed": float("inf"), "rmse_unobserved": float("inf"), "spread": float("nan"),
                    "crps": float("inf"), "s_per_cycle": float("nan")}
        if k >= spinup:
            ens, y = history.reshape(history.shape[0], -1).double().numpy(), truth[k].double().numpy()
            err2 = (ens.mean(0) - y) ** 2
            scores.append([np.sqrt(err2[observed].mean()), np.sqrt(err2[~observed].mean()),
                           np.sqrt(ens.var(0, ddof=1).mean()), crps_ensemble(ens, y).mean()])
    mean = np.mean(scores, axis=0).tolist()
    return {"rmse_observed": mean[0], "rmse_unobserved": mean[1], "spread": mean[2], "crps": mean[3],
            "s_per_cycle": (time.perf_counter() - t0) / len(batches)}


def tuned_letkf(fraction, kind, seed, cycles, spinup, grid_options):
    """The LETKF setting with the lowest unobserved RMSE on the validation nature run (seed + 100)."""
    model, truth, start = nature_run(cycles, seed + 100)
    mask, batches = observations(truth, fraction, kind, seed + 101)
    grid = StateGrid.from_model(model)
    results = {}
    for radius, rtps, factor in grid_options:
        inflated = [dataclasses.replace(b, error_std=factor * b.error_std) for b in batches]
        results[(radius, rtps, factor)] = cycle(LETKF(grid, loc_radius=radius, rtps=rtps), model, start, truth,
                                                inflated, mask, spinup)[0]["rmse_unobserved"]
    return min(results, key=results.__getitem__), {str(key): v for key, v in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="25%% linear only, tiny model, 4 cycles (2 spin-up), one LETKF.")
    parser.add_argument("--json", help="Write the figures as one JSON object to this file.")
    parser.add_argument("--scenarios", default="0.0625:arctan,0.0625:linear,0.25:arctan,0.25:linear",
                        help="comma-separated FRACTION:OPERATOR (linear|arctan)")
    parser.add_argument("--cycles", type=int, default=60, help="Test (and validation) cycles [60].")
    parser.add_argument("--spinup", type=int, default=20, help="Cycles before scoring [20].")
    parser.add_argument("--members", type=int, default=20, help="Ensemble size of every method [20].")
    parser.add_argument("--train-frames", type=int, default=2000, help="storm's training frames [2000].")
    parser.add_argument("--train-runs", type=int, default=40, help="Independent runs the frames come from [40].")
    parser.add_argument("--decorrelate", type=int, default=20,
                        help="Frames (12 h) each branched training run goes before its frames are kept [20].")
    parser.add_argument("--epochs", type=int, default=20, help="storm training epochs [20].")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--patch", type=int, default=8)
    parser.add_argument("--sample-steps", type=int, default=24, help="storm sampler steps [24, the CLI's default].")
    parser.add_argument("--cg-iterations", type=int, default=8, help="MMPS conjugate-gradient iterations [8].")
    parser.add_argument("--letkf-radius", default="4,8", help="LETKF localisation radii (grid points) [4,8]")
    parser.add_argument("--letkf-rtps", default="0.5,0.9", help="LETKF RTPS factors [0.5,0.9]")
    parser.add_argument("--letkf-obs-error", default="1,3", help="LETKF factors on the observation-error std [1,3]")
    parser.add_argument("--model-dir", help="Keep storm's checkpoint here (reused when it exists; default: temporary).")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=31)
    args = parser.parse_args()
    if args.quick:
        args.scenarios, args.cycles, args.spinup, args.members = "0.25:linear", 4, 2, 8
        args.train_frames, args.train_runs, args.epochs, args.width, args.depth = 40, 2, 1, 32, 1
        args.decorrelate = 1
        args.sample_steps, args.letkf_radius, args.letkf_rtps, args.letkf_obs_error = 8, "4", "0.9", "1"
    torch.set_num_threads(args.threads)
    import ensf_sqg
    ensf_sqg.MEMBERS = args.members
    letkf_grid = list(itertools.product(*(map(float, a.split(",")) for a in (args.letkf_radius, args.letkf_rtps,
                                                                            args.letkf_obs_error))))
    report: dict = {"members": args.members, "cycles": args.cycles, "spinup": args.spinup, "scenarios": []}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(args.model_dir or f"{tmp}/model")
        start = time.perf_counter()
        if not (model_dir / "config.json").exists():
            series = training_series(args.train_frames, args.train_runs, args.seed + 1000, args.decorrelate)
            report["generate_seconds"] = time.perf_counter() - start
            config = Path(tmp) / "arch.toml"
            config.write_text(f"[architecture]\nwidth = {args.width}\ndepth = {args.depth}\nheads = 4\npatch = {args.patch}\n"
                              "[training]\nbatch_size = 32\n")
            start = time.perf_counter()
            train(series, 1, args.epochs, str(model_dir), str(config))
            report["train_seconds"] = time.perf_counter() - start
            print(f"storm: {series.frames.shape[0] * series.frames.shape[1]} training frames "
                  f"({report['generate_seconds']:.0f} s), {args.epochs} epochs ({report['train_seconds']:.0f} s)", flush=True)
        storm = GenerativeModel(str(model_dir), sample_steps=args.sample_steps)
        for spec in args.scenarios.split(","):
            fraction, kind = float(spec.split(":")[0]), spec.split(":")[1]
            best, validation = tuned_letkf(fraction, kind, args.seed, args.cycles, args.spinup, letkf_grid)
            model, truth, start_ensemble = nature_run(args.cycles, args.seed)
            mask, batches = observations(truth, fraction, kind, args.seed + 1)
            grid = StateGrid.from_model(model)
            rows = {"storm": storm_cycle(storm, start_ensemble, truth, batches, mask, args.spinup, args.seed)}
            rows["ensf"] = cycle(EnSF(grid, seed=args.seed), model, start_ensemble, truth, batches, mask, args.spinup)[0]
            inflated = [dataclasses.replace(b, error_std=best[2] * b.error_std) for b in batches]
            rows["letkf"] = cycle(LETKF(grid, loc_radius=best[0], rtps=best[1]), model, start_ensemble, truth, inflated,
                                  mask, args.spinup)[0]
            print(f"\n{fraction:.2%} observed, {kind} ({args.cycles} cycles, scored after {args.spinup}); LETKF chosen on "
                  f"validation: radius {best[0]}, RTPS {best[1]}, obs-error factor {best[2]}")
            print(f"{'method':8s} {'rmse unobs':>10s} {'rmse obs':>9s} {'spread':>7s} {'spread/skill':>12s} {'crps':>6s} {'s/cycle':>8s}")
            for name, r in rows.items():
                r["spread_skill"] = r["spread"] / r["rmse_unobserved"]
                print(f"{name:8s} {r['rmse_unobserved']:10.3f} {r['rmse_observed']:9.3f} {r['spread']:7.3f} "
                      f"{r['spread_skill']:12.2f} {r['crps']:6.3f} {r['s_per_cycle']:8.2f}", flush=True)
            report["scenarios"].append({"fraction": fraction, "operator": kind, "rows": rows,
                                        "letkf_chosen": {"loc_radius": best[0], "rtps": best[1], "obs_error_factor": best[2]},
                                        "letkf_validation": validation})
            if args.json:
                Path(args.json).write_text(json.dumps(report, indent=1, default=float))


if __name__ == "__main__":
    main()
