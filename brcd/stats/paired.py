"""One column of a report: a metric over seeds, and the paired comparison of two methods
(an interval over seeds and queries, and the p-value of the test it makes).

Arrays are per-query values of shape (seeds, queries), rows in the same seed order for
every method (the data model of :mod:`brcd.stats`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from brcd.stats.multiplicity import holm, rejects
from brcd.stats.student import t_cdf, t_quantile

__all__ = ["Summary", "summarize", "Comparison", "compare", "compare_to_best", "tied_with_best", "tied_group",
           "adjusted_p_values", "excludes_zero", "check_confidence"]

#: bound on the number of elements of one block of bootstrap indices (memory: 8 bytes each)
_CHUNK_ELEMENTS = 1 << 20


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
    check_confidence(confidence)
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
    the share of the interval's distribution above 0 (see :func:`compare`),
    i.e. the approximate posterior probability, under flat priors, that A's
    expected metric exceeds B's; ``p_value``: the two-sided p-value of the test
    the interval makes (``p_value < 1 - confidence`` exactly when the interval
    excludes 0; None in a Comparison built by hand); ``covers_seeds``: False
    when S = 1 and the interval reflects query sampling only.
    """

    delta: float
    low: float
    high: float
    p_improvement: float
    n_seeds: int
    n_queries: int
    confidence: float = 0.95
    p_value: float | None = None

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

    Interval: a seed-level Student t interval widened by a query-bootstrap
    term. The difference's distribution is that of ::

        delta* = delta + lambda * (query-bootstrap mean of c - mean of c) + se_seed * T,   T ~ t_{S-1}

    - c_q = mean over seeds of D[:, q]; the query bootstrap resamples query
      indices with replacement, the *same* indices for every seed and for A
      and B (pairing: it is the bootstrap of c). It keeps the shape
      (skewness) of the per-query distribution, which is not normal for AP.
    - Seed term: d_s = mean over queries of D[s, :] are, given the queries,
      i.i.d. with mean delta + mean(v) and variance sigma_u^2 + sigma_w^2/Q,
      so (mean(d) - delta - mean(v)) / (sd(d)/sqrt(S)) is an exact t_{S-1}
      pivot under normality (d_s average hundreds of queries);
      se_seed = sd(d)/sqrt(S).
    - Only mean(v), the query-sampling error shared by all seeds, is left for
      the bootstrap term. Its raw variance, MS_Q/(S Q) (two-way ANOVA mean
      squares of D), also holds sigma_w^2/(S Q), already in the seed term;
      lambda = sqrt(max(MS_Q - MS_E, 0) / MS_Q) shrinks the bootstrap
      deviations to the unbiased variance sigma_v^2/Q. MS_Q and MS_E have
      ~Q and ~(S-1)Q degrees of freedom, so this subtraction is precise.
    - The t term is integrated exactly, not drawn: with the B bootstrap
      centres m_b = delta + lambda (mean* of c - mean of c), delta* has the
      distribution function G(x) = (1/B) sum_b F_{S-1}((x - m_b) / se_seed)
      (F: Student t), a mixture of scaled t's. low/high are its (1-c)/2 and
      (1+c)/2 quantiles (bisection between the extreme centres' t quantiles;
      widened, if ever needed, to contain delta itself).
    - p_value = min(1, 2 G(0)) when delta > 0, min(1, 2 (1 - G(0))) when
      delta < 0, 1 when delta = 0: the (1-alpha) interval excludes 0 exactly
      when p_value < alpha, at every alpha (G is continuous and increasing,
      so low > 0 exactly when G(0) < alpha/2). Without a query term
      (lambda = 0, or Q = 1) it is the two-sided paired t-test on the seed
      means d_s; with one, the t-test p-value averaged over the bootstrap
      centres. p_improvement = 1 - G(0).

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
    simulated data sets each, drawn as tests/test_stats.py draws its 400):
    0.961 seed-, 0.963 query- (skewed), 0.962 interaction-dominated, 0.972
    mixed; on the same data sets, the earlier construction with drawn
    (stratified) t terms covered 0.961, 0.963, 0.961 and 0.973.

    S = 1 (or seed means all equal): there is no seed term; the interval is
    the plain query bootstrap of the single run (seed variation is NOT
    covered; the result has ``covers_seeds`` False): G is the empirical
    distribution of the centres, low/high their interpolated quantiles
    (``np.quantile``), and p_value inverts that interpolation, so that it
    still rejects exactly when the interval excludes 0; p_improvement is the
    share of centres above 0 (exact zeros count one half; identical inputs
    give 0.5). Q = 1: seed term only, the paired t interval and test.

    Cost: the bootstrap draws Q indices per replicate in blocks of at most
    2^20 indices; the quantiles take 55 evaluations of G (B t distribution
    functions each): with B = 2,000, ~0.011 s for Q = 500, ~0.05 s for
    Q = 5,000.
    """
    a, b = _as_runs(a, "a"), _as_runs(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"paired comparison needs equal shapes (seeds, queries), got {a.shape} and {b.shape}")
    check_confidence(confidence)
    if int(n_boot) < 1:
        raise ValueError("n_boot must be positive")
    d = a - b
    n_seeds, n_queries = d.shape
    delta = float(d.mean())
    rng = np.random.default_rng(seed)
    centres = np.sort(delta + _query_term(d, int(n_boot), rng))
    if centres[0] == centres[-1] and _seed_se(d) > 0:
        centres = centres[:1]  # no query term: the plain paired t, one t instead of B equal ones
    spread = _Spread(centres, _seed_se(d), n_seeds - 1)
    low, high = spread.quantiles(np.array([0.5 - confidence / 2, 0.5 + confidence / 2]))
    return Comparison(delta, float(min(low, delta)), float(max(high, delta)), spread.share_above(improvement=True),
                      n_seeds, n_queries, confidence, spread.p_value(delta))


@dataclass(frozen=True)
class _Spread:
    """The distribution of the difference :func:`compare` reads its interval and p-value from:
    bootstrap ``centres`` (sorted) convolved with ``se`` times a t_{df} (se = 0: the centres alone)."""

    centres: np.ndarray
    se: float
    df: int

    def cdf(self, x: np.ndarray) -> np.ndarray:
        """G at each x (se > 0): the mean over centres of the t distribution function."""
        return t_cdf((np.asarray(x, dtype=float)[..., None] - self.centres) / self.se, self.df).mean(axis=-1)

    def quantiles(self, levels: np.ndarray) -> np.ndarray:
        if self.se == 0.0:
            return np.quantile(self.centres, levels)
        # each centre's own quantile brackets the mixture's: G(lo) <= level <= G(hi)
        t = self.se * np.asarray(t_quantile(levels, self.df))
        lo, hi = self.centres[0] + t, self.centres[-1] + t
        for _ in range(_BISECTIONS):
            mid = 0.5 * (lo + hi)
            below = self.cdf(mid) < levels
            lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
        return 0.5 * (lo + hi)

    def share_below(self) -> float:
        """The share of the distribution at or below 0 as its quantiles read it: the lower end at level
        q is above 0 exactly when q exceeds it."""
        if self.se > 0.0:
            return float(self.cdf(0.0))
        return _interpolated_share_below(self.centres)

    def share_above(self, improvement: bool = False) -> float:
        """The mirror of :meth:`share_below` (the upper end at level 1 - q is below 0 exactly when q
        exceeds it); ``improvement``: P(A > B) instead, exact zeros of the centres counting one half."""
        if self.se > 0.0:
            return float(1.0 - self.cdf(0.0))
        if improvement:
            return float((np.count_nonzero(self.centres > 0) + 0.5 * np.count_nonzero(self.centres == 0))
                         / self.centres.size)
        return _interpolated_share_below(-self.centres[::-1])

    def p_value(self, delta: float) -> float:
        """Two-sided p-value of the test the interval makes (the interval is widened to contain delta,
        so only the tail on the side of delta can move its end past 0)."""
        if delta > 0:
            return min(1.0, 2.0 * self.share_below())
        if delta < 0:
            return min(1.0, 2.0 * self.share_above())
        return 1.0


#: halvings of the bracket of a quantile of G: from the spread of the centres to below float resolution
_BISECTIONS = 55


def _interpolated_share_below(values: np.ndarray) -> float:
    """sup {q : Q(q) <= 0} for Q the linear interpolation ``np.quantile`` makes of sorted ``values``
    (position h = q (n - 1) between neighbours): 0 when every value is above 0."""
    n = values.size
    k = int(np.searchsorted(values, 0.0, side="right"))  # values <= 0
    if k == 0:
        return 0.0
    if k == n:
        return 1.0
    lo, hi = float(values[k - 1]), float(values[k])
    return ((k - 1) + (0.0 - lo) / (hi - lo)) / (n - 1)


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


def check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")


def _seed_se(d: np.ndarray) -> float:
    """Standard error of the mean of the seed means d_s (0 with one seed)."""
    n_seeds = d.shape[0]
    if n_seeds < 2:
        return 0.0
    return float(d.mean(axis=1).std(ddof=1)) / math.sqrt(n_seeds)


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
                   confidence: float = 0.95, adjust: bool = True) -> tuple[str, set[str]]:
    """``(best, tied)``: the best method and every method not significantly worse (best included),
    by :func:`tied_group` on :func:`compare_to_best`'s comparisons."""
    best, comparisons = compare_to_best(per_method, n_boot=n_boot, seed=seed, confidence=confidence)
    return best, tied_group(best, comparisons, confidence, adjust)


def adjusted_p_values(comparisons: Mapping[str, Comparison]) -> dict[str, float]:
    """Holm-adjusted p-values of a family of comparisons (:func:`brcd.stats.holm`), by name."""
    names = list(comparisons)
    return dict(zip(names, map(float, holm([comparisons[name].p_value for name in names]))))


def tied_group(best: str, comparisons: Mapping[str, Comparison], confidence: float = 0.95,
               adjust: bool = True) -> set[str]:
    """The best and every method whose comparison with it does not reject: the methods not
    significantly worse than the best (every comparison has delta <= 0, so a rejection is "worse").

    The k - 1 comparisons against the best are one family: with ``adjust``, each p-value is
    Holm-adjusted within it, so that the chance of calling any truly tied method worse stays
    below 1 - ``confidence``; without, each stands alone at 95% (:attr:`Comparison.not_worse`,
    the same verdict: its p-value rejects exactly when its interval ends below 0).
    """
    p = adjusted_p_values(comparisons) if adjust else {name: c.p_value for name, c in comparisons.items()}
    return {best} | {name for name in comparisons if not rejects(p[name], confidence)}
