"""The run service v1 and v2 share: submit, read and list runs, always for one owner."""
from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from jsonschema import Draft202012Validator
from sqlalchemy.exc import IntegrityError

from agents.registry import AgentRegistry
from domain.context import UserExecutionContext
from domain.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    TooManyRequests,
    UnprocessableInput,
)
from domain.events import EventType
from domain.ids import is_id
from domain.status import WAITING, RunStatus
from factories.bridge import WebSocketBridgeFactory
from runlane import logs, metrics
from storage import queries
from storage.db import Database
from storage.models import Run
from storage.prepared import Executor
from storage.runstate import RunStates
from tasks.dispatch import Dispatcher
from webapp.schemas import RunPage, RunResource

log = logging.getLogger(__name__)
# Longer than any cursor encode_cursor gives out (a timestamp and a 64-character id), so a
# longer one is refused before it is decoded.
CURSOR_MAX_LENGTH = 192


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
    """The (created_at, run id) keyset a cursor names.

    Raises:
        InvalidInput: not a cursor `encode_cursor` could have written: too long, not base64
            JSON of a zoned timestamp and a run id, or a moment outside years 1 to 9999 in UTC
            (no database column holds it).
    """
    if len(cursor) > CURSOR_MAX_LENGTH:
        raise InvalidInput("malformed cursor")
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, run_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        moment = datetime.fromisoformat(created)
        if moment.tzinfo is None:  # every cursor we issue carries its zone
            raise ValueError("naive timestamp")
        moment.astimezone(UTC)  # what the database is given: it must exist
    except (ValueError, TypeError, OverflowError, RecursionError, binascii.Error):
        raise InvalidInput("malformed cursor") from None
    if not is_id(run_id):
        raise InvalidInput("malformed cursor")
    return moment, run_id


