"""Classical filters: Kalman-filter oracles, localisation, inflation/RTPS, DAPPER's published
numbers, observation checks and `daflow assimilate` error paths through the real CLI."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import xarray as xr
from click.testing import CliRunner

from daflow.da import FILTERS
from daflow.da import base
from daflow.da.base import mean_preserving_rotation, relax_to_prior_spread
from daflow.core.cycle import cycle
from daflow.core.state import State
from daflow.da.cycle import make_filter
from daflow.da.localization import gaspari_cohn, local_observations
from daflow.core.grid import StateGrid
from daflow.core.observations import ObsBatch, observation_batches
from daflow.errors import DataError
from daflow.models import get_model
from daflow.core.state import advance, integrate
from daflow.obs.synthetic import observe
from daflow_cli.main import main

N_STATE, MEMBERS = 12, 8
GRID = StateGrid("x", ("i",), (N_STATE,), {"i": np.arange(N_STATE)})


def obs_dataset(index, value, error=1.0, time=0.0, variable="x", operator="identity"):
    n = len(index)
    return xr.Dataset({"value": ("obs", np.asarray(value, float)), "error_std": ("obs", np.full(n, error)),
                       "time": ("obs", np.full(n, time)), "i": ("obs", np.asarray(index)),
                       "variable": ("obs", np.full(n, variable, dtype=object)),
                       "operator": ("obs", np.full(n, operator, dtype=object)), "qc": ("obs", np.zeros(n, np.int8))})


@pytest.fixture
def case():
    g = torch.Generator().manual_seed(0)
    ens = 3 + torch.randn(MEMBERS, N_STATE, generator=g, dtype=torch.float64) @ torch.randn(N_STATE, N_STATE, generator=g, dtype=torch.float64) * 0.3
    index = np.arange(0, N_STATE, 2)
    batch = observation_batches(obs_dataset(index, np.linspace(1, 4, len(index)), error=0.7), GRID)[0]
    return ens, batch


def kalman(ens, batch):
    """Mean and covariance from the Kalman filter with the sample covariance P (H a selection)."""
    m = ens.mean(0)
    A = ens - m
    P = A.T @ A / (ens.shape[0] - 1)
    H = torch.zeros(len(batch.index), N_STATE, dtype=ens.dtype)
    H[torch.arange(len(batch.index)), batch.index] = 1
    R = torch.diag(batch.error_std**2)
    K = P @ H.T @ torch.linalg.inv(H @ P @ H.T + R)
    return m + K @ (batch.value - H @ m), (torch.eye(N_STATE, dtype=ens.dtype) - K @ H) @ P


def sample_cov(x):
    A = x - x.mean(0)
    return A.T @ A / (x.shape[0] - 1)


def test_etkf_is_the_kalman_filter_in_mean_and_covariance(case):
    ens, batch = case
    analysis, diag = make_filter("etkf", GRID).analyse(ens, batch)
    mean, cov = kalman(ens, batch)
    torch.testing.assert_close(analysis.mean(0), mean)
    torch.testing.assert_close(sample_cov(analysis), cov)
    torch.testing.assert_close(diag.analysis_mean, mean[batch.index])


def test_a_huge_etkf_is_the_kalman_filter_and_equals_the_eigh_route(case, monkeypatch):
    """20,000 members (more than THIN_MEMBERS and than the 6 observations) take the thin SVD of S: still the Kalman
    filter of the sample covariance in mean and covariance, in milliseconds (the N x N G and its eigh took minutes
    and 3 GB); 300 members give the eigh route's analysis to rounding, with and without rotation (whose N x N
    orthogonal draw, as DAPPER's, is what remains cubic in N)."""
    from daflow.da import etkf

    ens, batch = case
    g = torch.Generator().manual_seed(3)
    spread = torch.linalg.cholesky(sample_cov(ens) + 0.1 * torch.eye(N_STATE, dtype=torch.float64))
    huge = ens.mean(0) + torch.randn(20_000, N_STATE, generator=g, dtype=torch.float64) @ spread.T
    analysis, _ = make_filter("etkf", GRID).analyse(huge, batch)
    mean, cov = kalman(huge, batch)
    torch.testing.assert_close(analysis.mean(0), mean)
    torch.testing.assert_close(sample_cov(analysis), cov)
    some = huge[:300]
    for options in ({}, dict(rotate=True, seed=4)):
        thin, _ = make_filter("etkf", GRID, **options).analyse(some, batch)
        with monkeypatch.context() as patch:
            patch.setattr(etkf, "THIN_MEMBERS", 10**9)
            eigh, _ = make_filter("etkf", GRID, **options).analyse(some, batch)
        torch.testing.assert_close(thin, eigh, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("error", [1e-4, 1e-8, 1e-10])
@pytest.mark.parametrize("method", ["etkf", "letkf"])
def test_precise_observations_give_the_kalman_mean(case, method, error):
    """Observation errors down to 1e-10 of the spread: G = (N - 1) I + S S^T spans up to 20 orders of magnitude.
    The analysis is still the Kalman mean solved in observation space, and its spread at the observed points
    the error. Before, the null direction's eigenvalue came out negative at 1e-8 (a NaN analysis), and the
    rounding of S d along it moved unobserved points by up to 2 at 1e-8 and by thousands at 1e-10."""
    ens, batch = case
    precise = dataclasses.replace(batch, error_std=torch.full_like(batch.error_std, error))
    options = {"loc_radius": 1e9} if method == "letkf" else {}
    analysis, _ = make_filter(method, GRID, qc_k=0, **options).analyse(ens, precise)
    mean, _ = kalman(ens, precise)
    torch.testing.assert_close(analysis.mean(0), mean, rtol=0, atol=1e-9)
    torch.testing.assert_close(analysis[:, batch.index].std(0), torch.full((len(batch.index),), error, dtype=ens.dtype),
                               rtol=1e-4, atol=0)


@pytest.mark.parametrize("method", ["etkf", "letkf"])
def test_float32_ensemble_gets_float64_weights(case, method):
    """A float32 state with observations 1e-3 of the spread (G's eigenvalues up to ~1e6): the analysis equals the
    float64 one to float32 rounding, spread included. The weights came from a float32 eigh before, 6-23% off
    on the SQG LETKF with arctan observations, whose tuned setting then diverged."""
    ens, batch = case
    precise = dataclasses.replace(batch, error_std=torch.full_like(batch.error_std, 1e-3))
    options = {"loc_radius": 3.0} if method == "letkf" else {}
    exact, _ = make_filter(method, GRID, qc_k=0, **options).analyse(ens, precise)
    single = dataclasses.replace(precise, value=precise.value.float(), error_std=precise.error_std.float())
    analysis, _ = make_filter(method, GRID, qc_k=0, **options).analyse(ens.float(), single)
    assert analysis.dtype == torch.float32
    torch.testing.assert_close(analysis.double(), exact, rtol=0, atol=2e-5)
    torch.testing.assert_close(analysis.double().std(0), exact.std(0), rtol=1e-2, atol=2e-5)


def test_rotation_keeps_mean_and_covariance(case):
    ens, batch = case
    plain, _ = make_filter("etkf", GRID).analyse(ens, batch)
    rotated, _ = make_filter("etkf", GRID, rotate=True, seed=1).analyse(ens, batch)
    torch.testing.assert_close(rotated.mean(0), plain.mean(0))
    torch.testing.assert_close(sample_cov(rotated), sample_cov(plain))
    assert not torch.allclose(rotated, plain)
    Q = mean_preserving_rotation(5, torch.Generator().manual_seed(0), torch.float64)
    torch.testing.assert_close(Q @ Q.T, torch.eye(5, dtype=torch.float64))
    torch.testing.assert_close(Q @ torch.ones(5, dtype=torch.float64), torch.ones(5, dtype=torch.float64))


def test_letkf_without_localisation_is_the_etkf(case):
    ens, batch = case
    etkf, _ = make_filter("etkf", GRID).analyse(ens, batch)
    letkf, _ = make_filter("letkf", GRID, loc_radius=1e9).analyse(ens, batch)
    torch.testing.assert_close(letkf, etkf)


@pytest.mark.parametrize("dtype, exact", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_inverse_sqrt_times_applies_a_square_root_of_the_inverse(dtype, exact):
    """R^T V for V = I gives R^T: R^T G R = I to the dtype's precision (G used exactly through S, no
    G in float64), R within float32 rounding of the symmetric G^{-1/2}; a too ill-conditioned G: None."""
    g = torch.Generator().manual_seed(11)
    batch, obs, members = 300, 25, 20
    S = (torch.randn(batch, obs, members, generator=g, dtype=torch.float64) * 0.7).to(dtype)
    G = (S.mT @ S).double() + (members - 1.0) * torch.eye(members, dtype=torch.float64)
    eye = torch.eye(members, dtype=dtype).expand(batch, -1, -1).contiguous()
    R = base.inverse_sqrt_times(S, members - 1.0, eye).mT.double()
    torch.testing.assert_close(R.mT @ G @ R, torch.eye(members, dtype=torch.float64).expand_as(G), rtol=0, atol=exact)
    value, vectors = torch.linalg.eigh(G)
    torch.testing.assert_close(R, vectors @ torch.diag_embed(value.rsqrt()) @ vectors.mT, rtol=0, atol=1e-6)
    thin = torch.randn(batch, members, 3, generator=g, dtype=torch.float64).to(dtype)
    torch.testing.assert_close(base.inverse_sqrt_times(S, members - 1.0, thin), (R.mT @ thin.double()).to(dtype))
    assert base.inverse_sqrt_times(S * 1e4, members - 1.0, eye) is None                # (S^T S)^2 overflows float32


def test_inverse_sqrt_times_gives_up_on_a_spectrum_that_rounds_away_the_floor():
    """S^T S = 1.2e9 v v^T: in float32 c = bound / 2 + 19 rounds to bound / 2, the bound on the first error
    was exactly 1, and counting the iterations it would need never ended (an LETKF with observation errors
    1e-4 of the spread hung). Now: None, and the LETKF takes eigh."""
    g = torch.Generator().manual_seed(1)
    u = torch.nn.functional.normalize(torch.randn(8, 25, 1, generator=g, dtype=torch.float64), dim=1)
    v = torch.nn.functional.normalize(torch.randn(8, 1, 20, generator=g, dtype=torch.float64), dim=2)
    eye = torch.eye(20, dtype=torch.float64).expand(8, -1, -1).contiguous()
    assert base.inverse_sqrt_times(u @ v * 1.2e9 ** 0.5, 19.0, eye) is None


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dims, shape", [(("i",), (1100,)), (("level", "y", "x"), (2, 24, 48))])
def test_letkf_newton_schulz_analysis_equals_the_eigendecomposition(threads, dims, shape):
    """Many columns with N = 20: the fused per-chunk analysis (Newton-Schulz R, R R^T = G^{-1}, applied to the
    anomalies) equals the analysis from every column's eigh weights W^T A to float32 rounding of the square
    root, and its spread to float64 rounding, on a line and on levels of a plane, in chunks shared among
    threads; the last columns, observed with errors 10^-4, are too ill-conditioned for the iteration and
    their chunk takes eigh (the same to float64 rounding)."""
    grid = StateGrid("x", dims, shape, {d: np.arange(n) for d, n in zip(dims, shape)})
    g = torch.Generator().manual_seed(5)
    members, n = 20, grid.size
    ens = torch.randn(members, n, generator=g, dtype=torch.float64) + torch.randn(n, generator=g, dtype=torch.float64)
    index = torch.from_numpy(np.sort(np.random.default_rng(0).choice(n, n // 2, replace=False)))
    columns = index.numpy() % grid.columns
    error = torch.where(torch.from_numpy(columns >= grid.columns - 40), 1e-4, 0.8).to(torch.float64)
    batch = ObsBatch(0.0, np.arange(len(index)), torch.randn(len(index), generator=g, dtype=torch.float64),
                     error, index, columns, [(lambda at: at, None)])
    filt = make_filter("letkf", grid, loc_radius=3.0)
    assert base.uses_newton_schulz(grid.columns, members)
    hx = batch.apply(ens)
    S, d = base.normalised_departures(hx, batch)
    oracle = filt._eigh_update(ens, ens.mean(0), S.mT.contiguous(), d, filt._local(batch, ens.dtype))
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        analysis = filt.update(ens, hx, batch)
    finally:
        torch.set_num_threads(previous)
    torch.testing.assert_close(analysis, oracle, rtol=0, atol=1e-6)
    torch.testing.assert_close(analysis.var(0), oracle.var(0), rtol=1e-10, atol=1e-12)
    assert (analysis - ens).abs().max() > 0.1
    last = torch.from_numpy(np.arange(n) % grid.columns >= grid.columns - 16)             # in the eigh chunk
    torch.testing.assert_close(analysis[:, last], oracle[:, last], rtol=1e-9, atol=1e-9)
    S_last = filt._local(batch, ens.dtype)
    nb = S_last.neighbours[-16:]
    S_loc = S.mT.index_select(0, nb.reshape(-1)).view(*nb.shape, members) * S_last.root_taper[-16:].unsqueeze(-1)
    assert base.inverse_sqrt_times(S_loc, members - 1.0, torch.eye(members, dtype=S.dtype).expand(16, -1, -1)) is None


def test_letkf_leaves_points_beyond_the_support_alone(case):
    ens, _ = case
    batch = observation_batches(obs_dataset([0], [10.0]), GRID)[0]
    letkf, _ = make_filter("letkf", GRID, loc_radius=1.0).analyse(ens, batch)   # support 2 * 1.82 = 3.64
    far = [4, 5, 6, 7, 8]
    torch.testing.assert_close(letkf[:, far], ens[:, far])
    assert not torch.allclose(letkf[:, [0, 1, 11]], ens[:, [0, 1, 11]])


def test_stochastic_enkf_mean_is_the_kalman_mean(case):
    ens, batch = case
    analysis, _ = make_filter("enkf", GRID, seed=3).analyse(ens, batch)
    torch.testing.assert_close(analysis.mean(0), kalman(ens, batch)[0])


def test_oi_with_the_ensemble_covariance_gives_the_etkf_mean(case):
    ens, batch = case
    oi = make_filter("oi", GRID, covariance=sample_cov(ens))
    analysis, _ = oi.analyse(ens.mean(0, keepdim=True), batch)
    torch.testing.assert_close(analysis[0], kalman(ens, batch)[0])


def test_inflation_and_rtps(case):
    ens, batch = case
    m = ens.mean(0)
    inflated, _ = make_filter("etkf", GRID, inflation=1.1).analyse(ens, batch)
    by_hand, _ = make_filter("etkf", GRID).analyse(m + 1.1 * (ens - m), batch)
    torch.testing.assert_close(inflated, by_hand)
    relaxed, _ = make_filter("etkf", GRID, rtps=1.0).analyse(ens, batch)
    torch.testing.assert_close(relaxed.std(0), ens.std(0))
    analysis, _ = make_filter("etkf", GRID).analyse(ens, batch)
    torch.testing.assert_close(relax_to_prior_spread(ens, analysis, 0.0), analysis)


def test_gaspari_cohn_values():
    np.testing.assert_allclose(gaspari_cohn(np.array([0.0, 1.0, 2.0, 3.0])), [1.0, 5 / 24, 0.0, 0.0], atol=1e-15)
    eps = 1e-9
    np.testing.assert_allclose(gaspari_cohn(np.array([1 - eps])), gaspari_cohn(np.array([1 + eps])), atol=1e-8)


@pytest.mark.parametrize("dim, fraction, radius, twice", [(40, 1.0, 4.0, False), (300, 0.3, 7.5, False),
                                                     (50, 0.5, 0.6, False), (300, 0.3, 7.5, True),
                                                     (40, 0.5, 7.0, True)])    # support > dim / 2: the k-d tree
def test_neighbour_lists_are_every_observation_within_the_support(dim, fraction, radius, twice):
    """Against brute force on the periodic Lorenz-96 grid: the same (observation, sqrt taper) pairs per column,
    also with two observations in some columns (``twice``)."""
    grid = StateGrid.from_model(get_model("lorenz96", dim=dim))
    cols = np.sort(np.random.default_rng(dim).choice(dim, int(dim * fraction), replace=False))
    if twice:
        cols = np.random.default_rng(1).permutation(np.concatenate([cols, cols[::3]]))
    local = local_observations(grid, cols, radius)
    gap = np.abs(np.arange(dim)[:, None] - cols[None, :])
    taper = gaspari_cohn(np.minimum(gap, dim - gap) / (1.82 * radius))               # (columns, obs)
    for i in range(dim):
        kept = local.root_taper[i].numpy() > 0
        got = sorted(zip(cols[local.neighbours[i].numpy()[kept]], local.root_taper[i].numpy()[kept] ** 2))
        want = sorted((cols[j], taper[i, j]) for j in np.flatnonzero(taper[i] > 1e-3))
        assert [c for c, _ in got] == [c for c, _ in want]
        np.testing.assert_allclose([t for _, t in got], [t for _, t in want], rtol=1e-12)


def test_observation_checks():
    with pytest.raises(DataError, match="outside the grid"):
        observation_batches(obs_dataset([3, 12], [1, 2]), GRID, "o.nc")
    with pytest.raises(DataError, match="NaN"):
        observation_batches(obs_dataset([3], [np.nan]), GRID, "o.nc")
    with pytest.raises(DataError, match="error_std"):
        observation_batches(obs_dataset([3], [1.0], error=0.0), GRID, "o.nc")
    with pytest.raises(DataError, match="observes variable"):
        observation_batches(obs_dataset([3], [1.0], variable="theta"), GRID, "o.nc")
    geo = StateGrid("t", ("level", "lat", "lon"), (2, 3, 4),
                    {"level": np.array([500.0, 850.0]), "lat": np.array([10.0, 0.0, -10.0]), "lon": np.arange(0, 360, 90.0)})
    obs = obs_dataset([0, 0], [1.0, 2.0], variable="t").drop_vars("i").assign(
        lat=("obs", [0.5, -9.0]), lon=("obs", [359.0, 181.0]), level=("obs", [850.0, 500.0]))
    batch = observation_batches(obs, geo)[0]
    assert batch.index.tolist() == [12 + 4 * 1 + 0, 0 + 4 * 2 + 2]
    with pytest.raises(DataError, match="outside the grid"):
        observation_batches(obs.assign(lat=("obs", [0.0, 30.0])), geo)


def sakov2008_rmse(method, members, cycles=600, burn_in=100, seed=0, **options):
    """DAPPER's Lorenz96/sakov2008 through the library: analysis RMSE after burn-in."""
    model = get_model("lorenz96", dim=40)
    g = torch.Generator().manual_seed(seed)
    x0 = advance(model, model.random_state(1, g), 0.05, 1000)
    truth = integrate(model, x0, 0.05, cycles)[:, 0]                                     # (T, 40)
    times = np.arange(cycles + 1) * 0.05
    truth_ds = xr.Dataset({"x": (("time", "i"), truth.numpy())}, coords={"time": times})
    obs = observe(truth_ds, fraction=1, error_std=1, seed=seed)

    ens = x0 + torch.randn(members, 40, generator=g, dtype=torch.float64)
    out = cycle(State(model, 0.05, ens, 0.0, True), obs, make_filter(method, StateGrid.from_model(model), **options))
    err = out["x"].mean("member").values - truth.numpy()
    return np.sqrt((err**2).mean(-1))[burn_in:].mean()


def test_dapper_sakov2008_numbers():
    """DAPPER: ETKF N=24 infl 1.013 -> 0.18; LETKF N=7 infl 1.04 radius 4 -> 0.22 (600 cycles here)."""
    assert 0.15 <= sakov2008_rmse("etkf", 24, inflation=1.013) <= 0.21
    assert 0.19 <= sakov2008_rmse("letkf", 7, inflation=1.04, loc_radius=4) <= 0.25


@pytest.fixture(scope="module")
def osse(tmp_path_factory):
    """Lorenz-96 (dim 10) truth of 6 times, half the points observed, 6 members at the first time."""
    base = tmp_path_factory.mktemp("osse")
    run = lambda *a: CliRunner().invoke(main, [str(v) for v in a]).exit_code  # noqa: E731
    assert run("forecast", "--model", "lorenz96", "--param", "dim=10", "--init", "random", "--spinup", "100",
               "--seed", "1", "-o", base / "x0.nc") == 0
    assert run("forecast", "--init", base / "x0.nc", "--steps", "5", "-o", base / "truth.nc") == 0
    assert run("ingest", base / "truth.nc", "--observe", "--fraction", "0.5", "--error-std", "0.5", "--seed", "2",
               "-o", base / "obs.nc") == 0
    for start, name in (("x0.nc", "ens.nc"), ("truth.nc", "late.nc")):
        assert run("forecast", "--init", base / start, "--members", "6", "--perturb", "1", "--seed", "3",
                   "-o", base / name) == 0
    return base


def assimilate(*args):
    return CliRunner().invoke(main, ["assimilate", *map(str, args)])


def test_one_analysis_writes_diagnostics(osse, tmp_path):
    out = tmp_path / "an.nc"
    result = assimilate("--method", "letkf", "--background", osse / "late.nc", "--obs", osse / "obs.nc",
                        "--loc-radius", "2", "-o", out)
    assert result.exit_code == 0, result.output
    an = xr.open_dataset(out)
    assert an.attrs["daflow_kind"] == "analysis" and an["x"].shape == (6, 1, 10)
    assert float(an["time"][0]) == pytest.approx(0.25) and an.sizes["obs"] == 5
    np.testing.assert_allclose(an["obs_omb"], an["obs_value"] - an["obs_background_mean"])
    assert float(np.abs(an["obs_oma"]).mean()) < float(np.abs(an["obs_omb"]).mean())


def test_cycling_writes_every_observation_time(osse, tmp_path):
    out = tmp_path / "cyc.nc"
    result = assimilate("--method", "enkf", "--init", osse / "ens.nc", "--obs", osse / "obs.nc",
                        "--save-background", "--seed", "1", "-o", out)
    assert result.exit_code == 0, result.output
    an, truth = xr.open_dataset(out), xr.open_dataset(osse / "truth.nc")
    np.testing.assert_array_equal(an["time"], truth["time"])
    np.testing.assert_array_equal(an["x_background"][:, 0], xr.open_dataset(osse / "ens.nc")["x"][:, 0])
    assert np.isfinite(an["obs_oma"]).all() and an.sizes["obs"] == 30
    late = assimilate("--method", "etkf", "--init", osse / "late.nc", "--obs", osse / "obs.nc", "-o", tmp_path / "x.nc")
    assert late.exit_code == 65 and "before" in late.output


@pytest.mark.parametrize("problem", ["one member", "nan", "outside", "no time", "variable", "oi without B"])
def test_bad_input_exits_65_with_one_line(osse, tmp_path, problem):
    obs = xr.open_dataset(osse / "obs.nc").load()
    ens, obs_path, extra = osse / "ens.nc", tmp_path / "obs.nc", []
    if problem == "one member":
        ens = tmp_path / "one.nc"
        CliRunner().invoke(main, ["forecast", "--init", str(osse / "truth.nc"), "--members", "1", "-o", str(ens)])
    elif problem == "nan":
        obs["value"][0] = np.nan
    elif problem == "outside":
        obs["i"][0] = 10
    elif problem == "no time":
        obs["time"][:] = 0.123
    elif problem == "variable":
        obs["variable"][:] = "theta"
    obs.attrs["daflow_kind"] = "observations"
    obs.to_netcdf(obs_path)
    out = tmp_path / "an.nc"
    method = "letkf"
    if problem == "oi without B":
        method, extra = "oi", ["--climatology", osse / "obs.nc"]
    result = assimilate("--method", method, "--background", ens, "--obs", obs_path, *extra, "-o", out)
    assert result.exit_code == 65, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize("method", sorted(FILTERS))
def test_every_filter_cycles_through_the_cli_with_a_nonlinear_operator(method, daflow, tmp_path):
    """Cycling runs in torch inference mode unless a filter differentiates; a filter that needs
    autograd (OI's linearisation, EnSF's likelihood score) must say so, or it fails here."""
    run = lambda *args: daflow(*args).exit_code  # noqa: E731
    assert run("forecast", "--model", "lorenz96", "--param", "dim=12", "--init", "random", "--spinup", "100",
               "--steps", "0", "--seed", "1", "-o", tmp_path / "x0.nc") == 0
    assert run("forecast", "--init", tmp_path / "x0.nc", "--steps", "6", "-o", tmp_path / "truth.nc") == 0
    assert run("ingest", tmp_path / "truth.nc", "--observe", "--fraction", "0.5", "--operator", "arctan",
               "--error-std", "0.1", "--seed", "2", "-o", tmp_path / "obs.nc") == 0
    variational = method in ("oi", "3dvar", "4dvar")   # B from a climatology; one state is enough
    members = "1" if variational else "6"
    assert run("forecast", "--init", tmp_path / "x0.nc", "--members", members, "--perturb", "0.5", "--seed", "3",
               "-o", tmp_path / "ens.nc") == 0
    extra = ("--climatology", tmp_path / "truth.nc") if variational else ("--ensf-steps", "10") if method == "ensf" else ()
    result = daflow("assimilate", "--method", method, "--init", tmp_path / "ens.nc", "--obs", tmp_path / "obs.nc",
                    *extra, "-o", tmp_path / "an.nc")
    assert result.exit_code == 0, result.stderr
    assert np.isfinite(xr.open_dataset(tmp_path / "an.nc")["x"].values).all()
