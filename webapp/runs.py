"""The run service v1 and v2 share: submit, read and list runs, always for one owner."""
from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from jsonschema import Draft202012Validator

from agents.registry import AgentRegistry
from factories.context import UserExecutionContext, sign_context
from runlane.errors import InvalidInput, NotFound, UnprocessableInput
from storage import queries
from storage.db import Database
from storage.models import Run
from webapp.schemas import RunPage, RunResource

log = logging.getLogger(__name__)

Enqueue = Callable[[str, str], None]


def celery_enqueue(run_id: str, signed_context: str) -> None:
    """Send the run's task through the broker; the task id is the run id."""
    from tasks.run import execute_run  # noqa: PLC0415 - keeps Celery out of module import

    execute_run.apply_async(args=[signed_context], task_id=run_id)


def to_resource(run: Run) -> RunResource:
    return RunResource(
        run_id=run.id, thread_id=run.thread_id, agent=run.agent, status=run.status,
        input=run.input, output=run.output, error=run.error, metadata=run.meta or {},
        attempt=run.attempt, created_at=run.created_at, started_at=run.started_at,
        finished_at=run.finished_at, last_seq=run.last_seq,
    )


def encode_cursor(run: Run) -> str:
    raw = json.dumps([run.created_at.isoformat(), run.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, run_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        return datetime.fromisoformat(created), str(run_id)
    except (ValueError, TypeError, binascii.Error):
        raise InvalidInput("malformed cursor") from None


class RunService:
    """Owner-scoped run operations; identity always comes in through the context or owner id."""

    def __init__(
        self, *, db: Database, agents: AgentRegistry, signing_key: bytes, enqueue: Enqueue
    ) -> None:
        self._db = db
        self._agents = agents
        self._signing_key = signing_key
        self._enqueue = enqueue

    def validate_input(self, agent: str, value: Any) -> None:
        """Raises UnprocessableInput naming the unknown agent or each failing input path."""
        agent_cls = self._agents.get(agent)
        if agent_cls is None:
            raise UnprocessableInput(
                f"unknown agent {agent!r}", errors=[{"path": "/agent", "message": "unknown agent"}]
            )
        validator = Draft202012Validator(agent_cls.input_schema)
        failures = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
        if failures:
            raise UnprocessableInput(
                f"input does not match the schema of agent {agent!r}",
                errors=[
                    {"path": "/input/" + "/".join(str(p) for p in f.absolute_path),
                     "message": f.message}
                    for f in failures
                ],
            )

    def submit(self, ctx: UserExecutionContext, metadata: dict[str, Any] | None) -> RunResource:
        """Write the run (and its thread) and enqueue it; the row is committed before the send."""
        self.validate_input(ctx.agent, ctx.input)
        with self._db.session() as session:
            run = queries.create_run(
                session, ctx.user_id, run_id=ctx.run_id, thread_id=ctx.thread_id,
                agent=ctx.agent, input=ctx.input, metadata=metadata or {},
                request_id=ctx.request_id, created_at=ctx.created_at,
            )
            resource = to_resource(run)
        try:
            self._enqueue(ctx.run_id, sign_context(ctx, self._signing_key))
        except Exception:  # broker down: the run stays queued and is re-sent later
            log.exception("could not enqueue run %s; it stays queued", ctx.run_id)
        return resource

    def get(self, owner_id: str, run_id: str) -> RunResource:
        with self._db.session() as session:
            run = queries.get_run(session, owner_id, run_id)
            if run is None:
                raise NotFound(f"no run {run_id}")
            return to_resource(run)

    def list(
        self, owner_id: str, thread_id: str, *, limit: int, cursor: str | None
    ) -> RunPage:
        before = decode_cursor(cursor) if cursor else None
        with self._db.session() as session:
            if not queries.thread_exists(session, owner_id, thread_id):
                raise NotFound(f"no thread {thread_id}")
            rows = queries.list_runs(session, owner_id, thread_id, limit=limit + 1, before=before)
            page, more = rows[:limit], len(rows) > limit
            return RunPage(
                items=[to_resource(r) for r in page],
                next_cursor=encode_cursor(page[-1]) if more else None,
            )
