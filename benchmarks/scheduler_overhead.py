"""Snakemake's own CPU while it runs many jobs: the re-evaluation timers of its scheduler.

Snakemake (9.27 here) re-evaluates its job scheduler on a timer whose period is the timespan of
``--max-jobs-per-timespan`` (its default: ``100/1s``), and every scheduling pass that finds jobs
waiting starts one more such timer. A job's end triggers a pass of its own, so after N finished
jobs about N timers fire every timespan, and every pass looks up the inputs of every ready job: the
Snakemake process spends a growing share of a core on re-evaluations. In the study's run it held
183 threads and 15-20 % of a core after 180 jobs. ``workflow/profiles/default`` sets a longer
timespan, and the workflow keeps one timer pending at a time (``brcd.scheduler``, called from
``workflow/rules/common.smk``).

This runs one synthetic grid -- ``--jobs`` independent jobs that each read ``--inputs`` files of
their own and sleep ``--sleep`` seconds -- under Snakemake with ``--cores 2``, once per timespan
(Snakemake's default, then the profile's) and scheduler (``snakemake``: its own timers;
``coalesced``: the grid's Snakefile calls ``brcd.scheduler.coalesce_reevaluations`` as the
workflow does), and prints for each the wall time, Snakemake's own CPU seconds (its process, not
its jobs) and the most threads it held, then every run's ratios to the first. The jobs do no
work, so wall time above jobs x sleep / cores is scheduling and the wait for a last timer at exit;
Snakemake's CPU is taken from the machine's cores, which a real grid's jobs need. Defaults (200
jobs of 1 s, about 2 minutes per run):

    .venv/bin/python benchmarks/scheduler_overhead.py

Times depend on the machine and on what else runs: compare runs on one machine and name it.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "workflow" / "profiles" / "default" / "config.yaml"
#: Snakemake's own default for --max-jobs-per-timespan (snakemake --help)
SNAKEMAKE_DEFAULT = "100/1s"
#: scheduler -> the Snakefile's first lines: Snakemake's own timers, or one pending timer (the workflow's)
SCHEDULERS = {"snakemake": "",
              "coalesced": "from brcd.scheduler import coalesce_reevaluations\ncoalesce_reevaluations()\n"}

#: the grid's Snakefile; {preamble} is empty for Snakemake's own timers
SNAKEFILE = """\
{preamble}
rule all:
    input: expand("out/{{i}}.txt", i=range({jobs}))

rule job:
    input: lambda w: [f"in/{{int(w.i) * {inputs} + k}}.txt" for k in range({inputs})]
    output: "out/{{i}}.txt"
    shell: "sleep {sleep}; touch {{output}}"
"""


def profile_timespan(profile: Path = PROFILE) -> str:
    """The profile's ``max-jobs-per-timespan`` (a named error when it sets none)."""
    value = (yaml.safe_load(profile.read_text()) or {}).get("max-jobs-per-timespan")
    if value is None:
        raise SystemExit(f"{profile} sets no max-jobs-per-timespan; give --timespans")
    return str(value)


def write_grid(folder: Path, jobs: int, inputs: int, sleep: float) -> None:
    (folder / "in").mkdir()
    for i in range(jobs * inputs):
        (folder / "in" / f"{i}.txt").write_text(f"{i}\n")


def write_snakefile(folder: Path, scheduler: str, jobs: int, inputs: int, sleep: float) -> None:
    (folder / "Snakefile").write_text(SNAKEFILE.format(preamble=SCHEDULERS[scheduler], jobs=jobs, inputs=inputs,
                                                       sleep=sleep))


def run_grid(folder: Path, timespan: str, cores: int) -> tuple[float, float, int]:
    """One Snakemake run of the grid in ``folder`` from nothing built: (wall s, its own CPU s, most threads)."""
    for built in ("out", ".snakemake"):
        shutil.rmtree(folder / built, ignore_errors=True)
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "snakemake", "--cores", str(cores), "--quiet", "all",  # no log
                                "--max-jobs-per-timespan", timespan], cwd=folder,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    watched, cpu, threads = psutil.Process(process.pid), 0.0, 0
    while process.poll() is None:  # its own times, sampled until it exits (a child's are not in them)
        try:
            times = watched.cpu_times()
            cpu, threads = times.user + times.system, max(threads, watched.num_threads())
        except psutil.NoSuchProcess:
            break
        time.sleep(0.1)
    wall = time.perf_counter() - start
    if process.wait() != 0:
        raise SystemExit(f"snakemake --max-jobs-per-timespan {timespan} failed:\n{process.stderr.read()}")
    return wall, cpu, threads


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200, help="independent jobs in the grid (default 200)")
    parser.add_argument("--sleep", type=float, default=1.0, help="seconds each job sleeps (default 1)")
    parser.add_argument("--inputs", type=int, default=5, help="input files of each job (default 5)")
    parser.add_argument("--cores", type=int, default=2, help="snakemake --cores (default 2)")
    parser.add_argument("--timespans", nargs="+", default=None,
                        help=f"--max-jobs-per-timespan values to run (default: Snakemake's {SNAKEMAKE_DEFAULT}, "
                        f"then {PROFILE.relative_to(REPO)}'s)")
    parser.add_argument("--schedulers", nargs="+", choices=list(SCHEDULERS), default=list(SCHEDULERS),
                        help="Snakemake's own re-evaluation timers, and/or one pending timer as the workflow keeps "
                        "(brcd.scheduler); each timespan runs with each (default: both)")
    args = parser.parse_args(argv)
    timespans = args.timespans or [SNAKEMAKE_DEFAULT, profile_timespan()]
    version = subprocess.run([sys.executable, "-m", "snakemake", "--version"], capture_output=True, text=True)
    print(f"Snakemake {version.stdout.strip()}; {args.jobs} jobs of {args.sleep:g} s, {args.inputs} inputs each, "
          f"--cores {args.cores} (the jobs' own time: {args.jobs * args.sleep / args.cores:.1f} s)")
    print(f"{'--max-jobs-per-timespan':24s} {'scheduler':>10s} {'wall (s)':>9s} {'Snakemake CPU (s)':>18s} "
          f"{'threads (most)':>15s}")
    results = []
    with tempfile.TemporaryDirectory(prefix="brcd-scheduler-") as tmp:
        write_grid(Path(tmp), args.jobs, args.inputs, args.sleep)
        for timespan in timespans:
            for scheduler in args.schedulers:
                write_snakefile(Path(tmp), scheduler, args.jobs, args.inputs, args.sleep)
                wall, cpu, threads = run_grid(Path(tmp), timespan, args.cores)
                results.append((f"{timespan} {scheduler}", wall, cpu))
                print(f"{timespan:24s} {scheduler:>10s} {wall:9.1f} {cpu:18.2f} {threads:15d}", flush=True)
    (base, base_wall, base_cpu), rest = results[0], results[1:]
    for name, wall, cpu in rest:
        print(f"{name} / {base}: wall {wall / base_wall:.2f}, Snakemake CPU "
              f"{cpu / base_cpu if base_cpu else float('nan'):.2f}")


if __name__ == "__main__":
    main()
