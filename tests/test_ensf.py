"""EnSF: the schedule's calculus, the mixture score against autograd of the mixture density, the
sampler against the closed-form Gaussian of its own linear recursion, the likelihood score, seeds,
and the CLI (single analysis, cycling, bad input exit 65)."""
import math

import numpy as np
import pytest
import torch
import xarray as xr

from daflow.da.cycle import make_filter
from daflow.da.ensf import SAMPLE_ELEMENTS, MixturePrior, Schedule, ensf_sample, likelihood_score, paired_score


@pytest.mark.parametrize("t", [0.1, 0.5, 0.9])
def test_schedule_drift_and_diffusion_are_the_derivatives_of_the_forward_process(t):
    s, h = Schedule(eps_a=0.05, eps_b=0.01), 1e-6
    assert s.alpha(0) == 1 and math.isclose(s.alpha(1), 0.05) and math.isclose(s.beta2(1), 1.0)
    dlog_alpha = (math.log(s.alpha(t + h)) - math.log(s.alpha(t - h))) / (2 * h)
    dbeta2 = (s.beta2(t + h) - s.beta2(t - h)) / (2 * h)
    assert math.isclose(s.drift(t), dlog_alpha, rel_tol=1e-6)
    assert math.isclose(s.diffusion2(t), dbeta2 - 2 * dlog_alpha * s.beta2(t), rel_tol=1e-6)


@pytest.mark.parametrize("alpha,beta2", [(0.9, 0.05), (0.5, 0.5), (0.1, 1.0)])
def test_mixture_score_is_the_gradient_of_the_mixture_log_density(alpha, beta2):
    g = torch.Generator().manual_seed(0)
    x, z = torch.randn(7, 5, generator=g, dtype=torch.float64), torch.randn(4, 5, generator=g, dtype=torch.float64)
    zg = z.clone().requires_grad_(True)
    log_density = torch.logsumexp(-((zg[:, None, :] - alpha * x[None]) ** 2).sum(-1) / (2 * beta2), dim=1).sum()
    (exact,) = torch.autograd.grad(log_density, zg)
    for block in (1, 3, 7):  # mini-batched over members == unbatched
        torch.testing.assert_close(MixturePrior(x).score(z, alpha, beta2, block), exact, rtol=1e-10, atol=1e-10)
    # one member: the paired form
    torch.testing.assert_close(MixturePrior(x[:1]).score(z[:1], alpha, beta2), paired_score(z[:1], x[:1], alpha, beta2))


def test_mixture_score_is_finite_far_from_every_member_in_float32():
    x = torch.randn(20, 10_000)
    z = x[:1] + 50.0  # logits of order -1e7 / beta2: the running-max softmax must not overflow
    score = MixturePrior(x).score(z, 1.0, 1e-3, block=6)
    assert torch.isfinite(score).all()


def test_likelihood_score_and_curvature_of_arctan_observations_with_a_repeated_variable():
    z = torch.randn(3, 6, dtype=torch.float64)
    index, r = torch.tensor([0, 2, 2, 5]), torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    y = torch.tensor([0.3, -0.2, 0.1, 1.0], dtype=torch.float64)
    grad, curvature = likelihood_score(z, torch.atan, y, r, index)
    slope = 1 / (1 + z[:, index] ** 2)
    expect_grad = torch.zeros_like(z).index_add_(1, index, (y - torch.atan(z[:, index])) / r**2 * slope)
    expect_curv = torch.zeros_like(z).index_add_(1, index, slope**2 / r**2)
    torch.testing.assert_close(grad, expect_grad)
    torch.testing.assert_close(curvature, expect_curv)


