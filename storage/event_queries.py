"""The SQL of the event log: numbering and storing events, reading them back for replay, and
retention. Every read and write but the retention purge filters by owner in SQL.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from domain.errors import Superseded
from domain.events import Event
from storage import statements
from storage.models import EventRecord, UserStream, utcnow
from storage.prepared import Executor
from storage.queries import rowcount


def next_cursor(session: Executor, owner_id: str) -> int:
    """The owner's next event cursor. It takes the owner's row lock (PostgreSQL) or the write
    lock (SQLite) until the transaction ends, so cursors are handed out in commit order."""
    return int(statements.NEXT_CURSOR.scalar(session, {"b_owner": owner_id}))


def append_event(
    session: Executor, owner_id: str, run_id: str, thread_id: str, type: str, data: Any,
    *, attempt: int | None = None, seq: int | None = None, cursor: int | None = None,
) -> Event:
    """Number an event (next `seq` of the run, next `cursor` of the owner), store it and
    return it as stored.

    Both counters are incremented in the database, so a run redelivered to another worker
    continues its sequence, and the owner's row lock orders cursors as commits land. With
    `attempt`, only that attempt, while executing, may append. `seq`: already taken in this
    transaction by the UPDATE that changed the run (storage/runstate.py); `cursor`: already
    taken by `next_cursor`.

    Raises:
        Superseded: `attempt` no longer holds the run.
    """
    key = {"b_owner": owner_id, "b_run": run_id}
    if seq is None:
        if attempt is None:
            seq = statements.NEXT_SEQ.scalar(session, key)
        else:
            seq = statements.NEXT_SEQ_OF_ATTEMPT.scalar(session, {**key, "b_attempt": attempt})
        if seq is None:
            raise Superseded(run_id)
    if cursor is None:
        cursor = next_cursor(session, owner_id)
    values = {"owner_id": owner_id, "run_id": run_id, "thread_id": thread_id, "seq": seq,
              "cursor": cursor, "type": type, "data": data, "ts": utcnow()}
    statements.INSERT_EVENT.rowcount(session, values)
    return Event(type=type, run_id=run_id, thread_id=thread_id, seq=seq, cursor=cursor,
                 ts=values["ts"], data=data)


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


def first_seq_after_cursor(session: Session, owner_id: str, run_id: str,
                           after_cursor: int) -> int | None:
    """The run's smallest `seq` whose per-user cursor is above `after_cursor` (None: none)."""
    stmt = select(func.min(EventRecord.seq)).where(
        EventRecord.owner_id == owner_id, EventRecord.run_id == run_id,
        EventRecord.cursor > after_cursor)
    value = session.execute(stmt).scalar_one_or_none()
    return int(value) if value is not None else None


def user_events_after(
    session: Session, owner_id: str, after_cursor: int, *, thread_id: str | None = None,
    after_seq: int = 0, limit: int = 1000,
) -> list[EventRecord]:
    """The owner's events after a per-user cursor, oldest first (optionally one thread's,
    and only each run's events after `after_seq`: filtered here, so a replay that wants
    nothing of a long history reads none of it)."""
    stmt = select(EventRecord).where(
        EventRecord.owner_id == owner_id, EventRecord.cursor > after_cursor
    )
    if thread_id is not None:
        stmt = stmt.where(EventRecord.thread_id == thread_id)
    if after_seq:
        stmt = stmt.where(EventRecord.seq > after_seq)
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
    return rowcount(session.execute(delete(EventRecord).where(EventRecord.ts < cutoff)))
