"""The public posterior sampler against exact oracles: the Kalman posterior of Gaussian priors (the
exact denoiser of the prior, so that every error is the sampler's), importance sampling for a
nonlinear (arctan) operator, no divergence over error ratios 0.01-10 and densities 0.1%-100%, and
bad input refused with a DataError (exit 65)."""
import numpy as np
import pytest
import torch

from daflow.core.observations import ObsBatch
from daflow.errors import DataError
from daflow.nn.diffusion import (
    conjugate_gradient,
    gaussian_denoiser,
    kalman_posterior,
    posterior_sample,
    prior_moments,
    scalar_observation_posterior,
)
from daflow.nn.generative import GenerativeModel
from daflow.nn.normalisation import Normalisation
from daflow.nn.transformer import Architecture


def errors(C, idx, r, y, members=2000, seed=0, **settings):
    """Per coordinate |mean - Kalman mean| / posterior std and |variance / Kalman variance - 1|."""
    mean, cov = kalman_posterior(C, idx, r, y)
    g = torch.Generator().manual_seed(seed)
    s = posterior_sample(gaussian_denoiser(C), (C.shape[0],), lambda x0: x0[:, idx], y.float(), r.float(),
                         members=members, generator=g, **settings).double()
    assert s.shape == (members, C.shape[0])
    return (s.mean(0) - mean).abs() / cov.diagonal().sqrt(), (s.var(0) / cov.diagonal() - 1).abs()


def blocks(C, idx, y, ratios):
    """Independent copies of the prior C, one per error ratio, sampled at once: (prior, obs index, y, errors)."""
    n, k = C.shape[0], len(ratios)
    return (torch.block_diag(*[C] * k), [b * n + i for b in range(k) for i in idx], y.repeat(k),
            torch.tensor(ratios, dtype=torch.float64).repeat_interleave(len(idx)))


def test_oracles_are_the_closed_forms():
    """The public oracles: the denoiser is C (C + sigma^2 I)^-1 x for a batch of noise levels, and the
    issue's 2-D case (correlation 0.8, y = 1, error 0.3) has mean (1, 0.8) / 1.09 and variances
    1 - 1/1.09, 1 - 0.64/1.09."""
    C = torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=torch.float64)
    x, sigma = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=torch.float64), torch.tensor([0.3, 2.0], dtype=torch.float64)
    exact = torch.stack([C @ torch.linalg.solve(C + s**2 * torch.eye(2, dtype=torch.float64), v) for v, s in zip(x, sigma)])
    torch.testing.assert_close(gaussian_denoiser(C)(x, sigma), exact)
    mean, cov = kalman_posterior(C, [0], 0.3, torch.tensor([1.0]))
    torch.testing.assert_close(mean, torch.tensor([1.0, 0.8], dtype=torch.float64) / 1.09)
    torch.testing.assert_close(cov.diagonal(), torch.tensor([1 - 1 / 1.09, 1 - 0.64 / 1.09], dtype=torch.float64))


RATIOS = [0.1, 0.3, 1.0, 3.0]


def test_gaussian_2d_matches_kalman():
    """The issue's case: unit variances, correlation 0.8, y = 1 on the first coordinate, error/prior std
    0.1, 0.3, 1 and 3 (one independent copy each); 2000 samples: every coordinate's mean within 0.1
    posterior std, its variance within 15%."""
    C2 = torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=torch.float64)
    C, idx, y, r = blocks(C2, [0], torch.tensor([1.0], dtype=torch.float64), RATIOS)
    merr, verr = errors(C, idx, r, y, seed=1)
    assert merr.max() <= 0.1 and verr.max() <= 0.15, (merr.reshape(4, 2), verr.reshape(4, 2))


@pytest.mark.parametrize("ratios", [[0.3], pytest.param(RATIOS, marks=pytest.mark.slow)])
def test_gaussian_64d_matches_kalman(ratios):
    """AR(1) prior of correlation 0.9 on 64 points, every 8th observed (y from -1 to 1), the same ratios:
    the unobserved coordinates follow through C, within the same bounds."""
    i = torch.arange(64, dtype=torch.float64)
    C, idx, y, r = blocks(0.9 ** (i[:, None] - i[None, :]).abs(), list(range(0, 64, 8)),
                          torch.linspace(-1, 1, 8, dtype=torch.float64), ratios)
    merr, verr = errors(C, idx, r, y, seed=2)
    assert merr.max() <= 0.1 and verr.max() <= 0.15, (merr.reshape(-1, 64).amax(1), verr.reshape(-1, 64).amax(1))