def _gaussian_recursion(steps, schedule, y, r, damping=True, prior_mean=0.0, prior_var=1.0):
    """Mean and variance after the sampler's (affine) recursion with the exact score of the Gaussian
    prior N(prior_mean, prior_var) (prior_var = 0: a point mass, the paired score of one member)."""
    mean, var, dt = 0.0, 1.0, 1.0 / steps
    for k in range(steps):
        t = 1.0 - k * dt
        a, b2, g2 = schedule.alpha(t), schedule.beta2(t), schedule.diffusion2(t)
        c = g2 * dt * ((1 - t) if damping else 1)
        p, s2 = 1 / r**2, a * a * prior_var + b2
        # increment = [g2 (a m - z) / s2 - f z] dt + c p (y - z) + noise, divided by (1 + c p)
        slope = 1 + (-(g2 / s2 + schedule.drift(t)) * dt - c * p) / (1 + c * p)
        mean = slope * mean + (g2 * a * prior_mean / s2 * dt + c * p * y) / (1 + c * p)
        var = slope**2 * var + g2 * dt / (1 + c * p) ** 2
    return mean, var


@pytest.mark.slow
@pytest.mark.parametrize("r", [0.5, 1e6])
def test_large_ensemble_mixture_sampler_matches_the_closed_form_gaussian(r):
    """1-D Gaussian prior, y = x + N(0, r^2): the mixture score of N members tends to the Gaussian
    prior's score, so the samples tend to the Gaussian whose moments the linear recursion gives.
    With r -> infinity that is the prior itself. (With r = 0.5, y = 1 the limit is mean 0.88,
    variance 0.14, not the Kalman 0.8 and 0.2: the damped likelihood score is a heuristic.)"""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4000, 1, generator=g, dtype=torch.float64)
    x = (x - x.mean()) / x.std(correction=0)
    y, rr = torch.tensor([1.0], dtype=torch.float64), torch.tensor([r], dtype=torch.float64)
    schedule = Schedule(0.05, 0.0)
    z = ensf_sample(x, lambda v: v, y, rr, g, steps=200, schedule=schedule, score="mixture", block=1000)
    mean, var = _gaussian_recursion(200, schedule, 1.0, r)
    assert abs(z.mean().item() - mean) < 0.03, (z.mean().item(), mean)
    assert abs(z.var().item() / var - 1) < 0.1, (z.var().item(), var)


def test_paired_sampler_matches_its_closed_form_for_one_member():
    """Paired score, every row the same member x = 0.5, y = x + N(0, 0.3^2) observed as 1.2."""
    g = torch.Generator().manual_seed(2)
    x = torch.full((4000, 1), 0.5, dtype=torch.float64)
    y, r = torch.tensor([1.2], dtype=torch.float64), torch.tensor([0.3], dtype=torch.float64)
    for schedule in (Schedule(0.05, 0.0), Schedule(0.05, 0.1)):
        z = ensf_sample(x, lambda v: v, y, r, g, steps=100, schedule=schedule, score="paired")
        mean, var = _gaussian_recursion(100, schedule, 1.2, 0.3, prior_mean=0.5, prior_var=0.0)
        assert abs(z.mean().item() - mean) < 0.01 and abs(z.var().item() / var - 1) < 0.1


def test_paired_update_vanishes_with_many_steps_unless_eps_b_blurs_the_member():
    """The bug behind the default eps_b = 0.1: with eps_b = 0 the member is a point mass and the
    observation moves the sample only through the discretisation (by O(1/N_t)); with eps_b > 0 the
    update has a limit as N_t grows, between the kernel posterior mean x + eps_b / (eps_b + r^2) (y - x)
    and the observation (beyond the former: the damped likelihood score is a heuristic)."""
    def update(steps, eps_b):
        return _gaussian_recursion(steps, Schedule(0.05, eps_b), 1.2, 0.3, prior_mean=0.5, prior_var=0.0)[0] - 0.5
    assert update(1000, 0.0) < 0.2 * update(100, 0.0)
    assert abs(update(1000, 0.1) / update(100, 0.1) - 1) < 0.05
    kernel = 0.1 / (0.1 + 0.09) * 0.7
    assert kernel < update(1000, 0.1) < 0.7


def test_samples_drawn_in_blocks_of_rows_each_see_their_own_row_of_observations():
    """At large n the sampler works through blocks of rows; a row of values per sample (pseudo-
    observations) must follow its sample. n > SAMPLE_ELEMENTS / 2: one row per block."""
    n = SAMPLE_ELEMENTS // 2 + 1
    g = torch.Generator().manual_seed(4)
    prior = torch.randn(3, n, generator=g)
    value = torch.tensor([[-2.0], [0.0], [2.0]]).expand(3, n)
    z = ensf_sample(prior, lambda v: v, value, torch.tensor([0.01]), g, steps=10, score="paired")
    torch.testing.assert_close(z.mean(1), torch.tensor([-2.0, 0.0, 2.0]), atol=0.05, rtol=0)


