"""Entropy, mutual information (MI) and conditional mutual information (CMI) estimators.

All information is in nats. Arrays are (T, d): T samples of a d-dimensional variable.

k-nearest neighbours (Kraskov, Stoegbauer & Grassberger 2004, PRE 69 066138; Frenzel & Pompe 2007,
PRL 99 204101), max norm. For each sample i, eps_i is the distance to its k-th neighbour in the
joint space (X, Y, Z); n_xz(i), n_yz(i), n_z(i) count the samples strictly closer than eps_i in the
subspaces, the sample itself included. Then

    I(X; Y | Z) = psi(k) - < psi(n_xz) + psi(n_yz) - psi(n_z) >,

and with no Z, n_z = T, which is KSG's first estimator I(X; Y) = psi(k) + psi(T) - <psi(n_x) + psi(n_y)>.
The term inside < > is the local (pointwise) CMI of sample i. Kozachenko-Leonenko entropy with the
same norm: H(X) = -psi(k) + psi(T) + d <ln(2 eps_i)>. Neighbours come from scipy's cKDTree;
counts in the subspaces that do not change between surrogates (YZ and Z) come from row-sorted
distance tables and a binary search, the rest from vectorised ``query_ball_point(...,
return_length=True)`` range queries, all surrogates in one tree (each on its own "universe"
coordinate, far from the others).

Gaussian closed form: I(X; Y | Z) = 1/2 ln(|S_xz| |S_yz| / (|S_z| |S_xyz|)) with S the sample
covariances; for a bivariate Gaussian I = -1/2 ln(1 - rho^2). Local version:
i = ln N(xyz) + ln N(z) - ln N(xz) - ln N(yz), N the fitted Gaussian densities.

Binned (plug-in): equal-frequency bins per dimension; I(X; Y | Z) = H(XZ) + H(YZ) - H(Z) - H(XYZ)
from the bin frequencies p; local version ln(p(xyz) p(z) / (p(xz) p(yz))).

Transforms (per column, before estimation): ``ranks`` (0..T-1, as tigramite's CMIknn), ``standardize``
(z-score) or ``None``.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree
from scipy.special import digamma

DENSE_LIMIT = 3000  # largest T for which the fixed subspaces use T x T sorted distance tables

ESTIMATORS = ("ksg", "gaussian", "binned")
TRANSFORMS = ("ranks", "standardize", None)


def as_2d(a) -> np.ndarray:
    """(T,) or (T, d) -> float64 (T, d); None -> (T, 0) is handled by callers."""
    a = np.asarray(a, dtype=np.float64)
    return a[:, None] if a.ndim == 1 else a


def transform(a, kind: str | None = "ranks") -> np.ndarray:
    """Column-wise rank (0..T-1) or z-score transform of a (T, d) array."""
    a = as_2d(a)
    if kind == "ranks":
        return a.argsort(axis=0, kind="stable").argsort(axis=0, kind="stable").astype(np.float64)
    if kind == "standardize":
        std = a.std(axis=0)
        return (a - a.mean(axis=0)) / np.where(std > 0, std, 1.0)
    if kind is None:
        return a
    raise ValueError(f"unknown transform {kind!r}; expected one of {TRANSFORMS}")


def _empty(t: int) -> np.ndarray:
    return np.zeros((t, 0))


def _max_dist_table(a: np.ndarray) -> np.ndarray:
    """(T, d) -> (T, T) max-norm distances, each row sorted ascending."""
    d = np.zeros((len(a), len(a)))
    for col in a.T:
        np.maximum(d, np.abs(col[:, None] - col[None, :]), out=d)
    return np.sort(d, axis=1)


def _count_strictly_within(points: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Samples of the fixed set ``points`` (T, d) closer than radii (S, T) to each sample, self included."""
    s, t = radii.shape
    if points.shape[1] == 0:
        return np.full((s, t), t)
    if t <= DENSE_LIMIT:
        table = _max_dist_table(points)
        return np.stack([np.searchsorted(table[i], radii[:, i], side="left") for i in range(t)], axis=1)
    tree = cKDTree(points)
    queries = np.broadcast_to(points, (s, *points.shape)).reshape(s * t, -1)
    r = np.nextafter(radii.ravel(), 0)
    return tree.query_ball_point(queries, r, p=np.inf, workers=-1, return_length=True).reshape(s, t)


def knn_local_cmi_batch(xs: np.ndarray, y: np.ndarray, z: np.ndarray, k: int = 8) -> np.ndarray:
    """Local Frenzel-Pompe CMI of S versions of X against one Y and Z.

    xs (S, T, dx), y (T, dy), z (T, dz) with dz >= 0 -> (S, T) local CMI in nats. Used for one
    estimate (S = 1) and for all the surrogates of a significance test at once.
    """
    s, t, dx = xs.shape
    if t <= k:
        raise ValueError(f"{t} samples are too few for k = {k} neighbours")
    span = max([1.0] + [float(np.ptp(a)) for a in (xs, y, z) if a.size])
    universe = np.repeat(np.arange(s, dtype=np.float64) * 3 * span, t)[:, None]  # (S*T, 1)
    xz = np.concatenate([universe, xs.reshape(s * t, dx), np.tile(z, (s, 1))], axis=1)
    joint = np.concatenate([xz, np.tile(y, (s, 1))], axis=1)
    eps = cKDTree(joint).query(joint, k=[k + 1], p=np.inf, workers=-1)[0][:, 0]
    n_xz = cKDTree(xz).query_ball_point(xz, np.nextafter(eps, 0), p=np.inf, workers=-1, return_length=True)
    eps = eps.reshape(s, t)
    n_yz = _count_strictly_within(np.concatenate([y, z], axis=1), eps)
    n_z = _count_strictly_within(z, eps)
    return digamma(k) - digamma(n_xz.reshape(s, t)) - digamma(n_yz) + digamma(n_z)


