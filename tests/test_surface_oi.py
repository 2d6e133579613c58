"""Surface OI with a parametric B on a point grid, and verification against observations (no truth)."""
from __future__ import annotations

import json
import zlib

import numpy as np
import pytest
import xarray as xr

from daflow.da.localization import gaspari_cohn
from daflow.da.surface import TAPER_SUPPORT, SurfaceOI, correlation, ensemble_from_b
from daflow.obs.interpolation import PointInterpolator


def test_single_observation_increment_is_the_closed_form():
    """One report: increment at distance r is sb^2 rho(r) GC(2 r / S) / (sb^2 + so^2) * (y - xb), S the taper's support."""
    lat = np.repeat(np.arange(40.0, 60.1, 0.5), 81)
    lon = np.tile(np.arange(-10.0, 30.1, 0.5), 41)
    xb = np.full(lat.size, 280.0)
    oi = SurfaceOI(b_std=2.0, b_length=200.0)
    xa, hxb, hxa, ok = oi.analyse(xb, lat, lon, np.array([283.0]), np.array([50.0]), np.array([10.0]), np.array([1.0]))
    assert ok.all() and hxb[0] == pytest.approx(280.0)
    from daflow.obs.interpolation import chord_to_km, unit_xyz
    r = chord_to_km(np.linalg.norm(unit_xyz(lat, lon) - unit_xyz(50.0, 10.0), axis=-1))
    support = TAPER_SUPPORT["gaussian"] * 200.0
    expected = 280.0 + 4.0 * correlation(r, 200.0, "gaussian") * gaspari_cohn(2 * r / support) / 5.0 * 3.0
    near = r < support
    assert np.allclose(xa[near], expected[near], atol=1e-9)
    assert np.allclose(xa[~near], 280.0)  # beyond the taper's support nothing moves
    assert hxa[0] == pytest.approx(280.0 + 2.4)  # 4/5 of the departure at the report


@pytest.mark.parametrize("kind", ["gaussian", "soar"])
def test_dense_reports_with_a_large_background_error_are_drawn_towards_not_past(kind):
    """The correlation between reports is positive definite, so the analysis departures R (HBH^T + R)^-1 d are
    never larger than the background's in the R^-1 norm. rho simply cut where it fell below 1e-3 was not:
    eigenvalues down to -0.015 on 1,471 SYNOP stations at L = 500 km, and with sigma_b = 10 K the
    analysis at withheld stations was 971 K off."""
    from scipy.spatial import cKDTree

    from daflow.obs.interpolation import unit_xyz

    rng = np.random.default_rng(1)
    lat, lon = rng.uniform(40, 60, 600), rng.uniform(-10, 30, 600)
    oi = SurfaceOI(b_std=10.0, b_length=500.0, kind=kind, k_qc=1e9)
    tree = cKDTree(unit_xyz(lat, lon))
    assert np.linalg.eigvalsh(oi._pairs(tree, tree).toarray()).min() > -1e-9
    d = rng.normal(0, 3, lat.size)
    _, hxb, hxa, ok = oi.analyse(np.zeros(lat.size), lat, lon, d, lat, lon, np.ones(lat.size))  # reports on the points
    assert ok.all() and np.allclose(hxb, 0)
    assert np.linalg.norm(d - hxa) < np.linalg.norm(d)


def test_background_check_rejects_gross_errors():
    lat, lon = np.array([0.0, 0.0, 1.0]), np.array([0.0, 1.0, 0.0])
    oi = SurfaceOI(b_std=1.0, b_length=100.0, k_qc=5.0)
    _, _, _, ok = oi.analyse(np.zeros(3), lat, lon, np.array([1.0, 50.0]), np.array([0.0, 0.5]), np.array([0.0, 0.5]), np.ones(2))
    assert ok.tolist() == [True, False]  # |50| > 5 sqrt(2)


