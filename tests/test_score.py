"""Verification metrics against xskillscore/properscoring and exact oracles."""
from __future__ import annotations

import json

import numpy as np
import properscoring
import pytest
import xarray as xr
import xskillscore as xs

from daflow.errors import DataError
from daflow.io.contract import write_dataset
from daflow.score.metrics import crps_ensemble
from daflow.score.spectra import isotropic_spectrum_2d, periodic_spectrum_1d
from daflow.score.verify import summary, verify


def _geo_pair(members=8, nt=12, seed=0):
    rng = np.random.default_rng(seed)
    lat, lon = np.linspace(-60, 60, 9), np.arange(0, 360, 30.0)
    time = np.array("2020-01-01", dtype="datetime64[ns]") + np.arange(nt) * np.timedelta64(6, "h")
    truth = xr.Dataset({"t": (("time", "lat", "lon"), rng.normal(0, 1, (nt, 9, 12)))},
                       coords={"time": time, "lat": lat, "lon": lon})
    fc = truth["t"].values[None] + rng.normal(0.3, 1.0, (members, nt, 9, 12))
    forecast = xr.Dataset({"t": (("member", "time", "lat", "lon"), fc)}, coords={**truth.coords, "member": np.arange(members)})
    return truth, forecast


def test_rmse_bias_crps_match_xskillscore_and_properscoring():
    truth, forecast = _geo_pair()
    scores = verify(truth, forecast, burn_in=2)
    weights = np.cos(np.deg2rad(truth["lat"])) * xr.ones_like(truth["lon"])
    mean = forecast["t"].mean("member")
    ref_rmse = xs.rmse(mean, truth["t"], dim=["lat", "lon"], weights=weights)
    np.testing.assert_allclose(scores["rmse"].sel(variable="t").values, ref_rmse.values, rtol=1e-12)
    crps_points = properscoring.crps_ensemble(truth["t"].values, np.moveaxis(forecast["t"].values, 0, -1))
    ref_crps = (crps_points * weights.values).sum((1, 2)) / weights.values.sum()
    np.testing.assert_allclose(scores["crps"].sel(variable="t").values, ref_crps, rtol=1e-12)
    ref_bias = xs.me(mean, truth["t"], dim=["lat", "lon"], weights=weights)
    np.testing.assert_allclose(scores["bias"].sel(variable="t").values, ref_bias.values, rtol=1e-10)
    figures = summary(scores)
    assert figures["rmse"] == pytest.approx(float(ref_rmse[2:].mean()), rel=1e-12)
    assert figures["spread_skill"] == pytest.approx(figures["spread"] / figures["rmse"])


def test_rank_histogram_matches_xskillscore_on_tie_free_data():
    truth, forecast = _geo_pair(members=5, nt=6)
    scores = verify(truth, forecast, burn_in=1)
    ref = xs.rank_histogram(truth["t"].isel(time=slice(1, None)), forecast["t"].isel(time=slice(1, None)))
    np.testing.assert_array_equal(scores["rank_histogram"].sel(variable="t").values, ref.values)


def test_fair_crps_equals_pairwise_definition():
    rng = np.random.default_rng(1)
    members, truth = rng.normal(size=(7, 50)), rng.normal(size=50)
    pair = np.abs(members[:, None] - members[None]).sum((0, 1))
    skill = np.abs(members - truth).mean(0)
    np.testing.assert_allclose(crps_ensemble(members, truth, fair=True), skill - pair / (2 * 7 * 6), rtol=1e-12)
    np.testing.assert_allclose(crps_ensemble(members, truth), skill - pair / (2 * 49), rtol=1e-12)


def test_spectra_parseval_and_single_mode():
    rng = np.random.default_rng(2)
    field = rng.normal(size=(5, 40))
    power = periodic_spectrum_1d(field)
    np.testing.assert_allclose(power[1:].sum(), field.var(axis=1).mean(), rtol=1e-12)
    y, x = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    mode = np.cos(2 * np.pi * (3 * x + 4 * y) / 32)  # |k| = 5, variance 1/2
    spec = isotropic_spectrum_2d(mode)
    assert spec[5] == pytest.approx(0.5) and np.delete(spec, 5).max() < 1e-20


