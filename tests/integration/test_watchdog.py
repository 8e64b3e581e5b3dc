"""The run watchdog against a real database: it must tell a run this attempt just finished
from one another attempt took over, because the second ends the worker child; and its one
ticker per process must keep every run on that run's own schedule, never touch a run after it
left `watching`, and outlive a failing visit.

The in-process worker's reaper may share this database (when an earlier test started it): it
moves runs whose lease lapsed, so the assertions about leases allow for that."""
from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from domain.status import RunStatus
from runlane import logs
from storage.db import Database
from storage.models import Run
from storage.runstate import Claim, RunStates
from tasks.lifecycle import RunControl, Watchdog
from tests.support import wait_until
from tests.unit.helpers import make_ctx

HEARTBEAT = 0.4  # renewals every 0.2 s
SLACK = 0.1  # how late a renewal may land on a busy test machine


def claimed_run(db: Database, *, lease: float = HEARTBEAT) -> tuple[Any, int]:
    ctx = make_ctx(user_id=f"watch-{uuid.uuid4().hex[:8]}", run_id=uuid.uuid4().hex)
    with db.transaction() as connection:
        RunStates.create(connection, ctx.user_id, run_id=ctx.run_id, thread_id=ctx.thread_id,
                         agent=ctx.agent, input=ctx.input, metadata={},
                         request_id=ctx.request_id, created_at=datetime.now(UTC))
    claim, attempt, _started = RunStates(db).claim(
        ctx.user_id, ctx.run_id, ctx.thread_id, dispatch=None, max_running=4,
        lease_seconds=lease, hard_limit=60, started_type="agent_started",
        started_data=lambda attempt: {})
    assert claim is Claim.CLAIMED
    return ctx, attempt


def control(db: Database, ctx: Any, attempt: int, *, heartbeat: float = HEARTBEAT,
            watchdog: Watchdog | None = None) -> RunControl:
    # can_terminate=False: the test process must survive what would end a prefork child.
    return RunControl(db=db, ctx=ctx, attempt=attempt, bridge=None,  # type: ignore[arg-type]
                      heartbeat_interval=heartbeat, cancel_grace=1, can_terminate=False,
                      watchdogs=watchdog)


def state(db: Database, ctx: Any) -> tuple[int, str, datetime | None]:
    """Who holds the run, in which status, and until when."""
    with db.session() as session:
        attempt, status, lease = session.execute(
            select(Run.attempt, Run.status, Run.lease_expires_at)
            .where(Run.owner_id == ctx.user_id, Run.id == ctx.run_id)).one()
    return attempt, status, lease


def renewals(leases: list[datetime | None], heartbeat: float, since: datetime) -> list[float]:
    """Seconds after `since` at which each lease was taken (a renewal sets now + heartbeat)."""
    return [(lease - timedelta(seconds=heartbeat) - since).total_seconds()
            for lease in leases if lease is not None]


def poll_leases(db: Database, ctxs: list[Any],
                until: Callable[[], bool]) -> list[list[datetime | None]]:
    """Each run's leases as they change, polled much faster than any renewal period, until
    `until()` is true; the lease each run had when polling started is left out."""
    first = [state(db, ctx)[2] for ctx in ctxs]
    seen: list[list[datetime | None]] = [[] for _ in ctxs]

    def sampled_until() -> bool:
        for ctx, was, leases in zip(ctxs, first, seen, strict=True):
            lease = state(db, ctx)[2]
            if lease != was and (not leases or leases[-1] != lease):
                leases.append(lease)
        return until()

    wait_until(sampled_until, timeout=30, what="the polling window", interval=0.01)
    return seen


def after(seconds: float) -> Callable[[], bool]:
    deadline = time.monotonic() + seconds
    return lambda: time.monotonic() >= deadline


class Records(logging.Handler):
    """This module's log records, stamped with the ids of the context that logged them."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.addFilter(logs.ContextFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def lifecycle_log() -> Iterator[Records]:
    logger, handler = logging.getLogger("tasks.lifecycle"), Records()
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def complete(db: Database, ctx: Any, attempt: int) -> None:
    """End the run as this attempt's engine would (the transition must apply)."""
    assert RunStates(db).finish(ctx.user_id, ctx.run_id, ctx.thread_id, attempt,
                                to=RunStatus.COMPLETED, event_type="agent_completed",
                                data={}) is not None


def renewal_found_the_lease_gone(watched: RunControl) -> bool:
    """Whether a renewal of `watched` has seen that this attempt no longer holds the run (it
    then gives the attempt a heartbeat to leave `watching` before taking it for a takeover)."""
    return watched._lease_lost


def test_a_run_this_attempt_finished_is_not_taken_for_a_takeover(db):
    ctx, attempt = claimed_run(db)
    watched = control(db, ctx, attempt)
    with watched.watching():
        complete(db, ctx, attempt)  # what the engine's terminal transaction does
        wait_until(lambda: renewal_found_the_lease_gone(watched), 10 * HEARTBEAT,
                   "a renewal sees the run no longer held")
    assert not watched.superseded


def test_a_run_taken_over_by_another_attempt_is_still_noticed(db):
    ctx, attempt = claimed_run(db)
    watched = control(db, ctx, attempt)
    with watched.watching():
        with db.session() as session:  # the reaper re-dispatched it and attempt + 1 claimed it
            session.execute(update(Run).where(Run.owner_id == ctx.user_id, Run.id == ctx.run_id)
                            .values(attempt=attempt + 1))
        wait_until(lambda: watched.superseded, 10 * HEARTBEAT, "the takeover is noticed")


