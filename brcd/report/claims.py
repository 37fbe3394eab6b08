"""The paper's claims, checked one by one against the grid's metrics: a generated section at the
top of the report (never typed).

BRCD's paper (He et al., WWW 2024) argues five things; each is read here as a paired comparison
of mAP@K per column (:mod:`brcd.report.families`), judged after Holm's correction within its
family, and phrased so that the claim is "Δ > 0":

- (a) BRCD beats each baseline: Δ = ``brcd`` − baseline (family D, per baseline);
- (b) the bit mask helps: Δ = ``brcd`` − ``brcd_nomask`` (family B);
- (c) the cluster terms help: Δ = ``brcd`` − ``brcd_nocluster`` (family B);
- (d) asymmetric search works after distillation: Δ = ``brcd`` searched asym (its query codes
  against the teacher's database codes) − ``brcd`` searched sym (against its own database codes),
  on the same seeds and queries, once per dataset × pairing × bits (family E, a test of its own);
- (e) the claims hold across datasets and students: (a)-(d) per dataset × student group.

In a column a claim *holds* when Δ is significantly above 0, *fails* when significantly below,
and is *undecided* otherwise. A group of columns holds a claim when it holds in at least one of
them and fails in none, fails it when it fails in any, and is undecided when none decides; a
claim holds across the grid when every group holds it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from brcd.report.families import (ABLATION_COMPONENTS, column_tests, family_size, interval_sentence, paradigm_test,
                                  tests_text)
from brcd.report.format import MISSING, markdown_table, signed
from brcd.report.grid import GridResults, column_header, rank_columns
from brcd.report.significance import FAMILY_ABLATIONS, FAMILY_BASELINES, FAMILY_PARADIGMS, Tested

HOLDS, FAILS, UNDECIDED = "holds", "fails", "undecided"


@dataclass(frozen=True)
class Check:
    """One claim in one column (dataset, pairing, bits, paradigm): the test it rests on, and
    ``sign``, the direction of the test's Δ that the claim asserts."""

    column: tuple
    test: Tested
    sign: int = 1

    @property
    def delta(self) -> float:
        """Δ in the claim's direction (the claim is Δ > 0)."""
        return self.sign * self.test.delta

    @property
    def verdict(self) -> str:
        agrees = self.sign * self.test.direction
        return HOLDS if agrees > 0 else FAILS if agrees < 0 else UNDECIDED


@dataclass(frozen=True)
class Claim:
    """One of the paper's claims, checked column by column."""

    part: str  # "a" to "d"
    key: str  # its header in the tables
    label: str
    delta: str  # what Δ is
    family: str  # which family judges it
    checks: tuple[Check, ...]
    needs: str = ""  # what the grid must have to test it
    versus: str = ""  # (a): the baseline

    def count(self, verdict: str) -> int:
        return sum(check.verdict == verdict for check in self.checks)

    def summary(self) -> str:
        return (f"holds in {self.count(HOLDS)} of {len(self.checks)} columns, fails in {self.count(FAILS)}, "
                "undecided in the rest")


def group_verdict(verdicts: Sequence[str]) -> str:
    """A claim over a group of columns: fails if it fails in any, holds if it holds in one and fails in
    none, undecided when no column decides."""
    if FAILS in verdicts:
        return FAILS
    return HOLDS if HOLDS in verdicts else UNDECIDED


def across_verdict(verdicts: Sequence[str]) -> str:
    """A claim over the groups (claim e): fails if any group fails it, holds if every group holds it."""
    if FAILS in verdicts:
        return FAILS
    return HOLDS if verdicts and all(v == HOLDS for v in verdicts) else UNDECIDED


def paper_claims(results: GridResults) -> list[Claim]:
    """Claims (a)-(d) of this grid (none without ``brcd``); a claim the grid cannot test has no checks."""
    if "brcd" not in results.config["kd"]:
        return []
    columns = rank_columns(results)
    tests = {column: column_tests(results, *column) for column in columns}

    def checks(family: str, method: str, sign: int) -> tuple[Check, ...]:
        found = ((column, tests[column].family(family).get(method)) for column in columns)
        return tuple(Check(column, t, sign) for column, t in found if t is not None)

    def family(name: str) -> str:
        return f"family {name}, {tests_text(family_size(results, name))} per column"

    claims = [Claim("a", f"(a) `{kd}`", f"(a) `brcd` beats `{kd}`", f"`brcd` − `{kd}`", family(FAMILY_BASELINES),
                    checks(FAMILY_BASELINES, kd, 1), versus=kd)
              for kd in results.kd_methods() if kd != "brcd"]
    for part, key, ablation, claim in (("b", "(b) mask", "brcd_nomask", "(b) the bit mask helps"),
                                       ("c", "(c) clusters", "brcd_nocluster", "(c) the cluster terms help")):
        without = f"`brcd` − `{ablation}`, the variant without {ABLATION_COMPONENTS[ablation]}"
        claims.append(Claim(part, key, claim, without, family(FAMILY_ABLATIONS), checks(FAMILY_ABLATIONS, ablation, -1),
                            needs=f"`{ablation}`"))
    asym = [((d, pairing, bits, "asym"), paradigm_test(results, d, pairing, bits))
            for d, pairing, bits, paradigm in columns if paradigm == "asym"]
    claims.append(Claim("d", "(d) asym", "(d) asymmetric search works after distillation",
                        "`brcd` searched asym (its query codes against the teacher's database codes) − `brcd` "
                        "searched sym (against its own database codes), same seeds and queries, shown in the asym "
                        "column", f"family {FAMILY_PARADIGMS}: one test per dataset × pairing × bits, no correction",
                        tuple(Check(column, t) for column, t in asym if t is not None), needs="both paradigms"))
    return claims


