"""The record of a grid's Snakemake runs (brcd.runs, results/.runs.jsonl): what the workflow's handlers
write, what a dry run does not, and how the end of a run that recorded none is inferred. The report's
part is in tests/test_report.py, a run killed and resumed in tests/test_resume.py."""
from __future__ import annotations

import inspect
import json
import os

import pytest

from brcd.config import REPO_ROOT
from brcd.runs import (COMPLETED, FAILED, INTERRUPT_MESSAGES, INTERRUPTED, RUN_ENV, RUNNING, UNRECORDED, Run,
                       activity_times, end_run, grid_runs, read_runs, start_run, with_ends)
from tests.conftest import copy_tiny_grid, snakemake_here

TEST_CONFIG = REPO_ROOT / "config" / "test.yaml"
#: a cell of the tiny grid whose metrics file, deleted, gives a run one job to do (rule evaluate)
TEST_CELL = "results/synthetic/16/student/cibhash/tteacher/tstudent/brcd/lambda1/seed0/metrics/asym.json"


def test_start_and_end_records_are_appended_and_read_back(tmp_path):
    path = tmp_path / "results" / ".runs.jsonl"
    environ = {}
    first = start_run(2, None, 100.0, path, environ)
    assert environ == {RUN_ENV: first}
    record = json.loads(path.read_text())
    assert record["event"] == "start" and record["time"] == 100.0 and record["cores"] == 2
    assert record["cpu_count"] == os.cpu_count() and record["cpu_model"]
    end_run(first, True, None, path, now=160.0)
    second = start_run(None, None, 200.0, path, environ)
    end_run(second, False, None, path, now=230.0)
    third = start_run(4, None, 300.0, path, environ)
    end_run(None, True, None, path)  # a run that never started (its claim failed) records nothing
    with path.open("a") as handle:
        handle.write('{"event": "end", "run": "')  # a write cut short by a power cut: skipped
    runs = read_runs(path)
    assert [(r.id, r.start, r.end, r.status, r.cores) for r in runs] == [
        (first, 100.0, 160.0, COMPLETED, 2), (second, 200.0, 230.0, FAILED, None), (third, 300.0, None, UNRECORDED, 4)]
    assert runs[0].seconds == 60.0 and runs[2].seconds is None
    assert read_runs(tmp_path / "none.jsonl") == []


def test_a_grid_on_a_hard_linked_copy_records_its_runs_in_its_own_file(tmp_path):
    """`cp -al` of a results folder (to reuse its banks and teachers) shares the record's file: the
    copy's runs must not land in the original's record."""
    original, copy = tmp_path / "a" / ".runs.jsonl", tmp_path / "b" / ".runs.jsonl"
    first = start_run(2, None, 100.0, original, {})
    end_run(first, True, None, original, now=160.0)
    copy.parent.mkdir()
    os.link(original, copy)
    before = original.read_bytes()
    second = start_run(2, None, 200.0, copy, {})
    assert original.read_bytes() == before
    assert [run.id for run in read_runs(copy)] == [first, second]
    assert copy.stat().st_nlink == 1 and not list(copy.parent.glob("*.tmp"))


def test_a_run_a_user_stopped_is_interrupted(tmp_path):
    """Snakemake's log of the run says whether a user stopped it (Ctrl-C, SIGTERM) or a job failed."""
    from snakemake.scheduling import job_scheduler

    source = inspect.getsource(job_scheduler)
    assert all(message in source for message in INTERRUPT_MESSAGES), "Snakemake's messages changed: brcd.runs"
    path = tmp_path / ".runs.jsonl"
    said = (("Error in rule evaluate:\n", FAILED), (f"...\n{INTERRUPT_MESSAGES[0]}, this...\n", INTERRUPTED),
            (f"{INTERRUPT_MESSAGES[1]} (scheduler).\n", INTERRUPTED))
    for text, status in said:
        log = tmp_path / "snakemake.log"
        log.write_text("Building DAG of jobs...\n" + text)
        run = start_run(2, [str(log)], path=path, environ={})
        end_run(run, False, [str(log)], path)
        assert read_runs(path)[-1].status == status


