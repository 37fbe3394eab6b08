"""Which differences the report calls significant: summaries over seeds and the tied-with-best rule.

Thin, seeded wrappers of :mod:`brcd.stats`, so that every table, figure and finding
of a report tests the same way and the same results give the same bytes.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Iterable, Mapping

if TYPE_CHECKING:
    import numpy as np

    from brcd.stats import Summary

#: seed of every bootstrap in the report (the same results give the same bytes)
BOOTSTRAP_SEED = 0


def summarize(values: Iterable[float | None]) -> "Summary | None":
    """Mean, std and 95% CI over seeds of the present values (None when there are none)."""
    from brcd.stats import summarize as over_seeds

    present = [v for v in values if v is not None and not math.isnan(v)]
    return over_seeds(present) if present else None


def compared_to_best(samples: Mapping, higher_is_better: bool = True) -> "tuple[object, dict] | None":
    """(best row, {other row: paired Comparison against the best}) of one column
    (:func:`brcd.stats.compare_to_best`; with ``higher_is_better`` False on negated values).
    None when it cannot be tested: a missing value, or one seed of a metric without
    per-query values."""
    from brcd.stats import compare_to_best

    if not samples or any(a is None for a in samples.values()):
        return None
    if all(a.shape == (1, 1) for a in samples.values()):
        return None  # one number per row: nothing to test
    sign = 1.0 if higher_is_better else -1.0
    return compare_to_best({row: sign * a for row, a in samples.items()}, seed=BOOTSTRAP_SEED)


def tied_with_best(samples: Mapping[str, "np.ndarray | None"], higher_is_better: bool = True) -> set[str]:
    """Rows of one column that are the best or not significantly worse than it (the rule of
    :func:`brcd.stats.tied_with_best`: the interval against the best reaches 0)."""
    compared = compared_to_best(samples, higher_is_better)
    if compared is None:
        return set()
    best, comparisons = compared
    return {best} | {row for row, c in comparisons.items() if c.not_worse}
