"""Issue 19: nothing lost, nothing hung, nothing silently wrong (each case fails on the old main)."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

DAFLOW = str(Path(sys.executable).with_name("daflow"))


def digest(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def l96(l96_truth, daflow_process):
    """A Lorenz-96 truth (conftest), full observations of it and a 10-member ensemble."""
    d = l96_truth
    daflow_process("ingest", d / "truth.nc", "--observe", "--fraction", 1, "--error-std", 1, "--seed", 5, "-o", d / "obs.nc")
    daflow_process("forecast", "--init", d / "x0.nc", "--members", 10, "--perturb", 1, "--seed", 7, "-o", d / "ens.nc")
    return d


# --- outputs: never an input, never a special file; symlinks followed ---

def test_output_equal_to_an_input_is_refused_before_work(daflow, l96, tmp_path):
    obs = tmp_path / "obs.nc"
    obs.write_bytes((l96 / "obs.nc").read_bytes())
    before = digest(obs)
    result = daflow("assimilate", "--method", "letkf", "--init", l96 / "ens.nc", "--obs", obs, "-o", obs)
    assert result.exit_code == 2
    assert "same file" in result.output and "--obs" in result.output
    assert digest(obs) == before


def test_output_hard_linked_to_an_input_is_refused(daflow, l96, tmp_path):
    os.link(l96 / "truth.nc", tmp_path / "alias.nc")
    before = digest(l96 / "truth.nc")
    result = daflow("score", "--truth", l96 / "truth.nc", "--forecast", l96 / "truth.nc", "-o", tmp_path / "alias.nc")
    assert result.exit_code == 2
    assert digest(l96 / "truth.nc") == before


def test_two_outputs_naming_one_file_are_refused(daflow, l96, tmp_path):
    result = daflow("score", "--truth", l96 / "truth.nc", "--forecast", l96 / "truth.nc", "-o", tmp_path / "s.nc",
                    "--csv", tmp_path / "s.nc")
    assert result.exit_code == 2
    assert not (tmp_path / "s.nc").exists()


def test_fifo_output_is_refused_and_kept(daflow, l96, tmp_path):
    fifo = tmp_path / "pipe.nc"
    os.mkfifo(fifo)
    result = daflow("forecast", "--init", l96 / "x0.nc", "--steps", 1, "-o", fifo)
    assert result.exit_code == 73
    assert "FIFO" in result.output
    assert fifo.is_fifo()


def test_device_output_is_refused(daflow, l96):
    result = daflow("forecast", "--init", l96 / "x0.nc", "--steps", 1, "-o", "/dev/null")
    assert result.exit_code == 73
    assert Path("/dev/null").is_char_device()


def test_symlink_output_replaces_the_target_and_keeps_the_link(daflow, l96, tmp_path):
    target = tmp_path / "sub" / "target.nc"
    target.parent.mkdir()
    target.write_bytes(b"")
    link = tmp_path / "link.nc"
    link.symlink_to(target)
    result = daflow("forecast", "--init", l96 / "x0.nc", "--steps", 1, "-o", link)
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and target.stat().st_size > 0
    assert sorted(p.name for p in target.parent.iterdir()) == ["target.nc"]


def test_forecast_init_directory_is_a_usage_error(daflow, tmp_path):
    result = daflow("forecast", "--init", tmp_path, "--steps", 1, "-o", tmp_path / "y.nc")
    assert result.exit_code == 2


# --- signals: no temporary file, prompt exit 130 / 143, also while the NetCDF is written ---

@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
@pytest.mark.parametrize("moment", ["computing", "writing"])
def test_signal_leaves_nothing_and_exits_promptly(tmp_path, sig, code, moment):
    out = tmp_path / "big.nc"
    steps = 4000 if moment == "computing" else 30
    process = subprocess.Popen([DAFLOW, "forecast", "--model", "lorenz96", "--param", "dim=20000", "--init", "random",
                                "--members", "4", "--spinup", "0", "--steps", str(steps), "--seed", "1", "-o", str(out)],
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if moment == "computing" and _torch_loaded(process.pid):  # torch is imported inside the command
            time.sleep(1.0)
            break
        tmp = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
        if moment == "writing" and tmp and tmp[0].stat().st_size > 1_000_000:
            break
        time.sleep(0.01)
    assert process.poll() is None, "the run ended before the signal could be sent"
    process.send_signal(sig)
    sent = time.monotonic()
    _, stderr = process.communicate(timeout=20)
    assert time.monotonic() - sent < 10
    assert process.returncode == code, stderr
    assert f"interrupted by {sig.name}" in stderr
    assert list(tmp_path.iterdir()) == []


def _torch_loaded(pid: int) -> bool:
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


# --- score: NaN/Inf are a data error unless masked, and then masked alike in every metric ---

def _with_values(src, dst, index, value):
    import xarray as xr

    d = xr.open_dataset(src).load()
    name = next(iter(d.data_vars))
    d[name][index] = value
    d.to_netcdf(dst)
    return dst


def test_score_refuses_a_forecast_holding_inf(daflow, l96, tmp_path):
    bad = _with_values(l96 / "ens.nc", tmp_path / "ens_inf.nc", (0, 0, slice(0, 5)), float("inf"))
    result = daflow("score", "--truth", l96 / "x0.nc", "--forecast", bad, "--json")
    assert result.exit_code == 65
    assert "ens_inf.nc: x has 5 NaN/Inf values, the first at time 0" in result.output


def test_score_refuses_nan_in_the_truth_naming_the_first_time(daflow, l96, tmp_path):
    bad = _with_values(l96 / "truth.nc", tmp_path / "truth_nan.nc", (slice(7, 9), 3), float("nan"))
    result = daflow("score", "--truth", bad, "--forecast", l96 / "truth.nc", "--json")
    assert result.exit_code == 65
    assert "truth_nan.nc: x has 2 NaN/Inf values, the first at time 0.35" in result.output


def test_score_mask_nonfinite_uses_one_mask_for_every_metric(daflow, l96, tmp_path):
    import json

    import numpy as np
    import xarray as xr

    bad = _with_values(l96 / "ens.nc", tmp_path / "ens_inf.nc", (3, 0, slice(0, 5)), float("inf"))
    result = daflow("score", "--truth", l96 / "x0.nc", "--forecast", bad, "--json", "--mask-nonfinite")
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    f = xr.open_dataset(l96 / "ens.nc")["x"].values[:, 0, 5:]
    y = xr.open_dataset(l96 / "x0.nc")["x"].values[0, 5:]
    assert figures["nonfinite_masked"] == 5
    assert figures["rmse"] == pytest.approx(np.sqrt(((f.mean(0) - y) ** 2).mean()), rel=1e-12)
    assert figures["spread"] == pytest.approx(np.sqrt(f.var(0, ddof=1).mean()), rel=1e-12)
    assert sum(figures["rank_histogram"]) == 35


# --- time axes: sorted on read, duplicates refused; the final step kept ---

def test_forecast_continues_from_the_latest_time_of_an_unsorted_file(daflow, l96, tmp_path):
    import xarray as xr

    truth = xr.open_dataset(l96 / "truth.nc").load()
    truth.isel(time=[*range(15, 21), *range(15)]).to_netcdf(tmp_path / "unsorted.nc")
    result = daflow("forecast", "--init", tmp_path / "unsorted.nc", "--steps", 1, "-o", tmp_path / "cont.nc")
    assert result.exit_code == 0, result.output
    assert "not in increasing order" in result.output
    assert xr.open_dataset(tmp_path / "cont.nc").time.values[0] == truth.time.values[-1]


def test_repeated_time_is_a_data_error(daflow, l96, tmp_path):
    import xarray as xr

    xr.open_dataset(l96 / "truth.nc").load().isel(time=[0, 1, 1, 2]).to_netcdf(tmp_path / "dup.nc")
    result = daflow("forecast", "--init", tmp_path / "dup.nc", "--steps", 1, "-o", tmp_path / "cont.nc")
    assert result.exit_code == 65
    assert "time 0.05 appears more than once" in result.output


def test_output_every_keeps_the_final_state(daflow, l96, tmp_path):
    import numpy as np
    import xarray as xr

    assert daflow("forecast", "--init", l96 / "x0.nc", "--steps", 25, "--output-every", 10, "-o", tmp_path / "every.nc").exit_code == 0
    assert daflow("forecast", "--init", l96 / "x0.nc", "--steps", 25, "-o", tmp_path / "all.nc").exit_code == 0
    every, full = xr.open_dataset(tmp_path / "every.nc"), xr.open_dataset(tmp_path / "all.nc")
    np.testing.assert_allclose(every.time.values, [0, 0.5, 1.0, 1.25])
    np.testing.assert_array_equal(every["x"].values, full["x"].isel(time=[0, 10, 20, 25]).values)


# --- checkpoints: absurd or hostile configs are refused at once ---

def _checkpoint(folder, **architecture):
    import json

    from daflow.nn.checkpoint import CONFIG, FORMAT

    folder.mkdir()
    arch = {"levels": 1, "ny": 16, "nx": 16, "history": 2, **architecture}
    (folder / CONFIG).write_text(json.dumps({"format": FORMAT, "architecture": arch, "training": {"epoch": 1}}))
    return folder


@pytest.mark.parametrize("setting, message", [
    ({"depth": 10**9}, "depth = 1000000000 is not a whole number in [1, 128]"),
    ({"patch": 0}, "patch = 0 is not a whole number"),
    ({"heads": 0}, "heads = 0 is not a whole number"),
    ({"width": 100, "heads": 3}, "width 100 is not a multiple of heads 3"),
    ({"width": 8192, "depth": 128}, "parameters"),
    ({"depth": "3"}, "depth = 3 is not a whole number"),
])
def test_absurd_architecture_is_refused_before_allocation(tmp_path, setting, message):
    from daflow.errors import DataError
    from daflow.nn.checkpoint import load_denoiser

    folder = _checkpoint(tmp_path / "model", **setting)
    start = time.monotonic()
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_denoiser(folder)
    assert time.monotonic() - start < 1


def test_deeply_nested_or_fifo_config_is_a_data_error(tmp_path):
    from daflow.errors import DataError
    from daflow.nn.checkpoint import CONFIG, read_config

    nested = tmp_path / "nested"
    nested.mkdir()
    (nested / CONFIG).write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DataError, match="nested too deeply|not a JSON"):
        read_config(nested)
    fifo = tmp_path / "fifo"
    fifo.mkdir()
    os.mkfifo(fifo / CONFIG)
    with pytest.raises(DataError, match="not a regular file"):
        read_config(fifo)


def test_storm_forecast_with_a_huge_depth_exits_65(daflow, l96, tmp_path):
    folder = _checkpoint(tmp_path / "model", depth=10**9)
    result = daflow("forecast", "--model", "storm", "--checkpoint", folder, "--init", l96 / "truth.nc", "--steps", 1,
                    "-o", tmp_path / "f.nc")
    assert result.exit_code == 65
    assert "depth = 1000000000" in result.output


# --- the background (gross-error) check, the same for every method ---

@pytest.mark.parametrize("method, mode", [("letkf", "--init"), ("etkf", "--background"), ("enkf", "--background")])
def test_a_wild_observation_is_rejected_and_flagged(daflow, l96, tmp_path, method, mode):
    import numpy as np
    import xarray as xr

    obs = xr.open_dataset(l96 / "obs.nc").load()
    obs["value"][5] = 1e12
    obs.to_netcdf(tmp_path / "obs_bad.nc")
    result = daflow("assimilate", "--method", method, mode, l96 / "ens.nc", "--obs", tmp_path / "obs_bad.nc", "--seed", 1,
                    "-o", tmp_path / "an.nc")
    assert result.exit_code == 0, result.output
    assert "1 observation(s) failed the background check" in result.output
    an = xr.open_dataset(tmp_path / "an.nc")
    assert np.isfinite(an["x"].values).all() and np.abs(an["x"].values).max() < 100
    flagged = an["obs_qc"].values == 6
    assert flagged.sum() == 1 and an["obs_value"].values[flagged][0] == 1e12


def test_background_check_keeps_a_drifted_ensemble_s_observations():
    """Every O-B large (an ensemble far from the truth): the robust scale grows, nothing is rejected;
    one wild value among them still is."""
    import numpy as np
    import torch

    from daflow.da.etkf import ETKF
    from daflow.core.grid import StateGrid
    from daflow.core.observations import ObsBatch
    from daflow.obs.operators import get_operator

    n = 40
    grid = StateGrid("x", ("i",), (n,), {"i": np.arange(n)})
    g = torch.Generator().manual_seed(0)
    background = 0.1 * torch.randn(10, n, generator=g, dtype=torch.float64)
    value = 8.0 + torch.randn(n, generator=g, dtype=torch.float64)  # O-B ~ 8 sigma everywhere
    batch = ObsBatch(0.0, np.arange(n), value, torch.ones(n, dtype=torch.float64), torch.arange(n), np.arange(n),
                     [(get_operator("identity"), None)])
    filt = ETKF(grid)
    assert filt.background_check(background, batch) is batch
    value[7] = 1e12
    kept = filt.background_check(background, batch)
    assert len(kept.rows) == n - 1 and 7 not in kept.rows
    assert list(filt.rejected_rows()) == [7]
    assert ETKF(grid, qc_k=0).background_check(background, batch) is batch


@pytest.mark.parametrize("chunks", ["time=0", "time=-3", "time=x"])
def test_bad_chunks_are_a_usage_error(daflow, l96, tmp_path, chunks):
    result = daflow("ingest", l96 / "truth.nc", "--chunks", chunks, "-o", tmp_path / "c.nc")
    assert result.exit_code == 2
    assert not (tmp_path / "c.nc").exists()


# --- a real gridded ensemble (no model attributes) can be analysed by the ensemble filters ---

@pytest.mark.parametrize("method", ["letkf", "etkf"])
def test_ingested_grib_ensemble_is_analysable(daflow, sample_data, tmp_path, method):
    import numpy as np
    import xarray as xr

    assert daflow("ingest", sample_data / "grib" / "era5-levels-members.grib", "-o", tmp_path / "era.nc").exit_code == 0
    xr.open_dataset(tmp_path / "era.nc").isel(member=0).to_netcdf(tmp_path / "m0.nc")
    assert daflow("ingest", tmp_path / "m0.nc", "--var", "t", "--observe", "--fraction", 0.05, "--error-std", 1, "--seed", 9,
                  "-o", tmp_path / "obs.nc").exit_code == 0
    extra = ["--loc-radius", 1000] if method == "letkf" else []
    result = daflow("assimilate", "--method", method, "--background", tmp_path / "era.nc", "--obs", tmp_path / "obs.nc",
                    *extra, "-o", tmp_path / "an.nc")
    assert result.exit_code == 0, result.output
    an, bg = xr.open_dataset(tmp_path / "an.nc"), xr.open_dataset(tmp_path / "era.nc").isel(time=[-1])
    np.testing.assert_array_equal(an["z"].values, bg["z"].values)  # not observed: unchanged
    assert np.abs(an["t"].values - bg["t"].values).max() > 0.1
    assert np.abs(an["obs_oma"].values).mean() < np.abs(an["obs_omb"].values).mean()
    cycled = daflow("assimilate", "--method", method, "--init", tmp_path / "era.nc", "--obs", tmp_path / "obs.nc",
                    "-o", tmp_path / "an2.nc")
    assert cycled.exit_code == 65 and "daflow_model" in cycled.output


def test_score_table_keeps_full_figures_when_piped(daflow, l96):
    import json

    figures = json.loads(daflow("score", "--truth", l96 / "x0.nc", "--forecast", l96 / "ens.nc", "--json").stdout)
    table = daflow("score", "--truth", l96 / "x0.nc", "--forecast", l96 / "ens.nc").stdout
    assert "…" not in table and "..." not in table
    for key in ("rmse", "spread", "crps", "crps_fair"):
        assert f"{figures[key]:.4g}" in table


def test_scores_carry_each_variable_s_units(daflow, sample_data, tmp_path):
    import xarray as xr

    assert daflow("ingest", sample_data / "grib" / "era5-levels-members.grib", "-o", tmp_path / "era.nc").exit_code == 0
    era = xr.open_dataset(tmp_path / "era.nc")
    era.isel(member=0).to_netcdf(tmp_path / "m0.nc")
    result = daflow("score", "--truth", tmp_path / "m0.nc", "--forecast", tmp_path / "era.nc", "-o", tmp_path / "s.nc",
                    "--plot", tmp_path / "s.png")
    assert result.exit_code == 0, result.output
    scores = xr.open_dataset(tmp_path / "s.nc")
    units = dict(zip(scores["variable"].values.astype(str), scores["units"].values.astype(str)))
    assert units == {v: era[v].attrs["units"] for v in units} and len(set(units.values())) == 2
    assert "units" not in scores["rmse"].attrs


def test_outputs_of_one_command_land_together_or_not_at_all(daflow, l96, tmp_path):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where a folder is needed")
    result = daflow("score", "--truth", l96 / "x0.nc", "--forecast", l96 / "ens.nc", "-o", tmp_path / "s.nc",
                    "--csv", tmp_path / "s.csv", "--plot", blocked / "s.png")
    assert result.exit_code == 73
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocked"]


def test_output_group_renames_only_when_every_output_is_complete(tmp_path):
    from daflow.io.atomic import atomic_path, output_group

    with pytest.raises(RuntimeError):
        with output_group():
            with atomic_path(tmp_path / "a.txt") as tmp:
                tmp.write_text("a")
            raise RuntimeError("the second output failed")
    assert list(tmp_path.iterdir()) == []
    with output_group():
        with atomic_path(tmp_path / "a.txt") as tmp:
            tmp.write_text("a")
        assert list(tmp_path.glob("a.txt")) == []
    assert (tmp_path / "a.txt").read_text() == "a"


def test_scheduler_that_is_not_an_address_is_a_usage_error(daflow, l96, tmp_path):
    result = daflow("score", "--truth", l96 / "x0.nc", "--forecast", l96 / "ens.nc", "--scheduler", "notaurl")
    assert result.exit_code == 2
    assert "--scheduler" in result.output or "scheduler" in result.output


def test_reversed_lag_range_is_explained(daflow, l96, tmp_path):
    result = daflow("causal", l96 / "truth.nc", "--target", "x", "--lags", "5-2", "-o", tmp_path / "c.nc")
    assert result.exit_code == 2
    assert "FIRST <= LAST" in result.output


def test_forecast_from_a_file_with_no_time_is_a_data_error(daflow, l96, tmp_path):
    import xarray as xr

    xr.open_dataset(l96 / "truth.nc").load().isel(time=slice(0, 0)).drop_encoding().to_netcdf(tmp_path / "empty.nc")
    result = daflow("forecast", "--init", tmp_path / "empty.nc", "--steps", 1, "-o", tmp_path / "f.nc")
    assert result.exit_code == 65
    assert "has no time" in result.output


def test_rename_onto_an_existing_name_is_a_usage_error(daflow, sample_data, tmp_path):
    result = daflow("ingest", sample_data / "grib" / "era5-levels-members.grib", "--rename", "z=t", "-o", tmp_path / "r.nc")
    assert result.exit_code == 2
    assert "already taken" in result.output
    assert not (tmp_path / "r.nc").exists()


def test_a_non_finite_generative_forecast_is_a_data_error():
    import numpy as np
    import xarray as xr

    from daflow.api import _check_finite_forecast
    from daflow.errors import DataError

    values = np.zeros((2, 4, 3, 3))
    ds = xr.Dataset({"q": (("member", "time", "y", "x"), values)}, coords={"time": [0.0, 1.0, 2.0, 3.0]})
    _check_finite_forecast(ds, "model")
    values[1, 2, 0, 1] = np.nan
    with pytest.raises(DataError, match="model: the forecast of q is NaN/Inf from time 2.0"):
        _check_finite_forecast(xr.Dataset({"q": (("member", "time", "y", "x"), values)}, coords={"time": [0.0, 1.0, 2.0, 3.0]}),
                               "model")


def test_json_output_has_null_for_nan_and_inf():
    import json

    from click.testing import CliRunner

    from daflow_cli.common import print_json

    import click
    import numpy as np

    @click.command()
    def show():
        print_json({"a": float("nan"), "b": [1.0, float("inf")], "c": np.float64("nan"), "d": {"e": 2.5}})

    out = CliRunner().invoke(show).output
    assert json.loads(out) == {"a": None, "b": [1.0, None], "c": None, "d": {"e": 2.5}}


def test_zero_surrogates_is_a_usage_error(daflow, l96, tmp_path):
    result = daflow("causal", l96 / "truth.nc", "--target", "x", "--surrogates", 0, "-o", tmp_path / "c.nc")
    assert result.exit_code == 2
    assert not (tmp_path / "c.nc").exists()


def test_a_diverged_filter_is_reported():
    import numpy as np
    import torch
    import xarray as xr

    from daflow.core.cycle import warn_if_diverged
    from daflow.core.observations import ObsBatch
    from daflow.errors import DaflowWarning

    n, cycles = 40, 10
    rng = np.random.default_rng(0)
    obs = xr.Dataset({"value": ("obs", rng.normal(size=n * cycles)), "error_std": ("obs", np.ones(n * cycles))})
    batches = [ObsBatch(float(k), np.arange(k * n, (k + 1) * n), None, None, None, None, []) for k in range(cycles)]
    calibrated = {"background_mean": torch.zeros(n * cycles), "background_spread": torch.zeros(n * cycles)}
    assert warn_if_diverged(obs, batches, calibrated) == pytest.approx(1.0, abs=0.15)
    diverged = {"background_mean": torch.full((n * cycles,), 4.5), "background_spread": torch.full((n * cycles,), 0.18)}
    with pytest.warns(DaflowWarning, match="obs.nc: O-B is 4.6 times its expected size"):
        warn_if_diverged(obs, batches, diverged, "obs.nc")
