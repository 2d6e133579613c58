"""Diffusion sampling against Gaussian oracles, the transformer's shapes and conditioning, and the
normalisation's round trip."""
import numpy as np
import pytest
import torch

from daflow.nn.diffusion import Denoiser, Likelihood, sample, score_matching_loss
from daflow.nn.normalisation import Normalisation
from daflow.nn.training import history_perturbation
from daflow.nn.transformer import Architecture


def gaussian_denoiser(history, noisy, sigma):
    """The exact E[x0 | x0 + sigma n] for x0 ~ N(0, I): x / (1 + sigma^2)."""
    return noisy / (1 + sigma.reshape(-1, 1, 1, 1, 1) ** 2)


def test_sampler_draws_the_prior():
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(4000, 1, 1, 2, 3, generator=g, dtype=torch.float64)
    x = sample(gaussian_denoiser, torch.zeros(4000, 1, 1, 2, 3), noise, steps=32, generator=g)  # Langevin noise seeded too
    assert abs(float(x.mean())) < 0.02 and abs(float(x.std()) - 1) < 0.02


def test_guided_sampler_moves_towards_observations_and_shrinks_spread():
    """Prior N(0, 1), y = x + e, error 0.5: the SDA posterior (gamma = 1, an approximation: the exact
    posterior N(y / 1.25, 0.2) is not reached) lies between prior mean and y, with less spread."""
    g = torch.Generator().manual_seed(1)
    y = torch.tensor([1.5, -1.0, 0.5, 2.0, -2.0, 0.3], dtype=torch.float64)
    likelihood = Likelihood(lambda x: x.reshape(x.shape[0], -1), y, torch.full_like(y, 0.5), "sda", gamma=1.0)
    noise = torch.randn(1000, 1, 1, 2, 3, generator=g, dtype=torch.float64)
    x = sample(gaussian_denoiser, None, noise, 32, likelihood=likelihood, to_physical=lambda v: v).reshape(1000, -1)
    fraction = x.mean(0) / y  # share of the way from the prior mean 0 to y
    assert bool(((fraction > 0.2) & (fraction < 1)).all()), fraction
    assert float(x.var(0).max()) < 0.5


def test_denoiser_shapes_padding_and_gradients():
    torch.manual_seed(0)
    arch = Architecture(levels=2, ny=9, nx=10, history=3, patch=4, width=24, depth=2, heads=2, tile=4)
    denoiser = Denoiser(arch)
    history, target = torch.randn(5, 3, 2, 9, 10), torch.randn(5, 1, 2, 9, 10)
    out = denoiser(history, target, torch.full((5,), 0.5))
    assert out.shape == target.shape
    loss = score_matching_loss(denoiser, history, target, torch.randn(5), torch.randn_like(target))
    loss.backward()
    assert all(p.grad is not None for p in denoiser.parameters())


def test_history_conditions_the_output():
    """Once trained weights are non-zero, changing only the history changes the denoised target."""
    torch.manual_seed(0)
    arch = Architecture(levels=1, ny=8, nx=8, history=2, patch=4, width=16, depth=1, heads=2)
    denoiser = Denoiser(arch)
    for p in denoiser.parameters():
        torch.nn.init.normal_(p, std=0.2)
    target, sigma = torch.randn(1, 1, 1, 8, 8), torch.ones(1)
    a = denoiser(torch.zeros(1, 2, 1, 8, 8), target, sigma)
    b = denoiser(torch.ones(1, 2, 1, 8, 8), target, sigma)
    assert (a - b).abs().max() > 1e-3


@pytest.mark.parametrize("predict", ["state", "increment"])
def test_normalisation_round_trip(predict):
    """Targets of windows of 2 members x 30 times, 2 levels, map back to the physical future frames
    exactly (to float32 rounding), T = 3 chained increments included, and have unit variance."""
    rng = np.random.default_rng(0)
    drift = np.cumsum(rng.standard_normal((2, 30, 2, 5, 6)), axis=1)
    frames = (np.array([280.0, 5.0])[:, None, None] + np.array([3.0, 0.1])[:, None, None] * drift).astype(np.float32)
    norm = Normalisation.fit(frames, predict)
    assert Normalisation.from_dict(norm.to_dict()).to_dict() == norm.to_dict()
    physical = torch.from_numpy(frames)
    windows = physical.unfold(1, 5, 1).permute(0, 1, 5, 2, 3, 4).reshape(-1, 5, 2, 5, 6)  # (B, K + T, C, ny, nx)
    history, future = windows[:, :2], windows[:, 2:]
    target = norm.targets(norm.normalise(history), norm.normalise(future))
    torch.testing.assert_close(norm.to_physical(target, history[:, -1:]), future, rtol=0, atol=1e-4)
    torch.testing.assert_close(target.std(dim=(0, 1, 3, 4)), torch.ones(2), rtol=0.05, atol=0)


