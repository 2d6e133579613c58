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


def test_three_observations_of_an_ensemble_that_lost_track_are_kept_and_a_wild_one_is_not():
    """Lorenz-63 with R = 2 I (DAPPER's sakov2012): the ETKF ensemble once sat off the truth by (-2.9, 12, -29)
    with spreads (1.2, 3.8, 1.1), so |z| = (1.9, 3.0, 16.5). With c = 1 below 10 observations the third, good,
    observation was rejected, the ensemble never came back and the RMSE went from 0.68 to 0.91. The batch's
    robust scale (median of three) now keeps all three; a wild value among three is still rejected."""
    g = torch.Generator().manual_seed(1)
    unit = torch.randn(10, 3, generator=g, dtype=torch.float64)
    unit = (unit - unit.mean(0)) / unit.std(0)
    background = torch.tensor([1.166, 3.779, 1.065], dtype=torch.float64) * unit
    value = torch.tensor([-2.85, 12.02, -28.7], dtype=torch.float64)
    batch = _batch(value, 2**0.5, operator=lambda x: x)
    z = value / (2 + background.var(0)).sqrt()
    assert abs(z[2]) > 10                        # alone, the third departure exceeds k = 10
    filt = ETKF(StateGrid("x", ("i",), (3,), {"i": np.arange(3)}))
    assert filt.background_check(background, batch) is batch
    value[1] = 1e12
    kept = filt.background_check(background, batch)
    assert list(kept.rows) == [0, 2] and list(filt.rejected_rows()) == [1]
