"""The claim against a real database (SQLite, or PostgreSQL with RUNLANE_TEST_DATABASE_URL):
its one-statement common case and its step-by-step fallback must reach the same decisions,
and rows written through `Prepared` must read back through the ORM exactly as written."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domain.status import RunStatus
from events.eventlog import EventLog
from storage import queries
from storage.db import Database
from storage.runstate import Claim, RunStates

STARTED = "agent_started"


def submit(db: Database, owner: str, thread: str = "t", *, created: datetime | None = None,
           input: Any = None, metadata: dict[str, Any] | None = None) -> str:
    run_id = uuid.uuid4().hex
    with db.transaction() as connection:
        assert RunStates.create(
            connection, owner, run_id=run_id, thread_id=thread, agent="echo", input=input,
            metadata=metadata or {}, request_id="req", created_at=created or datetime.now(UTC),
            max_waiting=100)
    return run_id


def claim(db: Database, owner: str, run_id: str, *, dispatch: int | None = 1,
          max_running: int = 4, thread: str = "t") -> tuple[Claim, int, Any]:
    return RunStates(db).claim(
        owner, run_id, thread, dispatch=dispatch, max_running=max_running, lease_seconds=30,
        hard_limit=60, started_type=STARTED, started_data=lambda attempt: {"attempt": attempt})


def finish(db: Database, owner: str, run_id: str, thread: str = "t") -> Any:
    return RunStates(db).finish(owner, run_id, thread, 1, to=RunStatus.COMPLETED,
                                event_type="agent_completed", data={})


def owner() -> str:
    return f"claim-{uuid.uuid4().hex[:10]}"


def test_a_free_run_is_claimed_with_its_first_event_numbered_and_logged(db: Database) -> None:
    alice = owner()
    run_id = submit(db, alice)
    outcome, attempt, event = claim(db, alice, run_id)
    assert (outcome, attempt) == (Claim.CLAIMED, 1)
    assert (event.type, event.seq, event.data) == (STARTED, 1, {"attempt": 1})
    with db.session() as session:
        run = queries.get_run(session, alice, run_id)
        assert run is not None
        assert (run.status, run.attempt, run.last_seq) == ("running", 1, 1)
        assert run.blocked_at is None and run.lease_expires_at is not None
        assert run.lease_expires_at > datetime.now(UTC) + timedelta(seconds=20)
    logged = EventLog(db).read_after(alice, run_id)
    assert [(e.seq, e.cursor, e.type) for e in logged] == [(1, event.cursor, STARTED)]
    assert EventLog(db).last_cursor(alice) == event.cursor


def test_a_second_delivery_of_the_same_message_is_stale(db: Database) -> None:
    alice = owner()
    run_id = submit(db, alice)
    assert claim(db, alice, run_id)[0] is Claim.CLAIMED
    assert claim(db, alice, run_id)[0] is Claim.STALE


def test_an_outdated_dispatch_token_is_stale(db: Database) -> None:
    alice = owner()
    run_id = submit(db, alice)  # dispatch 1
    assert claim(db, alice, run_id, dispatch=2)[0] is Claim.STALE
    assert claim(db, alice, run_id, dispatch=1)[0] is Claim.CLAIMED


def test_another_owners_run_is_stale_and_untouched(db: Database) -> None:
    alice, mallory = owner(), owner()
    run_id = submit(db, alice)
    assert claim(db, mallory, run_id)[0] is Claim.STALE
    assert claim(db, alice, run_id)[0] is Claim.CLAIMED


def test_a_user_at_the_running_limit_is_blocked_and_marked(db: Database) -> None:
    alice = owner()
    first = submit(db, alice, thread="a")
    second = submit(db, alice, thread="b")
    assert claim(db, alice, first, max_running=1, thread="a")[0] is Claim.CLAIMED
    outcome, attempt, event = claim(db, alice, second, max_running=1, thread="b")
    assert (outcome, attempt, event) == (Claim.BLOCKED, 0, None)
    with db.transaction() as connection:
        assert queries.next_blocked(connection, alice, 4) == [second]
    # The first run ends: the blocked one is claimable now, and no longer marked.
    assert finish(db, alice, first) is not None
    assert claim(db, alice, second, max_running=1, thread="b")[0] is Claim.CLAIMED
    with db.transaction() as connection:
        assert queries.next_blocked(connection, alice, 4) == []


def test_a_run_waits_behind_older_runs_of_its_thread(db: Database) -> None:
    alice = owner()
    now = datetime.now(UTC)
    older = submit(db, alice, created=now - timedelta(seconds=1))
    newer = submit(db, alice, created=now)
    assert claim(db, alice, newer)[0] is Claim.BLOCKED  # the older one waits ahead
    assert claim(db, alice, older)[0] is Claim.CLAIMED
    assert claim(db, alice, newer)[0] is Claim.BLOCKED  # and now runs ahead
    assert finish(db, alice, older) is not None
    assert claim(db, alice, newer)[0] is Claim.CLAIMED


def test_other_users_runs_never_block_a_claim(db: Database) -> None:
    alice, bob = owner(), owner()
    for n in range(3):
        run_id = submit(db, bob, thread=f"b{n}")
        assert claim(db, bob, run_id, max_running=5, thread=f"b{n}")[0] is Claim.CLAIMED
    assert claim(db, alice, submit(db, alice), max_running=1)[0] is Claim.CLAIMED


def test_the_fallback_claims_a_message_without_dispatch_token(db: Database) -> None:
    alice = owner()
    run_id = submit(db, alice)
    outcome, attempt, event = claim(db, alice, run_id, dispatch=None)
    assert (outcome, attempt, event.seq) == (Claim.CLAIMED, 1, 1)


@pytest.mark.parametrize("value", [None, {"nested": [1, "two", None]}, "text", 0])
def test_rows_written_through_prepared_statements_read_back_unchanged(db: Database,
                                                                      value: Any) -> None:
    alice = owner()
    created = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    run_id = submit(db, alice, created=created, input=value, metadata={"k": value})
    with db.session() as session:
        run = queries.get_run(session, alice, run_id)
        assert run is not None
        assert (run.input, run.meta, run.status) == (value, {"k": value}, "queued")
        assert run.created_at == created and run.dispatched_at == created
        assert run.created_at.tzinfo is not None
    outcome, _attempt, started = claim(db, alice, run_id)
    assert outcome is Claim.CLAIMED
    ended = RunStates(db).finish(alice, run_id, "t", 1, to=RunStatus.COMPLETED,
                                 event_type="agent_completed", data={"output": value},
                                 output=value)
    assert ended is not None and (ended.seq, ended.cursor) == (2, started.cursor + 1)
    with db.session() as session:
        run = queries.get_run(session, alice, run_id)
        assert run is not None
        assert (run.status, run.output, run.last_seq) == ("completed", value, 2)
        assert run.finished_at is not None and run.finished_at.tzinfo is not None
    replayed = EventLog(db).read_after(alice, run_id)
    assert [(e.type, e.data, e.ts) for e in replayed] == [
        (STARTED, {"attempt": 1}, started.ts), ("agent_completed", {"output": value}, ended.ts)]


def test_the_queued_limit_is_enforced_by_the_insert(db: Database) -> None:
    alice = owner()
    with db.transaction() as connection:
        for _ in range(2):
            assert RunStates.create(
                connection, alice, run_id=uuid.uuid4().hex, thread_id="t", agent="echo",
                input={}, metadata={}, request_id="r", created_at=datetime.now(UTC),
                max_waiting=2)
        assert not RunStates.create(
            connection, alice, run_id=uuid.uuid4().hex, thread_id="t", agent="echo", input={},
            metadata={}, request_id="r", created_at=datetime.now(UTC), max_waiting=2)
        assert queries.count_waiting(connection, alice) == 2
