"""benchmarks/era5_t2m.py: the validation candidates and the scores (no data, no training)."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

_spec = importlib.util.spec_from_file_location("era5_t2m", Path(__file__).parents[1] / "benchmarks" / "era5_t2m.py")
era5 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(era5)


def test_candidates_are_the_product_with_gamma_only_for_sda():
    out = era5.storm_candidates("sda,mmps", [120], "16", "0", "0,0.4", "1e-3,1e-2")
    sda = [c for c in out if c["guidance"] == "sda"]
    mmps = [c for c in out if c["guidance"] == "mmps"]
    assert len(sda) == 4 and len(mmps) == 2
    assert {(c["history_inflation"], c["gamma"]) for c in sda} == {(0.0, 1e-3), (0.0, 1e-2), (0.4, 1e-3), (0.4, 1e-2)}
    assert all(c["gamma"] is None for c in mmps)
    assert {c["history_inflation"] for c in mmps} == {0.0, 0.4}


def test_scores_of_a_shifted_ensemble_give_the_shift_as_bias_and_skip_observed_points():
    rng = np.random.default_rng(0)
    truth = rng.standard_normal((5, 30))
    unobserved = np.arange(10, 30)
    analyses = np.repeat(truth[:, None] - 0.7, 3, axis=1)  # every member 0.7 too cold on every point
    analyses[:, :, :10] += 100.0  # observed points: ignored
    s = era5.scores(analyses, truth, unobserved)
    assert s["bias"] == pytest.approx(-0.7)
    assert s["rmse"] == pytest.approx(0.7)
    assert s["crps"] == pytest.approx(0.7)  # identical members: CRPS is the absolute error
    assert s["spread"] == pytest.approx(0.0, abs=1e-12)
    assert s["rank_counts"][0] == 0 and sum(s["rank_counts"]) == 5 * 20  # truth above every member: top bin
    assert s["rank_counts"][-1] == 5 * 20
