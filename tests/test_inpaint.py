"""Inpainting: exact reconstruction of the fields each method must reproduce, kept observations, bad masks;
EnSF's pseudo-observations (background plus inpainted increment)."""
import numpy as np
import pytest
import torch
from scipy.fft import idctn

from daflow.da.ensf import EnSF
from daflow.da.inpaint import METHODS, dct_tv_fit, inpaint
from daflow.core.grid import StateGrid
from daflow.core.observations import ObsBatch
from daflow.errors import DataError

NY, NX = 48, 40


def _mask(fraction, seed=0, frame=False):
    mask = np.random.default_rng(seed).random((NY, NX)) < fraction
    if frame:  # the image edge is a boundary the biharmonic equation needs data on
        mask[:2] = mask[-2:] = True
        mask[:, :2] = mask[:, -2:] = True
    return mask


@pytest.mark.parametrize("field", ["linear", "saddle", "cubic"])
def test_biharmonic_reproduces_harmonic_fields(field):
    y, x = np.mgrid[0:NY, 0:NX] / 10.0
    truth = {"linear": 0.3 * x - 0.2 * y + 1, "saddle": x**2 - y**2, "cubic": x**3 - 3 * x * y**2}[field]
    mask = _mask(0.25, frame=True)
    filled = inpaint(np.where(mask, truth, 0.0)[None], mask, "biharmonic")[0]
    np.testing.assert_allclose(filled, truth, atol=1e-9 * np.abs(truth).max())


def test_dct_fit_reproduces_a_few_dct_modes():
    coef = np.zeros((NY, NX))
    coef[0, 1], coef[2, 3], coef[5, 1], coef[1, 0] = 3.0, -2.0, 1.5, 1.0
    truth = idctn(coef, norm="ortho")
    mask = _mask(0.4, seed=1)
    filled = dct_tv_fit(np.where(mask, truth, 0.0)[None], mask, lam=1e-3, tv=0.0, iterations=500)[0]
    assert np.abs(filled - truth).max() < 1e-3 * np.abs(truth).max()
    # the default (with a little total variation) stays close
    default = inpaint(np.where(mask, truth, 0.0)[None], mask, "dct-tv")[0]
    assert np.sqrt(np.mean((default - truth) ** 2)) < 0.05 * truth.std()


@pytest.mark.parametrize("method", ["navier-stokes", "telea"])
def test_opencv_methods_keep_constant_fields_in_kelvin_without_scaling(method):
    mask = _mask(0.1, seed=2)
    filled = inpaint(np.where(mask, 273.15, -999.0)[None], mask, method, periodic=True)[0]
    np.testing.assert_allclose(filled, 273.15, rtol=2e-6)  # no 8-bit round trip


def test_oi_fills_with_the_background_mean_when_observations_agree_with_it():
    rng = np.random.default_rng(3)
    background = rng.normal(size=(10, NY, NX)) + np.linspace(0, 5, NX)
    mask = _mask(0.2, seed=3)
    field = background.mean(0)
    filled = inpaint(np.where(mask, field, 0.0)[None], mask, "oi", periodic=True, background=background)[0]
    np.testing.assert_allclose(filled, field, atol=1e-10)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_keeps_observed_values_and_fills_smooth_periodic_fields(method):
    y, x = np.mgrid[0:NY, 0:NX]
    truth = np.sin(2 * np.pi * x / NX) * np.cos(2 * np.pi * y / NY)
    rng = np.random.default_rng(4)
    background = truth + 0.3 * rng.normal(size=(8, NY, NX))
    mask = _mask(0.25, seed=4)
    fields = np.stack([truth, 2 * truth])
    filled = inpaint(np.where(mask, fields, np.nan), mask, method, periodic=True, background=background)
    np.testing.assert_array_equal(filled[:, mask], fields[:, mask])
    error = np.sqrt(np.mean((filled[0] - truth)[~mask] ** 2))
    assert np.isfinite(filled).all() and error < 0.5 * truth.std(), error


@pytest.mark.parametrize("method", METHODS)
def test_a_mask_observing_nothing_is_a_data_error(method):
    with pytest.raises(DataError, match="observes nothing"):
        inpaint(np.zeros((1, NY, NX)), np.zeros((NY, NX), bool), method, background=np.zeros((3, NY, NX)))


def _two_level_filter_and_obs(mask, members=6, seed=5):
    grid = StateGrid("t", ("level", "y", "x"), (2, NY, NX), {"level": np.arange(2), "y": np.arange(NY), "x": np.arange(NX)})
    columns = np.flatnonzero(mask.ravel())
    index = torch.from_numpy(np.concatenate([columns, NY * NX + columns]))
    obs = ObsBatch(0.0, np.arange(index.numel()), torch.zeros(index.numel(), dtype=torch.float64),
                   torch.ones(index.numel(), dtype=torch.float64), index, np.concatenate([columns, columns]),
                   [(lambda v: v, None)])
    background = torch.from_numpy(np.random.default_rng(seed).normal(size=(members, 2 * NY * NX)))
    return EnSF(grid, seed=seed), obs, background


@pytest.mark.parametrize("method", METHODS)
def test_pseudo_observations_keep_each_members_own_unobserved_values_when_nothing_changed(method):
    """Regression: pass 2 used to inpaint the analysed field itself, which replaces each member's unobserved
    small scales by a smooth fill (errors of ~4 K on SQG at 25% observed). The increment is what is inpainted:
    with no increment the pseudo-observations are the members' own background values, rough as they are."""
    mask = _mask(0.25, seed=6)
    filt, obs, background = _two_level_filter_and_obs(mask)
    index, values, errors = filt._pseudo_observations(background, background.clone(), obs, method)
    torch.testing.assert_close(values, background[:, index], rtol=0, atol=1e-9)
    assert index.numel() == 2 * (~mask).sum() and (errors > 0).all()


def test_pseudo_observations_add_an_inpainted_smooth_increment_to_each_member():
    y, x = np.mgrid[0:NY, 0:NX] / 10.0
    shift = np.stack([0.3 * x - 0.2 * y + 1, x**2 - y**2]).reshape(-1)   # biharmonic on both levels
    mask = _mask(0.25, seed=7, frame=True)
    filt, obs, background = _two_level_filter_and_obs(mask)
    index, values, _ = filt._pseudo_observations(background, background + torch.from_numpy(shift), obs, "biharmonic")
    torch.testing.assert_close(values, background[:, index] + torch.from_numpy(shift)[index], rtol=0, atol=1e-8)
