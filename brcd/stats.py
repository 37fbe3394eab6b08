"""Statistics for the benchmark's reports: seeds, paired comparisons, ranks.

Data model. A *run* (dataset, bits, hash, teacher, student, kd, paradigm,
seed) yields a per-query vector of average precision (AP@K of each of the Q
queries; the same Q queries for every method and seed of a dataset); its
metric value is the mean over queries. A report *column* is (dataset, bits,
paradigm, teacher, student); its rows are methods, each with S seeds (S = 1
to about 5). Seeds are *paired* across methods: seed s of every method uses
the same trained teacher (teacher seed s) and split. Hence a method is
passed around as an array of shape (S, Q), rows in the same seed order for
every method.

What is estimated. The quantity a table reports for a method is the
expectation of its metric over the two sources of randomness the benchmark
samples: training seeds (teacher, split, student initialisation) and the
queries (a sample from the dataset's distribution of queries). For the
difference of two methods, write the per-(seed, query) difference as ::

    D[s, q] = a[s, q] - b[s, q] = delta + u_s + v_q + w_sq

(u: seed effect; v: query effect, shared by all seeds since the queries are
the same; w: seed-by-query interaction). The estimate is the grand mean of
D, with variance sigma_u^2 / S + sigma_v^2 / Q + sigma_w^2 / (S Q).

Public API
----------
- :func:`summarize` -- mean, sample std and Student-t CI of one cell over seeds;
- :func:`compare` -- paired difference of two methods with an interval that
  covers seed *and* query sampling, and P(A > B);
- :func:`compare_to_best`, :func:`tied_with_best` -- the best method of a
  column and the methods not significantly worse than it;
- :func:`rank_matrix`, :func:`average_ranks`, :func:`friedman_test`,
  :func:`nemenyi_critical_difference`, :func:`bootstrap_rank_intervals` --
  ranks across columns (Demsar 2006);
- :func:`t_quantile`, :func:`t_cdf` -- Student t for integer degrees of
  freedom (numpy only; no scipy in this environment).

Everything is pure numpy and deterministic given ``seed``.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

__all__ = [
    "Summary", "summarize",
    "Comparison", "compare", "compare_to_best", "tied_with_best", "excludes_zero",
    "rank_matrix", "average_ranks", "friedman_test", "nemenyi_q", "nemenyi_critical_difference",
    "bootstrap_rank_intervals",
    "t_cdf", "t_quantile",
]

#: bound on the number of elements of one block of bootstrap indices (memory: 8 bytes each)
_CHUNK_ELEMENTS = 1 << 20


# --------------------------------------------------------------------------- Student t (integer df)

def _t_central(theta: np.ndarray, df: int) -> np.ndarray:
    """P(|T| <= sqrt(df) tan(theta)) for T ~ t_df: the finite series of Abramowitz & Stegun 26.7.3-4.

    Exact for integer df (the only case needed: df = S - 1 or n - 1), and
    monotone in theta on [0, pi/2], which makes inversion by bisection safe.
    """
    s, c2 = np.sin(theta), np.cos(theta) ** 2
    term = np.ones_like(theta)
    acc = np.ones_like(theta)
    if df % 2:  # odd: (2/pi) [theta + sin cos (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 + ...)]
        if df == 1:
            return 2.0 / math.pi * theta
        for j in range(1, (df - 1) // 2):
            term = term * c2 * (2 * j) / (2 * j + 1)
            acc = acc + term
        return 2.0 / math.pi * (theta + s * np.cos(theta) * acc)
    for j in range(1, df // 2):  # even: sin (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ...)
        term = term * c2 * (2 * j - 1) / (2 * j)
        acc = acc + term
    return s * acc


def _check_df(df) -> int:
    if int(df) != df or df < 1:
        raise ValueError(f"degrees of freedom must be a positive integer, got {df!r}")
    return int(df)


def t_cdf(x, df: int) -> np.ndarray:
    """Cumulative distribution function of Student's t with integer ``df`` degrees of freedom."""
    df = _check_df(df)
    x = np.asarray(x, dtype=float)
    central = _t_central(np.arctan(np.abs(x) / math.sqrt(df)), df)
    return 0.5 + np.sign(x) * 0.5 * central


