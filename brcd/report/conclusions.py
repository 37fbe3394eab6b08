"""``brcd compare-conclusions``: whether two runs of one grid share a report's conclusions.

A report's findings are statements read off paired 95% intervals of Δ mAP@K, written one
row per statement to ``reports/{name}.findings.parquet`` (:mod:`brcd.report.statements`
describes them and their table).

Two runs of one grid — on two machines, with two library versions, under two floating-point
paths — *reach the same conclusions* when, in every column, the same methods are significantly
better than no KD and the two tied-with-best groups share at least one method (issue
"Conclusions you can trust"). Numbers move between such runs; the comparison also lists every
other statement whose verdict changed, so a reader sees how far the agreement goes.

The verdicts compared are the Holm-corrected ones (issue 29) when both tables have them; a table
written before that holds uncorrected verdicts only, and then both tables' verdicts are read off
their own 95% intervals (:func:`brcd.report.statements.uncorrected`), so that like is compared
with like (an older table's own verdicts are kept as they are). With ``shared_only``
(``--shared-columns``), two grids that overlap (a study grown to more datasets and students
against the earlier one) are compared on the columns both have.

It also says whether the two runs agree *within their stated uncertainty*, which the
verdicts alone cannot show: a verdict is a 95% interval's end compared with 0, so a difference
measured twice, each time inside the other measurement's interval, still changes verdict
whenever one of its intervals ends near 0. Per Δ statement: is it *reversed* (significantly
better in one run, significantly worse in the other), and does each run's Δ lie inside the
other run's interval? A changed verdict without either is a threshold effect, not a
disagreement about the difference.

Given the two runs' tidy tables (``reports/{name}.parquet``) as well, it measures how far each
seed's Δ vs no KD moved against the seed-to-seed spread of that Δ (:func:`seed_movement`):
a move about as large as the seed spread means the other run is, for the verdicts, like a new
draw of the training noise rather than a small correction of the same one. And for each reversed
verdict it lists the λ candidates behind it in both runs (:func:`tuning_runs`): the validation mAP@K
of each candidate on the tuning seed, against the reference method's. A method below its reference at
every λ, even the smallest, in one run only suggests its loss in that run's code, rather than the
choice of λ or seed noise, as the cause.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from brcd.errors import DataError
from brcd.lambdas import SELECTED
from brcd.report.format import tested_text
from brcd.report.statements import (COLUMN_KEYS, VS_BEST, VS_BRCD, VS_NO_KD, Statement, column_label, read_statements,
                                    uncorrected)
from brcd.report.tidy import read_tidy_table


@dataclass(frozen=True)
class ColumnAgreement:
    column: tuple
    better: tuple[frozenset, frozenset]  # methods significantly better than no KD, in A and in B
    tied: tuple[frozenset, frozenset]  # the tied-with-best groups (best included)
    pairs: tuple[tuple[Statement, Statement], ...]  # every Δ statement (vs no KD, vs brcd): (A's, B's)
    corrected: int = 0  # how many of the two tables hold Holm-corrected verdicts (2: those are compared)

    @property
    def changed(self) -> tuple[tuple[Statement, Statement], ...]:
        """The Δ statements whose verdict differs between the runs."""
        return tuple((a, b) for a, b in self.pairs if a.verdict != b.verdict)

    @property
    def reversed(self) -> tuple[tuple[Statement, Statement], ...]:
        """The Δ statements significant in opposite directions: a real contradiction."""
        return tuple((a, b) for a, b in self.pairs if is_reversed(a, b))

    @property
    def outside(self) -> tuple[tuple[Statement, Statement], ...]:
        """The Δ statements where one run's Δ lies outside the other run's interval."""
        return tuple((a, b) for a, b in self.pairs if not estimates_inside(a, b))

    @property
    def same_better(self) -> bool:
        return self.better[0] == self.better[1]

    @property
    def tied_overlap(self) -> bool:
        return bool(self.tied[0] & self.tied[1]) or not (self.tied[0] or self.tied[1])

    @property
    def agree(self) -> bool:
        return self.same_better and self.tied_overlap


def is_reversed(a: Statement, b: Statement) -> bool:
    """Whether the two runs found the difference significant in opposite directions."""
    return {a.verdict, b.verdict} == {"better", "worse"}


def estimates_inside(a: Statement, b: Statement) -> bool:
    """Whether each run's Δ lies inside the other run's interval: the two runs measured the same
    difference within their stated uncertainty (whatever their verdicts)."""
    return b.low <= a.delta <= b.high and a.low <= b.delta <= a.high


def _by_column(statements: Iterable[Statement]) -> dict[tuple, dict[tuple, Statement]]:
    columns: dict[tuple, dict[tuple, Statement]] = {}
    for s in statements:
        columns.setdefault(s.column, {})[(s.kind, s.method)] = s
    return columns


def _group(statements: Mapping[tuple, Statement], kind: str, verdicts: set[str]) -> frozenset:
    return frozenset(s.method for (k, _), s in statements.items() if k == kind and s.verdict in verdicts)


def compare_conclusions(a: Sequence[Statement], b: Sequence[Statement],
                        shared_only: bool = False) -> list[ColumnAgreement]:
    """Column by column, whether B reaches A's conclusions. Both must come from the same grid
    (same columns and methods; with ``shared_only``, the columns both have); anything else is a
    named error, not a disagreement."""
    corrected = sum(all(s.corrected for s in table) for table in (a, b))
    if corrected < 2:  # a table from before Holm's correction: compare each interval's own verdict
        a, b = ([uncorrected(s) if s.corrected else s for s in table] for table in (a, b))
    cols_a, cols_b = _by_column(a), _by_column(b)
    if shared_only:
        cols_a, cols_b = ({c: s for c, s in cols.items() if c in cols_a and c in cols_b} for cols in (cols_a, cols_b))
        if not cols_a:
            raise DataError("the two findings tables have no column in common")
    if set(cols_a) != set(cols_b):
        only = sorted(set(cols_a) ^ set(cols_b))
        raise DataError(f"the two findings tables are not of the same grid: columns in only one of them: "
                        f"{', '.join(column_label(c) for c in only)} (--shared-columns compares the columns both have)")
    out = []
    for column in sorted(cols_a):
        sa, sb = cols_a[column], cols_b[column]
        if set(sa) != set(sb):
            only = sorted(set(sa) ^ set(sb))
            raise DataError(f"{column_label(column)}: statements in only one findings table: {only}; "
                            "compare tables of the same grid config")

        out.append(ColumnAgreement(
            column,
            better=(_group(sa, VS_NO_KD, {"better"}), _group(sb, VS_NO_KD, {"better"})),
            tied=(_group(sa, VS_BEST, {"best", "tied"}), _group(sb, VS_BEST, {"best", "tied"})),
            pairs=tuple((sa[key], sb[key]) for key in sorted(sa) if key[0] != VS_BEST),
            corrected=corrected,
        ))
    return out


def _verdicts_compared(agreement: Sequence[ColumnAgreement]) -> str:
    corrected = agreement[0].corrected if agreement else 0
    if corrected == 2:
        return "Verdicts compared: Holm-corrected within each column's family (both tables have them)."
    why = ("both tables predate Holm's correction" if corrected == 0 else
           "one table predates Holm's correction, so the other's verdicts are read off its own intervals")
    return f"Verdicts compared: each 95% interval's own, uncorrected for the number of verdicts ({why})."


def _names(methods: Iterable[str]) -> str:
    methods = sorted(methods)
    return ", ".join(f"`{m}`" for m in methods) if methods else "none"


def _statement_text(s: Statement) -> str:
    """The verdict and the report's own Δ [low, high] text (with the adjusted p-value when corrected)."""
    return f"{s.verdict} ({tested_text(s)})"


