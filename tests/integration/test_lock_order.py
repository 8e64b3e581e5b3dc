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
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text

from events.eventlog import EventLog
from storage import statements
from storage.db import Database
from storage.runstate import Claim, RunStates
from tests.support import wait_until


@pytest.fixture(scope="module")
def pg(postgres_url: str) -> Iterator[Database]:
    database = Database(postgres_url)
    yield database
    database.dispose()


def _queued_run(db: Database, owner: str) -> str:
    run_id = uuid.uuid4().hex
    with db.transaction() as connection:
        assert RunStates.create(connection, owner, run_id=run_id, thread_id="t", agent="echo",
                                  input=None, metadata={}, request_id="req",
                                  created_at=datetime.now(UTC), max_waiting=100)
    return run_id


def _cancel(db: Database, owner: str, run_id: str) -> Any:
    return RunStates(db).cancel_waiting(owner, run_id, "t", event_type="agent_cancelled",
                                        data={"reason": "test"}, error="test")


def _append(db: Database, owner: str, run_id: str) -> Any:
    return EventLog(db).append(owner, run_id, "t", "agent_thinking", {"text": "hm"}, attempt=1)


def blocked_by(db: Database, pid: int) -> int:
    """How many sessions wait for a lock the session `pid` holds."""
    with db.engine.connect() as connection:
        return int(connection.execute(
            text("SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))"),
            {"pid": pid}).scalar_one())


@pytest.mark.parametrize("write", [_cancel, _append], ids=["status change", "append"])
def test_an_event_write_waits_for_a_claim_holding_the_owner_instead_of_deadlocking_it(
    pg: Database, write: Callable[[Database, str, str], Any],
) -> None:
    owner = f"locks-{uuid.uuid4().hex[:10]}"
    run_id = _queued_run(pg, owner)
    if write is _append:  # a running run, attempt 1, for the append to extend
        claimed, attempt, _ = RunStates(pg).claim(owner, run_id, "t", dispatch=1, max_running=4,
                                                  lease_seconds=30, hard_limit=60,
                                                  started_type="agent_started",
                                                  started_data=lambda attempt: {})
        assert (claimed, attempt) == (Claim.CLAIMED, 1)

    # A claim in flight: it holds the owner's row (its first statement) and is about to update
    # the run's row.
    claim = pg.engine.connect()
    holder = claim.begin()
    statements.NEXT_CURSOR.scalar(claim, {"b_owner": owner})
    claim_pid = claim.execute(text("SELECT pg_backend_pid()")).scalar_one()

    outcome: dict[str, Any] = {}

    def other_transaction() -> None:
        try:
            outcome["event"] = write(pg, owner, run_id)
        except Exception as exc:  # noqa: BLE001 - reported by the assertions below
            outcome["error"] = exc

    writer = threading.Thread(target=other_transaction)
    writer.start()
    try:
        # The writer waits for a lock the claim holds (which one is the question).
        wait_until(lambda: blocked_by(pg, claim_pid), 10, "the writer waits for the claim")
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
