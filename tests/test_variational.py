"""3D-Var and 4D-Var against closed forms: 3D-Var with a linear H is the Kalman/OI mean; the
parametric B's correlations; 4D-Var's adjoint gradient against finite differences and its
tangent-linear/adjoint pair; 4D-Var on a linear model is the Kalman smoother's x_0; DAPPER's
sakov2008 Var3D(xB=0.02) score at reduced length and 4D-Var beating it; bad input through the CLI."""
from __future__ import annotations

import math
import numpy as np
import pytest
import torch
import xarray as xr
from test_filters import GRID, N_STATE, obs_dataset, sakov2008_rmse

from daflow.core.cycle import cycle_windows
from daflow.da.cycle import make_filter, model_forward
from daflow.core.grid import StateGrid
from daflow.core.observations import observation_batches
from daflow.da.var3d import linearise
from daflow.errors import DataError
from daflow.models import get_model
from daflow.models.lorenz import Lorenz96
from daflow.core.state import State

DT = torch.float64


def spd(n, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=g, dtype=DT)
    return a @ a.T / n + 0.1 * torch.eye(n, dtype=DT)


def kalman_mean(xb, B, H, R, y):
    return xb + B @ H.T @ torch.linalg.solve(H @ B @ H.T + R, y - H @ xb)


def selection(index, n):
    H = torch.zeros(len(index), n, dtype=DT)
    H[torch.arange(len(index)), torch.as_tensor(index)] = 1
    return H


