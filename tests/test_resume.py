"""A run killed mid-way resumes where it stopped, with the commands docs/workflow.md shows.

"Long runs: background and resume": the grid is started in the background, killed hard (SIGKILL to
Snakemake's process group, its jobs included, as when a machine's session ends) while a job runs,
then resumed with the documented commands, each run as written (tests/test_readme.py's
SUBSTITUTIONS: the tiny grid for the study). The resumed run must complete the grid without running
again any job that had finished, and results/.runs.jsonl must hold both runs: the killed one without
an end (the report infers it) and the resumed one, completed.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

from tests.conftest import copy_tiny_grid, snakemake_here
from tests.test_readme import BACKGROUND_RUN, PROGRESS, UNLOCK, _environment, run, substitute

#: what the killed run has to do: the student half of the tiny grid (its teacher side is built)
STUDENT_HALF = ("results/synthetic/16/student", "reports")
#: the rules of the grid's teacher side, built before the test: none of their jobs may run
TEACHER_SIDE = {"split", "features", "train_teacher", "encode_teacher", "evaluate_teacher", "cluster", "time_encoder",
                "time_search"}
#: seconds a run may take here (the tiny grid's student half takes under a minute on 2 idle cores)
RUN_TIMEOUT = 480


def start_in_background(workdir: Path, command: str) -> int:
    """Run a documented background command as written, in a session of its own; returns its process
    group (what a hard stop kills: Snakemake and its jobs, which it starts in its own group)."""
    shell = subprocess.Popen(["bash", "-c", substitute(command)], cwd=workdir, env=_environment(),
                             start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert shell.wait(timeout=60) == 0  # `nohup ... &` returns at once
    return shell.pid


def group_processes(group: int) -> list[str]:
    """The command lines of the live (not zombie) processes of a process group."""
    listing = subprocess.run(["ps", "-e", "-o", "pgid=,stat=,args="], capture_output=True, text=True, check=True)
    rows = [line.split(None, 2) for line in listing.stdout.splitlines()]
    return [row[2] if len(row) == 3 else "" for row in rows if int(row[0]) == group and not row[1].startswith("Z")]


def benchmark_times(workdir: Path) -> dict[str, int]:
    return {str(path.relative_to(workdir)): path.stat().st_mtime_ns for path in (workdir / "logs").rglob("*.bench.tsv")}


def wait_for(condition, what: str, timeout: float = RUN_TIMEOUT, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    tail = log.read_text()[-4000:] if log is not None and log.is_file() else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}")


def test_a_killed_run_resumes_where_it_stopped(built_tiny_grid, tmp_path):
    from brcd.runs import COMPLETED, UNRECORDED, grid_runs, read_runs

    workdir = copy_tiny_grid(built_tiny_grid, tmp_path / "grid")
    for path in STUDENT_HALF:
        shutil.rmtree(workdir / path)
    (workdir / "results/.runs.jsonl").unlink()  # the build's own run: this test counts its two
    built = benchmark_times(workdir)
    log = workdir / "study.log"

    # 1. start in the background; kill the whole process group once a job has finished (more than a
    #    second ago: Snakemake has recorded it) while another job runs
    started = time.time()
    group = start_in_background(workdir, BACKGROUND_RUN)

    def finished_and_running():
        done = {path for path, mtime in benchmark_times(workdir).items()
                if built.get(path) != mtime and mtime < (time.time() - 1.5) * 1e9}
        running = any(" -m brcd " in args for args in group_processes(group))
        return done if done and running else None

    wait_for(finished_and_running, "a finished job and a running one", log=log)
    killed = time.time()
    os.killpg(group, signal.SIGKILL)
    wait_for(lambda: not group_processes(group), "the killed processes to go", timeout=30)
    finished = {path: mtime for path, mtime in benchmark_times(workdir).items()
                if built.get(path) != mtime and mtime < (killed - 1) * 1e9}
    assert finished and "report" not in " ".join(finished)
    assert not (workdir / "reports/test.md").exists()
    shutil.copy(log, tmp_path / "killed.log")

    # the documented way to see how far it got
    assert re.fullmatch(r"\d+ of \d+ steps \(\d+%\) done\n", run(workdir, substitute(PROGRESS)))

    # 2. the stale lock stops the same command (in this process: a run that cannot lock records nothing) ...
    again = snakemake_here(workdir, "--cores", "2", "--rerun-incomplete", "--configfile",
                           str(workdir / "config/test.yaml"))
    assert again.returncode != 0 and "Directory cannot be locked" in again.stdout + again.stderr
    # ... until --unlock removes it; then the same background command resumes the grid
    run(workdir, substitute(UNLOCK))
    locks = workdir / ".snakemake/locks"
    assert not locks.exists() or not any(locks.iterdir())
    group = start_in_background(workdir, BACKGROUND_RUN)

    def second_run_ended():
        runs = read_runs(workdir / "results/.runs.jsonl")
        return runs if len(runs) == 2 and runs[1].end is not None else None

    runs = wait_for(second_run_ended, "the resumed run's end", log=log)
    wait_for(lambda: not group_processes(group), "the resumed run's processes to go", timeout=60)
    assert runs[1].status == COMPLETED, log.read_text()[-4000:]
    assert "steps (100%) done" in log.read_text()

    # 3. the grid is complete, no job that had finished ran again, and the teacher side never ran
    assert "| `brcd`" in (workdir / "reports/test.md").read_text()
    now = benchmark_times(workdir)
    assert {path: now[path] for path in finished} == finished
    teacher_side = {path: mtime for path, mtime in built.items() if path.split("/")[1] in TEACHER_SIDE}
    assert len(teacher_side) > 5 and {path: now[path] for path in teacher_side} == teacher_side

    # 4. two runs recorded: the killed one without an end, inferred from what its jobs wrote
    assert [run_.status for run_ in runs] == [UNRECORDED, COMPLETED]
    assert started - 30 < runs[0].start < killed < runs[1].start
    killed_run = grid_runs(workdir, current="")[0]
    assert killed_run.end_inferred and max(finished.values()) / 1e9 <= killed_run.end <= killed + 1
    header = (workdir / "reports/test.md").read_text().split("\n## ")[0]
    assert "**2 Snakemake runs**" in header and "**no end recorded**" in header, header
    assert "running when it wrote this report" in header, header  # the resumed run wrote the report
