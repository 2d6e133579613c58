"""daflow ingest on the real sample files and on GRIB files written here with ecCodes."""
from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr


def _cfgrib(path, **filters):
    kwargs = {"indexpath": "", "filter_by_keys": filters}
    return xr.open_dataset(path, engine="cfgrib", backend_kwargs=kwargs)


def test_era5_t2m_round_trip(daflow, sample_data, tmp_path):
    src = sample_data / "grib" / "era5-2mt-2019-03-uk.grib"
    result = daflow("ingest", src, "-o", tmp_path / "t2m.nc")
    assert result.exit_code == 0, result.stderr
    out = xr.open_dataset(tmp_path / "t2m.nc")
    assert dict(out["t2m"].sizes) == {"time": 744, "lat": 33, "lon": 49}
    assert out.attrs["daflow_kind"] == "state" and "daflow ingest" in out.attrs["history"]
    ref = _cfgrib(src).rename(latitude="lat", longitude="lon")
    np.testing.assert_array_equal(out["t2m"].values, ref["t2m"].sortby("lat").values)
    np.testing.assert_array_equal(out["time"].values, ref["valid_time"].values)
    assert np.all(np.diff(out["lat"].values) > 0)


def test_era5_ensemble_levels_become_member_and_level(daflow, sample_data, tmp_path):
    src = sample_data / "grib" / "era5-levels-members.grib"
    assert daflow("ingest", src, "-o", tmp_path / "ens.nc").exit_code == 0
    out = xr.open_dataset(tmp_path / "ens.nc")
    ref = _cfgrib(src)
    for name in ("z", "t"):
        assert out[name].dims == ("member", "time", "level", "lat", "lon")
        assert dict(out[name].sizes) == {"member": 10, "time": 4, "level": 2, "lat": 61, "lon": 120}
        expected = ref[name].sortby("latitude").transpose("number", "time", "isobaricInhPa", "latitude", "longitude")
        np.testing.assert_array_equal(out[name].values, expected.values)
    assert out["member"].attrs["standard_name"] == "realization"
    np.testing.assert_array_equal(out["level"].values, [850.0, 500.0])


def test_corrupted_grib_exit_65_one_line_no_output(daflow, sample_data, tmp_path):
    result = daflow("ingest", sample_data / "grib" / "era5-levels-corrupted.grib", "-o", tmp_path / "bad.nc")
    assert result.exit_code == 65
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "era5-levels-corrupted.grib" in lines[0] and "corrupted" in lines[0]
    assert list(tmp_path.iterdir()) == []  # neither the output nor a temporary file


def test_heterogeneous_grib_lists_filters_and_filter_works(daflow, sample_data, tmp_path):
    src = sample_data / "grib" / "nam.t00z.awp21100.tm00.grib2"
    result = daflow("ingest", src, "-o", tmp_path / "nam.nc")
    assert result.exit_code == 65
    assert "--filter typeOfLevel=surface" in result.stderr and "--filter typeOfLevel=isobaricInhPa" in result.stderr
    assert not (tmp_path / "nam.nc").exists()
    result = daflow("ingest", src, "--filter", "typeOfLevel=isobaricInhPa", "-o", tmp_path / "nam.nc")
    assert result.exit_code == 0
    assert "skipped GRIB variable absv" in result.stderr  # cfgrib drops it; the user is told how to get it
    out = xr.open_dataset(tmp_path / "nam.nc")
    ref = _cfgrib(src, typeOfLevel="isobaricInhPa")
    assert out["t"].dims == ("time", "level", "y", "x") and out["lat"].dims == ("y", "x")
    np.testing.assert_array_equal(out["t"].values[0], ref["t"].values)


def test_filter_on_a_netcdf_is_refused(daflow, sample_data, tmp_path):
    result = daflow("ingest", sample_data / "netcdf" / "eraint_uvz.nc", "--filter", "typeOfLevel=surface", "-o", tmp_path / "x.nc")
    assert result.exit_code == 65 and "GRIB files only" in result.stderr


def test_netcdf_round_trip(daflow, sample_data, tmp_path):
    import netCDF4

    src = sample_data / "netcdf" / "eraint_uvz.nc"
    assert daflow("ingest", src, "--var", "u", "--sel", "month=1", "-o", tmp_path / "u.nc").exit_code == 0
    out = xr.open_dataset(tmp_path / "u.nc")
    assert list(out.data_vars) == ["u"] and out["u"].dims == ("level", "lat", "lon")
    with netCDF4.Dataset(src) as raw:
        np.testing.assert_array_equal(out["u"].values, raw["u"][0][:, ::-1, :])  # month 1, lat made ascending


