"""Issue 19, part B: the CLI cases (requests that cannot fit, causal inputs, options a method does
not take, the seed of a run, the model list); each test fails on the main before its fix."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def l96(l96_truth):
    """A Lorenz-96 state and a 21-frame truth run from it (conftest)."""
    return l96_truth


# --- 1. requests that cannot fit: refused with the figure before anything is allocated ---

@pytest.mark.parametrize("args, option", [
    (["--steps", 10**12], "--steps"),
    (["--members", 10**9], "--members"),
])
def test_a_run_that_cannot_fit_is_refused_with_the_figure(daflow, l96, tmp_path, args, option):
    result = daflow("forecast", "--init", l96 / "x0.nc", *args, "-o", tmp_path / "f.nc")
    assert result.exit_code == 2, result.output
    assert option in result.output and "TiB of memory" in result.output and "is available" in result.output
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("model, param", [("lorenz96", "dim=1000000000000"), ("sqg", "N=100000")])
def test_a_model_too_large_to_build_is_refused_before_its_operators(daflow, tmp_path, model, param):
    result = daflow("forecast", "--model", model, "--init", "random", "--param", param, "-o", tmp_path / "f.nc")
    assert result.exit_code == 2, result.output
    assert "--param" in result.output and "of memory" in result.output


def test_an_overriding_parameter_is_checked_against_the_file_before_building(daflow, l96, tmp_path):
    result = daflow("forecast", "--init", l96 / "x0.nc", "--param", "dim=1000000000000", "-o", tmp_path / "f.nc")
    assert result.exit_code == 65, result.output
    assert "x0.nc" in result.output and "{'i': 1000000000000}" in result.output


def test_memory_estimate_counts_frames_members_and_operators():
    import torch

    from daflow.core.memory import human
    from daflow.core.state import kept_count, kept_steps
    from daflow.errors import OptionError
    from daflow.models.lorenz import Lorenz96
    from daflow.models.run import check_run_fits
    from daflow.models.sqg import SQG

    assert human(1536) == "1.5 KiB" and human(3 * 1024**4) == "3 TiB"
    assert all(kept_count(s, k) == len(kept_steps(s, k)) for s in range(0, 30) for k in range(1, 12))
    assert Lorenz96.shape_for({"dim": 7}) == Lorenz96(dim=7).state_shape
    assert SQG.shape_for({"N": 8}) == SQG(N=8).state_shape and SQG.shape_for({}) == (2, 64, 64)
    assert SQG.default("dtype") == torch.float32 and Lorenz96.default("dtype") == torch.float64
    check_run_fits(SQG, {}, None, 20, 601)  # the README's SQG truth run fits
    with pytest.raises(OptionError, match="need 2.91 TiB") as err:  # (10^10 + 8) x 40 float64
        check_run_fits(Lorenz96, {}, None, 1, 10**10)
    assert err.value.option == "steps"


# --- 3. one rule: an option the chosen run does not take is refused (read from the run's signature) ---

def test_a_storm_only_forecast_option_is_refused_for_a_model_run(daflow, l96, tmp_path):
    result = daflow("forecast", "--init", l96 / "x0.nc", "--sample-steps", 5, "--steps", 1, "-o", tmp_path / "f.nc")
    assert result.exit_code == 2 and "--sample-steps" in result.output and "lorenz96" in result.output, result.output
    assert not (tmp_path / "f.nc").exists()


def test_a_model_run_option_is_refused_for_the_generative_forecast(daflow, l96, tmp_path):
    result = daflow("forecast", "--model", "storm", "--checkpoint", tmp_path / "absent", "--init", l96 / "x0.nc",
                    "--perturb", 1, "-o", tmp_path / "f.nc")
    assert result.exit_code == 2 and "--perturb" in result.output and "storm" in result.output, result.output


# --- 4. a run without --seed records the seed it drew: the history line repeats it ---

def _rerun(daflow, ds_path, output):
    """Run the command of the newest history line again, writing ``output``."""
    import shlex

    import xarray as xr

    args = shlex.split(xr.open_dataset(ds_path).attrs["history"].splitlines()[0])[2:]  # after the time stamp and "daflow"
    args[args.index("-o") + 1] = str(output)
    assert daflow(*args).exit_code == 0
    return args


@pytest.mark.parametrize("command", [
    ["forecast", "--init", "{x0}", "--members", 4, "--perturb", 1, "--steps", 2],
    ["ingest", "{truth}", "--observe", "--fraction", 0.5, "--error-std", 1],
    ["assimilate", "--method", "enkf", "--init", "{ens}", "--obs", "{obs}"],
])
def test_a_run_without_seed_records_the_seed_that_repeats_it(daflow, l96, tmp_path, command):
    import numpy as np
    import xarray as xr

    files = {"x0": l96 / "x0.nc", "truth": l96 / "truth.nc", "ens": tmp_path / "ens.nc", "obs": tmp_path / "obs.nc"}
    assert daflow("forecast", "--init", files["x0"], "--members", 5, "--perturb", 1, "--seed", 1, "-o", files["ens"]).exit_code == 0
    assert daflow("ingest", files["truth"], "--observe", "--fraction", 1, "--seed", 2, "-o", files["obs"]).exit_code == 0
    args = [str(a).format(**files) for a in command]
    assert daflow(*args, "-o", tmp_path / "a.nc").exit_code == 0
    assert daflow(*args, "-o", tmp_path / "b.nc").exit_code == 0
    a, b = xr.open_dataset(tmp_path / "a.nc"), xr.open_dataset(tmp_path / "b.nc")
    name = "value" if command[0] == "ingest" else "x"
    assert not np.array_equal(a[name].values, b[name].values)  # two unseeded runs draw differently
    rerun = _rerun(daflow, tmp_path / "a.nc", tmp_path / "again.nc")
    assert rerun[-2] == "--seed" and int(rerun[-1]) >= 0
    np.testing.assert_array_equal(xr.open_dataset(tmp_path / "again.nc")[name].values, a[name].values)


def test_a_run_that_draws_nothing_records_no_seed(daflow, l96, tmp_path):
    import xarray as xr

    assert daflow("forecast", "--init", l96 / "x0.nc", "--steps", 2, "-o", tmp_path / "f.nc").exit_code == 0
    assert "--seed" not in xr.open_dataset(tmp_path / "f.nc").attrs["history"].splitlines()[0]


# --- 5. --model lists the models without importing torch at start-up ---

def test_the_model_list_is_the_registry_and_start_up_imports_no_torch(daflow):
    import subprocess
    import sys

    from daflow.models import GENERATIVE_MODEL, MODEL_NAMES, MODELS, model_class

    assert MODEL_NAMES == [*MODELS, GENERATIVE_MODEL]
    assert all(model_class(name).name == name for name in MODELS)
    probe = "import sys, daflow_cli.main; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe]).returncode == 0
    help_text = daflow("forecast", "--help").output
    assert "[" + "|".join(MODEL_NAMES) + "]" in help_text
    assert daflow("forecast", "--init", "random", "--model", "lorenz69", "-o", "x.nc").exit_code == 2
    import click

    from daflow_cli.main import main

    undocumented = [(name, p.opts[0]) for name, cmd in main.commands.items() for p in cmd.params
                    if isinstance(p, click.Option) and not p.help]
    assert not undocumented  # --dtype and --estimator had none


# --- 2. causal: a name in two inputs, a plot in a new folder, an unsorted series ---

@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """a.nc: x and y with y_t = 0.8 x_{t-1} + noise; b.nc: another x; a_unsorted.nc: a.nc shuffled in time."""
    import numpy as np
    import xarray as xr

    d = tmp_path_factory.mktemp("series")
    rng = np.random.default_rng(0)
    n = 300
    x = rng.normal(size=n)
    y = np.concatenate([[0.0], 0.8 * x[:-1] + 0.3 * rng.normal(size=n - 1)])
    a = xr.Dataset({"x": ("time", x), "y": ("time", y)}, coords={"time": np.arange(n, dtype=float)}, attrs={"daflow_kind": "state"})
    a.to_netcdf(d / "a.nc")
    a.isel(time=rng.permutation(n)).to_netcdf(d / "a_unsorted.nc")
    xr.Dataset({"x": ("time", rng.normal(size=n))}, coords={"time": a.time}, attrs={"daflow_kind": "state"}).to_netcdf(d / "b.nc")
    return d


CAUSAL = ["--target", "y", "--lags", "1-2", "--surrogates", 20, "--estimator", "gaussian"]


def test_causal_refuses_a_series_name_in_two_inputs(daflow, series, tmp_path):
    result = daflow("causal", series / "a.nc", series / "b.nc", *CAUSAL, "-o", tmp_path / "c.nc")
    assert result.exit_code == 65, result.output
    assert "b.nc: series 'x' is also in" in result.output and "a.nc" in result.output and "--rename x=" in result.output
    assert not (tmp_path / "c.nc").exists()


def test_causal_plot_in_a_new_folder_lands_with_the_output(daflow, series, tmp_path):
    result = daflow("causal", series / "a.nc", *CAUSAL, "-o", tmp_path / "c.nc", "--plot", tmp_path / "new" / "c.png")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "new" / "c.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "c.nc").exists()
    (tmp_path / "file").write_text("")
    result = daflow("causal", series / "a.nc", *CAUSAL, "-o", tmp_path / "d.nc", "--plot", tmp_path / "file" / "c.png")
    assert result.exit_code == 73 and "c.png" in result.output, result.output
    assert not (tmp_path / "d.nc").exists()  # all outputs of one command or none
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.nc", "file", "new"]


def test_causal_on_an_unsorted_series_equals_the_sorted_one(daflow, series, tmp_path):
    import json

    runs = [daflow("causal", series / name, *CAUSAL, "--json", "-o", tmp_path / f"{k}.nc")
            for k, name in enumerate(["a.nc", "a_unsorted.nc"])]
    assert [r.exit_code for r in runs] == [0, 0]
    assert "not in increasing order; sorted on read" in runs[1].stderr
    first, second = (json.loads(r.stdout) for r in runs)
    assert first["links"][0] == second["links"][0] and first["links"][0]["unique"] > 0.9  # the lag-1 link of x


def test_a_spin_up_from_a_file_moves_its_clock_on(daflow, l96, tmp_path):
    import numpy as np
    import xarray as xr

    assert daflow("forecast", "--init", l96 / "x0.nc", "--spinup", 10, "--steps", 2, "-o", tmp_path / "s.nc").exit_code == 0
    assert daflow("forecast", "--init", l96 / "x0.nc", "--steps", 12, "-o", tmp_path / "f.nc").exit_code == 0
    spun, straight = xr.open_dataset(tmp_path / "s.nc"), xr.open_dataset(tmp_path / "f.nc")
    np.testing.assert_allclose(spun.time.values, straight.time.values[10:])  # was labelled from x0's time
    np.testing.assert_allclose(spun.x.values, straight.x.values[10:], atol=1e-12)


# --- 7. shell completion: documented, and it completes the model names ---

def test_shell_completion_is_documented_and_completes_models():
    import os
    import subprocess
    import sys
    from pathlib import Path

    from daflow.models import MODEL_NAMES
    from daflow.settings import PROJECT_ROOT

    assert '_DAFLOW_COMPLETE=bash_source daflow' in (PROJECT_ROOT / "README.md").read_text()
    env = {**os.environ, "COMP_WORDS": "daflow forecast --model ", "COMP_CWORD": "3", "_DAFLOW_COMPLETE": "bash_complete"}
    out = subprocess.run([str(Path(sys.executable).with_name("daflow"))], env=env, capture_output=True, text=True).stdout
    assert out.split() == [f"plain,{name}" for name in MODEL_NAMES]


@pytest.mark.parametrize("args, message", [
    (["--start", "notadate"], "--start: 'notadate' is not an ISO-8601 time"),      # was an internal error, exit 70
    (["--param", "forcing=nan"], "--param: forcing='nan' is not a number"),  # was 'holds NaN/Inf before step 0'
])
def test_a_bad_start_or_a_non_finite_parameter_is_a_usage_error(daflow, tmp_path, args, message):
    result = daflow("forecast", "--model", "lorenz96", "--init", "random", "--steps", 2, *args, "-o", tmp_path / "f.nc")
    assert result.exit_code == 2 and message in result.output, result.output
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("command", [
    ["forecast", "--init", "random", "--model", "lorenz96", "--members", 3, "--perturb", "nan"],   # was run: NaN members
    ["forecast", "--init", "random", "--model", "lorenz96", "--dt", "inf"],
    ["assimilate", "--method", "letkf", "--loc-radius", 4, "--inflation", "inf", "--init", "e.nc", "--obs", "o.nc"],  # was exit 70
    ["assimilate", "--method", "letkf", "--loc-radius", "nan", "--init", "e.nc", "--obs", "o.nc"],
    ["ingest", "t.nc", "--observe", "--error-std", "inf"],                                         # was written
    ["causal", "t.nc", "--target", "x", "--pc-alpha", "nan"],
])
def test_nan_or_inf_for_a_number_option_is_a_usage_error(daflow, tmp_path, command):
    """click's FloatRange lets NaN through every bound and Inf through a one-sided one."""
    result = daflow(*command, "-o", tmp_path / "out.nc")
    assert result.exit_code == 2 and "is not a finite number" in result.output, result.output
    assert not list(tmp_path.iterdir())


def test_the_library_refuses_nan_inflation():
    from daflow.da.etkf import ETKF
    from daflow.errors import OptionError

    grid = None
    with pytest.raises((OptionError, ValueError), match="inflation must be >= 1"):
        ETKF(grid, inflation=float("nan"))
