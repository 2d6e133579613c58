"""The information-theoretic causal framework (after van Leeuwen, DeCaria, Chakraborty & Pulido 2021).

Target Y_t; candidate drivers D = {X_i(t - tau)} for each driver series X_i (the target's own past
included) and each lag tau in the scan. Information in nats, estimated by
:mod:`daflow.causal.estimators`, significance by :mod:`daflow.causal.surrogates`.

1. Parent selection (the PC1 stage of PCMCI, Runge et al. 2019, Sci. Adv. 5 eaau4996): k-NN
   estimators lose power fast with the conditioning dimension, so the strengths below are measured
   over a small set of parents P, chosen among D: start with P = D; for p = 0, 1, 2, ... test every
   candidate c in P with I(Y; c | S), S its p strongest fellow parents (strength = the smallest
   conditional information seen so far); drop c when the surrogate p-value exceeds ``pc_alpha``;
   stop when no candidate has p fellow parents or ``max_conds`` is reached.
2. Over P (each term with a surrogate p-value):
   total information      I(Y; P),
   unique strength        U_i = I(Y; P_i | P without P_i),
   interaction            sum_i U_i - I(Y; P): synergy minus redundancy (for two drivers, with the
                          partial-information terms R, S: U_i = unique_i + S, I(Y; P) = R + S + sum unique_i,
                          so the difference is S - R); > 0 when the causes act jointly, as x*y on z
                          in Lorenz-63, < 0 when they carry the same information. (DESIGN.md writes the
                          remainder with the opposite sign, which would make synergy negative.)
   pair interaction       I(Y; P_i, P_j) - I(Y; P_i) - I(Y; P_j),
   certainty              C(Y | P) = 1 - exp(-2 I(Y; P)), in [0, 1), monotone in the information
                          available (R^2 for jointly Gaussian variables),
   unknown-process share  1 - C(Y | P): what the drivers in D leave unexplained.
   Candidates not selected are reported with I(Y; c | P) and its p-value (the lag scan).
3. Local (pointwise) versions of the total information and of each unique strength, per sample.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from daflow.causal.estimators import cmi, transform
from daflow.causal.surrogates import p_value, surrogate_cmi
from daflow.errors import DataError, OptionError


@dataclass(frozen=True)
class Link:
    driver: str
    lag: int
    unique: float        # U_i for a parent, I(Y; c | P) for a candidate not selected
    p_value: float
    selected: bool


@dataclass
class CausalResult:
    target: str
    links: list[Link]
    total_information: float
    total_p_value: float
    interaction: float
    pair_interactions: dict[tuple[int, int], float]
    certainty: float
    unknown_share: float
    samples: int
    local_total: np.ndarray | None = None                  # (T,)
    local_unique: np.ndarray | None = None                 # (n_parents, T)
    options: dict = field(default_factory=dict)

    @property
    def parents(self) -> list[Link]:
        return [link for link in self.links if link.selected]

    def summary(self) -> dict:
        return {
            "target": self.target,
            "links": [{"driver": lk.driver, "lag": lk.lag, "unique": lk.unique, "p_value": lk.p_value,
                       "selected": lk.selected} for lk in self.links],
            "total_information": self.total_information,
            "total_p_value": self.total_p_value,
            "interaction": self.interaction,
            "certainty": self.certainty,
            "unknown_share": self.unknown_share,
            "samples": self.samples,
        }


def certainty(information: float) -> float:
    """C = 1 - exp(-2 I), I in nats."""
    return float(1.0 - np.exp(-2.0 * max(information, 0.0)))


def lagged_design(series: dict[str, np.ndarray], target: str, drivers: list[str], lags: list[int]):
    """Y_t and the candidates X_i(t - tau), rows with any NaN dropped.

    Returns (y (T',), candidates (T', n), [(driver, lag)], kept row indices into the series).
    """
    length = len(series[target])
    max_lag = max(lags)
    rows = np.arange(max_lag, length)
    y = series[target][rows]
    names = [(d, lag) for d in drivers for lag in lags]
    cands = np.stack([series[d][rows - lag] for d, lag in names], axis=1)
    keep = np.isfinite(y) & np.isfinite(cands).all(axis=1)
    return y[keep], cands[keep], names, rows[keep]


class Analysis:
    """One target's analysis: estimator, transform, surrogates and the cached data."""

    def __init__(self, y, candidates, estimator="ksg", k=8, surrogates=200, method="local",
                 shuffle_neighbors=5, block_length=1, seed=0, bins=None):
        kind = "ranks" if estimator == "ksg" else "standardize"
        self.y = transform(y, kind)
        self.c = transform(candidates, kind)
        self.estimator, self.k, self.n, self.bins = estimator, k, surrogates, bins
        self.method, self.shuffle_neighbors, self.block_length = method, shuffle_neighbors, block_length
        self.rng = np.random.default_rng(seed)

    def _cols(self, idx):
        return self.c[:, list(idx)] if len(idx) else None

    def info(self, x_idx, z_idx=(), local=False):
        return cmi(self.c[:, list(x_idx)], self.y, self._cols(z_idx), self.estimator, self.k, local, self.bins)

    def test(self, x_idx, z_idx=(), alpha: float | None = None) -> tuple[float, float]:
        """(I(Y; C_x | C_z), p-value), surrogates of C_x.

        With ``alpha``, surrogates are drawn in chunks of 50 and the test stops as soon as the
        p-value is sure to exceed alpha (the p-value returned is then a lower bound above alpha).
        """
        value = self.info(x_idx, z_idx)
        if self.n == 0:
            return value, float("nan")
        nulls, chunk = [], self.n if alpha is None else 50
        while sum(map(len, nulls)) < self.n:
            nulls.append(surrogate_cmi(self.c[:, list(x_idx)], self.y, self._cols(z_idx),
                                       min(chunk, self.n - sum(map(len, nulls))), self.estimator, self.k,
                                       self.method, self.shuffle_neighbors, self.block_length,
                                       int(self.rng.integers(2**32)), self.bins))
            if alpha is not None and 1 + sum(int(np.sum(n >= value)) for n in nulls) > alpha * (1 + self.n):
                break
        return value, p_value(value, np.concatenate(nulls))


