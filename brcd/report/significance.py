"""Which differences the report calls significant: summaries over seeds, the families of tests
of a column with Holm's correction, and the tied-with-best rule.

Thin, seeded wrappers of :mod:`brcd.stats`, so that every table, figure, finding and claim
of a report tests the same way and the same results give the same bytes.

Every verdict belongs to a *family*, the comparisons of one column that are judged together:
Holm's correction within the family keeps the chance of any false "significant" among them
at 5% (:func:`brcd.stats.holm`). The families (:data:`FAMILIES`):

- A: each student method against the student without KD (12 in the full grid);
- B: each BRCD ablation against full ``brcd`` (3);
- C: each student against the column's best (the tied-with-best group, the bold);
- D: full ``brcd`` against each baseline (8; the claims section);
- E: ``brcd`` searched asym against sym (a family of one per dataset × pairing × bits: the
  claims section).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Mapping

if TYPE_CHECKING:
    import numpy as np

    from brcd.stats import Comparison, Summary

#: seed of every bootstrap in the report (the same results give the same bytes)
BOOTSTRAP_SEED = 0
#: level of every interval of the report; a verdict is significant at 1 - CONFIDENCE after correction
CONFIDENCE = 0.95

FAMILY_NO_KD, FAMILY_ABLATIONS, FAMILY_BEST, FAMILY_BASELINES, FAMILY_PARADIGMS = "A", "B", "C", "D", "E"
#: what each family of a column holds, as the report names it
FAMILIES = {
    FAMILY_NO_KD: "each method vs the student without KD",
    FAMILY_ABLATIONS: "each ablation vs full `brcd`",
    FAMILY_BEST: "each student vs the column's best",
    FAMILY_BASELINES: "`brcd` vs each baseline",
    FAMILY_PARADIGMS: "`brcd` asym vs `brcd` sym (one test)",
}


def summarize(values: Iterable[float | None]) -> "Summary | None":
    """Mean, std and 95% CI over seeds of the present values (None when there are none)."""
    from brcd.stats import summarize as over_seeds

    present = [v for v in values if v is not None and not math.isnan(v)]
    return over_seeds(present) if present else None


def compare(a: "np.ndarray", b: "np.ndarray") -> "Comparison":
    """:func:`brcd.stats.compare` of A − B with the report's seed and level."""
    from brcd.stats import compare as paired

    return paired(a, b, seed=BOOTSTRAP_SEED, confidence=CONFIDENCE)


@dataclass(frozen=True)
class Tested:
    """A paired :class:`~brcd.stats.Comparison` judged within its family: the raw 95% interval
    (``delta``, ``low``, ``high``, what the report prints) and the Holm-adjusted p-value that
    decides the verdict."""

    comparison: "Comparison"
    family: str
    family_size: int
    p_adjusted: float

    @property
    def significant(self) -> bool:
        """The verdict after correction (format.interval_text reads it too: a significant interval
        excludes 0, since the adjusted p is at least the raw one)."""
        from brcd.stats import rejects

        return rejects(self.p_adjusted, CONFIDENCE)

    @property
    def direction(self) -> int:
        """+1 significantly above, -1 significantly below, 0 neither (after correction)."""
        return 0 if not self.significant else 1 if self.delta > 0 else -1

    def __getattr__(self, name: str):
        """``delta``, ``low``, ``high``, ``p_value``, ``p_improvement``, ...: the comparison's."""
        if name == "comparison":  # not set yet (copying): no comparison to delegate to
            raise AttributeError(name)
        return getattr(self.comparison, name)


def judged(comparisons: Mapping[str, "Comparison"], family: str) -> dict[str, Tested]:
    """The comparisons of one family of one column, each with its Holm-adjusted p-value."""
    from brcd.stats import adjusted_p_values

    adjusted = adjusted_p_values(comparisons)
    return {name: Tested(c, family, len(comparisons), adjusted[name]) for name, c in comparisons.items()}


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
    return compare_to_best({row: sign * a for row, a in samples.items()}, seed=BOOTSTRAP_SEED,
                           confidence=CONFIDENCE)


def tied_with_best(samples: Mapping[str, "np.ndarray | None"], higher_is_better: bool = True) -> set[str]:
    """Rows of one column that are the best or not significantly worse than it, after Holm's
    correction over the column's comparisons with the best (family C; :func:`brcd.stats.tied_group`)."""
    from brcd.stats import tied_group

    compared = compared_to_best(samples, higher_is_better)
    if compared is None:
        return set()
    best, comparisons = compared
    return tied_group(best, comparisons, CONFIDENCE)
