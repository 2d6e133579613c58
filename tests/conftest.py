"""Shared fixtures: the real sample data (skipped when absent), CLI runners, a GRIB writer."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from daflow.settings import sample_data_dir
from daflow_cli.main import main


@pytest.fixture(scope="session")
def sample_data():
    """The folder of real GRIB/NetCDF/ENSO files (DAFLOW_SAMPLE_DATA, default ../shared/data)."""
    folder = sample_data_dir()
    if not folder.is_dir():
        pytest.skip(f"sample data folder {folder} is absent (set DAFLOW_SAMPLE_DATA to run these tests)")
    return folder


@pytest.fixture
def daflow():
    """Run ``daflow ARGS...`` in-process; returns click's Result (exit_code, stdout, stderr)."""
    runner = CliRunner()

    def run(*args):
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)

    return run


@pytest.fixture(scope="session")
def daflow_process():
    """Run the installed ``daflow ARGS...`` (the console script beside this Python) as a subprocess,
    for data fixtures shared by a module's tests; CalledProcessError unless ``check=False``."""
    executable = str(Path(sys.executable).with_name("daflow"))

    def run(*args, check=True):
        return subprocess.run([executable, *map(str, args)], check=check, capture_output=True, text=True)

    return run


@pytest.fixture
def write_grib():
    """Write a regular lat/lon GRIB2 file with ecCodes: one message per time."""
    import eccodes

    def write(path, times, lat, lon, values, short_name="2t"):
        with open(path, "wb") as f:
            for time, field in zip(times, values):
                handle = eccodes.codes_grib_new_from_samples("regular_ll_sfc_grib2")
                eccodes.codes_set_key_vals(handle, {
                    "Ni": len(lon), "Nj": len(lat),
                    "latitudeOfFirstGridPointInDegrees": float(lat[0]),
                    "latitudeOfLastGridPointInDegrees": float(lat[-1]),
                    "longitudeOfFirstGridPointInDegrees": float(lon[0]),
                    "longitudeOfLastGridPointInDegrees": float(lon[-1]),
                    "iDirectionIncrementInDegrees": float(lon[1] - lon[0]),
                    "jDirectionIncrementInDegrees": float(abs(lat[1] - lat[0])),
                    "dataDate": int(time.strftime("%Y%m%d")), "dataTime": int(time.strftime("%H%M")),
                    "shortName": short_name,
                })
                eccodes.codes_set_values(handle, np.asarray(field, dtype=float).ravel())
                eccodes.codes_write(handle, f)
                eccodes.codes_release(handle)
        return path

    return write


@pytest.fixture(scope="session")
def l96_truth(tmp_path_factory, daflow_process):
    """A folder with a Lorenz-96 state ``x0.nc`` (dim 40, spun up) and the 21-frame truth ``truth.nc`` run from it."""
    d = tmp_path_factory.mktemp("l96")
    daflow_process("forecast", "--model", "lorenz96", "--param", "dim=40", "--init", "random", "--spinup", 500, "--dt", 0.05,
                   "--steps", 0, "--seed", 3, "-o", d / "x0.nc")
    daflow_process("forecast", "--init", d / "x0.nc", "--steps", 20, "-o", d / "truth.nc")
    return d
