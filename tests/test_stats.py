"""brcd.stats on data whose truth is known: seeds, paired comparisons, ranks."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest

from brcd import stats
from brcd.stats import ranks


# --------------------------------------------------------------------------- Student t

@pytest.mark.parametrize("df, p, expected", [
    (1, 0.975, 12.706205), (2, 0.975, 4.302653), (3, 0.05, -2.353363),
    (4, 0.975, 2.776445), (9, 0.975, 2.262157), (30, 0.975, 2.042272),
])
def test_t_quantile_matches_tables(df, p, expected):
    assert stats.t_quantile(p, df) == pytest.approx(expected, abs=1e-5)
    assert stats.t_cdf(expected, df) == pytest.approx(p, abs=1e-6)


def test_t_quantile_rejects_bad_input():
    with pytest.raises(ValueError):
        stats.t_quantile(1.0, 3)
    with pytest.raises(ValueError):
        stats.t_quantile(0.5, 2.5)


# --------------------------------------------------------------------------- summarize

def test_summarize_one_seed_has_no_interval():
    s = stats.summarize([0.6123])
    assert (s.n, s.std, s.half_width) == (1, None, None)
    assert s.text(3) == "0.612"


def test_summarize_three_seeds():
    s = stats.summarize([0.60, 0.61, 0.62])
    assert s.mean == pytest.approx(0.61)
    assert s.std == pytest.approx(0.01)
    assert s.half_width == pytest.approx(4.302653 * 0.01 / math.sqrt(3), rel=1e-6)
    assert s.text(3) == "0.610 ± 0.025"
    assert s.low < s.mean < s.high


def test_summarize_ci_covers_about_95_percent():
    rng = np.random.default_rng(7)
    samples = 0.6 + 0.01 * rng.standard_normal((1000, 3))
    covered = [abs(stats.summarize(x).mean - 0.6) <= stats.summarize(x).half_width for x in samples]
    assert 0.93 <= np.mean(covered) <= 0.97


def test_summarize_rejects_empty_and_nan():
    with pytest.raises(ValueError):
        stats.summarize([])
    with pytest.raises(ValueError):
        stats.summarize([0.5, float("nan")])


# --------------------------------------------------------------------------- compare

def paired_runs(rng, n_seeds, n_queries, *, delta, seed_sd, query_sd, inter_sd, skew=False):
    """Two methods' per-query AP from a crossed random-effects model with a known true difference.

    Common seed and query effects (teacher seed, query difficulty) cancel in
    the paired difference; the difference has a seed effect (seed_sd), a
    query effect shared by all seeds (query_sd; centred exponential when
    ``skew``) and a seed-by-query interaction (inter_sd).
    """
    common = 0.5 + 0.1 * rng.standard_normal((n_seeds, 1)) + 0.25 * rng.standard_normal((1, n_queries))
    b = common + 0.05 * rng.standard_normal((n_seeds, n_queries))
    v = rng.exponential(1.0, n_queries) - 1.0 if skew else rng.standard_normal(n_queries)
    d = (delta + seed_sd * rng.standard_normal((n_seeds, 1)) + query_sd * v[None, :]
         + inter_sd * rng.standard_normal((n_seeds, n_queries)))
    return b + d, b


def test_identical_inputs_give_zero_difference():
    a = np.random.default_rng(0).random((3, 200))
    c = stats.compare(a, a.copy())
    assert c.delta == 0.0 and c.low == 0.0 and c.high == 0.0
    assert not c.significant
    assert c.p_improvement == 0.5
    assert (c.n_seeds, c.n_queries, c.covers_seeds) == (3, 200, True)


def test_shifted_copy_is_significant():
    rng = np.random.default_rng(1)
    a = rng.random((3, 500))
    b = a - 0.05 + 0.02 * rng.standard_normal(a.shape)
    c = stats.compare(a, b)
    assert c.delta == pytest.approx(0.05, abs=0.005)
    assert c.significant and c.low > 0
    assert c.p_improvement > 0.99
    assert re.fullmatch(r"\+0\.0\d\d \[\+0\.0\d\d, \+0\.0\d\d\]", c.text(3))
    flipped = stats.compare(b, a)
    assert flipped.delta == pytest.approx(-c.delta) and flipped.high < 0 and flipped.p_improvement < 0.01


def test_compare_is_deterministic_given_seed():
    rng = np.random.default_rng(2)
    a, b = paired_runs(rng, 3, 300, delta=0.01, seed_sd=0.01, query_sd=0.1, inter_sd=0.1)
    assert stats.compare(a, b, seed=5) == stats.compare(a, b, seed=5)


def test_one_seed_covers_queries_only():
    rng = np.random.default_rng(3)
    a = rng.random(400)
    b = a - 0.01 + 0.1 * rng.standard_normal(400)
    c = stats.compare(a, b)
    assert (c.n_seeds, c.covers_seeds) == (1, False)
    # plain query bootstrap: half-width ~ 1.96 sd / sqrt(Q)
    assert (c.high - c.low) / 2 == pytest.approx(1.96 * np.std(a - b, ddof=1) / 20, rel=0.15)


def test_compare_rejects_unpaired_shapes():
    with pytest.raises(ValueError):
        stats.compare(np.zeros((3, 10)), np.zeros((2, 10)))


# Coverage simulation: 400 data sets per regime (binomial s.e. of the coverage
# 0.011). 1,000 bootstrap centres per interval are enough here: the t term is
# integrated exactly, and the Monte Carlo error of the query term is small next
# to the sampling variability the coverage measures.
REGIMES = {
    # (S = 3, Q = 300) sigma_u^2/S = 3.3e-5 dominates sigma_v^2/Q = 3e-6 and sigma_w^2/(SQ) = 1e-6
    "seed-dominant": dict(seed_sd=0.01, query_sd=0.03, inter_sd=0.03),
    # skewed shared query effect: sigma_v^2/Q = 1.3e-4 against sigma_w^2/(SQ) = 3e-6, no seed effect
    "query-dominant": dict(seed_sd=0.0, query_sd=0.2, inter_sd=0.05, skew=True),
    # per-(seed, query) noise only: the realistic case of noisy per-query AP differences
    "interaction-dominant": dict(seed_sd=0.0, query_sd=0.0, inter_sd=0.3),
    # all three of similar size (2.1e-5, 2.1e-5, 1.9e-5): the convolution is somewhat conservative here
    "mixed": dict(seed_sd=0.008, query_sd=0.08, inter_sd=0.13),
}


@pytest.mark.parametrize("n_seeds, regime", [(3, r) for r in sorted(REGIMES)] + [(5, "seed-dominant")])
def test_compare_interval_covers_truth_about_95_percent(n_seeds, regime):
    rng = np.random.default_rng(11)
    delta, covered = 0.02, 0
    n_sets = 400
    for r in range(n_sets):
        a, b = paired_runs(rng, n_seeds, 300, delta=delta, **REGIMES[regime])
        c = stats.compare(a, b, n_boot=1000, seed=r)
        covered += c.low <= delta <= c.high
    assert 0.90 <= covered / n_sets <= 0.99


# --------------------------------------------------------------------------- the test an interval makes

@pytest.mark.parametrize("n_seeds, n_queries", [(1, 200), (2, 50), (3, 1), (3, 7), (3, 200), (5, 200)])
def test_p_value_rejects_exactly_when_the_interval_excludes_zero(n_seeds, n_queries):
    """The p-value of compare() is the test its interval makes: at every level, p < 1 - confidence exactly
    when the interval at that confidence excludes 0 (random data around the threshold, so that both
    outcomes occur; one seed and one query are the degenerate cases of the construction)."""
    rng = np.random.default_rng(n_seeds * 1000 + n_queries)
    outcomes = set()
    for r in range(12):
        a, b = paired_runs(rng, n_seeds, n_queries, delta=rng.normal(0, 0.02), seed_sd=0.01,
                           query_sd=0.05, inter_sd=0.05, skew=bool(r % 2))
        p_values = set()
        for confidence in (0.5, 0.8, 0.9, 0.95, 0.99):
            c = stats.compare(a, b, n_boot=400, seed=r, confidence=confidence)
            assert (c.p_value < 1 - confidence) == c.significant, (r, confidence, c)
            p_values.add(c.p_value)
            outcomes.add(c.significant)
        assert len(p_values) == 1  # one p-value: the level only moves the interval's ends
    assert outcomes == {True, False}


def test_p_value_without_a_query_term_is_the_paired_t_test():
    """One unit per seed (metrics without per-query values): the interval is the paired t interval over
    seeds and the p-value its two-sided t-test."""
    d = np.array([0.03, 0.01, 0.05, 0.02])
    c = stats.compare(d[:, None] + 0.5, np.full((4, 1), 0.5))
    t = d.mean() / (d.std(ddof=1) / 2)
    assert c.p_value == pytest.approx(2 * (1 - stats.t_cdf(t, 3)), rel=1e-9)
    assert c.low == pytest.approx(d.mean() - stats.t_quantile(0.975, 3) * d.std(ddof=1) / 2, rel=1e-9)
    assert c.p_improvement == pytest.approx(stats.t_cdf(t, 3), rel=1e-9)
    same = stats.compare(np.ones((3, 5)), np.ones((3, 5)))
    assert (same.p_value, same.p_improvement) == (1.0, 0.5)


# --------------------------------------------------------------------------- Holm's correction

@pytest.mark.parametrize("raw, adjusted", [
    ([0.01, 0.04, 0.03, 0.005], [0.03, 0.06, 0.06, 0.02]),  # 4 x 0.005, 3 x 0.01, 2 x 0.03, then max(0.04, 0.06)
    ([0.5, 0.6], [1.0, 1.0]),                               # capped at 1, and kept in order
    ([0.01, 0.01, 0.2], [0.03, 0.03, 0.2]),                  # equal raw p-values, equal adjusted ones
    ([0.04], [0.04]),                                        # a family of one is left as it is
    ([], []),
])
def test_holm_on_hand_computed_families(raw, adjusted):
    np.testing.assert_allclose(stats.holm(raw), adjusted)


def test_holm_is_the_step_down_procedure_and_keeps_the_order():
    rng = np.random.default_rng(8)
    for _ in range(300):
        m = int(rng.integers(1, 14))
        p = rng.uniform(0, 0.2, m) ** 2
        adjusted = stats.holm(p)
        # monotone: a smaller raw p never gets a larger adjusted p; never below raw, never above Bonferroni
        order = np.argsort(p)
        assert np.all(np.diff(adjusted[order]) >= 0)
        assert np.all(adjusted >= p) and np.all(adjusted <= np.minimum(1, m * p) + 1e-15)
        # the step-down procedure at a random level: reject the i-th smallest while p_(j) <= alpha / (m - j + 1)
        alpha = rng.uniform(0.001, 0.2)
        steps = p[order] <= alpha / (m - np.arange(m))
        rejected = set(order[:np.argmin(steps)] if not steps.all() else order)
        assert {i for i in range(m) if adjusted[i] <= alpha} == rejected


def test_tied_with_best_is_holm_corrected_by_default():
    """Three methods below the best (paired t, 2 df; raw p 0.038, 0.030 and < 0.001): each interval alone
    excludes 0, but Holm over the family of three keeps the weaker two (2 x 0.030 > 0.05) tied."""
    base = np.array([[0.60], [0.62], [0.64]])
    methods = {"best": base, "a": base - [[0.10], [0.05], [0.10]], "b": base - [[0.10], [0.055], [0.10]],
               "c": base - [[0.40], [0.39], [0.41]]}
    _, comparisons = stats.compare_to_best(methods)
    assert all(c.significant for c in comparisons.values())
    assert stats.tied_with_best(methods, adjust=False) == ("best", {"best"})
    assert stats.tied_with_best(methods) == ("best", {"best", "a", "b"})


# --------------------------------------------------------------------------- best of a column

def test_tied_with_best_on_constructed_column():
    rng = np.random.default_rng(5)
    best = 0.6 + 0.1 * rng.standard_normal((3, 500))
    noise = 0.1 * rng.standard_normal((3, 500))
    methods = {
        "worse": best - 0.05 + noise,                   # clearly below
        "tied": best - 0.001 + noise - noise.mean(),   # 0.001 below, far inside the noise
        "best": best,
        "bad": best - 0.2,
    }
    assert stats.tied_with_best(methods) == ("best", {"best", "tied"})
    reversed_order = dict(reversed(list(methods.items())))
    assert stats.tied_with_best(reversed_order) == ("best", {"best", "tied"})
    name, comparisons = stats.compare_to_best(methods)
    assert name == "best" and set(comparisons) == {"worse", "tied", "bad"}
    assert all(c.delta < 0 for c in comparisons.values())


@pytest.mark.parametrize("low, high, significant, not_worse", [
    (0.01, 0.03, True, True),      # better
    (-0.02, 0.0, False, True),     # reaches 0: tied
    (-0.02, 0.01, False, True),
    (-0.03, -1e-9, True, False),   # worse
])
def test_comparison_verdicts(low, high, significant, not_worse):
    c = stats.Comparison(delta=(low + high) / 2, low=low, high=high, p_improvement=0.5, n_seeds=3, n_queries=10)
    assert (c.significant, c.not_worse) == (significant, not_worse)


def test_tied_with_best_single_method():
    assert stats.tied_with_best({"only": np.ones((2, 5))}) == ("only", {"only"})


# --------------------------------------------------------------------------- ranks

def test_average_ranks_with_ties():
    scores = [[0.9, 0.8, 0.8, 0.1],
              [0.5, 0.6, 0.7, 0.4]]
    np.testing.assert_allclose(stats.rank_matrix(scores), [[1, 2.5, 2.5, 4], [3, 2, 1, 4]])
    np.testing.assert_allclose(stats.average_ranks(scores), [2.0, 2.25, 1.75, 4.0])
    # equal at the table's precision -> tied
    np.testing.assert_allclose(stats.rank_matrix([[0.6121, 0.6124, 0.5]], decimals=3), [[1.5, 1.5, 3]])


def test_nemenyi_matches_demsar():
    assert stats.nemenyi_q(2) == 1.960
    assert stats.nemenyi_q(10) == 3.164
    assert stats.nemenyi_q(4, alpha=0.10) == 2.291
    # Demsar (2006), section 3.2.4: 4 classifiers, 14 data sets -> CD = 1.25 (alpha 0.05), 1.12 (0.10)
    assert stats.nemenyi_critical_difference(4, 14) == pytest.approx(1.25, abs=0.005)
    assert stats.nemenyi_critical_difference(4, 14, alpha=0.10) == pytest.approx(1.12, abs=0.005)
    # few columns: the CD spans most of the rank range
    assert stats.nemenyi_critical_difference(13, 4) > 9


def test_studentized_range_reproduces_demsar_table_and_extends_it():
    for alpha, table in ranks._DEMSAR_Q.items():
        for k, q in zip(range(2, 11), table):
            assert ranks._studentized_range_q(k, alpha) == pytest.approx(q, abs=0.0015)
    # q_0.05(20, inf) = 5.012 in studentized-range tables
    assert stats.nemenyi_q(20) == pytest.approx(5.012 / math.sqrt(2), abs=0.001)


def test_friedman_on_a_consistent_order():
    scores = np.tile([0.9, 0.8, 0.7], (4, 1))  # k = 3 methods, N = 4 columns, same order everywhere
    stat, p = stats.friedman_test(scores)
    assert stat == pytest.approx(8.0)
    assert p == pytest.approx(math.exp(-4.0))
    assert ranks._chi2_sf(3.841459, 1) == pytest.approx(0.05, abs=1e-6)
    assert ranks._chi2_sf(11.070498, 5) == pytest.approx(0.05, abs=1e-6)


def test_nemenyi_groups_are_the_maximal_runs_within_cd():
    # sorted ranks 1, 1.5, 3, 5, 5.2 and CD 2.1: {1, 1.5, 3}, {3, 5}, {5, 5.2}; {1.5, 3} is inside the first
    assert stats.nemenyi_groups([5.2, 1, 3, 1.5, 5], 2.1) == [(0, 2), (2, 3), (3, 4)]
    assert stats.nemenyi_groups([1, 2, 3], 0.5) == []  # every method separated from every other
    assert stats.nemenyi_groups([1, 2, 3], 5.0) == [(0, 2)]
    assert stats.nemenyi_groups([1, 2, 3], 1.0) == [(0, 1), (1, 2)]  # a difference of exactly CD: not significant


def test_bootstrap_rank_intervals():
    rng = np.random.default_rng(6)
    scores = rng.random((8, 4))
    low, high = stats.bootstrap_rank_intervals(scores, n_boot=500)
    mean = stats.average_ranks(scores)
    assert np.all(low <= mean + 1e-12) and np.all(mean <= high + 1e-12)
    low, high = stats.bootstrap_rank_intervals(np.tile([0.9, 0.5, 0.1], (5, 1)))
    np.testing.assert_allclose(low, [1, 2, 3])
    np.testing.assert_allclose(high, [1, 2, 3])
