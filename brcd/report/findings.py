"""The report's findings: what its paired intervals support, per column, generated (never typed).

Each finding is a :class:`~brcd.report.statements.Statement` read off a paired 95% interval
of Δ mAP@K: each KD method against the student without KD, every student against the
column's best (the bold of the tables) and each BRCD ablation against full ``brcd``. The
report renders them as its "Findings" section and writes them as a table
(:func:`brcd.report.statements.write_statements`) that ``brcd compare-conclusions`` reads.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

from brcd.report.format import DIGITS, interval_text
from brcd.report.grid import GridResults, Pairing, column_header, rank_columns, student_row
from brcd.report.significance import BOOTSTRAP_SEED, compared_to_best
from brcd.report.statements import VS_BEST, VS_BRCD, VS_NO_KD, Statement
from brcd.lambdas import NO_KD


#: what each BRCD ablation removes, as the findings name it
ABLATION_COMPONENTS = {
    "brcd_nomask": "the bit mask",
    "brcd_nocluster": "the cluster terms",
    "brcd_plain": "both the bit mask and the cluster terms",
}


def _method_list(items: Sequence[str]) -> str:
    return ", ".join(items) if items else "none"


def column_statements(results: GridResults, dataset: str, pairing: Pairing, bits: int,
                      paradigm: str) -> list[Statement]:
    """Everything one column's paired intervals support, as :class:`~brcd.report.statements.Statement`
    rows: each KD method against the student without KD, every student against the column's
    best (the bold of the tables), and each BRCD ablation against full ``brcd``."""
    from brcd.stats import compare

    column = {"dataset": dataset, "hash": pairing.hash, "teacher": pairing.teacher, "student": pairing.student,
              "bits": bits, "paradigm": paradigm}
    students = list(results.config["kd"])
    samples = {kd: results.samples(dataset, pairing, student_row(pairing, kd), bits, paradigm, "map@K")
               for kd in students}
    mean = lambda kd: float(samples[kd].mean()) if samples[kd] is not None else math.nan  # noqa: E731
    found = []
    if NO_KD in students:
        for kd in [kd for kd in students if kd != NO_KD]:
            c = compare(samples[kd], samples[NO_KD], seed=BOOTSTRAP_SEED)
            found.append(Statement.compared(column, VS_NO_KD, kd, NO_KD, mean(kd), c))
    compared = compared_to_best(samples)
    if compared is not None:
        best, comparisons = compared
        found.append(Statement.best(column, best, mean(best)))
        found += [Statement.compared(column, VS_BEST, kd, best, mean(kd), c) for kd, c in comparisons.items()]
    if "brcd" in students:
        for kd in [kd for kd in results.ablations() if kd in ABLATION_COMPONENTS]:
            c = compare(samples[kd], samples["brcd"], seed=BOOTSTRAP_SEED)
            found.append(Statement.compared(column, VS_BRCD, kd, "brcd", mean(kd), c))
    return found


COMPONENT_VERDICTS = {"better": "significantly higher", "worse": "significantly lower",
                      "level": "no significant change"}


def render_column_findings(statements: Sequence[Statement], methods: Sequence[str], has_baseline: bool) -> list[str]:
    """The findings of one column; ``methods``: the config's order of the students."""

    def of(kind: str, verdicts: Iterable[str]) -> list[Statement]:
        return [s for s in statements if s.kind == kind and s.verdict in verdicts]

    def listed(kind: str, verdict: str) -> str:
        return _method_list([f"`{s.method}` ({interval_text(s)})" for s in of(kind, {verdict})])

    lines = []
    if has_baseline:
        lines += [f"  - better than the student without KD: {listed(VS_NO_KD, 'better')}",
                  f"  - worse than it: {listed(VS_NO_KD, 'worse')}",
                  f"  - not distinguishable from it: {listed(VS_NO_KD, 'level')}"]
    best = of(VS_BEST, {"best"})
    if best:
        tied = sorted(of(VS_BEST, {"best", "tied"}), key=lambda s: list(methods).index(s.method))
        lines.append(f"  - tied with the best (`{best[0].method}`, mAP {best[0].mean:.{DIGITS}f}): "
                     + ", ".join(f"`{s.method}`" for s in tied))
    components = [f"without {ABLATION_COMPONENTS[s.method]} (`{s.method}`): {interval_text(s)}, "
                  f"{COMPONENT_VERDICTS[s.verdict]}" for s in of(VS_BRCD, COMPONENT_VERDICTS)]
    if components:
        lines.append("  - BRCD's components, Δ vs full `brcd`: " + "; ".join(components))
    return lines


def overall_findings(results: GridResults, by_column: Sequence[Sequence[Statement]]) -> list[str]:
    """Per method, in how many columns it beats no KD and is tied with the best."""
    n = len(by_column)
    has_baseline = NO_KD in results.config["kd"]

    def count(kd: str, kind: str, verdicts: set[str]) -> int:
        return sum(any(s.kind == kind and s.method == kd and s.verdict in verdicts for s in column)
                   for column in by_column)

    lines = []
    for kd in [kd for kd in results.config["kd"] if kd != NO_KD]:
        vs_baseline = (f"better than no KD in {count(kd, VS_NO_KD, {'better'})} of {n} columns, worse in "
                       f"{count(kd, VS_NO_KD, {'worse'})}; " if has_baseline else "")
        lines.append(f"  - `{kd}`: {vs_baseline}tied with the best in {count(kd, VS_BEST, {'best', 'tied'})} of {n}")
    return lines


def findings_statements(results: GridResults) -> list[list[Statement]]:
    """:func:`column_statements` of every column, in the order of :func:`rank_columns`."""
    return [column_statements(results, *column) for column in rank_columns(results)]


def findings_section(results: GridResults, by_column: Sequence[Sequence[Statement]]) -> list[str]:
    """Per column, what the statistics of this report support, generated (never typed): each
    statement is a paired 95% interval of Δ mAP@K (the Δ tables below) that excludes 0 or not.
    ``by_column``: :func:`findings_statements`."""
    if not any(kd != NO_KD for kd in results.config["kd"]):
        return []
    methods = list(results.config["kd"])
    has_baseline = NO_KD in methods
    columns_ = rank_columns(results)
    lines = ["## Findings", "",
             "Generated from the paired 95% intervals of this report (Δ mAP@K, bootstrap over seeds and queries; "
             "the Δ tables below), never typed: *better*/*worse* means the interval excludes 0, *not "
             "distinguishable* that it does not. *Tied with the best*: the best student of the column (ablations "
             "included) and every student not significantly worse than it, the rule of the bold in the tables. "
             + ("With one seed the intervals cover query sampling only." if len(results.config["seeds"]) == 1
                else f"{len(results.config['seeds'])} seeds.")
             + " The same statements, one row each, are in the findings table beside this report "
             "(`brcd compare-conclusions` compares two runs' tables).", "",
             f"- **Over all {len(columns_)} columns**"]
    lines += overall_findings(results, by_column)
    for (dataset, pairing, bits, paradigm), found in zip(columns_, by_column):
        lines.append(f"- **{dataset}, {pairing.label}, {column_header(bits, paradigm)}** (mAP@{results.topk(dataset)})")
        lines += render_column_findings(found, methods, has_baseline)
    return lines + [""]
