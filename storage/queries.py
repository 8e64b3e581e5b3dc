"""The SQL of user-owned runs and threads: submission, reads, the claim, status changes and
leases; every function takes `owner_id` first (the event log's is in `event_queries`).

Ownership is part of each WHERE clause, so a foreign id and a missing id are the same
`None` to the caller.
"""
from __future__ import annotations

import enum
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from storage import statements
from storage.models import (
    EXECUTING,
    WAITING,
    Run,
    RunStatus,
    Thread,
    utcnow,
)
from storage.prepared import Executor, Prepared


def rowcount(result: Any) -> int:
    """Rows an UPDATE/DELETE matched (typed: Result hides CursorResult.rowcount)."""
    return int(result.rowcount)


# The hot paths (submission, claim, events, transitions) run in a Core transaction
# (`Database.transaction()`); the rest in an ORM session. Their functions take either
# (`Executor`).


def ensure_thread(session: Executor, owner_id: str, thread_id: str) -> None:
    """Create the owner's thread on first use; another owner's same id is a different thread."""
    statements.ENSURE_THREAD.rowcount(
        session, {"b_owner": owner_id, "b_thread": thread_id, "b_now": utcnow()})


def thread_exists(session: Session, owner_id: str, thread_id: str) -> bool:
    stmt = select(Thread.id).where(Thread.owner_id == owner_id, Thread.id == thread_id)
    return session.execute(stmt).first() is not None


def create_run(
    session: Executor,
    owner_id: str,
    *,
    run_id: str,
    thread_id: str,
    agent: str,
    input: Any,
    metadata: dict[str, Any],
    request_id: str,
    created_at: datetime,
    queue: str = "runlane",
    idempotency_key: str | None = None,
    max_waiting: int | None = None,
) -> bool:
    """Insert a queued run (and its thread on first use). With `max_waiting`, only while the
    owner has fewer waiting runs than that, checked by the insert itself: False when not.
    The new run's columns are the arguments, status `queued`, attempt 0 and dispatch 1."""
    ensure_thread(session, owner_id, thread_id)
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
    return statements.INSERT_RUN_IF_ROOM.first(session, {**params, "b_max": max_waiting}) is not None


def get_run(session: Session, owner_id: str, run_id: str) -> Run | None:
    stmt = select(Run).where(Run.owner_id == owner_id, Run.id == run_id)
    return session.execute(stmt).scalar_one_or_none()


def list_runs(
    session: Session,
    owner_id: str,
    thread_id: str | None,
    *,
    limit: int,
    before: tuple[datetime, str] | None = None,
) -> list[Run]:
    """Newest first, of one thread or (None) of all the owner's threads; `before` is the
    (created_at, id) keyset of the last row already seen."""
    stmt = select(Run).where(Run.owner_id == owner_id)
    if thread_id is not None:
        stmt = stmt.where(Run.thread_id == thread_id)
    if before is not None:
        ts, rid = before
        stmt = stmt.where(or_(Run.created_at < ts, and_(Run.created_at == ts, Run.id < rid)))
    stmt = stmt.order_by(Run.created_at.desc(), Run.id.desc()).limit(limit)
    return list(session.execute(stmt).scalars())


class Claim(enum.Enum):
    CLAIMED = "claimed"
    BLOCKED = "blocked"  # the user is at its running limit or the thread is busy: try later
    STALE = "stale"  # not waiting any more, or a newer dispatch exists: drop the message


def _lock_user(session: Executor, owner_id: str) -> None:
    """Serialise one user's claims: one upsert that takes the user's row lock (PostgreSQL) or
    the write lock (SQLite) until the transaction ends, creating the row on first use."""
    statements.LOCK_USER.rowcount(session, {"b_owner": owner_id})


def claim_run(
    session: Executor, owner_id: str, run_id: str, *, dispatch: int | None, max_running: int,
    lease_seconds: float, hard_limit: float,
) -> tuple[Claim, int]:
    """Move a waiting run to running (attempt + 1) if its user and thread allow it.

    Returns the outcome and the new attempt number. A duplicate or outdated message is STALE.
    """
    claim, attempt, _seq = _claim(session, owner_id, run_id, dispatch=dispatch,
                                  max_running=max_running, lease_seconds=lease_seconds,
                                  hard_limit=hard_limit, numbered=False)
    return claim, attempt


def claim_and_number(
    session: Executor, owner_id: str, run_id: str, *, dispatch: int | None, max_running: int,
    lease_seconds: float, hard_limit: float,
) -> tuple[Claim, int, int | None]:
    """`claim_run`, whose UPDATE also takes the `seq` of the run's first event (to pass to
    `append_event` in the same transaction). Returns the outcome, attempt and that seq."""
    return _claim(session, owner_id, run_id, dispatch=dispatch, max_running=max_running,
                  lease_seconds=lease_seconds, hard_limit=hard_limit, numbered=True)


