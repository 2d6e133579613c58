"""Ensemble Score Filter (EnSF): training-free diffusion filtering (Bao, Zhang & Zhang 2024),
with inpainting of unobserved grid points (Liang, Tran, Bao, Chipilski, van Leeuwen & Zhang 2025).

Forward process in pseudo-time t in [0, 1]: Z_t = alpha_t Z_0 + beta_t W with
alpha_t = 1 - (1 - eps_a) t and beta_t^2 = eps_b + (1 - eps_b) t, i.e. the SDE
dZ = b(t) Z dt + sigma(t) dW with drift b(t) = d log(alpha_t)/dt = -(1 - eps_a) / alpha_t and
sigma^2(t) = d(beta_t^2)/dt - 2 b(t) beta_t^2.

Prior score, training-free, from the background ensemble {x^j, j = 1..N}:
- ``mixture``: the exact score of p_t(z) = 1/N sum_j N(z; alpha_t x^j, beta_t^2 I),
  S(z, t) = sum_j w_j(z) (alpha_t x^j - z) / beta_t^2, w = softmax_j(-|z - alpha_t x^j|^2 / (2 beta_t^2)),
  accumulated over blocks of members with an online (running-max) softmax, so memory stays
  O(members x dim) and the weights are exact;
- ``paired``: sample i's reverse path uses member i only, S_i = (alpha_t x^i - z_i) / beta_t^2 (the
  published code).
Posterior score S(z, t) + h(t) grad_z log p(y | z), h(t) = 1 - t (``damping``; h = 1 without), the
likelihood gradient by autograd through the observation operator, so any differentiable H works
(identity, arctan, subsampling = observed indices).
Sampling: reverse-time Euler-Maruyama from Z_1 ~ N(0, I), N_t steps of dt = 1/N_t,
z <- z - [b(t) z - sigma^2(t) S_post(z, t)] dt + sigma(t) sqrt(dt) xi, with the likelihood term
taken linearly implicit (Gauss-Newton curvature; :func:`ensf_sample`) so that precise
observations do not make the explicit step unstable, and its likelihood share e damped per entry
(halved) where a non-linear H would carry H(z + e) past the observation further than the
linearisation does: with precise observations the implicit step is nearly a Newton step on H(z) = y,
which for arctan from beyond its knee (|x - root| > ~1.4) lands in the flat tail, where the
likelihood hardly pulls back (:func:`_backtrack`).

Why eps_b > 0. The training-free prior of the ``paired`` score is a point mass at member i when
eps_b = 0: its score (alpha_t x^i - z) / beta_t^2 grows like 1/t while h(t) grad log p(y | z) stays
bounded, so the exact reverse SDE returns z_0 = x^i whatever the observation; only the Euler
discretisation lets the likelihood act, with a weight of order 1/N_t. With beta_0^2 = eps_b the
forward process starts from the kernel N(x^i, eps_b I) (variance eps_b std_b^2 per variable after
the standardisation below), the reverse SDE has a proper limit in which the observation acts on
member i with the kernel's gain K = eps_b / (eps_b + r_u^2) (r_u: the observation error in
standardised units, linearised), and the result no longer depends on N_t. That limit is not the
kernel posterior N(x^i + K (y - x^i), K r_u^2), though: the damped likelihood h(t) grad log p(y | z_t)
is not the score of p(y | z_t), and once the likelihood dominates the reverse SDE relaxes to about
half the posterior variance (and past the kernel's gain for r_u ~ 1). ``sampler="kernel"`` draws
the kernel posterior itself (:func:`_kernel_posterior`; exact for linear H).

Calibration: the variance-preserving kernel (``kernel="preserve"``, the default; Liu & West 2001).
The standardised members u_i are shrunk towards their mean (0) by a = sqrt(1 - eps_b) before the
kernel is put on them, so the kernel density 1/N sum_i N(a u_i, eps_b I) keeps the ensemble's mean
and variance. For linear H and a prior whose spread matches its error (variance 1), member i's
kernel posterior (which ``sampler="kernel"`` draws) is a u_i + K (y - a u_i) + N(0, K r_u^2): the expected squared error of the ensemble mean,
(1 - K)^2 + K^2 r_u^2, equals the expected spread^2, (1 - K)^2 a^2 + K r_u^2, for every eps_b
(with K = eps_b / (eps_b + r_u^2), (1 - K) eps_b = K r_u^2): the update keeps a calibrated ensemble
calibrated. With the blurred kernel (``kernel="blur"``, members not shrunk) the spread^2 exceeds
the error^2 by K (1 - K) r_u^2 every cycle (eps_b where nothing is observed): an inflation that
cannot be switched off. eps_b now trades the gain (K tends to Kalman's 1 / (1 + r_u^2)
as eps_b -> 1) against the members' own structure (a fraction eps_b of each member's anomaly
variance is redrawn as white noise, then shaped by the observations); the default 0.6 was chosen on
validation seeds (benchmarks/README.md). Where nothing is observed that white noise stays at the grid
scale (the likelihood does not shape it), which a model with fast small-scale advection may not
survive: at eps_b 0.6 sparsely observed SQG blows up. So eps_b is the value at full observation and
an analysis with a fraction f of the state variables observed uses f eps_b (``scale_eps_b``, on by
default): the kernel's white noise, f eps_b per unobserved variable, then shrinks with the share of the
state the observations can shape (Lorenz-96 observed everywhere keeps 0.6; SQG with 6.25% of its
columns observed gets 0.0375, where a fixed 0.1 was stable and 0.2 was not).

Adaptive inflation (``adaptive_inflation``, on by default): before the update the background
anomalies are multiplied by lambda, lambda^2 the estimate (|d|^2 - sum_k r_k^2) / sum_k var(H(x)_k)
shrunk towards 1 by its sampling variance (:func:`adaptive_inflation`) and clipped to
[1 / ``max_inflation``^2, ``max_inflation``^2], with d = y - mean(H(x)) the innovation: the one-cycle,
domain-wide estimate from E|d|^2 = lambda^2 tr(H P H^T) + tr(R) (Desroziers et al. 2005; Li, Kalnay &
Miyoshi 2009 without temporal smoothing; the shrinkage is the Gaussian update of a prior lambda^2 ~
N(1, 1), as in Anderson 2009 without its memory). It restores the spread that sampling error, model error and
the paired score's sub-Kalman gain take away, and after a sudden change of the truth (a shock) it
grows with the innovations, where a fixed inflation has to be tuned for the worst case. It may also
deflate: the estimate is unbiased only if its sampling noise is not clipped at 1 from below, and with
few observations (Lorenz-96 with 40) that one-sided clipping over-dispersed the ensemble (figures in
benchmarks/README.md, "Adaptive inflation that may deflate").
The inflated members mean + lambda (x_i - mean) have spread lambda std_b and the same standardised
members u_i as the background, so the analysis runs on u_i and is scaled back by lambda std_b: the
inflation reaches every variable, observed or not. (Standardising the un-inflated members by the
inflated spread would undo it wherever the likelihood does not act, leaving only the kernel's share,
a variance factor 1 + eps (lambda^2 - 1) with eps = f eps_b: nothing, at the unobserved points of a
sparsely observed grid.)

The filter works on the standardised state u = (x - mean_b) / std_b (background mean and spread per
variable) with H_u(u) = H(mean_b + std_b u): an exact change of variables that puts the prior on
the scale of the N(0, I) start, as the published SQG code does.

Note: the damped likelihood score is a heuristic, not the score of p_t(z | y); for a Gaussian
prior and linear H the EnSF posterior is not the Kalman posterior (tests/test_ensf.py states the
gap), it is the closed-form Gaussian of the linear reverse SDE.

Partial observations on a 2-D grid (two-pass scheme, DESIGN.md): pass 1 updates with the real
observations; each member's pass-1 increment a_i - x_i at its observed points is then inpainted
level by level onto the unobserved points (:mod:`daflow.da.inpaint`); pass 2 analyses the background
again with the real observations plus x_i + I(a_i - x_i) as pseudo-observations (identity, per
member), whose error standard deviation is the inpainting error of the mean increment measured by
cross-validation (10% of the observed points of each level held out).

Heuristics of the published code, off by default: ``truncate T`` stops the reverse integration at
pseudo-time T and returns z_T; ``spread_reset`` rescales the analysis anomalies to the background
spread per variable (RTPS with alpha = 1; the published code also caps it at 1.5 times the
initial spread, not reproduced).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from daflow.da.base import Filter
from daflow.da.inpaint import METHODS as INPAINT_METHODS
from daflow.da.inpaint import inpaint
from daflow.core.observations import ObsBatch
from daflow.errors import DataError

SCORES = ("mixture", "paired")
KERNELS = ("blur", "preserve")
SAMPLERS = ("sde", "kernel")
SAMPLE_ELEMENTS = 2**21
HOLD_OUT = 0.1


@dataclass(frozen=True)
class Schedule:
    """alpha_t = 1 - (1 - eps_a) t, beta_t^2 = eps_b + (1 - eps_b) t, with b(t) and sigma^2(t)."""

    eps_a: float = 0.05
    eps_b: float = 0.1

    def alpha(self, t: float) -> float:
        return 1.0 - (1.0 - self.eps_a) * t

    def beta2(self, t: float) -> float:
        return self.eps_b + (1.0 - self.eps_b) * t

    def drift(self, t: float) -> float:
        return -(1.0 - self.eps_a) / self.alpha(t)

    def diffusion2(self, t: float) -> float:
        return (1.0 - self.eps_b) - 2.0 * self.drift(t) * self.beta2(t)


class MixturePrior:
    """The ensemble x (N, n) as the mixture 1/N sum_j N(alpha x_j, beta2 I), centred once per analysis.

    Distances are taken from the centre c = alpha mean(x), and |z - c|^2 (the same for every j)
    drops out of the softmax: with d_j = alpha x_j - c = alpha (x_j - mean(x)),
    logit_j = [2 (z - c).d_j - |d_j|^2] / (2 beta2); the centred members and their squared norms
    are kept, so a score costs two matrix products and no (N, n) temporary.
    """

    def __init__(self, x: torch.Tensor):
        self.mean = x.mean(0)
        self.centred = x - self.mean
        self.norms = self.centred.square().sum(1)

    def score(self, z: torch.Tensor, alpha: float, beta2: float, block: int = 32) -> torch.Tensor:
        """Score (M, n) at z (M, n); members in blocks with an online (running-max) softmax."""
        zc = z - alpha * self.mean                                          # (M, n)
        running_max = torch.full((z.shape[0],), -math.inf, dtype=z.dtype, device=z.device)
        total = torch.zeros_like(running_max)
        weighted = torch.zeros_like(z)                                      # sum_j w_j d_j / alpha, unnormalised
        for xb, nb in zip(self.centred.split(block), self.norms.split(block)):
            logits = (zc @ xb.T).mul_(2.0 * alpha).sub_(alpha * alpha * nb).div_(2.0 * beta2)  # (M, B)
            new_max = torch.maximum(running_max, logits.max(1).values)
            rescale = torch.exp(running_max - new_max)
            w = torch.exp(logits - new_max[:, None])                        # (M, B)
            total = total * rescale + w.sum(1)
            weighted = weighted.mul_(rescale[:, None]).addmm_(w, xb)
            running_max = new_max
        return weighted.mul_(alpha / total[:, None]).sub_(zc).div_(beta2)


def paired_score(z: torch.Tensor, x: torch.Tensor, alpha: float, beta2: float) -> torch.Tensor:
    """Score of N(alpha x_i, beta2 I) at z_i, row by row: (alpha x - z) / beta2."""
    return torch.add(z, x, alpha=-alpha).div_(-beta2)


def _linearise(z, observe, index):
    """(H(z), H'(z)) at the observed entries of z, by one forward-mode autograd pass."""
    at = z if index is None else z.index_select(1, index)
    return torch.func.jvp(observe, (at,), (torch.ones_like(at),))


def _per_variable(z, index, values):
    """G^T values: observation-space values (M, p) summed onto their state variables (M, n)."""
    return values if index is None else torch.zeros_like(z).index_add_(1, index, values)


def likelihood_score(z: torch.Tensor, observe: Callable[[torch.Tensor], torch.Tensor], value: torch.Tensor,
                     error_std: torch.Tensor, index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad_z log p(y | z), Gauss-Newton curvature diag(J^T R^-1 J)), both (M, n).

    H(z) = observe(z[:, index]) (index None: every variable in order) with ``observe`` element-wise,
    as every observation operator is: observation k sees one state variable, so J = diag(H') G with
    G the selection by ``index``. One forward-mode autograd pass through ``observe`` gives H and H';
    then grad = G^T [H' R^-1 (y - H)] and curvature = G^T [H'^2 R^-1], exact, with repeated
    variables summed (index_add). No (n x n) or (p x n) array is formed.
    """
    return _likelihood_terms(z, observe, value, error_std.square().reciprocal(), index)[3:]


def _likelihood_terms(z, observe, value, precision, index):
    """(H(z), H'(z), y - H(z), grad, curvature) of :func:`likelihood_score`, the first three at the observations."""
    hz, slope = _linearise(z, observe, index)                      # hz, slope may alias z (identity H)
    residual = torch.sub(value, hz)
    grad = _per_variable(z, index, residual.mul(precision).mul_(slope))
    curvature = _per_variable(z, index, slope.square().mul_(precision))
    return hz, slope, residual, grad, curvature


def ensf_sample(prior: torch.Tensor, observe: Callable[[torch.Tensor], torch.Tensor], value: torch.Tensor,
                error_std: torch.Tensor, generator: torch.Generator, steps: int = 100,
                schedule: Schedule = Schedule(), score: str = "mixture", damping: bool = True,
                truncate: float = 0.0, block: int = 32, index: torch.Tensor | None = None,
                line_search: bool = True, sampler: str = "sde") -> torch.Tensor:
    """Posterior samples (N, n) from the prior ensemble (N, n): by reverse Euler-Maruyama (``sampler="sde"``,
    the published scheme, below), or by ancestral sampling of each member's kernel posterior
    (``sampler="kernel"``, paired score only: :func:`_kernel_posterior`).

    The step is linearly implicit in the likelihood (drift-implicit Euler-Maruyama with the
    Gauss-Newton curvature P of -log p(y | z)): with c = sigma^2 h dt,
    (1 + c P)(z' - z) = -[b z - sigma^2 S(z, t)] dt + c grad log p(y | z) + sigma sqrt(dt) xi.
    Explicit Euler is unstable once c P > 2 (precise observations of a standardised state,
    e.g. r = 0.1 with N_t = 100); this step is stable for any N_t and equals plain Euler-Maruyama
    where nothing is observed (P = 0) and as dt -> 0.
    With ``line_search`` (default) the step is split as z' - z = a / (1 + c P) + e, the likelihood's
    share e = c grad log p(y | z) / (1 + c P) being the Gauss-Newton step from z on the proximal
    problem min_v |v - z|^2 / 2 - c log p(y | v), and e is replaced by s e with s = 1, 1/2, 1/4, ... per
    entry until H(z + s e) is not past y further than the linearised step leaves it
    (:func:`_backtrack`). As c P grows the linearised step tends to Newton's on H(z) = y, which on
    a saturating H (arctan) overshoots from beyond its knee into the flat tail, where the likelihood
    hardly pulls the sample back: a sample then ends tens of spreads from the observation. For
    linear H (identity, affine, subsampling: H' constant) nothing is checked and the step is the
    linearly implicit one bit for bit; ``line_search=False`` takes it everywhere.
    H(z) = observe(z[:, index]) with ``observe`` element-wise (:func:`likelihood_score`); ``value`` and
    ``error_std`` broadcast against H(z) (N, p) (a row per sample for pseudo-observations).
    Each row of z is observed on its own, so the samples are drawn in blocks
    of rows of about ``SAMPLE_ELEMENTS`` values: at large n every temporary of a step then stays
    below the allocator's mmap threshold and is reused instead of page-faulted afresh (a 20 x 10^6
    float32 temporary costs ~20 ms in page faults, more than the arithmetic on it).
    """
    if score not in SCORES:
        raise ValueError(f"unknown score {score!r}; choose from {', '.join(SCORES)}")
    if sampler not in SAMPLERS or (sampler == "kernel" and score != "paired"):
        raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, and kernel needs the paired score")
    members = prior.shape[0]
    rows = max(1, SAMPLE_ELEMENTS // max(1, prior.shape[1]))
    per_row = lambda a, part: a[part] if a.dim() == 2 and a.shape[0] == members else a  # noqa: E731
    parts = [slice(s, s + rows) for s in range(0, members, rows)]
    mixture = MixturePrior(prior) if score == "mixture" else None
    out = torch.empty_like(prior)
    for part in parts:
        if sampler == "kernel":
            out[part] = _kernel_posterior(prior[part], observe, index, per_row(value, part), per_row(error_std, part),
                                          generator, steps, schedule, truncate)
        else:
            out[part] = _reverse_sde(prior, mixture, part, observe, index, per_row(value, part), per_row(error_std, part),
                                     generator, steps, schedule, damping, truncate, block, line_search)
    return out


def _kernel_posterior(own, observe, index, value, error_std, generator, steps, schedule, truncate):
    """Row i: a sample of member i's kernel posterior p(x | y) ~ N(x; m_i, e I) p(y | x), e = eps_b, m_i = row i
    of ``own``, by ancestral sampling of the forward process started from the kernel.

    The kernel sample X ~ N(m_i, e I) diffused by the schedule is Z_t | X ~ N(alpha_t X, v_t I),
    v_t = beta_t^2 - alpha_t^2 e (so Z_t | m_i ~ N(alpha_t m_i, beta_t^2 I), the paired prior of
    :func:`paired_score`). From z_1 ~ N(alpha_1 m_i, beta_1^2 I), each step t -> s < t draws z_s from
    p(z_s | z_t, y) = int p(z_s | z_t, X) p(X | z_t, y) dX with

        X | z_t, y ~ N(mu, 1 / Pi),  Pi = 1/e + alpha_t^2 / v_t + P,
        mu = (m_i / e + alpha_t z_t / v_t + P xl + g) / Pi,

    p(y | X) linearised at xl (the previous step's mu; Gauss-Newton: g = G^T [H' R^-1 (y - H(xl))],
    P = G^T [H'^2 R^-1], :func:`likelihood_score`), and p(z_s | z_t, X) the forward process's
    Gaussian bridge N(alpha_s X + k (z_t - alpha_t X), v_s q / v_t), q = v_t - (alpha_t / alpha_s)^2 v_s,
    k = (alpha_t / alpha_s) v_s / v_t: z_s has mean alpha_s mu + k (z_t - alpha_t mu) and variance
    v_s q / v_t + (alpha_s - k alpha_t)^2 / Pi. For linear H every step is exact, so z_0 is an exact
    sample of the kernel posterior N(m_i + K (y - H m_i), K r^2) per variable (K = e / (e + r^2) for
    H = I) for any number of steps, and the calibration argument of the module docstring holds;
    the published reverse SDE with the damped likelihood h(t) grad log p(y | z_t) gives about half that
    variance once the observations are more precise than the kernel (benchmarks/README.md). For a
    non-linear H the linearisation follows the samples down the steps (annealed Gauss-Newton).
    e = 0: the kernel is the member itself, returned unchanged."""
    e = schedule.eps_b
    if e == 0.0:
        return own.clone()
    precision = error_std.square().reciprocal()
    conditional_variance = lambda t: schedule.beta2(t) - schedule.alpha(t) ** 2 * e  # noqa: E731  v_t
    dt = 1.0 / steps
    z = torch.randn(own.shape, generator=generator, dtype=own.dtype, device=own.device)
    z.mul_(math.sqrt(schedule.beta2(1.0))).add_(own, alpha=schedule.alpha(1.0))
    noise, linearised = torch.empty_like(z), None
    prior_term = own / e                                                # m_i / e
    for k in range(steps):
        t, s = 1.0 - k * dt, max(0.0, 1.0 - (k + 1) * dt)
        if t <= truncate + 1e-12:
            break
        alpha_t, v_t, alpha_s, v_s = schedule.alpha(t), conditional_variance(t), schedule.alpha(s), conditional_variance(s)
        from_z = 1.0 / e + alpha_t * alpha_t / v_t                       # Pi without the likelihood
        if linearised is None:                                           # E[X | z_1]
            linearised = torch.add(prior_term, z, alpha=alpha_t / v_t).div_(from_z)
        _, _, _, grad, curvature = _likelihood_terms(linearised, observe, value, precision, index)
        mean = grad.addcmul_(curvature, linearised).add_(prior_term).add_(z, alpha=alpha_t / v_t)
        curvature.add_(from_z)                                           # Pi
        mean.div_(curvature)                                             # mu
        ratio = alpha_t / alpha_s
        gain = v_s * ratio / v_t
        variance = curvature.reciprocal_().mul_((alpha_s - gain * alpha_t) ** 2).add_(v_s * (v_t - ratio * ratio * v_s) / v_t)
        noise.normal_(generator=generator)
        z = mean.mul(alpha_s - gain * alpha_t).add_(z, alpha=gain).addcmul_(variance.sqrt_(), noise)
        linearised = mean
    return z


def _reverse_sde(prior, mixture, part, observe, index, value, error_std, generator, steps, schedule, damping,
                 truncate, block, line_search):
    """The samples ``part`` (a slice of rows) of :func:`ensf_sample`, with in-place arithmetic."""
    dt = 1.0 / steps
    own = prior[part]
    z = torch.randn(own.shape, generator=generator, dtype=prior.dtype, device=prior.device)
    noise = torch.empty_like(z)
    precision = error_std.square().reciprocal()
    bent = previous_slope = None                                        # where H' has been seen to vary
    everywhere = False
    for k in range(steps):
        t = 1.0 - k * dt
        if t <= truncate + 1e-12:
            break
        alpha, beta2, g2 = schedule.alpha(t), schedule.beta2(t), schedule.diffusion2(t)
        increment = (mixture.score(z, alpha, beta2, block) if mixture is not None
                     else paired_score(z, own, alpha, beta2))
        hz, slope, residual, grad, denominator = _likelihood_terms(z, observe, value, precision, index)
        c = g2 * dt * ((1.0 - t) if damping else 1.0)
        noise.normal_(generator=generator)
        increment.mul_(g2 * dt).add_(z, alpha=-schedule.drift(t) * dt).add_(grad, alpha=c)
        increment.add_(noise, alpha=math.sqrt(g2 * dt))
        denominator.mul_(c).add_(1.0)
        fraction = None
        if line_search and not everywhere:
            if previous_slope is not None:
                bent = torch.ne(slope, previous_slope) if bent is None else bent.logical_or_(torch.ne(slope, previous_slope))
                everywhere = bool(bent.all())
            previous_slope = slope
        if line_search and c != 0.0:
            pull = grad.mul_(c).div_(denominator)                       # the likelihood's share of the step
            fraction = _backtrack(z, pull, observe, index, value, hz, slope, residual,
                                  None if everywhere or previous_slope is None else bent)
        z.addcdiv_(increment, denominator)
        if fraction is not None:
            z.addcmul_(fraction.sub_(1.0), pull)                        # minus the share the line search refused
    return z


HALVINGS = 30


def _backtrack(z, pull, observe, index, value, hz, slope, residual, bent):
    """Per-entry fractions s (None: all 1) of the likelihood's share e of the step, halved until H(z + s e)
    is not carried past y further than the linearisation would leave it.

    Accepted where, for every observation of the entry, with q = sign(y - H(z)),
    q (y - H(z + s e)) >= -|y - H(z) - H'(z) e|: the step may end past the root H = y only by as
    much as the full linearised step's residual (which for one observation of the entry is
    |y - H(z)| / (1 + c P), on the near side). For linear H that always holds; for a saturating H such as
    arctan it stops Newton's overshoot into the flat tail (from x = 10 towards y = arctan(1) the
    tangent leads to x = -59; Newton converges on arctan only from |x - root| below about 1.4), and
    for a non-monotone H it keeps the step on the branch of the root it heads for. Only the
    observations in ``bent`` (None: all), where H' has been seen to vary over the pseudo-time steps,
    are checked: elsewhere H is linear, the step is the linear model's, and a check would see only rounding.
    """
    if bent is not None and not bent.any():
        return None
    observed = (lambda v: v) if index is None else (lambda v: v.index_select(1, index))  # noqa: E731
    allowed = torch.addcmul(hz, slope, observed(pull)).sub_(value).abs_()   # |y - H(z) - H'(z) e|
    toward = torch.sign(residual)                                       # y - H, counted towards the root
    fraction = None
    for _ in range(HALVINGS):
        trial = z + pull if fraction is None else torch.addcmul(z, fraction, pull)
        passed = ~(torch.sub(value, observe(observed(trial))).mul_(toward).add_(allowed) >= 0)   # NaN fails too
        if bent is not None:
            passed &= bent
        fail = passed if index is None else _per_variable(z, index, passed.to(z.dtype)) > 0
        if not fail.any():
            break
        fraction = torch.where(fail, 0.5, 1.0).to(z.dtype) if fraction is None else torch.where(fail, 0.5 * fraction, fraction)
    return fraction


def adaptive_inflation(hx: torch.Tensor, value: torch.Tensor, error_std: torch.Tensor, largest: float) -> float:
    """Anomaly inflation lambda from the innovations: the estimate e = (|d|^2 - |r|^2) / sum var(H x) shrunk
    towards 1 by its sampling variance, lambda^2 = 1 + (e - 1) / (1 + v), in [1 / largest^2, largest^2].

    v = 2 sum (var(H x)_k + r_k^2)^2 / (sum var(H x))^2 is the variance of e for Gaussian departures of a
    calibrated ensemble (lambda = 1), against a prior variance of 1 for lambda^2: with few or uninformative
    observations (r much larger than the spread) lambda stays near 1, with many it follows e."""
    d = value - hx.mean(0)
    variance, noise = hx.var(0), error_std.square().expand_as(d)
    total = variance.sum().clamp_min(1e-30)
    estimate = (d.square().sum() - noise.sum()) / total
    sampling = 2 * (variance + noise).square().sum() / total.square()
    return float((1 + (estimate - 1) / (1 + sampling)).clamp(1.0 / (largest * largest), largest * largest).sqrt())


class EnSF(Filter):
    """Ensemble score filter; two passes with inpainting when the grid is partly observed."""

    name = "ensf"
    differentiates = True

    def __init__(self, grid, ensf_steps: int = 100, eps_a: float = 0.05, eps_b: float = 0.6,
                 score: str = "paired", damping: bool = True, truncate: float = 0.0,
                 spread_reset: bool = False, inpaint: str | None = None, kernel: str = "preserve",
                 adaptive_inflation: bool = True, max_inflation: float = 3.0, scale_eps_b: bool = True,
                 line_search: bool = True, sampler: str = "sde", **options):
        if spread_reset:
            options["rtps"] = 1.0
        super().__init__(grid, **options)
        if ensf_steps < 1 or not 0 < eps_a < 1 or not 0 <= eps_b < 1 or not 0 <= truncate < 1:
            raise ValueError("need --ensf-steps >= 1, 0 < --eps-a < 1, 0 <= --eps-b < 1 and 0 <= --truncate < 1")
        if score not in SCORES:
            raise ValueError(f"--score must be one of {', '.join(SCORES)}")
        if sampler not in SAMPLERS or (sampler == "kernel" and score != "paired"):
            raise ValueError(f"--sampler must be one of {', '.join(SAMPLERS)}; kernel needs --score paired")
        if inpaint not in (None, "none", *INPAINT_METHODS):
            raise ValueError(f"--inpaint must be none or one of {', '.join(INPAINT_METHODS)}")
        self.steps, self.schedule, self.score = ensf_steps, Schedule(eps_a, eps_b), score
        if kernel not in KERNELS:
            raise ValueError(f"--kernel must be one of {', '.join(KERNELS)}")
        self.damping, self.truncate, self.inpaint = damping, truncate, inpaint
        if max_inflation < 1:
            raise ValueError("--max-inflation must be >= 1")
        self.kernel, self.adaptive, self.max_inflation = kernel, adaptive_inflation, max_inflation
        self.scale_eps_b, self.line_search, self.sampler = scale_eps_b, line_search, sampler
        self.last_inflation = 1.0

    def update(self, x: torch.Tensor, hx: torch.Tensor, obs: ObsBatch) -> torch.Tensor:
        mean, std = x.mean(0), x.std(0).clamp_min(torch.finfo(x.dtype).eps)
        prior = (x - mean) / std                                        # (N, n) standardised
        if self.adaptive:
            self.last_inflation = adaptive_inflation(hx, obs.value, obs.error_std, self.max_inflation)
            std = std * self.last_inflation                             # the inflated background's spread
            x = torch.add(mean, x - mean, alpha=self.last_inflation)   # whose standardised members are prior
        schedule = self.schedule_for(obs, x.shape[1])
        if self.kernel == "preserve":
            prior = prior * math.sqrt(1.0 - schedule.eps_b)
        shift, scale = mean[obs.index], std[obs.index]
        every = obs.index.numel() == x.shape[1] and torch.equal(obs.index, torch.arange(x.shape[1]))

        def observe(v):                                                 # H_u at the observed points
            return obs.operate(torch.addcmul(shift, scale, v))

        analysis = self._sample(schedule, prior, observe, None if every else obs.index, obs.value, obs.error_std)
        method = self._inpaint_method(obs)
        if method is not None:
            index, values, errors = self._pseudo_observations(x, analysis.mul(std).add_(mean), obs, method)
            p = obs.index.numel()
            analysis = self._sample(
                schedule, prior, lambda v: torch.cat([observe(v[:, :p]), torch.addcmul(mean[index], std[index], v[:, p:])], 1),
                torch.cat([obs.index, index]), torch.cat([obs.value.expand(x.shape[0], -1), values], 1),
                torch.cat([obs.error_std, errors]))
        return analysis.mul_(std).add_(mean)

    def schedule_for(self, obs: ObsBatch, size: int) -> Schedule:
        """The schedule of this analysis: eps_b times the observed fraction of the state with ``scale_eps_b``."""
        if not self.scale_eps_b:
            return self.schedule
        fraction = torch.unique(obs.index).numel() / size
        return Schedule(self.schedule.eps_a, self.schedule.eps_b * fraction)

    def _sample(self, schedule, prior, observe, index, value, error_std):
        return ensf_sample(prior, observe, value, error_std, self.generator, self.steps, schedule,
                           self.score, self.damping, self.truncate, index=index, line_search=self.line_search,
                           sampler=self.sampler)

    def _inpaint_method(self, obs: ObsBatch) -> str | None:
        """The inpainting method, None for one pass: default biharmonic when a 2-D grid is partly observed."""
        if self.inpaint == "none":
            return None
        partial = torch.unique(obs.index).numel() < self.grid.size
        if len(self.grid.hdims) != 2:
            if self.inpaint is not None:
                raise DataError(None, f"--inpaint {self.inpaint} needs a 2-D grid; the state is on {', '.join(self.grid.dims)}")
            return None
        return (self.inpaint or "biharmonic") if partial else None

    def _pseudo_observations(self, background, analysis, obs, method):
        """(flat index (q,), values (N, q), error std (q,)) of the inpainted unobserved points.

        Member i's pseudo-observation is its background plus its inpainted pass-1 increment,
        x_i + I(a_i - x_i): the increment is inpainted, not the analysed field, so the small scales
        the model carries in x_i are kept and only the correction is interpolated (inpainting the
        field itself replaces them by a smooth fill: on SQG 64 x 64 with 25% observed, biharmonic
        fills of the field err by about 4 K, of the increment by 3.3-3.6 K). With ``oi`` this is the
        perturbed-member update x_i + B_uo (B_oo + r^2 I)^{-1} (a_i - x_i)_o.
        """
        members, levels = analysis.shape[0], self.grid.levels
        hshape = tuple(self.grid.shape[self.grid.dims.index(d)] for d in self.grid.hdims)
        observed = np.zeros((levels, self.grid.columns), dtype=bool)
        flat = obs.index.numpy()
        observed[flat // self.grid.columns, flat % self.grid.columns] = True
        prior = background.detach().cpu().numpy().reshape(members, levels, *hshape)
        increments = analysis.detach().cpu().numpy().reshape(members, levels, *hshape) - prior
        anomalies = prior - prior.mean(0)
        periodic = self.grid.hdims != ("lat", "lon")
        rng = np.random.default_rng(int(torch.randint(2**31, (1,), generator=self.generator)))
        index, values, errors = [], [], []
        for level in range(levels):
            mask = observed[level].reshape(hshape)
            if not mask.any() or mask.all():
                continue
            filled = prior[:, level] + inpaint(increments[:, level], mask, method, periodic, anomalies[:, level])
            missing = np.flatnonzero(~mask.ravel())
            index.append(level * self.grid.columns + missing)
            values.append(filled.reshape(members, -1)[:, missing])
            error = self._cross_validated_error(increments[:, level].mean(0), mask, method, periodic,
                                                anomalies[:, level], rng)
            errors.append(np.full(missing.size, error))
        if not index:
            raise DataError(None, "the observation mask observes nothing on any level: nothing to inpaint from")
        as_tensor = lambda a: torch.from_numpy(np.concatenate(a, -1)).to(analysis.dtype)  # noqa: E731
        return torch.from_numpy(np.concatenate(index)), as_tensor(values), as_tensor(errors)

    @staticmethod
    def _cross_validated_error(field, mask, method, periodic, prior, rng) -> float:
        """RMS inpainting error at a held-out 10% of the observed points of ``field`` (ny, nx)."""
        points = np.flatnonzero(mask.ravel())
        held = rng.choice(points, max(1, int(HOLD_OUT * points.size)), replace=False)
        kept = mask.copy().ravel()
        kept[held] = False
        if not kept.any():
            return float(np.std(field))
        filled = inpaint(field[None], kept.reshape(mask.shape), method, periodic, prior)[0].ravel()
        error = np.sqrt(np.mean((filled[held] - field.ravel()[held]) ** 2))
        return float(max(error, 1e-3 * np.std(field) + 1e-12))
