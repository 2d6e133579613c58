"""DAPPER vs daflow on every DAPPER setting that ships expected scores for a method daflow has, in one
run per setting and seed, on the same truth and observations.

Settings (DAPPER's ``mods/*/`` files, see SETTINGS; the "Suggested tuning" lines of the methods daflow has:
``EnKF('Sqrt')`` = etkf, ``EnKF('PertObs')`` = enkf, ``LETKF`` = letkf, ``EnKF_N`` = enkf-n,
``Var3D`` = 3dvar with B = xB x the truth's covariance): Lorenz63/sakov2012 (dt 0.01, obs every 25
steps, all 3 variables, R = 2 I), Lorenz63/anderson2010rhf (every 12 steps, R = 8 I), Lorenz96/sakov2008
(40 variables, dt 0.05, every step, R = I), Lorenz96/hoteit2015 (sakov2008 with BurnIn 4),
Lorenz96/bocquet2010 (10 variables, every other one observed, R = 1.5), Lorenz96/bocquet2010_m40 (the same with 40),
Lorenz96/todter2015 (80 variables, every other one observed every 2 steps, Laplace errors of variance 1), and sakov2008_dto02: sakov2008 with
observations every 4 steps (Bocquet & Sakov 2013, Fig. 4) for DAPPER's ``Var4D(Lag, xB)`` = 4dvar with window
Lag (DAPPER slides its window by one observation time, daflow's windows do not overlap: see SETTINGS).
Left out: Lorenz63/wiljes2017 (DAPPER 1.7.1's own file fails in ``HMM.simulate``: AttributeError:
'int' object has no attribute 'T'); Lorenz63/mandel2016 (its scores need model noise Q, which daflow's models do
not have); Lorenz96/miyoshi2011 (observation sites from a land mask; its LETKF score 2.1 is a diverged filter);
Lorenz96/frei2013bridging (N = 400, "short xp. only" in the file).
DAPPER's ``OptInterp`` is left out: its analysis starts from the climatological mean, not from a
forecast, which is not what daflow's oi does. DAPPER runs in its own virtual environment
(``benchmarks/.venv-dapper``, created here with ``pip install dapper==1.7.1`` when missing; the
figures are for that version), simulates truth and observations and saves them; daflow starts from
X0's mean plus its noise (its own draw) and assimilates the same observations. Reported:
time-averaged analysis RMSE over the observation times after DAPPER's BurnIn (DAPPER's rmse.a) and analysis
spread (its spread.rms.a: the root of the mean unbiased ensemble variance) with spread/skill,
per seed and their mean; for sakov2008's ETKF/LETKF the seconds per cycle of the assimilation loop, wall
and CPU (DAPPER: ``xp.assimilate`` with its per-cycle statistics; daflow: ``daflow.da.cycle.cycle``);
daflow's LETKF/ETKF at dim 10^4 and 10^5 (N = 20): seconds per cycle and peak RSS; and one LETKF
analysis at dim 10^6 (N = 20, two threads): seconds, CPU seconds.

    .venv/bin/python benchmarks/lorenz_dapper.py [--quick] [--settings sakov2012,...] [--xps LETKF] [--json FILE]
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
DAPPER_VERSION = "1.7.1"

# name -> DAPPER module, daflow model, observed indices, R variance, X0 variance, cycles (full, quick), and the
# experiments: (label, DAPPER expression, daflow method, members, daflow options, DAPPER's expected rmse.a)
SETTINGS = {
    "sakov2012": dict(module="dapper.mods.Lorenz63.sakov2012", model="lorenz63", obs=[0, 1, 2], r=2.0, x0_var=2.0,
                      cycles=(3000, 1000), xps=[
        ("ETKF N=10 infl 1.02 rot", "da.EnKF('Sqrt', N=10, infl=1.02, rot=True)", "etkf", 10,
         dict(inflation=1.02, rotate=True), 0.60),
        ("ETKF N=10 infl 1.02", "da.EnKF('Sqrt', N=10, infl=1.02)", "etkf", 10, dict(inflation=1.02), None),
        ("ETKF N=3 infl 1.30", "da.EnKF('Sqrt', N=3, infl=1.30)", "etkf", 3, dict(inflation=1.30), 0.80),
        ("EnKF N=10 infl 1.04", "da.EnKF('PertObs', N=10, infl=1.04)", "enkf", 10, dict(inflation=1.04), 0.65),
        ("EnKF N=100 infl 1.01", "da.EnKF('PertObs', N=100, infl=1.01)", "enkf", 100, dict(inflation=1.01), 0.56),
        ("EnKF-N N=3", "da.EnKF_N(N=3)", "enkf-n", 3, {}, 0.60),
        ("EnKF-N N=10 rot", "da.EnKF_N(N=10, rot=True)", "enkf-n", 10, dict(rotate=True), 0.54),
        ("3D-Var xB=0.1", "da.Var3D(xB=0.1)", "3dvar", 1, dict(b_scale=0.1), 1.04),
    ]),
    "anderson2010rhf": dict(module="dapper.mods.Lorenz63.anderson2010rhf", model="lorenz63", obs=[0, 1, 2], r=8.0,
                            x0_var=2.0, cycles=(None, None), xps=[
        ("EnKF-N N=20 rot", "da.EnKF_N(N=20, rot=True)", "enkf-n", 20, dict(rotate=True), 0.87),
    ]),
    "bocquet2010": dict(module="dapper.mods.Lorenz96.bocquet2010", model="lorenz96", obs=list(range(0, 10, 2)), r=1.5,
                        x0_var=0.001, cycles=(None, None), xps=[
        ("EnKF-N N=8 rot xN=1.3", "da.EnKF_N(N=8, rot=True, xN=1.3)", "enkf-n", 8, dict(rotate=True, xn=1.3), 0.31),
    ]),
    "bocquet2010_m40": dict(module="dapper.mods.Lorenz96.bocquet2010_m40", model="lorenz96", obs=list(range(0, 40, 2)),
                            r=1.5, x0_var=0.001, cycles=(None, None), xps=[
        ("EnKF-N N=24 rot infl 1.01", "da.EnKF_N(N=24, rot=True, infl=1.01)", "enkf-n", 24,
         dict(rotate=True, inflation=1.01), 0.38),
    ]),
    # 80 variables, every other one observed every 2 steps with Laplace errors of variance 1 (R = I for the filters)
    "todter2015": dict(module="dapper.mods.Lorenz96.todter2015", model="lorenz96", obs=list(range(0, 80, 2)), r=1.0,
                       x0_var=0.001, cycles=(3000, 1000), xps=[
        ("LETKF N=20 infl 1.04 r5 rot", "da.LETKF(N=20, rot=True, infl=1.04, loc_rad=5)", "letkf", 20,
         dict(inflation=1.04, loc_radius=5), 0.44),
    ]),
    "hoteit2015": dict(module="dapper.mods.Lorenz96.hoteit2015", model="lorenz96", obs=list(range(40)), r=1.0,
                       x0_var=0.001, cycles=(3000, 1000), xps=[
        ("LETKF N=10 infl 1.02 r4 rot", "da.LETKF(N=10, rot=True, infl=1.02, loc_rad=4)", "letkf", 10,
         dict(inflation=1.02, loc_radius=4), 0.21),
        ("ETKF N=28 infl 1.02 rot", "da.EnKF('Sqrt', N=28, infl=1.02, rot=True)", "etkf", 28,
         dict(inflation=1.02, rotate=True), 0.18),
        ("EnKF N=28 infl 1.08", "da.EnKF('PertObs', N=28, infl=1.08)", "enkf", 28, dict(inflation=1.08), 0.24),
        ("ETKF N=17 infl 1.03", "da.EnKF('Sqrt', N=17, infl=1.03)", "etkf", 17, dict(inflation=1.03), 0.217),
    ]),
    # Bocquet & Sakov (2013) Fig. 4 as in sakov2008's notes: obs every 4 steps (dto 0.2); DAPPER's Var4D slides its
    # Lag-window by one observation time (each observation used Lag times, rmse.a at the window's end), daflow's
    # 4dvar takes non-overlapping windows of Lag times and scores its analysis trajectory at every time.
    "sakov2008_dto02": dict(module="dapper.mods.Lorenz96.sakov2008", model="lorenz96", obs=list(range(40)), r=1.0,
                            x0_var=0.001, dko=4, cycles=(1000, 300), xps=[
        ("Var4D Lag=1 xB=0.2", "da.Var4D(Lag=1, xB=0.2)", "4dvar", 1, dict(b_scale=0.2, window=1), 0.46),
        ("Var4D Lag=2 xB=0.1", "da.Var4D(Lag=2, xB=0.1)", "4dvar", 1, dict(b_scale=0.1, window=2), 0.39),
        ("Var4D Lag=4 xB=0.02", "da.Var4D(Lag=4, xB=0.02)", "4dvar", 1, dict(b_scale=0.02, window=4), 0.37),
    ]),
    "sakov2008": dict(module="dapper.mods.Lorenz96.sakov2008", model="lorenz96", obs=list(range(40)), r=1.0,
                      x0_var=0.001, cycles=(3000, 1000), xps=[
        ("ETKF N=24 infl 1.013 rot", "da.EnKF('Sqrt', N=24, infl=1.013, rot=True)", "etkf", 24,
         dict(inflation=1.013, rotate=True), 0.18),
        ("LETKF N=7 infl 1.04 r4 rot", "da.LETKF(N=7, infl=1.04, rot=True, loc_rad=4)", "letkf", 7,
         dict(inflation=1.04, loc_radius=4), 0.22),
        ("EnKF N=40 infl 1.06", "da.EnKF('PertObs', N=40, infl=1.06)", "enkf", 40, dict(inflation=1.06), 0.22),
        ("EnKF N=28 infl 1.08", "da.EnKF('PertObs', N=28, infl=1.08)", "enkf", 28, dict(inflation=1.08), 0.24),
        ("EnKF-N N=24 rot", "da.EnKF_N(N=24, rot=True)", "enkf-n", 24, dict(rotate=True), 0.21),
        ("EnKF-N N=24 rot xN=2", "da.EnKF_N(N=24, rot=True, xN=2.0)", "enkf-n", 24, dict(rotate=True, xn=2.0), 0.18),
        ("3D-Var xB=0.02", "da.Var3D(xB=0.02)", "3dvar", 1, dict(b_scale=0.02), 0.41),
    ]),
}

# Hidden-case audit (6th session): the same models and files with settings no suggested-tuning line names (other
# localisation radii, EnKF-N where the file has none, rotation on and off); run with --settings audit_*.
AUDIT_SETTINGS = {
    "audit_sakov2012": dict(SETTINGS["sakov2012"], xps=[
        ("ETKF N=10 infl 1.02 rot", "da.EnKF('Sqrt', N=10, infl=1.02, rot=True)", "etkf", 10,
         dict(inflation=1.02, rotate=True), None),
        ("ETKF N=10 infl 1.02", "da.EnKF('Sqrt', N=10, infl=1.02)", "etkf", 10, dict(inflation=1.02), None),
        ("EnKF-N N=10", "da.EnKF_N(N=10)", "enkf-n", 10, {}, None),
    ]),
    "audit_sakov2008": dict(SETTINGS["sakov2008"], xps=[
        *[(f"LETKF N={n} infl {infl} r{r}{' rot' if rot else ''}", f"da.LETKF(N={n}, infl={infl}, rot={rot}, loc_rad={r})",
           "letkf", n, dict(inflation=infl, loc_radius=r), None)
          for n, infl in ((7, 1.04), (10, 1.02)) for r in (2, 8) for rot in (False, True)],
        ("EnKF-N N=10 rot", "da.EnKF_N(N=10, rot=True)", "enkf-n", 10, dict(rotate=True), None),
        ("EnKF-N N=10", "da.EnKF_N(N=10)", "enkf-n", 10, {}, None),
    ]),
    "audit_bocquet2010": dict(SETTINGS["bocquet2010"], xps=[
        ("EnKF-N N=10 rot", "da.EnKF_N(N=10, rot=True)", "enkf-n", 10, dict(rotate=True), None),
        ("EnKF-N N=10", "da.EnKF_N(N=10)", "enkf-n", 10, {}, None),
        ("ETKF N=10 infl 1.04 rot", "da.EnKF('Sqrt', N=10, infl=1.04, rot=True)", "etkf", 10,
         dict(inflation=1.04, rotate=True), None),
    ]),
    "audit_todter2015": dict(SETTINGS["todter2015"], xps=[
        (f"LETKF N=20 infl 1.04 r{r}", f"da.LETKF(N=20, rot=False, infl=1.04, loc_rad={r})", "letkf", 20,
         dict(inflation=1.04, loc_radius=r), None) for r in (2, 8)
    ]),
}

DAPPER_SCRIPT = r"""
import importlib, json, sys, time
import numpy as np
import dapper as dpr
import dapper.da_methods as da
import dapper.tools.progressbar as pb
pb.disable_progbar = True
module, cycles, seed, out, xps, dko = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], json.loads(sys.argv[5]), int(sys.argv[6])
import dapper.mods as modelling
# DAPPER 1.7.1's Var4D calls the observation operator of time ko as HMM.Obs(ko)(ko)(x): its own bug (IndexError:
# invalid index to scalar variable); an Operator called with a time index returns itself, as Var4D meant.
_operator_call = modelling.Operator.__call__
modelling.Operator.__call__ = lambda self, *a, **k: (self if len(a) == 1 and not k and isinstance(a[0], (int, np.integer))
                                                     else _operator_call(self, *a, **k))
