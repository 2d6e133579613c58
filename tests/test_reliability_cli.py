"""Issue 19, part B: the CLI cases (requests that cannot fit, causal inputs, options a method does
not take, the seed of a run, the model list); each test fails on the main before its fix."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def l96(tmp_path_factory, daflow_process):
    """A Lorenz-96 state and a 21-frame truth run from it."""
    d = tmp_path_factory.mktemp("l96cli")
    daflow_process("forecast", "--model", "lorenz96", "--param", "dim=40", "--init", "random", "--spinup", 500, "--dt", 0.05,
                   "--steps", 0, "--seed", 3, "-o", d / "x0.nc")
    daflow_process("forecast", "--init", d / "x0.nc", "--steps", 20, "-o", d / "truth.nc")
    return d


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