def test_nearest_point_departures_match_the_published_figure(sample_data, daflow, tmp_path):
    """README: nearest-point O-B of the 2018-11-20 SYNOP t2m, 1,471 usable reports, mean +0.17 K, std 2.61 K."""
    assert daflow("ingest", sample_data / "grib" / "ecmwf-2t-2018112012-n160.grib", "-o", tmp_path / "bg.nc").exit_code == 0
    assert daflow("ingest", sample_data / "obs" / "synop-2018112012-europe.bufr", "-o", tmp_path / "obs.nc", "--quiet").exit_code == 0
    bg, obs = xr.open_dataset(tmp_path / "bg.nc"), xr.open_dataset(tmp_path / "obs.nc")
    good = (obs["variable"].values.astype(str) == "t2m") & (obs["qc"].values == 0)
    h = PointInterpolator(bg["lat"].values, bg["lon"].values, k=1).apply(bg["t2m"].values[0], obs["lat"].values[good], obs["lon"].values[good])
    d = obs["value"].values[good] - h
    assert good.sum() == 1471 and round(d.mean(), 2) == 0.17 and round(d.std(), 2) == 2.61
    # cross-validation on the acceptance check's fold: the default analysis beats the background by > 10%
    held = np.array([zlib.crc32(str(s).encode()) % 10 == 3 for s in obs["station"].values])
    obs.isel(obs=np.flatnonzero(~held)).to_netcdf(tmp_path / "assim.nc")
    obs.isel(obs=np.flatnonzero(held)).to_netcdf(tmp_path / "verify.nc")
    res = daflow("assimilate", "--method", "oi", "--background", tmp_path / "bg.nc", "--obs", tmp_path / "assim.nc",
                 "-o", tmp_path / "an.nc", "--quiet")
    assert res.exit_code == 0, res.output
    scores = {}
    for name in ("bg", "an"):
        res = daflow("score", "--forecast", tmp_path / f"{name}.nc", "--obs", tmp_path / "verify.nc", "--json", "--csv", tmp_path / f"{name}.csv")
        assert res.exit_code == 0, res.output
        scores[name] = json.loads(res.stdout)
    assert scores["bg"]["count"] == scores["an"]["count"] == 171
    assert scores["an"]["rmse"] < 0.9 * scores["bg"]["rmse"]
    assert scores["bg"]["platforms"]["synop"]["count"] == 171 and scores["bg"]["groups"][0]["variable"] == "t2m"
    import daflow  # the same verification in Python (there was no API for it)

    rows = daflow.departures(tmp_path / "an.nc", tmp_path / "verify.nc")
    assert rows.sizes["obs"] == 171 and daflow.summary(rows) == scores["an"]
    an = xr.open_dataset(tmp_path / "an.nc")
    assert an.attrs["daflow_kind"] == "analysis" and an["t2m"].dims == ("time", "point")
    used = np.isfinite(an["obs_oma"].values)
    assert np.abs(an["obs_oma"].values[used]).mean() < np.abs(an["obs_omb"].values[used]).mean()


def test_score_without_truth_needs_obs(daflow, tmp_path):
    res = daflow("score", "--forecast", tmp_path / "x.nc")
    assert res.exit_code == 2 and "--obs" in res.output
    res = daflow("score", "--forecast", tmp_path / "x.nc", "--obs", tmp_path / "o.nc", "--burn-in", 3)  # was ignored
    assert res.exit_code == 2 and "--burn-in: verification against a truth only" in res.output


def test_point_interpolation_is_exact_on_linear_fields_and_differentiable():
    """On a report at a grid point H takes that value; the torch H has the weights as its gradient."""
    import torch

    lat = np.repeat(np.arange(-10.0, 10.1, 1.0), 21)
    lon = np.tile(np.arange(350.0, 371.0, 1.0) % 360, 21)
    h = PointInterpolator(lat, lon)
    field = lat * 2.0 + 1.0
    assert h.apply(field, np.array([3.0]), np.array([5.0]))[0] == pytest.approx(7.0)
    # a report at the centre of a grid cell: four nearly equidistant points, about their mean (longitude wraps at 0)
    assert h.apply(field, np.array([0.5]), np.array([-0.5]))[0] == pytest.approx(2.0, abs=1e-3)
    x = torch.tensor(field, requires_grad=True)
    y = h.torch(np.array([0.5]), np.array([359.5]))(x)
    y.sum().backward()
    assert torch.count_nonzero(x.grad) == 4 and float(x.grad.sum()) == pytest.approx(1.0)