HMM = importlib.import_module(module).HMM
HMM.liveplotters = []
if dko > 0:
    HMM.tseq.dko = dko
if cycles > 0:
    HMM.tseq.Ko = cycles
cycles = HMM.tseq.Ko
dpr.set_seed(seed)
xx, yy = HMM.simulate()
result = {"dapper_version": dpr.__version__, "xps": {}}
for label, expression in xps:
    xp = eval(expression)
    start, cpu = time.perf_counter(), time.process_time()
    try:
        xp.assimilate(HMM, xx, yy)
    except Exception as err:  # a DAPPER failure on this setting: reported, not fatal
        result["xps"][label] = {"rmse": None, "seconds_per_cycle": None, "error": f"{type(err).__name__}: {err}"}
        continue
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    xp.stats.average_in_time()
    spread = getattr(getattr(getattr(xp.avrgs, "spread", None), "rms", None), "a", None)   # ensemble methods only
    result["xps"][label] = {"rmse": float(xp.avrgs.err.rms.a.val), "seconds_per_cycle": seconds / (cycles + 1),
                            "spread": None if spread is None or not np.isfinite(spread.val) else float(spread.val),
                            "cpu_seconds_per_cycle": cpu / (cycles + 1)}
np.savez(out, xx=np.asarray(xx, float), yy=np.stack([np.asarray(y, float) for y in yy]), x0=np.asarray(HMM.X0.mu, float),
         tt=np.asarray(HMM.tseq.tt, float), tto=np.asarray(HMM.tseq.tto, float), kko=np.asarray(HMM.tseq.kko),
         burn_in=float(HMM.tseq.BurnIn))
