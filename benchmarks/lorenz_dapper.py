"""DAPPER vs daflow on DAPPER's Lorenz96/sakov2008 setting, in one run, on the same truth and observations.

Lorenz-96, 40 variables, dt 0.05, one step per cycle, every variable observed with R = I,
initial ensemble x0 + N(0, 0.001). ETKF N=24 (inflation 1.013, random rotation) and LETKF N=7
(inflation 1.04, localisation radius 4, rotation in DAPPER). DAPPER runs in its own virtual
environment (``benchmarks/.venv-dapper``, created here with ``pip install dapper`` when missing),
simulates the truth and observations and saves them; daflow assimilates the same ones. Reported:
time-averaged analysis RMSE after burn-in and seconds per cycle of the assimilation loop (DAPPER:
``xp.assimilate``, which includes its per-cycle statistics; daflow: ``daflow.da.cycle.cycle``),
their ratio, and daflow's LETKF/ETKF at dim 10^4 and 10^5 (N = 20): seconds per cycle and peak RSS.

    .venv/bin/python benchmarks/lorenz_dapper.py [--quick] [--json FILE]
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

HERE = Path(__file__).resolve().parent
DAPPER_VENV = HERE / ".venv-dapper"
DAPPER_PY = DAPPER_VENV / "bin" / "python"

DAPPER_SCRIPT = r"""
import json, sys, time
import numpy as np
import dapper as dpr
import dapper.da_methods as da
import dapper.tools.progressbar as pb
from dapper.mods.Lorenz96.sakov2008 import HMM
pb.disable_progbar = True
cycles, burn_in, seed, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
HMM.liveplotters = []
HMM.tseq.Ko = cycles
HMM.tseq.BurnIn = burn_in * HMM.tseq.dt
dpr.set_seed(seed)
xx, yy = HMM.simulate()
result = {"dapper_version": dpr.__version__}
for name, xp in (("etkf", da.EnKF("Sqrt", N=24, infl=1.013, rot=True)),
                 ("letkf", da.LETKF(N=7, infl=1.04, rot=True, loc_rad=4))):
    start = time.perf_counter()
    xp.assimilate(HMM, xx, yy)
    seconds = time.perf_counter() - start
    xp.stats.average_in_time()
    result[name] = {"rmse": float(xp.avrgs.err.rms.a.val), "seconds_per_cycle": seconds / cycles}
np.savez(out, xx=np.asarray(xx, float), yy=np.stack([np.asarray(y, float) for y in yy]), x0=np.asarray(HMM.X0.mu, float))
print(json.dumps(result))
"""


def ensure_dapper() -> str | None:
    """Path of DAPPER's python, creating its venv if needed; None (with the reason printed) if impossible."""
    if not DAPPER_PY.exists():
        print(f"creating {DAPPER_VENV} (pip install dapper) ...", file=sys.stderr)
        made = subprocess.run([sys.executable, "-m", "venv", str(DAPPER_VENV)], capture_output=True, text=True)
        pip = made if made.returncode != 0 else subprocess.run(
            [str(DAPPER_VENV / "bin" / "pip"), "install", "-q", "dapper"], capture_output=True, text=True)
        if pip.returncode != 0:
            print(f"DAPPER could not be installed: {(pip.stderr or pip.stdout).strip().splitlines()[-1:]}", file=sys.stderr)
            return None
    return str(DAPPER_PY)


