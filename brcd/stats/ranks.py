"""Ranks of methods across the columns of a report (Demsar 2006): average ranks, Friedman's test,
the Nemenyi critical difference and the groups it cannot separate, and bootstrap intervals of ranks."""
from __future__ import annotations

import functools
import math

import numpy as np

from brcd.stats.paired import check_confidence

__all__ = ["rank_matrix", "average_ranks", "friedman_test", "nemenyi_q", "nemenyi_critical_difference",
           "nemenyi_groups", "bootstrap_rank_intervals"]


def _scores_matrix(scores) -> np.ndarray:
    s = np.asarray(scores, dtype=float)
    if s.ndim != 2 or s.shape[0] < 1 or s.shape[1] < 2:
        raise ValueError(f"scores must be (n_columns >= 1, n_methods >= 2), got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite (drop or impute columns with missing methods first)")
    return s


def rank_matrix(scores, decimals: int | None = None) -> np.ndarray:
    """Rank of each method within each column: 1 = highest score, ties get the average rank.

    ``decimals`` rounds the scores first, so that methods equal at the
    precision shown in the tables count as tied.
    """
    s = _scores_matrix(scores)
    if decimals is not None:
        s = np.round(s, decimals)
    ranks = np.empty_like(s)
    for i, row in enumerate(s):
        order = np.argsort(-row, kind="stable")
        ordered = row[order]
        cuts = np.flatnonzero(ordered[1:] != ordered[:-1]) + 1
        starts, ends = np.r_[0, cuts], np.r_[cuts, row.size]
        ranks[i, order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def average_ranks(scores, decimals: int | None = None) -> np.ndarray:
    """Average rank of each method over columns (``scores``: (n_columns, n_methods), higher is better).

    Ranks as in Demsar (2006): 1 is best, ties within a column share the
    average of the ranks they span (two methods tied for first get 1.5 each).
    """
    return rank_matrix(scores, decimals).mean(axis=0)


def _chi2_sf(x: float, df: int) -> float:
    """Upper tail of chi-square with integer ``df`` (closed forms; no scipy)."""
    if x <= 0:
        return 1.0
    half = x / 2.0
    if df % 2 == 0:
        term, total = 1.0, 1.0
        for i in range(1, df // 2):
            term *= half / i
            total += term
        return min(1.0, math.exp(-half) * total)
    total = math.erfc(math.sqrt(half))
    term = math.sqrt(half) * 2.0 / math.sqrt(math.pi)  # (x/2)^(1/2) / Gamma(3/2)
    for i in range(1, (df - 1) // 2 + 1):
        total += math.exp(-half) * term
        term *= half / (i + 0.5)
    return min(1.0, total)


def friedman_test(scores, decimals: int | None = None) -> tuple[float, float]:
    """Friedman's chi-square statistic over columns and its p-value (chi-square, k - 1 df).

    Demsar (2006) recommends it before the Nemenyi post-hoc test: a large
    p-value means the columns give no evidence that the methods' ranks
    differ at all. No tie correction (conservative when ties exist). The
    chi-square approximation wants N > ~10 columns and k > ~5 methods;
    columns sharing a dataset are not independent, which makes p optimistic.
    """
    ranks = rank_matrix(scores, decimals)
    n, k = ranks.shape
    mean_ranks = ranks.mean(axis=0)
    stat = 12.0 * n / (k * (k + 1)) * (float(np.sum(mean_ranks ** 2)) - k * (k + 1) ** 2 / 4.0)
    return stat, _chi2_sf(stat, k - 1)


#: Demsar (2006), Table 5(a): Nemenyi q_alpha (studentized range / sqrt 2, infinite df), k = 2..10
_DEMSAR_Q = {
    0.05: (1.960, 2.343, 2.569, 2.728, 2.850, 2.949, 3.031, 3.102, 3.164),
    0.10: (1.645, 2.052, 2.291, 2.459, 2.589, 2.693, 2.780, 2.855, 2.920),
}


@functools.lru_cache(maxsize=None)
def _studentized_range_q(k: int, alpha: float) -> float:
    """Upper-alpha point of the range of k i.i.d. N(0, 1), divided by sqrt 2.

    P(R <= r) = k * int phi(z) (Phi(z + r) - Phi(z))^(k-1) dz, integrated on
    a fine grid and inverted by bisection; reproduces Demsar's table to 3
    decimals (tested) and extends it beyond k = 10.
    """
    z = np.linspace(-9.0, 9.0, 6001)
    erf = np.frompyfunc(math.erf, 1, 1)
    phi_z = np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    big_phi_z = 0.5 * (1 + erf(z / math.sqrt(2)).astype(float))
    dz = z[1] - z[0]

    def cdf(r: float) -> float:
        big_phi_zr = 0.5 * (1 + erf((z + r) / math.sqrt(2)).astype(float))
        return float(k * np.sum(phi_z * np.clip(big_phi_zr - big_phi_z, 0, 1) ** (k - 1)) * dz)

    lo, hi = 0.0, 12.0
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if cdf(mid) < 1 - alpha else (lo, mid)
    return 0.5 * (lo + hi) / math.sqrt(2)


def nemenyi_q(n_methods: int, alpha: float = 0.05) -> float:
    """Nemenyi's q_alpha for k methods: Demsar's Table 5(a) for k <= 10 and alpha in {0.05, 0.10},
    otherwise the studentized range computed numerically (same definition)."""
    if int(n_methods) != n_methods or n_methods < 2:
        raise ValueError("the Nemenyi test needs at least 2 methods")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    table = _DEMSAR_Q.get(alpha)
    if table is not None and n_methods <= 10:
        return table[int(n_methods) - 2]
    return _studentized_range_q(int(n_methods), float(alpha))


def nemenyi_critical_difference(n_methods: int, n_columns: int, alpha: float = 0.05) -> float:
    """Critical difference of average ranks, CD = q_alpha * sqrt(k (k + 1) / (6 N)) (Demsar 2006).

    Two methods whose average ranks over the N columns differ by more than
    CD differ significantly at level alpha (all pairs, family-wise). With the
    few columns of a typical report the CD is large -- e.g. k = 13 methods
    and N = 4 columns give CD = 9.1 ranks, more than half the range -- so an
    absent CD bar is no evidence of equivalence; say so next to the figure.
    The test also assumes independent columns, which columns that share a
    dataset or trained teachers are not (the CD is then optimistic).
    """
    if int(n_columns) != n_columns or n_columns < 1:
        raise ValueError("n_columns must be a positive integer")
    k = int(n_methods)
    return nemenyi_q(k, alpha) * math.sqrt(k * (k + 1) / (6.0 * n_columns))


def bootstrap_rank_intervals(scores, *, n_boot: int = 2000, seed: int | None = 0, confidence: float = 0.95,
                             decimals: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Percentile intervals of each method's average rank under resampling of columns.

    Columns are resampled with replacement (ranks within a column kept), so
    the interval shows how much the average rank depends on which columns
    happen to be in the grid. With N columns there are only C(2N-1, N)
    distinct resamples (35 for N = 4): read it as descriptive, not as a test.
    """
    check_confidence(confidence)
    ranks = rank_matrix(scores, decimals)
    n = ranks.shape[0]
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=int(n_boot))
    boot = counts @ ranks / n
    low, high = np.quantile(boot, [0.5 - confidence / 2, 0.5 + confidence / 2], axis=0)
    return low, high


def nemenyi_groups(ranks, cd: float) -> list[tuple[int, int]]:
    """The groups of a critical-difference diagram: maximal runs of methods, in order of average rank,
    whose ranks lie within ``cd`` of each other (the Nemenyi test separates no two of them).

    Returns (first, last) positions into the methods sorted by rank (ties in the given order), one
    per maximal run of at least two methods; a method in none is separated from every other. Runs
    overlap where the test cannot order three methods transitively (a ~ b, b ~ c, a < c).
    """
    values = np.sort(np.asarray(ranks, dtype=float), kind="stable")
    groups, reach = [], 0
    for first in range(values.size):
        last = int(np.searchsorted(values, values[first] + cd, side="right")) - 1
        if last > first and last > reach:  # not inside the previous run
            groups.append((first, last))
        reach = max(reach, last)
    return groups