@pytest.mark.parametrize("minimizer", ["cg", "lbfgs"])
def test_3dvar_with_linear_h_is_the_kalman_mean(minimizer):
    B = spd(N_STATE, 1)
    index = np.arange(0, N_STATE, 3)
    y = np.linspace(-1, 2, len(index))
    batch = observation_batches(obs_dataset(index, y, error=0.6), GRID)[0]
    g = torch.Generator().manual_seed(2)
    ens = torch.randn(3, N_STATE, generator=g, dtype=DT)          # each member analysed with the same B
    filt = make_filter("3dvar", GRID, covariance=B, b_scale=0.5, minimizer=minimizer)
    analysis, diag = filt.analyse(ens, batch)
    H, R = selection(index, N_STATE), torch.diag(batch.error_std**2)
    expected = torch.stack([kalman_mean(x, 0.5 * B, H, R, batch.value) for x in ens])
    torch.testing.assert_close(analysis, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(diag.analysis_mean, expected.mean(0)[batch.index], rtol=1e-6, atol=1e-6)


def test_3dvar_from_the_flat_tail_of_arctan_finds_the_posterior_mode():
    """x_b = 10 (B = 25, diagonal), y = arctan(1) +- 0.01: the cost's minimiser is near x = 1 (scalar search).
    The tangent at 10 (slope 1/101) leads to x = -59, where arctan is flat again; undamped, Gauss-Newton
    ended tens of spreads away. Damped, each increment halved until the cost falls, it reaches the mode;
    the unobserved variables keep their background (B diagonal)."""
    from scipy.optimize import minimize_scalar

    y, r, xb, sb = math.atan(1.0), 0.01, 10.0, 5.0
    batch = observation_batches(obs_dataset([0], [y], error=r, operator="arctan"), GRID)[0]
    ens = torch.full((1, N_STATE), xb, dtype=DT)
    filt = make_filter("3dvar", GRID, covariance=sb**2 * torch.eye(N_STATE, dtype=DT), outer_loops=30,
                       qc_k=0)                                          # (y is 14 background spreads away)
    analysis, _ = filt.analyse(ens, batch)

    def cost(x):
        return 0.5 * ((x - xb) / sb) ** 2 + 0.5 * ((y - np.arctan(x)) / r) ** 2

    mode = minimize_scalar(cost, bounds=(-60, 60), method="bounded", options={"xatol": 1e-12}).x
    grid = np.linspace(-60, 60, 120001)
    assert abs(mode - grid[np.argmin(cost(grid))]) < 2e-3                    # the global minimiser
    assert float(analysis[0, 0]) == pytest.approx(mode, abs=1e-6)
    torch.testing.assert_close(analysis[0, 1:], ens[0, 1:])


@pytest.mark.parametrize("kind", ["gaussian", "soar"])
def test_parametric_b(kind):
    filt = make_filter("3dvar", GRID, b_std=2.0, b_length=1.5, b_correlation=kind)
    d = N_STATE / np.pi * np.sin(np.pi * np.arange(N_STATE) / N_STATE) / 1.5     # chord of the periodic axis / L
    rho = np.exp(-0.5 * d**2) if kind == "gaussian" else (1 + d) * np.exp(-d)
    np.testing.assert_allclose(filt.B[0].numpy(), 4.0 * rho, rtol=1e-12)
    np.testing.assert_allclose(filt.B[5].numpy(), np.roll(4.0 * rho, 5), rtol=1e-12)
    torch.testing.assert_close(filt.U @ filt.U, filt.B)


def l96_window(window=4, dim=10):
    """A Lorenz-96 start state, its model forward map and a window of arctan observations of half the points."""
    model = get_model("lorenz96", dim=dim)
    g = torch.Generator().manual_seed(0)
    x0 = model.random_state(1, g)
    for _ in range(200):
        x0 = model.step(x0, 0.05)
    grid = StateGrid.from_model(model)
    forward = model_forward(State(model, 0.05, x0, 0.0, False))
    truth = [forward(x0, 2 * (k + 1)) for k in range(window)]
    index = np.arange(0, dim, 2)
    batches = [observation_batches(obs_dataset(index, np.arctan(t[0, index].numpy()) + 0.05, error=0.1,
                                               time=0.1 * (k + 1), operator="arctan"), grid)[0]
               for k, t in enumerate(truth)]
    return grid, forward, x0, batches, [2] * window


def test_4dvar_adjoint_gradient_matches_finite_differences():
    grid, forward, x0, batches, gaps = l96_window()
    filt = make_filter("4dvar", grid, b_std=0.5, b_length=2.0)
    residual, _ = filt.window_functions(x0 + 0.3, batches, gaps, forward)

    def cost(v):
        return 0.5 * (v.square().sum() + residual(v).square().sum())

    g = torch.Generator().manual_seed(5)
    v = 0.3 * torch.randn(1, grid.size, generator=g, dtype=DT).requires_grad_(True)
    grad = torch.autograd.grad(cost(v), v)[0]
    for _ in range(3):
        e = torch.randn(1, grid.size, generator=g, dtype=DT)
        eps = 1e-5
        with torch.no_grad():
            fd = (cost(v + eps * e) - cost(v - eps * e)) / (2 * eps)
        assert float((grad * e).sum()) == pytest.approx(float(fd), rel=1e-7)


@pytest.mark.parametrize("window", [1, 4])
def test_tangent_and_adjoint_agree_explicit_or_matrix_free(window):
    """The explicit Jacobian (reverse mode for 5 observations of 10 variables, forward mode for 20) gives the
    matrix-free tangent-linear and adjoint models' products, and they are transposes."""
    import daflow.da.var3d as var3d

    grid, forward, x0, batches, gaps = l96_window(window)
    residual, _ = make_filter("4dvar", grid, b_std=0.5, b_length=2.0).window_functions(x0 + 0.3, batches, gaps, forward)
    g = torch.Generator().manual_seed(6)
    v, dv = (torch.randn(2, grid.size, generator=g, dtype=DT) for _ in range(2))
    w = torch.randn(2, sum(len(b.index) for b in batches), generator=g, dtype=DT)
    products = []
    for explicit in (True, False):
        saved = var3d.EXPLICIT_JACOBIAN
        var3d.EXPLICIT_JACOBIAN = saved if explicit else 0
        try:
            _, tangent, adjoint = linearise(residual, v)
        finally:
            var3d.EXPLICIT_JACOBIAN = saved
        products.append((tangent(dv), adjoint(w)))
        assert float((tangent(dv) * w).sum()) == pytest.approx(float((dv * adjoint(w)).sum()), rel=1e-10)
    for explicit, matrix_free in zip(*products):
        torch.testing.assert_close(explicit, matrix_free, rtol=1e-10, atol=1e-12)


class LinearModel(Lorenz96):
    """x_{k+1} = A x_k: a linear model on the Lorenz-96 grid (a rotation-like damped mixing)."""

    def __init__(self, dim=N_STATE, **options):
        super().__init__(dim=dim, **options)
        g = torch.Generator().manual_seed(9)
        q = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=DT))[0]
        self.A = 0.97 * q + 0.02 * torch.randn(dim, dim, generator=g, dtype=DT)

    def step(self, x, dt):
        return x @ self.A.T


