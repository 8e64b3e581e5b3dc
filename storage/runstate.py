"""RunStates: the one writer of a run's status, attempt and lease.

Every change a run goes through is a `Move` named for why it happens (a worker's claim, its
owner's cancel, the reaper finding its worker lost), and each move may only take the run from
its `sources` to one of its `targets`. The moves are checked against the state machine
(`domain.status.TRANSITIONS`) when this module loads, and every UPDATE that applies one
repeats its sources in its WHERE clause: a stale worker, a duplicate message or a reaper
racing a heartbeat finds the run elsewhere and changes nothing.

A move that comes with an event (the claim's `agent_started`, every terminal event) writes
both in one transaction, the owner's cursor row first and the run's row after it (the lock
order events/eventlog.py explains), and returns the logged event for the caller to publish.
No other module writes the `status` column (tests/unit/test_runstate.py reads the source to
keep it so).
"""
from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from domain.events import Event
from domain.status import ACTIVE, EXECUTING, TRANSITIONS, WAITING, RunStatus
from storage import event_queries, statements
from storage.db import Database
from storage.models import utcnow
from storage.prepared import Executor, Prepared


@dataclass(frozen=True)
class Move:
    """One reason a run changes status, and the changes that reason may make."""

    name: str
    sources: frozenset[RunStatus]
    targets: frozenset[RunStatus]

    def pairs(self) -> frozenset[tuple[RunStatus, RunStatus]]:
        return frozenset((s, t) for s in self.sources for t in self.targets)


def _move(name: str, sources: frozenset[RunStatus], *targets: RunStatus) -> Move:
    return Move(name, frozenset(sources), frozenset(targets))


_RUNNING = frozenset({RunStatus.RUNNING})
_ENDS = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.TIMED_OUT)

# A worker takes a waiting run (attempt + 1).
CLAIM = _move("claim", WAITING, RunStatus.RUNNING)
# The owner cancels: a waiting run never starts; a running one stops at its next step.
CANCEL_WAITING = _move("cancel_waiting", WAITING, RunStatus.CANCELLED)
REQUEST_CANCEL = _move("request_cancel", _RUNNING, RunStatus.CANCELLING)
# The attempt holding the run ends it: the engine with the agent's outcome, or the attempt's
# watchdog (cancel grace, hard time limit).
FINISH = _move("finish", EXECUTING, *_ENDS)
# The reaper, for a run whose lease lapsed. Retrying takes only a running run: a cancel asked
# for meanwhile is kept, and the next pass ends the run cancelled instead.
RETRY = _move("retry", _RUNNING, RunStatus.RETRYING)
REAP_CANCELLING = _move("reap_cancelling", frozenset({RunStatus.CANCELLING}), RunStatus.CANCELLED)
REAP_PAST_DEADLINE = _move("reap_past_deadline", EXECUTING, RunStatus.TIMED_OUT)
GIVE_UP = _move("give_up", _RUNNING, RunStatus.FAILED)
# The reaper, for a run no worker started within the queue age.
EXPIRE = _move("expire", WAITING, RunStatus.FAILED)
# The worker, for a run named by a message that failed verification: never executed.
REFUSE = _move("refuse", ACTIVE, RunStatus.FAILED)

MOVES: tuple[Move, ...] = (CLAIM, CANCEL_WAITING, REQUEST_CANCEL, FINISH, RETRY,
                           REAP_CANCELLING, REAP_PAST_DEADLINE, GIVE_UP, EXPIRE, REFUSE)


class IllegalMove(Exception):
    """A move, or a change asked of one, that the state machine does not allow: a bug."""


def _check_moves(moves: tuple[Move, ...] = MOVES) -> None:
    for move in moves:
        illegal = sorted(f"{s.value} -> {t.value}" for s, t in move.pairs()
                         if t not in TRANSITIONS[s])
        if illegal:
            raise IllegalMove(f"{move.name}: {', '.join(illegal)} not in TRANSITIONS")


_check_moves()


class Claim(enum.Enum):
    CLAIMED = "claimed"
    BLOCKED = "blocked"  # the user is at its running limit or the thread is busy: try later
    STALE = "stale"  # not waiting any more, or a newer dispatch exists: drop the message


class _NotFree(Exception):
    """The one-statement claim did not apply: roll its transaction back."""


class _Unchanged(Exception):
    """The status change did not apply: roll back the cursor its transaction took."""


