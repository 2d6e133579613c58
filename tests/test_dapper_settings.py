"""DAPPER's suggested-tuning scores on its other settings (issue 15), at reduced length, through the
library: Lorenz63/sakov2012 (dt 0.01, observed every 25 steps, R = 2 I, X0 = N(x0, 2 I)),
Lorenz63/anderson2010rhf (every 12 steps, R = 8 I) and Lorenz96/bocquet2010 (10 variables, every
other one observed, R = 1.5), Lorenz96/bocquet2010_m40 (the same with 40) and Lorenz96/todter2015
(80 variables, every other one observed every 2 steps). Each bound is DAPPER's published rmse.a + 10%; benchmarks/
lorenz_dapper.py runs the full-length side-by-side comparison on DAPPER's own truth."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

from daflow.core.cycle import cycle
from daflow.core.grid import StateGrid
from daflow.core.state import State, advance, integrate
from daflow.da.cycle import make_filter
from daflow.models import get_model


def dapper_rmse(model_name, method, members, cycles, every, dt, r, observed, x0_var, burn_in, truth_seed, dim=None,
                **options):
    """Analysis RMSE (time mean of the instantaneous RMSE after ``burn_in`` cycles), truth and obs drawn here."""
    model = get_model(model_name, **({"dim": dim} if dim else {}))
    grid = StateGrid.from_model(model)
    g = torch.Generator().manual_seed(truth_seed)
    x0 = advance(model, model.random_state(1, g), dt, 2000)
    truth = integrate(model, x0, dt, cycles * every, output_every=every)[:, 0]                 # (cycles + 1, n)
    times = np.arange(1, cycles + 1) * every * dt
    noise = torch.randn(cycles, len(observed), generator=g, dtype=torch.float64).numpy() * np.sqrt(r)
    values = truth[1:, observed].numpy() + noise
    obs = xr.Dataset({"value": ("obs", values.ravel()), "error_std": ("obs", np.full(values.size, np.sqrt(r))),
                      "time": ("obs", np.repeat(times, len(observed))), "i": ("obs", np.tile(observed, cycles)),
                      "variable": ("obs", np.full(values.size, "x", dtype=object)),
                      "operator": ("obs", np.full(values.size, "identity", dtype=object))})
    ens = x0 + np.sqrt(x0_var) * torch.randn(members, x0.shape[1], generator=g, dtype=torch.float64)
    # At daflow's defaults, background check included (DAPPER has none), as a new user runs them: before the
    # check took its robust scale from batches of 3, it rejected 5 good observations on sakov2012's truth 1
    # and the ETKF lost track (0.92 against 0.68).
    out = cycle(State(model, dt, ens, 0.0, True), obs, make_filter(method, grid, **options))
    err = out["x"].mean("member").values - truth[1:].numpy()
    return np.sqrt((err**2).mean(-1))[burn_in:].mean()


def sakov2012(method, members, truth_seed, **options):
    return dapper_rmse("lorenz63", method, members, cycles=600, every=25, dt=0.01, r=2.0, observed=[0, 1, 2],
                       x0_var=2.0, burn_in=64, truth_seed=truth_seed, **options)


@pytest.mark.parametrize("method, members, options, published", [
    ("etkf", 10, dict(inflation=1.02, rotate=True), 0.60),
    ("enkf-n", 10, dict(rotate=True), 0.54),
])
def test_lorenz63_sakov2012(method, members, options, published):
    """Two seeds averaged: L63 errors are intermittent, one 600-cycle run varies by about 10%."""
    rmse = np.mean([sakov2012(method, members, truth_seed, seed=3, **options) for truth_seed in (1, 2)])
    assert rmse <= 1.1 * published


def test_lorenz63_anderson2010rhf_enkf_n():
    rmse = dapper_rmse("lorenz63", "enkf-n", 20, cycles=400, every=12, dt=0.01, r=8.0, observed=[0, 1, 2],
                       x0_var=2.0, burn_in=100, truth_seed=1, seed=1, rotate=True)
    assert rmse <= 1.1 * 0.87


def test_lorenz96_bocquet2010_enkf_n():
    rmse = dapper_rmse("lorenz96", "enkf-n", 8, cycles=800, every=1, dt=0.05, r=1.5, observed=np.arange(0, 10, 2),
                       x0_var=0.001, burn_in=200, truth_seed=1, seed=1, dim=10, rotate=True, xn=1.3)
    assert rmse <= 1.1 * 0.31


def test_lorenz96_bocquet2010_m40_enkf_n():
    """The file says 0.38; DAPPER 1.7.1 itself gives 0.459 and 0.465 on its own truths (seeds 1, 2, the file's
    1279 cycles), so the bound is 10% above DAPPER's measured 0.46. Two truths: one run varies by ~5%."""
    rmse = np.mean([dapper_rmse("lorenz96", "enkf-n", 24, cycles=800, every=1, dt=0.05, r=1.5,
                                observed=np.arange(0, 40, 2), x0_var=0.001, burn_in=200, truth_seed=truth_seed, seed=1,
                                dim=40, rotate=True, inflation=1.01) for truth_seed in (1, 2)])
    assert rmse <= 1.1 * 0.46


def test_lorenz96_todter2015_letkf():
    """DAPPER's file draws Laplace observation errors (variance 1); here they are Gaussian with the same variance."""
    rmse = dapper_rmse("lorenz96", "letkf", 20, cycles=600, every=2, dt=0.05, r=1.0, observed=np.arange(0, 80, 2),
                       x0_var=0.001, burn_in=150, truth_seed=1, dim=80, inflation=1.04, loc_radius=5)
    assert rmse <= 1.1 * 0.44