def test_same_seed_same_samples_and_other_seed_other_samples():
    x = torch.randn(5, 8, dtype=torch.float64)
    def draw(seed):
        g = torch.Generator().manual_seed(seed)
        return ensf_sample(x, torch.atan, torch.zeros(8, dtype=torch.float64), torch.full((8,), 0.1, dtype=torch.float64),
                           g, steps=20)
    assert torch.equal(draw(3), draw(3)) and not torch.equal(draw(3), draw(4))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_line_search_keeps_the_gauss_newton_step_of_a_linear_operator_bit_for_bit(dtype):
    """For linear H the linearly implicit step is the minimiser of the proximal objective: the line
    search must accept it everywhere (partly observed, a repeated variable, physical units)."""
    g = torch.Generator().manual_seed(1)
    prior = torch.randn(20, 300, generator=g, dtype=dtype)
    index = torch.cat([torch.arange(0, 300, 3), torch.tensor([5, 5])])
    y = 20 * torch.randn(index.numel(), generator=g, dtype=dtype)
    def draw(line_search):
        return ensf_sample(prior, lambda v: 3 * v + 15, y, torch.full_like(y, 0.05), torch.Generator().manual_seed(2),
                           steps=50, schedule=Schedule(0.05, 0.3), score="paired", index=index, line_search=line_search)
    assert torch.equal(draw(True), draw(False))


ROOT_SHIFT, ROOT_SCALE = 10.0, 5.0  # x = 10 + 5 u: SQG-like units, the N(0, 1) start 1-3 K past arctan's knee


