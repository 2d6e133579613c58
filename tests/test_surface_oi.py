"""Surface OI with a parametric B on a point grid, and verification against observations (no truth)."""
from __future__ import annotations

import json
import zlib

import numpy as np
import pytest
import xarray as xr

from daflow.da.surface import SurfaceOI, correlation
from daflow.obs.interpolation import PointInterpolator


def test_single_observation_increment_is_the_closed_form():
    """One report: increment at distance r is sb^2 rho(r) / (sb^2 + so^2) * (y - xb)."""
    lat = np.repeat(np.arange(40.0, 60.1, 0.5), 81)
    lon = np.tile(np.arange(-10.0, 30.1, 0.5), 41)
    xb = np.full(lat.size, 280.0)
    oi = SurfaceOI(b_std=2.0, b_length=200.0)
    xa, hxb, hxa, ok = oi.analyse(xb, lat, lon, np.array([283.0]), np.array([50.0]), np.array([10.0]), np.array([1.0]))
    assert ok.all() and hxb[0] == pytest.approx(280.0)
    from daflow.obs.interpolation import chord_to_km, unit_xyz
    r = chord_to_km(np.linalg.norm(unit_xyz(lat, lon) - unit_xyz(50.0, 10.0), axis=-1))
    expected = 280.0 + 4.0 * correlation(r, 200.0, "gaussian") / 5.0 * 3.0
    near = r < 3.7 * 200.0
    assert np.allclose(xa[near], expected[near], atol=1e-9)
    assert np.allclose(xa[~near], 280.0)  # beyond the cut-off (rho < 1e-3) nothing moves
    assert hxa[0] == pytest.approx(280.0 + 2.4)  # 4/5 of the departure at the report


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
    an = xr.open_dataset(tmp_path / "an.nc")
    assert an.attrs["daflow_kind"] == "analysis" and an["t2m"].dims == ("time", "point")
    used = np.isfinite(an["obs_oma"].values)
    assert np.abs(an["obs_oma"].values[used]).mean() < np.abs(an["obs_omb"].values[used]).mean()


def test_score_without_truth_needs_obs(daflow, tmp_path):
    res = daflow("score", "--forecast", tmp_path / "x.nc")
    assert res.exit_code == 2 and "--obs" in res.output
