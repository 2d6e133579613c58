"""ingest and score on a dask.distributed cluster (loopback) give what the local run gives."""
from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as local:
        yield local.scheduler_address


def test_ingest_and_score_on_a_cluster_equal_local(daflow, sample_data, cluster, tmp_path):
    src = sample_data / "grib" / "era5-2mt-2019-03-uk.grib"
    for name, extra in (("local", ()), ("cluster", ("--scheduler", cluster))):
        result = daflow("ingest", src, "--chunks", "time=48", "-o", tmp_path / f"{name}.nc", *extra)
        assert result.exit_code == 0, result.stderr
    local, remote = xr.open_dataset(tmp_path / "local.nc"), xr.open_dataset(tmp_path / "cluster.nc")
    assert local.drop_attrs().identical(remote.drop_attrs())
    daflow("ingest", tmp_path / "local.nc", "--observe", "--fraction", "0.1", "--seed", "2", "-o", tmp_path / "obs.nc")
    shifted = local + 0.5
    shifted.attrs = local.attrs
    shifted.to_netcdf(tmp_path / "shifted.nc")
    args = ("score", "--truth", tmp_path / "local.nc", "--forecast", tmp_path / "shifted.nc", "--obs", tmp_path / "obs.nc", "--json")
    here, there = daflow(*args), daflow(*args, "--scheduler", cluster)
    assert there.exit_code == 0, there.stderr
    assert json.loads(here.stdout) == json.loads(there.stdout)
    assert json.loads(here.stdout)["rmse"] == pytest.approx(0.5, rel=1e-6)


def test_unreachable_scheduler_is_a_temporary_failure(daflow, sample_data, tmp_path):
    result = daflow("ingest", sample_data / "enso" / "soi.long.csv", "--scheduler", "tcp://127.0.0.1:9", "-o", tmp_path / "x.nc")
    assert result.exit_code == 75 and "cannot reach the dask scheduler" in result.stderr
    assert not (tmp_path / "x.nc").exists()


@pytest.mark.parametrize("model,params,steps", [("lorenz96", ("dim=200",), 50), ("sqg", ("N=32",), 6)])
def test_split_ensemble_forecast_equals_one_batch(daflow, cluster, tmp_path, model, params, steps):
    args = ["forecast", "--model", model, *(f"--param={p}" for p in params), "--init", "random", "--members", "6",
            "--spinup", "10", "--steps", str(steps), "--seed", "1"]
    runs = {"batch": (), "local": ("--split", "4"), "cluster": ("--split", "3", "--scheduler", cluster)}
    for name, extra in runs.items():
        result = daflow(*args, *extra, "-o", tmp_path / f"{name}.nc")
        assert result.exit_code == 0, result.stderr
    batch = xr.open_dataset(tmp_path / "batch.nc")
    variable = next(iter(batch.data_vars))
    for name in ("local", "cluster"):
        split = xr.open_dataset(tmp_path / f"{name}.nc")
        np.testing.assert_array_equal(split[variable].values, batch[variable].values)