def _arctan_sample(line_search, **options):
    """Samples x = 10 + 5 z of one variable observed as arctan(x) = arctan(1) with error 0.01, and their starts."""
    prior = torch.zeros((1000, 1), dtype=torch.float64)
    start = ROOT_SHIFT + ROOT_SCALE * torch.randn(prior.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    z = ensf_sample(prior, lambda v: torch.atan(ROOT_SHIFT + ROOT_SCALE * v), torch.tensor([math.atan(1.0)], dtype=torch.float64),
                    torch.tensor([0.01], dtype=torch.float64), torch.Generator().manual_seed(0), steps=100,
                    schedule=Schedule(0.05, 0.1), score="paired", line_search=line_search, **options)
    return ROOT_SHIFT + ROOT_SCALE * z, start


def test_one_gauss_newton_step_on_arctan_overshoots_into_the_tail_and_the_line_search_stops_it():
    """The bug of SQG 25% arctan seed 11: with precise observations the linearly implicit step is nearly
    Newton's on arctan(x) = y, which from |x| > 1.4 lands past the root in arctan's flat tail. One step
    (truncate 0.99, no damping so that the likelihood acts at t = 1) from the N(0, 1) start."""
    old, start = _arctan_sample(False, damping=False, truncate=0.99)
    new, _ = _arctan_sample(True, damping=False, truncate=0.99)
    crossed_far = lambda x: ((x - 1) * (start - 1) < 0) & ((x - 1).abs() > 5)  # noqa: E731
    assert crossed_far(old).float().mean() > 0.5
    assert not crossed_far(new).any()
    y = math.atan(1.0)
    grows = lambda x: ((torch.atan(x) - y).abs() > (torch.atan(start) - y).abs()).float().mean()  # noqa: E731
    assert grows(old) > 0.9 and grows(new) < 0.05  # the misfit grows only by the prior's and the noise's share


def test_precise_arctan_observation_pins_every_sample_to_the_root():
    """The full reverse SDE: the posterior of x given arctan(x) = arctan(1) +- 0.01 lies within a few
    0.02 of x = 1 (the error in x is 0.01 / arctan'(1)); without the line search samples stay in the tail."""
    old, _ = _arctan_sample(False)
    new, _ = _arctan_sample(True)
    assert (old - 1).abs().max() > 5
    assert (new - 1).abs().max() < 0.1 and abs(new.mean().item() - 1) < 0.01


@pytest.fixture(scope="module")
def l96(tmp_path_factory, daflow_process):
    w = tmp_path_factory.mktemp("ensf")
    run = daflow_process
    run("forecast", "--model", "lorenz96", "--param", "dim=40", "--init", "random", "--spinup", "500",
        "--dt", "0.01", "--steps", "0", "--seed", "1", "-o", w / "x0.nc")
    run("forecast", "--init", w / "x0.nc", "--steps", "200", "--output-every", "10", "-o", w / "truth.nc")
    run("ingest", w / "truth.nc", "--observe", "--fraction", "1", "--operator", "arctan", "--error-std", "0.05",
        "--seed", "2", "-o", w / "obs.nc")
    run("forecast", "--init", w / "x0.nc", "--members", "20", "--perturb", "1.0", "--steps", "0", "--seed", "3",
        "-o", w / "ens.nc")
    return w


def test_cli_cycling_tracks_lorenz96_with_arctan_observations(l96, daflow_process):
    out = l96 / "a.nc"
    daflow_process("assimilate", "--method", "ensf", "--init", l96 / "ens.nc", "--obs", l96 / "obs.nc", "--seed", "5", "-o", out)
    truth = xr.open_dataset(l96 / "truth.nc")["x"].values
    analysis = xr.open_dataset(out)["x"].mean("member").values
    rmse = np.sqrt(((analysis[5:] - truth[5:]) ** 2).mean())
    assert rmse < 1.0, rmse  # climatology is about 3.6


def test_cli_single_analysis_writes_the_analysis_and_observation_diagnostics(l96, daflow_process):
    out = l96 / "one.nc"
    daflow_process("assimilate", "--method", "ensf", "--background", l96 / "ens.nc", "--obs", l96 / "obs.nc",
                   "--score", "mixture", "--ensf-steps", "20", "--seed", "7", "-o", out)
    ds = xr.open_dataset(out)
    assert ds.sizes["member"] == 20 and ds.sizes["time"] == 1 and ds.attrs["daflow_method"] == "ensf"
    oma, omb = ds["obs_oma"].values, ds["obs_omb"].values
    assert np.isfinite(oma).all() and np.sqrt(np.mean(oma**2)) < np.sqrt(np.mean(omb**2))


@pytest.mark.parametrize("change,message", [({"error_std": 0.0}, "error_std"), ({"operator": "cube"}, "operator")])
def test_cli_bad_observations_exit_65_with_one_line(l96, daflow_process, change, message):
    obs = xr.open_dataset(l96 / "obs.nc").load()
    for var, value in change.items():
        obs[var] = ("obs", np.full(obs.sizes["obs"], value, dtype=obs[var].dtype if var != "operator" else object))
    bad = l96 / f"bad_{message}.nc"
    obs.to_netcdf(bad)
    done = daflow_process("assimilate", "--method", "ensf", "--background", l96 / "ens.nc", "--obs", bad,
                          "-o", l96 / "never.nc", check=False)
    assert done.returncode == 65 and len(done.stderr.strip().splitlines()) == 1 and message in done.stderr
    assert not (l96 / "never.nc").exists()


def _batch(value, error_std, operator=lambda v: v):
    from daflow.core.observations import ObsBatch
    p = value.shape[0]
    return ObsBatch(time=0.0, rows=np.arange(p), value=value, error_std=error_std, index=torch.arange(p),
                    column=np.arange(p), operators=[(operator, None)])


def _line_grid(n):
    from daflow.core.grid import StateGrid
    return StateGrid("x", ("i",), (n,), {"i": np.arange(n)})


def test_adaptive_inflation_is_the_innovation_excess_over_the_ensemble_variance():
    """lambda^2 = 1 + (e - 1) / (1 + v), e = (sum d^2 - sum r^2) / sum var(Hx), v = 2 sum (var + r^2)^2 /
    (sum var)^2, clipped to [1 / largest^2, largest^2]: it deflates an ensemble whose spread exceeds what
    the innovations show, and observations far less precise than the spread leave lambda near 1."""
    from daflow.da.ensf import adaptive_inflation
    hx = torch.tensor([[0.0, 1.0], [2.0, 3.0]], dtype=torch.float64)           # var 2 and 2
    r = torch.tensor([0.5, 0.5], dtype=torch.float64)
    v = 2 * 2 * 2.25**2 / 16                                                    # 2 sum (2 + 0.25)^2 / 4^2
    y = hx.mean(0) + torch.tensor([3.0, -1.0], dtype=torch.float64)             # sum d^2 = 10
    assert math.isclose(adaptive_inflation(hx, y, r, 10.0), math.sqrt(1 + ((10 - 0.5) / 4 - 1) / (1 + v)))
    assert adaptive_inflation(hx, y, r, 1.2) == pytest.approx(1.2)
    y = hx.mean(0) + torch.tensor([1.5, 0.0], dtype=torch.float64)             # sum d^2 = 2.25: e = 1.75 / 4
    assert math.isclose(adaptive_inflation(hx, y, r, 3.0), math.sqrt(1 + (1.75 / 4 - 1) / (1 + v)))
    assert adaptive_inflation(hx, y, r, 3.0) < 1
    g = torch.Generator().manual_seed(0)
    many = torch.randn(20, 4000, generator=g, dtype=torch.float64)             # spread 1, r 0.1: v ~ 5e-4
    truth = 0.5 * torch.randn(4000, generator=g, dtype=torch.float64)          # error of the mean: 0.25 + 1/20
    lam = adaptive_inflation(many, truth + 0.1 * torch.randn(4000, generator=g, dtype=torch.float64),
                             torch.full((4000,), 0.1, dtype=torch.float64), 3.0)
    assert abs(lam - 0.3**0.5) < 0.02, lam
    huge = torch.full((2,), 1e6, dtype=torch.float64)                           # observations that say nothing
    assert adaptive_inflation(hx, hx.mean(0) + 1e6, huge, 3.0) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("kernel,factor", [("blur", 1.3), ("preserve", 1.0)])
def test_kernel_adds_its_variance_unless_the_members_shrink_to_make_room(kernel, factor):
    """Observations that say nothing (r = 1e6): the analysis is the prior kernel density, of variance
    1 + eps_b per standardised variable with the blurred members, 1 with members shrunk by
    sqrt(1 - eps_b) first (Liu & West 2001)."""
    from daflow.da.ensf import EnSF
    g = torch.Generator().manual_seed(5)
    x = 2.0 + 3.0 * torch.randn(2000, 4, generator=g, dtype=torch.float64)
    obs = _batch(torch.zeros(4, dtype=torch.float64), torch.full((4,), 1e6, dtype=torch.float64))
    analysis = EnSF(_line_grid(4), eps_b=0.3, kernel=kernel, seed=1).update(x, obs.apply(x), obs)
    ratio = (analysis.var(0) / x.var(0)).mean().item()
    assert abs(ratio - factor) < 0.06, ratio
    torch.testing.assert_close(analysis.mean(0), x.mean(0), atol=0.25, rtol=0)


def _lorenz96_arctan_cycling(filt, dim=40, cycles=80, seed=0):
    """Time means over the last half of the cycles: (RMSE of the mean, spread) on Lorenz-96, dt 0.01,
    arctan observations of every variable every 10 steps with error 0.05, 20 members."""
    from daflow.models import get_model
    g = torch.Generator().manual_seed(seed)
    model = get_model("lorenz96", dim=dim, dtype=torch.float64)
    truth = model.random_state(1, g)
    for _ in range(1000):
        truth = model.step(truth, 0.01)
    x = truth + torch.randn(20, dim, generator=g, dtype=torch.float64)
    errors, spreads = [], []
    for k in range(cycles):
        for _ in range(10):
            truth, x = model.step(truth, 0.01), model.step(x, 0.01)
        y = torch.atan(truth[0]) + 0.05 * torch.randn(dim, generator=g, dtype=torch.float64)
        x, _ = filt.analyse(x, _batch(y, torch.full_like(y, 0.05), torch.atan))
        if k >= cycles // 2:
            errors.append((x.mean(0) - truth[0]).square().mean().sqrt().item())
            spreads.append(x.var(0).mean().sqrt().item())
    return float(np.mean(errors)), float(np.mean(spreads))


@pytest.mark.parametrize("seed", [0, 4])
def test_default_ensf_is_calibrated_on_lorenz96_with_arctan_observations(seed):
    """Issue 14: spread/skill in [0.8, 1.2] at the defaults (the blurred kernel without adaptive
    inflation was over-dispersed: 2.0 on this setting at dim 40 and 1000; adaptive inflation clipped at 1
    from below still 1.25 on seed 4, as its estimate from 40 observations is noisy)."""
    from daflow.da.ensf import EnSF
    rmse, spread = _lorenz96_arctan_cycling(EnSF(_line_grid(40), seed=3), seed=seed)
    assert rmse < 0.3, rmse  # climatology is about 3.6
    assert 0.8 <= spread / rmse <= 1.2, (rmse, spread)
    if seed == 0:
        rmse, spread = _lorenz96_arctan_cycling(EnSF(_line_grid(40), seed=3, kernel="blur", adaptive_inflation=False))
        assert spread / rmse > 1.5, (rmse, spread)


def test_eps_b_scales_with_the_observed_fraction_of_the_state():
    """eps_b is the kernel variance at full observation; with a fraction f of the variables observed
    (repeated observations of one variable counted once) the analysis uses f eps_b, unless scale_eps_b
    is off. Where nothing is observed the preserving kernel keeps a fraction 1 - f eps_b of each
    member's anomaly, not 1 - eps_b."""
    from dataclasses import replace
    from daflow.da.ensf import EnSF
    obs = _batch(torch.zeros(6, dtype=torch.float64), torch.ones(6, dtype=torch.float64))
    obs = replace(obs, index=torch.tensor([0, 1, 2, 3, 4, 4]))
    assert EnSF(_line_grid(20), eps_b=0.6).schedule_for(obs, 20).eps_b == pytest.approx(0.6 * 5 / 20)
    assert EnSF(_line_grid(20), eps_b=0.6, scale_eps_b=False).schedule_for(obs, 20).eps_b == 0.6
    full = _batch(torch.zeros(20, dtype=torch.float64), torch.ones(20, dtype=torch.float64))
    assert EnSF(_line_grid(20), eps_b=0.6).schedule_for(full, 20).eps_b == 0.6
    # the unobserved variables of a paired-score analysis: a u_i + sqrt(eps) xi with a^2 = 1 - eps, eps = f eps_b
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1000, 20, generator=g, dtype=torch.float64)
    few = replace(_batch(torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)), index=torch.tensor([0, 1]))
    analysis = EnSF(_line_grid(20), eps_b=0.6, seed=1, adaptive_inflation=False).update(x, few.apply(x), few)
    u = (x - x.mean(0)) / x.std(0)
    kept = ((analysis - analysis.mean(0)) / x.std(0) * u).mean(0)[2:]        # covariance with the member: a
    assert kept.mean().item() == pytest.approx(math.sqrt(1 - 0.06), abs=0.03)  # sqrt(1 - 0.6) = 0.63 unscaled