def t_quantile(p, df: int) -> np.ndarray | float:
    """Quantile function of Student's t with integer ``df`` (vectorised over ``p`` in (0, 1)).

    Bisection on theta = arctan(t / sqrt(df)) in [0, pi/2) (60 halvings: far
    below float resolution of the quantiles used here), so even df = 1, whose
    tails reach any value, needs no bracket search.
    """
    df = _check_df(df)
    p_arr = np.asarray(p, dtype=float)
    if np.any((p_arr <= 0) | (p_arr >= 1)):
        raise ValueError("quantile levels must lie strictly between 0 and 1")
    target = np.abs(2.0 * p_arr - 1.0)
    lo, hi = np.zeros_like(target), np.full_like(target, math.pi / 2)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        below = _t_central(mid, df) < target
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    q = np.sign(p_arr - 0.5) * math.sqrt(df) * np.tan(0.5 * (lo + hi))
    return float(q) if np.ndim(p) == 0 else q


# --------------------------------------------------------------------------- one cell over seeds

@dataclass(frozen=True)
class Summary:
    """A metric over seeds: mean, sample std (n - 1), n and the CI half-width (None when n = 1)."""

    mean: float
    std: float | None
    n: int
    half_width: float | None
    confidence: float = 0.95

    @property
    def low(self) -> float | None:
        return None if self.half_width is None else self.mean - self.half_width

    @property
    def high(self) -> float | None:
        return None if self.half_width is None else self.mean + self.half_width

    def text(self, digits: int = 3) -> str:
        """``"0.612 ± 0.008"`` (± the CI half-width), or ``"0.612"`` for one seed."""
        if self.half_width is None:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.half_width:.{digits}f}"