@pytest.mark.slow
def test_synop_recipe_analysis_beats_background_on_every_reported_fold(tmp_path):
    """make -C recipes synop-t2m: O-A RMSE below O-B RMSE at the withheld stations of each fold."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    bindir = Path(sys.executable).parent
    out = subprocess.run(["make", "-C", str(root / "recipes"), "synop-t2m", f"WORK={tmp_path}", f"DAFLOW={bindir / 'daflow'}",
                          f"PYTHON={sys.executable}"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = (tmp_path / "synop" / "summary.txt").read_text().splitlines()
    ratios = {line.split()[0] + line.split()[1]: float(line.split()[-1]) for line in lines[3:]}
    assert ratios["reported3-9"] < 0.9 and all(r < 1.0 for k, r in ratios.items() if k.startswith("fold"))
    assert (tmp_path / "synop" / "departures.png").stat().st_size > 10_000


def test_upper_air_departures_interpolate_in_log_pressure():
    """A field linear in ln p is verified exactly between levels; reports outside the levels are left out."""
    import pandas as pd

    from daflow.score.obsspace import departures, summarise

    lat, lon = np.arange(40.0, 51.0), np.arange(0.0, 11.0)
    levels = np.array([850.0, 500.0, 250.0])
    profile = 10.0 * np.log(levels * 100.0)                      # t = 10 ln p
    t = np.broadcast_to(profile[:, None, None], (3, 11, 11))[None]
    state = xr.Dataset({"t": (("time", "level", "lat", "lon"), t.copy())},
                       coords={"time": [np.datetime64("2008-12-08T12:00", "ns")], "level": levels, "lat": lat, "lon": lon})
    p = np.array([70000.0, 30000.0, 100000.0])
    obs = xr.Dataset({"value": ("obs", 10.0 * np.log(p) + np.array([0.5, -0.5, 0.0])), "error_std": ("obs", np.ones(3)),
                      "time": ("obs", np.full(3, np.datetime64("2008-12-08T12:00", "ns"))), "lat": ("obs", [45.2, 44.0, 45.0]),
                      "lon": ("obs", [5.3, 3.0, 5.0]), "variable": ("obs", np.array(["t"] * 3, dtype=object)),
                      "platform": ("obs", np.array(["temp"] * 3, dtype=object)), "pressure": ("obs", p), "qc": ("obs", np.zeros(3, np.int8))})
    table = departures(state, obs)
    assert isinstance(table, pd.DataFrame) and len(table) == 2          # 1000 hPa is below the lowest level
    assert np.allclose(table["departure"], [0.5, -0.5], atol=1e-9)
    figures = summarise(table)
    assert figures["count"] == 2 and figures["bias"] == pytest.approx(0.0) and figures["rmse"] == pytest.approx(0.5)
    assert {g["band"] for g in figures["groups"]} == {"300-700 hPa", "100-300 hPa"}


def test_ensemble_from_b_has_the_covariance_of_b():
    """Members drawn around x^b: mean x^b exactly, variance b_std^2 and correlation exp(-1/2) at r = L (sampling error)."""
    from daflow.obs.interpolation import chord_to_km, unit_xyz

    lat = np.repeat(np.arange(40.0, 60.01, 0.25), 121)
    lon = np.tile(np.arange(-15.0, 15.01, 0.25), 81)
    xb = np.full(lat.size, 280.0)
    ens = ensemble_from_b(xb, lat, lon, b_std=2.0, b_length=200.0, members=400, seed=3)
    assert np.allclose(ens.mean(0), xb)
    centre = np.flatnonzero((lat == 50.0) & (lon == 0.0))[0]
    inner = (np.abs(lat - 50) < 5) & (np.abs(lon) < 7)
    assert ens[:, inner].std(0, ddof=1).mean() == pytest.approx(2.0, rel=0.05)
    r = chord_to_km(np.linalg.norm(unit_xyz(lat, lon) - unit_xyz(50.0, 0.0), axis=-1))
    ring = np.flatnonzero(np.abs(r - 200.0) < 10.0)
    corr = [np.corrcoef(ens[:, centre], ens[:, j])[0, 1] for j in ring]
    assert np.mean(corr) == pytest.approx(np.exp(-0.5), abs=0.06)


def test_letkf_on_a_single_forecast_pulls_towards_the_reports():
    from daflow.da.surface import analyse_forecast_ensemble

    lat = np.repeat(np.arange(40.0, 60.01, 1.0), 31)
    lon = np.tile(np.arange(-15.0, 15.01, 1.0), 21)
    bg = xr.Dataset({"t2m": (("time", "point"), np.full((1, lat.size), 280.0))},
                    coords={"time": [np.datetime64("2018-11-20T12:00", "ns")], "lat": ("point", lat), "lon": ("point", lon)})
    rng = np.random.default_rng(0)
    n = 40
    obs = xr.Dataset({"value": ("obs", np.full(n, 282.0)), "error_std": ("obs", np.full(n, 0.5)),
                      "time": ("obs", np.full(n, np.datetime64("2018-11-20T12:00", "ns"))),
                      "lat": ("obs", rng.uniform(45, 55, n)), "lon": ("obs", rng.uniform(-5, 5, n)),
                      "variable": ("obs", np.array(["t2m"] * n, dtype=object)), "qc": ("obs", np.zeros(n, np.int8))})
    an = analyse_forecast_ensemble(bg, obs, "letkf", members=12, seed=1, loc_radius=300.0)
    assert an["t2m"].dims == ("member", "time", "point")
    assert np.abs(an["obs_oma"].values).mean() < 0.5 * np.abs(an["obs_omb"].values).mean()
    assert float(an["obs_analysis_spread"].mean()) < float(an["obs_background_spread"].mean())


def test_lapse_rate_correction_with_an_orography():
    """y' = y + 0.0065 K/m (station height - model height) before the analysis."""
    from daflow.da.surface import analyse_forecast

    lat = np.repeat(np.arange(44.0, 48.01, 1.0), 5)
    lon = np.tile(np.arange(4.0, 8.01, 1.0), 5)
    bg = xr.Dataset({"t2m": (("time", "point"), np.full((1, lat.size), 280.0))},
                    coords={"time": [np.datetime64("2018-11-20T12:00", "ns")], "lat": ("point", lat), "lon": ("point", lon)})
    orography = xr.DataArray(np.full(lat.size, 1500.0), dims="point")
    obs = xr.Dataset({"value": ("obs", [278.0]), "error_std": ("obs", [1.0]), "time": ("obs", [np.datetime64("2018-11-20T12:00", "ns")]),
                      "lat": ("obs", [46.0]), "lon": ("obs", [6.0]), "elevation": ("obs", [500.0]),
                      "variable": ("obs", np.array(["t2m"], dtype=object)), "qc": ("obs", np.zeros(1, np.int8))})
    an = analyse_forecast(bg, obs, 2.0, 150.0, orography=orography)
    assert an["obs_value_used"].values[0] == pytest.approx(278.0 + 0.0065 * (500.0 - 1500.0))
    assert an["obs_omb"].values[0] == pytest.approx(278.0 - 6.5 - 280.0)