@pytest.mark.parametrize("scale_eps_b", [True, False])
def test_adaptive_inflation_inflates_the_anomalies_where_nothing_is_observed(scale_eps_b):
    """The inflation multiplies every background anomaly by lambda, observed or not: where nothing is
    observed the preserving kernel keeps the member's variance, so the analysis variance there is
    lambda^2 times the background's. (Standardising the un-inflated members by the inflated spread
    left only the kernel's share, 1 + eps (lambda^2 - 1) with eps = f eps_b = 0.06 here: 1.18 for
    lambda = 2, and sparsely observed SQG under-dispersed, spread/skill 0.75.)"""
    from dataclasses import replace
    from daflow.da.ensf import EnSF
    g = torch.Generator().manual_seed(4)
    x = 5.0 + 2.0 * torch.randn(2000, 20, generator=g, dtype=torch.float64)
    hx = x[:, :2]
    r = torch.full((2,), 0.1, dtype=torch.float64)
    # innovations with sum d^2 - sum r^2 = 4 sum var(Hx): lambda^2 = 1 + 3 / (1 + v), v = 1 from two observations
    d = torch.sqrt((4 * hx.var(0).sum() + r.square().sum()) / 2)
    obs = replace(_batch(hx.mean(0) + d, r), index=torch.tensor([0, 1]))
    filt = EnSF(_line_grid(20), seed=1, scale_eps_b=scale_eps_b)
    analysis = filt.update(x, obs.apply(x), obs)
    lam = filt.last_inflation
    assert lam**2 == pytest.approx(2.5, rel=0.01)
    ratio = (analysis.var(0) / x.var(0))[2:]
    assert ratio.mean().item() == pytest.approx(lam**2, rel=0.05), ratio
    torch.testing.assert_close(analysis.mean(0)[2:], x.mean(0)[2:], atol=0.2, rtol=0)


