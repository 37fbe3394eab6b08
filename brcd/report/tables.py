"""The accuracy tables of the report: mAP and the other metrics per method and column, Δ against a
reference, the λ chosen on validation and how much it matters, and every cell's config hash.

Rows are :class:`~brcd.report.grid.Method`s, columns bits x paradigm. Bold marks the
tied-with-best group of a column (:func:`brcd.report.significance.tied_with_best`),
the same group the findings name.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Mapping, Sequence

from brcd.cells import Cell
from brcd.report.families import column_tests, family_size, interval_sentence, tests_text
from brcd.report.format import (DIGITS, LAMBDA_EDGE, MISSING, UNCONVERGED, interval_digits, markdown_table, p_text,
                                signed)
from brcd.report.grid import (GridResults, Method, Pairing, column_header, columns, metric_value, rank_columns,
                              student_methods, teacher_row)
from brcd.report.significance import FAMILIES, summarize, tied_with_best
from brcd.lambdas import NO_KD, format_lambda, lambda_grid


def metric_table(results: GridResults, dataset: str, pairing: Pairing, methods: Sequence[Method], key: str,
                 higher_is_better: bool = True, contenders: Sequence[Method] | None = None) -> str:
    """Rows methods, columns bits x paradigm, cells mean ± 95% CI half-width over seeds.

    Bold: per column, the best of the ``contenders`` (default: this table's
    students) and every contender not significantly worse than it (the
    tied-with-best group), where they are rows of this table; † marks a cell
    with an unconverged seed. The main and ablation tables take every student
    of the grid as contenders, so that their bold is one group per column, the
    findings' "tied with the best".
    """
    cols = columns(results)
    contenders = [m for m in (methods if contenders is None else contenders) if not m.is_teacher]
    rows = []
    bold = [set() for _ in methods]
    for j, (bits, paradigm) in enumerate(cols):
        samples = {m.kd: results.samples(dataset, pairing, m, bits, paradigm, key) for m in contenders}
        group = tied_with_best(samples, higher_is_better)
        for i, method in enumerate(methods):
            if not method.is_teacher and method.kd in group:
                bold[i].add(j)
    for i, method in enumerate(methods):
        cells = []
        for j, (bits, paradigm) in enumerate(cols):
            summary = summarize(results.values(dataset, pairing, method, bits, paradigm, key))
            text = MISSING if summary is None else summary.text(DIGITS)
            text = f"**{text}**" if j in bold[i] else text
            if results.unconverged(dataset, pairing, method, bits, paradigm):
                text += UNCONVERGED
            cells.append(text)
        rows.append([method.label, *cells])
    return markdown_table(["method", *(column_header(b, p) for b, p in cols)], rows)


def delta_table(results: GridResults, dataset: str, pairing: Pairing, methods: Sequence[Method], family: str) -> str:
    """Δ mAP@K of each method against the reference of its ``family`` (A: the student without KD,
    B: full ``brcd``; :mod:`brcd.report.families`) per column: the 95% interval, P(method > reference)
    and the Holm-adjusted p-value; bold when significant after the correction."""
    cols = columns(results)
    rows = []
    for method in methods:
        cells = []
        for bits, paradigm in cols:
            t = column_tests(results, dataset, pairing, bits, paradigm).family(family).get(method.kd)
            if t is None:
                cells.append(MISSING)
                continue
            digits = interval_digits(t)
            delta = f"**{signed(t.delta, digits)}**" if t.significant else signed(t.delta, digits)
            cells.append(f"{delta} [{signed(t.low, digits)}, {signed(t.high, digits)}] P={t.p_improvement:.2f}, "
                         f"adj. p {p_text(t.p_adjusted)}")
        rows.append([method.label, *cells])
    return markdown_table(["method", *(column_header(b, p) for b, p in cols)], rows)


def format_ratio(value: float | None) -> str:
    """A gradient-norm ratio to two significant digits: 0.0013, 0.42, 3.1, 35, 1,200."""
    if value is None:
        return MISSING
    return f"{value:,.0f}" if value >= 100 else f"{value:.2g}"


def lambda_table(results: GridResults, dataset: str, pairing: Pairing) -> str:
    """Per distilled method: its λ grid and, per column, the λ selected on validation (marked when at an
    edge of the grid) and λ·‖∇L_kd‖/‖∇L_hash‖ at the end of training (did the KD term act?)."""
    cols = columns(results)
    rows = []
    for kd in [kd for kd in results.config["kd"] if kd != NO_KD]:
        cell = Cell(dataset, 0, pairing.hash, pairing.teacher, 0, pairing.student, kd)
        cells = []
        for bits, paradigm in cols:
            chosen = replace(cell, bits=bits)
            edge = LAMBDA_EDGE if results.lambda_at_edge(chosen, paradigm) else ""
            ratio = results.kd_grad_ratio(dataset, pairing, kd, bits, paradigm)
            cells.append(f"{format_lambda(results.selected_lambda(chosen, paradigm))}{edge} ({format_ratio(ratio)})")
        grid = ", ".join(map(format_lambda, lambda_grid(results.config, kd)))
        rows.append([f"`{kd}`", grid, *cells])
    return markdown_table(["method", "λ grid", *(column_header(b, p) for b, p in cols)], rows, numeric_from=2)


def lambda_edges(results: GridResults) -> tuple[int, int]:
    """(choices at an edge of their grid, all choices): one per method, column, pairing and dataset."""
    chosen = [results.lambda_at_edge(Cell(d, b, pairing.hash, pairing.teacher, 0, pairing.student, kd), p)
              for d, pairing, b, p in rank_columns(results) for kd in results.config["kd"] if kd != NO_KD]
    return sum(chosen), len(chosen)


def spread_table(results: GridResults, dataset: str, pairing: Pairing) -> str:
    """Per method and column, how much test (and validation) mAP moves over the λ grid:
    max − min over the candidates of the tuning seed. Small = robust to λ, large = fragile."""
    cols = columns(results)
    rows = []
    for kd in [kd for kd in results.config["kd"] if kd != NO_KD]:
        cells = []
        for bits, paradigm in cols:
            runs = results.candidates(dataset, pairing, kd, bits, paradigm)
            test = [metric_value(run, "map@K") for _, run in runs]
            val = [(run.get("training") or {}).get("val_map") for _, run in runs]
            val_text = f" ({max(val) - min(val):.{DIGITS}f})" if None not in val else ""
            cells.append(f"{max(test) - min(test):.{DIGITS}f}{val_text}")
        rows.append([f"`{kd}`", *cells])
    return markdown_table(["method", *(column_header(b, p) for b, p in cols)], rows)


def interval_note(results: GridResults, family: str) -> str:
    """What a Δ table's cells are: the interval, P, and the family its bold is corrected within."""
    return (f"{interval_sentence(results)} P is the share of the interval's distribution above 0, the probability "
            f"that the method beats the reference; adj. p is the p-value of the test the interval makes, "
            f"Holm-adjusted within the column's family {family} ({FAMILIES[family]}, "
            f"{tests_text(family_size(results, family))}): bold when it is below 0.05. Intervals are conditional on "
            "the λ chosen on validation")