def test_shape_may_be_an_int_a_list_or_a_size():
    """(members, *shape) whatever sequence gives the shape; an int n is (n,) (it raised a TypeError)."""
    C = torch.eye(4, dtype=torch.float64)
    for shape, out in ((4, (3, 4)), ([2, 2], (3, 2, 2)), (torch.Size([1, 2, 2]), (3, 1, 2, 2))):
        s = posterior_sample(gaussian_denoiser(C), shape, lambda x0: x0.reshape(3, -1)[:, :1], torch.ones(1), torch.ones(1),
                             members=3, generator=torch.Generator().manual_seed(0), steps=4)
        assert s.shape == out


def test_bad_input_is_a_data_error():
    C = torch.eye(2, dtype=torch.float64)
    denoise, observe, g = gaussian_denoiser(C), (lambda x0: x0[:, :1]), torch.Generator().manual_seed(0)
    for error in (0.0, -1.0, float("nan")):
        with pytest.raises(DataError, match="error"):
            posterior_sample(denoise, (2,), observe, torch.ones(1), torch.tensor([error]), members=2, generator=g)
    with pytest.raises(DataError, match="not differentiable"):
        posterior_sample(denoise, (2,), lambda x0: x0[:, :1].detach(), torch.ones(1), torch.ones(1), members=2, generator=g)
    with pytest.raises(DataError, match="shape"):
        posterior_sample(denoise, (2,), observe, torch.ones(3), torch.ones(3), members=2, generator=g)
    for step in (torch.round, torch.floor, torch.sign):  # autograd differentiates them, to an exact 0: no information
        for guidance in ("mmps", "sda"):
            with pytest.raises(DataError, match="not differentiable"):
                posterior_sample(denoise, (2,), lambda x0, step=step: step(x0[:, :1]), torch.ones(1), torch.ones(1), members=2, generator=g,
                                 guidance=guidance, steps=4)

    def broken(x, sigma):  # a network that overflows at small noise levels: refused, not returned as samples
        return denoise(x, sigma) / (torch.as_tensor(sigma).reshape(-1, 1) > 0.1)
    with pytest.raises(DataError, match="diverged"):
        posterior_sample(broken, (2,), observe, torch.ones(1), torch.ones(1), members=2, generator=g, steps=4)
    with pytest.raises(DataError, match="guidance"):
        posterior_sample(denoise, (2,), observe, torch.ones(1), torch.ones(1), members=2, generator=g, guidance="x")


class WindowDenoiser(torch.nn.Module):
    """Exact denoiser of a 2-frame window on a 2 x 2 grid: frame 0 ~ N(0, C), frame 1 = frame 0 + N(0, q I)
    (persistence, the 'dynamics'); the history is ignored. Stands in for a trained network."""

    def __init__(self, C, q):
        super().__init__()
        n = C.shape[0]
        self.arch = Architecture(levels=1, ny=2, nx=2, history=1, target=2, patch=2)
        self.prior = torch.cat([torch.cat([C, C], 1), torch.cat([C, C + q * torch.eye(n, dtype=C.dtype)], 1)])
        self.denoise = gaussian_denoiser(self.prior)

    def forward(self, history, noisy, sigma):
        return self.denoise(noisy.reshape(noisy.shape[0], -1), sigma).reshape(noisy.shape)


