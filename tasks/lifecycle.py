"""RunControl: one attempt's hold on its run — cooperative checks for the engine, and the
watchdog visits that renew its lease and enforce the cancel grace and the hard time limit.

One ticker thread per worker process (Watchdog) visits every run the process executes, each on
its own schedule. Handing each run to a thread of its own (or a pooled one) cost two thread
switches on every run's path, a real share of a short run's latency and of a busy worker's
throughput; registering with the ticker costs a dict insert, and a run that ends before its
first renewal is due never wakes it."""
from __future__ import annotations

import contextvars
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from domain.context import UserExecutionContext
from domain.errors import Superseded
from domain.events import Event, EventType
from domain.status import EXECUTING, RunStatus
from events.bridge import EventBridge
from storage import queries
from storage.db import Database
from storage.runstate import RunStates

log = logging.getLogger(__name__)
EXIT_TERMINATED = 70  # exit status of a prefork child that ended its own run

# A visit gets the time it was due and returns when the next one is due, or None for no more.
Visit = Callable[[float], float | None]


class RunCancelled(Exception):
    """The owner cancelled the run; raised into the agent at its next step."""


class RunTimedOut(Exception):
    """The run passed its soft time limit; raised into the agent at its next step."""


@dataclass(eq=False)  # hashed by identity: a key of Watchdog._due
class _Watch:
    visit: Visit
    period: float
    context: contextvars.Context  # the registering run's, so visits log with its ids
    # Held for a whole visit: once `watching` has taken it and cleared `active`, no visit of
    # this run can be under way or start.
    lock: threading.Lock = field(default_factory=threading.Lock)
    active: bool = True

    def step(self, due: float) -> float | None:
        try:
            return self.visit(due)
        except Exception:  # one run's failure must not stop the ticker
            log.exception("watchdog failed")
            return time.monotonic() + self.period  # retried, like a failed renewal


