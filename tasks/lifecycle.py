"""RunControl: one attempt's hold on its run — cooperative checks for the engine, and a
watchdog thread that renews the lease and enforces the cancel grace and the hard limit."""
from __future__ import annotations

import contextvars
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from events.types import EventType
from storage import queries
from storage.db import Database
from storage.models import EXECUTING, RunStatus

if TYPE_CHECKING:  # annotations only: importing factories here would close an import cycle
    from events.bridge import EventBridge
    from factories.context import UserExecutionContext

log = logging.getLogger(__name__)
EXIT_TERMINATED = 70  # exit status of a prefork child that ended its own run


class RunCancelled(Exception):
    """The owner cancelled the run; raised into the agent at its next step."""


class RunTimedOut(Exception):
    """The run passed its soft time limit; raised into the agent at its next step."""


class WatchdogThreads:
    """Long-lived daemon threads that run watchdogs, reused from run to run: starting a thread
    for every run cost about a tenth of a short run's time in a busy worker. Process-wide
    (one per worker process, built after the fork); it holds idle threads, no run's data."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[queue.SimpleQueue[Callable[[], None]]] = []

    def run(self, job: Callable[[], None]) -> None:
        """Run `job` on an idle thread, or on a new one when all are busy (never queued)."""
        with self._lock:
            inbox = self._idle.pop() if self._idle else None
        if inbox is None:
            inbox = queue.SimpleQueue()
            threading.Thread(target=self._serve, args=(inbox,), name="watchdog",
                             daemon=True).start()
        inbox.put(job)

    def _serve(self, inbox: queue.SimpleQueue[Callable[[], None]]) -> None:
        while True:
            job = inbox.get()
            try:
                job()
            except Exception:  # noqa: BLE001 - a watchdog's failure must not kill the thread
                log.exception("watchdog failed")
            with self._lock:
                self._idle.append(inbox)


class RunControl:
    def __init__(
        self, *, db: Database, ctx: UserExecutionContext, attempt: int, bridge: EventBridge,
        heartbeat_interval: float, cancel_grace: float, can_terminate: bool,
        watchdogs: WatchdogThreads | None = None,
    ) -> None:
        self._db = db
        self.ctx = ctx
        self.attempt = attempt
        self._bridge = bridge
        self._interval = heartbeat_interval
        self._grace = cancel_grace
        self._can_terminate = can_terminate
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._watchdogs = watchdogs
        self.superseded = False

    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def check(self) -> None:
        """Called by the engine at every step and tool call.

        Raises:
            queries.Superseded: this attempt no longer holds the run.
            RunCancelled: the owner asked to cancel.
            RunTimedOut: the soft time limit has passed.
        """
        with self._db.session() as session:
            status = queries.run_status(session, self.ctx.user_id, self.ctx.run_id, self.attempt)
        if self.superseded or status not in {s.value for s in EXECUTING}:
            raise queries.Superseded(self.ctx.run_id)
        if status == RunStatus.CANCELLING.value:
            raise RunCancelled("cancelled by its owner")
        if self.elapsed() > self.ctx.limits.soft_time_limit:
            raise RunTimedOut(f"soft time limit of {self.ctx.limits.soft_time_limit:g}s passed")

    @contextmanager
    def watching(self) -> Iterator[None]:
        # Run in a copy of this context, so the watchdog's log lines carry the run's ids.
        context, done = contextvars.copy_context(), threading.Event()

        def watch() -> None:
            try:
                context.run(self._watch)
            finally:
                done.set()

        if self._watchdogs is not None:
            self._watchdogs.run(watch)
        else:
            threading.Thread(target=watch, name=f"watchdog-{self.ctx.run_id}", daemon=True).start()
        try:
            yield
        finally:
            self._stop.set()
            done.wait(self._interval)

    def _watch(self) -> None:
        # Renewed twice per lease so one slow database write does not lose it.
        while not self._stop.wait(self._interval / 2):
            try:
                with self._db.session() as session:
                    held = queries.renew_lease(session, self.ctx.user_id, self.ctx.run_id,
                                               self.attempt, self._interval)
            except Exception:  # a failed renewal is retried; the lease has slack
                log.warning("lease renewal of run %s failed", self.ctx.run_id, exc_info=True)
                continue
            if held is None:
                # This attempt may have just finished the run itself: the engine commits the
                # terminal state a moment before `watching` ends. Give it a heartbeat to say so
                # rather than end a worker child that completed its run.
                if self._stop.wait(self._interval):
                    return
                self.superseded = True
                self._end("run was taken over by another attempt or finished elsewhere")
                return
            status, cancel_requested_at = held
            if (status == RunStatus.CANCELLING.value and cancel_requested_at is not None
                    and _since(cancel_requested_at) > self._grace):
                self._finish(RunStatus.CANCELLED, EventType.AGENT_CANCELLED,
                             f"agent ignored cancellation for {self._grace:g}s; terminated")
                return
            if self.elapsed() > self.ctx.limits.hard_time_limit:
                self._finish(RunStatus.TIMED_OUT, EventType.AGENT_TIMED_OUT,
                             f"hard time limit of {self.ctx.limits.hard_time_limit:g}s passed")
                return

    def _finish(self, status: RunStatus, event: EventType, reason: str) -> None:
        self._bridge.transition(to=status, from_statuses=EXECUTING, event_type=event.value,
                                data={"reason": reason}, error=reason)
        self.superseded = True
        self._end(reason)

    def _end(self, reason: str) -> None:
        """Stop the agent the only safe way: end the prefork child running it. Its pool starts
        a new one; the message comes back and is dropped (the run is no longer waiting)."""
        if self._can_terminate:
            log.warning("terminating worker child for run %s: %s", self.ctx.run_id, reason)
            logging.shutdown()
            os._exit(EXIT_TERMINATED)
        log.warning("run %s: %s; this pool cannot stop the agent, its writes are refused",
                    self.ctx.run_id, reason)


def _since(moment: datetime) -> float:
    return (datetime.now(timezone.utc) - moment).total_seconds()