class RunStates:
    """The moves of runs stored in `db`. Stateless apart from the database: build one
    wherever one is needed."""

    def __init__(self, db: Database) -> None:
        self._db = db

    # -- birth -----------------------------------------------------------------------------

    @staticmethod
    def create(
        session: Executor, owner_id: str, *, run_id: str, thread_id: str, agent: str,
        input: Any, metadata: dict[str, Any], request_id: str, created_at: datetime,
        queue: str = "runlane", idempotency_key: str | None = None,
        max_waiting: int | None = None,
    ) -> bool:
        """Insert a run, `queued`, attempt 0 and dispatch 1, in the caller's transaction (and
        its thread on first use). With `max_waiting`, only while the owner has fewer waiting
        runs than that, checked by the insert itself: False when not."""
        statements.ENSURE_THREAD.rowcount(
            session, {"b_owner": owner_id, "b_thread": thread_id, "b_now": utcnow()})
        params = {
            "v_id": run_id, "v_owner_id": owner_id, "v_thread_id": thread_id, "v_agent": agent,
            "v_input": input, "v_metadata": metadata, "v_request_id": request_id,
            "v_status": RunStatus.QUEUED.value, "v_created_at": created_at, "v_attempt": 0,
            "v_last_seq": 0, "v_queue": queue, "v_idempotency_key": idempotency_key,
            "v_dispatch": 1, "v_dispatched_at": created_at,
        }
        if max_waiting is None:
            statements.INSERT_RUN.rowcount(session, params)
            return True
        return statements.INSERT_RUN_IF_ROOM.first(
            session, {**params, "b_max": max_waiting}) is not None

    # -- a worker's claim and its lease ----------------------------------------------------

    def claim(
        self, owner_id: str, run_id: str, thread_id: str, *, dispatch: int | None,
        max_running: int, lease_seconds: float, hard_limit: float, started_type: str,
        started_data: Callable[[int], Any],
    ) -> tuple[Claim, int, Event | None]:
        """CLAIM a waiting run if its user and thread allow it and, when claimed, log its
        first event (`started_type`, with `started_data(attempt)`) in the same transaction.
        The caller publishes the event.

        The common case (nothing in the way) takes three statements: the owner's cursor
        (which locks the owner), the one-statement claim, the event. Otherwise that
        transaction is rolled back and a step-by-step claim tells STALE from BLOCKED.

        Returns the claim's outcome, the new attempt, and the logged event when claimed.
        """
        times = _claim_times(utcnow(), lease_seconds, hard_limit)
        key = {"b_owner": owner_id, "b_run": run_id}
        if dispatch is not None:
            try:
                with self._db.transaction() as session:
                    cursor = event_queries.next_cursor(session, owner_id)  # the owner's lock
                    row = statements.CLAIM_IF_FREE.first(
                        session, {**key, "b_dispatch": dispatch, "b_max": max_running, **times})
                    if row is None:
                        raise _NotFree
                    attempt, seq = int(row[0]), int(row[1])
                    return Claim.CLAIMED, attempt, event_queries.append_event(
                        session, owner_id, run_id, thread_id, started_type,
                        started_data(attempt), seq=seq, cursor=cursor)
            except _NotFree:
                pass
        with self._db.transaction() as session:
            statements.LOCK_USER.rowcount(session, {"b_owner": owner_id})  # the owner's lock
            run = statements.CLAIM_READ.first(session, key)
            if run is None:
                return Claim.STALE, 0, None
            status, run_dispatch, run_attempt, run_thread, created_at = run
            if RunStatus(status) not in CLAIM.sources or (
                    dispatch is not None and run_dispatch != dispatch):
                return Claim.STALE, 0, None
            n_running, n_ahead = statements.CLAIM_COUNTS.first(
                session, {**key, "b_thread": run_thread, "b_created": created_at}) or (0, 0)
            if n_running >= max_running or n_ahead:
                # Marked so that a finishing run re-sends this one (and only such runs) at once.
                statements.MARK_BLOCKED.rowcount(session, {**key, "b_now": times["b_now"]})
                return Claim.BLOCKED, 0, None
            attempt = run_attempt + 1
            seq = statements.CLAIM_NUMBERED.scalar(
                session, {**key, "b_prev": run_attempt, "b_attempt": attempt, **times})
            if seq is None:
                return Claim.STALE, 0, None
            return Claim.CLAIMED, attempt, event_queries.append_event(
                session, owner_id, run_id, thread_id, started_type, started_data(attempt),
                seq=seq)

    def renew_lease(
        self, owner_id: str, run_id: str, attempt: int, lease_seconds: float,
    ) -> tuple[str, datetime | None] | None:
        """Extend the lease of the attempt that holds it; None when it no longer does.

        Returns the run's status and when cancellation was requested.
        """
        with self._db.transaction() as session:
            row = statements.RENEW_LEASE.first(session, {
                "b_owner": owner_id, "b_run": run_id, "b_attempt": attempt,
                "v_lease": utcnow() + timedelta(seconds=lease_seconds)})
        return (str(row[0]), row[1]) if row is not None else None

    # -- the owner's cancel ----------------------------------------------------------------

    def request_cancel(self, owner_id: str, run_id: str) -> bool:
        """REQUEST_CANCEL: the agent stops at its next step (its attempt ends the run
        cancelled); False when the run was not running."""
        return self._change(owner_id, run_id, REQUEST_CANCEL, RunStatus.CANCELLING,
                            values={"cancel_requested_at": utcnow()})

    def cancel_waiting(self, owner_id: str, run_id: str, thread_id: str, *, event_type: str,
                       data: Any, **values: Any) -> Event | None:
        """CANCEL_WAITING, with its event; None when the run was no longer waiting."""
        return self._end(owner_id, run_id, thread_id, CANCEL_WAITING, RunStatus.CANCELLED,
                         event_type, data, values)

    # -- the end of an attempt -------------------------------------------------------------

    def finish(self, owner_id: str, run_id: str, thread_id: str, attempt: int, *,
               to: RunStatus, event_type: str, data: Any, **values: Any) -> Event | None:
        """FINISH by the attempt holding the run, with its terminal event (and the run's
        `output` or `error` in `values`); None when that attempt no longer holds it."""
        return self._end(owner_id, run_id, thread_id, FINISH, to, event_type, data, values,
                         attempt=attempt)

    def refuse(self, owner_id: str, run_id: str, thread_id: str, *, event_type: str,
               data: Any, **values: Any) -> Event | None:
        """REFUSE a run a forged or malformed message named, with its event."""
        return self._end(owner_id, run_id, thread_id, REFUSE, RunStatus.FAILED, event_type,
                         data, values)

    # -- the reaper ------------------------------------------------------------------------

    def retry(self, owner_id: str, run_id: str, attempt: int, *, lease_before: datetime,
              ) -> bool:
        """RETRY: the attempt's worker was lost (its lease lapsed before `lease_before`, checked
        again by the UPDATE); the run waits for its next attempt."""
        return self._change(owner_id, run_id, RETRY, RunStatus.RETRYING, attempt=attempt,
                            lease_before=lease_before, values={"lease_expires_at": None})

    def reap(self, owner_id: str, run_id: str, thread_id: str, move: Move, *, to: RunStatus,
             event_type: str, data: Any, attempt: int | None = None,
             lease_before: datetime | None = None, **values: Any) -> Event | None:
        """End a run for the reaper by `move` (REAP_CANCELLING, REAP_PAST_DEADLINE or GIVE_UP
        for a lapsed lease, EXPIRE for a run never started), with its event; None when the
        run moved on meanwhile."""
        return self._end(owner_id, run_id, thread_id, move, to, event_type, data, values,
                         attempt=attempt, lease_before=lease_before)

    # -- how every change is written -------------------------------------------------------

    def _change(self, owner_id: str, run_id: str, move: Move, to: RunStatus, *,
                attempt: int | None = None, lease_before: datetime | None = None,
                values: dict[str, Any]) -> bool:
        stmt, params = _update(owner_id, run_id, move, to, attempt=attempt,
                               lease_before=lease_before, values=values, numbered=False)
        with self._db.transaction() as session:
            return stmt.rowcount(session, params) == 1

    def _end(self, owner_id: str, run_id: str, thread_id: str, move: Move, to: RunStatus,
             event_type: str, data: Any, values: dict[str, Any], *, attempt: int | None = None,
             lease_before: datetime | None = None) -> Event | None:
        stmt, params = _update(owner_id, run_id, move, to, attempt=attempt,
                               lease_before=lease_before, values=values, numbered=True)
        try:
            with self._db.transaction() as session:
                cursor = event_queries.next_cursor(session, owner_id)  # the owner's lock first
                seq = stmt.scalar(session, params)
                if seq is None:
                    raise _Unchanged
                return event_queries.append_event(
                    session, owner_id, run_id, thread_id, event_type, data, seq=int(seq),
                    cursor=cursor)
        except _Unchanged:
            return None