def test_observed_unobserved_split_is_exact(daflow, tmp_path):
    rng = np.random.default_rng(3)
    truth = xr.Dataset({"x": (("time", "i"), rng.normal(size=(10, 40)))}, coords={"time": np.arange(10.0)})
    observed = np.arange(0, 40, 4)
    error = np.zeros((10, 40))
    error[:, np.setdiff1d(np.arange(40), observed)] = 2.0
    forecast = truth.copy(data={"x": truth["x"].values + error})
    obs = xr.Dataset({"value": ("obs", np.zeros(100)), "error_std": ("obs", np.ones(100)),
                      "time": ("obs", np.repeat(np.arange(10.0), 10)), "i": ("obs", np.tile(observed, 10)),
                      "variable": ("obs", np.full(100, "x", dtype=object)),
                      "operator": ("obs", np.full(100, "identity", dtype=object)), "qc": ("obs", np.zeros(100, np.int8))})
    for name, ds, kind in (("t", truth, "state"), ("f", forecast, "state"), ("o", obs, "observations")):
        write_dataset(ds, tmp_path / f"{name}.nc", kind)
    result = daflow("score", "--truth", tmp_path / "t.nc", "--forecast", tmp_path / "f.nc", "--obs", tmp_path / "o.nc", "--json")
    figures = json.loads(result.stdout)
    assert figures["rmse_observed"] == 0.0 and figures["rmse_unobserved"] == pytest.approx(2.0)
    assert figures["rmse"] == pytest.approx(2.0 * np.sqrt(30 / 40))


def test_self_score_is_zero_and_outputs_are_written(daflow, tmp_path):
    truth, forecast = _geo_pair(members=4, nt=5)
    write_dataset(truth, tmp_path / "t.nc", "state")
    write_dataset(forecast, tmp_path / "f.nc", "analysis")
    result = daflow("score", "--truth", tmp_path / "t.nc", "--forecast", tmp_path / "t.nc", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["rmse"] == 0.0
    result = daflow("score", "--truth", tmp_path / "t.nc", "--forecast", tmp_path / "f.nc", "--burn-in", "1",
                    "-o", tmp_path / "s.nc", "--csv", tmp_path / "s.csv", "--plot", tmp_path / "s.png")
    assert result.exit_code == 0, result.stderr
    scores = xr.open_dataset(tmp_path / "s.nc")
    assert scores.attrs["daflow_kind"] == "scores" and scores["rank_histogram"].sizes["rank"] == 5
    assert len((tmp_path / "s.csv").read_text().splitlines()) == 1 + 5
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_mismatches_are_data_errors(daflow, tmp_path):
    truth, forecast = _geo_pair(nt=4)
    later = forecast.assign_coords(time=forecast["time"] + np.timedelta64(1, "D"))
    with pytest.raises(DataError, match="no time in common"):
        verify(truth, later)
    with pytest.raises(DataError, match="grid along lat differs"):
        verify(truth, forecast.assign_coords(lat=forecast["lat"] + 1))
    write_dataset(truth, tmp_path / "t.nc", "state")
    result = daflow("score", "--truth", tmp_path / "t.nc", "--forecast", tmp_path / "t.nc", "--burn-in", "4")
    assert result.exit_code == 65 and "--burn-in 4 leaves none" in result.stderr


def test_a_file_without_time_names_the_dimension_to_select():
    """A monthly climatology (month instead of time) was refused with 'shares no gridded variable'."""
    clim = xr.Dataset({"z": (("month", "lat", "lon"), np.zeros((2, 3, 4)))},
                      coords={"month": [1, 7], "lat": [0.0, 1.0, 2.0], "lon": [0.0, 1.0, 2.0, 3.0]})
    with pytest.raises(DataError, match=r"truth: z has no time dimension .*--sel month=VALUE"):
        verify(clim, clim)
