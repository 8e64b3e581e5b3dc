"""The durable event log: events are appended here before they are published."""
from __future__ import annotations

from typing import Any

from events.types import Event
from storage import queries
from storage.db import Database
from storage.models import EventRecord


def _to_event(record: EventRecord) -> Event:
    return Event(
        type=record.type, run_id=record.run_id, thread_id=record.thread_id, seq=record.seq,
        cursor=record.cursor, ts=record.ts, data=record.data,
    )


class EventLog:
    """Numbers and stores events in the database, so a reconnecting client can replay them."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def append(self, owner_id: str, run_id: str, thread_id: str, type: str, data: Any) -> Event:
        with self._db.session() as session:
            record = queries.append_event(session, owner_id, run_id, thread_id, type, data)
            event = _to_event(record)
        return event

    def read_after(
        self, owner_id: str, run_id: str, after_seq: int = 0, limit: int = 1000
    ) -> list[Event]:
        with self._db.session() as session:
            return [
                _to_event(r)
                for r in queries.events_after(session, owner_id, run_id, after_seq, limit)
            ]
