"""The in-memory core and the Python API: one locator for every grid, observations from arrays,
the API giving the CLI's arrays, and the error contract (keywords in the library, flags in the CLI)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from click.testing import CliRunner

import daflow
from daflow.core.grid import StateGrid, horizontal_dims, locate
from daflow.core.observations import observation_batches, observations
from daflow.core.time import before, frame_times, steps_between
from daflow.errors import DataError, OptionError
from daflow_cli.main import main


def test_locate_on_every_layout():
    ring = StateGrid("x", ("i",), (40,), {"i": np.arange(40)})
    assert locate({"i": np.array([0, 39])}, ring, 2)[0].tolist() == [0, 39]
    with pytest.raises(DataError, match="outside the grid: i = 40"):
        locate({"i": np.array([40])}, ring, 1, "o.nc")
    box = StateGrid("theta", ("level", "y", "x"), (2, 4, 8), {"level": np.array([0.0, 1.0]), "y": np.arange(4), "x": np.arange(8)})
    flat, column = locate({"y": np.array([1]), "x": np.array([3]), "level": np.array([1.0])}, box, 1)
    assert (flat[0], column[0]) == (32 + 11, 11)
    # a regular lat/lon grid: longitude wraps (-1 and 359.2 are next to 0 and 359), half a spacing is the limit
    geo = StateGrid("t2m", ("lat", "lon"), (3, 360), {"lat": np.array([10.0, 0.0, -10.0]), "lon": np.arange(360.0)})
    flat, _ = locate({"lat": np.array([0.0, 9.0, -10.0]), "lon": np.array([-0.4, 359.2, 180.5])}, geo, 3)
    assert flat.tolist() == [360 + 0, 0 * 360 + 359, 2 * 360 + 180]
    with pytest.raises(DataError, match="outside the grid: lat = 16"):
        locate({"lat": np.array([16.0]), "lon": np.array([0.0])}, geo, 1, "o.nc")
    # unstructured points (a reduced Gaussian grid after ingest): nearest point on the sphere
    lat = np.array([80.0, 80.0, 0.0, 0.0, 0.0, -80.0])
    lon = np.array([0.0, 180.0, 0.0, 120.0, 240.0, 90.0])
    points = StateGrid("t2m", ("point",), (6,), {"point": np.arange(6), "lat": lat, "lon": lon})
    assert horizontal_dims(points.dims) == ("point",)
    flat, _ = locate({"lat": np.array([79.0, 1.0, -2.0]), "lon": np.array([-179.0, 235.0, 360.0])}, points, 3)
    assert flat.tolist() == [1, 4, 2]
    with pytest.raises(DataError, match="no location 'lat'"):
        locate({"i": np.array([1])}, points, 1)


def test_observations_from_arrays_group_by_time():
    grid = StateGrid("x", ("i",), (10,), {"i": np.arange(10)})
    obs = observations(value=[1.0, 2.0, 3.0], error_std=0.5, time=[0.1, 0.05, 0.1], variable="x", i=[2, 4, 6], qc=[0, 0, 1])
    batches = observation_batches(obs, grid)
    assert [float(b.time) for b in batches] == [0.05, 0.1]
    assert batches[0].index.tolist() == [4] and batches[1].index.tolist() == [2]   # qc = 1 is left out
    assert torch.equal(batches[1].apply(torch.arange(10.0, dtype=torch.float64)[None]), torch.tensor([[2.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match="unknown observation location"):
        observations(value=[1.0], error_std=1.0, time=0.0, variable="x", z=[1])


def test_one_time_representation():
    calendar = np.datetime64("2026-01-01T00", "ns")
    times = frame_times(calendar, 3, 0.05, "1")                   # 0.05 Lorenz units = 6 h
    assert times[2] == np.datetime64("2026-01-01T12", "ns")
    assert steps_between(calendar, times[2], 0.05, "1") == 2
    assert before(0.1, 0.2) and not before(0.2, 0.2 + 1e-12)
    with pytest.raises(DataError, match="not a whole number"):
        steps_between(0.0, 0.07, 0.05, "1", "o.nc")


@pytest.fixture(scope="module")
def small_osse():
    x0 = daflow.forecast(model="lorenz96", param={"dim": 12}, init="random", spinup=200, steps=0, seed=1)
    truth = daflow.forecast(init=x0, steps=20)
    obs = daflow.ingest(truth, observe=True, fraction=0.5, error_std=0.5, seed=2)
    ens = daflow.forecast(init=x0, members=6, perturb=1.0, seed=3)
    return x0, truth, obs, ens


def test_api_equals_cli(small_osse, tmp_path):
    x0, truth, obs, ens = small_osse
    run = lambda *args: CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)  # noqa: E731
    for name, ds in (("x0", x0), ("truth", truth), ("obs", obs), ("ens", ens)):
        ds.to_netcdf(tmp_path / f"{name}.nc")
    for name in ("x0", "truth", "ens"):
        xr.open_dataset(tmp_path / f"{name}.nc").assign_attrs(daflow_kind="state").to_netcdf(tmp_path / f"{name}s.nc")
    xr.open_dataset(tmp_path / "obs.nc").assign_attrs(daflow_kind="observations").to_netcdf(tmp_path / "obss.nc")
    assert run("assimilate", "--method", "letkf", "--init", tmp_path / "enss.nc", "--obs", tmp_path / "obss.nc",
               "--inflation", 1.05, "--loc-radius", 3, "-o", tmp_path / "an.nc").exit_code == 0
    api = daflow.assimilate(method="letkf", init=ens, obs=obs, inflation=1.05, loc_radius=3)
    with xr.open_dataset(tmp_path / "an.nc") as cli:
        assert np.array_equal(cli["x"].values, api["x"].values)
        assert np.array_equal(cli["obs_omb"].values, api["obs_omb"].values, equal_nan=True)
    scores = daflow.score(truth=truth, forecast=api, burn_in=5)
    assert 0 < daflow.summary(scores)["rmse"] < 2


def test_option_errors_name_keywords_in_the_api_and_flags_in_the_cli(small_osse, tmp_path):
    _, _, obs, ens = small_osse
    with pytest.raises(OptionError, match="method etkf does not take loc_radius") as err:
        daflow.assimilate(method="etkf", init=ens, obs=obs, loc_radius=3)
    assert err.value.option == "loc_radius" and err.value.exit_code == 2
    with pytest.raises(OptionError, match="method oi needs climatology"):
        daflow.assimilate(method="oi", init=ens, obs=obs)
    ens.assign_attrs(daflow_kind="state").to_netcdf(tmp_path / "ens.nc")
    obs.assign_attrs(daflow_kind="observations").to_netcdf(tmp_path / "obs.nc")
    cli = [str(Path(sys.executable).with_name("daflow")), "assimilate", "--init", str(tmp_path / "ens.nc"),
           "--obs", str(tmp_path / "obs.nc"), "-o", str(tmp_path / "an.nc")]
    wrong = subprocess.run([*cli, "--method", "etkf", "--loc-radius", "3"], capture_output=True, text=True)
    assert wrong.returncode == 2 and "--loc-radius" in wrong.stderr, wrong.stderr
    assert not (tmp_path / "an.nc").exists()


def test_an_internal_numerical_failure_exits_70(small_osse, tmp_path):
    """A singular matrix inside an analysis is a software failure (70), not a usage error (2)."""
    x0, truth, obs, ens = small_osse
    # OI whose climatology is one state repeated: B = 0 and, with zero-error observations, H B H^T + R is singular
    flat = xr.concat([truth.isel(time=[0])] * 3, "time").assign_coords(time=[0.0, 1.0, 2.0])
    flat.assign_attrs(daflow_kind="state").to_netcdf(tmp_path / "clim.nc")
    obs.assign(error_std=obs["error_std"] * 0 + 1e-300).assign_attrs(daflow_kind="observations").to_netcdf(tmp_path / "obs.nc")
    ens.assign_attrs(daflow_kind="state").to_netcdf(tmp_path / "ens.nc")
    exe = str(Path(sys.executable).with_name("daflow"))
    out = subprocess.run([exe, "assimilate", "--method", "oi", "--init", str(tmp_path / "ens.nc"), "--obs", str(tmp_path / "obs.nc"),
                          "--climatology", str(tmp_path / "clim.nc"), "-o", str(tmp_path / "an.nc")], capture_output=True, text=True)
    assert out.returncode == 70, out.stderr
    assert "internal error" in out.stderr and not (tmp_path / "an.nc").exists()


def test_the_lazy_api_is_listed_and_a_wrong_input_type_is_named():
    assert set(daflow.__all__) <= set(dir(daflow))  # lazily imported verbs show in dir() and tab completion
    with pytest.raises(TypeError, match="expected an xarray Dataset or a file path, not ndarray"):
        daflow.score(np.zeros(3), np.zeros(3))  # was "expected str, bytes or os.PathLike object" from deep inside