def test_several_grib_files_join_along_time_with_window_and_chunks(daflow, write_grib, tmp_path):
    lat, lon = np.array([20.0, 10.0, 0.0]), np.arange(0.0, 360.0, 30.0)
    rng = np.random.default_rng(0)
    times = pd.date_range("2020-01-01", periods=8, freq="6h")
    values = rng.normal(280, 5, (8, 3, 12))
    write_grib(tmp_path / "a.grib", times[:4], lat, lon, values[:4])
    write_grib(tmp_path / "b.grib", times[4:], lat, lon, values[4:])
    result = daflow("ingest", tmp_path / "b.grib", tmp_path / "a.grib", "--chunks", "time=3",
                    "--time", "2020-01-01T06:00Z/2020-01-02T06:00Z", "-o", tmp_path / "ab.nc")
    assert result.exit_code == 0, result.stderr
    out = xr.open_dataset(tmp_path / "ab.nc")
    np.testing.assert_array_equal(out["time"].values, times[1:6].values)
    decoded = np.concatenate([_cfgrib(tmp_path / f)["t2m"].values for f in ("a.grib", "b.grib")])
    np.testing.assert_array_equal(out["t2m"].values, decoded[1:6, ::-1, :])


def test_bbox_across_the_greenwich_meridian(daflow, write_grib, tmp_path):
    lat, lon = np.array([20.0, 10.0, 0.0]), np.arange(0.0, 360.0, 30.0)
    values = np.arange(36.0).reshape(1, 3, 12)
    write_grib(tmp_path / "g.grib", pd.date_range("2020-01-01", periods=1), lat, lon, values)
    assert daflow("ingest", tmp_path / "g.grib", "--bbox", "-60,5,30,20", "-o", tmp_path / "box.nc").exit_code == 0
    out = xr.open_dataset(tmp_path / "box.nc")
    np.testing.assert_array_equal(out["lon"].values, [-60.0, -30.0, 0.0, 30.0])
    np.testing.assert_array_equal(out["lat"].values, [10.0, 20.0])
    full = _cfgrib(tmp_path / "g.grib")["t2m"].values  # one message: cfgrib has no time dim
    np.testing.assert_array_equal(out["t2m"].values[0], full[[1, 0]][:, [10, 11, 0, 1]])
    result = daflow("ingest", tmp_path / "g.grib", "--bbox", "100,50,120,60", "-o", tmp_path / "none.nc")
    assert result.exit_code == 65 and "holds no grid point" in result.stderr
    for box, message in (("0,20,10,10", "needs -90 <= S <= N <= 90 (S = 20, N = 10)"), ("0,-95,10,0", "(S = -95, N = 0)"),
                         ("nan,0,10,10", "must be finite numbers")):  # NaN was taken, and selected nothing (exit 65)
        result = daflow("ingest", tmp_path / "g.grib", "--bbox", box, "-o", tmp_path / "bad.nc")
        assert result.exit_code == 2 and message in result.output, result.output


def test_missing_input_and_unknown_variable(daflow, sample_data, tmp_path):
    assert daflow("ingest", tmp_path / "absent.grib", "-o", tmp_path / "x.nc").exit_code == 66
    result = daflow("ingest", sample_data / "grib" / "era5-2mt-2019-03-uk.grib", "--var", "sst", "-o", tmp_path / "x.nc")
    assert result.exit_code == 65 and "no variable sst; it has t2m" in result.stderr


def test_knmi_decimal_year_index(daflow, sample_data, tmp_path):
    assert daflow("ingest", sample_data / "enso" / "iersst_nino3.4a.txt", "-o", tmp_path / "n.nc").exit_code == 0
    out = xr.open_dataset(tmp_path / "n.nc")
    assert list(out.data_vars) == ["Nino34"] and out["Nino34"].attrs["units"] == "K"
    assert pd.Timestamp(out["time"].values[0]) == pd.Timestamp("1854-01-01")
    assert pd.Timestamp(out["time"].values[-1]) == pd.Timestamp("2022-09-01")
    assert out.sizes["time"] == (2022 - 1854) * 12 + 9  # every month once
    assert np.isclose(out["Nino34"].values[0], -0.666466)


