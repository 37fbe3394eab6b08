"""brcd.scheduler: Snakemake's re-evaluation timers kept to one pending timer per scheduler."""
from __future__ import annotations

import threading
import time

import pytest

from brcd.scheduler import MARK, METHOD, coalesce_reevaluations, coalesced


class FakeScheduler:
    """What the replacement touches of Snakemake's JobScheduler: the semaphore a pass waits on."""

    def __init__(self):
        self._open_jobs = threading.Semaphore(0)


def passes(scheduler: FakeScheduler, within: float) -> int:
    """How many scheduling passes the scheduler's semaphore grants within ``within`` seconds."""
    count, end = 0, time.monotonic() + within
    while scheduler._open_jobs.acquire(timeout=max(0.0, end - time.monotonic())):
        count += 1
    return count


def test_requests_while_a_timer_is_pending_start_no_more_timers():
    schedule, scheduler = coalesced(), FakeScheduler()
    before = threading.active_count()
    for _ in range(50):  # 50 passes asking for a re-evaluation: Snakemake would start 50 timers
        schedule(scheduler, 0.2)
    assert threading.active_count() - before <= 1
    assert passes(scheduler, 0.6) == 1


def test_a_request_due_sooner_than_the_pending_timer_gets_its_own():
    schedule, scheduler = coalesced(), FakeScheduler()
    schedule(scheduler, 0.8)
    started = time.monotonic()
    schedule(scheduler, 0.05)  # e.g. the rate limiter's timespan after a longer queue-input wait
    assert scheduler._open_jobs.acquire(timeout=0.5)
    assert time.monotonic() - started < 0.5  # the sooner request was not left to the later timer
    assert passes(scheduler, 1.2) == 1  # and the later timer still fires


def test_a_request_after_the_timer_fired_starts_a_new_one():
    schedule, scheduler = coalesced(), FakeScheduler()
    schedule(scheduler, 0.05)
    assert passes(scheduler, 0.3) == 1
    schedule(scheduler, 0.05)  # the pass the timer ran asks again: it must get one
    assert passes(scheduler, 0.3) == 1


def test_schedulers_are_independent_and_timers_do_not_hold_the_exit():
    schedule, first, second = coalesced(), FakeScheduler(), FakeScheduler()
    schedule(first, 0.1)
    schedule(second, 0.1)
    timers = [t for t in threading.enumerate() if isinstance(t, threading.Timer)]
    assert timers and all(t.daemon for t in timers)  # a finished run exits without waiting them out
    assert passes(first, 0.4) == 1 and passes(second, 0.4) == 1


def test_coalesce_replaces_the_method_once():
    class Scheduler:
        def _schedule_reevalutation(self, delay):
            raise AssertionError("replaced")

    assert coalesce_reevaluations(Scheduler)
    assert getattr(getattr(Scheduler, METHOD), MARK)
    assert not coalesce_reevaluations(Scheduler)  # every Snakefile parse calls it: the second changes nothing
    scheduler = Scheduler()
    scheduler._open_jobs = threading.Semaphore(0)
    scheduler._schedule_reevalutation(0.01)
    assert scheduler._open_jobs.acquire(timeout=0.5)


def test_a_scheduler_without_the_method_is_left_alone():
    class Other:
        pass

    assert not coalesce_reevaluations(Other)
    assert not hasattr(Other, METHOD)


def test_the_pinned_snakemake_has_the_method_it_replaces():
    """An upgrade that renames or drops it must fail here, not leave the grid's runs on the growing timers."""
    job_scheduler = pytest.importorskip("snakemake.scheduling.job_scheduler")
    current = job_scheduler.JobScheduler.__dict__.get(METHOD)
    assert callable(current)
    if getattr(current, MARK, False):  # a workflow run inside this test process replaced it already
        return

    class Copy(job_scheduler.JobScheduler):  # a subclass: the real class stays as it is for other tests
        pass

    assert coalesce_reevaluations(Copy)
    assert getattr(Copy.__dict__[METHOD], MARK) and job_scheduler.JobScheduler.__dict__[METHOD] is current