def test_observations_of_the_last_window_frame_correct_the_first():
    """Only frame 1 of cell 0 is observed (y = 2, error 0.1); frame 0 follows through the window's
    covariance, as the Kalman smoother says (mean within 0.1 posterior std, variance within 15%)."""
    i = torch.arange(4, dtype=torch.float64)
    C = 0.5 ** (i[:, None] - i[None, :]).abs()
    denoiser = WindowDenoiser(C, 0.2)
    norm = Normalisation(torch.zeros(1), torch.ones(1))
    model = GenerativeModel.of(denoiser, norm, sample_steps=32)
    batch = ObsBatch(0.0, np.arange(1), torch.tensor([2.0]), torch.tensor([0.1]), torch.tensor([0]), np.zeros(1),
                     [(lambda at: at, None)])
    g = torch.Generator().manual_seed(3)
    history = torch.zeros(2000, 1, 1, 2, 2)
    out = model.next_frames(history, g, [(1, batch)]).double().reshape(2000, 8)
    mean, cov = kalman_posterior(denoiser.prior, [4], torch.tensor(0.1, dtype=torch.float64), torch.tensor([2.0], dtype=torch.float64))
    merr = (out.mean(0) - mean).abs() / cov.diagonal().sqrt()
    verr = (out.var(0) / cov.diagonal() - 1).abs()
    assert mean[0] > 1.5 and merr.max() <= 0.1 and verr.max() <= 0.15, (mean, merr, verr)
    with pytest.raises(DataError, match="window frame 2"):
        model.next_frames(history[:2], g, [(2, batch)])


@pytest.mark.parametrize("lag", [0, 1])
def test_cycled_window_analyses_use_later_observations(lag):
    """The cycle through storm's window (T = 2 frames, the exact denoiser above): observations at t1
    (cell 3, error 1) and t2 (cell 0, y = 2, error 0.1). With lag 0 the analysis at t1 samples the
    window t1-t2 with both (look-ahead); with lag 1 the analysis at t2 re-analyses t1 (reanalysis).
    Either way the written t1 is the smoother's: the Kalman posterior of frame 0 given both batches
    (mean within 0.1 posterior std, variance within 15%), pulled to about 1.65 by the t2 observation
    alone; t2 is the window's frame 1 (lag 1) or the filter's frame 0 given t2 (lag 0)."""
    import xarray as xr

    from daflow.core.observations import observations
    from daflow.nn.generative import assimilate

    i = torch.arange(4, dtype=torch.float64)
    C = 0.5 ** (i[:, None] - i[None, :]).abs()
    denoiser = WindowDenoiser(C, 0.2)
    model = GenerativeModel.of(denoiser, Normalisation(torch.zeros(1), torch.ones(1)), sample_steps=32)
    init = xr.Dataset({"theta": (("time", "y", "x"), np.zeros((2, 2, 2)))},
                      coords={"time": [-3600.0, 0.0], "y": [0.0, 1.0], "x": [0.0, 1.0]})
    obs = observations([0.5, 2.0], [1.0, 0.1], [3600.0, 7200.0], "theta", y=[1.0, 0.0], x=[1.0, 0.0])
    ds = assimilate(model, obs, members=2000, init=init, seed=3, lag=lag)
    out = torch.from_numpy(ds.theta.values).double().reshape(2000, 2, 4)
    assert ds.attrs["lag"] == lag and ds.attrs["lookahead"] == 1 - lag
    both = kalman_posterior(denoiser.prior, [3, 4], torch.tensor([1.0, 0.1]), torch.tensor([0.5, 2.0]))
    second = kalman_posterior(denoiser.prior, [0], 0.1, torch.tensor([2.0]))
    for frame, (mean, cov) in ((0, both), (1, both if lag else second)):
        part = slice(4, 8) if frame == 1 and lag else slice(0, 4)
        mean, var = mean[part], cov.diagonal()[part]
        merr = ((out[:, frame].mean(0) - mean).abs() / var.sqrt()).max()
        verr = (out[:, frame].var(0) / var - 1).abs().max()
        assert merr <= 0.1 and verr <= 0.15, (frame, merr, verr)
    assert both[0][0] > 1.6


def test_quadrature_oracle_is_the_kalman_posterior_for_a_linear_operator():
    """The nonlinear oracle with h(x) = x is the Kalman posterior (3-D prior, the second coordinate observed)."""
    C = torch.tensor([[1.0, 0.5, 0.2], [0.5, 2.0, -0.6], [0.2, -0.6, 1.5]], dtype=torch.float64)
    mean, var = scalar_observation_posterior(C, lambda x: x, 1.3, 0.4, index=1)
    kmean, kcov = kalman_posterior(C, [1], 0.4, torch.tensor([1.3]))
    torch.testing.assert_close(mean, kmean)
    torch.testing.assert_close(var, kcov.diagonal())


