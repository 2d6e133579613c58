"""daflow train: bit-for-bit resume, torchrun data-parallel on 2 CPU processes, checkpoints that refuse
pickles and mismatched data (exit 65), and the generative forecast/analysis through the CLI."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from safetensors.torch import load_file

from daflow.io.contract import write_dataset

TINY = """[architecture]
width = 24
depth = 1
heads = 2
patch = 4
[training]
batch_size = 8
"""


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """A travelling wave on 2 levels of an 8 x 12 grid, 40 hourly frames, and a tiny architecture."""
    folder = tmp_path_factory.mktemp("train")
    rng = np.random.default_rng(0)
    t, y, x = np.arange(40), np.arange(8), np.arange(12)
    wave = np.sin(2 * np.pi * x / 12 + 0.3 * t[:, None, None, None] + np.arange(2)[None, :, None, None])
    field = wave * np.cos(2 * np.pi * y / 8)[:, None] + 0.1 * rng.standard_normal((40, 2, 8, 12))
    ds = xr.Dataset({"theta": (("time", "level", "y", "x"), 280 + 5 * field, {"units": "K"})},
                    coords={"time": ("time", 3600.0 * t, {"units": "s"}), "level": [0, 1], "y": y, "x": x})
    write_dataset(ds, folder / "truth.nc", "state")
    (folder / "tiny.toml").write_text(TINY)
    return folder


def _train(daflow, folder, out, epochs, *extra, config=None):
    result = daflow("train", "--data", folder / "truth.nc", "--history", 2, "--epochs", epochs,
                    "--config", config or folder / "tiny.toml", "-o", out, *extra)
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize("history_noise", [0.0, 0.3])
def test_resume_is_bit_for_bit(series, daflow, tmp_path, history_noise):
    """Also with the history perturbation, whose draws come from the checkpointed generator."""
    config = tmp_path / "config.toml"
    config.write_text(TINY + f"history_noise = {history_noise}\n")
    straight = _train(daflow, series, tmp_path / "straight", 3, config=config)
    stopped = _train(daflow, series, tmp_path / "stopped", 1, config=config)
    result = daflow("train", "--data", series / "truth.nc", "--history", 2, "--epochs", 3, "-o", stopped, "--resume")
    assert result.exit_code == 0, result.output
    for name in ("model.safetensors", "training.safetensors"):
        assert (straight / name).read_bytes() == (stopped / name).read_bytes(), name


def test_torchrun_two_processes_equals_one(series, daflow, tmp_path):
    """Gradients averaged over 2 gloo processes give the single-process step on the whole batch."""
    single = _train(daflow, series, tmp_path / "single", 1)
    daflow_bin = Path(sys.executable).with_name("daflow")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc_per_node", "2", "--no-python",
                    str(daflow_bin), "train", "--data", str(series / "truth.nc"), "--history", "2", "--epochs", "1",
                    "--config", str(series / "tiny.toml"), "-o", str(tmp_path / "ddp")],
                   check=True, env=env, capture_output=True, timeout=120)
    one, two = load_file(single / "model.safetensors"), load_file(tmp_path / "ddp" / "model.safetensors")
    assert one.keys() == two.keys()
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5)


def test_generative_forecast_and_analysis(series, daflow, tmp_path):
    model = _train(daflow, series, tmp_path / "model", 1)
    obs = tmp_path / "obs.nc"
    assert daflow("ingest", series / "truth.nc", "--observe", "--fraction", 0.25, "--error-std", 0.5, "--seed", 1, "-o", obs).exit_code == 0
    result = daflow("assimilate", "--method", "storm", "--checkpoint", model, "--background", series / "truth.nc",
                    "--obs", obs, "--members", 3, "--seed", 0, "-o", tmp_path / "an.nc")
    assert result.exit_code == 0, result.output
    result = daflow("forecast", "--model", "storm", "--checkpoint", model, "--init", series / "truth.nc",
                    "--steps", 2, "--members", 2, "--seed", 0, "-o", tmp_path / "fc.nc")
    assert result.exit_code == 0, result.output
    an, fc = xr.open_dataset(tmp_path / "an.nc"), xr.open_dataset(tmp_path / "fc.nc")
    truth = xr.open_dataset(series / "truth.nc")
    assert an.theta.sizes == {"member": 3, "time": 1, "level": 2, "y": 8, "x": 12}
    assert an.time.values[0] == truth.time.values[-1]
    assert fc.theta.sizes["member"] == 2 and fc.time.values.tolist() == [140400.0, 144000.0, 147600.0]
    assert np.isfinite(an.theta).all() and np.isfinite(fc.theta).all()


def test_pickled_or_mismatched_checkpoint_exits_65(series, daflow, tmp_path):
    model = _train(daflow, series, tmp_path / "model", 1)
    obs = tmp_path / "obs.nc"
    daflow("ingest", series / "truth.nc", "--observe", "--fraction", 0.25, "--error-std", 0.5, "--seed", 1, "-o", obs)
    evil = tmp_path / "evil"
    evil.mkdir()
    shutil.copy(model / "config.json", evil)
    import pickle
    (evil / "model.safetensors").write_bytes(pickle.dumps({"x": 1}))
    args = ("--background", series / "truth.nc", "--obs", obs, "--members", 2, "-o", tmp_path / "a.nc")
    result = daflow("assimilate", "--method", "storm", "--checkpoint", evil, *args)
    assert result.exit_code == 65 and "not a safetensors file" in result.output
    assert not (tmp_path / "a.nc").exists()
    other = tmp_path / "other.nc"
    write_dataset(xr.open_dataset(series / "truth.nc").isel(x=slice(0, 8)).load(), other, "state")
    result = daflow("forecast", "--model", "storm", "--checkpoint", model, "--init", other, "--steps", 1, "-o", tmp_path / "f.nc")
    assert result.exit_code == 65 and "does not match" in result.output
    result = daflow("train", "--data", series / "truth.nc", "--history", 3, "--epochs", 2, "-o", model, "--resume")
    assert result.exit_code == 65 and "--history 2" in result.output


def _observe(daflow, folder, times, out):
    """Observations (25% of the points, error 0.5) of the truth at the given frame indices."""
    subset = folder / f"truth_{'_'.join(map(str, times))}.nc"
    write_dataset(xr.open_dataset(folder / "truth.nc").isel(time=times).load(), subset, "state")
    result = daflow("ingest", subset, "--observe", "--fraction", 0.25, "--error-std", 0.5, "--seed", 1, "-o", out)
    assert result.exit_code == 0, result.output
    return out


def test_storm_cycles_on_its_own_analyses_with_diagnostics(series, daflow, tmp_path):
    """--init cycles through every observation time (forecasting across a gap of two steps); the
    observation-space diagnostics are H of the written ensembles, and O-B, O-A the departures."""
    model = _train(daflow, series, tmp_path / "model", 1)
    init = tmp_path / "init.nc"
    write_dataset(xr.open_dataset(series / "truth.nc").isel(time=slice(0, 30)).load(), init, "state")
    obs = _observe(daflow, series, [30, 31, 33], tmp_path / "obs.nc")
    result = daflow("assimilate", "--method", "storm", "--checkpoint", model, "--init", init, "--obs", obs,
                    "--members", 3, "--seed", 0, "-o", tmp_path / "an.nc")
    assert result.exit_code == 0, result.output
    an = xr.open_dataset(tmp_path / "an.nc")
    assert an.theta.sizes == {"member": 3, "time": 3, "level": 2, "y": 8, "x": 12}
    assert an.time.values.tolist() == [3600.0 * t for t in (30, 31, 33)]
    cycle = np.searchsorted(an.time.values, an.obs_time.values)
    at = an.theta.values[:, cycle, an.obs_level.values.astype(int), an.obs_y.values.astype(int), an.obs_x.values.astype(int)]
    np.testing.assert_allclose(an.obs_analysis_mean, at.mean(0), rtol=0, atol=1e-4)
    np.testing.assert_allclose(an.obs_analysis_spread, at.std(0, ddof=1), rtol=0, atol=1e-4)
    np.testing.assert_allclose(an.obs_omb, an.obs_value - an.obs_background_mean, atol=1e-5)
    np.testing.assert_allclose(an.obs_oma, an.obs_value - an.obs_analysis_mean, atol=1e-5)
    assert np.isfinite(an.obs_background_spread).all() and (an.obs_background_spread > 0).all()


def test_storm_one_cycle_equals_one_analysis(series, daflow, tmp_path):
    """Cycling from frames 0..29 to an observation at frame 30 is the analysis of a background ending
    at frame 30 (its last frame unused), draw for draw with the same seed."""
    model = _train(daflow, series, tmp_path / "model", 1)
    init, background = tmp_path / "init.nc", tmp_path / "background.nc"
    truth = xr.open_dataset(series / "truth.nc").load()
    write_dataset(truth.isel(time=slice(0, 30)), init, "state")
    write_dataset(truth.isel(time=slice(0, 31)), background, "state")
    obs = _observe(daflow, series, [30], tmp_path / "obs.nc")
    common = ("--method", "storm", "--checkpoint", model, "--obs", obs, "--members", 2, "--seed", 5)
    assert daflow("assimilate", *common, "--init", init, "-o", tmp_path / "cycled.nc").exit_code == 0
    assert daflow("assimilate", *common, "--background", background, "-o", tmp_path / "once.nc").exit_code == 0
    cycled, once = xr.open_dataset(tmp_path / "cycled.nc"), xr.open_dataset(tmp_path / "once.nc")
    np.testing.assert_array_equal(cycled.theta.values, once.theta.values)
    np.testing.assert_array_equal(cycled.obs_omb.values, once.obs_omb.values)


def test_storm_history_inflation_perturbs_each_members_history(series, daflow, tmp_path):
    """--history-inflation 0 is the plain run draw for draw (no draws spent); > 0 conditions every
    member on its own perturbed history, so the same seed gives other analyses; the setting is recorded."""
    model = _train(daflow, series, tmp_path / "model", 1)
    init = tmp_path / "init.nc"
    write_dataset(xr.open_dataset(series / "truth.nc").isel(time=slice(0, 30)).load(), init, "state")
    obs = _observe(daflow, series, [30, 31], tmp_path / "obs.nc")
    common = ("--method", "storm", "--checkpoint", model, "--init", init, "--obs", obs, "--members", 3, "--seed", 2)
    runs = {}
    for name, extra in (("plain", ()), ("zero", ("--history-inflation", 0)), ("inflated", ("--history-inflation", 0.5))):
        assert daflow("assimilate", *common, *extra, "-o", tmp_path / f"{name}.nc").exit_code == 0
        runs[name] = xr.open_dataset(tmp_path / f"{name}.nc")
    np.testing.assert_array_equal(runs["zero"].theta.values, runs["plain"].theta.values)
    assert np.abs(runs["inflated"].theta.values - runs["plain"].theta.values).max() > 1e-3
    assert runs["inflated"].attrs["history_inflation"] == 0.5
    assert daflow("assimilate", *common, "--history-inflation", -1, "-o", tmp_path / "bad.nc").exit_code == 2


def test_storm_window_lag_through_the_cli(series, daflow, tmp_path):
    """A model of T = 2 target frames cycles with --lag 0 (look-ahead) and --lag 1 (re-analysis); the
    written diagnostics are H of the written (revised) analyses; a lag beyond T - 1 is a usage error."""
    config = tmp_path / "window.toml"
    config.write_text(TINY.replace("patch = 4\n", "patch = 4\ntarget = 2\n"))
    model = _train(daflow, series, tmp_path / "model", 1, config=config)
    init = tmp_path / "init.nc"
    write_dataset(xr.open_dataset(series / "truth.nc").isel(time=slice(0, 30)).load(), init, "state")
    obs = _observe(daflow, series, [30, 31, 33], tmp_path / "obs.nc")
    common = ("--method", "storm", "--checkpoint", model, "--init", init, "--obs", obs, "--members", 2, "--seed", 0)
    for lag in (0, 1):
        result = daflow("assimilate", *common, "--lag", lag, "-o", tmp_path / f"lag{lag}.nc")
        assert result.exit_code == 0, result.output
        an = xr.open_dataset(tmp_path / f"lag{lag}.nc")
        assert an.attrs["lag"] == lag and an.attrs["lookahead"] == 1 - lag and an.attrs["window_frames"] == 2
        cycle = np.searchsorted(an.time.values, an.obs_time.values)
        at = an.theta.values[:, cycle, an.obs_level.values.astype(int), an.obs_y.values.astype(int), an.obs_x.values.astype(int)]
        np.testing.assert_allclose(an.obs_analysis_mean, at.mean(0), rtol=0, atol=1e-4)
        assert np.isfinite(an.theta.values).all()
    result = daflow("assimilate", *common, "--lag", 2, "-o", tmp_path / "bad.nc")
    assert result.exit_code == 2 and "lag" in result.output and "2 target frame" in result.output
    assert not (tmp_path / "bad.nc").exists()


def test_storm_cycle_refuses_observations_off_the_model_steps(series, daflow, tmp_path):
    model = _train(daflow, series, tmp_path / "model", 1)
    init = tmp_path / "init.nc"
    write_dataset(xr.open_dataset(series / "truth.nc").isel(time=slice(0, 30)).load(), init, "state")
    obs = _observe(daflow, series, [29, 31], tmp_path / "obs.nc")
    result = daflow("assimilate", "--method", "storm", "--checkpoint", model, "--init", init, "--obs", obs,
                    "--members", 2, "-o", tmp_path / "an.nc")
    assert result.exit_code == 65 and "init.nc's last time" in result.output and "outside every analysis window" in result.output
    assert not (tmp_path / "an.nc").exists()
    half = tmp_path / "half.nc"
    xr.open_dataset(_observe(daflow, series, [30, 31], tmp_path / "obs2.nc")).load().pipe(
        lambda o: o.assign(time=o.time + 1800.0)).to_netcdf(half)
    result = daflow("assimilate", "--method", "storm", "--checkpoint", model, "--init", init, "--obs", half,
                    "--members", 2, "-o", tmp_path / "an.nc")
    assert result.exit_code == 65 and "not a whole number of model steps" in result.output


def test_storm_bad_input_exits_65_with_one_line(series, daflow, tmp_path):
    """A state of another variable or level set than the checkpoint's, observations of another variable,
    errors <= 0: exit 65, one line naming the file."""
    model = _train(daflow, series, tmp_path / "model", 1)
    truth = xr.open_dataset(series / "truth.nc").load()
    obs = xr.open_dataset(_observe(daflow, series, [30, 31], tmp_path / "obs.nc")).load()
    files = {"init.nc": truth.isel(time=slice(0, 30)), "other_variable.nc": truth.isel(time=slice(0, 30)).rename(theta="temp"),
             "one_level.nc": truth.isel(time=slice(0, 30), level=[0])}
    for name, ds in files.items():
        write_dataset(ds, tmp_path / name, "state")
    bad_obs = {"obs_variable.nc": obs.assign(variable=("obs", np.full(obs.sizes["obs"], "temp"))),
               "obs_zero.nc": obs.assign(error_std=obs.error_std * 0), "obs_negative.nc": obs.assign(error_std=-obs.error_std)}
    for name, ds in bad_obs.items():
        ds.to_netcdf(tmp_path / name)
    cases = [("other_variable.nc", "obs.nc", "no variable 'theta'"), ("one_level.nc", "obs.nc", "does not match"),
             ("init.nc", "obs_variable.nc", "temp"), ("init.nc", "obs_zero.nc", "error_std"), ("init.nc", "obs_negative.nc", "error_std")]
    for init, observations, message in cases:
        result = daflow("assimilate", "--method", "storm", "--checkpoint", model, "--init", tmp_path / init,
                        "--obs", tmp_path / observations, "--members", 2, "-o", tmp_path / "an.nc")
        lines = result.output.strip().splitlines()
        assert result.exit_code == 65 and len(lines) == 1 and message in lines[0], (init, observations, result.output)
        assert (init if init != "init.nc" else observations) in lines[0]
    assert not (tmp_path / "an.nc").exists()


def test_storm_refuses_a_state_of_another_grid_time_step_or_units(series, daflow, tmp_path):
    """A state of the checkpoint's shape but on other coordinates, level values, time step or units (they were
    accepted, the model then run on a grid or in units it never saw): exit 65, one line naming the file,
    nothing written, for assimilate and forecast alike."""
    model = _train(daflow, series, tmp_path / "model", 1)
    obs = _observe(daflow, series, [30, 31], tmp_path / "obs.nc")
    with xr.open_dataset(series / "truth.nc") as ds:
        truth = ds.isel(time=slice(0, 30)).load()
    files = {"moved.nc": (truth.assign_coords(x=2.0 * truth.x + 100), "x coordinates 100..122"),
             "other_levels.nc": (truth.assign_coords(level=[500, 850]), "level coordinates 500..850"),
             "six_hourly.nc": (truth.assign_coords(time=21600.0 * np.arange(30)), "time step 21600 s"),
             "celsius.nc": (truth.assign(theta=(truth.theta - 273.15).assign_attrs(units="degC")), "'degC'")}
    for name, (ds, message) in files.items():
        write_dataset(ds, tmp_path / name, "state")
        for command in (("assimilate", "--method", "storm", "--obs", obs, "--members", 2),
                        ("forecast", "--model", "storm", "--steps", 1)):
            result = daflow(*command, "--checkpoint", model, "--init", tmp_path / name, "-o", tmp_path / "out.nc")
            lines = result.output.strip().splitlines()
            assert result.exit_code == 65 and len(lines) == 1 and message in lines[0] and name in lines[0], (command, result.output)
            assert not (tmp_path / "out.nc").exists()


def _forecast(daflow, model, init, out, seed=0):
    result = daflow("forecast", "--model", "storm", "--checkpoint", model, "--init", init, "--steps", 1,
                    "--members", 3, "--seed", seed, "-o", out)
    assert result.exit_code == 0, result.output
    return xr.open_dataset(out).theta.values[:, 1]  # (member, level, y, x): the sampled frame


def test_increment_model_adds_its_draw_to_the_last_frame(series, daflow, tmp_path):
    """With learning rate 0 the network F is 0, so D(x; sigma) = x / (1 + sigma^2), the exact denoiser
    of r ~ N(0, I): both models draw the same r from the same seed, and map it to x = mu + s r
    ("state") and x = x_{t-1} + s_inc r ("increment", from the last frame of the init file)."""
    frozen = TINY.replace("batch_size = 8", "batch_size = 8\nlearning_rate = 0.0")
    draws = {}
    for predict in ("state", "increment"):
        (tmp_path / f"{predict}.toml").write_text(f"{frozen}[normalisation]\npredict = \"{predict}\"\n")
        result = daflow("train", "--data", series / "truth.nc", "--history", 2, "--epochs", 1,
                        "--config", tmp_path / f"{predict}.toml", "-o", tmp_path / predict)
        assert result.exit_code == 0, result.output
        norm = json.loads((tmp_path / predict / "config.json").read_text())["normalisation"]
        assert norm["predict"] == predict
        x = _forecast(daflow, tmp_path / predict, series / "truth.nc", tmp_path / f"{predict}.nc")
        last = xr.open_dataset(series / "truth.nc").theta.values[-1]
        origin = np.array(norm["mean"])[:, None, None] if predict == "state" else last
        draws[predict] = (x - origin) / np.array(norm["std" if predict == "state" else "increment_std"])[:, None, None]
    np.testing.assert_allclose(draws["increment"], draws["state"], rtol=0, atol=2e-4)
    assert draws["state"].std() > 0.5


def test_checkpoint_without_predict_loads_as_state(series, daflow, tmp_path):
    """A checkpoint written before the options (no normalisation.predict, no .centre) samples as the
    climate-centred state model it is, and resumes as one; an unknown predict or centre in the TOML
    exits 65, and centre = "history" is recorded."""
    (tmp_path / "state.toml").write_text(f"{TINY}[normalisation]\npredict = \"state\"\n")
    assert daflow("train", "--data", series / "truth.nc", "--history", 2, "--epochs", 1,
                  "--config", tmp_path / "state.toml", "-o", tmp_path / "new").exit_code == 0
    shutil.copytree(tmp_path / "new", tmp_path / "old")
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    del config["normalisation"]["predict"], config["normalisation"]["centre"]
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))
    np.testing.assert_array_equal(_forecast(daflow, tmp_path / "old", series / "truth.nc", tmp_path / "old.nc"),
                                  _forecast(daflow, tmp_path / "new", series / "truth.nc", tmp_path / "new.nc"))
    result = daflow("train", "--data", series / "truth.nc", "--history", 2, "--epochs", 2, "-o", tmp_path / "old", "--resume")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "old" / "config.json").read_text())["normalisation"]
    assert record["predict"] == "state" and record["centre"] == "climate"
    for key, value in (("predict", "tendency"), ("centre", "period")):
        (tmp_path / "bad.toml").write_text(f"{TINY}[normalisation]\n{key} = \"{value}\"\n")
        result = daflow("train", "--data", series / "truth.nc", "--history", 2, "--epochs", 1,
                        "--config", tmp_path / "bad.toml", "-o", tmp_path / "bad")
        assert result.exit_code == 65 and key in result.output and len(result.output.strip().splitlines()) == 1
    (tmp_path / "centred.toml").write_text(f"{TINY}[normalisation]\ncentre = \"history\"\n")
    assert daflow("train", "--data", series / "truth.nc", "--history", 2, "--epochs", 1,
                  "--config", tmp_path / "centred.toml", "-o", tmp_path / "centred").exit_code == 0
    assert json.loads((tmp_path / "centred" / "config.json").read_text())["normalisation"]["centre"] == "history"


@pytest.mark.parametrize("setting, message", [
    ("learning_rate = -1", "learning_rate = -1 is not a number >= 0"),           # was exit 70 from AdamW
    ("learning_rate = nan", "learning_rate = nan is not a number >= 0"),
    ("batch_size = 0", "batch_size = 0 is not a whole number >= 1"),             # was ZeroDivisionError, exit 70
    ("grad_clip = 0", "grad_clip = 0 is not a number > 0"),
    ('seed = "8"', "seed = 8 is not a whole number"),
    ("history_noise = -0.3", "history_noise = -0.3 is not a number >= 0"),     # was trained on as if 0.3
    ("validation_fraction = 1.0", "validation_fraction = 1.0 is not a number in [0, 1)"),
])
def test_training_settings_out_of_range_exit_65_naming_the_file(series, daflow, tmp_path, setting, message):
    (tmp_path / "bad.toml").write_text(TINY.replace("batch_size = 8", setting))
    result = daflow("train", "--data", series / "truth.nc", "--history", 2, "--epochs", 1, "--config", tmp_path / "bad.toml",
                    "-o", tmp_path / "m")
    assert result.exit_code == 65 and f"bad.toml: [training] {message}" in result.output, result.output
    assert not (tmp_path / "m").exists()


def test_every_training_setting_has_bounds():
    from dataclasses import fields

    from daflow.nn.training import TRAINING_BOUNDS, TrainingOptions

    assert set(TRAINING_BOUNDS) == {f.name for f in fields(TrainingOptions)}


def test_resume_with_a_different_config_is_refused_naming_the_settings(series, daflow, tmp_path):
    """--resume keeps the stored configuration; a --config that differs was silently ignored."""
    _train(daflow, series, tmp_path / "m", 1)
    (tmp_path / "other.toml").write_text(TINY.replace("batch_size = 8", "batch_size = 4\nlearning_rate = 0.01"))
    result = daflow("train", "--data", series / "truth.nc", "--history", 2, "--epochs", 2, "--resume",
                    "--config", tmp_path / "other.toml", "-o", tmp_path / "m")
    assert result.exit_code == 65, result.output
    assert "[training] batch_size = 4 (trained with 8); [training] learning_rate = 0.01 (trained with 0.001)" in result.output
    assert json.loads((tmp_path / "m" / "config.json").read_text())["training"]["epoch"] == 1