def test_bilinear_is_exact_for_bilinear_fields_and_wraps_in_longitude():
    from daflow.obs.interpolation import BilinearInterpolator

    lat, lon = np.arange(-90.0, 90.1, 2.5), np.arange(0.0, 360.0, 2.5)
    glat, glon = np.meshgrid(lat, lon, indexing="ij")
    h = BilinearInterpolator(lat, lon)
    field = (3.0 * glat + 2.0).ravel()
    assert h.apply(field, np.array([10.3, -44.1]), np.array([17.2, 200.0])) == pytest.approx([32.9, -130.3])
    across = np.cos(np.radians(glon)).ravel()   # across the date line: between 357.5 and 0 (= 360)
    b = (359.0 - 357.5) / 2.5
    assert h.apply(across, np.array([0.0]), np.array([-1.0]))[0] == pytest.approx((1 - b) * np.cos(np.radians(357.5)) + b)
    regional = BilinearInterpolator(np.arange(40.0, 50.1, 1.0), np.arange(0.0, 10.1, 1.0))
    assert np.isnan(regional.apply(np.zeros(121), np.array([45.0, 55.0]), np.array([5.0, 5.0]))).tolist() == [False, True]


def test_surface_oi_on_a_lat_lon_grid_uses_bilinear_h():
    from daflow.da.surface import analyse_forecast

    lat, lon = np.arange(40.0, 60.1, 1.0), np.arange(-10.0, 20.1, 1.0)
    bg = xr.Dataset({"t2m": (("time", "lat", "lon"), np.full((1, lat.size, lon.size), 280.0))},
                    coords={"time": [np.datetime64("2018-11-20T12:00", "ns")], "lat": lat, "lon": lon})
    obs = xr.Dataset({"value": ("obs", [283.0, 290.0]), "error_std": ("obs", [1.0, 1.0]),
                      "time": ("obs", np.full(2, np.datetime64("2018-11-20T12:00", "ns"))), "lat": ("obs", [50.0, 70.0]),
                      "lon": ("obs", [5.0, 5.0]), "variable": ("obs", np.array(["t2m"] * 2, dtype=object)), "qc": ("obs", np.zeros(2, np.int8))})
    an = analyse_forecast(bg, obs, 2.0, 150.0)
    assert an["t2m"].dims == ("time", "lat", "lon")
    assert an["t2m"].sel(lat=50.0, lon=5.0).values.item() == pytest.approx(280.0 + 4.0 / 5.0 * 3.0)
    assert an["obs_qc"].values.tolist() == [0, 6]  # the report north of the regional grid is not used


def test_a_length_scale_whose_matrices_cannot_fit_is_refused_before_they_are_built():
    """--b-length 1e5 km on the 2018-11-20 case took 71 s and 13 GB; 1e5 points x 2e4 reports within the
    taper's support would need about 190 GB: refused, naming the option, before anything is allocated."""
    from daflow.errors import OptionError

    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(-90, 90, 100_000), rng.uniform(0, 360, 100_000)
    with pytest.raises(OptionError, match="2000000000 pairs of grid points and reports") as err:
        SurfaceOI(b_std=1.0, b_length=20_000.0).analyse(np.zeros(lat.size), lat, lon, np.zeros(20_000), lat[:20_000],
                                                        lon[:20_000], np.ones(20_000))
    assert err.value.option == "b_length"
    with pytest.raises(OptionError, match="10000000000 pairs of grid points within") as err:  # the ensemble's kernel
        ensemble_from_b(np.zeros(lat.size), lat, lon, 1.0, 20_000.0, members=4)
    assert err.value.option == "b_length"
