"""recipes/cycle.sh under faults, with real processes: kill -9, concurrent cycles, bad observations."""
from __future__ import annotations

import fcntl
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

ROOT = Path(__file__).resolve().parent.parent
CYCLE = ROOT / "recipes" / "cycle.sh"
DAFLOW = str(Path(sys.executable).with_name("daflow"))
T1, T2 = "2026-01-01T06:00Z", "2026-01-01T12:00Z"


@pytest.fixture(scope="module")
def osse(tmp_path_factory, daflow_process):
    """A Lorenz-96 truth, observations of two cycles and a 10-member initial ensemble."""
    base = tmp_path_factory.mktemp("osse")
    run = daflow_process
    run("forecast", "--model", "lorenz96", "--param", "dim=40", "--init", "random", "--spinup", "300",
        "--steps", "2", "--start", "2026-01-01T00:00Z", "--seed", "3", "-o", base / "truth.nc")
    (base / "incoming").mkdir()
    for k, t in enumerate((T1, T2), start=1):
        stamp = t.replace("-", "").replace("T", "")[:10]
        run("ingest", base / "truth.nc", "--observe", "--fraction", "0.5", "--error-std", "1", "--seed", k,
            "--time", f"{t}/{t}", "-o", base / "incoming" / f"{stamp}.nc")
    run("forecast", "--init", base / "truth.nc", "--members", "10", "--perturb", "1", "--seed", "4", "-o", base / "late.nc")
    truth = xr.open_dataset(base / "truth.nc")
    first = truth.isel(time=[0])
    first.attrs = truth.attrs
    first.to_netcdf(base / "t0.nc")
    run("forecast", "--init", base / "t0.nc", "--members", "10", "--perturb", "1", "--seed", "4", "-o", base / "init.nc")
    return base


def _work(osse, tmp_path, name="work"):
    work = tmp_path / name
    work.mkdir()
    (work / "init.nc").symlink_to(osse / "init.nc")
    return work


def _cycle(work, osse, when, **popen):
    env = {**os.environ, "WORK": str(work), "DAFLOW": DAFLOW, "OBS_DIR": str(osse / "incoming"),
           "TRUTH": str(osse / "truth.nc")}
    return subprocess.Popen(["bash", str(CYCLE), when], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **popen)


def _finish(work, osse, when) -> int:
    proc = _cycle(work, osse, when)
    proc.communicate(timeout=300)
    return proc.returncode


def _wait_until_gone(group: int) -> None:
    while True:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def _analysis(work, stamp="2026010106") -> np.ndarray:
    return xr.open_dataset(work / stamp / "analysis.nc")["x"].values


def test_cycles_chain_and_a_finished_cycle_is_left_alone(osse, tmp_path):
    work = _work(osse, tmp_path)
    assert _finish(work, osse, T1) == 0 and _finish(work, osse, T2) == 0
    assert os.readlink(work / "latest") == "2026010112"
    stamps = {p: p.stat().st_mtime_ns for p in (work / "2026010106").iterdir()}
    assert _finish(work, osse, T1) == 0
    assert {p: p.stat().st_mtime_ns for p in (work / "2026010106").iterdir()} == stamps
    assert os.readlink(work / "latest") == "2026010112"
    truth = xr.open_dataset(osse / "truth.nc")["x"].sel(time="2026-01-01T12:00").values
    background = xr.open_dataset(work / "2026010112" / "background.nc")["x"].isel(time=-1).mean("member").values
    analysis = _analysis(work, "2026010112")[:, 0].mean(0)
    assert np.sqrt(np.mean((analysis - truth) ** 2)) < np.sqrt(np.mean((background - truth) ** 2))


def test_kill_at_random_points_then_rerun_is_identical(osse, tmp_path):
    reference = _work(osse, tmp_path, "reference")
    started = time.monotonic()
    assert _finish(reference, osse, T1) == 0
    duration = time.monotonic() - started
    rng = random.Random(11)
    for trial in range(2):
        work = _work(osse, tmp_path, f"trial{trial}")
        proc = _cycle(work, osse, T1, start_new_session=True)
        time.sleep(rng.uniform(0.2, 0.9) * duration)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        _wait_until_gone(proc.pid)  # as after a crash: the killed run's processes have exited
        assert _finish(work, osse, T1) == 0
        np.testing.assert_array_equal(_analysis(work), _analysis(reference))
        assert not list((work / "2026010106").glob(".*.tmp")), "partial files left behind"


def test_a_second_cycle_exits_75_while_the_lock_is_held(osse, tmp_path):
    work = _work(osse, tmp_path)
    (work / "log").mkdir()
    with open(work / "cycle.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = _cycle(work, osse, T1)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 75 and "another cycle" in err
    assert not (work / "2026010106" / "analysis.nc").exists()
    assert _finish(work, osse, T1) == 0  # nothing was corrupted: the next run completes


def test_missing_observations_forecast_only_and_bad_rows_are_flagged(osse, tmp_path):
    work = _work(osse, tmp_path)
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    obs = xr.open_dataset(osse / "incoming" / "2026010112.nc").load()
    obs["value"][:3] = np.nan
    doubled = xr.concat([obs, obs.isel(obs=slice(0, 5))], dim="obs")
    doubled.attrs = obs.attrs
    doubled.to_netcdf(incoming / "2026010112.nc")
    env_osse = tmp_path / "view"
    env_osse.mkdir()
    (env_osse / "incoming").symlink_to(incoming)
    (env_osse / "truth.nc").symlink_to(osse / "truth.nc")
    assert _finish(work, env_osse, T1) == 0 and _finish(work, env_osse, T2) == 0
    log = (work / "log" / "2026010106.log").read_text()
    assert "no observations" in log and not (work / "2026010106" / "obs.nc").exists()
    log = (work / "log" / "2026010112.log").read_text()
    # the 5 repeated rows include the 3 NaN ones, which are flagged missing first
    assert "qc flagged 8 of 25" in log and "6 missing" in log and "2 duplicate" in log
    qc = xr.open_dataset(work / "2026010112" / "obs.nc")["qc"].values
    assert (qc != 0).sum() == 8
