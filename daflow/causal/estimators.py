"""Entropy, mutual information (MI) and conditional mutual information (CMI) estimators.

All information is in nats. Arrays are (T, d): T samples of a d-dimensional variable.

k-nearest neighbours (Kraskov, Stoegbauer & Grassberger 2004, PRE 69 066138; Frenzel & Pompe 2007,
PRL 99 204101), max norm. For each sample i, eps_i is the distance to its k-th neighbour in the
joint space (X, Y, Z); n_xz(i), n_yz(i), n_z(i) count the samples strictly closer than eps_i in the
subspaces, the sample itself included. Then

    I(X; Y | Z) = psi(k) - < psi(n_xz) + psi(n_yz) - psi(n_z) >,

and with no Z, n_z = T, which is KSG's first estimator I(X; Y) = psi(k) + psi(T) - <psi(n_x) + psi(n_y)>.
The term inside < > is the local (pointwise) CMI of sample i. Kozachenko-Leonenko entropy with the
same norm: H(X) = -psi(k) + psi(T) + d <ln(2 eps_i)>. One estimate: neighbours from scipy's
cKDTree, counts from vectorised ``query_ball_point(..., return_length=True)`` range queries. The
surrogates of a significance test (:func:`knn_cmi_surrogates`) change X only, so they share
each sample's neighbours in the Y-Z and Z subspaces, sorted by distance once; the same numbers,
exactly, at a fraction of the cost.

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

DENSE_LIMIT = 2000  # largest T for which the surrogates share T x T sorted neighbour tables

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


def _count_within(points: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Samples of ``points`` (T, d) strictly closer than radii (T,) to each sample, itself included."""
    if points.shape[1] == 0:
        return np.full(len(points), len(points))
    tree = cKDTree(points)
    return tree.query_ball_point(points, np.nextafter(radii, 0), p=np.inf, workers=-1, return_length=True)


def knn_cmi(x, y, z=None, k: int = 8, local: bool = False):
    """Frenzel-Pompe I(X; Y | Z) (KSG I(X; Y) when z is None) of already transformed data."""
    x, y = as_2d(x), as_2d(y)
    z = _empty(len(x)) if z is None else as_2d(z)
    if len(x) <= k:
        raise ValueError(f"{len(x)} samples are too few for k = {k} neighbours")
    joint = np.hstack([x, y, z])
    eps = cKDTree(joint).query(joint, k=[k + 1], p=np.inf, workers=-1)[0][:, 0]
    values = (digamma(k) - digamma(_count_within(np.hstack([x, z]), eps))
              - digamma(_count_within(np.hstack([y, z]), eps)) + digamma(_count_within(z, eps)))
    return values if local else float(values.mean())


def _sorted_neighbours(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, d) -> each row's samples by increasing max-norm distance (T, T) and those distances,
    with +inf appended (T, T + 1)."""
    d = np.zeros((len(a), len(a)))
    for col in a.T:
        np.maximum(d, np.abs(col[:, None] - col[None, :]), out=d)
    order = np.argsort(d, axis=1)
    return order, np.hstack([np.take_along_axis(d, order, axis=1), np.full((len(a), 1), np.inf)])


def _with_x(xs: np.ndarray, order: np.ndarray, dist: np.ndarray, cols: slice, pairs=None) -> np.ndarray:
    """max(|x*_s(j) - x*_s(i)|, dist(i, j)) for the neighbours j = order[i, cols] of sample i.

    xs (dx, S, T): S versions of X. All samples of all versions: (S, T, w); only the (version,
    sample) ``pairs`` (two index arrays of length P): (P, w).
    """
    out = dist[:, cols] if pairs is None else dist[pairs[1], cols]
    for xc in xs:
        if pairs is None:
            near = np.take(xc, order[:, cols], axis=1) - xc[..., None]
        else:
            s, i = pairs
            near = xc.ravel()[(s * xc.shape[1])[:, None] + order[i, cols]] - xc[s, i][:, None]
        out = np.maximum(out, np.abs(near))
    return out


def _chunks(n: int, width: int, t: int = 1):
    """Index slices that keep the (chunk, t, width) work arrays near 250,000 entries (cache-sized)."""
    step = max(1, 2**18 // (width * t))
    return (slice(a, a + step) for a in range(0, n, step))


def _below(dist: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Entries of each sorted row dist[i] below radii[:, i]: (T, T + 1), (S, T) -> (S, T)."""
    return np.stack([np.searchsorted(row, r) for row, r in zip(dist, radii.T)], axis=1)


