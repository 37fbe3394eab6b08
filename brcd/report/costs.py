"""What the grid cost to run: time per stage and per distillation method, from Snakemake's
benchmark files of the grid's jobs (:func:`brcd.workflow.benchmark_files`).

Also the run time of the header: the span from the first job's start to the last job's
end, and the time jobs were running when the grid was built in separate runs.
"""
from __future__ import annotations

from brcd.report.format import MISSING, format_duration, format_number, markdown_table
from brcd.report.grid import GridResults
from brcd.lambdas import lambda_grid
from brcd.workflow import STUDENT_TRAINING_RULES


def job_count(found: int, expected: int) -> str:
    """A job count for the time tables: "3", or "2 of 3" when some jobs have no benchmark record."""
    return str(found) if found == expected else f"{found} of {expected}"


def stage_time_table(results: GridResults) -> str:
    """Per rule: jobs, total / mean / max wall seconds, CPU seconds and peak memory of its jobs."""
    rows = []
    for rule, (expected, bench) in results.benchmarks.items():
        if not bench:
            rows.append([f"`{rule}`", job_count(0, expected), *([MISSING] * 5)])
            continue
        seconds = [b.seconds for b in bench]
        cpu = [b.cpu_seconds for b in bench if b.cpu_seconds is not None]
        rss = [b.max_rss_mb for b in bench if b.max_rss_mb is not None]
        rows.append([f"`{rule}`", job_count(len(bench), expected), format_number(sum(seconds)),
                     format_number(sum(seconds) / len(seconds)),
                     format_number(max(seconds)), format_number(sum(cpu)) if cpu else MISSING,
                     format_number(max(rss)) if rss else MISSING])
    total = [b.seconds for _, bench in results.benchmarks.values() for b in bench]
    rows.append(["all", str(len(total)), format_number(sum(total)), "", "", "", ""])
    return markdown_table(["rule", "jobs", "total (s)", "mean (s)", "max (s)", "CPU (s)", "peak memory (MB)"], rows)


def _job_intervals(results: GridResults) -> list[tuple[float, float]]:
    """(start, end) of every job with a benchmark record, by start."""
    return sorted((b.ended - b.seconds, b.ended) for _, rows in results.benchmarks.values() for b in rows)


def run_span(results: GridResults) -> float | None:
    """Seconds from the first job's start to the last job's end among the benchmark files."""
    intervals = _job_intervals(results)
    if not intervals:
        return None
    return max(end for _, end in intervals) - intervals[0][0]


def busy_time(results: GridResults) -> float | None:
    """Seconds during which at least one job ran (the union of the jobs' intervals).

    Less than :func:`run_span` by the time between separate runs of a grid
    (a run stopped and resumed later): what one uninterrupted run would have
    taken. Jobs killed by the stop left no record and were redone, so their
    lost minutes are not counted.
    """
    intervals = _job_intervals(results)
    if not intervals:
        return None
    total, (start, end) = 0.0, intervals[0]
    for lo, hi in intervals[1:]:
        if lo > end:
            total, start = total + end - start, lo
        end = max(end, hi)
    return total + end - start


#: a span longer than the busy time by more than this (seconds, or this share of the span) had idle gaps
IDLE_GAP = (120.0, 0.02)


def span_text(results: GridResults) -> str | None:
    """The run time as report text: the span of the jobs, and their busy time when it is shorter."""
    span, busy = run_span(results), busy_time(results)
    if span is None:
        return None
    text = f"**{format_duration(span)}** from the first job's start to the last job's end"
    if span - busy > max(IDLE_GAP[0], IDLE_GAP[1] * span):
        text += (f"; jobs were running during **{format_duration(busy)}** of it (the rest is time between "
                 "separate runs of the grid, e.g. a run stopped and resumed)")
    return text


def stage_time_section(results: GridResults) -> list[str]:
    span = span_text(results)
    if span is None:
        return ["## Time per stage", "",
                "No Snakemake benchmark files (`logs/**/*.bench.tsv`) for this grid's jobs: they are written "
                "when `snakemake` runs the jobs.", ""]
    return ["## Time per stage", "",
            f"From Snakemake's benchmark files of this grid's jobs (`logs/{{rule}}/**/*.bench.tsv`): wall "
            "seconds of each job (jobs run side by side, so totals add up to more than the run took), CPU "
            f"seconds and peak memory. Before the report: {span}.", "",
            stage_time_table(results), "", *training_cost_section(results)]


def training_cost_section(results: GridResults) -> list[str]:
    """Per distillation method: the wall seconds of its student-training jobs and their share."""
    costs = {kd: sum(b.seconds for b in rows) for kd, (_, rows) in results.training_cost.items()}
    total = sum(costs.values())
    if not total:
        return []
    rows = []
    for kd, (expected, bench) in results.training_cost.items():
        sums = ([format_number(costs[kd]), format_number(costs[kd] / len(bench)), f"{100 * costs[kd] / total:.1f}%"]
                if bench else [MISSING] * 3)
        rows.append([f"`{kd}`", str(len(lambda_grid(results.config, kd))), job_count(len(bench), expected), *sums])
    found = sum(len(bench) for _, bench in results.training_cost.values())
    expected = sum(n for n, _ in results.training_cost.values())
    rows.append(["all", "", job_count(found, expected), format_number(total), "", "100%"])
    return ["Student training per distillation method: the wall seconds of each method's "
            f"`{'` and `'.join(STUDENT_TRAINING_RULES)}` jobs (every λ candidate of the tuning seed, the "
            "selected λ of the other seeds) and their share of all student training. Every method has the "
            "same schedule; its share grows with its number of λ candidates, the cost of its loss and how "
            "long it trains before early stopping. Jobs without a benchmark record (\"k of n\") are left out "
            "of the sums.", "",
            markdown_table(["method", "λ candidates", "jobs", "total (s)", "mean (s)", "share"], rows), ""]