def select_parents(an: Analysis, pc_alpha: float = 0.2, max_conds: int | None = None) -> list[int]:
    """PC1 condition selection (PCMCI): candidate indices sorted by strength, strongest first."""
    parents = list(range(an.c.shape[1]))
    strength = {c: np.inf for c in parents}
    p = 0
    while len(parents) > p and (max_conds is None or p <= max_conds):
        kept = []
        for c in parents:
            conds = [o for o in sorted(parents, key=lambda o: -strength[o]) if o != c][:p]
            value, pval = an.test([c], conds, alpha=pc_alpha)
            strength[c] = min(strength[c], value)
            if not pval > pc_alpha:
                kept.append(c)
        parents = sorted(kept, key=lambda o: -strength[o])
        p += 1
    return parents


def check_resolution(samples: int, surrogates: int, pc_alpha: float, block_length: int) -> None:
    """OptionError when no p-value could reach ``pc_alpha``, so that no driver could ever be selected.

    The surrogate p-value (1 + #{null >= I}) / (1 + n) is at least 1 / (1 + n); block surrogates of B blocks
    repeat one of B! orders, the original among them, so the p-value is also about 1 / B! at best.
    """
    if pc_alpha <= 0:
        raise OptionError("pc_alpha", f"{pc_alpha}: a driver is kept when its p-value is at most pc_alpha, and p > 0")
    if (1 + surrogates) * pc_alpha < 1:
        raise OptionError("surrogates", f"{surrogates} surrogates give p-values of at least 1/{1 + surrogates}, "
                                        f"above pc_alpha = {pc_alpha}: no driver could be selected")
    blocks = -(-samples // block_length)
    if math.factorial(min(blocks, 20)) * pc_alpha < 1:
        raise OptionError("block_length", f"{block_length} cuts the {samples} samples into {blocks} block(s), whose "
                                          f"{math.factorial(blocks)} order(s) cannot give a p-value below pc_alpha = {pc_alpha}")


def analyse(series: dict[str, np.ndarray], target: str, drivers: list[str], lags: list[int],
            estimator: str = "ksg", k: int = 8, surrogates: int = 200, pc_alpha: float = 0.2,
            max_conds: int | None = None, method: str = "local", shuffle_neighbors: int = 5,
            block_length: int = 1, local: bool = False, seed: int = 0, bins: int | None = None,
            source: str | None = None) -> CausalResult:
    """Select the parents of ``target`` among the lagged drivers and measure their information."""
    y, cands, names, _ = lagged_design(series, target, drivers, lags)
    if len(y) <= max(2 * k, 2 * cands.shape[1] + 2):
        raise DataError(source, f"{len(y)} complete samples after lagging are too few for k = {k} "
                                f"and {cands.shape[1]} lagged candidates")
    check_resolution(len(y), surrogates, pc_alpha, block_length if method == "block" else 1)
    an = Analysis(y, cands, estimator, k, surrogates, method, shuffle_neighbors, block_length, seed, bins)
    parents = select_parents(an, pc_alpha, max_conds)
    links = []
    for j, (driver, lag) in enumerate(names):
        others = [o for o in parents if o != j]
        value, pval = an.test([j], others)
        links.append(Link(driver, lag, float(value), float(pval), j in parents))
    total, total_p = an.test(parents) if parents else (0.0, 1.0)
    uniques = sum(lk.unique for lk in links if lk.selected)
    pairs = {(a, b): float(an.info([a, b]) - an.info([a]) - an.info([b])) for a, b in combinations(parents, 2)}
    result = CausalResult(
        target=target, links=links, total_information=float(total), total_p_value=float(total_p),
        interaction=float(uniques - total), pair_interactions=pairs, certainty=certainty(total),
        unknown_share=1.0 - certainty(total), samples=len(y),
        options=dict(estimator=estimator, k=k, surrogates=surrogates, pc_alpha=pc_alpha, method=method,
                     shuffle_neighbors=shuffle_neighbors, block_length=block_length, seed=seed),
    )
    if local and parents:
        result.local_total = an.info(parents, local=True)
        result.local_unique = np.stack([an.info([j], [o for o in parents if o != j], local=True)
                                        for j in sorted(parents)])  # in the order of ``result.parents``
    return result
