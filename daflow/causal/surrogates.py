"""Surrogate significance tests of I(X; Y | Z) > 0.

Null hypothesis X independent of Y given Z. Surrogates destroy the X-Y dependence while keeping
the X-Z dependence:

- ``local`` permutation (Runge 2018, AISTATS, "Conditional independence testing based on a
  nearest-neighbor estimator of conditional mutual information"): each sample i takes the X of
  one of its ``shuffle_neighbors`` nearest neighbours in Z (max norm), drawn at random and, as
  far as possible, without reusing a sample. Runge draws the samples one by one; here all
  samples of all surrogates draw at once in rounds: in round r each sample not yet served
  proposes its r-th (randomly ordered) neighbour, and a proposal wins when no sample holds that
  neighbour yet and it has the highest random priority among the proposals for it; samples still
  unserved after the last round keep their last neighbour (a repeat, as in Runge's scheme).
- ``block`` shuffle (for autocorrelated series; also the test when Z is empty): X is cut into
  blocks of ``block_length`` consecutive samples and the blocks are permuted.

p-value = (1 + #{surrogates >= estimate}) / (1 + n_surrogates), so its resolution is
1 / (1 + n_surrogates). For the k-NN estimator the surrogates share the neighbour tables of the
fixed Y-Z and Z subspaces (:func:`daflow.causal.estimators.knn_cmi_surrogates`).
"""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from daflow.causal.estimators import as_2d, cmi, knn_cmi_surrogates


def local_permutations(z: np.ndarray, n: int, shuffle_neighbors: int, rng: np.random.Generator) -> np.ndarray:
    """n index arrays (n, T): each sample's replacement among its nearest neighbours in z (T, dz)."""
    t = len(z)
    m = min(shuffle_neighbors, t)
    neighbours = cKDTree(z).query(z, k=m, p=np.inf, workers=-1)[1].reshape(t, m)  # (T, m), self first
    choice = np.argsort(rng.random((n, t, m)), axis=2)                               # random order per sample
    offset = (np.arange(n) * t)[:, None, None]                       # indices into all surrogates, flattened
    proposals = (neighbours.ravel()[(np.arange(t) * m)[:, None] + choice] + offset).reshape(-1, m).T.copy()
    priority = rng.random(n * t)
    perm = np.full(n * t, -1)
    used = np.zeros(n * t, dtype=bool)
    for r in range(m):
        want = proposals[r]
        open_ = (perm < 0) & ~used[want]
        # the highest-priority open proposal for each neighbour wins
        key = np.where(open_, priority, -1.0)
        best = np.full(n * t, -1.0)
        np.maximum.at(best, want, key)
        win = open_ & (key == best[want])
        perm = np.where(win, want, perm)
        used[want[win]] = True
    perm = np.where(perm < 0, proposals[-1], perm)
    return perm.reshape(n, t) - offset[:, :, 0]


def block_permutations(t: int, n: int, block_length: int, rng: np.random.Generator) -> np.ndarray:
    """n index arrays (n, T) that permute blocks of ``block_length`` consecutive samples."""
    starts = np.arange(0, t, block_length)
    order = np.stack([rng.permutation(len(starts)) for _ in range(n)])
    index = (starts[order][:, :, None] + np.arange(block_length)).reshape(n, -1)
    return index[index < t].reshape(n, t)  # the last block may be short


def surrogate_cmi(x, y, z=None, n: int = 200, estimator: str = "ksg", k: int = 8, method: str = "local",
                  shuffle_neighbors: int = 5, block_length: int = 1, seed: int | None = None,
                  bins: int | None = None) -> np.ndarray:
    """Null distribution: n estimates of I(X*; Y | Z) with X* a surrogate of X."""
    x, y = as_2d(x), as_2d(y)
    z = np.zeros((len(x), 0)) if z is None else as_2d(z)
    rng = np.random.default_rng(seed)
    if method == "local" and z.shape[1] > 0:
        perms = local_permutations(z, n, shuffle_neighbors, rng)
    elif method in ("local", "block"):
        perms = block_permutations(len(x), n, block_length, rng)
    else:
        raise ValueError(f"unknown surrogate method {method!r}; expected local or block")
    if estimator == "ksg":
        return knn_cmi_surrogates(x, y, z, perms, k).mean(axis=1)
    return np.array([cmi(x[p], y, z, estimator, k, bins=bins) for p in perms])


def p_value(value: float, null: np.ndarray) -> float:
    """(1 + #{null >= value}) / (1 + n)."""
    return float((1 + np.sum(null >= value)) / (1 + len(null)))


def cmi_test(x, y, z=None, n: int = 200, estimator: str = "ksg", k: int = 8, method: str = "local",
             shuffle_neighbors: int = 5, block_length: int = 1, seed: int | None = None,
             bins: int | None = None) -> tuple[float, float]:
    """(I(X; Y | Z), surrogate p-value)."""
    value = cmi(x, y, z, estimator, k, bins=bins)
    null = surrogate_cmi(x, y, z, n, estimator, k, method, shuffle_neighbors, block_length, seed, bins)
    return value, p_value(value, null)