print(json.dumps(result))
"""


def ensure_dapper() -> str | None:
    """Path of DAPPER's python, creating its venv if needed; None (with the reason printed) if impossible."""
    if not DAPPER_PY.exists():
        print(f"creating {DAPPER_VENV} (pip install dapper=={DAPPER_VERSION}) ...", file=sys.stderr)
        made = subprocess.run([sys.executable, "-m", "venv", str(DAPPER_VENV)], capture_output=True, text=True)
        pip = made if made.returncode != 0 else subprocess.run(
            [str(DAPPER_VENV / "bin" / "pip"), "install", "-q", f"dapper=={DAPPER_VERSION}"], capture_output=True, text=True)
        if pip.returncode != 0:
            print(f"DAPPER could not be installed: {(pip.stderr or pip.stdout).strip().splitlines()[-1:]}", file=sys.stderr)
            return None
    return str(DAPPER_PY)


def run_dapper(setting: dict, cycles: int, seed: int, npz: Path) -> dict:
    python = ensure_dapper()
    if python is None:
        raise SystemExit("DAPPER unavailable; see the message above")
    xps = json.dumps([(label, expression) for label, expression, *_ in setting["xps"]])
    proc = subprocess.run([python, "-c", DAPPER_SCRIPT, setting["module"], str(cycles or 0), str(seed), str(npz), xps,
                           str(setting.get("dko", 0))],
                          capture_output=True, text=True, env={"MPLBACKEND": "agg", "PATH": "/usr/bin:/bin"})
    if proc.returncode != 0:
        raise SystemExit(f"DAPPER failed: {proc.stderr.strip().splitlines()[-1]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_daflow(setting: dict, npz: Path, seed: int) -> dict:
    """daflow's filters on DAPPER's truth and observations (cycle loop timed)."""
    import torch
    import xarray as xr

    from daflow.core.cycle import cycle
    from daflow.core.grid import StateGrid
    from daflow.core.observations import observation_batches
    from daflow.core.state import State
    from daflow.da.cycle import make_filter
    from daflow.models import get_model

    data = np.load(npz)
    xx, yy, x0, tt, tto, kko = (data[k] for k in ("xx", "yy", "x0", "tt", "tto", "kko"))
    dim, index = xx.shape[1], np.asarray(setting["obs"])
    model = get_model(setting["model"], **({"dim": dim} if setting["model"] == "lorenz96" else {}))
    x0 = xx[0] if not np.any(x0) else x0       # X0 with a zero mean (bocquet2010): start from the truth's first state
    grid = StateGrid.from_model(model)
    dt = float(tt[1] - tt[0])
    cycles, p = yy.shape
    obs = xr.Dataset({"value": ("obs", yy.ravel()), "error_std": ("obs", np.full(yy.size, np.sqrt(setting["r"]))),
                      "time": ("obs", np.repeat(tto, p)), "i": ("obs", np.tile(index, cycles)),
                      "variable": ("obs", np.full(yy.size, "x", dtype=object)),
                      "operator": ("obs", np.full(yy.size, "identity", dtype=object))})
    batches = observation_batches(obs, grid)
    after = tto > float(data["burn_in"])
    anomalies = xx - xx.mean(0)
    climatology = torch.from_numpy(anomalies.T @ anomalies / (len(xx) - 1))   # DAPPER's np.cov(xx.T)
    result = {}
    g = torch.Generator().manual_seed(seed)
    for label, _, method, members, options, _ in setting["xps"]:
        ens = torch.from_numpy(x0) + np.sqrt(setting["x0_var"]) * torch.randn(members, dim, generator=g, dtype=torch.float64)
        state = State(model, dt, ens, 0.0, True)
        extra = ({"covariance": climatology} if method in ("3dvar", "4dvar")
                 else {"seed": seed} if "rotate" in options or method == "enkf" else {})
        filt = make_filter(method, grid, qc_k=0, **options, **extra)  # DAPPER has no background check
        start, cpu = time.perf_counter(), time.process_time()
        out = cycle(state, obs, filt, batches)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        err = out["x"].mean("member").values - xx[kko]
        rmse = np.sqrt((err**2).mean(-1))[after].mean()
        spread = np.sqrt(out["x"].var("member", ddof=1).values.mean(-1))[after].mean() if members > 1 else None
        result[label] = {"rmse": float(rmse), "spread": None if spread is None else float(spread),  # DAPPER's spread.rms.a
                         "seconds_per_cycle": seconds / cycles, "cpu_seconds_per_cycle": cpu / cycles}
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


ANALYSIS_SCRIPT = r"""
import json, resource, sys, time
import numpy as np, torch, xarray as xr
from daflow.core.grid import StateGrid
from daflow.core.observations import observation_batches
from daflow.da.cycle import make_filter
from daflow.models import get_model
from daflow.obs.synthetic import observe
dim, threads = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(threads)
model = get_model("lorenz96", dim=dim)
g = torch.Generator().manual_seed(0)
truth = model.random_state(1, g)[0]
ds = xr.Dataset({"x": (("time", "i"), truth[None].numpy())}, coords={"time": [0.0]})
batch = observation_batches(observe(ds, fraction=1, error_std=1, seed=0), StateGrid.from_model(model))[0]
x = truth + torch.randn(dim, generator=g, dtype=torch.float64) + torch.randn(20, dim, generator=g, dtype=torch.float64)  # error ~ spread 1
filt = make_filter("letkf", StateGrid.from_model(model), inflation=1.0, loc_radius=4)
with torch.inference_mode():
    start, cpu = time.perf_counter(), time.process_time()
    filt._local(batch, x.dtype)                                       # neighbour lists (kept while the network stays)
    neighbours, neighbours_cpu = time.perf_counter() - start, time.process_time() - cpu
    start, cpu = time.perf_counter(), time.process_time()
    analysis = filt.transform(x, batch)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "neighbour_seconds": neighbours, "neighbour_cpu_seconds": neighbours_cpu,
                  "threads": threads, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rmse_background": float((x.mean(0) - truth).square().mean().sqrt()),
                  "rmse_analysis": float((analysis.mean(0) - truth).square().mean().sqrt())}))
"""


def run_analysis(dim: int, threads: int) -> dict:
    """One LETKF analysis at ``dim`` (N = 20, every variable observed, radius 4): seconds and CPU seconds."""
    proc = subprocess.run([sys.executable, "-c", ANALYSIS_SCRIPT, str(dim), str(threads)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"analysis run failed: {proc.stderr.strip().splitlines()[-1]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_scale(method: str, dim: int, cycles: int, threads: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", SCALE_SCRIPT, method, str(dim), str(cycles), str(threads)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"scale run failed: {proc.stderr.strip().splitlines()[-1]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer cycles and seeds, no dim 10^5")
    parser.add_argument("--settings", default=",".join(SETTINGS),
                        help="comma-separated subset of " + ", ".join([*SETTINGS, *AUDIT_SETTINGS]))
    parser.add_argument("--cycles", type=int, default=None, help="observation times of every setting (default: its own)")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds [1,2,3; --quick: 1,2]")
    parser.add_argument("--no-scale", action="store_true", help="skip the dim 10^4/10^5 runs")
    parser.add_argument("--xps", default=None, help="only the experiments whose label contains this text (e.g. LETKF)")
    parser.add_argument("--analysis-dim", type=int, default=None,
                        help="one LETKF analysis at this dim, N = 20 (default 10^6; --quick: none; 0: none)")
    parser.add_argument("--analysis-threads", type=int, default=2, help="torch threads of that analysis [2]")
    parser.add_argument("--json", help="write the figures as one JSON object")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the scale runs (1: no OpenMP oversubscription on a shared machine)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else ([1, 2] if args.quick else [1, 2, 3])
    summary = {"seeds": seeds, "settings": {}}
    for name in args.settings.split(","):
        setting = dict({**SETTINGS, **AUDIT_SETTINGS}[name])
        if args.xps:
            setting["xps"] = [xp for xp in setting["xps"] if args.xps in xp[0]]
            if not setting["xps"]:
                continue
        cycles = args.cycles or setting["cycles"][1 if args.quick else 0] or 0     # 0: the file's own length
        runs = []
        with tempfile.TemporaryDirectory() as tmp:
            for seed in seeds:
                npz = Path(tmp) / f"{name}_{seed}.npz"
                dapper = run_dapper(setting, cycles, seed, npz)
                runs.append({"seed": seed, "dapper": dapper["xps"], "daflow": run_daflow(setting, npz, seed)})
                summary["dapper_version"] = dapper["dapper_version"]
        print(f"\n{name} ({setting['module']}), {cycles} cycles, seeds {seeds}: analysis RMSE per seed, mean")
        print(f"{'experiment':<28}{'expected':>9}{'DAPPER':>24}{'daflow':>24}{'ratio':>7}")
        figures = {}
        for label, *_, expected in setting["xps"]:
            d = [r["dapper"][label]["rmse"] for r in runs]
            f = [r["daflow"][label]["rmse"] for r in runs]
            ok = None not in d
            errors = {r["dapper"][label]["error"] for r in runs if "error" in r["dapper"][label]}
            ds = [r["dapper"][label].get("spread") for r in runs]
            fs = [r["daflow"][label]["spread"] for r in runs]
            figures[label] = {"expected": expected, "dapper": d, "daflow": f, "dapper_errors": sorted(errors),
                              "dapper_spread": ds, "daflow_spread": fs,
                              "dapper_seconds_per_cycle": float(np.mean([r["dapper"][label]["seconds_per_cycle"] for r in runs])) if ok else None,
                              "daflow_seconds_per_cycle": float(np.mean([r["daflow"][label]["seconds_per_cycle"] for r in runs])),
                              "dapper_cpu_seconds_per_cycle":
                                  float(np.mean([r["dapper"][label]["cpu_seconds_per_cycle"] for r in runs])) if ok else None,
                              "daflow_cpu_seconds_per_cycle": float(np.mean([r["daflow"][label]["cpu_seconds_per_cycle"] for r in runs]))}
            show = lambda v: " ".join(f"{x:.2f}" for x in v) + f" | {np.mean(v):.3f}"  # noqa: E731
            dapper_text, ratio = (show(d), f"{np.mean(f) / np.mean(d):.2f}") if ok else ("failed", "")
            print(f"{label:<28}{'' if expected is None else expected:>9}{dapper_text:>24}{show(f):>24}{ratio:>7}")
            for e in errors:
                print(f"    DAPPER {DAPPER_VERSION} fails here: {e}")
        # DAPPER inflates the analysis (and assesses it after that), daflow the background before the analysis:
        # daflow's analysis spread times the inflation is the figure comparable with DAPPER's.
        if any(None not in fig["daflow_spread"] for fig in figures.values()):
            print(f"analysis spread (DAPPER's spread.rms.a, after its posterior inflation) and spread/skill, means over "
                  f"seeds\n{'experiment':<28}{'DAPPER':>8}{'daflow':>8}{'x infl':>8}{'DAPPER s/s':>12}{'daflow':>8}{'x infl':>8}")
        for (label, *_, options, _), fig in zip(setting["xps"], figures.values()):
            if None in fig["daflow_spread"] or None in fig["dapper"]:
                continue
            d_spread = None if None in fig["dapper_spread"] else float(np.mean(fig["dapper_spread"]))
            f_spread = float(np.mean(fig["daflow_spread"]))
            inflated = f_spread * options.get("inflation", 1.0)
            fig["daflow_spread_times_inflation"] = inflated
            d_text = ("n/a", "") if d_spread is None else (f"{d_spread:.3f}", f"{d_spread / np.mean(fig['dapper']):.2f}")
            skill = float(np.mean(fig["daflow"]))
            print(f"{label:<28}{d_text[0]:>8}{f_spread:>8.3f}{inflated:>8.3f}{d_text[1]:>12}{f_spread / skill:>8.2f}"
                  f"{inflated / skill:>8.2f}")
        summary["settings"][name] = {"cycles": cycles, "xps": figures}
    if "sakov2008" in summary["settings"]:
        print("\nsakov2008 speed (ms per cycle of the assimilation loop), wall | CPU: DAPPER, daflow, speed-up")
        for label in ("ETKF N=24 infl 1.013 rot", "LETKF N=7 infl 1.04 r4 rot"):
            fig = summary["settings"]["sakov2008"]["xps"].get(label)
            if fig is None or fig["dapper_seconds_per_cycle"] is None:
                continue
            d, f = fig["dapper_seconds_per_cycle"], fig["daflow_seconds_per_cycle"]
            dc, fc = fig["dapper_cpu_seconds_per_cycle"], fig["daflow_cpu_seconds_per_cycle"]
            print(f"{label:<28}{1e3 * d:>8.2f}{1e3 * f:>8.3f}{d / f:>7.1f}x |{1e3 * dc:>8.2f}{1e3 * fc:>8.3f}{dc / fc:>7.1f}x")
    if not args.no_scale:
        summary["scale"] = {}
        print(f"\ndaflow at scale (N = 20, every variable observed, {args.threads} thread(s)): seconds per cycle, peak RSS")
        for dim in ([10_000] if args.quick else [10_000, 100_000]):
            for method in ("etkf", "letkf"):
                fig = run_scale(method, dim, 3 if dim > 10_000 else 5, args.threads)
                summary["scale"][f"{method}_{dim}"] = fig
                print(f"{method:<7} dim {dim:>7}: {fig['seconds_per_cycle']:8.3f} s/cycle  {fig['peak_rss_mib']:8.0f} MiB peak")
    analysis_dim = args.analysis_dim if args.analysis_dim is not None else (0 if args.quick else 1_000_000)
    if analysis_dim:
        fig = run_analysis(analysis_dim, args.analysis_threads)
        summary["letkf_analysis"] = {"dim": analysis_dim, **fig}
        print(f"\none LETKF analysis, dim {analysis_dim}, N = 20, {fig['threads']} thread(s): {fig['seconds']:.2f} s "
              f"({fig['cpu_seconds']:.2f} s CPU), neighbour lists {fig['neighbour_seconds']:.2f} s, "
              f"peak {fig['peak_rss_mib']:.0f} MiB; RMSE {fig['rmse_background']:.3f} -> {fig['rmse_analysis']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