def _kth_joint_distance(xs: np.ndarray, order_yz: np.ndarray, dist_yz: np.ndarray, k: int) -> np.ndarray:
    """Distance from each sample of each version to its k-th neighbour in (X*, Y, Z): (S, T)."""
    s, t = xs.shape[1:]
    w = min(8 * k, t)
    eps = np.empty((s, t))
    for c in _chunks(s, w, t):
        eps[c] = np.partition(_with_x(xs[:, c], order_yz, dist_yz, slice(0, w)), k, axis=2)[..., k]
    todo = np.nonzero(eps > dist_yz[:, w])
    while len(todo[0]):
        w = min(2 * w, t)
        for c in _chunks(len(todo[0]), w):
            pairs = todo[0][c], todo[1][c]
            eps[pairs] = np.partition(_with_x(xs, order_yz, dist_yz, slice(0, w), pairs), k, axis=1)[:, k]
        todo = np.nonzero(eps > dist_yz[:, w])
    return eps


def _count_xz(xs: np.ndarray, order_z: np.ndarray, dist_z: np.ndarray, eps: np.ndarray, n_z: np.ndarray) -> np.ndarray:
    """n_xz: of the n_z neighbours in Z order, those also closer than eps in X*: (S, T)."""
    s, t = eps.shape
    w = min(64, t)
    n_xz = np.empty((s, t), dtype=np.int64)
    for c in _chunks(s, w, t):
        n_xz[c] = np.count_nonzero(_with_x(xs[:, c], order_z, dist_z, slice(0, w)) < eps[c, :, None], axis=2)
    while w < t:
        todo = np.nonzero(n_z > w)
        for c in _chunks(len(todo[0]), w):
            pairs = todo[0][c], todo[1][c]
            near = _with_x(xs, order_z, dist_z, slice(w, min(2 * w, t)), pairs)
            n_xz[pairs] += np.count_nonzero(near < eps[pairs][:, None], axis=1)
        w *= 2
    return n_xz


def knn_cmi_surrogates(x, y, z, perms: np.ndarray, k: int = 8) -> np.ndarray:
    """Local Frenzel-Pompe CMI of each surrogate X[perm] against Y given Z: perms (S, T) -> (S, T).

    Equal, value for value, to ``knn_cmi(x[perm], y, z, k, local=True)`` for each perm. The Y-Z and
    Z subspaces are the same in all surrogates, so each sample's neighbours in them are sorted by
    distance once (T x T tables). The joint distance eps_i is then the (k+1)-th smallest
    max(|x*_i - x*_j|, d_yz(i, j)) over the first w neighbours j in Y-Z order, exact as soon as it is
    not above the (w+1)-th Y-Z distance (no later neighbour can come closer); w doubles for the
    samples where it is. n_yz and n_z are binary searches in the sorted rows; n_xz scans the n_z
    neighbours in Z order. With no Z and perms that are permutations, X* takes X's values, so n_x of
    sample i is a binary search in the sorted row of its source perm(i) in X's own table. Otherwise
    (or T > DENSE_LIMIT) one :func:`knn_cmi` per surrogate.
    """
    x, y = as_2d(x), as_2d(y)
    z = _empty(len(x)) if z is None else as_2d(z)
    s, t = perms.shape
    if t > DENSE_LIMIT or (z.shape[1] == 0 and not (np.sort(perms, axis=1) == np.arange(t)).all()):
        return np.stack([knn_cmi(x[p], y, z, k, local=True) for p in perms])
    if t <= k:
        raise ValueError(f"{t} samples are too few for k = {k} neighbours")
    xs = x.T[:, perms]  # (dx, S, T)
    order_yz, dist_yz = _sorted_neighbours(np.hstack([y, z]))
    eps = _kth_joint_distance(xs, order_yz, dist_yz, k)
    n_yz = _below(dist_yz, eps)
    if z.shape[1] == 0:
        n_z = np.full((s, t), t)
        at_source = np.take_along_axis(eps, np.argsort(perms, axis=1), axis=1)
        n_xz = np.take_along_axis(_below(_sorted_neighbours(x)[1], at_source), perms, axis=1)
    else:
        order_z, dist_z = _sorted_neighbours(z)
        n_z = _below(dist_z, eps)
        n_xz = _count_xz(xs, order_z, dist_z, eps, n_z)
    return digamma(k) - digamma(n_xz) - digamma(n_yz) + digamma(n_z)


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