def knn_cmi(x, y, z=None, k: int = 8, local: bool = False):
    """Frenzel-Pompe I(X; Y | Z) (KSG I(X; Y) when z is None) of already transformed data."""
    x, y = as_2d(x), as_2d(y)
    z = _empty(len(x)) if z is None else as_2d(z)
    values = knn_local_cmi_batch(x[None], y, z, k)[0]
    return values if local else float(values.mean())


def knn_entropy(x, k: int = 8) -> float:
    """Kozachenko-Leonenko H(X) in nats, max norm."""
    x = as_2d(x)
    t, d = x.shape
    eps = cKDTree(x).query(x, k=[k + 1], p=np.inf, workers=-1)[0][:, 0]
    return float(-digamma(k) + digamma(t) + d * np.mean(np.log(2 * eps)))


def _gaussian_logpdf(a: np.ndarray) -> np.ndarray:
    """ln N(a; mean, cov) per sample of (T, d), mean and covariance fitted to a."""
    if a.shape[1] == 0:
        return np.zeros(len(a))
    centred = a - a.mean(axis=0)
    cov = np.atleast_2d(np.cov(centred, rowvar=False))
    sign, logdet = np.linalg.slogdet(cov)
    if sign <= 0:
        raise ValueError("singular covariance (a constant or duplicated series)")
    maha = np.einsum("ti,ij,tj->t", centred, np.linalg.inv(cov), centred)
    return -0.5 * (a.shape[1] * np.log(2 * np.pi) + logdet + maha)


def _logdet_cov(a: np.ndarray) -> float:
    if a.shape[1] == 0:
        return 0.0
    sign, logdet = np.linalg.slogdet(np.atleast_2d(np.cov(a, rowvar=False)))
    if sign <= 0:
        raise ValueError("singular covariance (a constant or duplicated series)")
    return logdet


def gaussian_cmi(x, y, z=None, local: bool = False):
    """Gaussian closed-form I(X; Y | Z) = 1/2 ln(|S_xz| |S_yz| / (|S_z| |S_xyz|))."""
    x, y = as_2d(x), as_2d(y)
    z = _empty(len(x)) if z is None else as_2d(z)
    xz, yz, xyz = np.hstack([x, z]), np.hstack([y, z]), np.hstack([x, y, z])
    if local:
        return _gaussian_logpdf(xyz) + _gaussian_logpdf(z) - _gaussian_logpdf(xz) - _gaussian_logpdf(yz)
    return 0.5 * (_logdet_cov(xz) + _logdet_cov(yz) - _logdet_cov(z) - _logdet_cov(xyz))


def _bin_codes(a: np.ndarray, bins: int) -> np.ndarray:
    """Equal-frequency bin index of each value, per column: (T, d) -> (T, d) ints."""
    ranks = a.argsort(axis=0, kind="stable").argsort(axis=0, kind="stable")
    return ranks * bins // len(a)


def _local_log_frequency(codes: np.ndarray) -> np.ndarray:
    """ln p(cell of sample i) for joint bin codes (T, d)."""
    if codes.shape[1] == 0:
        return np.zeros(len(codes))
    _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    return np.log(counts[inverse.ravel()] / len(codes))


def binned_cmi(x, y, z=None, bins: int | None = None, local: bool = False):
    """Plug-in I(X; Y | Z) over equal-frequency bins (default: about T^(1/(d+2)) bins per dim)."""
    x, y = as_2d(x), as_2d(y)
    z = _empty(len(x)) if z is None else as_2d(z)
    dims = x.shape[1] + y.shape[1] + z.shape[1]
    bins = bins or max(2, int(round(len(x) ** (1 / (dims + 2)))))
    cx, cy, cz = (_bin_codes(a, bins) for a in (x, y, z))
    values = (_local_log_frequency(np.hstack([cx, cy, cz])) + _local_log_frequency(cz)
              - _local_log_frequency(np.hstack([cx, cz])) - _local_log_frequency(np.hstack([cy, cz])))
    return values if local else float(values.mean())


def cmi(x, y, z=None, estimator: str = "ksg", k: int = 8, local: bool = False, bins: int | None = None):
    """I(X; Y | Z) with the named estimator, on data already transformed."""
    if estimator == "ksg":
        return knn_cmi(x, y, z, k, local)
    if estimator == "gaussian":
        return gaussian_cmi(x, y, z, local)
    if estimator == "binned":
        return binned_cmi(x, y, z, bins, local)
    raise ValueError(f"unknown estimator {estimator!r}; expected one of {ESTIMATORS}")