@pytest.mark.parametrize("r, eps_b", [(3.0, 0.6), (0.3, 0.6), (0.01, 0.6), (0.1, 0.05)])
def test_kernel_sampler_draws_the_exact_kernel_posterior_of_a_linear_operator(r, eps_b):
    """Each row is the kernel N(m, eps_b I) of its member; with y = x + N(0, r^2) on variables 1 and 3 (3 twice,
    errors r and 2r) the posterior is Gaussian per variable in closed form, for any number of steps. The
    published reverse SDE gives about half the variance at r = 0.3 and r^4 / r^2 less at r = 0.01."""
    g = torch.Generator().manual_seed(5)
    m = torch.randn(4000, 5, generator=g, dtype=torch.float64)
    index, y = torch.tensor([1, 3, 3]), torch.tensor([2.0, 0.0, 0.4], dtype=torch.float64)
    errors = torch.tensor([r, r, 2 * r], dtype=torch.float64)
    z = ensf_sample(m, lambda v: v, y, errors, g, steps=20, schedule=Schedule(0.05, eps_b), score="paired",
                    sampler="kernel", index=index)
    precision = torch.full((5,), 1 / eps_b, dtype=torch.float64)
    pull = torch.zeros(5, dtype=torch.float64)
    precision.index_add_(0, index, errors ** -2)
    pull.index_add_(0, index, y / errors**2)
    mean, variance = (m / eps_b + pull) / precision, 1 / precision
    residual = (z - mean) / variance.sqrt()
    assert residual.mean(0).abs().max() < 0.1 and (residual.var(0) - 1).abs().max() < 0.1


