"""The Snakemake runs that built a grid: when each started and ended, how it ended, on what machine.

A long grid (the study: hours on 2 cores) is often built in several runs: started in the
background, interrupted (Ctrl-C, a kill, the end of a machine's session) and resumed with the
same command (docs/workflow.md, "Long runs: background and resume"). Every run that has jobs
to do appends to :data:`RUNS` (``results/.runs.jsonl``, one JSON object a line) from the
workflow's handlers (``workflow/rules/common.smk``):

- ``onstart``, before its first job: a ``start`` record (:func:`start_run`) with the run's id,
  the time, the host's CPU model and core count, and the cores Snakemake was given;
- ``onsuccess`` / ``onerror``, when Snakemake gets there: an ``end`` record (:func:`end_run`):
  ``completed``, ``failed`` (a job failed), or ``interrupted`` (Ctrl-C or SIGTERM: Snakemake
  stopped the running jobs and said so in its log).

A dry run, or a run with nothing to do, records nothing (Snakemake calls no handler). A run
killed with SIGKILL, or whose machine went away, writes no end: :func:`with_ends` then takes
as its end the last modification time of what its jobs wrote (their logs and benchmark files
under ``logs/``, and Snakemake's own log of the run) after its start and before the next run's
start, and says the end was inferred. Records are appended with one ``write`` to a file opened
for appending, so concurrent writers cannot interleave a line and an interrupted write leaves
at most one torn last line, which reading skips.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Mapping, MutableMapping, Sequence

from brcd.layout import RUNS
from brcd.runtime import cpu_model, usable_cpus

#: the environment variable that tells a run's jobs its id (the report says which run wrote it)
RUN_ENV = "BRCD_RUN"

#: how a run ended: recorded by its handlers; or no end recorded (killed, its machine gone); or no end
#: yet, for the run whose job is reading the records (:data:`RUN_ENV`: the report of a run in progress)
COMPLETED, FAILED, INTERRUPTED, UNRECORDED, RUNNING = "completed", "failed", "interrupted", "unrecorded", "running"

#: what Snakemake's log says when a user stops a run (job_scheduler.py): Ctrl-C, then SIGTERM
INTERRUPT_MESSAGES = ("Terminating processes on user request",
                      "Will exit after finishing currently running jobs")

#: the folder whose files a run's jobs write (logs and Snakemake benchmark files), and the part of it
#: left out when inferring a run's end: the report's own log, written while the report is drawn
ACTIVITY_DIR = "logs"
ACTIVITY_EXCLUDED = ("logs/report",)


# --------------------------------------------------------------------------- writing (the workflow's handlers)


def host_info() -> dict:
    """The machine running Snakemake: its name, CPU model, CPU count and the CPUs this process may use."""
    return {"host": socket.gethostname(), "cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
            "cpus_usable": usable_cpus()}


def snakemake_cores(workflow) -> int | None:
    """``--cores`` of the running Snakemake (None where it has none, e.g. jobs submitted to a cluster)."""
    try:
        cores = workflow.cores
    except Exception:  # Snakemake raises a WorkflowError when --cores is not set
        return None
    return int(cores) if isinstance(cores, int) else None


def append_record(record: Mapping, path: str | os.PathLike = RUNS) -> None:
    """Append ``record`` as one line, with one write to a file opened for appending (and synced)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _unshare(path)
    line = (json.dumps(dict(record), sort_keys=True) + "\n").encode()
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, line)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _unshare(path: Path) -> None:
    """Give ``path`` its own copy when it is hard-linked elsewhere: a grid built on a hard-linked copy
    of another's ``results/`` (``cp -al``, to reuse its banks and teachers) would otherwise append its
    runs to the other grid's record too. The copy keeps the records it had: the runs that built the
    files it reuses, which its report lists as this grid's earlier runs."""
    if path.exists() and path.stat().st_nlink > 1:
        copy = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        shutil.copyfile(path, copy)
        os.replace(copy, path)


def _log_path(snakemake_log) -> str | None:
    """The Snakemake log file of a run (the handlers get a path, or from Snakemake 9 a list of them),
    relative to the working directory when it lies inside it."""
    if isinstance(snakemake_log, (list, tuple)):
        snakemake_log = snakemake_log[0] if snakemake_log else None
    if not snakemake_log:
        return None
    path = os.path.abspath(snakemake_log)
    inside = os.path.commonpath([path, os.getcwd()]) == os.getcwd()
    return os.path.relpath(path) if inside else path


def start_run(cores: int | None, snakemake_log=None, started: float | None = None, path: str | os.PathLike = RUNS,
              environ: MutableMapping[str, str] | None = None) -> str:
    """Record the start of a run (the ``onstart`` handler, before the first job) and return its id, also
    put in :data:`RUN_ENV` for its jobs. ``started``: when Snakemake began reading the workflow (so the
    span includes planning the jobs); default now."""
    run = uuid.uuid4().hex[:12]
    append_record({"event": "start", "run": run, "time": time.time() if started is None else started, "cores": cores,
                   "pid": os.getpid(), "snakemake_log": _log_path(snakemake_log), **host_info()}, path)
    (os.environ if environ is None else environ)[RUN_ENV] = run
    return run