def summarize(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> Summary:
    """Mean, sample standard deviation and a Student-t confidence interval over seeds.

    ``values`` holds one metric value per seed (the run's mean over queries).
    The interval is mean ± t_{(1+c)/2, n-1} * std / sqrt(n): with n = 3 seeds
    the variance is estimated from 2 degrees of freedom, and the t quantile
    (4.30 for 95%) is what makes the interval cover the seed-population mean
    95% of the time when run values are normal -- a normal quantile (1.96)
    would cover only about 81%. Run values are means over hundreds of queries,
    so normality is a mild assumption. The interval is about the *seed*
    population for these fixed queries; :func:`compare` also covers query
    sampling. One seed: no spread can be estimated, std and half-width are None.
    """
    x = np.asarray(values, dtype=float).ravel()
    _check_confidence(confidence)
    if x.size == 0:
        raise ValueError("summarize needs at least one value")
    if not np.all(np.isfinite(x)):
        raise ValueError("summarize got a non-finite value")
    n, mean = x.size, float(x.mean())
    if n == 1:
        return Summary(mean, None, 1, None, confidence)
    std = float(x.std(ddof=1))
    half = float(t_quantile(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return Summary(mean, std, n, half, confidence)


# --------------------------------------------------------------------------- paired comparison


def excludes_zero(low: float, high: float) -> bool:
    """Whether the interval [low, high] of a difference excludes 0: the difference is significant."""
    return low > 0 or high < 0


@dataclass(frozen=True)
class Comparison:
    """Paired difference A - B of two methods of one column.

    ``delta``: mean(A) - mean(B) over all seeds and queries; ``low``/``high``:
    the ``confidence`` interval of the population difference; ``p_improvement``:
    share of replicates of the difference that are > 0 (ties count one half),
    i.e. the approximate posterior probability, under flat priors, that A's
    expected metric exceeds B's; ``covers_seeds``: False when S = 1 and the
    interval reflects query sampling only.
    """

    delta: float
    low: float
    high: float
    p_improvement: float
    n_seeds: int
    n_queries: int
    confidence: float = 0.95

    @property
    def significant(self) -> bool:
        """True when the interval excludes 0."""
        return excludes_zero(self.low, self.high)

    @property
    def not_worse(self) -> bool:
        """True when the interval reaches 0 or above: A is not significantly worse than B
        (the tied-with-the-best rule)."""
        return self.high >= 0

    @property
    def covers_seeds(self) -> bool:
        """Whether seed-to-seed variation is part of the interval (needs S > 1)."""
        return self.n_seeds > 1

    def text(self, digits: int = 3) -> str:
        """``"+0.012 [+0.004, +0.020]"``."""
        return f"{self.delta:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"


def compare(a, b, *, n_boot: int = 2000, seed: int | np.random.Generator | None = 0,
            confidence: float = 0.95) -> Comparison:
    """Paired comparison of methods A and B of one column from per-query AP.

    ``a`` and ``b`` have shape (S, Q) (a 1-D array is one seed), rows in the
    same seed order and columns the same queries. delta = mean(a) - mean(b).

    Interval: a seed-level Student t combined with a query bootstrap.
    Replicates of the difference are ::

        delta* = delta + se_seed * T + lambda * (query-bootstrap mean of c - mean of c)

    - c_q = mean over seeds of D[:, q]; the query bootstrap resamples query
      indices with replacement, the *same* indices for every seed and for A
      and B (pairing: it is the bootstrap of c). It keeps the shape
      (skewness) of the per-query distribution, which is not normal for AP.
    - Seed term: d_s = mean over queries of D[s, :] are, given the queries,
      i.i.d. with mean delta + mean(v) and variance sigma_u^2 + sigma_w^2/Q,
      so (mean(d) - delta - mean(v)) / (sd(d)/sqrt(S)) is an exact t_{S-1}
      pivot under normality (d_s average hundreds of queries).
      se_seed = sd(d)/sqrt(S); T are stratified draws of t_{S-1} (quantiles
      at jittered evenly spaced levels, to cut Monte Carlo error in the tails).
    - Only mean(v), the query-sampling error shared by all seeds, is left for
      the bootstrap term. Its raw variance, MS_Q/(S Q) (two-way ANOVA mean
      squares of D), also holds sigma_w^2/(S Q), already in the seed term;
      lambda = sqrt(max(MS_Q - MS_E, 0) / MS_Q) shrinks the bootstrap
      deviations to the unbiased variance sigma_v^2/Q. MS_Q and MS_E have
      ~Q and ~(S-1)Q degrees of freedom, so this subtraction is precise.
    - low/high are the (1-c)/2 and (1+c)/2 quantiles of the replicates
      (widened, if ever needed, to contain delta itself).

    Why not a two-level bootstrap (seeds, then queries)? With S = 3 seeds
    there are only 10 distinct seed multisets; the percentile interval can
    hardly leave [min_s d_s, max_s d_s], which contains the seed-level mean
    with probability 1 - 2 * 2^-S = 75% when seed variance dominates (a
    two-level bootstrap covered 0.76 in the seed-dominated simulation), and
    the bootstrap variance of a mean of S values is biased by (S-1)/S. The
    t pivot is what a 2-degree-of-freedom variance estimate needs (4.30
    instead of ~1.96). The seed term is exact when seed noise (u or w)
    dominates, the bootstrap term is the usual large-Q query bootstrap when
    the shared query effect v dominates, and their convolution (the
    Behrens-Fisher fiducial construction) is slightly conservative in
    between. Measured coverage of the 95% interval (S = 3, Q = 300, 2,000
    simulated data sets each; tests/test_stats.py runs 400): 0.954 seed-,
    0.955 query- (skewed), 0.953 interaction-dominated, 0.965 mixed.

    S = 1: there is no seed replication; the interval is the plain query
    bootstrap of the single run (seed variation is NOT covered; the result
    has ``covers_seeds`` False). Q = 1: seed term only.

    p_improvement is the share of replicates with delta* > 0 (replicates
    exactly 0 count one half; identical inputs give 0.5); with the
    construction above it approximates the posterior probability that A's
    population mean exceeds B's under flat priors -- for seed-dominated
    noise, one minus the one-sided paired t-test p-value.

    Cost: the bootstrap draws Q indices per replicate in blocks of at most
    2^20 indices; 2,000 replicates with Q = 5,000 take ~0.03 s (Q = 500: ~0.007 s).
    """
    a, b = _as_runs(a, "a"), _as_runs(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"paired comparison needs equal shapes (seeds, queries), got {a.shape} and {b.shape}")
    _check_confidence(confidence)
    if int(n_boot) < 1:
        raise ValueError("n_boot must be positive")
    n_boot = int(n_boot)
    d = a - b
    n_seeds, n_queries = d.shape
    delta = float(d.mean())
    rng = np.random.default_rng(seed)
    replicates = delta + _seed_term(d, n_boot, rng) + _query_term(d, n_boot, rng)
    low, high = np.quantile(replicates, [0.5 - confidence / 2, 0.5 + confidence / 2])
    p = (np.count_nonzero(replicates > 0) + 0.5 * np.count_nonzero(replicates == 0)) / n_boot
    return Comparison(delta, float(min(low, delta)), float(max(high, delta)), float(p),
                      n_seeds, n_queries, confidence)


def _as_runs(x, name: str) -> np.ndarray:
    """Per-query values as float64 (S, Q); a 1-D array is one seed."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{name}: expected per-query values of shape (seeds, queries), got {np.shape(x)}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: per-query values must be finite")
    return arr


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")


def _seed_term(d: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """se(seed means) * stratified t_{S-1} draws; zeros when S = 1."""
    n_seeds = d.shape[0]
    if n_seeds < 2:
        return np.zeros(n_boot)
    se = float(d.mean(axis=1).std(ddof=1)) / math.sqrt(n_seeds)
    if se == 0.0:
        return np.zeros(n_boot)
    levels = (rng.permutation(n_boot) + rng.random(n_boot)) / n_boot
    levels = np.clip(levels, 1e-12, 1 - 1e-12)
    return se * t_quantile(levels, n_seeds - 1)


def _query_term(d: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Shrunken query-bootstrap deviations of the grand mean (see :func:`compare`)."""
    n_seeds, n_queries = d.shape
    if n_queries < 2:
        return np.zeros(n_boot)
    c = d.mean(axis=0)
    ms_q = n_seeds * float(c.var(ddof=1))
    if ms_q == 0.0:
        return np.zeros(n_boot)
    scale = math.sqrt(n_queries / (n_queries - 1))  # bootstrap variance (Q-1)/Q -> unbiased
    if n_seeds > 1:
        resid = d - d.mean(axis=1, keepdims=True) - c[None, :] + d.mean()
        ms_e = float((resid ** 2).sum()) / ((n_seeds - 1) * (n_queries - 1))
        scale *= math.sqrt(max(ms_q - ms_e, 0.0) / ms_q)
    if scale == 0.0:
        return np.zeros(n_boot)
    return scale * (_bootstrap_means(c, n_boot, rng) - c.mean())


def _bootstrap_means(c: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``n_boot`` resamples (with replacement) of ``c``, in memory-bounded blocks."""
    n = c.size
    rows = max(1, _CHUNK_ELEMENTS // n)
    out = np.empty(n_boot)
    for start in range(0, n_boot, rows):
        stop = min(n_boot, start + rows)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = c[idx].mean(axis=1)
    return out


# --------------------------------------------------------------------------- best of a column

def compare_to_best(per_method: Mapping[str, np.ndarray], *, n_boot: int = 2000,
                    seed: int | None = 0, confidence: float = 0.95) -> tuple[str, dict[str, Comparison]]:
    """The best method by mean and the paired :func:`compare` of every other method against it.

    Best = highest mean over seeds and queries; an exact tie goes to the
    first in the mapping's order. Each comparison is ``compare(other, best)``
    (delta <= 0) with the same ``seed`` (common random numbers: results do
    not depend on the order of the methods).
    """
    if not per_method:
        raise ValueError("no methods to compare")
    runs = {name: _as_runs(values, name) for name, values in per_method.items()}
    means = {name: float(r.mean()) for name, r in runs.items()}
    best = max(runs, key=lambda name: means[name])  # first maximum in mapping order
    comparisons = {name: compare(r, runs[best], n_boot=n_boot, seed=seed, confidence=confidence)
                   for name, r in runs.items() if name != best}
    return best, comparisons


def tied_with_best(per_method: Mapping[str, np.ndarray], *, n_boot: int = 2000, seed: int | None = 0,
                   confidence: float = 0.95) -> tuple[str, set[str]]:
    """``(best, tied)``: the best method and every method not significantly worse (best included).

    A method is tied with the best when its paired interval against the best
    reaches 0 (:attr:`Comparison.not_worse`). Each comparison is at level ``confidence``
    without multiplicity adjustment: with many methods, some truly tied ones
    may be dropped by chance; pass ``confidence = 1 - 0.05 / (k - 1)`` for a
    Bonferroni family-wise guarantee over the k - 1 comparisons.
    """
    best, comparisons = compare_to_best(per_method, n_boot=n_boot, seed=seed, confidence=confidence)
    return best, {best} | {name for name, c in comparisons.items() if c.not_worse}


# --------------------------------------------------------------------------- ranks across columns

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
    _check_confidence(confidence)
    ranks = rank_matrix(scores, decimals)
    n = ranks.shape[0]
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=int(n_boot))
    boot = counts @ ranks / n
    low, high = np.quantile(boot, [0.5 - confidence / 2, 0.5 + confidence / 2], axis=0)
    return low, high
