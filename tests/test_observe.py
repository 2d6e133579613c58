"""Synthetic observations: counts, patterns, operators, noise statistics, reproducibility."""
from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from daflow.errors import DataError
from daflow.io.contract import write_dataset
from daflow.obs.synthetic import observe


def _truth(nt=40, ny=16, nx=16, levels=2, seed=0):
    rng = np.random.default_rng(seed)
    return xr.Dataset(
        {"theta": (("time", "level", "y", "x"), rng.normal(0, 3, (nt, levels, ny, nx)))},
        coords={"time": np.arange(nt) * 3600.0, "level": [0, 1]},
    )


def test_fixed_pattern_counts_and_exact_values_on_every_level():
    truth = _truth()
    obs = observe(truth, fraction=0.25, error_std=0.5, seed=1, pattern="fixed")
    per_time = round(0.25 * 256) * 2
    assert obs.sizes["obs"] == 40 * per_time
    cells = obs["y"].values * 16 + obs["x"].values
    first = cells[:per_time]
    assert all(np.array_equal(cells[k * per_time:(k + 1) * per_time], first) for k in range(40))
    assert np.array_equal(first[: per_time // 2], first[per_time // 2:])  # same points on both levels
    it = np.searchsorted(truth["time"].values, obs["time"].values)
    clean = truth["theta"].values[it, obs["level"].values, obs["y"].values, obs["x"].values]
    noise = obs["value"].values - clean
    assert abs(noise.std() - 0.5) < 0.02 and abs(noise.mean()) < 0.02
    assert (obs["qc"].values == 0).all() and set(obs["operator"].values) == {"identity"}


def test_random_pattern_redraws_and_every_k_thins_time():
    obs = observe(_truth(), fraction=0.1, error_std=1.0, seed=2, pattern="random", every=4)
    times = np.unique(obs["time"].values)
    np.testing.assert_array_equal(times, np.arange(0, 40, 4) * 3600.0)
    a = obs["y"].values[obs["time"].values == times[0]]
    b = obs["y"].values[obs["time"].values == times[1]]
    assert not np.array_equal(a, b)


def test_arctan_operator_is_applied_before_noise():
    truth = _truth()
    obs = observe(truth, fraction=1.0, error_std=0.01, seed=3, operator="arctan")
    it = np.searchsorted(truth["time"].values, obs["time"].values)
    clean = np.arctan(truth["theta"].values[it, obs["level"].values, obs["y"].values, obs["x"].values])
    assert abs((obs["value"].values - clean).std() - 0.01) < 5e-4


def test_same_seed_same_bytes_different_seed_differs(tmp_path):
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        write_dataset(observe(_truth(), 0.2, 0.5, seed=seed), tmp_path / f"{name}.nc", "observations")
    a, b, c = (xr.open_dataset(tmp_path / f"{n}.nc") for n in "abc")
    assert a.drop_attrs().identical(b.drop_attrs())
    assert not np.array_equal(a["value"].values, c["value"].values)


def test_bad_requests_are_data_errors():
    ensemble = _truth().expand_dims(member=3)
    with pytest.raises(DataError, match="ensemble"):
        observe(ensemble, 0.1, 1.0)
    with pytest.raises(DataError, match="error-std"):
        observe(_truth(), 0.1, 0.0)
    nan_truth = _truth()
    nan_truth["theta"][:] = np.nan
    with pytest.raises(DataError, match="NaN"):
        observe(nan_truth, 0.5, 1.0)


def test_observe_era5_through_cli_geographic_locations(daflow, sample_data, tmp_path):
    assert daflow("ingest", sample_data / "grib" / "era5-2mt-2019-03-uk.grib", "--time", "2019-03-01/2019-03-01T05:00",
                  "-o", tmp_path / "t.nc").exit_code == 0
    result = daflow("ingest", tmp_path / "t.nc", "--observe", "--fraction", "0.05", "--error-std", "0.5", "--seed", "1", "-o", tmp_path / "o.nc")
    assert result.exit_code == 0, result.stderr
    obs, truth = xr.open_dataset(tmp_path / "o.nc"), xr.open_dataset(tmp_path / "t.nc")
    assert obs.attrs["daflow_kind"] == "observations" and obs.sizes["obs"] == 6 * round(0.05 * 33 * 49)
    at = truth["t2m"].sel(time=xr.DataArray(obs["time"].values), lat=xr.DataArray(obs["lat"].values),
                          lon=xr.DataArray(obs["lon"].values))
    assert abs(float((obs["value"] - at.values).std()) - 0.5) < 0.05
    assert daflow("ingest", tmp_path / "t.nc", "--observe", "--fraction", "0", "-o", tmp_path / "z.nc").exit_code == 2


def test_ingest_of_observations_flags_missing_duplicates_and_out_of_window(daflow, tmp_path):
    obs = observe(_truth(nt=4), fraction=0.25, error_std=1.0, seed=4)
    n = obs.sizes["obs"]
    values = obs["value"].values.copy()
    values[[0, 5]] = np.nan
    obs["value"] = ("obs", values)
    write_dataset(obs, tmp_path / "a.nc", "observations")
    write_dataset(obs.isel(obs=slice(0, 10)), tmp_path / "b.nc", "observations")  # 10 duplicates
    result = daflow("ingest", tmp_path / "a.nc", tmp_path / "b.nc", "--time", "/7200", "-o", tmp_path / "qc.nc")
    assert result.exit_code == 0, result.stderr
    qc = xr.open_dataset(tmp_path / "qc.nc")["qc"].values
    per_time = n // 4
    assert qc.size == n + 10
    assert list(qc[[0, 5]]) == [1, 1]                      # missing, in a.nc
    assert (qc[n:][[0, 5]] == 1).all() and (qc[n:][np.setdiff1d(np.arange(10), [0, 5])] == 2).all()
    assert (qc[3 * per_time:n] == 3).all()                 # the last time is after 7200 s
    assert (qc[np.setdiff1d(np.arange(3 * per_time), [0, 5])] == 0).all()
    assert "qc flagged" in result.stderr and "outside the time window" in result.stderr


def test_time_window_of_the_wrong_kind_is_one_line_naming_the_file(daflow, tmp_path):
    """A date window on model times, or a model-time window on dated reports: exit 65, no output (was exit 70)."""
    write_dataset(_truth(nt=4), tmp_path / "t.nc", "state")
    result = daflow("ingest", tmp_path / "t.nc", "--observe", "--time", "2000-01-01/", "-o", tmp_path / "o.nc")
    assert result.exit_code == 65 and "t.nc: --time 2000-01-01/: the input's times are model times" in result.stderr
    (tmp_path / "obs.csv").write_text("station,lat,lon,elevation,time,variable,value\n"
                                      "07149,48.72,2.38,89,2018-11-20T12:00Z,t2m,280.5\n")
    result = daflow("ingest", tmp_path / "obs.csv", "--time", "0/3600", "-o", tmp_path / "o.nc")
    assert result.exit_code == 65 and "obs.csv: --time 0/3600: the input's times are calendar dates" in result.stderr
    assert not (tmp_path / "o.nc").exists()


def test_observation_options_without_observe_are_usage_errors(daflow, tmp_path):
    """`ingest truth.nc --fraction 0.1 -o obs.nc` wrote the state under the observations' name (the flag forgotten)."""
    write_dataset(_truth(nt=4), tmp_path / "t.nc", "state")
    result = daflow("ingest", tmp_path / "t.nc", "--fraction", "0.1", "--every", "2", "-o", tmp_path / "o.nc")
    assert result.exit_code == 2 and "--fraction, --every draw synthetic observations: add --observe" in result.output
    (tmp_path / "black.txt").write_text("07149\n")
    result = daflow("ingest", tmp_path / "t.nc", "--blacklist", tmp_path / "black.txt", "-o", tmp_path / "o.nc")
    assert result.exit_code == 2 and "--blacklist: applies to report files" in result.output
    assert not (tmp_path / "o.nc").exists()
