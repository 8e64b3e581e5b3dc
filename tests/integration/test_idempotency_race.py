"""Two submissions with one idempotency key at once get one run, never a 500.

The second submission looks the key up, finds nothing (the first has not committed yet), and
inserts; the unique index refuses its row once the first commits. That refusal must reach the
run service as SQLAlchemy's IntegrityError, which it answers with the first run. The hot
statements run on the driver's cursor (storage/prepared.py), whose own errors SQLAlchemy
never sees: unwrapped, the driver's IntegrityError went past the service and answered 500.

The race is made certain, not likely: the first submission's transaction is held open until
the second is inside its insert.
"""
from __future__ import annotations

import sys
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from domain.context import UserExecutionContext
from storage.models import Run
from storage.runstate import RunStates
from tests.support import wait_until


def _ctx(owner: str) -> UserExecutionContext:
    return UserExecutionContext(user_id=owner, thread_id="t", run_id=uuid.uuid4().hex,
                                request_id="req", agent="echo", input="once",
                                created_at=datetime.now(UTC))


def _inside_create(thread: threading.Thread) -> bool:
    """Whether `thread` is executing RunStates.create (waiting there for the write lock)."""
    frame = sys._current_frames().get(thread.ident or -1)
    while frame is not None:
        if frame.f_code is RunStates.create.__code__:
            return True
        frame = frame.f_back
    return False


def test_a_second_submission_racing_the_first_gets_the_first_run(app: Any) -> None:
    st = app.extensions["runlane"]
    owner, key = f"idem-{uuid.uuid4().hex[:10]}", "order-42"
    first = _ctx(owner)
    outcome: dict[str, Any] = {}

    def second_submission() -> None:
        try:
            outcome["answer"] = st.runs.submit(_ctx(owner), None, idempotency_key=key)
        except BaseException as exc:  # noqa: BLE001 - reported below
            outcome["error"] = exc

    racer = threading.Thread(target=second_submission)
    with st.db.transaction() as connection:  # the first submission, not committed yet
        assert RunStates.create(connection, owner, run_id=first.run_id, thread_id="t",
                                agent="echo", input="once", metadata={}, request_id="req",
                                created_at=first.created_at, idempotency_key=key)
        racer.start()

        def inserting() -> bool:  # it looked the key up, found nothing, and inserts
            assert racer.is_alive(), outcome
            return _inside_create(racer)

        wait_until(inserting, timeout=10, what="the second submission inserting",
                   interval=0.005)
    racer.join(30)
    assert "error" not in outcome, repr(outcome.get("error"))
    run, replayed = outcome["answer"]
    assert (run.run_id, replayed) == (first.run_id, True)
    with st.db.session() as session:
        count = session.execute(select(func.count()).select_from(Run).where(
            Run.owner_id == owner)).scalar_one()
    assert count == 1


def test_driver_errors_of_the_hot_statements_arrive_as_sqlalchemys(app: Any) -> None:
    """The same wrapping without a race: a duplicate key, inserted directly."""
    st = app.extensions["runlane"]
    ctx = _ctx(f"idem-{uuid.uuid4().hex[:10]}")
    values = {"run_id": ctx.run_id, "thread_id": "t", "agent": "echo", "input": None,
              "metadata": {}, "request_id": "r", "created_at": ctx.created_at}
    with st.db.transaction() as connection:
        RunStates.create(connection, ctx.user_id, **values)
    with pytest.raises(IntegrityError), st.db.transaction() as connection:
        RunStates.create(connection, ctx.user_id, **values)
