"""The one filter interface: (background ensemble, observations) -> (analysis ensemble, diagnostics).

A filter gets the background as a tensor (members, n) (the state flattened as in
:mod:`daflow.core.grid`) and one :class:`ObsBatch`; it returns the analysis (members, n)
and :class:`Diagnostics` in observation space. The shared steps live here:
multiplicative inflation of the background anomalies, x_j <- mean + lambda (x_j - mean)
(Anderson & Anderson 1999), before the update; relaxation to prior spread (RTPS, Whitaker &
Hamill 2012), sigma_a <- sigma_a + alpha (sigma_b - sigma_a) per state variable, after it; and the
ensemble-space square-root transform of the ETKF/LETKF (Hunt, Kostelich & Szunyogh 2007).
A subclass implements ``update`` on the (inflated) ensemble and its H(x).

Before any update, every method applies the same background (gross-error) check: with the
departure d = y - mean H(x^b) and its expected variance s^2 = max(sigma_o^2 + var H(x^b), v_clim),
z = d / s; an observation with |z| > k c is not assimilated and is flagged qc = 6 (k = 10 by
default, ``qc_k``; 0 turns the check off), where c = max(1, sqrt(median(z^2)) / 0.6745) over a
batch of at least 3 observations (c = 1 for N(0, 1) departures; the median of three or more is not
moved by one wild value), else 1. v_clim, the floor, is the
climatological variance of the observed quantity, estimated robustly from the batch itself:
(1.4826 MAD(y))^2 over the observations of each operator (0 below 10 observations;
:func:`climatological_variance`). The customary check |O-B| > k sqrt(sigma_o^2 + sigma_b^2) needs a
sigma_b that cannot collapse; var H(x^b) is the ensemble's own spread, which is locally far too small
exactly where the background is worst: without the floor, on Lorenz-96 with arctan observations, good
observations of a variable whose ensemble sat on the wrong side of zero were rejected for cycles on
end (|z| of 16 and more), the rejection feeding on itself, and EnSF's spread/skill
fell from 0.96 to 0.7-0.9 (benchmarks/README.md, "The background check's k"). The robust scale c keeps a
filter whose ensemble has drifted (every |z| large) from rejecting all its observations; a single wild
value (1e12) moves neither c nor the MAD and is rejected. Small batches need c most, as they have no
floor: on Lorenz-63 (3 observations, R = 2 I) an ETKF whose ensemble had lost track by 29 in z
(|z| = 16, 3 and 2) rejected the good observation with c = 1 and never recovered.
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from abc import ABC, abstractmethod
from dataclasses import fields
from typing import Any, ClassVar

import numpy as np
import torch

from daflow.core.grid import StateGrid
from daflow.core.observations import Diagnostics, ObsBatch
from daflow.seeding import resolve_seed

ROBUST_SCALE_MIN = 3  # observations in a batch from which the background check takes its robust scale c
QC_K = 10.0  # background check: |O-B| beyond QC_K robust standard deviations (floored by the climatological one)


class Filter(ABC):
    """Base class of every analysis scheme; ``min_members`` members are needed."""

    name: ClassVar[str]
    min_members: ClassVar[int] = 2
    differentiates: ClassVar[bool] = False  # True when ``update`` uses autograd (cycling then keeps it on)
    settings_class: ClassVar[type | None] = None  # the method's frozen settings dataclass, if it has one

    def __init__(self, grid: StateGrid, inflation: float = 1.0, rtps: float = 0.0, seed: int | None = None,
                 qc_k: float = QC_K):
        if not 1.0 <= inflation < math.inf or not 0.0 <= rtps <= 1.0 or not 0 <= qc_k < math.inf:  # NaN fails each
            raise ValueError("inflation must be >= 1, rtps in [0, 1] and qc-k >= 0")
        self.grid, self.inflation, self.rtps, self.qc_k = grid, inflation, rtps, qc_k
        self.rejected: list[np.ndarray] = []  # rows of the observation file that failed the background check
        self._seed = seed
        self._generator: torch.Generator | None = None

    @property
    def generator(self) -> torch.Generator:
        """The method's random draws, seeded on first use (a method that draws nothing records no seed)."""
        if self._generator is None:
            self._generator = torch.Generator().manual_seed(resolve_seed(self._seed))
        return self._generator

    def attrs(self) -> dict[str, Any]:
        """Settings recorded in the analysis dataset's global attributes."""
        return {"daflow_method": self.name, "inflation": self.inflation, "rtps": self.rtps}

    def analyse(self, background: torch.Tensor, obs: ObsBatch) -> tuple[torch.Tensor, Diagnostics]:
        """Analysis (members, n) of ``background`` (members, n) given ``obs``, and its diagnostics."""
        analysis = self.transform(background, obs)
        return analysis, Diagnostics.of(obs.apply(background), obs.apply(analysis))

    def transform(self, background: torch.Tensor, obs: ObsBatch) -> torch.Tensor:
        """The analysis alone: background check, inflation, ``update``, RTPS (cycling computes diagnostics in bulk).
        H(background) is computed once for the check and the update when nothing is rejected or inflated
        (at dim 10^6 with 20 members it is a 160 MB array)."""
        hx = obs.apply(background) if self.qc_k or self.inflation == 1.0 else None
        checked = self._checked(hx, obs) if self.qc_k and hx is not None else obs
        if checked is None:
            return background
        inflated = background
        if self.inflation != 1.0:
            mean = background.mean(0)
            inflated = torch.add(mean, background - mean, alpha=self.inflation)
        if hx is None or checked is not obs or inflated is not background:
            obs, hx = checked, checked.apply(inflated)
        analysis = self.update(inflated, hx, obs)
        if self.rtps > 0 and background.shape[0] > 1:
            analysis = relax_to_prior_spread(background, analysis, self.rtps)
        return analysis

    def background_check(self, background: torch.Tensor, obs: ObsBatch) -> ObsBatch | None:
        """``obs`` without the observations that fail the gross-error check (recorded in ``rejected``); None if none is left."""
        return self._checked(obs.apply(background), obs) if self.qc_k else obs

    def _checked(self, hx: torch.Tensor, obs: ObsBatch) -> ObsBatch | None:
        """:meth:`background_check` (with ``qc_k`` set) given H(background) = ``hx`` (members, p)."""
        with torch.no_grad():
            variance = hx.var(0) if hx.shape[0] > 1 else torch.zeros_like(hx[0])
            expected = torch.maximum(obs.error_std**2 + variance, climatological_variance(obs))
            z = ((obs.value - hx.mean(0)) / expected.sqrt()).double().cpu().numpy()
        if np.abs(z).max() <= self.qc_k:  # c >= 1: nothing can fail (a NaN z goes on to be rejected below)
            return obs
        scale = max(1.0, float(np.sqrt(np.median(z**2))) / 0.6745) if len(z) >= ROBUST_SCALE_MIN else 1.0
        keep = np.abs(z) <= self.qc_k * scale  # a NaN z (blown-up background) is rejected too
        if keep.all():
            return obs
        self.rejected.append(obs.rows[~keep])
        return obs.subset(keep) if keep.any() else None

    def rejected_rows(self) -> np.ndarray:
        return np.concatenate(self.rejected) if self.rejected else np.zeros(0, dtype=np.int64)

    @abstractmethod
    def update(self, x: torch.Tensor, hx: torch.Tensor, obs: ObsBatch) -> torch.Tensor:
        """The analysis of x (members, n) with H(x) = hx (members, p)."""