def render_agreement(agreement: Sequence[ColumnAgreement], label_a: str, label_b: str,
                     deltas: tuple[Sequence[Statement], Sequence[Statement]] | None = None,
                     movement: SeedMovement | None = None, tables: tuple | None = None) -> str:
    """Markdown: the verdict first, then the agreement within the intervals, how far the numbers moved
    (``deltas``; ``movement``: seed by seed), one line per column, the statements that changed and, given
    the two runs' tidy ``tables``, the λ candidates behind each reversed verdict."""
    agree = sum(c.agree for c in agreement)
    same_better = sum(c.same_better for c in agreement)
    overlap = sum(c.tied_overlap for c in agreement)
    n = len(agreement)
    lines = [f"# Same conclusions? {label_a} vs {label_b}", "",
             "Generated by `brcd compare-conclusions` from the two runs' findings tables. Two runs reach the "
             "same conclusions when, in every column, the same methods are significantly better than the "
             "student without KD and the tied-with-best groups share a method. " + _verdicts_compared(agreement), "",
             f"**{'Yes' if agree == n else 'No'}: {agree} of {n} columns agree** — the same methods better than "
             f"no KD in {same_better} of {n}, tied-with-best groups overlapping in {overlap} of {n}.", ""]
    lines += [_within_intervals(agreement), ""]
    if deltas is not None:
        lines += _left_out(agreement, deltas, label_a, label_b) + [_movement(*deltas), ""]
    if movement is not None:
        lines += [movement.text(), ""]
    lines += ["| column | better than no KD (A) | better than no KD (B) | tied with the best (A) | "
              "tied with the best (B) | agree |", "|:--|:--|:--|:--|:--|:--|"]
    for c in agreement:
        better = (_names(c.better[0]), _names(c.better[1]) if not c.same_better else "same")
        tied = (_names(c.tied[0]), _names(c.tied[1]) if c.tied[0] != c.tied[1] else "same")
        lines.append(f"| {column_label(c.column)} | {better[0]} | {better[1]} | {tied[0]} | {tied[1]} | "
                     f"{'yes' if c.agree else '**no**'} |")
    changed = [pair for c in agreement for pair in c.changed]
    lines += ["", f"A: {label_a}; B: {label_b}. Δ statements whose verdict changed (vs no KD; BRCD's "
              f"components vs full `brcd`): {len(changed) if changed else 'none'}", ""]
    for sa, sb in changed:
        lines.append(f"- {column_label(sa.column)}: `{sa.method}` vs `{sa.reference}`: "
                     f"{_statement_text(sa)} → {_statement_text(sb)}{_pair_note(sa, sb)}")
    if tables is not None:
        lines += _reversals_tuning(agreement, tables)
    return "\n".join(lines).rstrip() + "\n"