@pytest.mark.parametrize("C, y, r", [
    (torch.tensor([[1.0, 0.8], [0.8, 1.0]]), -1.2, 0.05),   # the tail of the prior, where arctan is flat
    (torch.tensor([[1.0, 0.8], [0.8, 1.0]]), 0.8, 0.1),
    (torch.tensor([[1.0, 0.8], [0.8, 1.0]]), 0.0, 0.1),
    (torch.tensor([[1.0, 0.5], [0.5, 1.0]]), 1.1, 0.07),
    (0.7 ** (torch.arange(8.0)[:, None] - torch.arange(8.0)[None, :]).abs(), -1.0, 0.2),
])
def test_arctan_matches_the_quadrature_posterior(C, y, r):
    """y = arctan(x_1) + e, default settings, 2000 samples: every coordinate's mean within 0.15 posterior
    std of the quadrature oracle (scalar_observation_posterior) and its variance within 15%. A single
    linearisation of H at the denoised state (MMPS) is not exact for a nonlinear H; the default Langevin
    corrections at sigma <= 1.5 make up for it (without them the first case is 1.3 std off)."""
    C = C.double()
    mean, var = scalar_observation_posterior(C, torch.atan, y, r)
    s = posterior_sample(gaussian_denoiser(C), (C.shape[0],), lambda x: torch.atan(x[:, :1]), torch.tensor([y]),
                         torch.tensor([r]), members=2000, generator=torch.Generator().manual_seed(1)).double()
    merr, vratio = (s.mean(0) - mean).abs() / var.sqrt(), s.var(0) / var
    assert merr.max() <= 0.15 and (vratio - 1).abs().max() <= 0.15, (merr, vratio)


@pytest.mark.parametrize("density, r", [(0.001, 0.01), (0.001, 10.0), (1.0, 0.01), (1.0, 10.0), (0.1, 1.0)])
def test_default_guidance_does_not_diverge(density, r):
    """1000 points on a periodic line, exponential covariance of length 10 points (exact denoiser by FFT),
    observed at 0.1%-100% of the points with error/prior std 0.01-10, 32 members: the ensemble mean is
    as close to the Kalman mean as 32 exact samples would be (RMS 1/sqrt(32) = 0.18 posterior std) and
    the variance right within 20%; measured RMS 0.17-0.20, variance ratios 1.02-1.07."""
    n = 1000
    i = torch.arange(n, dtype=torch.float64)
    c = torch.exp(-torch.minimum(i, n - i) / 10.0)
    spectrum = torch.fft.rfft(c).real.clamp_min(1e-12)
    C = c[((i[:, None] - i[None, :]) % n).long()]

    def denoise(x, sigma):
        s2 = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1) ** 2
        return torch.fft.irfft(torch.fft.rfft(x) * (spectrum.to(x.dtype) / (spectrum.to(x.dtype) + s2)), n=n)

    g = torch.Generator().manual_seed(0)
    idx = torch.arange(0, n, round(1 / density))
    truth = torch.linalg.cholesky(C + 1e-9 * torch.eye(n, dtype=torch.float64)) @ torch.randn(n, generator=g, dtype=torch.float64)
    y = truth[idx] + r * torch.randn(len(idx), generator=g, dtype=torch.float64)
    mean, cov = kalman_posterior(C, idx.tolist(), torch.tensor(r, dtype=torch.float64), y)
    s = posterior_sample(denoise, (n,), lambda x: x[:, idx], y.float(), torch.full((len(idx),), r), members=32, generator=g).double()
    z = (s.mean(0) - mean) / cov.diagonal().sqrt()
    ratio = (s.var(0) / cov.diagonal()).mean()
    assert torch.isfinite(s).all() and z.pow(2).mean().sqrt() < 0.25 and abs(ratio - 1) < 0.2, (z.pow(2).mean().sqrt(), ratio)


def test_prior_sampling_makes_no_corrections_unless_asked():
    """Without observations (a forecast) the flow is the prior's and the default makes no Langevin
    corrections (same draws as corrections=0, different ones when they are asked for); the draws have
    the prior's covariance within sampling noise."""
    C = torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=torch.float64)

    def draw(**settings):
        return posterior_sample(gaussian_denoiser(C), (2,), None, None, None, members=2000,
                                generator=torch.Generator().manual_seed(4), **settings)
    plain = draw()
    torch.testing.assert_close(plain, draw(corrections=0))
    assert not torch.equal(plain, draw(corrections=2))
    torch.testing.assert_close(plain.double().T.cov(), C, atol=0.1, rtol=0)


