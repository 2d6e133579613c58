"""Point-wise verification kernels on NumPy arrays; the ensemble is axis 0.

CRPS of an ensemble x_1..x_M against an outcome y (Gneiting & Raftery 2007, eq. 21):
    CRPS      = (1/M) sum_i |x_i - y| - 1/(2 M^2)      sum_{i,j} |x_i - x_j|
    CRPS_fair = (1/M) sum_i |x_i - y| - 1/(2 M (M-1))  sum_{i,j} |x_i - x_j|   (Ferro 2014)
computed in O(M log M) with the sorted members x_(1) <= ... <= x_(M):
    sum_{i,j} |x_i - x_j| = 2 sum_k (2k - M - 1) x_(k).
The rank of the truth among the members (Hamill 2001) breaks ties at random, as xskillscore does.
"""
from __future__ import annotations

import numpy as np


def crps_ensemble(members: np.ndarray, truth: np.ndarray, fair: bool = False) -> np.ndarray:
    """CRPS per point; ``members`` has shape (M, ...), ``truth`` the trailing shape."""
    m = members.shape[0]
    skill = np.abs(members - truth[None]).mean(axis=0)
    if m == 1:
        return skill
    ordered = np.sort(members, axis=0)
    k = np.arange(1, m + 1, dtype=members.dtype).reshape((m,) + (1,) * (members.ndim - 1))
    pair_sum = 2.0 * ((2 * k - m - 1) * ordered).sum(axis=0)
    return skill - pair_sum / (2.0 * m * (m - 1 if fair else m))


def truth_rank(members: np.ndarray, truth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rank (0..M) of the truth among the members, ties broken uniformly at random."""
    below = (members < truth[None]).sum(axis=0)
    ties = (members == truth[None]).sum(axis=0)
    return below + np.floor(rng.random(below.shape) * (ties + 1)).astype(below.dtype)


def rank_histogram(ranks: np.ndarray, members: int) -> np.ndarray:
    """Counts of ranks 0..M (length M + 1)."""
    return np.bincount(ranks.ravel(), minlength=members + 1)
