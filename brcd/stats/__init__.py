"""Statistics for the benchmark's reports: seeds, paired comparisons, error control, ranks.

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

Public API (one module per idea; everything is importable from here)
---------------------------------------------------------------------
- :func:`summarize` -- mean, sample std and Student-t CI of one cell over seeds;
- :func:`compare` -- paired difference of two methods with an interval that
  covers seed *and* query sampling, the p-value of the test that interval
  makes, and P(A > B) (:mod:`brcd.stats.paired`);
- :func:`compare_to_best`, :func:`tied_with_best` -- the best method of a
  column and the methods not significantly worse than it;
- :func:`holm`, :func:`adjusted_p_values`, :func:`rejects`, :func:`tied_group`
  -- Holm's step-down adjustment of a family of p-values and the rejection
  rule (:mod:`brcd.stats.multiplicity`);
- :func:`rank_matrix`, :func:`average_ranks`, :func:`friedman_test`,
  :func:`nemenyi_critical_difference`, :func:`nemenyi_groups`,
  :func:`bootstrap_rank_intervals` -- ranks across columns (Demsar 2006;
  :mod:`brcd.stats.ranks`);
- :func:`t_quantile`, :func:`t_cdf` -- Student t for integer degrees of
  freedom (numpy only; no scipy in this environment; :mod:`brcd.stats.student`).

Everything is pure numpy and deterministic given ``seed``.
"""
from __future__ import annotations

from brcd.stats.multiplicity import holm, rejects
from brcd.stats.paired import (Comparison, Summary, adjusted_p_values, compare, compare_to_best, excludes_zero,
                               summarize, tied_group, tied_with_best)
from brcd.stats.ranks import (average_ranks, bootstrap_rank_intervals, friedman_test, nemenyi_critical_difference,
                              nemenyi_groups, nemenyi_q, rank_matrix)
from brcd.stats.student import t_cdf, t_quantile

__all__ = [
    "Summary", "summarize",
    "Comparison", "compare", "compare_to_best", "tied_with_best", "tied_group", "excludes_zero",
    "holm", "rejects", "adjusted_p_values",
    "rank_matrix", "average_ranks", "friedman_test", "nemenyi_q", "nemenyi_critical_difference",
    "nemenyi_groups", "bootstrap_rank_intervals",
    "t_cdf", "t_quantile",
]
