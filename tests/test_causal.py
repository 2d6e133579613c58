"""The causal framework: estimator oracles, blocking, gateway, interaction, null p-values, Lorenz-63, CLI."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
from click.testing import CliRunner

from daflow.causal.estimators import gaussian_cmi, knn_cmi, knn_cmi_surrogates, knn_entropy, transform
from daflow.causal.framework import analyse, certainty
from daflow.causal.surrogates import block_permutations, cmi_test, local_permutations
from daflow.io.contract import write_dataset
from daflow.models.lorenz import Lorenz63
from daflow_cli.main import main


def confounded_gaussian(rho, t, rng):
    """X, Y correlated rho given Z (3 dims); Z drives both, so I(X; Y | Z) = -1/2 ln(1 - rho^2)."""
    z = rng.standard_normal((t, 3))
    e = rng.multivariate_normal([0, 0], [[1, rho], [rho, 1]], size=t)
    return 0.5 * z.sum(1) + e[:, 0], 0.5 * z @ [1.0, -0.5, 0.8] + e[:, 1], z


@pytest.mark.parametrize("rho, exact", [(0.3, 0.0472), (0.6, 0.2231)])
def test_knn_cmi_gaussian_oracle_three_conditioning_dims(rho, exact):
    x, y, z = confounded_gaussian(rho, 10_000, np.random.default_rng(1))
    assert exact == pytest.approx(-0.5 * np.log(1 - rho**2), abs=1e-4)
    s = [transform(a, "standardize") for a in (x, y, z)]
    assert knn_cmi(*s, k=8) == pytest.approx(exact, abs=0.02)
    assert gaussian_cmi(x, y, z) == pytest.approx(exact, abs=0.01)


def test_knn_entropy_of_a_gaussian():
    x = np.random.default_rng(2).standard_normal(5000)
    assert knn_entropy(x, 8) == pytest.approx(0.5 * np.log(2 * np.pi * np.e), abs=0.03)


def test_chain_is_blocked_by_the_middle():
    rng = np.random.default_rng(3)
    x = rng.standard_normal(2000)
    y = x + 0.5 * rng.standard_normal(2000)
    z = y + 0.5 * rng.standard_normal(2000)
    X, Y, Z = (transform(a) for a in (x, y, z))
    assert knn_cmi(X, Z, k=8) > 0.3
    value, p = cmi_test(X, Z, Y, n=200, seed=0)
    assert abs(value) < 0.02 and p > 0.01


def test_gateway_driver_carries_the_information_of_the_hidden_source():
    """W -> G -> Y and W -> V (no link V -> Y): G is the gateway, V is screened off by G."""
    rng = np.random.default_rng(4)
    t = 1500
    w = rng.standard_normal(t)
    g = w + 0.6 * rng.standard_normal(t)
    v = w + 0.6 * rng.standard_normal(t)
    y = np.zeros(t)
    y[1:] = g[:-1] + 0.6 * rng.standard_normal(t - 1)
    r = analyse({"y": y, "g": g, "v": v}, "y", ["g", "v"], [1], surrogates=60)
    links = {lk.driver: lk for lk in r.links}
    assert links["g"].selected and links["g"].p_value < 0.05
    assert not links["v"].selected and links["v"].p_value > 0.01


def test_pure_interaction():
    """Y = X1 X2 + noise with independent symmetric X1, X2 (random signs, a little jitter):
    no single MI, a large positive interaction (the continuous XOR)."""
    rng = np.random.default_rng(5)
    t = 2000
    x1, x2 = rng.choice([-1.0, 1.0], (2, t + 1)) + 0.05 * rng.standard_normal((2, t + 1))
    y = np.zeros(t + 1)
    y[1:] = x1[:-1] * x2[:-1] + 0.2 * rng.standard_normal(t)
    single = [knn_cmi(transform(y[1:]), transform(x[:-1])) for x in (x1, x2)]
    r = analyse({"y": y, "x1": x1, "x2": x2}, "y", ["x1", "x2"], [1], surrogates=30, pc_alpha=1.0)
    assert all(lk.selected for lk in r.links)
    (pair,) = r.pair_interactions.values()
    assert pair > 0.5 and r.interaction > 0.3 and max(single) < 0.1 * pair


def test_local_permutation_keeps_neighbourhoods_and_is_nearly_a_permutation():
    z = transform(np.random.default_rng(6).standard_normal((500, 2)))
    perms = local_permutations(z, 20, 5, np.random.default_rng(0))
    from scipy.spatial import cKDTree

    nbrs = cKDTree(z).query(z, k=5, p=np.inf)[1]
    assert all((perms[s][:, None] == nbrs).any(1).all() for s in range(20))
    assert np.mean([len(np.unique(p)) for p in perms]) > 0.9 * 500


@pytest.mark.parametrize("kind, dx, dz", [("ranks", 1, 2), ("standardize", 2, 2), ("ranks", 1, 0)])
def test_surrogates_share_tables_yet_equal_the_plain_estimator(kind, dx, dz):
    """Each surrogate's local CMI from the shared neighbour tables is exactly knn_cmi's on that surrogate
    (local permutations given Z; plain permutations without Z). At T = 400, k = 4 the neighbour search
    widens past its first 8 k joint and 64 Z neighbours for a few hundred samples."""
    rng = np.random.default_rng(10)
    t = 400
    z = rng.standard_normal((t, dz))
    x = rng.standard_normal((t, dx)) + z[:, :1].sum(1, keepdims=True)
    y = z.sum(1) + 0.3 * x[:, 0] + rng.standard_normal(t)
    X, Y, Z = (transform(a, kind) for a in (x, y, z))
    perms = local_permutations(Z, 30, 5, rng) if dz else block_permutations(t, 30, 1, rng)
    Z = Z if dz else None
    fast = knn_cmi_surrogates(X, Y, Z, perms, k=4)
    assert np.array_equal(fast, np.stack([knn_cmi(X[p], Y, Z, k=4, local=True) for p in perms]))


def test_p_values_uniform_under_the_null():
    rng = np.random.default_rng(7)
    pvals = []
    for i in range(60):
        z = rng.standard_normal((300, 1))
        x = z[:, 0] + rng.standard_normal(300)
        y = z[:, 0] + rng.standard_normal(300)
        pvals.append(cmi_test(transform(x), transform(y), transform(z), n=50, seed=i)[1])
    from scipy.stats import kstest

    assert kstest(pvals, "uniform").pvalue > 0.01
    assert np.mean(np.array(pvals) < 0.1) < 0.25


def test_certainty_is_r_squared_for_gaussians():
    rho = 0.6
    assert certainty(-0.5 * np.log(1 - rho**2)) == pytest.approx(rho**2)


def lorenz63_tendencies(t=2000, dt=0.01, every=5, scatter=3.0, noise=0.1, seed=0):
    """States scattered around the Lorenz-63 attractor and their tendencies plus 10 % noise.

    On the attractor (about 2.06-dimensional) z is nearly a function of (x, y), and the k-NN CMI of
    an exact tendency given its arguments is ill-posed; scattering the states off the attractor and
    adding noise to the tendency (model error) gives the drivers a density.
    """
    model = Lorenz63()
    x = torch.tensor([[1.0, 1.0, 20.0]], dtype=torch.float64)
    states = []
    for step in range(500 + t * every):
        x = model.step(x, dt)
        if step >= 500 and step % every == 0:
            states.append(x[0])
    rng = np.random.default_rng(seed)
    s = torch.stack(states).numpy() + scatter * rng.standard_normal((t, 3))
    ds = model.tendency(torch.from_numpy(s)).numpy()
    return s, ds + noise * ds.std(0) * rng.standard_normal(ds.shape)


@pytest.mark.slow
def test_lorenz63_drivers_of_each_tendency():
    s, ds = lorenz63_tendencies()
    names = ["x", "y", "z"]
    expected = {"x": {"x", "y"}, "y": {"x", "y", "z"}, "z": {"x", "y", "z"}}
    for i, target in enumerate(names):
        series = {n: s[:, j] for j, n in enumerate(names)}
        # the tendency at t is a function of the state at t: shift the target by one step so lag 1 is "now"
        series["d" + target] = np.r_[np.nan, ds[:-1, i]]
        r = analyse(series, "d" + target, names, [1], surrogates=100)
        found = {lk.driver for lk in r.links if lk.selected and lk.p_value < 0.05}
        assert found == expected[target], (target, r.links)
        if target == "z":
            pairs = {frozenset((r.links[a].driver, r.links[b].driver)): v for (a, b), v in r.pair_interactions.items()}
            assert pairs[frozenset("xy")] > 0


def test_cli_bad_input_exits_65(tmp_path):
    t = xr.date_range("2000-01-01", periods=40, freq="MS")
    rng = np.random.default_rng(8)
    good = xr.Dataset({"a": ("time", rng.standard_normal(40)), "b": ("time", rng.standard_normal(40)),
                       "flat": ("time", np.ones(40)), "gap": ("time", np.full(40, np.nan)),
                       "sparse": ("time", np.where(np.arange(40) % 4 == 0, rng.standard_normal(40), np.nan))},
                      coords={"time": t})
    write_dataset(good, tmp_path / "s.nc", "state")
    runner = CliRunner()
    cases = [("constant", ["--drivers", "flat"]), ("all NaN", ["--drivers", "gap"]),
             ("not shorter", ["--drivers", "b", "--lags", "1-40"]), ("too few", ["--drivers", "b", "--k", "30"]),
             ("too few", ["--drivers", "sparse"])]
    for words, extra in cases:
        res = runner.invoke(main, ["causal", str(tmp_path / "s.nc"), "--target", "a", "-o", str(tmp_path / "o.nc"), *extra])
        assert res.exit_code == 65, (words, res.output)
        assert words in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "o.nc").exists()


def test_cli_writes_causal_file_and_json(tmp_path):
    import json

    rng = np.random.default_rng(9)
    x = rng.standard_normal(400)
    y = np.r_[0, 0.8 * x[:-1]] + 0.5 * rng.standard_normal(400)
    t = xr.date_range("1990-01-01", periods=400, freq="MS")
    write_dataset(xr.Dataset({"x": ("time", x)}, coords={"time": t}), tmp_path / "x.nc", "state")
    write_dataset(xr.Dataset({"y": ("time", y[5:])}, coords={"time": t[5:]}), tmp_path / "y.nc", "state")
    res = CliRunner().invoke(main, ["causal", str(tmp_path / "x.nc"), str(tmp_path / "y.nc"), "--target", "y",
                                    "--drivers", "x,y", "--lags", "1-2", "--surrogates", "50", "--json", "--local",
                                    "--plot", str(tmp_path / "p.png"), "-o", str(tmp_path / "c.nc")])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    link = next(lk for lk in out["links"] if lk["driver"] == "x" and lk["lag"] == 1)
    assert link["p_value"] < 0.05 and link["unique"] > 0.3
    assert 0 <= out["unknown_share"] <= 1 and out["certainty"] == pytest.approx(1 - out["unknown_share"])
    ds = xr.open_dataset(tmp_path / "c.nc")
    assert ds.attrs["daflow_kind"] == "causal" and ds["unique"].dims == ("driver", "lag")
    assert "local_total" in ds and (tmp_path / "p.png").stat().st_size > 0


def test_a_driver_listed_twice_is_analysed_once():
    """x,x used to enter the candidates twice, so each copy explained the other away (lag-1 link lost)."""
    from daflow.api import causal_analysis

    rng = np.random.default_rng(9)
    x = rng.standard_normal(300)
    y = np.r_[0, 0.8 * x[:-1]] + 0.5 * rng.standard_normal(300)
    ds = xr.Dataset({"x": ("time", x), "y": ("time", y)}, coords={"time": np.arange(300.0)})
    twice = causal_analysis(ds, target="y", drivers="x, x", lags="1", surrogates=30, estimator="gaussian")
    once = causal_analysis(ds, target="y", drivers="x", lags="1", surrogates=30, estimator="gaussian")
    assert twice.drivers == ["x"] and [lk.selected for lk in twice.result.links] == [True]
    assert twice.result.links[0].unique == once.result.links[0].unique > 0.3


@pytest.mark.parametrize("options, flag", [({"surrogates": 3}, "surrogates"),       # p >= 1/4 > 0.2
                                           ({"block_length": 150}, "block_length"),  # 2 blocks: 2 orders
                                           ({"pc_alpha": 0.0}, "pc_alpha")])
def test_settings_under_which_no_driver_could_be_selected_are_refused(options, flag):
    from daflow.errors import OptionError

    rng = np.random.default_rng(3)
    series = {"y": rng.standard_normal(300), "x": rng.standard_normal(300)}
    settings = {"surrogates": 20, "pc_alpha": 0.2} | options
    method = "block" if "block_length" in options else "local"
    with pytest.raises(OptionError) as err:
        analyse(series, "y", ["x"], [1], estimator="gaussian", method=method, **settings)
    assert err.value.option == flag
    analyse(series, "y", ["x"], [1], estimator="gaussian", surrogates=4, pc_alpha=0.2)  # 1/5 = 0.2: can be selected