def test_history_perturbation_has_its_rms_and_spares_the_stream_when_off():
    """Each window's perturbation has RMS std per level, is smooth (neighbours correlate) and is
    one field for all K frames; std = 0 draws nothing, so runs without it keep their random stream."""
    g = torch.Generator().manual_seed(0)
    e = history_perturbation(64, torch.Size([2, 33, 49]), 4, 0.3, g)  # (B, 1, C, ny, nx)
    assert e.shape == (64, 1, 2, 33, 49)
    torch.testing.assert_close(e.pow(2).mean(dim=(-2, -1)).sqrt(), torch.full((64, 1, 2), 0.3))
    neighbours = torch.corrcoef(torch.stack([e[..., :-1].flatten(), e[..., 1:].flatten()]))[0, 1]
    assert neighbours > 0.8
    state = g.get_state()
    assert not history_perturbation(8, torch.Size([1, 8, 8]), 4, 0.0, g).any()
    assert torch.equal(g.get_state(), state)


@pytest.mark.parametrize("predict", ["state", "increment"])
def test_history_centring_round_trip_and_offset_invariance(predict):
    """centre = "history": normalise -> to_physical is exact; a uniform offset c of a window's history
    and target frames (a different c per window) leaves the network's input and target unchanged;
    the training path (about mu, then re-centred) equals normalising about the last frame's mean."""
    rng = np.random.default_rng(1)
    drift = np.cumsum(rng.standard_normal((2, 30, 2, 5, 6)), axis=1)
    frames = (np.array([280.0, 5.0])[:, None, None] + np.array([3.0, 0.1])[:, None, None] * drift).astype(np.float32)
    norm = Normalisation.fit(frames, predict, centre="history")
    assert norm.to_dict()["centre"] == "history" and Normalisation.from_dict(norm.to_dict()).to_dict() == norm.to_dict()
    physical = torch.from_numpy(frames).double()
    windows = physical.unfold(1, 4, 1).permute(0, 1, 5, 2, 3, 4).reshape(-1, 4, 2, 5, 6)  # (B, K + T, C, ny, nx)

    def network_view(w):  # what training feeds the network, and the sampler's input for the same history
        history, future = w[:, :2], w[:, 2:]
        h, r = norm.centred(norm.normalise(history), norm.targets(norm.normalise(history), norm.normalise(future)))
        return h, r, norm.normalise(history, history[:, -1:])

    h, r, context = network_view(windows)
    torch.testing.assert_close(context, h)
    torch.testing.assert_close(h[:, -1].mean(dim=(-2, -1)), torch.zeros(len(h), 2, dtype=h.dtype), rtol=0, atol=1e-9)
    torch.testing.assert_close(norm.to_physical(r, windows[:, 1:2]), windows[:, 2:], rtol=0, atol=1e-5)  # float32 s / s_inc
    offset = torch.from_numpy(rng.normal(0, 5, (len(windows), 1, 2, 1, 1)))
    for a, b in zip(network_view(windows + offset), (h, r, context)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)


def test_climate_centring_is_the_default_and_old_records_load_as_it():
    """A record without ``centre`` (checkpoints before the option) centres on mu; an unknown one is refused."""
    frames = np.random.default_rng(0).normal(280, 3, (1, 10, 1, 4, 4)).astype(np.float32)
    norm = Normalisation.fit(frames, "state")
    record = norm.to_dict()
    assert record.pop("centre") == "climate" and Normalisation.from_dict(record).to_dict() == norm.to_dict()
    x = torch.from_numpy(frames[:, :3])
    torch.testing.assert_close(norm.normalise(x, x[:, -1:]), norm.normalise(x))
    h, r = norm.centred(x, x + 1)
    assert h is x and torch.equal(r, x + 1)
    with pytest.raises(ValueError, match="centre"):
        Normalisation.fit(frames, "state", centre="period")


def test_centred_model_shifts_its_posterior_with_a_uniform_offset():
    """With centre = "history", adding c to the history and to the observations (through the likelihood
    guidance) adds c to every posterior member, to float32 rounding; the climate-centred model does not."""
    from daflow.core.observations import ObsBatch
    from daflow.nn.generative import GenerativeModel

    torch.manual_seed(0)
    arch = Architecture(levels=1, ny=8, nx=8, history=2, patch=4, width=16, depth=1, heads=2)
    denoiser = Denoiser(arch)
    for p in denoiser.parameters():
        torch.nn.init.normal_(p, std=0.2)
    history = 280 + 2 * torch.randn(4, 2, 1, 8, 8)
    index = torch.tensor([3, 17, 40])

    def members(centre, c):
        model = GenerativeModel.of(denoiser, Normalisation(torch.tensor([280.0]), torch.tensor([2.0]), centre=centre), 8)
        batch = ObsBatch(0.0, np.arange(3), torch.tensor([281.0, 279.0, 283.0]) + c, torch.full((3,), 0.5), index,
                         index.numpy(), [(lambda at: at, None)])
        return model.next_frames(history + c, torch.Generator().manual_seed(1), [(0, batch)], guidance="sda", gamma=1e-3)

    torch.testing.assert_close(members("history", 3.0) - 3.0, members("history", 0.0), rtol=0, atol=1e-3)
    assert (members("climate", 3.0) - 3.0 - members("climate", 0.0)).abs().max() > 0.01