def test_knmi_monthly_columns_with_missing_values(daflow, sample_data, tmp_path):
    src = sample_data / "enso" / "iera5_u10m_160-180E_5--5N_n.dat"
    assert daflow("ingest", src, "--name", "u10", "-o", tmp_path / "u.nc").exit_code == 0
    u = xr.open_dataset(tmp_path / "u.nc")["u10"]
    assert u.attrs["units"] == "m/s"
    assert pd.Timestamp(u["time"].values[0]) == pd.Timestamp("1950-01-01")
    assert np.isnan(u.sel(time="2022-10-01")) and np.isclose(u.sel(time="2022-09-01"), -5.463451)


def test_csv_index_with_sentinel_and_blank_rows(daflow, sample_data, tmp_path):
    assert daflow("ingest", sample_data / "enso" / "soi.long.csv", "-o", tmp_path / "soi.nc").exit_code == 0
    soi = xr.open_dataset(tmp_path / "soi.nc")["SOI"]
    assert pd.Timestamp(soi["time"].values[0]) == pd.Timestamp("1866-01-01")
    assert soi.sizes["time"] == (2025 - 1866) * 12 + 2  # blank trailing rows dropped
    assert np.isclose(soi.values[0], -0.62) and np.isfinite(soi.values).all()


def test_index_text_formats_exactly(daflow, tmp_path):
    (tmp_path / "mid.txt").write_text("# idx [1] mid-month decimal years\n2000.0417 1.5\n2000.125 -999.9\n2000.2083 2.5\n")
    (tmp_path / "two.csv").write_text("date,a,b\n2001-01-01,1,-99.99\n2001-02-01,3,4\n,\n")
    assert daflow("ingest", tmp_path / "mid.txt", "--rename", "idx=index", "-o", tmp_path / "mid.nc").exit_code == 0
    mid = xr.open_dataset(tmp_path / "mid.nc")["index"]
    np.testing.assert_array_equal(mid["time"].values, pd.date_range("2000-01-01", periods=3, freq="MS").values)
    np.testing.assert_array_equal(mid.values, [1.5, np.nan, 2.5])
    assert daflow("ingest", tmp_path / "two.csv", "-o", tmp_path / "two.nc").exit_code == 0
    two = xr.open_dataset(tmp_path / "two.nc")
    np.testing.assert_array_equal(two["b"].values, [np.nan, 4.0])
    result = daflow("ingest", tmp_path / "two.csv", "--name", "x", "-o", tmp_path / "x.nc")
    assert result.exit_code == 65 and "--name needs a single series" in result.stderr


def test_cds_era5_netcdf_names_become_the_contracts(daflow, tmp_path):
    """The CDS's ERA5 NetCDF (since 2024) names its dimensions valid_time and pressure_level; they were
    kept, so the ingested file had no time for `--observe`, `forecast` or `score` (exit 65 downstream)."""
    rng = np.random.default_rng(0)
    values = 280 + rng.normal(size=(4, 2, 5, 6))
    ds = xr.Dataset({"t": (("valid_time", "pressure_level", "latitude", "longitude"), values, {"units": "K"})},
                    coords={"valid_time": pd.date_range("2020-01-01", periods=4, freq="6h"), "pressure_level": [850.0, 500.0],
                            "latitude": np.linspace(60, 50, 5), "longitude": np.arange(6.0) * 2, "number": 0})
    ds.to_netcdf(tmp_path / "cds.nc")
    other = xr.Dataset({"u": (("t", "lat", "lon"), values[:, 0])},
                       coords={"t": ("t", ds["valid_time"].values, {"axis": "T"}), "lat": np.arange(5.0), "lon": np.arange(6.0)})
    other.to_netcdf(tmp_path / "axis.nc")
    for name in ("cds", "axis"):
        assert daflow("ingest", tmp_path / f"{name}.nc", "-o", tmp_path / f"{name}_in.nc").exit_code == 0
    out = xr.open_dataset(tmp_path / "cds_in.nc")
    assert out["t"].dims == ("time", "level", "lat", "lon")
    np.testing.assert_array_equal(out["t"].values, values[:, :, ::-1])  # latitude ascending
    assert xr.open_dataset(tmp_path / "axis_in.nc")["u"].dims == ("time", "lat", "lon")
    result = daflow("ingest", tmp_path / "cds_in.nc", "--observe", "--fraction", "0.5", "-o", tmp_path / "obs.nc")
    assert result.exit_code == 0, result.output