def test_conjugate_gradient_floor_stops_on_an_operator_that_is_not_identity_plus_psd():
    """MMPS's system is I + PSD for an exact denoiser; a learned dD/dx can make it nearly singular
    (ERA5, benchmarks/README.md): with floor 1 CG stops there instead of taking a huge step, and on
    a genuine I + PSD operator the floor changes nothing."""
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    b = torch.randn(3, 6, generator=g, dtype=torch.float64)
    good = q @ torch.diag(torch.tensor([1.0, 2, 3, 5, 8, 13], dtype=torch.float64)) @ q.T  # I + PSD
    exact = torch.linalg.solve(good, b.T).T
    for floor in (0.0, 1.0):
        assert torch.allclose(conjugate_gradient(lambda u: u @ good, b, 6, floor=floor), exact, atol=1e-8)
    bad = q @ torch.diag(torch.tensor([1e-6, 2, 3, 5, 8, 13], dtype=torch.float64)) @ q.T  # I + (a -1 + 1e-6 eigenvalue)
    unguarded = conjugate_gradient(lambda u: u @ bad, b, 6)
    guarded = conjugate_gradient(lambda u: u @ bad, b, 6, floor=1.0)
    assert unguarded.norm() > 1e3 * b.norm()
    assert guarded.norm() <= b.norm()


def test_unequal_errors_in_one_system_match_kalman():
    """Two copies of the 64-point AR(1) prior, every second point observed, errors 0.01 and 1 prior std in one
    set of observations (an observing system mixes instruments): MMPS's CG system then spans four orders of
    magnitude. Without the Jacobi preconditioner 8 CG iterations left the error-1 copy's mean 0.18 posterior std
    off (1.2 with errors 0.01, 0.1, 1 and 10 in one system); now every coordinate is within the bounds of
    the one-ratio tests."""
    i = torch.arange(64, dtype=torch.float64)
    C, idx, y, r = blocks(0.9 ** (i[:, None] - i[None, :]).abs(), list(range(0, 64, 2)),
                          2 * torch.linspace(-1, 1, 32, dtype=torch.float64), [0.01, 1.0])
    merr, verr = errors(C, idx, r, y, seed=6)
    assert merr.max() <= 0.1 and verr.max() <= 0.15, (merr.reshape(2, 64).amax(1), verr.reshape(2, 64).amax(1))


def test_jacobi_preconditioned_conjugate_gradient():
    """With the exact diagonal of a diagonal operator CG solves it in one iteration; on a general SPD operator
    the preconditioned iteration converges to the same solution."""
    g = torch.Generator().manual_seed(1)
    d = torch.logspace(0, 4, 50, dtype=torch.float64)
    b = torch.randn(3, 50, generator=g, dtype=torch.float64)
    one = conjugate_gradient(lambda u: u * d, b, 1, diagonal=d)
    assert torch.allclose(one, b / d, rtol=1e-12)
    assert not torch.allclose(conjugate_gradient(lambda u: u * d, b, 1), b / d, rtol=1e-3)
    m = torch.randn(50, 50, generator=g, dtype=torch.float64) / 50
    spd = torch.diag(d.sqrt()) @ (torch.eye(50, dtype=torch.float64) + m @ m.T) @ torch.diag(d.sqrt())
    exact = torch.linalg.solve(spd, b.T).T
    assert torch.allclose(conjugate_gradient(lambda u: u @ spd, b, 50, diagonal=spd.diagonal()), exact, rtol=1e-8, atol=1e-10)