def claims_section(results: GridResults) -> list[str]:
    """The section: each claim's summary, the verdict per column, and per dataset × student group."""
    claims = paper_claims(results)
    if not claims:
        return []
    lines = ["## The paper's claims, checked", "",
             "Generated from this report's metrics, never typed: each claim of the BRCD paper is checked in every "
             "column on the paired comparison of mAP@K it rests on, phrased so that the claim is Δ > 0. "
             f"{interval_sentence(results)} Verdicts are Holm-corrected within their family of the column (the "
             "families of section \"Findings\"); **holds**: Δ significantly above 0, **fails**: significantly "
             "below, **undecided**: neither. Everything is conditional on each method's λ chosen on validation.",
             ""]
    baselines = [claim for claim in claims if claim.part == "a"]
    if baselines:
        lines.append(f"- **(a) BRCD beats each baseline** ({baselines[0].family}):")
        lines += [f"  - vs `{claim.versus}` (Δ = {claim.delta}): {claim.summary()}" for claim in baselines]
    for claim in claims:
        if claim.part == "a":
            continue
        if not claim.checks:
            lines.append(f"- **{claim.label}**: not testable in this grid (it needs {claim.needs})")
        else:
            lines.append(f"- **{claim.label}** (Δ = {claim.delta}; {claim.family}): {claim.summary()}")
    claims = [claim for claim in claims if claim.checks]
    lines += _across_lines(results, claims)
    lines += ["", "Verdict per column (Δ in the claim's direction):", "", verdict_table(results, claims), "",
              "Per dataset × student (fails: in some column of the group; holds: in some column and failing in "
              "none):", "", group_table(results, claims), ""]
    return lines


def groups(results: GridResults) -> list[tuple[str, str]]:
    """(dataset, student) pairs of the grid, in config order: the units of claim (e)."""
    return [(d, s) for d in results.config["datasets"] for s in results.config["students"]]


def _group_verdicts(claim: Claim, group: tuple[str, str]) -> list[str]:
    return [c.verdict for c in claim.checks if (c.column[0], c.column[1].student) == group]


def _across_lines(results: GridResults, claims: Sequence[Claim]) -> list[str]:
    """Claim (e): per claim, in how many dataset × student groups it holds."""
    units = groups(results)
    lines = [f"- **(e) the claims hold across datasets and students** ({len(units)} dataset × student "
             f"group{'s' if len(units) != 1 else ''}; a group holds a claim when it holds in one of its columns and "
             "fails in none, fails it when it fails in any; across: held by every group):"]
    for claim in claims:
        verdicts = [group_verdict(_group_verdicts(claim, g)) for g in units]
        lines.append(f"  - {claim.label}: holds in {verdicts.count(HOLDS)} of {len(units)} groups, fails in "
                     f"{verdicts.count(FAILS)}, undecided in the rest: **{across_verdict(verdicts)}** across them")
    return lines


def verdict_table(results: GridResults, claims: Sequence[Claim]) -> str:
    """Rows: the report's columns; columns: the claims; cells: verdict and Δ."""
    rows = []
    for column in rank_columns(results):
        dataset, pairing, bits, paradigm = column
        cells = []
        for claim in claims:
            check = next((c for c in claim.checks if c.column == column), None)
            cells.append(MISSING if check is None else f"{check.verdict} ({signed(check.delta)})")
        rows.append([f"{dataset}, {pairing.label}, {column_header(bits, paradigm)}", *cells])
    rows.append(["**holds / fails / of**", *(f"{c.count(HOLDS)} / {c.count(FAILS)} / {len(c.checks)}"
                                             for c in claims)])
    return markdown_table(["column", *(claim.key for claim in claims)], rows)


def group_table(results: GridResults, claims: Sequence[Claim]) -> str:
    """Rows: the claims; columns: dataset × student groups; cells: the group's verdict and its counts."""
    units = groups(results)
    rows = []
    for claim in claims:
        cells = []
        for g in units:
            verdicts = _group_verdicts(claim, g)
            cells.append(MISSING if not verdicts else f"{group_verdict(verdicts)} ({verdicts.count(HOLDS)} holds, "
                         f"{verdicts.count(FAILS)} fails of {len(verdicts)})")
        rows.append([claim.label, *cells])
    return markdown_table(["claim", *(f"{d}, `{s}`" for d, s in units)], rows)
