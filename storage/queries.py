"""The only SQL that reads or writes user-owned rows; every function takes `owner_id` first.

Ownership is part of each WHERE clause, so a foreign id and a missing id are the same
`None` to the caller.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Insert, and_, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from storage.models import EventRecord, Run, RunStatus, Thread, UserStream, utcnow


def _insert_ignoring_conflict(session: Session, table: Any, values: dict[str, Any]) -> None:
    dialect = session.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    stmt: Insert = module.insert(table).values(**values).on_conflict_do_nothing()
    session.execute(stmt)


def ensure_thread(session: Session, owner_id: str, thread_id: str) -> None:
    """Create the owner's thread on first use; another owner's same id is a different thread."""
    _insert_ignoring_conflict(
        session, Thread, {"owner_id": owner_id, "id": thread_id, "created_at": utcnow()}
    )


def thread_exists(session: Session, owner_id: str, thread_id: str) -> bool:
    stmt = select(Thread.id).where(Thread.owner_id == owner_id, Thread.id == thread_id)
    return session.execute(stmt).first() is not None


def create_run(
    session: Session,
    owner_id: str,
    *,
    run_id: str,
    thread_id: str,
    agent: str,
    input: Any,
    metadata: dict[str, Any],
    request_id: str,
    created_at: datetime,
) -> Run:
    ensure_thread(session, owner_id, thread_id)
    run = Run(
        id=run_id, owner_id=owner_id, thread_id=thread_id, agent=agent, input=input,
        meta=metadata, request_id=request_id, status=RunStatus.QUEUED.value,
        created_at=created_at, attempt=0, last_seq=0,
    )
    session.add(run)
    session.flush()
    return run


def get_run(session: Session, owner_id: str, run_id: str) -> Run | None:
    stmt = select(Run).where(Run.owner_id == owner_id, Run.id == run_id)
    return session.execute(stmt).scalar_one_or_none()


def list_runs(
    session: Session,
    owner_id: str,
    thread_id: str,
    *,
    limit: int,
    before: tuple[datetime, str] | None = None,
) -> list[Run]:
    """Newest first; `before` is the (created_at, id) keyset of the last row already seen."""
    stmt = select(Run).where(Run.owner_id == owner_id, Run.thread_id == thread_id)
    if before is not None:
        ts, rid = before
        stmt = stmt.where(or_(Run.created_at < ts, and_(Run.created_at == ts, Run.id < rid)))
    stmt = stmt.order_by(Run.created_at.desc(), Run.id.desc()).limit(limit)
    return list(session.execute(stmt).scalars())


def claim_run(session: Session, owner_id: str, run_id: str) -> bool:
    """Move a queued run to running; False when another delivery already claimed it."""
    stmt = (
        update(Run)
        .where(Run.owner_id == owner_id, Run.id == run_id, Run.status == RunStatus.QUEUED.value)
        .values(status=RunStatus.RUNNING.value, started_at=utcnow(), attempt=Run.attempt + 1)
    )
    return session.execute(stmt).rowcount == 1


def finish_run(
    session: Session,
    owner_id: str,
    run_id: str,
    *,
    status: RunStatus,
    output: Any = None,
    error: str | None = None,
) -> bool:
    """Record a terminal state, only over a running run (a stale worker cannot overwrite it)."""
    stmt = (
        update(Run)
        .where(Run.owner_id == owner_id, Run.id == run_id, Run.status == RunStatus.RUNNING.value)
        .values(status=status.value, output=output, error=error, finished_at=utcnow())
    )
    return session.execute(stmt).rowcount == 1


def append_event(
    session: Session, owner_id: str, run_id: str, thread_id: str, type: str, data: Any
) -> EventRecord:
    """Number an event (next `seq` of the run, next `cursor` of the owner) and store it.

    Both counters are incremented in the database, so a run redelivered to another worker
    continues its sequence, and the owner's row lock orders cursors as commits land.
    """
    seq = session.execute(
        update(Run)
        .where(Run.owner_id == owner_id, Run.id == run_id)
        .values(last_seq=Run.last_seq + 1)
        .returning(Run.last_seq)
    ).scalar_one()
    _insert_ignoring_conflict(session, UserStream, {"owner_id": owner_id, "last_cursor": 0})
    cursor = session.execute(
        update(UserStream)
        .where(UserStream.owner_id == owner_id)
        .values(last_cursor=UserStream.last_cursor + 1)
        .returning(UserStream.last_cursor)
    ).scalar_one()
    record = EventRecord(
        owner_id=owner_id, run_id=run_id, thread_id=thread_id, seq=seq, cursor=cursor,
        type=type, data=data, ts=utcnow(),
    )
    session.add(record)
    session.flush()
    return record


def events_after(
    session: Session, owner_id: str, run_id: str, after_seq: int, limit: int = 1000
) -> list[EventRecord]:
    stmt = (
        select(EventRecord)
        .where(
            EventRecord.owner_id == owner_id,
            EventRecord.run_id == run_id,
            EventRecord.seq > after_seq,
        )
        .order_by(EventRecord.seq)
        .limit(limit)
    )
    return list(session.execute(stmt).scalars())


def user_events_after(
    session: Session, owner_id: str, after_cursor: int, *, thread_id: str | None = None,
    limit: int = 1000,
) -> list[EventRecord]:
    """The owner's events after a per-user cursor, oldest first (optionally one thread's)."""
    stmt = select(EventRecord).where(
        EventRecord.owner_id == owner_id, EventRecord.cursor > after_cursor
    )
    if thread_id is not None:
        stmt = stmt.where(EventRecord.thread_id == thread_id)
    return list(session.execute(stmt.order_by(EventRecord.cursor).limit(limit)).scalars())


def last_cursor(session: Session, owner_id: str) -> int:
    """The owner's newest cursor (0 before any event)."""
    stmt = select(UserStream.last_cursor).where(UserStream.owner_id == owner_id)
    return int(session.execute(stmt).scalar_one_or_none() or 0)


def oldest_retained(session: Session, owner_id: str, run_id: str | None = None) -> int | None:
    """The smallest cursor (or, for a run, seq) still stored; None when nothing is."""
    column = EventRecord.seq if run_id else EventRecord.cursor
    stmt = select(func.min(column)).where(EventRecord.owner_id == owner_id)
    if run_id:
        stmt = stmt.where(EventRecord.run_id == run_id)
    value = session.execute(stmt).scalar_one_or_none()
    return int(value) if value is not None else None


def purge_events_before(session: Session, cutoff: datetime) -> int:
    """Delete every event older than `cutoff` (retention); not owner-scoped by design."""
    return int(session.execute(delete(EventRecord).where(EventRecord.ts < cutoff)).rowcount)
