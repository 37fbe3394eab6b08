"""The section of one dataset: per teacher -> student pairing, its tables and figures, then the
encoder timing of the dataset's images.

Per pairing: the main table (laid out like the paper), Δ vs the student without KD,
the ablation table, the λ chosen on validation and its sensitivity, the alignment with
the teacher, tie-aware mAP and precision@k, and the figures.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from brcd.report.figures import latency_figure, map_bits_figure, pr_figure, sensitivity_figure
from brcd.report.format import LAMBDA_EDGE, UNCONVERGED
from brcd.report.grid import GridResults, Pairing, main_methods, student_methods, student_row
from brcd.report.significance import FAMILY_ABLATIONS, FAMILY_BEST, FAMILY_NO_KD
from brcd.report.speed import encoder_section
from brcd.report.tables import delta_table, interval_note, lambda_table, metric_table, secondary_table, spread_table
from brcd.lambdas import NO_KD, tuning_seed

#: what each BRCD ablation leaves out (SPEC §4), for the note under the ablation table
ABLATION_NOTES = {
    "brcd_nocluster": "no cluster terms (α_k = α always, no false-negative removal)",
    "brcd_nomask": "no bit mask (m = 1)",
    "brcd_plain": "neither clusters nor bit mask",
}


def dataset_section(results: GridResults, dataset: str, figures_dir: Path, figures_link: str) -> list[str]:
    pairings = results.pairings()
    many = len(pairings) > 1
    lines = [f"## {dataset}", ""]
    for pairing in pairings:
        # with several pairings, every heading and figure name says which one it shows
        suffix = f", {pairing.label}" if many else ""
        slug = f"_{pairing.slug}" if many else ""
        if not many:
            lines += [f"Teacher → student: {pairing.label}.", ""]
        lines += main_section(results, dataset, pairing, suffix)
        lines += delta_section(results, dataset, pairing, suffix)
        lines += ablation_section(results, dataset, pairing, suffix)
        lines += lambda_section(results, dataset, pairing, suffix, figures_dir, figures_link, slug)
        lines += alignment_section(results, dataset, pairing, suffix)
        lines += secondary_section(results, dataset, pairing, suffix)
        lines += write_figures(results, dataset, pairing, figures_dir, figures_link, slug, suffix)
    return lines + encoder_section(results, dataset)


def main_section(results: GridResults, dataset: str, pairing: Pairing, suffix: str) -> list[str]:
    """mAP@K of the teacher, the student without KD and each KD method (ablations excluded)."""
    return [f"### Main results: mAP@{results.topk(dataset)}{suffix}", "",
            metric_table(results, dataset, pairing, main_methods(results, pairing), "map@K",
                         contenders=student_methods(results, pairing)), "",
            f"{main_bold_note(results)} {UNCONVERGED}: a seed of this cell hit its epoch cap "
            "while still improving. Each method runs with its λ chosen on validation (table "
            "\"λ chosen on validation\" below). The teacher row (paradigm `teacher`) is repeated under "
            "sym and asym of each code length and is never bolded.", ""]


def delta_section(results: GridResults, dataset: str, pairing: Pairing, suffix: str) -> list[str]:
    """Δ mAP@K of each KD method vs the student without KD (none when the grid has no such student)."""
    kd_rows = [student_row(pairing, kd) for kd in results.kd_methods()]
    if NO_KD not in results.config["kd"] or not kd_rows:
        return []
    return [f"### Δ mAP@{results.topk(dataset)} vs the student without KD{suffix}", "",
            delta_table(results, dataset, pairing, kd_rows, FAMILY_NO_KD), "",
            f"Δ = method − no KD. {interval_note(results, FAMILY_NO_KD)} (the family also holds the ablations, "
            "whose Δ vs no KD is in the findings).", ""]


def ablation_section(results: GridResults, dataset: str, pairing: Pairing, suffix: str) -> list[str]:
    """mAP@K of ``brcd`` and its ablations, and each ablation's Δ vs full ``brcd`` (none without ablations)."""
    ablations = results.ablations()
    if not ablations:
        return []
    k = results.topk(dataset)
    methods = [student_row(pairing, kd) for kd in ablations]
    lines = [f"### Ablation: mAP@{k}{suffix}", "",
             metric_table(results, dataset, pairing, methods, "map@K", contenders=student_methods(results, pairing)),
             "", ablation_note(ablations), ""]
    if ablations[0] == "brcd":
        lines += [f"Δ mAP@{k} of each ablation vs full `brcd`:", "",
                  delta_table(results, dataset, pairing, methods[1:], FAMILY_ABLATIONS), "",
                  f"Δ = ablation − `brcd`. {interval_note(results, FAMILY_ABLATIONS)}.", ""]
    return lines


