"""The reaper: the database is the source of truth, so runs whose worker vanished, whose
message was lost, or that waited too long are found here and moved on, within a bound.

One runs in every worker's main process; conditional updates make concurrent reapers safe.
"""
from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta

from domain.events import EventType
from domain.status import EXECUTING, RunStatus
from factories.bridge import WebSocketBridgeFactory
from runlane import logs, metrics
from runlane.settings import Settings
from storage import queries
from storage.db import Database
from storage.models import Run
from storage.runstate import (
    EXPIRE,
    GIVE_UP,
    REAP_CANCELLING,
    REAP_PAST_DEADLINE,
    Move,
    RunStates,
)
from tasks.dispatch import Dispatcher

log = logging.getLogger(__name__)


class Reaper:
    def __init__(
        self, *, db: Database, settings: Settings, dispatcher: Dispatcher,
        bridges: WebSocketBridgeFactory,
    ) -> None:
        self._db = db
        self._states = RunStates(db)
        self._settings = settings
        self._dispatcher = dispatcher
        self._bridges = bridges
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="runlane-reaper", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _loop(self) -> None:
        while not self._stop.wait(self._settings.heartbeat_interval / 2):
            try:
                self.tick()
            except Exception:  # a database blip must not end the reaper
                log.warning("reaper tick failed", exc_info=True)

    def tick(self, now: datetime | None = None) -> int:
        """One pass; returns how many runs it moved."""
        now = now or datetime.now(UTC)
        with self._db.session() as session:
            lapsed = queries.lapsed_leases(session, now)
            stale = queries.undispatched(
                session, now - timedelta(seconds=self._settings.resend_after))
        moved = 0
        for handle, runs in ((self._lapsed, lapsed), (self._waiting, stale)):
            for run in runs:
                # Its lines (and the bridge's, the dispatcher's) carry the run's ids, like the
                # lines its worker wrote.
                with logs.bound(run_id=run.id, user_id=run.owner_id, request_id=run.request_id):
                    moved += handle(run, now)
        return moved

    def _end(self, run: Run, move: Move, to: RunStatus, event: EventType, reason: str,
             now: datetime) -> bool:
        # Only an executing run holds a lease; its lapse is re-checked in the same UPDATE.
        lease_before = now if move.sources <= EXECUTING else None
        done = self._states.reap(run.owner_id, run.id, run.thread_id, move, to=to,
                                 event_type=event.value, data={"reason": reason}, error=reason,
                                 attempt=run.attempt if lease_before else None,
                                 lease_before=lease_before)
        if done is None:
            return False
        self._bridges.for_run(run.owner_id, run.id, run.thread_id, attempt=run.attempt,
                              agent=run.agent).announce_change(done, to)
        log.warning("run %s ended %s by the reaper: %s", run.id, to.value, reason)
        self._dispatcher.nudge(run.owner_id)
        return True

    def _lapsed(self, run: Run, now: datetime) -> bool:
        """A run whose lease lapsed: its worker is gone. Decided on the row as read, and each
        move re-checks the status it starts from, so a run that moved since (a cancel asked
        for meanwhile) is left to the next pass."""
        if run.deadline_at is not None and now >= run.deadline_at:
            return self._end(run, REAP_PAST_DEADLINE, RunStatus.TIMED_OUT,
                             EventType.AGENT_TIMED_OUT,
                             "hard time limit passed (worker child killed)", now)
        if run.status == RunStatus.CANCELLING.value:
            return self._end(run, REAP_CANCELLING, RunStatus.CANCELLED,
                             EventType.AGENT_CANCELLED, "cancelled; its worker was lost", now)
        if run.attempt >= self._settings.max_attempts:
            return self._end(run, GIVE_UP, RunStatus.FAILED, EventType.AGENT_FAILED,
                             f"worker lost on each of {run.attempt} attempts", now)
        moved = self._states.retry(run.owner_id, run.id, run.attempt, lease_before=now)
        if moved:
            metrics.run_status(RunStatus.RETRYING.value, run.agent)
            log.warning("run %s lost its worker (attempt %d); re-dispatching", run.id, run.attempt)
            self._dispatcher.redispatch(run.owner_id, run.id)
        return moved

    def _waiting(self, run: Run, now: datetime) -> bool:
        if now - run.created_at > timedelta(seconds=self._settings.max_queue_age):
            return self._end(run, EXPIRE, RunStatus.FAILED, EventType.AGENT_FAILED,
                             f"not started within {self._settings.max_queue_age:g}s", now)
        return self._dispatcher.redispatch(run.owner_id, run.id)
