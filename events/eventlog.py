"""The durable event log: events are appended here before they are published."""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import select

from events.types import Event
from storage import event_queries, queries
from storage.db import Database
from storage.models import EventRecord, RunStatus, UserStream


def _to_event(record: EventRecord) -> Event:
    return Event(
        type=record.type, run_id=record.run_id, thread_id=record.thread_id, seq=record.seq,
        cursor=record.cursor, ts=record.ts, data=record.data,
    )


def _logged(values: dict[str, Any]) -> Event:
    """The event just stored by `event_queries.append_event` (its row's values)."""
    return Event(
        type=values["type"], run_id=values["run_id"], thread_id=values["thread_id"],
        seq=values["seq"], cursor=values["cursor"], ts=values["ts"], data=values["data"],
    )


class _NotFree(Exception):
    """The one-statement claim did not apply: roll its transaction back."""


class _Unchanged(Exception):
    """The status change did not apply: roll back the cursor its transaction took."""


class EventLog:
    """Numbers and stores events in the database, so a reconnecting client can replay them.

    Lock order: every transaction here takes the owner's cursor row first (`next_cursor`, or
    the claim's `_lock_user`, the same row) and the run's row after it. On PostgreSQL two
    transactions taking them in opposite orders deadlock: a cancel of a queued run that
    locked the run first and a worker's claim of it that locked the owner first did, and one
    of them failed (`tests/integration/test_lock_order.py`).
    """

    def __init__(self, db: Database) -> None:
        self._db = db

    def append(
        self, owner_id: str, run_id: str, thread_id: str, type: str, data: Any,
        *, attempt: int | None = None,
    ) -> Event:
        """Raises queries.Superseded when `attempt` no longer holds the run."""
        with self._db.transaction() as session:
            cursor = event_queries.next_cursor(session, owner_id)  # the owner's lock first
            return _logged(event_queries.append_event(
                session, owner_id, run_id, thread_id, type, data, attempt=attempt,
                cursor=cursor))

    def claim(
        self, owner_id: str, run_id: str, thread_id: str, *, dispatch: int | None,
        max_running: int, lease_seconds: float, hard_limit: float, started_type: str,
        started_data: Callable[[int], Any],
    ) -> tuple[queries.Claim, int, Event | None]:
        """Claim a waiting run and, when claimed, log its first event (`started_type`, with
        `started_data(attempt)`) in the same transaction: one commit per run fewer on the way
        to the first event. The caller publishes the event.

        The common case (nothing in the way) takes three statements: the owner's cursor
        (which locks the owner), `queries.claim_if_free`, the event. Otherwise that
        transaction is rolled back and `queries.claim_and_number` tells why, step by step.

        Returns the claim's outcome, the attempt, and the logged event when claimed.
        """
        if dispatch is not None:
            try:
                with self._db.transaction() as session:
                    cursor = event_queries.next_cursor(session, owner_id)
                    claimed = queries.claim_if_free(
                        session, owner_id, run_id, dispatch=dispatch, max_running=max_running,
                        lease_seconds=lease_seconds, hard_limit=hard_limit)
                    if claimed is None:
                        raise _NotFree
                    attempt, seq = claimed
                    return queries.Claim.CLAIMED, attempt, _logged(event_queries.append_event(
                        session, owner_id, run_id, thread_id, started_type,
                        started_data(attempt), seq=seq, cursor=cursor))
            except _NotFree:
                pass
        with self._db.transaction() as session:
            claim, attempt, seq = queries.claim_and_number(
                session, owner_id, run_id, dispatch=dispatch, max_running=max_running,
                lease_seconds=lease_seconds, hard_limit=hard_limit,
            )
            if claim is not queries.Claim.CLAIMED:
                return claim, attempt, None
            return claim, attempt, _logged(event_queries.append_event(
                session, owner_id, run_id, thread_id, started_type, started_data(attempt),
                seq=seq))

    def transition(
        self, owner_id: str, run_id: str, thread_id: str, *, to: RunStatus,
        from_statuses: frozenset[RunStatus], attempt: int | None, event_type: str,
        data: Any, lease_before: datetime | None = None, **values: Any,
    ) -> Event | None:
        """Change the run's status and log its event in one transaction, or do neither
        (None) when the run is no longer in `from_statuses` for `attempt`."""
        try:
            with self._db.transaction() as session:
                cursor = event_queries.next_cursor(session, owner_id)  # the owner's lock first
                seq = queries.transition_numbered(session, owner_id, run_id, to=to,
                                                  from_statuses=from_statuses, attempt=attempt,
                                                  lease_before=lease_before, **values)
                if seq is None:
                    raise _Unchanged
                return _logged(event_queries.append_event(
                    session, owner_id, run_id, thread_id, event_type, data, seq=seq,
                    cursor=cursor))
        except _Unchanged:
            return None

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
            cutoff = datetime.now(timezone.utc) - older_than
            return event_queries.purge_events_before(session, cutoff)

    def read_after(
        self, owner_id: str, run_id: str, after_seq: int = 0, limit: int = 1000
    ) -> list[Event]:
        with self._db.session() as session:
            return [
                _to_event(r)
                for r in event_queries.events_after(session, owner_id, run_id, after_seq, limit)
            ]