def interrupted(snakemake_log) -> bool:
    """Whether Snakemake's log of a run says a user stopped it (:data:`INTERRUPT_MESSAGES`)."""
    log = _log_path(snakemake_log)
    if log is None:
        return False
    try:
        with open(log, "rb") as handle:
            handle.seek(max(0, os.path.getsize(log) - 65536))
            tail = handle.read().decode(errors="replace")
    except OSError:
        return False
    return any(message in tail for message in INTERRUPT_MESSAGES)


def end_run(run: str | None, succeeded: bool, snakemake_log=None, path: str | os.PathLike = RUNS,
            now: float | None = None) -> None:
    """Record how a run ended (the ``onsuccess`` and ``onerror`` handlers); nothing without a start."""
    if run is None:
        return
    status = COMPLETED if succeeded else INTERRUPTED if interrupted(snakemake_log) else FAILED
    append_record({"event": "end", "run": run, "time": time.time() if now is None else now, "status": status}, path)


# --------------------------------------------------------------------------- reading (the report)


@dataclass(frozen=True)
class Run:
    """One Snakemake run of the grid. ``end`` is the recorded end, or after :func:`with_ends` the
    inferred one (``end_inferred``); ``status`` is :data:`UNRECORDED` when no end was recorded
    (:data:`RUNNING` for the run reading it: :func:`grid_runs`)."""

    id: str
    start: float
    end: float | None = None
    status: str = UNRECORDED
    end_inferred: bool = False
    cpu_model: str | None = None
    cpu_count: int | None = None
    cores: int | None = None
    snakemake_log: str | None = None

    @property
    def seconds(self) -> float | None:
        return None if self.end is None else max(0.0, self.end - self.start)


def read_runs(path: str | os.PathLike) -> list[Run]:
    """The runs of a runs file by start time, each with its recorded end (none: :data:`UNRECORDED`).
    A missing file has none; a line that is not a record (a torn write) is skipped."""
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return []
    starts: dict[str, Run] = {}
    ends: dict[str, tuple[float, str]] = {}
    for line in lines:
        try:
            record = json.loads(line)
            event, run, moment = record["event"], str(record["run"]), float(record["time"])
        except (ValueError, TypeError, KeyError):
            continue
        if event == "start":
            starts[run] = Run(run, moment, cpu_model=record.get("cpu_model"), cpu_count=record.get("cpu_count"),
                              cores=record.get("cores"), snakemake_log=record.get("snakemake_log"))
        elif event == "end":
            ends[run] = (moment, str(record.get("status", FAILED)))
    runs = [replace(run, end=ends[run.id][0], status=ends[run.id][1]) if run.id in ends else run
            for run in starts.values()]
    return sorted(runs, key=lambda run: run.start)


def activity_times(root: str | os.PathLike = ".") -> list[float]:
    """Modification times of every file the jobs wrote under ``root``/:data:`ACTIVITY_DIR` (their
    logs and benchmark files), the report's own left out (:data:`ACTIVITY_EXCLUDED`)."""
    root = Path(root)
    excluded = {str(root / folder) for folder in ACTIVITY_EXCLUDED}
    times = []
    for folder, subfolders, files in os.walk(root / ACTIVITY_DIR):
        subfolders[:] = [name for name in subfolders if os.path.join(folder, name) not in excluded]
        for name in files:
            try:
                times.append(os.stat(os.path.join(folder, name)).st_mtime)
            except OSError:  # removed meanwhile
                pass
    return times


def with_ends(runs: Sequence[Run], root: str | os.PathLike = ".", times: Iterable[float] | None = None) -> list[Run]:
    """``runs`` with an end for each run that recorded none: the last of ``times`` (default:
    :func:`activity_times` under ``root``) and of its own Snakemake log's modification time after its
    start and before the next run's start; its start when it wrote nothing."""
    times = sorted(activity_times(root) if times is None else times)
    out = []
    for i, run in enumerate(runs):
        if run.end is not None:
            out.append(run)
            continue
        before = runs[i + 1].start if i + 1 < len(runs) else float("inf")
        own = [t for t in times if run.start <= t < before]
        log = Path(root) / run.snakemake_log if run.snakemake_log else None
        if log is not None and log.is_file() and run.start <= log.stat().st_mtime < before:
            own.append(log.stat().st_mtime)
        out.append(replace(run, end=max(own, default=run.start), end_inferred=True))
    return out


def grid_runs(root: str | os.PathLike = ".", current: str | None = None) -> list[Run]:
    """The runs recorded in ``root``/:data:`RUNS`, every one with an end (:func:`with_ends`); run
    ``current`` (default: :data:`RUN_ENV`, set in a run's jobs), when it has no end, is :data:`RUNNING`."""
    current = os.environ.get(RUN_ENV) if current is None else current
    return [replace(run, status=RUNNING) if run.id == current and run.status == UNRECORDED else run
            for run in with_ends(read_runs(Path(root) / RUNS), root)]