def run_dapper(cycles: int, burn_in: int, seed: int, npz: Path) -> dict:
    python = ensure_dapper()
    if python is None:
        raise SystemExit("DAPPER unavailable; see the message above")
    proc = subprocess.run([python, "-c", DAPPER_SCRIPT, str(cycles), str(burn_in), str(seed), str(npz)],
                          capture_output=True, text=True, env={"MPLBACKEND": "agg", "PATH": "/usr/bin:/bin"})
    if proc.returncode != 0:
        raise SystemExit(f"DAPPER failed: {proc.stderr.strip().splitlines()[-1]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_daflow(npz: Path, burn_in: int, seed: int) -> dict:
    """daflow's ETKF and LETKF on DAPPER's truth and observations (cycle loop timed)."""
    import torch
    import xarray as xr

    from daflow.core.cycle import cycle
    from daflow.core.grid import StateGrid
    from daflow.core.observations import observation_batches
    from daflow.core.state import State
    from daflow.da.cycle import make_filter
    from daflow.models import get_model

    data = np.load(npz)
    xx, yy, x0 = data["xx"], data["yy"], data["x0"]              # (K+1, 40), (K, 40), (40,)
    cycles, dim = yy.shape
    model = get_model("lorenz96", dim=dim)
    grid = StateGrid.from_model(model)
    times = np.arange(1, cycles + 1) * 0.05
    obs = xr.Dataset({"value": ("obs", yy.ravel()), "error_std": ("obs", np.ones(yy.size)),
                      "time": ("obs", np.repeat(times, dim)), "i": ("obs", np.tile(np.arange(dim), cycles)),
                      "variable": ("obs", np.full(yy.size, "x", dtype=object)),
                      "operator": ("obs", np.full(yy.size, "identity", dtype=object))})
    batches = observation_batches(obs, grid)
    result = {}
    g = torch.Generator().manual_seed(seed)
    for name, members, options in (("etkf", 24, dict(inflation=1.013, rotate=True, seed=seed)),
                                   ("letkf", 7, dict(inflation=1.04, loc_radius=4))):
        ens = torch.from_numpy(x0) + np.sqrt(0.001) * torch.randn(members, dim, generator=g, dtype=torch.float64)
        state = State(model, 0.05, ens, 0.0, True)
        filt = make_filter(name, grid, **options)
        start = time.perf_counter()
        out = cycle(state, obs, filt, batches)
        seconds = time.perf_counter() - start
        err = out["x"].mean("member").values - xx[1:]
        rmse = np.sqrt((err**2).mean(-1))[burn_in:].mean()
        result[name] = {"rmse": float(rmse), "seconds_per_cycle": seconds / cycles}
    return result


SCALE_SCRIPT = r"""
import json, resource, sys, time
import numpy as np, torch, xarray as xr
from daflow.core.cycle import cycle
from daflow.core.grid import StateGrid
from daflow.core.observations import observation_batches
from daflow.core.state import State, advance, integrate
from daflow.da.cycle import make_filter
from daflow.models import get_model
from daflow.obs.synthetic import observe
method, dim, cycles, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
model = get_model("lorenz96", dim=dim)
g = torch.Generator().manual_seed(0)
x0 = advance(model, model.random_state(1, g), 0.05, 300)
truth = integrate(model, x0, 0.05, cycles)[:, 0]
ds = xr.Dataset({"x": (("time", "i"), truth.numpy())}, coords={"time": np.arange(cycles + 1) * 0.05})
obs = observe(ds, fraction=1, error_std=1, seed=0)
grid = StateGrid.from_model(model)
ens = x0 + torch.randn(20, dim, generator=g, dtype=torch.float64)
state = State(model, 0.05, ens, 0.0, True)
batches = observation_batches(obs, grid)
filt = make_filter(method, grid, inflation=1.05, **({"loc_radius": 4} if method == "letkf" else {}))
start = time.perf_counter()
out = cycle(state, obs, filt, batches)
seconds = (time.perf_counter() - start) / (cycles + 1)
err = out["x"].mean("member").values[-1] - truth.numpy()[-1]
print(json.dumps({"seconds_per_cycle": seconds, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "final_rmse": float(np.sqrt((err ** 2).mean()))}))
"""


def run_scale(method: str, dim: int, cycles: int, threads: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", SCALE_SCRIPT, method, str(dim), str(cycles), str(threads)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"scale run failed: {proc.stderr.strip().splitlines()[-1]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer cycles and seeds, no dim 10^5")
    parser.add_argument("--json", help="write the figures as one JSON object")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the scale runs (1: no OpenMP oversubscription on a shared machine)")
    args = parser.parse_args()
    cycles, burn_in = (1000, 200) if args.quick else (3000, 500)
    seeds = [1] if args.quick else [1, 2, 3]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            npz = Path(tmp) / f"sakov2008_{seed}.npz"
            dapper = run_dapper(cycles, burn_in, seed, npz)
            runs.append({"seed": seed, "dapper": dapper, "daflow": run_daflow(npz, burn_in, seed)})
    summary = {"cycles": cycles, "burn_in": burn_in, "seeds": seeds, "dapper_version": runs[0]["dapper"]["dapper_version"]}
    print(f"Lorenz96/sakov2008, {cycles} cycles, burn-in {burn_in}, seeds {seeds} (mean over seeds)")
    print(f"{'method':<7}{'DAPPER rmse':>12}{'daflow rmse':>12}{'DAPPER ms/cyc':>15}{'daflow ms/cyc':>15}{'speed-up':>10}")
    for name in ("etkf", "letkf"):
        fig = {f"{tool}_{key}": float(np.mean([r[tool][name][key] for r in runs]))
               for tool in ("dapper", "daflow") for key in ("rmse", "seconds_per_cycle")}
        fig["speedup"] = fig["dapper_seconds_per_cycle"] / fig["daflow_seconds_per_cycle"]
        summary[name] = fig
        print(f"{name:<7}{fig['dapper_rmse']:>12.3f}{fig['daflow_rmse']:>12.3f}"
              f"{1e3 * fig['dapper_seconds_per_cycle']:>15.2f}{1e3 * fig['daflow_seconds_per_cycle']:>15.3f}{fig['speedup']:>9.1f}x")
    summary["scale"] = {}
    print(f"\ndaflow at scale (N = 20, every variable observed, {args.threads} thread(s)): seconds per cycle, peak RSS")
    for dim in ([10_000] if args.quick else [10_000, 100_000]):
        for method in ("etkf", "letkf"):
            fig = run_scale(method, dim, 3 if dim > 10_000 else 5, args.threads)
            summary["scale"][f"{method}_{dim}"] = fig
            print(f"{method:<7} dim {dim:>7}: {fig['seconds_per_cycle']:8.3f} s/cycle  {fig['peak_rss_mib']:8.0f} MiB peak")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
