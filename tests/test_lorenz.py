"""Lorenz-63/96 and `daflow forecast`: exact oracles, a conservation law, round trips, error paths."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
from click.testing import CliRunner

from daflow.models import get_model, model_from_attrs
from daflow.models.lorenz import rk4
from daflow_cli.main import main


def run_cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_lorenz96_tendency_matches_the_equation_written_out():
    model = get_model("lorenz96", dim=7, forcing=8.0)
    x = torch.randn(3, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    xn = x.numpy()
    expected = np.stack([[(m[(i + 1) % 7] - m[i - 2]) * m[i - 1] - m[i] + 8.0 for i in range(7)] for m in xn])
    np.testing.assert_allclose(model.tendency(x).numpy(), expected, rtol=1e-14)


def test_lorenz96_advection_conserves_energy():
    """sum_i x_i (x_{i+1} - x_{i-2}) x_{i-1} = 0, so d/dt |x|^2/2 = -|x|^2 + F sum x."""
    model = get_model("lorenz96", dim=1000, forcing=8.0)
    x = 8 + 3 * torch.randn(4, 1000, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    energy_rate = (x * model.tendency(x)).sum(-1)
    np.testing.assert_allclose(energy_rate, -(x * x).sum(-1) + 8.0 * x.sum(-1), rtol=1e-12)


def test_rk4_is_the_fourth_order_taylor_polynomial_on_a_linear_equation():
    x = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    h = 0.3
    out = rk4(lambda v: -v, x, h)
    z = -h
    np.testing.assert_allclose(out, x * (1 + z + z**2 / 2 + z**3 / 6 + z**4 / 24), rtol=1e-15)


def test_lorenz63_fixed_point_is_steady():
    model = get_model("lorenz63")
    c = np.sqrt(model.beta * (model.rho - 1))
    x = torch.tensor([[c, c, model.rho - 1]], dtype=torch.float64)
    np.testing.assert_allclose(model.step(x, 0.01), x, atol=1e-12)


@pytest.mark.parametrize("name", ["lorenz63", "lorenz96"])
def test_members_are_independent_and_dtype_is_kept(name):
    model = get_model(name, dtype=torch.float32)
    x = model.random_state(5, torch.Generator().manual_seed(2))
    assert x.dtype == torch.float32
    batched = model.step(x, model.default_dt)
    one_by_one = torch.cat([model.step(x[j:j + 1], model.default_dt) for j in range(5)])
    torch.testing.assert_close(batched, one_by_one)


def test_model_round_trips_through_file_attributes():
    model = get_model("lorenz96", dim=12, forcing=10.0)
    rebuilt, dt = model_from_attrs(model.attrs(0.01))
    assert (type(rebuilt), rebuilt.params, dt) == (type(model), model.params, 0.01)


def test_continued_run_equals_one_run_and_output_every(tmp_path):
    common = ["--model", "lorenz96", "--param", "dim=10", "--init", "random", "--spinup", "50", "--seed", "1"]
    assert run_cli("forecast", *common, "--steps", "10", "-o", tmp_path / "one.nc").exit_code == 0
    assert run_cli("forecast", *common, "--steps", "4", "-o", tmp_path / "a.nc").exit_code == 0
    result = run_cli("forecast", "--init", tmp_path / "a.nc", "--steps", "6", "--output-every", "2", "-o", tmp_path / "b.nc")
    assert result.exit_code == 0, result.output
    one, b = xr.open_dataset(tmp_path / "one.nc"), xr.open_dataset(tmp_path / "b.nc")
    assert one["x"].dims == ("time", "i") and one.sizes["time"] == 11
    np.testing.assert_allclose(b["time"], [0.2, 0.3, 0.4, 0.5], atol=1e-12)  # first frame = the init's last
    np.testing.assert_array_equal(b["x"].values, one["x"].values[4::2])
    assert b.attrs["daflow_model"] == "lorenz96" and b.attrs["daflow_model_dt"] == 0.05


def test_ensemble_from_random_and_from_a_state(tmp_path):
    out = tmp_path / "clim.nc"
    result = run_cli("forecast", "--model", "lorenz63", "--init", "random", "--members", "4", "--spinup", "200",
                     "--seed", "3", "-o", out)
    assert result.exit_code == 0, result.output
    clim = xr.open_dataset(out)["x"]
    assert clim.dims == ("member", "time", "i") and clim.shape == (4, 1, 3)
    assert len(np.unique(clim.values[:, 0, 0])) == 4
    x0 = tmp_path / "x0.nc"
    run_cli("forecast", "--model", "lorenz96", "--init", "random", "--spinup", "10", "--seed", "1", "-o", x0)
    for name in ("e1.nc", "e2.nc"):
        assert run_cli("forecast", "--init", x0, "--members", "3", "--perturb", "1", "--seed", "4",
                       "-o", tmp_path / name).exit_code == 0
    e1, e2 = (xr.open_dataset(tmp_path / n)["x"].values for n in ("e1.nc", "e2.nc"))
    np.testing.assert_array_equal(e1, e2)  # same seed, same values
    spread = (e1[:, 0] - xr.open_dataset(x0)["x"].values[0]).std()
    assert 0.7 < spread < 1.3


def test_calendar_start(tmp_path):
    result = run_cli("forecast", "--model", "lorenz96", "--init", "random", "--spinup", "0", "--steps", "2",
                     "--start", "2019-03-10T06:00Z", "-o", tmp_path / "c.nc")
    assert result.exit_code == 0, result.output
    times = xr.open_dataset(tmp_path / "c.nc")["time"].values
    assert times[0] == np.datetime64("2019-03-10T06:00") and times[1] - times[0] == np.timedelta64(6, "h")


def test_blow_up_names_the_step_and_writes_nothing(tmp_path):
    out = tmp_path / "bad.nc"
    result = run_cli("forecast", "--model", "lorenz96", "--init", "random", "--dt", "2", "--spinup", "0",
                     "--steps", "100", "--seed", "0", "-o", out)
    assert result.exit_code == 65 and "at step" in result.output and len(result.output.splitlines()) == 1
    assert not out.exists()


def test_bad_inputs(tmp_path):
    plain = tmp_path / "plain.nc"
    xr.Dataset({"x": (("time", "i"), np.zeros((1, 4)))}, coords={"time": [0.0]},
               attrs={"daflow_kind": "state"}).to_netcdf(plain)
    result = run_cli("forecast", "--init", plain, "--steps", "1", "-o", tmp_path / "o.nc")
    assert result.exit_code == 65 and "daflow_model" in result.output
    assert run_cli("forecast", "--model", "lorenz96", "--param", "size=3", "--init", "random", "-o", tmp_path / "o.nc").exit_code == 2
    assert run_cli("forecast", "--model", "nope", "--init", "random", "-o", tmp_path / "o.nc").exit_code == 2
