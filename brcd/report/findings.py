"""The report's findings: what its paired intervals support, per column, generated (never typed).

Each finding is a :class:`~brcd.report.statements.Statement` read off a paired 95% interval
of Δ mAP@K and judged after Holm's correction within its family of the column
(:mod:`brcd.report.families`): each KD method against the student without KD (family A),
every student against the column's best (family C: the bold of the tables) and each BRCD
ablation against full ``brcd`` (family B). The report renders them as its "Findings" section
and writes them as a table (:func:`brcd.report.statements.write_statements`) that
``brcd compare-conclusions`` reads.
"""
from __future__ import annotations

from typing import Iterable, Sequence

from brcd.lambdas import NO_KD
from brcd.report.families import (ABLATION_COMPONENTS, column_tests, families_sentence, interval_sentence,
                                  judgement_sentence)
from brcd.report.format import DIGITS, tested_text
from brcd.report.grid import GridResults, Pairing, column_header, rank_columns
from brcd.report.significance import FAMILY_ABLATIONS, FAMILY_BEST, FAMILY_NO_KD
from brcd.report.statements import VS_BEST, VS_BRCD, VS_NO_KD, Statement


def _method_list(items: Sequence[str]) -> str:
    return ", ".join(items) if items else "none"


def column_statements(results: GridResults, dataset: str, pairing: Pairing, bits: int,
                      paradigm: str) -> list[Statement]:
    """Everything one column's paired intervals support, as :class:`~brcd.report.statements.Statement`
    rows: each KD method against the student without KD, every student against the column's
    best (the bold of the tables), and each BRCD ablation against full ``brcd``."""
    column = {"dataset": dataset, "hash": pairing.hash, "teacher": pairing.teacher, "student": pairing.student,
              "bits": bits, "paradigm": paradigm}
    tests = column_tests(results, dataset, pairing, bits, paradigm)
    found = [Statement.compared(column, VS_NO_KD, kd, NO_KD, tests.means[kd], t) for kd, t in tests.vs_no_kd.items()]
    if tests.best is not None:
        found.append(Statement.best(column, tests.best, tests.means[tests.best], FAMILY_BEST, len(tests.vs_best)))
        found += [Statement.compared(column, VS_BEST, kd, tests.best, tests.means[kd], t)
                  for kd, t in tests.vs_best.items()]
    found += [Statement.compared(column, VS_BRCD, kd, "brcd", tests.means[kd], t) for kd, t in tests.vs_brcd.items()]
    return found


COMPONENT_VERDICTS = {"better": "significantly higher", "worse": "significantly lower",
                      "level": "no significant change"}


def render_column_findings(statements: Sequence[Statement], methods: Sequence[str], has_baseline: bool) -> list[str]:
    """The findings of one column; ``methods``: the config's order of the students."""

    def of(kind: str, verdicts: Iterable[str]) -> list[Statement]:
        return [s for s in statements if s.kind == kind and s.verdict in verdicts]

    def listed(kind: str, verdict: str) -> str:
        return _method_list([f"`{s.method}` ({tested_text(s)})" for s in of(kind, {verdict})])

    lines = []
    if has_baseline:
        a = f"(family {FAMILY_NO_KD})"
        lines += [f"  - better than the student without KD {a}: {listed(VS_NO_KD, 'better')}",
                  f"  - worse than it {a}: {listed(VS_NO_KD, 'worse')}",
                  f"  - not distinguishable from it {a}: {listed(VS_NO_KD, 'level')}"]
    best = of(VS_BEST, {"best"})
    if best:
        tied = sorted(of(VS_BEST, {"best", "tied"}), key=lambda s: list(methods).index(s.method))
        lines.append(f"  - tied with the best (`{best[0].method}`, mAP {best[0].mean:.{DIGITS}f}), "
                     f"family {FAMILY_BEST}: " + ", ".join(f"`{s.method}`" for s in tied))
    components = [f"without {ABLATION_COMPONENTS[s.method]} (`{s.method}`): {tested_text(s)}, "
                  f"{COMPONENT_VERDICTS[s.verdict]}" for s in of(VS_BRCD, COMPONENT_VERDICTS)]
    if components:
        lines.append(f"  - BRCD's components, Δ vs full `brcd` (family {FAMILY_ABLATIONS}): " + "; ".join(components))
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
    statement is a paired 95% interval of Δ mAP@K (the Δ tables below) and its verdict after
    Holm's correction within its family. ``by_column``: :func:`findings_statements`."""
    if not any(kd != NO_KD for kd in results.config["kd"]):
        return []
    methods = list(results.config["kd"])
    has_baseline = NO_KD in methods
    columns_ = rank_columns(results)
    lines = ["## Findings", "",
             "Generated from this report's paired comparisons of mAP@K (the Δ tables below), never typed. "
             f"{interval_sentence(results)} "
             + judgement_sentence() + " "
             + families_sentence(results, [FAMILY_NO_KD, FAMILY_BEST, FAMILY_ABLATIONS])
             + " *Tied with the best*: the best student of the column (ablations included) and every student not "
             "significantly worse than it, the rule of the bold in the tables. The same statements, one row each "
             "with their family and raw and adjusted p-values, are in the findings table beside this report "
             "(`brcd compare-conclusions` compares two runs' tables).", "",
             f"- **Over all {len(columns_)} columns**"]
    lines += overall_findings(results, by_column)
    for (dataset, pairing, bits, paradigm), found in zip(columns_, by_column):
        lines.append(f"- **{dataset}, {pairing.label}, {column_header(bits, paradigm)}** (mAP@{results.topk(dataset)})")
        lines += render_column_findings(found, methods, has_baseline)
    return lines + [""]