def climatological_variance(obs: ObsBatch) -> torch.Tensor:
    """(p,) the robust variance of the batch's observed values, per operator with >= 10 observations (else 0).

    (1.4826 MAD)^2 of y over the batch: the spread of H(x) across the domain (plus sigma_o^2), a stand-in
    for the climatological variance that floors the background check's expected O-B variance. The
    median absolute deviation is not moved by a few wild values, which stay far outside it.
    """
    floor = torch.zeros_like(obs.value)
    for _, positions in obs.operators:
        values = obs.value if positions is None else obs.value[positions]
        if values.numel() >= 10:
            spread = 1.4826 * (values - values.median()).abs().median()
            if positions is None:
                floor[:] = spread.square()
            else:
                floor[positions] = spread.square()
    return floor


def split_settings(settings_class: type, options: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """(settings_class(fields found in ``options``), the other options)."""
    names = {f.name for f in fields(settings_class)}
    return (settings_class(**{k: v for k, v in options.items() if k in names}),
            {k: v for k, v in options.items() if k not in names})


def relax_to_prior_spread(background: torch.Tensor, analysis: torch.Tensor, alpha: float) -> torch.Tensor:
    """RTPS: analysis anomalies scaled by 1 + alpha (sigma_b - sigma_a) / sigma_a, per variable."""
    mean = analysis.mean(0)
    sigma_a, sigma_b = analysis.std(0), background.std(0)
    scale = 1.0 + alpha * (sigma_b - sigma_a) / sigma_a.clamp_min(torch.finfo(analysis.dtype).tiny)
    return mean + (analysis - mean) * scale


def normalised_departures(hx: torch.Tensor, obs: ObsBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(S, d): R^{-1/2}-scaled obs anomalies (members, p) and innovation of the mean (p,)."""
    mean = hx.mean(0)
    return (hx - mean).div_(obs.error_std), (obs.value - mean) / obs.error_std


def ensemble_transform(S: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Weights W (B, N, N) of the ETKF for B independent (local) analyses; analysis = mean + W^T A.

    With S (B, N, p) the normalised obs anomalies and d (B, p) the normalised innovation
    (Hunt et al. 2007, eqs. 20-25): G = (N - 1) I + S S^T, Pa = G^{-1}, w = Pa S d,
    T = [(N - 1) Pa]^{1/2} (symmetric square root), W[:, j, k] = w_j + T_jk, from the eigendecomposition
    G = V diag(lam) V^T, one batched eigh, LAPACK per matrix: W = V [diag(sqrt((N - 1) / lam)) V^T + (V^T S d / lam) 1^T].
    (Many local analyses with larger ensembles take :func:`inverse_sqrt_times` instead, inside the LETKF's pass.)
    The N x N algebra is float64 whatever the dtype of S (:func:`_transform` says why); W has S's dtype.
    """
    S64 = S.double()
    return _transform(_gram(S64), S64 @ d.double().unsqueeze(-1)).to(S.dtype)


def thin_square_root(S: torch.Tensor, d: torch.Tensor, A: torch.Tensor, l1: float = 1.0,
                     basis: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(l1 w^T A (n,), l1 T^T A (N, n)): the ETKF's update of the anomalies A (N, n) inflated by l1, analysis =
    mean + l1 w^T A + l1 T^T A, without an N x N matrix. With the thin SVD S = V diag(sqrt(lam)) U^T (V: N x
    min(N, p); ``basis`` = (V, lam) when the caller has it) and den = l1^2 lam + N - 1:
    w = V diag(l1 / den) V^T S d and T = sqrt(N - 1) (l1^2 S S^T + (N - 1) I)^{-1/2} = I + V diag(sqrt((N - 1) / den) - 1) V^T,
    the identity on S S^T's null space (Hunt et al. 2007, eqs. 20-25, as :func:`ensemble_transform`). Cost
    O(N p min(N, p) + N n min(N, p)): for ensembles larger than the observation count, where G (N x N) and its
    eigh cost O(N^3) (10^4 members: minutes)."""
    if basis is None:
        V, sv, _ = torch.linalg.svd(S, full_matrices=False)
        lam = sv.square()
    else:
        V, lam = basis
    n1 = S.shape[0] - 1
    den = l1 * l1 * lam + n1
    w = (V @ ((V.mT @ (S @ d)) * l1 / den)).to(A.dtype)                      # S d lies in V's span
    V, scale = V.to(A.dtype), ((n1 / den).sqrt() - 1).to(A.dtype)           # (S, d may be float64 for a float32 A)
    anomalies = torch.addmm(A, V, scale.unsqueeze(-1) * (V.mT @ A))
    return l1 * (w @ A), anomalies if l1 == 1.0 else l1 * anomalies


def uses_newton_schulz(batch: int, members: int) -> bool:
    """Whether ``batch`` analyses of ``members`` take the Newton-Schulz path (else one batched eigh)."""
    return batch >= NEWTON_SCHULZ_BATCH and members >= NEWTON_SCHULZ_MEMBERS


def in_chunks(batch: int, work, device: torch.device, size: int | None = None) -> None:
    """``work(slice)`` over ``batch`` items in chunks of ``size`` (NEWTON_SCHULZ_CHUNK), shared among the
    torch threads: the chunks' small products do not use torch's intra-op threads, so one Python thread
    per core takes a contiguous share of the chunks, with single-threaded ops (torch releases the GIL
    inside them)."""
    size = size or NEWTON_SCHULZ_CHUNK

    def chunks(first: int, last: int) -> None:
        for start in range(first, last, size):
            work(slice(start, min(start + size, last)))

    threads = torch.get_num_threads() if device.type == "cpu" else 1
    if threads == 1 or batch < 4 * threads * size:
        chunks(0, batch)
        return
    per = -(-batch // (threads * size)) * size
    inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()   # thread-local: passed on

    def share(first: int, last: int) -> None:
        torch.set_num_threads(1)          # OpenMP's and MKL's thread counts are per thread: set in this one too
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            chunks(first, last)

    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(threads) as pool:
            for done in [pool.submit(share, start, min(start + per, batch)) for start in range(0, batch, per)]:
                done.result()
    finally:
        torch.set_num_threads(threads)


def _gram(S: torch.Tensor) -> torch.Tensor:
    members = S.shape[-2]
    return torch.baddbmm(torch.eye(members, dtype=S.dtype, device=S.device).mul_(members - 1).expand(S.shape[0], -1, -1),
                         S, S.mT)


def _transform(gram: torch.Tensor, Sd: torch.Tensor) -> torch.Tensor:
    """W from G (B, N, N) and S d (B, N, 1) by one batched eigh.

    G = (N - 1) I + S S^T: where S S^T's eigenvalue lam - (N - 1) is below eigh's absolute error, about
    N eps max(lam), the direction is outside S S^T's range (the anomalies' null direction 1, and any the
    observations do not see): there W is the identity's, lam = N - 1 and no share of S d, whose entries
    there are rounding. With precise observations (errors 1e-8 of the spread) lam spans 16 orders: the null
    eigenvalue came out negative (a NaN analysis), and with 1e-10 the rounding of S d, divided by N - 1,
    moved unobserved points by thousands. Callers pass G and S d formed in float64 whatever the state's
    precision (:func:`ensemble_transform`): in float32 the error of G and of its eigh, 1e-7 max(lam), reached
    0.4 for the SQG LETKF with arctan observations (lam up to 3e6), the weights were 6-23% off and the tuned
    LETKF diverged."""
    members = gram.shape[-1]
    floor = members - 1.0
    eigval, eigvec = torch.linalg.eigh(gram)                                    # (B, N), (B, N, N)
    noise = eigval - floor <= eigval[..., -1:] * (members * torch.finfo(eigval.dtype).eps)
    eigval = torch.where(noise, floor, eigval)
    u = (eigvec.mT @ Sd).masked_fill_(noise.unsqueeze(-1), 0.0).div_(eigval.unsqueeze(-1))   # (B, N, 1)
    inner = eigvec.mT * eigval.rsqrt().mul_(math.sqrt(members - 1)).unsqueeze(-1)  # (B, N, N)
    return eigvec @ inner.add_(u)


# Measured on the 2-core CPU host (benchmarks/README.md, "LETKF at scale"): with N = 20 the iteration is about
# twice as fast as LAPACK's eigh per matrix; with N = 7 slower (eigh is cheap for such small matrices).
NEWTON_SCHULZ_BATCH = 256      # fewer matrices: the fixed cost per op outweighs the saving
NEWTON_SCHULZ_MEMBERS = 12     # smaller ensembles: eigh is cheaper
NEWTON_SCHULZ_MAX_ITER = 10    # beyond (a very ill-conditioned chunk), eigh is cheaper
NEWTON_SCHULZ_CHUNK = 128      # matrices per pass: the iterates stay in cache


def inverse_sqrt_times(S: torch.Tensor, floor: float, V: torch.Tensor) -> torch.Tensor | None:
    """R^T V (B, N, m) for an R with R R^T = G^{-1}, G = floor I + S^T S, S (B, K, N), R within float32 rounding
    of the symmetric G^{-1/2}, by the Newton-Schulz iteration (matrix products only); or None when the
    iteration would need more than NEWTON_SCHULZ_MAX_ITER iterations.

    In float64 the iteration runs in float32 (:func:`_newton_schulz` on S^T S formed in float32, to a residual
    of 1e-6; a float32 product of these small matrices costs a third of a float64 one here) and a float64 step
    finishes it on V instead of on I: with B the (symmetrised) float32 iterate, X = G / c, E = B X B - I (of
    order 1e-6) and u = B V, R^T V = (u - E u / 2) / sqrt(c), where E u = B X B u - u and X w = (floor w +
    S^T (S w)) / c, so every float64 product is a thin one (N x N or K x N times N x m, m = the columns of V)
    and G enters exactly, through S. R = B (I - E / 2) / sqrt(c) satisfies R^T G R = I + O(E^2), about 1e-12:
    the analysis covariance is that of G^{-1} to double precision for the cost of five thin products. The
    symmetric root itself cannot be refined this way: B does not commute with X to better than float32
    rounding, and the Newton correction of a non-commuting error does not converge (Higham 2008, "Functions
    of Matrices", section 6.4), so R differs from it by a rotation within about 1e-7 of I."""
    if S.dtype != torch.float64:
        root = _newton_schulz(S.mT @ S, floor, torch.finfo(S.dtype).eps)
        return None if root is None else (root[0].mT @ V).div_(root[1].sqrt_())
    S32 = S.float()
    root = _newton_schulz(S32.mT @ S32, floor, 1e-6)
    if root is None:
        return None
    B, c = root[0].double(), root[1].double()
    B = (B + B.mT).mul_(0.5)
    u = B @ V
    Bu = B @ u
    Eu = (B @ torch.baddbmm(Bu, S.mT, S @ Bu, beta=floor).div_(c)).sub_(u)     # B X B u - u
    return u.add_(Eu, alpha=-0.5).div_(c.sqrt())


def _newton_schulz(M: torch.Tensor, floor: float, target: float) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(Z, c) with Z (B, N, N) ~ ((floor I + M) / c)^{-1/2} to a residual below ``target``, c (B, 1, 1), for
    symmetric M >= 0 by the Newton-Schulz iteration (Higham 2008, eq. 6.35), or None (``M`` unchanged) when
    it would need more than NEWTON_SCHULZ_MAX_ITER iterations to reach double precision (a chunk so
    ill-conditioned goes to eigh); else ``M``'s buffer is overwritten.

    With G = floor I + M, X = G / c, Z_0 = I and D_k = (I - Z_k^2 X) / 2 (half the residual; all are
    polynomials in X, so they commute), the coupled iteration's T_k = (3 I - Z_k Y_k) / 2 is I + D_k and
    Z_{k+1} = Z_k (I + D_k), D_{k+1} = D_k^2 (D_k + 3/2 I): three products per step (D_k^2, D_{k+1}, Z_{k+1}),
    no sums of products. An eigenvalue e = 2 d of 2 D_k follows e_{k+1} = e_k^2 (3 + e_k) / 4 (quadratic
    convergence for |e_0| < 1). The spectrum of G lies in [floor, floor + b], b = ||M^2||_F^{1/2} >= lambda_max(M)
    (||M^2||_F^2 = sum lambda^4); c = floor + b / 2 gives |e_0| <= b / (2 c), so the number of iterations
    to reach ``target`` is known before iterating (no per-iteration test). M^2 also gives
    D_0^2 = M^2 / (4 c^2) + a D_0 - a^2 / 4 I (D_0 = (a I - M / c) / 2, a = 1 - floor / c) without another product.
    """
    M2 = M @ M
    bound = torch.linalg.vector_norm(M2, dim=(-2, -1)).sqrt_()                 # (B,)
    c = bound.mul(0.5).add_(floor)
    wide = bound.double()                                      # in float64: in float32, bound >> floor gives c = bound / 2
    error = float((wide / wide.mul(0.5).add_(floor)).max()) / 2
    iterations = steps_to_double = 0     # the latter decides between this and eigh, whatever the target
    while error > 1e-16 and steps_to_double <= NEWTON_SCHULZ_MAX_ITER:   # (error = 1 would never fall)
        iterations += error > target
        error = error * error * (3 + error) / 4
        steps_to_double += 1
    if steps_to_double > NEWTON_SCHULZ_MAX_ITER or not math.isfinite(error):      # (M^2 overflowed float32)
        return None
    c = c.view(-1, 1, 1)
    a = 1 - floor / c                                                           # (B, 1, 1)
    D = M.mul_(-0.5 / c)                                                        # D_0 = (a I - M / c) / 2
    D.diagonal(0, -2, -1).add_(a.view(-1, 1) / 2)
    Z = D.clone()
    Z.diagonal(0, -2, -1).add_(1.0)                                             # Z_1 = I + D_0
    if iterations <= 1:
        return Z, c
    square = torch.addcmul(M2.mul_(0.25 / (c * c)), D, a)                      # D_0^2
    square.diagonal(0, -2, -1).sub_((a * a).view(-1, 1) / 4)
    spare, spare_z = torch.empty_like(D), torch.empty_like(D)                  # reused: no fresh pages per product
    for k in range(1, iterations):
        D.diagonal(0, -2, -1).add_(1.5)
        torch.bmm(square, D, out=spare)                                         # D_k = D_{k-1}^2 (D_{k-1} + 3/2 I)
        D, spare = spare, D
        D.diagonal(0, -2, -1).add_(1.0)
        torch.bmm(Z, D, out=spare_z)                                            # Z_{k+1} = Z_k (I + D_k)
        Z, spare_z = spare_z, Z
        D.diagonal(0, -2, -1).sub_(1.0)
        if k < iterations - 1:
            torch.bmm(D, D, out=square)
    return Z, c


def mean_preserving_rotation(members: int, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """Random orthogonal Q (N, N) with Q 1 = 1: rotates anomalies without moving the mean (Sakov & Oke 2008)."""
    basis = torch.linalg.qr(torch.cat([torch.ones(members, 1, dtype=dtype),
                                       torch.randn(members, members - 1, generator=generator, dtype=dtype)], 1))[0]
    inner = torch.linalg.qr(torch.randn(members - 1, members - 1, generator=generator, dtype=dtype))[0]
    block = torch.block_diag(torch.ones(1, 1, dtype=dtype), inner)
    return basis @ block @ basis.mT