def _left_out(agreement: Sequence[ColumnAgreement], tables: tuple[Sequence[Statement], Sequence[Statement]],
              label_a: str, label_b: str) -> list[str]:
    """The columns of either table not compared (``--shared-columns``): none for one grid."""
    shown = {c.column for c in agreement}
    extra = [(label, sorted({s.column for s in table} - shown)) for label, table in zip((label_a, label_b), tables)]
    if not any(columns for _, columns in extra):
        return []
    return [f"Compared on the {len(shown)} columns both tables have; left out: "
            + "; ".join(f"{len(columns)} of {label} ({', '.join(map(column_label, columns)) or 'none'})"
                        for label, columns in extra) + ".", ""]


def _within_intervals(agreement: Sequence[ColumnAgreement]) -> str:
    """Whether the runs agree within their intervals, per kind of Δ statement: reversals, and
    estimates outside the other run's interval."""
    def of_kind(kind: str, group: str) -> list[tuple[Statement, Statement]]:
        return [pair for c in agreement for pair in getattr(c, group) if pair[0].kind == kind]

    parts = []
    for kind, what in ((VS_NO_KD, "Δ vs no KD"), (VS_BRCD, "BRCD's components vs full `brcd`")):
        pairs, changed = of_kind(kind, "pairs"), of_kind(kind, "changed")
        if not pairs:
            continue
        outside = of_kind(kind, "outside")
        changed_inside = sum(pair not in outside for pair in changed)
        parts.append(f"{what}: **{len(of_kind(kind, 'reversed'))} of {len(pairs)} reversed**, each run's Δ inside "
                     f"the other run's interval in **{len(pairs) - len(outside)} of {len(pairs)}** "
                     f"({changed_inside} of the {len(changed)} whose verdict changed)")
    if not parts:
        return "No Δ statements to compare."
    return ("Within the stated uncertainty (*reversed*: significantly better in one run, significantly worse in "
            "the other): " + "; ".join(parts) + ". A verdict compares an interval's end with 0, so a difference "
            "measured twice, each time inside the other's interval, still changes verdict when one of its "
            "intervals ends near 0: a threshold effect. A reversal, or a Δ outside the other run's interval, is a "
            "disagreement about the difference itself.")


def _pair_note(a: Statement, b: Statement) -> str:
    if is_reversed(a, b):
        return " — **reversed**"
    return "" if estimates_inside(a, b) else " — **a Δ outside the other run's interval**"


def _movement(a: Sequence[Statement], b: Sequence[Statement]) -> str:
    """How far the numbers moved: the Δ vs no KD of every method, A against B."""
    pairs = {(s.column, s.method): s.delta for s in a if s.kind == VS_NO_KD}
    moves = [abs(s.delta - pairs[(s.column, s.method)]) for s in b
             if s.kind == VS_NO_KD and (s.column, s.method) in pairs]
    means = {(s.column, s.method): s.mean for s in a if s.kind == VS_BEST}
    mean_moves = [abs(s.mean - means[(s.column, s.method)]) for s in b
                  if s.kind == VS_BEST and (s.column, s.method) in means]
    if not moves:
        return "No Δ-vs-no-KD statements to compare."
    return (f"How far the numbers moved between A and B: mean mAP@K of a student by {_mean(mean_moves):.4f} "
            f"on average (at most {max(mean_moves):.4f}, {len(mean_moves)} students × columns); Δ vs no KD by "
            f"{_mean(moves):.4f} on average (at most {max(moves):.4f}).")


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