def claim_if_free(
    session: Executor, owner_id: str, run_id: str, *, dispatch: int, max_running: int,
    lease_seconds: float, hard_limit: float,
) -> tuple[int, int] | None:
    """The claim of `claim_and_number` in one statement, for its common case (waiting under
    this dispatch, the user below `max_running`, nothing ahead in the thread). Returns the
    attempt and the first event's seq, or None: then roll back and ask `claim_and_number`,
    which tells STALE from BLOCKED. The caller must hold the owner's lock first
    (`event_queries.next_cursor` or `_lock_user`): the counts are read under it."""
    row = statements.CLAIM_IF_FREE.first(session, {
        "b_owner": owner_id, "b_run": run_id, "b_dispatch": dispatch, "b_max": max_running,
        **_claim_times(utcnow(), lease_seconds, hard_limit)})
    return (int(row[0]), int(row[1])) if row is not None else None


def _claim_times(now: datetime, lease_seconds: float, hard_limit: float) -> dict[str, datetime]:
    """A claim's start, first lease end and hard deadline, as its statements' parameters."""
    return {"b_now": now, "b_lease": now + timedelta(seconds=lease_seconds),
            "b_deadline": now + timedelta(seconds=hard_limit)}


def _claim(
    session: Executor, owner_id: str, run_id: str, *, dispatch: int | None, max_running: int,
    lease_seconds: float, hard_limit: float, numbered: bool,
) -> tuple[Claim, int, int | None]:
    _lock_user(session, owner_id)
    key = {"b_owner": owner_id, "b_run": run_id}
    run = statements.CLAIM_READ.first(session, key)
    if run is None:
        return Claim.STALE, 0, None
    status, run_dispatch, run_attempt, thread_id, created_at = run
    if status not in _values(WAITING) or (dispatch is not None and run_dispatch != dispatch):
        return Claim.STALE, 0, None
    n_running, n_ahead = statements.CLAIM_COUNTS.first(
        session, {**key, "b_thread": thread_id, "b_created": created_at}) or (0, 0)
    now = utcnow()
    if n_running >= max_running or n_ahead:
        # Marked so that a finishing run re-sends this one (and only such runs) at once.
        statements.MARK_BLOCKED.rowcount(session, {**key, "b_now": now})
        return Claim.BLOCKED, 0, None
    attempt = run_attempt + 1
    params = {**key, "b_prev": run_attempt, "b_attempt": attempt,
              **_claim_times(now, lease_seconds, hard_limit)}
    if numbered:
        seq = statements.CLAIM_NUMBERED.scalar(session, params)
        return (Claim.CLAIMED, attempt, seq) if seq is not None else (Claim.STALE, 0, None)
    claimed = statements.CLAIM.rowcount(session, params)
    return (Claim.CLAIMED, attempt, None) if claimed == 1 else (Claim.STALE, 0, None)


def _values(statuses: frozenset[RunStatus]) -> list[str]:
    return sorted(s.value for s in statuses)


def transition(
    session: Executor,
    owner_id: str,
    run_id: str,
    *,
    to: RunStatus,
    from_statuses: frozenset[RunStatus],
    attempt: int | None = None,
    lease_before: datetime | None = None,
    **values: Any,
) -> bool:
    """Change a run's status only from `from_statuses` (and only for `attempt`, and only if
    its lease lapsed before `lease_before`, when given), so a stale or duplicate worker, or a
    reaper racing a heartbeat, can never overwrite a newer state."""
    stmt, params = _transition(owner_id, run_id, to=to, from_statuses=from_statuses,
                               attempt=attempt, lease_before=lease_before, values=values,
                               numbered=False)
    return stmt.rowcount(session, params) == 1


def transition_numbered(
    session: Executor,
    owner_id: str,
    run_id: str,
    *,
    to: RunStatus,
    from_statuses: frozenset[RunStatus],
    attempt: int | None = None,
    lease_before: datetime | None = None,
    **values: Any,
) -> int | None:
    """`transition`, whose UPDATE also takes the `seq` of the event that goes with the change
    (pass it to `append_event` in the same transaction); None when nothing changed."""
    stmt, params = _transition(owner_id, run_id, to=to, from_statuses=from_statuses,
                               attempt=attempt, lease_before=lease_before, values=values,
                               numbered=True)
    seq = stmt.scalar(session, params)
    return int(seq) if seq is not None else None