class RunService:
    """Owner-scoped run operations; identity always comes in through the context or owner id."""

    def __init__(
        self, *, db: Database, agents: AgentRegistry, dispatcher: Dispatcher,
        bridges: WebSocketBridgeFactory, max_queued: int,
    ) -> None:
        self._db = db
        self._states = RunStates(db)
        self._agents = agents
        self._dispatcher = dispatcher
        self._bridges = bridges
        self._max_queued = max_queued
        # One compiled validator per agent class: building one (schema check, ref resolver)
        # costs more than validating a small input. Schemas are code, not user data.
        self._validators: dict[type, Draft202012Validator] = {}

    def validate_input(self, agent: str, value: Any) -> None:
        """Raises UnprocessableInput naming the unknown agent or each failing input path."""
        agent_cls = self._agents.get(agent)
        if agent_cls is None:
            raise UnprocessableInput(
                f"unknown agent {agent!r}", errors=[{"path": "/agent", "message": "unknown agent"}]
            )
        validator = self._validators.get(agent_cls)
        if validator is None:
            validator = self._validators[agent_cls] = Draft202012Validator(agent_cls.input_schema)
        failures = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
        if failures:
            raise UnprocessableInput(
                f"input does not match the schema of agent {agent!r}",
                errors=[
                    {"path": "/".join(["/input", *(str(p) for p in f.absolute_path)]),
                     "message": f.message}
                    for f in failures
                ],
            )

    def submit(
        self, ctx: UserExecutionContext, metadata: dict[str, Any] | None, *,
        idempotency_key: str | None = None, strategy: str = "enqueue",
        admit: Callable[[], None] | None = None,
    ) -> tuple[RunResource, bool]:
        """Write the run (and its thread), then send it; the row is committed before the send.

        `admit` is called once the input is validated and before anything is read or
        written (the caller's rate limit, whose count arrives while the input is checked).

        Returns the run and whether it already existed under `idempotency_key`.

        Raises:
            UnprocessableInput: unknown agent or input failing its schema.
            TooManyRequests: the user has too many runs waiting.
            Conflict: `reject` strategy and the thread has an active run.
        """
        logs.bind(run_id=ctx.run_id)  # for the rest of the request (reset at its teardown)
        self.validate_input(ctx.agent, ctx.input)
        if admit is not None:
            admit()
        if idempotency_key is not None:
            existing = self._existing(ctx.user_id, idempotency_key)
            if existing is not None:
                return existing, True
        if strategy == "interrupt":  # cancelling takes transactions of its own: before ours
            with self._db.session() as session:
                self._check_queued(session, ctx.user_id)
                active = queries.active_ids_in_thread(session, ctx.user_id, ctx.thread_id)
            for run_id in active:
                self._cancel(ctx.user_id, run_id, missing_ok=True)
        try:
            # The checks and the writes share one transaction (one commit per submission), and
            # the insert itself enforces the queued limit (no separate count).
            with self._db.transaction() as session:
                if strategy == "reject":
                    self._check_queued(session, ctx.user_id)  # 429 before 409, as always
                    active = queries.active_ids_in_thread(session, ctx.user_id, ctx.thread_id)
                    if active:
                        raise Conflict(f"thread {ctx.thread_id} has an active run",
                                       active_runs=active)
                if not RunStates.create(
                    session, ctx.user_id, run_id=ctx.run_id, thread_id=ctx.thread_id,
                    agent=ctx.agent, input=ctx.input, metadata=metadata or {},
                    request_id=ctx.request_id, created_at=ctx.created_at,
                    queue=self._dispatcher.queue_for(ctx.agent), idempotency_key=idempotency_key,
                    max_waiting=self._max_queued,
                ):
                    raise self._too_many()
        except IntegrityError:  # the same key, submitted concurrently
            existing = self._existing(ctx.user_id, idempotency_key) if idempotency_key else None
            if existing is None:
                raise
            return existing, True
        try:  # first thing after the commit: the run's latency starts counting here
            self._dispatcher.send(ctx, dispatch=1)
        except Exception:  # broker down: the run stays queued; the reaper re-sends it
            log.exception("could not send run %s; it stays queued", ctx.run_id)
        metrics.run_status(RunStatus.QUEUED.value, ctx.agent)
        return RunResource(
            run_id=ctx.run_id, thread_id=ctx.thread_id, agent=ctx.agent,
            status=RunStatus.QUEUED.value, input=ctx.input, output=None, error=None,
            metadata=metadata or {}, attempt=0, created_at=ctx.created_at, started_at=None,
            finished_at=None, last_seq=0,
        ), False

    def _check_queued(self, session: Executor, owner_id: str) -> None:
        if queries.count_waiting(session, owner_id) >= self._max_queued:
            raise self._too_many()

    def _too_many(self) -> TooManyRequests:
        return TooManyRequests(f"more than {self._max_queued} runs waiting", retry_after=5)

    def _existing(self, owner_id: str, key: str) -> RunResource | None:
        with self._db.session() as session:
            run = queries.find_by_idempotency_key(session, owner_id, key)
            return to_resource(run) if run is not None else None

    def cancel(self, owner_id: str, run_id: str) -> RunResource:
        """Cancel a run: a waiting one never starts, a running one stops at its next step
        (and is terminated after the grace period). Cancelling twice is harmless.

        Raises:
            NotFound: no such run for this owner.
            Conflict: the run has already finished.
        """
        self._cancel(owner_id, run_id)
        return self.get(owner_id, run_id)

    def _cancel(self, owner_id: str, run_id: str, *, missing_ok: bool = False) -> None:
        for _ in range(3):  # the run may move while we look; each move is conditional
            with self._db.session() as session:
                run = queries.get_run(session, owner_id, run_id)
                if run is None:
                    if missing_ok:
                        return
                    raise NotFound(f"no run {run_id}")
                status, thread_id, agent = RunStatus(run.status), run.thread_id, run.agent
            if status is RunStatus.CANCELLED or (status.terminal and missing_ok):
                return  # cancelling twice is harmless
            if status.terminal:
                raise Conflict(f"run already {status.value}", run_status=status.value)
            if status is RunStatus.CANCELLING:
                return
            if status is RunStatus.RUNNING and self._states.request_cancel(owner_id, run_id):
                return
            if status in WAITING:
                reason = "cancelled before it started"
                event = self._states.cancel_waiting(
                    owner_id, run_id, thread_id, event_type=EventType.AGENT_CANCELLED.value,
                    data={"reason": reason}, error=reason)
                if event is not None:
                    self._bridges.for_run(owner_id, run_id, thread_id,
                                          agent=agent).announce_change(event, RunStatus.CANCELLED)
                    self._dispatcher.nudge(owner_id)  # runs queued behind it may start now
                    return

    def get(self, owner_id: str, run_id: str) -> RunResource:
        with self._db.session() as session:
            run = queries.get_run(session, owner_id, run_id)
            if run is None:
                raise NotFound(f"no run {run_id}")
            return to_resource(run)

    def get_as_admin(self, admin_id: str, run_id: str) -> RunResource:
        """Any user's run, for the opt-in admin role; logged, since it crosses owners."""
        with self._db.session() as session:
            run = queries.get_run_any_owner(session, run_id)
            if run is None:
                raise NotFound(f"no run {run_id}")
            log.warning("admin %s read run %s of user %s", admin_id, run_id, run.owner_id)
            return to_resource(run)

    def list(
        self, owner_id: str, thread_id: str | None, *, limit: int, cursor: str | None
    ) -> RunPage:
        """A page of one thread's runs (404 for a thread the owner does not have), or of all
        the owner's runs when `thread_id` is None."""
        before = decode_cursor(cursor) if cursor else None
        with self._db.session() as session:
            if thread_id is not None and not queries.thread_exists(session, owner_id, thread_id):
                raise NotFound(f"no thread {thread_id}")
            rows = queries.list_runs(session, owner_id, thread_id, limit=limit + 1, before=before)
            page, more = rows[:limit], len(rows) > limit
            return RunPage(
                items=[to_resource(r) for r in page],
                next_cursor=encode_cursor(page[-1]) if more else None,
            )
