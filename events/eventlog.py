"""The durable event log: events are appended here before they are published."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from domain.events import Event
from domain.status import RunStatus
from storage import event_queries, queries
from storage.db import Database
from storage.models import EventRecord, UserStream


def _to_event(record: EventRecord) -> Event:
    return Event(
        type=record.type, run_id=record.run_id, thread_id=record.thread_id, seq=record.seq,
        cursor=record.cursor, ts=record.ts, data=record.data,
    )


class EventLog:
    """Numbers and stores events in the database, so a reconnecting client can replay them.

    A run's status changes, with the events that go with them, are written by
    storage/runstate.py; this log appends the events in between and reads them back.

    Lock order: every transaction here and in runstate takes the owner's cursor row first
    (`next_cursor`, or the claim's LOCK_USER, the same row) and the run's row after it. On
    PostgreSQL two transactions taking them in opposite orders deadlock: a cancel of a queued
    run that locked the run first and a worker's claim of it that locked the owner first did,
    and one of them failed (`tests/integration/test_lock_order.py`).
    """

    def __init__(self, db: Database) -> None:
        self._db = db

    def append(
        self, owner_id: str, run_id: str, thread_id: str, type: str, data: Any,
        *, attempt: int | None = None,
    ) -> Event:
        """Raises domain.errors.Superseded when `attempt` no longer holds the run."""
        with self._db.transaction() as session:
            cursor = event_queries.next_cursor(session, owner_id)  # the owner's lock first
            return event_queries.append_event(
                session, owner_id, run_id, thread_id, type, data, attempt=attempt,
                cursor=cursor)

    def user_after(
        self, owner_id: str, after_cursor: int, *, thread_id: str | None = None,
        after_seq: int = 0, limit: int = 1000,
    ) -> list[Event]:
        with self._db.session() as session:
            return [
                _to_event(r)
                for r in event_queries.user_events_after(
                    session, owner_id, after_cursor, thread_id=thread_id, after_seq=after_seq,
                    limit=limit,
                )
            ]

    def first_seq_after(self, owner_id: str, run_id: str, after_cursor: int) -> int | None:
        """The run's first `seq` logged after the per-user cursor `after_cursor`."""
        with self._db.session() as session:
            return event_queries.first_seq_after_cursor(session, owner_id, run_id, after_cursor)

    def last_cursor(self, owner_id: str) -> int:
        with self._db.session() as session:
            return event_queries.last_cursor(session, owner_id)

    def last_cursors(self, owner_ids: list[str]) -> dict[str, int]:
        """The newest cursor of each of `owner_ids` that has one, in one indexed read (the
        routers' tail check: every connected user, once a second)."""
        if not owner_ids:
            return {}
        stmt = select(UserStream.owner_id, UserStream.last_cursor).where(
            UserStream.owner_id.in_(owner_ids))
        with self._db.session() as session:
            return {owner: int(cursor or 0) for owner, cursor in session.execute(stmt)}

    def run_finished(self, owner_id: str, run_id: str) -> bool:
        """Whether the run is in a terminal status (its terminal event is then logged: both
        are written in one transaction)."""
        with self._db.session() as session:
            run = queries.get_run(session, owner_id, run_id)
            return run is not None and RunStatus(run.status).terminal

    def replay_gap(self, owner_id: str, after: int, run_id: str | None = None) -> bool:
        """True when events after `after` (a cursor, or a run's seq) were purged by retention,
        so a replay from there cannot be complete."""
        with self._db.session() as session:
            oldest = event_queries.oldest_retained(session, owner_id, run_id)
            if run_id is not None:
                run = queries.get_run(session, owner_id, run_id)
                newest = run.last_seq if run is not None else 0
            else:
                newest = event_queries.last_cursor(session, owner_id)
        if newest <= after:
            return False
        return oldest is None or oldest > after + 1

    def purge(self, older_than: timedelta) -> int:
        with self._db.session() as session:
            cutoff = datetime.now(UTC) - older_than
            return event_queries.purge_events_before(session, cutoff)

    def read_after(
        self, owner_id: str, run_id: str, after_seq: int = 0, limit: int = 1000
    ) -> list[Event]:
        with self._db.session() as session:
            return [
                _to_event(r)
                for r in event_queries.events_after(session, owner_id, run_id, after_seq, limit)
            ]