def test_an_end_not_recorded_is_the_last_file_written_before_the_next_run(tmp_path):
    runs = [Run("a", 100.0), Run("b", 200.0, 260.0, COMPLETED), Run("c", 300.0), Run("d", 500.0)]
    ended = with_ends(runs, tmp_path, times=[90.0, 150.0, 180.0, 250.0, 320.0, 350.0, 499.0, 510.0])
    assert [(r.end, r.end_inferred) for r in ended] == [(180.0, True), (260.0, False), (499.0, True), (510.0, True)]
    assert with_ends([Run("e", 600.0)], tmp_path, times=[10.0])[0].end == 600.0  # wrote nothing: no span


def test_activity_is_what_the_jobs_wrote_under_logs_but_the_report(tmp_path):
    for name, moment in (("logs/train_teacher/x.log", 100), ("logs/split/y.bench.tsv", 200),
                         ("logs/report/test.log", 900), ("results/z.json", 800)):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
        os.utime(tmp_path / name, (moment, moment))
    assert sorted(activity_times(tmp_path)) == [100, 200]
    # and the run's own Snakemake log, whose last line is the last job it started or saw finish
    log = tmp_path / ".snakemake/log/run.snakemake.log"
    log.parent.mkdir(parents=True)
    log.write_text("")
    os.utime(log, (300, 300))
    runs = with_ends([Run("a", 50.0, snakemake_log=".snakemake/log/run.snakemake.log")], tmp_path)
    assert runs[0].end == 300.0


def test_the_run_reading_the_records_is_running(tmp_path, monkeypatch):
    path = tmp_path / "results" / ".runs.jsonl"
    killed = start_run(2, None, 100.0, path, {})
    current = start_run(2, None, 200.0, path, {})
    monkeypatch.setenv(RUN_ENV, current)
    assert [run.status for run in grid_runs(tmp_path)] == [UNRECORDED, RUNNING]
    assert [run.id for run in grid_runs(tmp_path, current="")] == [killed, current]


@pytest.fixture
def grid(built_tiny_grid, tmp_path):
    return copy_tiny_grid(built_tiny_grid, tmp_path / "grid")


def test_a_run_records_its_span_and_a_dry_run_nothing(grid):
    """In this process (tests.conftest.snakemake_here): a dry run, and a run with nothing to do, add no record;
    a run with a job adds its start and end."""
    runs_file = grid / "results/.runs.jsonl"
    before = runs_file.read_text()
    assert len(read_runs(runs_file)) == 1  # the build's one run (the `make demo` recipe)
    (grid / TEST_CELL).unlink()
    for dry in (("-n",), ("--dry-run", "--cores", "2")):
        result = snakemake_here(grid, *dry, "--configfile", str(TEST_CONFIG))
        assert result.returncode == 0 and "evaluate" in result.stdout + result.stderr
    assert runs_file.read_text() == before
    result = snakemake_here(grid, "--cores", "2", "--configfile", str(TEST_CONFIG))
    assert result.returncode == 0, result.stderr
    runs = read_runs(runs_file)
    assert len(runs) == 2 and runs[1].status == COMPLETED and runs[1].cores == 2
    assert runs[1].start < runs[1].end and (grid / TEST_CELL).stat().st_mtime <= runs[1].end
    assert runs[1].snakemake_log.startswith(".snakemake/log/") and (grid / runs[1].snakemake_log).is_file()
    after = runs_file.read_text()
    assert snakemake_here(grid, "--cores", "2", "--configfile", str(TEST_CONFIG)).returncode == 0  # nothing to do
    assert runs_file.read_text() == after
    assert RUN_ENV not in os.environ  # the in-process run's environment is restored
