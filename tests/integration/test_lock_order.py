"""Transactions that write an event take the owner's cursor row before the run's row, as the
claim does, so two of them never wait for each other in a cycle.

PostgreSQL locks rows and breaks such a cycle by failing one transaction ("deadlock
detected"): a cancel of a queued run (run row, then owner) racing a worker's claim of it
(owner, then run row) did, and the cancel answered 500. SQLite has a single write lock, where
the question does not arise, so this runs against PostgreSQL (`postgres_url`, skipped when
there is none).
"""
from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text

from events.eventlog import EventLog
from storage import queries, statements
from storage.db import Database
from storage.models import WAITING, RunStatus


@pytest.fixture(scope="module")
def pg(postgres_url: str) -> Iterator[Database]:
    database = Database(postgres_url)
    yield database
    database.dispose()


def _queued_run(db: Database, owner: str) -> str:
    run_id = uuid.uuid4().hex
    with db.transaction() as connection:
        assert queries.create_run(connection, owner, run_id=run_id, thread_id="t", agent="echo",
                                  input=None, metadata={}, request_id="req",
                                  created_at=datetime.now(UTC), max_waiting=100)
    return run_id


def _cancel(log: EventLog, owner: str, run_id: str) -> Any:
    return log.transition(owner, run_id, "t", to=RunStatus.CANCELLED, from_statuses=WAITING,
                          attempt=None, event_type="agent_cancelled",
                          data={"reason": "test"}, error="test")


def _append(log: EventLog, owner: str, run_id: str) -> Any:
    return log.append(owner, run_id, "t", "agent_thinking", {"text": "hm"}, attempt=1)


@pytest.mark.parametrize("write", [_cancel, _append], ids=["status change", "append"])
def test_an_event_write_waits_for_a_claim_holding_the_owner_instead_of_deadlocking_it(
    pg: Database, write: Callable[[EventLog, str, str], Any],
) -> None:
    owner = f"locks-{uuid.uuid4().hex[:10]}"
    run_id = _queued_run(pg, owner)
    log = EventLog(pg)
    if write is _append:  # a running run, attempt 1, for the append to extend
        claimed, attempt, _ = log.claim(owner, run_id, "t", dispatch=1, max_running=4,
                                        lease_seconds=30, hard_limit=60,
                                        started_type="agent_started",
                                        started_data=lambda attempt: {})
        assert (claimed, attempt) == (queries.Claim.CLAIMED, 1)

    # A claim in flight: it holds the owner's row (its first statement) and is about to update
    # the run's row.
    claim = pg.engine.connect()
    holder = claim.begin()
    statements.NEXT_CURSOR.scalar(claim, {"b_owner": owner})

    outcome: dict[str, Any] = {}

    def other_transaction() -> None:
        try:
            outcome["event"] = write(log, owner, run_id)
        except Exception as exc:  # noqa: BLE001 - reported by the assertions below
            outcome["error"] = exc

    writer = threading.Thread(target=other_transaction)
    writer.start()
    time.sleep(0.5)  # the writer is now waiting for a lock (which one is the question)
    try:
        # The claim's next step touches the run's row. Had the writer locked that row first,
        # each would wait for the other and PostgreSQL would fail one after deadlock_timeout.
        claim.execute(text("SET LOCAL lock_timeout = '5s'"))
        claim.execute(text("UPDATE runs SET blocked_at = now() WHERE id = :id"), {"id": run_id})
        holder.commit()
    finally:
        claim.close()
        writer.join(30)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["event"] is not None
    assert outcome["event"].type == ("agent_cancelled" if write is _cancel else "agent_thinking")
