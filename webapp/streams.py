"""RunWatch: one run's events, stored then live, with no gap and no duplicate.

Attach to the live stream first (buffering it), then read the log, then merge by `seq`,
dropping what was already yielded and filling any gap from the log. Whenever the router says
the live stream may have lost something (it re-subscribed after losing Redis, or its tail
check found logged events never published), the log is read again, so a watch ends with its
run even when the terminal event's publish was lost. Used by v1 `/execute` (to wait without
polling) and by the SSE routes.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from domain.errors import Unavailable
from domain.events import MAX_SEQ, TERMINAL_TYPES
from events.eventlog import EventLog
from events.router import TICK, SocketRouter
from events.sink import SocketSink


class StreamUnavailable(Unavailable):
    """The process could not subscribe to the event stream (Redis unreachable)."""

    title = "Event stream unavailable"


class RunWatch:
    def __init__(
        self, *, router: SocketRouter, log: EventLog, user_id: str, run_id: str,
        after_seq: int = 0, queue_size: int = 1024,
    ) -> None:
        self._router = router
        self._log = log
        self.user_id = user_id
        self.run_id = run_id
        # No seq past MAX_SEQ can exist, so clamping changes nothing but keeps a caller's
        # huge number out of the database driver.
        self.last_seq = min(max(after_seq, 0), MAX_SEQ)
        self.finished = False
        self._queue_size = queue_size
        self._sink: SocketSink | None = None

    def __enter__(self) -> RunWatch:
        # The tail check's start, given before the sink is attached (older events are read
        # from the log by the watch itself).
        self._sink = self._attach(self._log.last_cursor(self.user_id))
        return self

    def _attach(self, cursor: int) -> SocketSink:
        """A new sink from `cursor`, routed and confirmed by Redis.

        Raises:
            StreamUnavailable: the subscription was not confirmed in time.
        """
        sink = SocketSink(self._queue_size, cursor=cursor)
        if not self._router.attach(self.user_id, sink):
            self._router.detach(self.user_id, sink)
            raise StreamUnavailable("could not subscribe to the event stream; retry")
        return sink

    def __exit__(self, *exc: object) -> None:
        if self._sink is not None:
            self._router.detach(self.user_id, self._sink)
            self._sink = None

    def _from_log(self) -> Iterator[dict[str, Any]]:
        while True:
            batch = self._log.read_after(self.user_id, self.run_id, self.last_seq, limit=500)
            for event in batch:
                yield self._accept(event.to_dict())
            if len(batch) < 500:
                return

    def _accept(self, event: dict[str, Any]) -> dict[str, Any]:
        self.last_seq = event["seq"]
        if event["type"] in TERMINAL_TYPES:
            self.finished = True
        return event

    def events(self, timeout: float, idle: float = 15.0) -> Iterator[dict[str, Any] | None]:
        """Yield events until the run ends or `timeout` passes; `None` after `idle` seconds
        without one (so a caller can send a keep-alive)."""
        deadline = time.monotonic() + timeout
        yield from self._from_log()
        if not self.finished and self._log.run_finished(self.user_id, self.run_id):
            # Already over, and the client has the end (`after` at or past the last seq):
            # read once more in case it ended between the two reads, then stop.
            yield from self._from_log()
            self.finished = True
        while not self.finished:
            assert self._sink is not None, "events() outside the `with` block"
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if self._sink.overflowed:  # fell behind: the log has everything
                self._sink = self._reattach()
                yield from self._from_log()
                continue
            item = self._sink.next(timeout=min(remaining, idle))
            if item is None:
                yield None
                continue
            kind, event, _text = item
            if kind == "control":
                if event is not TICK:  # RESYNC or TAIL: the log may have more than we saw
                    yield from self._from_log()
                continue
            if event.get("run_id") != self.run_id or event["seq"] <= self.last_seq:
                continue
            if event["seq"] > self.last_seq + 1:  # missed some: read them from the log
                yield from self._from_log()
                continue
            yield self._accept(event)

    def _reattach(self) -> SocketSink:
        """A fresh sink after this one overflowed, from its cursor.

        Raises:
            StreamUnavailable: Redis did not confirm the new subscription in time (the
                caller ends the stream; an SSE client reconnects with Last-Event-ID).
        """
        assert self._sink is not None
        old, self._sink = self._sink, None
        self._router.detach(self.user_id, old)
        self._sink = self._attach(old.cursor)
        return self._sink


def sse_frames(events: Iterator[dict[str, Any] | None]) -> Iterator[str]:
    """Server-Sent Events text: `id:` is the event's seq, so `Last-Event-ID` resumes."""
    for event in events:
        if event is None:
            yield ": keep-alive\n\n"
            continue
        data = json.dumps(event, separators=(",", ":"))
        yield f"id: {event['seq']}\nevent: {event['type']}\ndata: {data}\n\n"
