"""The run watchdog against a real database: it must tell a run this attempt just finished
from one another attempt took over, because the second ends the worker child."""
from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone

from sqlalchemy import update

from storage import queries
from storage.db import Database
from storage.models import EXECUTING, Run, RunStatus
from tasks.lifecycle import RunControl
from tests.unit.helpers import make_ctx

HEARTBEAT = 0.4  # renewals every 0.2 s


def claimed_run(db: Database) -> tuple[object, int]:
    ctx = make_ctx(user_id=f"watch-{uuid.uuid4().hex[:8]}", run_id=uuid.uuid4().hex)
    with db.session() as session:
        queries.create_run(session, ctx.user_id, run_id=ctx.run_id, thread_id=ctx.thread_id,
                           agent=ctx.agent, input=ctx.input, metadata={},
                           request_id=ctx.request_id, created_at=datetime.now(timezone.utc))
    with db.session() as session:
        claim, attempt = queries.claim_run(session, ctx.user_id, ctx.run_id, dispatch=None,
                                           max_running=4, lease_seconds=HEARTBEAT,
                                           hard_limit=60)
    assert claim is queries.Claim.CLAIMED
    return ctx, attempt


def control(db: Database, ctx: object, attempt: int) -> RunControl:
    # can_terminate=False: the test process must survive what would end a prefork child.
    return RunControl(db=db, ctx=ctx, attempt=attempt, bridge=None,  # type: ignore[arg-type]
                      heartbeat_interval=HEARTBEAT, cancel_grace=1, can_terminate=False)


def test_a_run_this_attempt_finished_is_not_taken_for_a_takeover(database_url):
    db = Database(database_url)
    ctx, attempt = claimed_run(db)
    watched = control(db, ctx, attempt)
    with watched.watching():
        with db.session() as session:  # what the engine's terminal transaction does
            assert queries.transition(session, ctx.user_id, ctx.run_id, to=RunStatus.COMPLETED,
                                      from_statuses=EXECUTING, attempt=attempt)
        time.sleep(HEARTBEAT * 0.75)  # at least one renewal sees the run no longer held
    assert not watched.superseded
    db.dispose()


def test_a_run_taken_over_by_another_attempt_is_still_noticed(database_url):
    db = Database(database_url)
    ctx, attempt = claimed_run(db)
    watched = control(db, ctx, attempt)
    with watched.watching():
        with db.session() as session:  # the reaper re-dispatched it and attempt + 1 claimed it
            session.execute(update(Run).where(Run.owner_id == ctx.user_id, Run.id == ctx.run_id)
                            .values(attempt=attempt + 1))
        deadline = time.monotonic() + 10 * HEARTBEAT
        while not watched.superseded and time.monotonic() < deadline:
            time.sleep(0.05)
        assert watched.superseded
    db.dispose()
