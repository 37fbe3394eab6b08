"""The tests of one column of the report, family by family, computed once per report.

A column (dataset × pairing × bits × paradigm) holds four families of paired comparisons of
mAP@K (:data:`brcd.report.significance.FAMILIES`), each Holm-corrected on its own: every
student method against the student without KD (A), each BRCD ablation against full ``brcd``
(B), every student against the column's best (C), and full ``brcd`` against each baseline
(D). The Δ tables, the findings and the claims all read them from here, so that a verdict is
the same wherever the report states it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

from brcd.lambdas import NO_KD
from brcd.report.grid import GridResults, Pairing, student_row
from brcd.report.significance import (CONFIDENCE, FAMILIES, FAMILY_ABLATIONS, FAMILY_BASELINES, FAMILY_BEST,
                                      FAMILY_NO_KD, FAMILY_PARADIGMS, Tested, compare, compared_to_best, judged)

if TYPE_CHECKING:
    import numpy as np

#: what each BRCD ablation removes, as the findings and the claims name it
ABLATION_COMPONENTS = {
    "brcd_nomask": "the bit mask",
    "brcd_nocluster": "the cluster terms",
    "brcd_plain": "both the bit mask and the cluster terms",
}


@dataclass(frozen=True)
class ColumnTests:
    """Every family of one column: {method: its test}; ``best``: the column's best student."""

    means: Mapping[str, float]
    vs_no_kd: Mapping[str, Tested]
    vs_brcd: Mapping[str, Tested]
    best: str | None
    vs_best: Mapping[str, Tested]
    brcd_vs_baselines: Mapping[str, Tested]

    def family(self, name: str) -> Mapping[str, Tested]:
        return {FAMILY_NO_KD: self.vs_no_kd, FAMILY_ABLATIONS: self.vs_brcd, FAMILY_BEST: self.vs_best,
                FAMILY_BASELINES: self.brcd_vs_baselines}[name]


def family_size(results: GridResults, family: str) -> int:
    """How many tests a family holds in each column of this grid (0: not in it)."""
    kds = results.config["kd"]
    has_brcd = "brcd" in kds
    return {FAMILY_NO_KD: len(kds) - 1 if NO_KD in kds else 0,
            FAMILY_ABLATIONS: sum(kd in ABLATION_COMPONENTS for kd in results.ablations()) if has_brcd else 0,
            FAMILY_BEST: len(kds) - 1,
            FAMILY_BASELINES: sum(kd != "brcd" for kd in results.kd_methods()) if has_brcd else 0,
            FAMILY_PARADIGMS: int(has_brcd and {"sym", "asym"} <= set(results.config["paradigms"]))}[family]


def column_tests(results: GridResults, dataset: str, pairing: Pairing, bits: int, paradigm: str) -> ColumnTests:
    """The families of one column (computed on first use, then kept with the results)."""
    key = (dataset, pairing, bits, paradigm)
    if key not in results.tests:
        results.tests[key] = _column_tests(results, column_samples(results, dataset, pairing, bits, paradigm))
    return results.tests[key]


def column_samples(results: GridResults, dataset: str, pairing: Pairing, bits: int,
                   paradigm: str) -> dict[str, "np.ndarray | None"]:
    """Per-query mAP@K (seeds × queries) of every student of one column."""
    return {kd: results.samples(dataset, pairing, student_row(pairing, kd), bits, paradigm, "map@K")
            for kd in results.config["kd"]}


def _column_tests(results: GridResults, samples: Mapping[str, "np.ndarray | None"]) -> ColumnTests:
    present = {kd: a for kd, a in samples.items() if a is not None}
    means = {kd: float(a.mean()) for kd, a in present.items()}
    vs_no_kd = _family(present, [kd for kd in present if kd != NO_KD], NO_KD, FAMILY_NO_KD)
    ablations = [kd for kd in results.ablations() if kd in ABLATION_COMPONENTS]
    vs_brcd = _family(present, ablations, "brcd", FAMILY_ABLATIONS)
    baselines = [kd for kd in results.kd_methods() if kd != "brcd" and kd in present]
    brcd_vs_baselines = {} if "brcd" not in present else judged(
        {kd: compare(present["brcd"], present[kd]) for kd in baselines}, FAMILY_BASELINES)
    compared = compared_to_best(samples)
    best, vs_best = (None, {}) if compared is None else (compared[0], judged(compared[1], FAMILY_BEST))
    return ColumnTests(means, vs_no_kd, vs_brcd, best, vs_best, brcd_vs_baselines)


def _family(present: Mapping[str, "np.ndarray"], methods: list[str], reference: str,
            family: str) -> dict[str, Tested]:
    """Each of ``methods`` − ``reference``, Holm-corrected together (empty without the reference)."""
    if reference not in present:
        return {}
    return judged({kd: compare(present[kd], present[reference]) for kd in methods if kd in present}, family)


def paradigm_test(results: GridResults, dataset: str, pairing: Pairing, bits: int, kd: str = "brcd",
                  better: str = "asym", worse: str = "sym") -> Tested | None:
    """``kd``'s mAP@K searched as ``better`` − as ``worse`` on the same seeds and queries: a family of
    one (no correction); None when either paradigm is not in the grid or a value is missing."""
    if kd not in results.config["kd"] or not {better, worse} <= set(results.config["paradigms"]):
        return None
    a, b = (results.samples(dataset, pairing, student_row(pairing, kd), bits, p, "map@K") for p in (better, worse))
    if a is None or b is None:
        return None
    return judged({kd: compare(a, b)}, FAMILY_PARADIGMS)[kd]


# --------------------------------------------------------------------------- what the report says of them


def interval_sentence(results: GridResults) -> str:
    """How the report's intervals of a difference are made (one sentence)."""
    level = f"{CONFIDENCE:.0%}"
    if len(results.config["seeds"]) == 1:
        return (f"Each interval is a {level} bootstrap over queries: with one seed the intervals cover query "
                "sampling only, not training randomness.")
    seeds = len(results.config["seeds"])
    return (f"Each interval is a {level} seed-level Student-t interval ({seeds} seeds, paired "
            "by seed) widened by a query-bootstrap term (`brcd.stats.compare`).")


def judgement_sentence() -> str:
    """How a verdict of the findings is read off its comparison, and what it is conditional on."""
    alpha = f"{1 - CONFIDENCE:.2f}"
    return (f"A verdict is significant when the p-value of the test its interval makes, Holm-adjusted within its "
            f"family of the column (adj. p), is below {alpha}: *better*/*worse* then, *not distinguishable* "
            "otherwise; the printed interval is the unadjusted one. Every interval is conditional on each method's "
            "λ chosen on validation (the choice is not redone inside the interval).")


def families_sentence(results: GridResults, families: Sequence[str]) -> str:
    """The families of a column these verdicts belong to, with their sizes in this grid."""
    present = [f for f in families if family_size(results, f)]
    return ("Families of a column (Holm's correction within each): "
            + "; ".join(f"{f}: {FAMILIES[f]} ({tests_text(family_size(results, f))})" for f in present) + ".")


def tests_text(n: int) -> str:
    return f"{n} test{'s' if n != 1 else ''}"
