"""brcd.scheduler: Snakemake's re-evaluation timers kept to one pending timer per scheduler.

The logic runs on a fake clock and fake timers (fired by the test, so no sleep and no race on a
busy machine); one test starts real timers, with generous bounds.
"""
from __future__ import annotations

import threading

import pytest

from brcd.config import REPO_ROOT
from brcd.scheduler import MARK, METHOD, coalesce_reevaluations, coalesced
from tests.conftest import snakemake_here

TEST_CONFIG = REPO_ROOT / "config" / "test.yaml"


class FakeScheduler:
    """What the replacement touches of Snakemake's JobScheduler: the semaphore a pass waits on."""

    def __init__(self):
        self._open_jobs = threading.Semaphore(0)

    def passes(self) -> int:
        """Scheduling passes granted so far (and taken)."""
        count = 0
        while self._open_jobs.acquire(blocking=False):
            count += 1
        return count


class FakeTimers:
    """A clock the test sets, and the timers started on it, fired when the test moves the clock."""

    def __init__(self):
        self.now, self.started = 0.0, []  # started: [due, callback, daemon] per timer, in start order

    def clock(self) -> float:
        return self.now

    def timer(self, delay: float, callback):
        timers = self

        class Timer:
            daemon = False

            def start(self):
                timers.started.append([timers.now + delay, callback, self.daemon])

        return Timer()

    def advance(self, seconds: float) -> None:
        """Move the clock and fire, in order, every timer due by then."""
        self.now += seconds
        for entry in sorted((t for t in self.started if t[0] <= self.now and t[1]), key=lambda t: t[0]):
            callback, entry[1] = entry[1], None
            callback()


@pytest.fixture
def fake():
    timers = FakeTimers()
    return timers, coalesced(timers.clock, timers.timer)


def test_requests_while_a_timer_is_pending_start_no_more_timers(fake):
    timers, schedule = fake
    scheduler = FakeScheduler()
    for _ in range(50):  # 50 passes asking for a re-evaluation: Snakemake would start 50 timers
        schedule(scheduler, 5.0)
        timers.advance(0.01)
    assert len(timers.started) == 1
    timers.advance(5.0)
    assert scheduler.passes() == 1


def test_a_request_is_never_answered_later_than_it_asked(fake):
    timers, schedule = fake
    scheduler = FakeScheduler()
    schedule(scheduler, 10.0)
    schedule(scheduler, 1.0)  # e.g. the rate limiter's timespan after a longer queue-input wait
    assert len(timers.started) == 2  # the sooner request was not left to the later timer
    timers.advance(1.0)
    assert scheduler.passes() == 1
    timers.advance(9.0)
    assert scheduler.passes() == 1  # and the later timer still fires


def test_a_request_after_the_timer_fired_starts_a_new_one(fake):
    timers, schedule = fake
    scheduler = FakeScheduler()
    schedule(scheduler, 1.0)
    timers.advance(1.0)
    assert scheduler.passes() == 1
    schedule(scheduler, 1.0)  # the pass the timer ran asks again: it must get one
    timers.advance(1.0)
    assert scheduler.passes() == 1 and len(timers.started) == 2


def test_schedulers_are_independent_and_timers_do_not_hold_the_exit(fake):
    timers, schedule = fake
    first, second = FakeScheduler(), FakeScheduler()
    schedule(first, 1.0)
    schedule(second, 1.0)
    assert len(timers.started) == 2 and all(daemon for _, _, daemon in timers.started)
    timers.advance(1.0)
    assert first.passes() == 1 and second.passes() == 1


def test_real_timers_release_a_pass():
    """The default clock and timer: a daemon thread that releases a pass (a generous bound: a busy
    machine may run it late)."""
    schedule, scheduler = coalesced(), FakeScheduler()
    before = set(threading.enumerate())
    schedule(scheduler, 0.05)
    started = [t for t in set(threading.enumerate()) - before if isinstance(t, threading.Timer)]
    assert all(t.daemon for t in started)
    assert scheduler._open_jobs.acquire(timeout=30)


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
    assert scheduler._open_jobs.acquire(timeout=30)


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


def test_the_workflow_coalesces_snakemakes_timers(tmp_path):
    """Parsing the workflow replaces the method (workflow/rules/common.smk): nothing else in the package or
    its tests replaces the real class's, so this fails if the workflow stops doing it."""
    from snakemake.scheduling.job_scheduler import JobScheduler

    result = snakemake_here(tmp_path, "--cores", "1", "no/such/file", "--configfile", str(TEST_CONFIG))
    assert "No rule to produce no/such/file" in result.stdout + result.stderr  # parsed, then stopped
    assert getattr(JobScheduler.__dict__[METHOD], MARK, False)
