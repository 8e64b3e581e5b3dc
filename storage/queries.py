"""The SQL of user-owned runs and threads: reads, the dispatch token, the waiting counts;
every function takes `owner_id` first (the event log's is in `event_queries`). A run's status,
attempt and lease are written by storage/runstate.py alone.

Ownership is part of each WHERE clause, so a foreign id and a missing id are the same
`None` to the caller.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from domain.status import EXECUTING, WAITING, RunStatus
from storage import statements
from storage.models import Run, Thread, utcnow
from storage.prepared import Executor


def rowcount(result: Any) -> int:
    """Rows an UPDATE/DELETE matched (typed: Result hides CursorResult.rowcount)."""
    return int(result.rowcount)


# The hot paths (submission, claim, events, transitions) run in a Core transaction
# (`Database.transaction()`); the rest in an ORM session. Their functions take either
# (`Executor`).


def thread_exists(session: Session, owner_id: str, thread_id: str) -> bool:
    stmt = select(Thread.id).where(Thread.owner_id == owner_id, Thread.id == thread_id)
    return session.execute(stmt).first() is not None


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


def _values(statuses: frozenset[RunStatus]) -> list[str]:
    return sorted(s.value for s in statuses)


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
