"""The ranking section: every student method's average rank over all columns of the report,
Friedman's test, the Nemenyi critical difference (Demšar 2006) and its critical-difference diagram."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from brcd.report.figures import cd_figure
from brcd.report.format import markdown_table
from brcd.report.grid import GridResults, rank_columns, student_row
from brcd.report.significance import CONFIDENCE, summarize

if TYPE_CHECKING:
    import numpy as np


def rank_scores(results: GridResults) -> tuple[list[str], "np.ndarray"]:
    """Student methods and their mean mAP@K (over seeds) in every column: columns x methods."""
    import numpy as np

    methods = list(results.config["kd"])
    scores = [[summarize(results.values(d, pairing, student_row(pairing, kd), b, p, "map@K")).mean
               for kd in methods] for d, pairing, b, p in rank_columns(results)]
    return methods, np.asarray(scores, dtype=float)


def rank_section(results: GridResults, figures_dir: Path, link: str) -> list[str]:
    """Average rank of every student method over all columns, Friedman's test and Demšar's (2006)
    critical-difference diagram."""
    from brcd.stats import average_ranks, friedman_test, nemenyi_critical_difference, nemenyi_groups

    methods, scores = rank_scores(results)
    n_columns = len(scores)
    if len(methods) < 2:
        return []
    alpha = 1 - CONFIDENCE
    ranks = average_ranks(scores)
    cd = nemenyi_critical_difference(len(methods), n_columns, alpha)
    statistic, p = friedman_test(scores)
    order = sorted(range(len(methods)), key=lambda i: (ranks[i], methods[i]))
    sorted_ranks = [float(ranks[i]) for i in order]
    groups = nemenyi_groups(sorted_ranks, cd)
    name = "ranks.png"
    cd_figure(results, [methods[i] for i in order], sorted_ranks, cd, groups, n_columns, figures_dir / name)
    rows = [[f"`{methods[i]}`", f"{ranks[i]:.2f}"] for i in order]
    return ["## Ranking across all columns", "",
            f"Average rank of each student method by mean mAP over the {n_columns} columns (dataset × pairing × "
            f"bits × paradigm; rank 1 = best, ties share the average rank). Friedman's test of equal ranks: "
            f"χ² = {statistic:.2f} with {len(methods) - 1} degrees of freedom, p = {p:.2g}. Two methods differ "
            f"significantly (Nemenyi test, α = {alpha:.2f}; Demšar 2006) when their average ranks differ by more than "
            f"the critical difference CD = {cd:.2f}; with few columns the CD is wide, and the per-column intervals "
            "above are the sharper test.", "",
            markdown_table(["method", "average rank"], rows), "",
            f"![Critical-difference diagram of the average ranks]({link}/{name})", "",
            f"Critical-difference diagram over the {n_columns} columns: each method at its average rank (1 = best, "
            "left); a thick bar joins methods whose average ranks lie within CD of each other, which the Nemenyi "
            f"test cannot separate ({len(groups)} such group{'s' if len(groups) != 1 else ''}). The columns are not "
            "independent: they share the trained teachers and seeds (seed s of every column distils teacher seed "
            "s), and the sym and asym columns of one code length share each student's training runs, so Friedman's "
            "p and the CD overstate the evidence of as many independent data sets.", ""]
