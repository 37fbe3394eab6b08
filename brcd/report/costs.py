"""What the grid cost to run: time per stage and per distillation method, from Snakemake's
benchmark files of the grid's jobs (:func:`brcd.workflow.benchmark_files`).

Also the run time of the header: the span from the first job's start to the last job's
end, the time jobs were running when the grid was built in separate runs, the sum of the
jobs' wall times, and the span of each Snakemake run that built the grid (:mod:`brcd.runs`).
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Sequence

from brcd.layout import RUNS
from brcd.report.format import MISSING, format_duration, format_number, markdown_table
from brcd.report.grid import GridResults
from brcd.lambdas import lambda_grid
from brcd.runs import COMPLETED, FAILED, INTERRUPTED, RUNNING, UNRECORDED, Run
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


def job_time(results: GridResults) -> float | None:
    """The sum of every job's wall seconds (jobs run side by side: more than the wall time they took)."""
    seconds = [b.seconds for _, rows in results.benchmarks.values() for b in rows]
    return sum(seconds) if seconds else None


def union_length(intervals: Sequence[tuple[float, float]]) -> float:
    """Seconds covered by at least one of the (start, end) intervals."""
    total, current = 0.0, None
    for lo, hi in sorted(intervals):
        if current is None or lo > current[1]:
            total += 0 if current is None else current[1] - current[0]
            current = [lo, hi]
        else:
            current[1] = max(current[1], hi)
    return total + (0 if current is None else current[1] - current[0])


def busy_time(results: GridResults) -> float | None:
    """Seconds during which at least one job ran (the union of the jobs' intervals).

    Less than :func:`run_span` by the time between separate runs of a grid
    (a run stopped and resumed later): what one uninterrupted run would have
    taken. Jobs killed by the stop left no record and were redone, so their
    lost minutes are not counted.
    """
    intervals = _job_intervals(results)
    return union_length(intervals) if intervals else None


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


#: how a run ended, as the header says it (brcd.runs)
RUN_ENDINGS = {
    COMPLETED: "completed",
    FAILED: "failed (a job failed: its log says why)",
    INTERRUPTED: "interrupted (Ctrl-C or SIGTERM: Snakemake stopped its running jobs)",
    UNRECORDED: "**no end recorded** (killed, or its machine stopped; end inferred: the last log or benchmark "
                "file its jobs wrote)",
    RUNNING: "running when it wrote this report (end inferred: the last log or benchmark file its jobs wrote "
             "before the report)",
}


def _utc(moment: float, date: bool = True) -> str:
    return datetime.fromtimestamp(moment, timezone.utc).strftime("%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S")


def run_text(number: int, run: Run, results: GridResults) -> str:
    """One run of the grid: its span in UTC and duration, how it ended, the jobs that finished in it
    (benchmark records that end within its span) and the machine running Snakemake."""
    jobs = [b.seconds for _, rows in results.benchmarks.values() for b in rows if run.start <= b.ended <= run.end]
    same_day = _utc(run.start)[:10] == _utc(run.end)[:10]
    cores = f"`--cores {run.cores}`" if run.cores is not None else "no `--cores` (jobs sent to a cluster)"
    return (f"run {number}: {_utc(run.start)}–{_utc(run.end, not same_day)} UTC (**{format_duration(run.seconds)}**), "
            f"{RUN_ENDINGS.get(run.status, run.status)}; {len(jobs)} job{'' if len(jobs) == 1 else 's'} finished "
            f"({format_duration(sum(jobs))} of job time); {run.cpu_model or 'CPU model not known'}, "
            f"{run.cpu_count or '?'} CPUs, {cores}")


def runs_lines(results: GridResults) -> list[str]:
    """The header's account of the grid's Snakemake runs (:data:`brcd.layout.RUNS`): their wall time in
    all (the union of their spans), then one sub-item a run; nothing without a record of them."""
    runs = results.snakemake_runs
    if not runs:
        return []
    wall = union_length([(run.start, run.end) for run in runs])
    return [f"**{len(runs)} Snakemake run{'s' if len(runs) > 1 else ''}** (`{RUNS}`): **{format_duration(wall)}** "
            "of wall time in all, each from Snakemake reading the workflow to the run's end:",
            *(f"  - {run_text(i, run, results)}" for i, run in enumerate(runs, 1))]


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