@pytest.mark.parametrize("minimizer", ["cg", "lbfgs"])
def test_4dvar_on_a_linear_model_is_the_kalman_smoother(minimizer):
    model = LinearModel()
    grid = StateGrid.from_model(model)
    B = spd(N_STATE, 3)
    xb = torch.linspace(-1, 1, N_STATE, dtype=DT)
    gaps = [1, 2, 1]
    index = [np.arange(0, N_STATE, 2), np.arange(1, N_STATE, 3), np.arange(0, N_STATE, 4)]
    values = [np.sin(np.arange(len(i))) for i in index]
    batches = [observation_batches(obs_dataset(i, v, error=0.5 + 0.1 * k, time=0.05 * k), grid)[0]
               for k, (i, v) in enumerate(zip(index, values))]
    filt = make_filter("4dvar", grid, covariance=B, window=3, minimizer=minimizer)
    backgrounds, analyses = filt.analyse_window(xb[None], batches, gaps, model_forward(State(model, 0.05, xb[None], 0.0, False)))
    # Kalman smoother's x_0 given y_1..y_3: stacked G = [H_k A^{t_k}], prior N(xb, B)
    steps = np.cumsum(gaps)
    G = torch.cat([selection(i, N_STATE) @ torch.linalg.matrix_power(model.A, int(s)) for i, s in zip(index, steps)])
    R = torch.diag(torch.cat([b.error_std**2 for b in batches]))
    y = torch.cat([b.value for b in batches])
    x0 = kalman_mean(xb, B, G, R, y)
    for s, a, b in zip(steps, analyses, backgrounds):
        torch.testing.assert_close(a[0], torch.linalg.matrix_power(model.A, int(s)) @ x0, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(b[0], torch.linalg.matrix_power(model.A, int(s)) @ xb)


class FrozenLorenz96(Lorenz96):
    """A model whose step leaves autograd (as a compiled or external model would)."""

    def step(self, x, dt):
        with torch.no_grad():
            return super().step(x, dt)


def test_window_methods_need_a_differentiable_model():
    model = FrozenLorenz96(dim=8)
    with pytest.raises(DataError, match="no differentiable step"):
        model_forward(State(model, 0.05, torch.ones(1, 8, dtype=DT), 0.0, False), "frozen.nc")


class CountingLorenz96(Lorenz96):
    """Counts the steps taken on a state that autograd tracks (the adjoint's work)."""

    tracked = 0

    def step(self, x, dt):
        CountingLorenz96.tracked += x.requires_grad
        return super().step(x, dt)


@pytest.mark.parametrize("lead", [2, 5000])
def test_4dvar_first_window_starts_one_interval_before_its_observations(lead):
    """A state far before the first observation is forecast to one interval before it outside the window:
    the analyses equal those from that forecast, and the adjoint's steps do not grow with the lead (a lead of
    20,000 steps used to take the adjoint through all of them: 10 GB and an OOM kill)."""
    model = CountingLorenz96(dim=8)
    grid = StateGrid.from_model(model)
    truth = model.random_state(1, torch.Generator().manual_seed(4))
    x = truth + 0.5 * torch.randn(2, 8, generator=torch.Generator().manual_seed(5), dtype=DT)
    batches = [observation_batches(obs_dataset(np.arange(0, 8, 2), np.sin(np.arange(4) + k), error=0.5, time=0.1 * k), grid)[0]
               for k in range(4)]
    state = State(model, 0.05, x, 0.0, False)
    filt = make_filter("4dvar", grid, b_std=1.0, b_length=2.0, window=2, outer_loops=1, inner_iterations=5)
    out = [torch.empty(4, 2, 8, dtype=DT) for _ in range(4)]
    CountingLorenz96.tracked = 0
    cycle_windows(state, batches, filt, x, [lead, 2, 2, 2], out[0], out[1])
    tracked = CountingLorenz96.tracked
    start = model_forward(state)(x, lead - 2) if lead > 2 else x
    CountingLorenz96.tracked = 0
    cycle_windows(state, batches, filt, start, [2, 2, 2, 2], out[2], out[3])
    assert tracked == CountingLorenz96.tracked
    torch.testing.assert_close(out[0], out[2], rtol=0, atol=0)
    torch.testing.assert_close(out[1], out[3], rtol=0, atol=0)


def test_bad_var_settings():
    with pytest.raises(ValueError, match="needs a climatology, or b_std and b_length"):
        make_filter("3dvar", GRID)
    with pytest.raises(ValueError, match="b_length must be positive"):
        make_filter("3dvar", GRID, b_std=1.0, b_length=0.0)
    with pytest.raises(ValueError, match="not both"):
        make_filter("3dvar", GRID, covariance=spd(N_STATE, 1), b_std=1.0, b_length=2.0)
    with pytest.raises(ValueError, match="does not take window"):
        make_filter("3dvar", GRID, b_std=1.0, b_length=2.0, window=3)
    with pytest.raises(ValueError, match="oi needs climatology"):
        make_filter("oi", GRID)


def test_dapper_sakov2008_var3d_and_4dvar(tmp_path):
    """DAPPER sakov2008 Var3D(xB=0.02): 0.41; 4D-Var over 5 observation times beats it (reduced length)."""
    clim = sakov2008_climatology()
    v3 = sakov2008_rmse("3dvar", 1, cycles=300, covariance=clim, b_scale=0.02, seed=2)
    v4 = sakov2008_rmse("4dvar", 1, cycles=300, covariance=clim, b_scale=0.02, window=5, seed=2)
    assert v3 <= 0.46
    assert v4 < 0.9 * v3


def sakov2008_climatology(steps=2000):
    model = get_model("lorenz96", dim=40)
    x = model.random_state(1, torch.Generator().manual_seed(11))
    for _ in range(500):
        x = model.step(x, 0.05)
    states = []
    for _ in range(steps):
        x = model.step(x, 0.05)
        states.append(x[0])
    s = torch.stack(states)
    a = s - s.mean(0)
    return a.T @ a / (steps - 1)


@pytest.fixture(scope="module")
def files(tmp_path_factory, daflow_process):
    base = tmp_path_factory.mktemp("var")
    daflow_process("forecast", "--model", "lorenz96", "--param", "dim=8", "--init", "random", "--spinup", "100",
                   "--steps", "0", "--seed", "1", "-o", base / "x0.nc")
    daflow_process("forecast", "--init", base / "x0.nc", "--steps", "6", "-o", base / "truth.nc")
    daflow_process("ingest", base / "truth.nc", "--observe", "--fraction", "0.5", "--error-std", "0.5", "--seed", "2",
                   "-o", base / "obs.nc")
    daflow_process("forecast", "--init", base / "x0.nc", "--steps", "8", "-o", base / "after.nc")
    return base


@pytest.mark.parametrize("method", ["3dvar", "4dvar"])
def test_cycle_and_one_analysis_through_the_cli(files, daflow, tmp_path, method):
    out = tmp_path / "an.nc"
    b = (["--climatology", files / "truth.nc", "--window", "3"] if method == "4dvar"
         else ["--b-std", "1", "--b-length", "2", "--b-correlation", "soar"])
    result = daflow("assimilate", "--method", method, "--init", files / "x0.nc", "--obs", files / "obs.nc", *b,
                    "--save-background", "-o", out)
    assert result.exit_code == 0, result.output
    an = xr.open_dataset(out)
    assert an.sizes["time"] == 7 and an.sizes["obs"] == 28 and np.isfinite(an["obs_oma"]).all()
    assert float(np.abs(an["obs_oma"]).mean()) < float(np.abs(an["obs_omb"]).mean())
    one = daflow("assimilate", "--method", method, "--background", files / "x0.nc", "--obs", files / "obs.nc",
                 "--b-std", "1", "--b-length", "2", "-o", tmp_path / "one.nc")
    assert one.exit_code == 0, one.output
    one = xr.open_dataset(tmp_path / "one.nc")
    assert one.sizes["time"] == (5 if method == "4dvar" else 1)
    np.testing.assert_allclose(one["obs_omb"], one["obs_value"] - one["obs_background_mean"])


@pytest.mark.parametrize("problem, code", [("one-time climatology", 65), ("zero length", 2), ("negative length", 2),
                                           ("zero std", 2), ("negative std", 2), ("zero b-scale", 2), ("no B", 2),
                                           ("empty window", 65), ("window on 3dvar", 2), ("zero window", 2)])
def test_bad_input(files, daflow, tmp_path, problem, code):
    args = ["assimilate", "--method", "4dvar", "--init", files / "x0.nc", "--obs", files / "obs.nc"]
    if problem == "one-time climatology":
        args += ["--climatology", files / "x0.nc"]
    elif problem == "zero length":
        args += ["--b-std", "1", "--b-length", "0"]
    elif problem == "negative length":
        args += ["--b-std", "1", "--b-length", "-2"]
    elif problem in ("zero std", "negative std"):
        args += ["--b-std", "0" if problem == "zero std" else "-1", "--b-length", "2"]
    elif problem == "zero b-scale":
        args += ["--climatology", files / "truth.nc", "--b-scale", "0"]
    elif problem == "empty window":
        args = ["assimilate", "--method", "4dvar", "--background", files / "after.nc", "--obs", files / "obs.nc",
                "--b-std", "1", "--b-length", "2"]
    elif problem == "window on 3dvar":
        args[2] = "3dvar"
        args += ["--b-std", "1", "--b-length", "2", "--window", "2"]
    elif problem == "zero window":
        args += ["--b-std", "1", "--b-length", "2", "--window", "0"]
    out = tmp_path / "an.nc"
    result = daflow(*args, "-o", out)
    assert result.exit_code == code, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 if code != 2 else sum(line.startswith("Error:") for line in lines) == 1, result.output
    assert not out.exists()


def test_climatology_states_holding_nan_are_left_out_of_b_with_a_warning():
    """One NaN in 600 states made the whole climatology 'needs at least two finite states' (exit 65)."""
    import warnings

    from daflow.da.cycle import covariance_from_dataset
    from daflow.errors import DaflowWarning, DataError

    rng = np.random.default_rng(0)
    values = rng.normal(size=(50, N_STATE))
    ds = xr.Dataset({GRID.variable: (("time", *GRID.dims), values.reshape(50, *GRID.shape))}, coords={"time": np.arange(50.0)})
    holed = ds.copy(deep=True)
    holed[GRID.variable][7] = np.nan
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        B = covariance_from_dataset(holed, GRID, torch.float64)
    assert any(issubclass(w.category, DaflowWarning) and "left 1 of 50 states" in str(w.message) for w in caught)
    expected = np.cov(np.delete(values, 7, axis=0), rowvar=False)
    np.testing.assert_allclose(B.numpy(), expected, rtol=1e-10, atol=1e-12)
    with pytest.raises(DataError, match=r"\(1 of 50 are\)"):
        covariance_from_dataset(holed.where(holed.time == 3), GRID, torch.float64)


def test_3dvar_analyses_one_deterministic_gridded_forecast(daflow, tmp_path):
    """A single forecast on a lat/lon grid (an ingested GRIB, no member dimension) was refused with 'the ensemble
    methods need an ensemble', even for 3D-Var. With a correlation length far below the grid spacing B is
    diagonal, so the analysis is (b^2 y + r^2 x_b) / (b^2 + r^2) at the observed points and x_b elsewhere."""
    from daflow.io.contract import write_dataset

    lat, lon = np.arange(50.0, 54.0), np.arange(-2.0, 3.0)
    xb = 280 + np.arange(20.0).reshape(1, 4, 5)
    when = np.array(["2019-03-05T06:00"], dtype="datetime64[ns]")
    write_dataset(xr.Dataset({"t2m": (("time", "lat", "lon"), xb)}, coords={"time": when, "lat": lat, "lon": lon}),
                  tmp_path / "fc.nc", "state")
    at = [(0, 0), (2, 3), (3, 4)]
    y = np.array([275.0, 290.0, 301.0])
    obs = xr.Dataset({"value": ("obs", y), "error_std": ("obs", np.ones(3)), "time": ("obs", np.repeat(when, 3)),
                      "variable": ("obs", np.array(["t2m"] * 3, dtype=object)), "operator": ("obs", np.array(["identity"] * 3, dtype=object)),
                      "qc": ("obs", np.zeros(3, np.int8)), "lat": ("obs", [lat[i] for i, _ in at]), "lon": ("obs", [lon[j] for _, j in at])})
    write_dataset(obs, tmp_path / "obs.nc", "observations")
    result = daflow("assimilate", "--method", "3dvar", "--background", tmp_path / "fc.nc", "--obs", tmp_path / "obs.nc",
                    "--b-std", 2, "--b-length", 1, "-o", tmp_path / "an.nc")
    assert result.exit_code == 0, result.output
    an = xr.open_dataset(tmp_path / "an.nc")["t2m"].values.reshape(4, 5)
    expected = xb[0].copy()
    for (i, j), value in zip(at, y):
        expected[i, j] = (4 * value + xb[0, i, j]) / 5
    np.testing.assert_allclose(an, expected, atol=1e-6)
    result = daflow("assimilate", "--method", "enkf-n", "--background", tmp_path / "fc.nc", "--obs", tmp_path / "obs.nc",
                    "-o", tmp_path / "e.nc")
    assert result.exit_code == 65 and "has 1 member(s); enkf-n needs at least 2" in result.output


def test_4dvar_of_a_gridded_field_without_a_model_is_bad_input(daflow, tmp_path):
    """A background read without its model (an ingested field, a storm forecast: no daflow_model attributes)
    cannot be stepped through a 4D-Var window: exit 65, one line, nothing written. It stopped with exit 70
    (ZeroDivisionError: the steps between observation times divided by the field's dt of 0)."""
    from daflow.io.contract import write_dataset

    lat, lon = np.arange(50.0, 53.0), np.arange(-2.0, 2.0)
    when = np.array(["2019-03-05T06:00", "2019-03-05T12:00"], dtype="datetime64[ns]")
    write_dataset(xr.Dataset({"t2m": (("time", "lat", "lon"), 280 + np.arange(24.0).reshape(2, 3, 4))},
                             coords={"time": when, "lat": lat, "lon": lon}), tmp_path / "fc.nc", "state")
    obs = xr.Dataset({"value": ("obs", [281.0, 290.0]), "error_std": ("obs", np.ones(2)), "time": ("obs", when),
                      "variable": ("obs", np.array(["t2m"] * 2, dtype=object)),
                      "operator": ("obs", np.array(["identity"] * 2, dtype=object)), "qc": ("obs", np.zeros(2, np.int8)),
                      "lat": ("obs", [50.0, 52.0]), "lon": ("obs", [-2.0, 1.0])})
    write_dataset(obs, tmp_path / "obs.nc", "observations")
    out = tmp_path / "an.nc"
    result = daflow("assimilate", "--method", "4dvar", "--background", tmp_path / "fc.nc", "--obs", tmp_path / "obs.nc",
                    "--b-std", 2, "--b-length", 100, "--window", 2, "-o", out)
    assert result.exit_code == 65, result.output
    assert len(result.output.strip().splitlines()) == 1 and "has no model to step" in result.output
    assert not out.exists()


@pytest.mark.parametrize("kind", ["gaussian", "soar"])
def test_parametric_b_on_the_sphere_is_positive_definite_and_3dvar_is_the_kalman_mean(kind):
    """On a 9 x 18 global grid with a 6000 km length: B is rho(chord / L), the chord through the Earth, whose
    Gaussian and SOAR are positive definite; 3D-Var with a linear H is then the Kalman mean with that B.
    With the great-circle distance B had negative eigenvalues (-0.05 of 86 for SOAR) that its square root
    dropped, and the analysis was 0.77 K away from the Kalman mean (0.07 K for the Gaussian)."""
    from daflow.core.grid import EARTH_RADIUS_KM

    lat, lon = np.linspace(-80, 80, 9), np.arange(0, 360, 20.0)
    grid = StateGrid("t2m", ("lat", "lon"), (9, 18), {"lat": lat, "lon": lon})
    filt = make_filter("3dvar", grid, b_std=2.0, b_length=6000.0, b_correlation=kind, qc_k=0)
    la, lo = (np.radians(v).ravel() for v in np.meshgrid(lat, lon, indexing="ij"))
    xyz = EARTH_RADIUS_KM * np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], 1)
    r = np.linalg.norm(xyz[:, None] - xyz[None], axis=-1) / 6000.0
    rho = np.exp(-0.5 * r**2) if kind == "gaussian" else (1 + r) * np.exp(-r)
    np.testing.assert_allclose(filt.B.numpy(), 4.0 * rho, rtol=1e-10, atol=1e-12)
    lam = torch.linalg.eigvalsh(filt.B)
    assert float(lam.min()) >= -1e-12 * float(lam.max())
    index = np.arange(0, grid.size, 3)
    n = len(index)
    obs = xr.Dataset({"value": ("obs", 280 + 3 * np.sin(np.arange(n))), "error_std": ("obs", np.full(n, 0.5)),
                      "time": ("obs", np.zeros(n)), "variable": ("obs", np.full(n, "t2m", dtype=object)),
                      "operator": ("obs", np.full(n, "identity", dtype=object)), "qc": ("obs", np.zeros(n, np.int8)),
                      "lat": ("obs", np.degrees(la[index])), "lon": ("obs", np.degrees(lo[index]))})
    batch = observation_batches(obs, grid)[0]
    np.testing.assert_array_equal(batch.index.numpy(), index)
    xb = torch.full((1, grid.size), 280.0, dtype=DT)
    analysis, _ = filt.analyse(xb, batch)
    expected = kalman_mean(xb[0], filt.B, selection(index, grid.size), torch.diag(batch.error_std**2), batch.value)
    torch.testing.assert_close(analysis[0], expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("method, b", [("3dvar", "parametric"), ("4dvar", "climatology"), ("oi", "climatology")])
def test_a_state_too_large_for_a_dense_b_is_bad_input_naming_the_method(daflow, tmp_path, method, b):
    """Above MAX_STATE values B (n x n) is not built: exit 65 naming the state file and the method, for a parametric
    B as for a climatology. The parametric case ended as a usage error blaming --method (exit 2), the climatology's
    named OI whatever the method."""
    from daflow.da.var3d import MAX_STATE

    x0 = tmp_path / "x0.nc"
    assert daflow("forecast", "--model", "lorenz96", "--param", f"dim={MAX_STATE + 1}", "--init", "random", "--spinup", "0",
                  "--steps", "1", "-o", x0).exit_code == 0
    assert daflow("ingest", x0, "--observe", "--fraction", "0.001", "--error-std", "1", "--seed", "1",
                  "-o", tmp_path / "obs.nc").exit_code == 0
    options = ["--b-std", "1", "--b-length", "2"] if b == "parametric" else ["--climatology", x0]
    out = tmp_path / "an.nc"
    result = daflow("assimilate", "--method", method, "--init", x0, "--obs", tmp_path / "obs.nc", *options, "-o", out)
    assert result.exit_code == 65, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert f"x0.nc: method {method} needs a dense B" in result.output, result.output
    assert not out.exists()


def test_4dvar_applies_the_background_check_of_every_method():
    """A wild value (1e6) at the second of three observation times is rejected against the background trajectory,
    as 3D-Var and the filters reject it: the window's analysis is the one without that observation. 4D-Var had no
    check: the value went into J and the analysis was 54 away from the truth. A time whose observations are all
    rejected adds nothing; with every one rejected the analysis is the background."""
    model = get_model("lorenz96", dim=8)
    grid = StateGrid.from_model(model)
    x0 = model.random_state(1, torch.Generator().manual_seed(1))
    forward = model_forward(State(model, 0.05, x0, 0.0, False))
    index = np.arange(0, 8, 2)
    values = [forward(x0, k + 1)[0, index].numpy() + 0.1 for k in range(3)]

    def batches(wild, keep=slice(None)):
        out = []
        for k, v in enumerate(values):
            v = v.copy()
            if k in wild:
                v[2] = 1e6
            out.append(observation_batches(obs_dataset(index[keep if k in wild else slice(None)],
                                                       v[keep if k in wild else slice(None)], error=0.5,
                                                       time=0.05 * (k + 1)), grid)[0])
        return out

    ens = x0 + 0.5 * torch.randn(3, 8, generator=torch.Generator().manual_seed(2), dtype=DT)
    filt = make_filter("4dvar", grid, window=3, b_std=1.0, b_length=2.0)
    _, checked = filt.analyse_window(ens, batches({1}), [1, 1, 1], forward)
    assert filt.rejected_rows().tolist() == [2]
    _, without = make_filter("4dvar", grid, window=3, b_std=1.0, b_length=2.0).analyse_window(
        ens, batches({1}, keep=[0, 1, 3]), [1, 1, 1], forward)
    for a, b in zip(checked, without):
        torch.testing.assert_close(a, b)
    _, unchecked = make_filter("4dvar", grid, window=3, b_std=1.0, b_length=2.0, qc_k=0).analyse_window(
        ens, batches({1}), [1, 1, 1], forward)
    assert float((unchecked[1] - checked[1]).abs().max()) > 1.0
    every = batches({0, 1, 2}, keep=[2])                                       # one wild observation per time
    backgrounds, analyses = make_filter("4dvar", grid, window=3, b_std=1.0, b_length=2.0).analyse_window(
        ens, every, [1, 1, 1], forward)
    for a, b in zip(analyses, backgrounds):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("option, value", [("--inflation", "1.5"), ("--rtps", "0.9")])
def test_4dvar_refuses_inflation_and_rtps_instead_of_ignoring_them(files, daflow, tmp_path, option, value):
    """Its windows apply neither (static B): the output was identical with or without them."""
    out = tmp_path / "an.nc"
    result = daflow("assimilate", "--method", "4dvar", "--init", files / "x0.nc", "--obs", files / "obs.nc",
                    "--b-std", "1", "--b-length", "2", option, value, "-o", out)
    assert result.exit_code == 2, result.output
    assert f"Error: {option}: method 4dvar: 4dvar takes no {option[2:]}" in result.output
    assert not out.exists()


@pytest.mark.parametrize("method", ["3dvar", "4dvar"])
def test_each_member_is_analysed_as_if_alone_with_a_nonlinear_h(method):
    """Members are independent minimisations: an ensemble's analysis (arctan observations, precise enough to make
    J non-quadratic) is each member's analysis on its own, and (3D-Var) a stationary point of J. The explicit
    Jacobian was built member by member from residual(u[None])[0], i.e. with member 0's background for every
    member: exact for a linear H, but with arctan members 1 and 2 stalled at |grad J| 1.4 (3D-Var, Lorenz-96/40)."""
    grid, forward, x0, batches, gaps = l96_window(window=3, dim=10)
    ens = x0 + 0.8 * torch.randn(3, 10, generator=torch.Generator().manual_seed(8), dtype=DT)
    options = dict(b_std=1.0, b_length=2.0, outer_loops=20, qc_k=0)

    def run(x):
        if method == "3dvar":
            return make_filter("3dvar", grid, **options).analyse(x, batches[0])[0]
        return make_filter("4dvar", grid, window=3, **options).analyse_window(x, batches, gaps, forward)[1][-1]

    together = run(ens)
    for m in range(3):
        torch.testing.assert_close(together[m], run(ens[m:m + 1])[0], rtol=1e-6, atol=1e-6)
    if method == "3dvar":
        U, batch = make_filter("3dvar", grid, **options).U, batches[0]
        v = torch.linalg.solve(U, (together - ens).mT).mT.clone().requires_grad_(True)
        cost = 0.5 * (v.square().sum() + ((batch.value - batch.apply(ens + v @ U)) / batch.error_std).square().sum())
        assert float(torch.autograd.grad(cost, v)[0].norm(dim=1).max()) < 1e-3   # (Gauss-Newton: linear rate)


def test_4dvar_default_outer_loops_converge_on_a_nonlinear_window():
    """Lorenz-96/40 observed every 4 steps over a window of 4 (0.8 time units, Bocquet & Sakov 2013's dto 0.2),
    background 1.5 off: the default settings reach a near-stationary J (|grad J| 0.08). The default of 3 outer loops
    stopped at |grad J| 114 (J 230 against 116); on DAPPER's sakov2008_dto02 Lag=4 truths that left some windows
    unconverged and the cycled RMSE at 0.50-0.58 instead of 0.32 (benchmarks/README.md, hidden-case audit).
    The default is now DAPPER's Var4D nIter, 10; a converged minimisation stops earlier."""
    from daflow.da.var3d import minimise

    model = get_model("lorenz96", dim=40)
    grid = StateGrid.from_model(model)
    x0 = model.random_state(1, torch.Generator().manual_seed(0))
    for _ in range(300):
        x0 = model.step(x0, 0.05)
    forward = model_forward(State(model, 0.05, x0, 0.0, False))
    rng = np.random.default_rng(0)
    batches = [observation_batches(obs_dataset(np.arange(40), forward(x0, 4 * (k + 1))[0].numpy() + rng.standard_normal(40),
                                               error=1.0, time=0.2 * (k + 1)), grid)[0] for k in range(4)]
    xb = x0 + 1.5 * torch.randn(1, 40, generator=torch.Generator().manual_seed(0), dtype=DT)
    filt = make_filter("4dvar", grid, b_std=1.5, b_length=2.0, window=4, qc_k=0)
    residual, _ = filt.window_functions(xb, batches, [4] * 4, forward)
    v = minimise(filt.settings, residual, torch.zeros_like(xb)).requires_grad_(True)
    gradient = torch.autograd.grad(0.5 * (v.square().sum() + residual(v).square().sum()), v)[0]
    assert float(gradient.norm()) < 1.0
