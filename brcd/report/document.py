"""``brcd report``: the Markdown report of one grid (SPEC §7), with its uncertainty.

Reads the metrics file of every cell of the config's grid, the per-query values
beside each (``metrics/{paradigm}.queries.parquet``), the λ selections, the timing
files and Snakemake's benchmark files (all listed by
:func:`brcd.workflow.report_inputs`), and writes ``reports/{name}.md`` with
its figures as PNG files in ``reports/{name}/`` (linked by relative paths)
the tidy table it is rendered from, ``reports/{name}.parquet`` (one row
per cell × paradigm × seed: every parameter, metric, training record and
config hash), and its findings as data, ``reports/{name}.findings.parquet``
(one row per statement: :mod:`brcd.report.statements`).

Statistics come from :mod:`brcd.stats`. Per dataset and (hash, teacher,
student) pairing:

- main table, laid out like the paper: rows teacher, student without KD, each
  KD method of the config (ablations excluded); columns bits x paradigm;
  cells mAP@K as mean ± half-width of the 95% Student-t interval over seeds;
  bold: the best student of a column and every student not significantly
  worse than it (a seed-level t interval widened by a query-bootstrap
  term, Holm-corrected over the column's comparisons with the best); †
  marks a cell with a seed that hit its epoch cap while still improving;
- Δ vs the student without KD, per KD method and column, with its 95%
  interval, P(method > no KD) and the Holm-adjusted p-value;
- ablation table: ``brcd`` and its ``brcd_*`` variants, same layout, and
  each variant's Δ vs full ``brcd``;
- alignment with the teacher: ISD (lower = closer) and NRA@K (higher = closer);
- tie-aware mAP and precision@k (means over seeds), one table per paradigm;
- encoder timing: batch-1 latency, throughput, speed-up of the student;
- figures: precision-recall over Hamming radius, mAP vs bits, encoder
  latency vs mAP.

Before them, after the header, the paper's claims checked one by one
(:mod:`brcd.report.claims`) and the findings, statement by statement.
Then the average rank of every student method over all columns with
Friedman's test and the Nemenyi critical difference (and its diagram), the search latency per bits
and, collapsed, every cell's config hash. The header says what the seeds
vary, what the intervals cover (with one seed: query sampling only) and how
many runs did not converge.

The output is a function of the input files only (no date of its own, sorted
keys, seeded bootstraps), so the same results give the same bytes. The header's
account of the Snakemake runs reads their record (``results/.runs.jsonl``) and,
for a run that recorded no end, the modification times of its jobs' logs
(:mod:`brcd.runs`); only whether that run is the one writing the report comes
from the environment (``$BRCD_RUN``). Files are written atomically.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Mapping, Sequence

from brcd.layout import figures_dir_for, findings_path_for, table_path_for
from brcd.report.claims import claims_section
from brcd.report.costs import stage_time_section
from brcd.report.dataset import dataset_section
from brcd.report.findings import findings_section, findings_statements
from brcd.report.grid import GridResults
from brcd.report.header import header
from brcd.report.ranks import rank_section
from brcd.report.results import load_results
from brcd.report.speed import search_section
from brcd.report.statements import Statement, write_statements
from brcd.report.tables import config_hash_table
from brcd.report.tidy import write_tidy_table

log = logging.getLogger("brcd.report")  # the command's logger, as its log lines have always named it


def build_report(results: GridResults, out: str | os.PathLike,
                 statements: Sequence[Sequence[Statement]] | None = None) -> str:
    """Write the figures beside ``out`` and return the Markdown text (``statements``: the
    findings, :func:`findings_statements`, computed here when not given)."""
    if statements is None:
        statements = findings_statements(results)
    figures_dir = figures_dir_for(out)
    figures_dir.mkdir(parents=True, exist_ok=True)
    link = figures_dir.name  # relative to the Markdown file
    lines = header(results) + claims_section(results) + findings_section(results, statements)
    for dataset in results.config["datasets"]:
        lines += dataset_section(results, dataset, figures_dir, link)
    lines += rank_section(results, figures_dir, link)
    lines += search_section(results) + stage_time_section(results) + config_hash_section(results)
    return "\n".join(lines)


def config_hash_section(results: GridResults) -> list[str]:
    """Every cell's config hash, collapsed: they tie the report to the config it came from."""
    return ["## Config hashes", "",
            "<details><summary>Config hash of every cell (the hash of every config value the cell's result "
            "depends on)</summary>", "",
            config_hash_table(results), "", "</details>", ""]


def write_report(config: Mapping, out: str | os.PathLike, results_dir: str | os.PathLike = ".",
                 config_path: str | None = None) -> Path:
    """Write the report of ``config``'s grid to ``out`` from the results under ``results_dir``: the
    Markdown, its figures, the tidy table and the findings table beside it."""
    from brcd.io import atomic_path

    results = load_results(config, results_dir, config_path)
    statements = findings_statements(results)
    text = build_report(results, out, statements)
    write_tidy_table(results, table_path_for(out))
    write_statements(findings_path_for(out), [s for column in statements for s in column], config["name"])
    with atomic_path(out) as tmp:
        tmp.write_text(text)
    return Path(out)


def configure_parser(parser) -> None:
    parser.add_argument("--config", required=True, help="grid config YAML (e.g. results/.config/{name}.yaml)")
    parser.add_argument("--out", required=True, help="reports/{name}.md; figures go to reports/{name}/")
    parser.add_argument("--results-dir", default=".", help="folder holding results/ (default: current folder)")


def run(args) -> None:
    from brcd.config import load_config

    config = load_config(args.config)
    path = write_report(config, args.out, args.results_dir, config_path=args.config)
    log.info("-> %s (figures in %s)", path, figures_dir_for(path))