def test_kernel_sampler_returns_the_member_when_the_kernel_is_a_point():
    m = torch.randn(6, 4, dtype=torch.float64)
    z = ensf_sample(m, lambda v: v, torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64),
                    torch.Generator().manual_seed(0), schedule=Schedule(0.05, 0.0), score="paired", sampler="kernel")
    assert torch.equal(z, m)


@pytest.mark.parametrize("r", [1.0, 0.1])
def test_kernel_sampler_single_analysis_has_the_kalman_variance(r):
    """One EnSF analysis of a calibrated N(0, I) prior of 100 members, every variable observed with error r:
    with the kernel sampler (preserved kernel) the analysis variance (1 - K)^2 (1 - eps_b) + K r^2,
    K = eps_b / (eps_b + r^2), is within 7% of the Kalman variance r^2 / (1 + r^2) at eps_b = 0.6 for every r;
    the published SDE gives 0.29 of it at r = 0.1."""
    n = 40
    g = torch.Generator().manual_seed(3)
    truth, ens = torch.randn(n, generator=g, dtype=torch.float64), torch.randn(100, n, generator=g, dtype=torch.float64)
    y = truth + r * torch.randn(n, generator=g, dtype=torch.float64)
    filt = make_filter("ensf", _line_grid(n), qc_k=0, adaptive_inflation=False, seed=3, sampler="kernel")
    analysis, _ = filt.analyse(ens, _batch(y, torch.full((n,), r, dtype=torch.float64)))
    prior = ens.var(0)
    ratio = (analysis.var(0) / (prior * r * r / (prior + r * r))).mean().item()
    assert 0.9 < ratio < 1.12, ratio


def test_kernel_sampler_needs_the_paired_score():
    with pytest.raises(ValueError, match="paired"):
        make_filter("ensf", _line_grid(4), sampler="kernel", score="mixture")