def test_a_finished_run_is_not_ended_after_it_left_watching(db):
    # The renewal that found the lease gone scheduled a re-check a heartbeat later; leaving
    # `watching` before it must cancel it, or a child that completed its run would be ended.
    ctx, attempt = claimed_run(db)
    watched = control(db, ctx, attempt)
    with watched.watching():
        complete(db, ctx, attempt)
        wait_until(lambda: renewal_found_the_lease_gone(watched), 10 * HEARTBEAT,
                   "a renewal sees the run no longer held")
    # Kept: proving the scheduled re-check does NOT happen means letting its time pass.
    time.sleep(HEARTBEAT * 1.5)  # well past the re-check it had scheduled
    assert not watched.superseded


def test_runs_watched_together_are_each_renewed_on_their_own_schedule(db):
    watchdog = Watchdog()  # one ticker for both, as in a worker process
    heartbeat, stagger = 0.6, 0.15
    half = heartbeat / 2
    runs = [claimed_run(db, lease=10) for _ in range(2)]  # no lapse before the first renewal
    starts: list[datetime] = []
    with ExitStack() as stack:
        for ctx, attempt in runs:
            if starts:
                time.sleep(stagger)  # kept: the runs' own start times are what is under test
            starts.append(datetime.now(UTC))
            stack.enter_context(control(db, ctx, attempt, heartbeat=heartbeat,
                                        watchdog=watchdog).watching())
        seen = poll_leases(db, [ctx for ctx, _ in runs], until=after(3 * half))
    for start, leases in zip(starts, seen, strict=True):
        offsets = renewals(leases, heartbeat, since=start)
        # Renewed every half heartbeat from its own start: not on the other run's beat, and
        # not again whenever the ticker woke for the other run.
        assert len(offsets) >= 2, offsets
        for k, offset in enumerate(offsets, start=1):
            assert k * half - 0.01 <= offset <= k * half + SLACK, (k, offsets)


def test_a_run_that_left_watching_is_never_renewed_again(db):
    # Leave at moments around its first renewal, so some leave while the ticker is renewing:
    # `watching` must not return before that renewal lands, and none may follow.
    watchdog = Watchdog()
    heartbeat = 0.1
    half = heartbeat / 2
    for step in range(11):
        ctx, attempt = claimed_run(db, lease=10)
        watched = control(db, ctx, attempt, heartbeat=heartbeat, watchdog=watchdog)
        with watched.watching():
            # Kept: leaving at these moments around the first renewal is the test itself.
            time.sleep(half + (step - 5) * 0.001)
        left = state(db, ctx)
        # Kept: proving no renewal follows means letting its time pass.
        time.sleep(1.5 * half)  # a renewal still to come would have landed by now
        now = state(db, ctx)
        # Unchanged, unless the reaper took the run from this attempt (then it cannot renew).
        assert now == left or now[:2] != left[:2], (step, left, now)
        assert not watched.superseded


def test_a_takeover_is_ended_without_holding_up_other_runs(db):
    watchdog = Watchdog()
    (taken_ctx, taken_attempt), (other_ctx, other_attempt) = claimed_run(db), claimed_run(db)
    taken = control(db, taken_ctx, taken_attempt, watchdog=watchdog)
    other = control(db, other_ctx, other_attempt, watchdog=watchdog)
    with lifecycle_log() as log, other.watching():
        started = datetime.now(UTC)
        with logs.bound(run_id=taken_ctx.run_id, user_id=taken_ctx.user_id), taken.watching():
            with db.session() as session:  # attempt + 1 claimed it
                session.execute(update(Run).where(Run.owner_id == taken_ctx.user_id,
                                                  Run.id == taken_ctx.run_id)
                                .values(attempt=taken_attempt + 1))
            deadline = time.monotonic() + 10 * HEARTBEAT
            seen = poll_leases(db, [other_ctx], until=lambda: (
                taken.superseded or time.monotonic() > deadline))
            ended = (datetime.now(UTC) - started).total_seconds()
            assert taken.superseded
    # The other run was renewed on its beat all through the heartbeat the taken one was given.
    offsets = renewals(seen[0], HEARTBEAT, since=started)
    assert len(offsets) >= 2, offsets
    gaps = [b - a for a, b in zip([0.0, *offsets, ended], [*offsets, ended], strict=False)]
    assert max(gaps) <= HEARTBEAT / 2 + SLACK, (offsets, ended)
    # The ticker ended it in the run's own context: its log line carries the run's ids.
    ended_lines = [r for r in log.records if "cannot stop the agent" in r.getMessage()]
    assert [(r.run_id, r.user_id) for r in ended_lines] == [  # type: ignore[attr-defined]
        (taken_ctx.run_id, taken_ctx.user_id)]


def test_a_failing_visit_does_not_stop_the_ticker(db):
    watchdog = Watchdog()
    (failing_ctx, failing_attempt), (other_ctx, other_attempt) = claimed_run(db), claimed_run(db)
    with db.session() as session:  # cancelled long ago: the visit ends it, through no bridge
        session.execute(update(Run).where(Run.owner_id == failing_ctx.user_id,
                                          Run.id == failing_ctx.run_id)
                        .values(status=RunStatus.CANCELLING.value,
                                cancel_requested_at=datetime.now(UTC) - timedelta(seconds=10)))
    failing = control(db, failing_ctx, failing_attempt, watchdog=watchdog)
    other = control(db, other_ctx, other_attempt, watchdog=watchdog)
    with lifecycle_log() as log, failing.watching(), other.watching():
        started = datetime.now(UTC)
        seen = poll_leases(db, [other_ctx], until=after(2.5 * HEARTBEAT))
    failures = [r for r in log.records if r.getMessage() == "watchdog failed"]
    assert failures and all(r.exc_info for r in failures)
    assert len(renewals(seen[0], HEARTBEAT, since=started)) >= 4