class Watchdog:
    """The process's ticker thread, started on first use: built after the fork (a forked child
    does not inherit threads), it holds no run's data once the run leaves `watching`.

    Visits run one after another on the one thread, so a slow one delays the others; a lease
    is renewed twice per heartbeat, which leaves that slack."""

    def __init__(self, *, linger: float = 60.0) -> None:
        self._linger = linger  # with nothing to watch this long, the thread ends (restarts later)
        self._cond = threading.Condition()
        self._due: dict[_Watch, float] = {}  # when each watched run is next visited
        # The thread looks at `_due` again no later than this (-inf while busy visiting), so a
        # new run needs to wake it only when its first visit is due sooner.
        self._wake_at = math.inf
        self._shortest = math.inf  # the shortest period registered: the idle thread's step
        self._emptied_at = 0.0
        self._thread: threading.Thread | None = None

    @contextmanager
    def watching(self, visit: Visit, period: float) -> Iterator[None]:
        """Visit first `period` seconds from now, then when each visit says, until the block
        ends; on leaving, no visit is under way or comes later."""
        watch = _Watch(visit, period, contextvars.copy_context())
        self._add(watch, time.monotonic() + period)
        try:
            yield
        finally:
            # Waits only if the ticker is visiting this very run right now.
            with watch.lock, self._cond:
                watch.active = False
                self._drop(watch)

    def _add(self, watch: _Watch, due: float) -> None:
        with self._cond:
            self._due[watch] = due
            self._shortest = min(self._shortest, watch.period)
            if self._thread is None or not self._thread.is_alive():
                self._wake_at = -math.inf  # it looks before it waits
                self._thread = threading.Thread(target=self._tick, name="watchdog", daemon=True)
                self._thread.start()
            elif due < self._wake_at:
                self._cond.notify()

    def _drop(self, watch: _Watch) -> None:  # the caller holds _cond
        if self._due.pop(watch, None) is not None and not self._due:
            self._emptied_at = time.monotonic()

    def _tick(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                due = [(watch, at) for watch, at in self._due.items() if at <= now]
                if not due:
                    if self._due:
                        self._wake_at = min(self._due.values())
                    elif now - self._emptied_at >= self._linger:
                        self._thread, self._wake_at = None, math.inf
                        return
                    else:
                        # Idle, it still looks every shortest period: a run registering
                        # meanwhile is seen before its first visit is due, without a notify.
                        self._wake_at = now + min(self._shortest,
                                                  self._emptied_at + self._linger - now)
                    self._cond.wait(self._wake_at - now)
                    continue
                self._wake_at = -math.inf
            for watch, at in due:
                self._visit(watch, at)

    def _visit(self, watch: _Watch, due: float) -> None:
        with watch.lock:
            if not watch.active:
                return  # its run left `watching` since it was found due
            after = watch.context.run(watch.step, due)
            with self._cond:
                if after is None:
                    watch.active = False
                    self._drop(watch)
                else:
                    self._due[watch] = after


class RunControl:
    def __init__(
        self, *, db: Database, ctx: UserExecutionContext, attempt: int, bridge: EventBridge,
        heartbeat_interval: float, cancel_grace: float, can_terminate: bool,
        watchdogs: Watchdog | None = None,
    ) -> None:
        self._db = db
        self._states = RunStates(db)
        self.ctx = ctx
        self.attempt = attempt
        self._bridge = bridge
        self._interval = heartbeat_interval
        self._grace = cancel_grace
        self._can_terminate = can_terminate
        self._started = time.monotonic()
        # Without the process's ticker (unit tests, a bare RunControl), a private one whose
        # thread ends once this run is no longer watched.
        self._watchdog = watchdogs if watchdogs is not None else Watchdog(linger=0.0)
        self._lease_lost = False
        self.superseded = False

    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def check(self) -> None:
        """Called by the engine at every step and tool call.

        Raises:
            Superseded: this attempt no longer holds the run.
            RunCancelled: the owner asked to cancel.
            RunTimedOut: the soft time limit has passed.
        """
        with self._db.session() as session:
            status = queries.run_status(session, self.ctx.user_id, self.ctx.run_id, self.attempt)
        if self.superseded or status not in {s.value for s in EXECUTING}:
            raise Superseded(self.ctx.run_id)
        if status == RunStatus.CANCELLING.value:
            raise RunCancelled("cancelled by its owner")
        if self.elapsed() > self.ctx.limits.soft_time_limit:
            raise RunTimedOut(f"soft time limit of {self.ctx.limits.soft_time_limit:g}s passed")

    @contextmanager
    def watching(self) -> Iterator[None]:
        # Renewed twice per lease so one slow database write does not lose it.
        with self._watchdog.watching(self._visit, self._interval / 2):
            yield

    def _visit(self, due: float) -> float | None:
        if self._lease_lost:  # a heartbeat ago, and this attempt has still not left `watching`
            self.superseded = True
            self._end("run was taken over by another attempt or finished elsewhere")
            return None
        try:
            held = self._states.renew_lease(self.ctx.user_id, self.ctx.run_id, self.attempt,
                                            self._interval)
        except Exception:  # a failed renewal is retried; the lease has slack
            log.warning("lease renewal of run %s failed", self.ctx.run_id, exc_info=True)
            return self._next_renewal(due)
        if held is None:
            # This attempt may have just finished the run itself: the engine commits the
            # terminal state a moment before `watching` ends. Give it a heartbeat to say so
            # rather than end a worker child that completed its run.
            self._lease_lost = True
            return time.monotonic() + self._interval
        status, cancel_requested_at = held
        if (status == RunStatus.CANCELLING.value and cancel_requested_at is not None
                and _since(cancel_requested_at) > self._grace):
            self._finish(RunStatus.CANCELLED, EventType.AGENT_CANCELLED,
                         f"agent ignored cancellation for {self._grace:g}s; terminated")
            return None
        if self.elapsed() > self.ctx.limits.hard_time_limit:
            self._finish(RunStatus.TIMED_OUT, EventType.AGENT_TIMED_OUT,
                         f"hard time limit of {self.ctx.limits.hard_time_limit:g}s passed")
            return None
        return self._next_renewal(due)

    def _next_renewal(self, due: float) -> float:
        """The next slot still ahead on this run's own schedule (every half heartbeat from the
        start of `watching`): a late visit neither shifts the later ones nor doubles up."""
        half = self._interval / 2
        return due + half * (1 + max(0.0, time.monotonic() - due) // half)

    def finish(self, to: RunStatus, *, event_type: str, data: Any,
               **values: Any) -> Event | None:
        """The end of this attempt's run and its event (the engine's `Control.finish`)."""
        event = self._states.finish(self.ctx.user_id, self.ctx.run_id, self.ctx.thread_id,
                                    self.attempt, to=to, event_type=event_type, data=data,
                                    **values)
        if event is not None:
            self._bridge.announce_change(event, to)
        return event

    def _finish(self, status: RunStatus, event: EventType, reason: str) -> None:
        """The watchdog's end of a run its agent does not end itself."""
        self.finish(status, event_type=event.value, data={"reason": reason}, error=reason)
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
    return (datetime.now(UTC) - moment).total_seconds()
