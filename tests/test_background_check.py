"""The background (gross-error) check of every ensemble method (daflow/da/base.py): its climatological floor."""
import numpy as np
import pytest
import torch

from daflow.core.grid import StateGrid
from daflow.core.observations import ObsBatch
from daflow.da.base import climatological_variance
from daflow.da.etkf import ETKF


def _batch(value, error, operator=torch.atan):
    n = value.numel()
    return ObsBatch(0.0, np.arange(n), value, torch.full_like(value, error), torch.arange(n), np.arange(n),
                    [(operator, None)])


def test_climatological_variance_is_the_squared_scaled_mad_per_operator():
    value = torch.tensor([0.0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 100, 1, 2], dtype=torch.float64)
    groups = [(torch.atan, torch.arange(11)), (torch.tanh, torch.tensor([11, 12]))]
    batch = ObsBatch(0.0, np.arange(13), value, torch.ones(13, dtype=torch.float64), torch.arange(13),
                     np.arange(13), groups)
    floor = climatological_variance(batch)
    mad = np.median(np.abs(value[:11].numpy() - np.median(value[:11].numpy())))   # median 5, MAD 3
    assert floor[:11].tolist() == pytest.approx([(1.4826 * mad) ** 2] * 11)
    assert floor[11:].tolist() == [0.0, 0.0]                                          # fewer than 10: no floor


def test_an_overconfident_ensemble_keeps_good_arctan_observations_and_rejects_a_wild_one():
    """Lorenz-96-like arctan observations of a truth spread over [-8, 12]; the ensemble is right except at
    variable 7, where it sits at 4 with spread 0.05 and the truth is at -1: |z| is about 40 against the
    ensemble's own spread, 2 against the floor. The good observation is kept; 1e12 is still rejected."""
    n = 200
    g = torch.Generator().manual_seed(0)
    truth = torch.linspace(-8, 12, n, dtype=torch.float64)[torch.randperm(n, generator=g)]
    truth[7] = -1.0
    background = truth + 0.05 * torch.randn(20, n, generator=g, dtype=torch.float64)
    background[:, 7] += 5.0
    value = torch.atan(truth) + 0.05 * torch.randn(n, generator=g, dtype=torch.float64)
    grid = StateGrid("x", ("i",), (n,), {"i": np.arange(n)})
    batch = _batch(value, 0.05)
    hx = torch.atan(background)
    z7 = (value[7] - hx[:, 7].mean()) / (0.05**2 + hx[:, 7].var()).sqrt()
    assert abs(z7) > 30                           # the ensemble's own spread alone would reject it at k = 10
    filt = ETKF(grid)
    assert filt.background_check(background, batch) is batch
    value[3] = 1e12
    kept = filt.background_check(background, batch)
    assert len(kept.rows) == n - 1 and list(filt.rejected_rows()) == [3]