def precision_cutoffs(results: GridResults, dataset: str) -> list[str]:
    found = {k for (cell, _), record in results.metrics.items() if cell.dataset == dataset
             for k in record["metrics"].get("precision@k", {})}
    return sorted(found, key=int)


def secondary_table(results: GridResults, dataset: str, pairing: Pairing, paradigm: str) -> str:
    """Tie-aware mAP beside the conventional value, and precision@k (means over seeds)."""
    cutoffs = precision_cutoffs(results, dataset)
    keys = ["map@K", "map@K_tie_aware", "map_all", "map_all_tie_aware", *(f"precision@k/{k}" for k in cutoffs)]
    k = results.topk(dataset)
    headers = ["method", "bits", f"mAP@{k}", f"mAP@{k} tie-aware", "mAP@all", "mAP@all tie-aware",
               *(f"P@{c}" for c in cutoffs)]
    rows = []
    for bits in results.config["bits"]:
        for method in [teacher_row(pairing), *student_methods(results, pairing)]:
            row = [method.label, str(bits)]
            for key in keys:
                values = [_optional_metric(run, key)
                          for run in results.runs(dataset, pairing, method, bits, paradigm)]
                summary = summarize(values)
                row.append(MISSING if summary is None else f"{summary.mean:.{DIGITS}f}")
            rows.append(row)
    return markdown_table(headers, rows)


def _optional_metric(record: Mapping, key: str) -> float | None:
    """Precision cut-offs larger than a database are absent by design: show a dash."""
    if key.startswith("precision@k/") and key.split("/")[1] not in record["metrics"].get("precision@k", {}):
        return None
    return metric_value(record, key)


def config_hash_table(results: GridResults) -> str:
    """cell -> config hash; a student's paradigm files share their model's hash."""
    hashes: dict[Cell, list[str]] = {}
    for (cell, paradigm), record in results.metrics.items():
        value = str(record.get("config_hash"))
        hashes.setdefault(cell, [])
        if value not in hashes[cell]:
            hashes[cell].append(value)
    rows = [[c.dataset, str(c.bits), f"`{c.model}`", str(c.seed), ", ".join(f"`{h}`" for h in hashes[c])]
            for c in hashes]
    return markdown_table(["dataset", "bits", "model", "seed", "config hash"], rows, numeric_from=5)
