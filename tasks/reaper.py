"""The reaper: the database is the source of truth, so runs whose worker vanished, whose
message was lost, or that waited too long are found here and moved on, within a bound.

One runs in every worker's main process; conditional updates make concurrent reapers safe.
"""
from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta, timezone

from events.types import EventType
from factories.bridge import WebSocketBridgeFactory
from runlane import logs, metrics
from runlane.settings import Settings
from storage import queries
from storage.db import Database
from storage.models import EXECUTING, WAITING, Run, RunStatus
from tasks.dispatch import Dispatcher

log = logging.getLogger(__name__)


class Reaper:
    def __init__(
        self, *, db: Database, settings: Settings, dispatcher: Dispatcher,
        bridges: WebSocketBridgeFactory,
    ) -> None:
        self._db = db
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
        now = now or datetime.now(timezone.utc)
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

    def _end(self, run: Run, to: RunStatus, event: EventType, reason: str,
             from_statuses: frozenset[RunStatus], now: datetime) -> bool:
        bridge = self._bridges.for_run(run.owner_id, run.id, run.thread_id, attempt=run.attempt,
                                       agent=run.agent)
        # Only an executing run holds a lease; its lapse is re-checked in the same UPDATE.
        lease_before = now if from_statuses == EXECUTING else None
        done = bridge.transition(to=to, from_statuses=from_statuses, event_type=event.value,
                                 data={"reason": reason}, error=reason, lease_before=lease_before)
        if done is not None:
            log.warning("run %s ended %s by the reaper: %s", run.id, to.value, reason)
            self._dispatcher.nudge(run.owner_id)
        return done is not None

    def _lapsed(self, run: Run, now: datetime) -> bool:
        if run.deadline_at is not None and now >= run.deadline_at:
            return self._end(run, RunStatus.TIMED_OUT, EventType.AGENT_TIMED_OUT,
                             "hard time limit passed (worker child killed)", EXECUTING, now)
        if run.status == RunStatus.CANCELLING.value:
            return self._end(run, RunStatus.CANCELLED, EventType.AGENT_CANCELLED,
                             "cancelled; its worker was lost", EXECUTING, now)
        if run.attempt >= self._settings.max_attempts:
            return self._end(run, RunStatus.FAILED, EventType.AGENT_FAILED,
                             f"worker lost on each of {run.attempt} attempts", EXECUTING, now)
        with self._db.session() as session:
            moved = queries.transition(session, run.owner_id, run.id, to=RunStatus.RETRYING,
                                       from_statuses=EXECUTING, attempt=run.attempt,
                                       lease_before=now, lease_expires_at=None)
        if moved:
            metrics.run_status(RunStatus.RETRYING.value, run.agent)
            log.warning("run %s lost its worker (attempt %d); re-dispatching", run.id, run.attempt)
            self._dispatcher.redispatch(run.owner_id, run.id)
        return moved

    def _waiting(self, run: Run, now: datetime) -> bool:
        if now - run.created_at > timedelta(seconds=self._settings.max_queue_age):
            return self._end(run, RunStatus.FAILED, EventType.AGENT_FAILED,
                             f"not started within {self._settings.max_queue_age:g}s", WAITING, now)
        return self._dispatcher.redispatch(run.owner_id, run.id)