@dataclass(frozen=True)
class SeedMovement:
    """How far each seed's Δ vs no KD moved between two runs, against its seed-to-seed spread."""

    statements: int  # methods × columns compared
    seeds: int
    move_rms: float  # root mean square over statements and seeds of Δ_B[s] − Δ_A[s]
    seed_sd: float | None  # median over statements of the seed standard deviation of Δ (the two runs pooled)
    ratio: float | None  # median over statements of (rms move over seeds) / (seed standard deviation)

    def text(self) -> str:
        head = (f"Seed by seed (the two runs' tidy tables): a method's Δ vs no KD moved by {self.move_rms:.4f} "
                f"(root mean square over {self.statements} methods × columns × {self.seeds} seeds)")
        if self.ratio is None:
            return head + "; with one seed there is no seed-to-seed spread to compare it with."
        return (head + f", against a seed-to-seed standard deviation of that Δ of {self.seed_sd:.4f} (median over "
                f"statements). Per statement the move is **{self.ratio:.2f}× its seed standard deviation** "
                "(median): near 1 or above, the other run is, for the verdicts, like a new draw of the training "
                "noise (the spread that seeds produce), not a small correction of the same one.")


def _column_of(row: Mapping) -> tuple:
    """The column (:data:`COLUMN_KEYS`) of a tidy table's row, as :attr:`Statement.column` gives it."""
    return tuple(row[k] for k in COLUMN_KEYS)


def seed_deltas(table) -> dict[tuple, float]:
    """(column, method, seed) -> the run's mAP@K minus that of the student without KD (same column and
    seed), from a report's tidy table (``reports/{name}.parquet``; rows in the report's tables)."""
    rows = [row for row in table.to_pylist() if row["in_tables"]]
    none = {(_column_of(row), row["seed"]): row["map_at_k"] for row in rows if row["kd"] == "none"}
    return {(_column_of(row), row["kd"], row["seed"]): row["map_at_k"] - none[(_column_of(row), row["seed"])]
            for row in rows if row["kd"] != "none" and (_column_of(row), row["seed"]) in none}


def seed_movement(table_a, table_b, columns: set | None = None) -> SeedMovement:
    """:class:`SeedMovement` of two tidy tables of the same grid (a mismatch is a named error); with
    ``columns``, of two overlapping grids: the runs both have in those columns."""
    import numpy as np

    da, db = seed_deltas(table_a), seed_deltas(table_b)
    if columns is not None:
        shared = {k for k in da.keys() & db.keys() if k[0] in columns}
        da, db = ({k: d[k] for k in shared} for d in (da, db))
    if set(da) != set(db) or not da:
        raise DataError("the two tidy tables do not hold the same runs (columns × methods × seeds); "
                        "compare the tables of two runs of the same grid config")
    statements = sorted({k[:2] for k in da})
    seeds = sorted({k[2] for k in da})
    a = np.array([[da[(c, m, s)] for s in seeds] for c, m in statements])
    b = np.array([[db[(c, m, s)] for s in seeds] for c, m in statements])
    moves = b - a
    rms = float(np.sqrt(np.mean(moves ** 2)))
    if len(seeds) < 2:
        return SeedMovement(len(statements), len(seeds), rms, None, None)
    sd = np.sqrt((a.var(axis=1, ddof=1) + b.var(axis=1, ddof=1)) / 2)
    spread = sd > 0
    ratio = np.sqrt(np.mean(moves ** 2, axis=1))[spread] / sd[spread]
    return SeedMovement(len(statements), len(seeds), rms, float(np.median(sd)),
                        float(np.median(ratio)) if ratio.size else None)


@dataclass(frozen=True)
class TuningRuns:
    """A method's λ candidates in one column: the tuning seed's runs, each with the validation mAP@K of
    its best checkpoint (what λ is chosen on), and the reference method's run of that seed."""

    seed: int
    candidates: tuple[tuple[float, float, bool], ...]  # (λ, validation mAP@K, chosen), by λ
    reference: float | None  # the reference's validation mAP@K on that seed (None: not in the table)

    def text(self, reference: str) -> str:
        runs = ", ".join(f"**{lam:g} → {val:.3f}**" if chosen else f"{lam:g} → {val:.3f}"
                         for lam, val, chosen in self.candidates)
        ref = "not in the table" if self.reference is None else f"{self.reference:.3f}"
        return f"seed {self.seed}: λ {runs}; `{reference}` {ref}"


