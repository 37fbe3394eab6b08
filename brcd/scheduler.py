"""Snakemake's scheduler re-evaluation timers, coalesced into one pending timer per run.

Snakemake (9.27, pinned in pyproject.toml) re-evaluates its job scheduler on a timer whose delay
is the timespan of ``--max-jobs-per-timespan``: every scheduling pass that finds jobs ready
starts one more ``threading.Timer`` (``JobScheduler._schedule_reevalutation``, spelled so
upstream), and every timer that fires runs a pass, which starts another. A job's end runs a pass
of its own, so after N finished jobs about N timer chains are alive, N passes run per timespan,
and each pass looks up the inputs of every ready job: in the study's run Snakemake's own process
held 183 threads and 15-20 % of a core after 180 jobs (docs/runs/benchmarks.md), 45 % after 200
longer jobs (docs/runs/students-issue25.md), taken from the jobs on a 2-core machine (upstream
snakemake/snakemake#3804 reports the same growth on large grids). Its timers are also non-daemon
threads, so a run waits out the last one before it exits.

:func:`coalesce_reevaluations` replaces that method with one that keeps at most one timer pending
per scheduler: a request is dropped when a pending timer fires no later than the request asks.
What changes, and what does not:

- A job's end still runs a pass at once (that path has no timer), so on a run whose rate limit
  does not bind (the local profile's 1000 jobs per 5 s on a few cores) jobs start as soon as
  they would have; only the idle passes go.
- Every pass that asks for one still gets a re-evaluation, no later than it asked for. The timers
  matter for jobs the rate limit held back: such jobs may become free at a dropped request's time,
  and then wait for the next timer, less than one timespan later (at most 1 s on Snakemake's
  default ``100/1s``), and only while the limit binds.
- The timer is a daemon thread: a run exits as soon as its last job is done.

``benchmarks/scheduler_overhead.py`` measures Snakemake's CPU and threads with and without it.
"""
from __future__ import annotations

import threading
import time
from typing import Callable

#: the Snakemake scheduler method this replaces (its name as spelled upstream)
METHOD = "_schedule_reevalutation"
#: marks the replacement, so that a second call (every Snakefile parse calls it) changes nothing
MARK = "_brcd_coalesced"


def coalesced(clock: Callable[[], float] = time.monotonic,
              timer: Callable[[float, Callable[[], None]], threading.Timer] = threading.Timer
              ) -> Callable[[object, float], None]:
    """The replacement method: ``schedule(scheduler, delay)`` releases ``scheduler._open_jobs``
    (one scheduling pass) ``delay`` seconds from now, unless a timer already pending releases it
    no later than that. ``clock`` and ``timer`` are what it reads the time from and starts (tests
    give their own)."""

    lock = threading.Lock()  # one lock for every scheduler: timers are few, the section tiny

    def schedule(scheduler, delay: float) -> None:
        due = clock() + delay
        with lock:
            pending = getattr(scheduler, "_brcd_reevaluation_due", None)
            if pending is not None and pending <= due:
                return
            scheduler._brcd_reevaluation_due = due

        def fire() -> None:
            with lock:
                if getattr(scheduler, "_brcd_reevaluation_due", None) == due:
                    scheduler._brcd_reevaluation_due = None
            scheduler._open_jobs.release()

        pending_timer = timer(delay, fire)
        pending_timer.daemon = True  # a finished run need not wait out its last re-evaluation
        pending_timer.start()

    setattr(schedule, MARK, True)
    return schedule


def coalesce_reevaluations(scheduler_class: type | None = None) -> bool:
    """Replace ``scheduler_class``'s (Snakemake's ``JobScheduler`` by default) re-evaluation timer
    method by :func:`coalesced`'s. True when it replaced it now; False when it was already
    replaced, or when this Snakemake has no such method (another version: left as it is)."""
    if scheduler_class is None:
        try:
            from snakemake.scheduling.job_scheduler import JobScheduler as scheduler_class
        except ImportError:  # another Snakemake layout: nothing to coalesce
            return False
    current = getattr(scheduler_class, METHOD, None)
    if current is None or getattr(current, MARK, False):
        return False
    setattr(scheduler_class, METHOD, coalesced())
    return True
