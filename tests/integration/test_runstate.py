"""Every move of storage/runstate.py, from every status, against the real database.

A move changes the run (and logs its event, for those that have one) exactly when the run is
in one of the move's sources; from any other status it changes nothing and logs nothing. So
the table in domain/status.py is what the database enforces, not only what the code means.
Then the race the reaper used to lose: a cancel asked for between its read and its write.
"""
from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from domain.status import RunStatus
from events.eventlog import EventLog
from storage import runstate
from storage.db import Database
from storage.models import Run
from storage.runstate import Claim, Move, RunStates

THREAD = "t"
EVENT = "agent_event"
# The forced runs' leases end an hour from now, so no reaper of a worker sharing this database
# takes them; the moves are told it is later than that.
LEASE = timedelta(hours=1)


def later() -> datetime:
    """A moment after every forced run's lease."""
    return datetime.now(UTC) + 2 * LEASE


def run_in(db: Database, status: RunStatus) -> tuple[str, str]:
    """A run of a new owner, forced into `status` at attempt 1, its lease ending in LEASE."""
    owner, run_id = f"state-{uuid.uuid4().hex[:10]}", uuid.uuid4().hex
    with db.transaction() as connection:
        assert RunStates.create(connection, owner, run_id=run_id, thread_id=THREAD,
                                agent="echo", input=None, metadata={}, request_id="req",
                                created_at=datetime.now(UTC))
    with db.session() as session:
        session.execute(update(Run).where(Run.id == run_id).values(
            status=status.value, attempt=1,
            lease_expires_at=datetime.now(UTC) + LEASE))
    return owner, run_id


def row(db: Database, run_id: str) -> tuple[str, int]:
    with db.session() as session:
        status, attempt = session.execute(
            select(Run.status, Run.attempt).where(Run.id == run_id)).one()
    return status, attempt


Apply = Callable[[RunStates, str, str], Any]


def _reap(move: Move, to: RunStatus) -> Apply:
    def apply(states: RunStates, owner: str, run_id: str) -> Any:
        lapsed = move.sources <= {RunStatus.RUNNING, RunStatus.CANCELLING}
        return states.reap(owner, run_id, THREAD, move, to=to, event_type=EVENT, data={},
                           attempt=1 if lapsed else None,
                           lease_before=later() if lapsed else None)
    return apply


def _finish(to: RunStatus) -> Apply:
    return lambda states, owner, run_id: states.finish(owner, run_id, THREAD, 1, to=to,
                                                       event_type=EVENT, data={})


def _claim(states: RunStates, owner: str, run_id: str) -> Any:
    claim, _attempt, event = states.claim(
        owner, run_id, THREAD, dispatch=None, max_running=10, lease_seconds=30, hard_limit=60,
        started_type=EVENT, started_data=lambda attempt: {})
    return event if claim is Claim.CLAIMED else None


# Each move towards each of its targets, as the product calls it.
CASES: list[tuple[Move, RunStatus, Apply]] = [
    (runstate.CLAIM, RunStatus.RUNNING, _claim),
    (runstate.CANCEL_WAITING, RunStatus.CANCELLED,
     lambda s, o, r: s.cancel_waiting(o, r, THREAD, event_type=EVENT, data={})),
    (runstate.REQUEST_CANCEL, RunStatus.CANCELLING, lambda s, o, r: s.request_cancel(o, r)),
    *[(runstate.FINISH, to, _finish(to)) for to in sorted(runstate.FINISH.targets)],
    (runstate.RETRY, RunStatus.RETRYING,
     lambda s, o, r: s.retry(o, r, 1, lease_before=later())),
    *[(move, to, _reap(move, to))
      for move in (runstate.REAP_CANCELLING, runstate.REAP_PAST_DEADLINE, runstate.GIVE_UP,
                   runstate.EXPIRE)
      for to in sorted(move.targets)],
    (runstate.REFUSE, RunStatus.FAILED,
     lambda s, o, r: s.refuse(o, r, THREAD, event_type=EVENT, data={})),
]


def test_the_cases_cover_every_move_and_target():
    assert {(move.name, to) for move, to, _ in CASES} == {
        (move.name, to) for move in runstate.MOVES for to in move.targets}


@pytest.mark.parametrize("start", list(RunStatus), ids=lambda s: s.value)
@pytest.mark.parametrize(("move", "to", "apply"), CASES,
                         ids=[f"{m.name}->{t.value}" for m, t, _ in CASES])
def test_a_move_applies_from_its_sources_and_nowhere_else(
    db: Database, move: Move, to: RunStatus, apply: Apply, start: RunStatus,
) -> None:
    owner, run_id = run_in(db, start)
    result = apply(RunStates(db), owner, run_id)
    status, attempt = row(db, run_id)
    events = [e.type for e in EventLog(db).read_after(owner, run_id)]
    if start in move.sources:
        assert result, f"{move.name} from {start.value} did not apply"
        assert status == to.value
        assert attempt == (2 if move is runstate.CLAIM else 1)
        assert events == ([] if isinstance(result, bool) else [EVENT])
    else:
        assert not result, f"{move.name} applied from {start.value}"
        assert (status, attempt, events) == (start.value, 1, [])


def test_a_live_lease_is_not_reaped(db: Database) -> None:
    owner, run_id = run_in(db, RunStatus.RUNNING)
    now = datetime.now(UTC)  # the lease ends after this
    states = RunStates(db)
    assert not states.retry(owner, run_id, 1, lease_before=now)
    assert states.reap(owner, run_id, THREAD, runstate.GIVE_UP, to=RunStatus.FAILED,
                       event_type=EVENT, data={}, attempt=1, lease_before=now) is None
    assert row(db, run_id) == ("running", 1)


def test_another_attempt_cannot_finish_or_renew_the_run(db: Database) -> None:
    owner, run_id = run_in(db, RunStatus.RUNNING)
    states = RunStates(db)
    assert states.finish(owner, run_id, THREAD, 2, to=RunStatus.COMPLETED, event_type=EVENT,
                         data={}) is None
    assert states.renew_lease(owner, run_id, 2, 30) is None
    assert states.renew_lease(owner, run_id, 1, 30) == ("running", None)
    assert row(db, run_id) == ("running", 1)


def test_a_cancel_between_the_reapers_read_and_write_is_kept(app: Any) -> None:
    """The reaper reads a running run whose lease lapsed; before it writes, the owner asks to
    cancel. The reaper must not send the run to another attempt: its next pass ends it
    cancelled. (It used to move `cancelling` to `retrying`, and the run ran again.)"""
    from runlane.settings import load
    from tasks.reaper import Reaper

    st = app.extensions["runlane"]
    owner, run_id = run_in(st.db, RunStatus.RUNNING)
    reaper = Reaper(db=st.db, settings=load(), dispatcher=st.runs._dispatcher,
                    bridges=st.runs._bridges)
    seen = read(st.db, run_id)  # the reaper's read: running, and (later) its lease lapsed
    assert st.runs.cancel(owner, run_id).status == "cancelling"  # the owner, meanwhile
    assert not reaper._lapsed(seen, later())
    assert row(st.db, run_id) == ("cancelling", 1)
    assert reaper._lapsed(read(st.db, run_id), later())  # its next pass over this run
    assert row(st.db, run_id)[0] == "cancelled"


def read(db: Database, run_id: str) -> Run:
    with db.session() as session:
        run = session.execute(select(Run).where(Run.id == run_id)).scalar_one()
        session.expunge(run)
    return run