def tuning_runs(table, column: tuple, method: str, reference: str) -> TuningRuns | None:
    """:class:`TuningRuns` of ``method`` in ``column`` of a tidy table: its candidate runs (variant
    ``lambda<λ>``, not ``selected``); None when the table holds none (a method without λ)."""
    rows = [row for row in table.to_pylist() if _column_of(row) == column]
    candidates = [row for row in rows if row["kd"] == method and row["variant"] != SELECTED]
    if not candidates:
        return None
    seed = min(row["seed"] for row in candidates)  # the tuning seed: the only one with candidates
    candidates = [row for row in candidates if row["seed"] == seed]
    chosen_reference = [row["train_val_map"] for row in rows if row["kd"] == reference and row["seed"] == seed
                        and row["is_selected"] and row["in_tables"]]
    return TuningRuns(seed, tuple(sorted((row["lambda"], row["train_val_map"], bool(row["is_selected"]))
                                         for row in candidates)),
                      chosen_reference[0] if chosen_reference else None)


def _reversals_tuning(agreement: Sequence[ColumnAgreement], tables: tuple) -> list[str]:
    """Per reversed verdict, both runs' λ candidates on the tuning seed against the reference's run."""
    reversed_pairs = [pair for c in agreement for pair in c.reversed]
    if not reversed_pairs:
        return []
    lines = ["", "The λ candidates behind each reversed verdict (the tuning seed's runs, each with the validation "
             "mAP@K of its best checkpoint, on which λ is chosen; the chosen one in bold), against the reference "
             "method's run of that seed:", ""]
    for sa, sb in reversed_pairs:
        runs = [tuning_runs(table, sa.column, sa.method, sa.reference) for table in tables]
        told = "; ".join(f"{side}: {'no candidates in its table' if r is None else r.text(sa.reference)}"
                         for side, r in zip("AB", runs))
        lines.append(f"- {column_label(sa.column)}: `{sa.method}` vs `{sa.reference}`: {told}")
    return lines


# --------------------------------------------------------------------------- CLI


def configure_parser(parser) -> None:
    parser.add_argument("a", help="findings table of run A (reports/{name}.findings.parquet)")
    parser.add_argument("b", help="findings table of run B: the same grid config run elsewhere")
    parser.add_argument("--label-a", default=None, help="name of run A in the output (default: its path)")
    parser.add_argument("--label-b", default=None, help="name of run B in the output (default: its path)")
    parser.add_argument("--out", default=None, help="write the Markdown here (atomically) instead of stdout")
    parser.add_argument("--tables", nargs=2, metavar=("A", "B"), default=None,
                        help="the two runs' tidy tables (reports/{name}.parquet): also say how far each seed's "
                        "Δ vs no KD moved, against its seed-to-seed spread, and list the λ candidates behind each "
                        "reversed verdict")
    parser.add_argument("--shared-columns", action="store_true",
                        help="compare the columns both tables have (two grids that overlap, e.g. a study grown to "
                        "more datasets and students against the earlier one); the output says how many were left out")
    parser.add_argument("--check", action="store_true",
                        help="exit with status 1 when the two runs do not reach the same conclusions")


def run(args) -> None:
    import sys

    from brcd.io import atomic_path

    name_a, a = read_statements(args.a)
    name_b, b = read_statements(args.b)
    if name_a != name_b:
        raise DataError(f"{args.a} is of grid `{name_a}` and {args.b} of grid `{name_b}`: compare two runs of "
                        "the same grid config")
    agreement = compare_conclusions(a, b, shared_only=args.shared_columns)
    movement = tables = None
    if args.tables:
        named = [read_tidy_table(path) for path in args.tables]  # (grid name, table); the same path twice is allowed
        wrong = [f"{path} (grid `{name}`)" for path, (name, _) in zip(args.tables, named) if name != name_a]
        if wrong:
            raise DataError(f"--tables: {', '.join(wrong)} not of grid `{name_a}` like the findings tables; "
                            "give the two runs' reports/{name}.parquet")
        columns = {c.column for c in agreement} if args.shared_columns else None
        tables = tuple(table for _, table in named)
        movement = seed_movement(*tables, columns=columns)
    text = render_agreement(agreement, args.label_a or str(args.a), args.label_b or str(args.b), (a, b), movement,
                            tables)
    if args.out:
        with atomic_path(args.out) as tmp:
            Path(tmp).write_text(text)
    else:
        sys.stdout.write(text)
    if args.check and not all(c.agree for c in agreement):
        raise SystemExit(1)