def lambda_section(results: GridResults, dataset: str, pairing: Pairing, suffix: str, figures_dir: Path,
                   link: str, slug: str) -> list[str]:
    """Which λ each method got, how much its choice matters, and the sensitivity figures."""
    methods = [kd for kd in results.config["kd"] if kd != NO_KD]
    if not methods:
        return []
    lines = [f"### λ chosen on validation{suffix}", "",
             f"Every distilled method tried each λ of its own grid (the weight of L_kd; column \"λ grid\", on "
             "the method's scale: centred on its published weight, or on ‖∇L_hash‖/‖∇L_kd‖ at initialisation, "
             f"`benchmarks/kd_scale.py`) with seed {tuning_seed(results.config)}; per column, the λ with the best "
             "validation mAP of the head selected for that paradigm was kept, and the other seeds trained only "
             "it. The tables above use it. Query labels never reach the choice.", "",
             lambda_table(results, dataset, pairing), "",
             f"{LAMBDA_EDGE}: the chosen λ is at an edge of its grid (the best λ may lie beyond it). In "
             "parentheses: λ·‖∇L_kd‖ / ‖∇L_hash‖, the KD term's gradient norm relative to L_hash's (with "
             "respect to the student head, on one fixed training batch at the end of training; geometric "
             "mean over seeds): well below 1, the KD term barely acted; well above 1, it dominated.", "",
             f"Spread of test mAP@{results.topk(dataset)} over each method's λ grid (max − min; validation in "
             "parentheses), seed " f"{tuning_seed(results.config)}: small = robust to λ, large = fragile.", "",
             spread_table(results, dataset, pairing), ""]
    for bits in results.config["bits"]:
        name = f"lambda_{dataset}_{bits}{slug}.png"
        sensitivity_figure(results, dataset, pairing, bits, figures_dir / name)
        lines += [f"![λ sensitivity, {dataset}, {bits} bits]({link}/{name})", ""]
    return lines


def alignment_section(results: GridResults, dataset: str, pairing: Pairing, suffix: str) -> list[str]:
    """How close each student's codes are to the teacher's: ISD and NRA@K."""
    k = results.topk(dataset)
    methods = student_methods(results, pairing)
    return [f"### Alignment with the teacher{suffix}", "",
            "ISD (mean normalised Hamming distance between teacher and student codes of the same query "
            "image; lower = closer):", "",
            metric_table(results, dataset, pairing, methods, "isd", higher_is_better=False), "",
            f"NRA@{k} (overlap of the teacher's and the student's top-{k} database neighbours; "
            "higher = closer):", "",
            metric_table(results, dataset, pairing, methods, "nra@K"), "",
            "Bold: the best per column and every method not significantly worse (paired Student-t test over "
            "seeds, Holm-corrected over the column's comparisons with the best: these metrics have no per-query "
            "values; no bold with one seed).", ""]


def secondary_section(results: GridResults, dataset: str, pairing: Pairing, suffix: str) -> list[str]:
    """Tie-aware mAP and precision@k, one table per paradigm."""
    lines = [f"### Tie-aware mAP and precision@k{suffix}", "",
             "Means over seeds. Tie-aware values average over all orderings of items at equal Hamming "
             "distance; the conventional ones break ties by database order.", ""]
    for paradigm in results.config["paradigms"]:
        lines += [f"**{paradigm}**", "", secondary_table(results, dataset, pairing, paradigm), ""]
    return lines


#: how "not significantly worse than the best" is decided, for the notes under the tables
BEST_FAMILY_NOTE = ("after Holm's correction over the column's comparisons with the best, family "
                    f"{FAMILY_BEST}")


def main_bold_note(results: GridResults) -> str:
    if not results.ablations():
        return ("Bold: the best student per column and every student not significantly worse than it "
                f"(tied with the best, {BEST_FAMILY_NOTE}).")
    return ("Bold: the best student per column, the ablation variants below included, and every student not "
            f"significantly worse than it (tied with the best, {BEST_FAMILY_NOTE}: the group of the findings, "
            "shown across this table and the ablation table; a column whose best is an ablation variant may have "
            "no bold here).")


def ablation_note(ablations: Sequence[str]) -> str:
    notes = [f"`{kd}`: {ABLATION_NOTES[kd]}" for kd in ablations if kd in ABLATION_NOTES]
    return ("; ".join(notes) + ("." if notes else "")
            + " Bold: tied with the column's best student, the same group as in the main table.")


def write_figures(results: GridResults, dataset: str, pairing: Pairing, figures_dir: Path, link: str,
                  slug: str, suffix: str) -> list[str]:
    lines = [f"### Figures{suffix}", ""]
    for bits in results.config["bits"]:
        name = f"pr_{dataset}_{bits}{slug}.png"
        pr_figure(results, dataset, pairing, bits, figures_dir / name)
        lines += [f"![Precision–recall, {dataset}, {bits} bits]({link}/{name})", ""]
    name = f"map_vs_bits_{dataset}{slug}.png"
    map_bits_figure(results, dataset, pairing, figures_dir / name)
    lines += [f"![mAP vs bits, {dataset}]({link}/{name})", ""]
    name = f"latency_vs_map_{dataset}{slug}.png"
    if latency_figure(results, dataset, pairing, figures_dir / name):
        lines += [f"![Encoder latency vs mAP, {dataset}]({link}/{name})", ""]
    else:
        lines += ["(No latency-vs-mAP figure: batch-1 latency was not measured; add 1 to `timing.batch_sizes`.)", ""]
    return lines