def _claim_times(now: datetime, lease_seconds: float, hard_limit: float) -> dict[str, datetime]:
    """A claim's start, first lease end and hard deadline, as its statements' parameters."""
    return {"b_now": now, "b_lease": now + timedelta(seconds=lease_seconds),
            "b_deadline": now + timedelta(seconds=hard_limit)}


def _update(
    owner_id: str, run_id: str, move: Move, to: RunStatus, *, attempt: int | None,
    lease_before: datetime | None, values: dict[str, Any], numbered: bool,
) -> tuple[Prepared, dict[str, Any]]:
    """The conditional UPDATE applying `move` towards `to`, and its parameters.

    Raises:
        IllegalMove: `to` is not one of the move's targets.
    """
    if to not in move.targets:
        raise IllegalMove(f"{move.name} cannot end in {to.value}")
    if to.terminal:
        values.setdefault("finished_at", utcnow())
        values.setdefault("lease_expires_at", None)
    values["status"] = to.value
    columns = tuple(sorted(values))
    stmt = statements.transition(tuple(sorted(s.value for s in move.sources)),
                                 attempt is not None, lease_before is not None, columns, numbered)
    params = {"b_owner": owner_id, "b_run": run_id, **{f"v_{k}": values[k] for k in columns}}
    if attempt is not None:
        params["b_attempt"] = attempt
    if lease_before is not None:
        params["b_lease_before"] = lease_before
    return stmt, params