def _transition(
    owner_id: str, run_id: str, *, to: RunStatus, from_statuses: frozenset[RunStatus],
    attempt: int | None, lease_before: datetime | None, values: dict[str, Any], numbered: bool,
) -> tuple[Prepared, dict[str, Any]]:
    if to.terminal:
        values.setdefault("finished_at", utcnow())
        values.setdefault("lease_expires_at", None)
    values["status"] = to.value
    columns = tuple(sorted(values))
    stmt = statements.transition(tuple(_values(from_statuses)), attempt is not None,
                                 lease_before is not None, columns, numbered)
    params = {"b_owner": owner_id, "b_run": run_id, **{f"v_{k}": values[k] for k in columns}}
    if attempt is not None:
        params["b_attempt"] = attempt
    if lease_before is not None:
        params["b_lease_before"] = lease_before
    return stmt, params


def renew_lease(
    session: Session, owner_id: str, run_id: str, attempt: int, lease_seconds: float
) -> tuple[str, datetime | None] | None:
    """Extend the lease of the attempt that holds it; None when it no longer does.

    Returns the run's status and when cancellation was requested.
    """
    renewed = rowcount(session.execute(
        update(Run)
        .where(Run.owner_id == owner_id, Run.id == run_id, Run.attempt == attempt,
               Run.status.in_(_values(EXECUTING)))
        .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
    ))
    if renewed != 1:
        return None
    row = session.execute(
        select(Run.status, Run.cancel_requested_at).where(Run.id == run_id)
    ).one()
    return str(row[0]), row[1]


def run_status(session: Executor, owner_id: str, run_id: str, attempt: int) -> str | None:
    """The status as seen by one attempt; None when another attempt took over."""
    status = statements.RUN_STATUS.scalar(
        session, {"b_owner": owner_id, "b_run": run_id, "b_attempt": attempt})
    return str(status) if status is not None else None


def bump_dispatch(session: Session, owner_id: str, run_id: str) -> int | None:
    """A new token for the run's next task message (older messages become STALE)."""
    return session.execute(
        update(Run)
        .where(Run.owner_id == owner_id, Run.id == run_id, Run.status.in_(_values(WAITING)))
        .values(dispatch=Run.dispatch + 1, dispatched_at=utcnow(), blocked_at=None)
        .returning(Run.dispatch)
    ).scalar_one_or_none()


def find_by_idempotency_key(session: Session, owner_id: str, key: str) -> Run | None:
    stmt = select(Run).where(Run.owner_id == owner_id, Run.idempotency_key == key)
    return session.execute(stmt).scalar_one_or_none()


def count_waiting(session: Executor, owner_id: str) -> int:
    return int(statements.COUNT_WAITING.scalar(session, {"b_owner": owner_id}) or 0)


def active_ids_in_thread(session: Executor, owner_id: str, thread_id: str) -> list[str]:
    """Ids of the thread's waiting and executing runs, oldest first (sorted here: few rows,
    and the statement then reads only them, not the thread's history)."""
    rows = statements.ACTIVE_IN_THREAD.all(session, {"b_owner": owner_id, "b_thread": thread_id})
    return [run_id for run_id, _created in sorted(rows, key=lambda row: (row[1], row[0]))]


def next_blocked(session: Executor, owner_id: str, limit: int) -> list[str]:
    """Ids of the owner's oldest waiting runs that a claim found blocked: the ones to re-send
    when a slot frees up. Waiting runs never blocked still have their message queued."""
    return [row[0] for row in statements.NEXT_BLOCKED.all(
        session, {"b_owner": owner_id, "b_limit": limit})]


# -- operations across all owners (the reaper); never reachable from a user's request ------

def get_run_any_owner(session: Session, run_id: str) -> Run | None:
    """For the worker's refusal of forged messages only: the run's real owner is unknown."""
    return session.execute(select(Run).where(Run.id == run_id)).scalar_one_or_none()


def lapsed_leases(session: Session, now: datetime, limit: int = 100) -> list[Run]:
    stmt = (select(Run).where(Run.status.in_(_values(EXECUTING)), Run.lease_expires_at < now)
            .limit(limit))
    return list(session.execute(stmt).scalars())


def undispatched(session: Session, before: datetime, limit: int = 100) -> list[Run]:
    """Waiting runs whose last task message is older than `before` (lost, or never sent)."""
    stmt = (select(Run).where(Run.status.in_(_values(WAITING)),
                              or_(Run.dispatched_at.is_(None), Run.dispatched_at < before))
            .order_by(Run.created_at).limit(limit))
    return list(session.execute(stmt).scalars())


class Superseded(Exception):
    """The attempt that tried to write no longer holds the run (reaped, cancelled, finished)."""