def test_prior_in_physical_units_matches_kalman():
    """A prior in physical units (a temperature: mean 280, standard deviation 5, correlation 0.8; two independent
    copies, y on the first coordinate of each, error/prior std 0.1 and 1): the sampler's noise levels are in units
    of the data's spread about its mean, so it standardises with the denoiser's own moments. Before, the flow
    started sigma_max = 80 about 0 and ended 1.2 and 3.0 posterior std off; now within the unit-prior bounds,
    and a prior draw (no observations) has the prior's mean and variance."""
    C = torch.block_diag(*[25 * torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=torch.float64)] * 2)
    mu = torch.tensor([280.0, 275.0, 290.0, 285.0], dtype=torch.float64)
    exact = gaussian_denoiser(C)

    def denoise(x, sigma):
        return mu.to(x.dtype) + exact(x - mu.to(x.dtype), sigma)

    idx, r = [0, 2], torch.tensor([0.5, 5.0], dtype=torch.float64)
    y = torch.tensor([283.0, 280.0], dtype=torch.float64)
    mean, cov = kalman_posterior(C, idx, r, y - mu[idx])
    s = posterior_sample(denoise, (4,), lambda x: x[:, idx], y.float(), r.float(), members=2000,
                         generator=torch.Generator().manual_seed(1)).double()
    merr, verr = (s.mean(0) - mu - mean).abs() / cov.diagonal().sqrt(), (s.var(0) / cov.diagonal() - 1).abs()
    assert merr.max() <= 0.1 and verr.max() <= 0.15, (merr, verr)
    prior = posterior_sample(denoise, (4,), None, None, None, members=2000, generator=torch.Generator().manual_seed(2)).double()
    assert ((prior.mean(0) - mu).abs() / 5).max() <= 0.1 and (prior.var(0) / 25 - 1).abs().max() <= 0.15
    loc, spread = prior_moments(denoise, (4,), torch.float64)
    torch.testing.assert_close(loc, mu, atol=0.1, rtol=0)  # 0.02 prior std
    assert abs(spread - 5) <= 1.5


def test_smooth_field_with_precise_observations_matches_kalman():
    """A 64 x 64 periodic field with a Gaussian covariance of length 4 points (exact denoiser by FFT), 5% of the
    points observed with error 0.01 prior std, 32 members: MMPS's CG system then has eigenvalues from 1 to
    about 10^5 and needs more than 8 iterations (the old cap left the ensemble mean 0.23 posterior std RMS off the
    Kalman mean with 256 members, against 0.06 of sampling noise); at the default cap it stops at its tolerance.
    64 members: an exact sampler's ensemble mean is 1 / sqrt(64) = 0.125 posterior std RMS off."""
    n, g = 64, torch.Generator().manual_seed(7)
    k = torch.fft.fftfreq(n, dtype=torch.float64)
    spectrum = torch.exp(-0.5 * (2 * torch.pi * 4.0) ** 2 * (k[:, None] ** 2 + k[None, :] ** 2))
    spectrum = spectrum / spectrum.mean() + 1e-8  # unit variance at every point

    def denoise(x, sigma):
        s2 = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1, 1) ** 2
        return torch.fft.ifft2(torch.fft.fft2(x) * (spectrum.to(x.dtype) / (spectrum.to(x.dtype) + s2))).real

    c = torch.fft.ifft2(spectrum).real.reshape(-1)  # C_ij = c(i - j), periodic
    idx = torch.randperm(n * n, generator=g)[:205].sort().values
    rows, cols = idx // n, idx % n
    every = torch.arange(n * n)
    C_all_obs = c[((every[:, None] // n - rows) % n) * n + (every[:, None] % n - cols) % n]  # (n^2, n_obs)
    truth = torch.fft.ifft2(torch.fft.fft2(torch.randn(n, n, generator=g, dtype=torch.float64)) * spectrum.sqrt()).real
    r = 0.01
    y = truth.reshape(-1)[idx] + r * torch.randn(len(idx), generator=g, dtype=torch.float64)
    gain = torch.linalg.solve(C_all_obs[idx] + r**2 * torch.eye(len(idx), dtype=torch.float64), C_all_obs.T).T
    mean, var = gain @ y, c[0] - (gain * C_all_obs).sum(1)
    s = posterior_sample(denoise, (n, n), lambda x: x.reshape(x.shape[0], -1)[:, idx], y.float(),
                         torch.full((len(idx),), r), members=64, generator=g).double().reshape(64, -1)
    z = (s.mean(0) - mean) / var.sqrt()
    ratio = (s.var(0) / var).mean()
    assert torch.isfinite(s).all() and z.pow(2).mean().sqrt() < 0.2 and abs(ratio - 1) < 0.15, (z.pow(2).mean().sqrt(), ratio)
