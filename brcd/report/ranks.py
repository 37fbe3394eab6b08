"""The ranking section: every student method's average rank over all columns of the report,
with the Nemenyi critical difference (Demšar 2006) and its figure."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from brcd.report.figures import rank_figure
from brcd.report.format import markdown_table
from brcd.report.grid import GridResults, rank_columns, student_row
from brcd.report.significance import summarize

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
    """Average rank of every student method over all columns, with Demšar's (2006) critical difference."""
    from brcd.stats import average_ranks, nemenyi_critical_difference

    methods, scores = rank_scores(results)
    n_columns = len(scores)
    if len(methods) < 2:
        return []
    ranks = average_ranks(scores)
    cd = nemenyi_critical_difference(len(methods), n_columns)
    order = sorted(range(len(methods)), key=lambda i: (ranks[i], methods[i]))
    name = "ranks.png"
    rank_figure(results, [methods[i] for i in order], [float(ranks[i]) for i in order], cd, figures_dir / name)
    rows = [[f"`{methods[i]}`", f"{ranks[i]:.2f}"] for i in order]
    return ["## Ranking across all columns", "",
            f"Average rank of each student method by mean mAP over the {n_columns} columns (dataset × pairing × "
            f"bits × paradigm; rank 1 = best, ties share the average rank). Two methods differ significantly "
            f"(Nemenyi test, α = 0.05; Demšar 2006) when their average ranks differ by more than the critical "
            f"difference CD = {cd:.2f}; with few columns the CD is wide, and the per-column intervals above are "
            "the sharper test.", "",
            markdown_table(["method", "average rank"], rows), "",
            f"![Average ranks with critical difference]({link}/{name})", ""]
