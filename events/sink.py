"""SocketSink: one consumer's ordered inbox of live events and control commands.

The router offers events and never blocks: past `maxsize` pending items the sink is marked
overflowed and its socket is cut (the client resumes from the log). Control commands (ticks,
resync requests) are never dropped.

An idle socket holds one of these for hours, so it is kept small (measured in
docs/benchmarks.md): slots instead of a dict, a plain list (append and pop(0) are atomic
under the GIL, so producers need no lock) and one wake-up flag, which the event socket
shares with its websocket's own reader so one flag wakes the writer for both.
"""
from __future__ import annotations

import threading
from typing import Any, Literal, Protocol

Kind = Literal["event", "control"]
Item = tuple[Kind, Any, str]


class Flag(Protocol):
    """What the sink needs of its wake-up flag (threading.Event, or gevent's when patched)."""

    def set(self) -> None: ...
    def clear(self) -> None: ...
    def wait(self, timeout: float | None = None) -> bool: ...


class SocketSink:
    __slots__ = ("maxsize", "wake", "_items", "overflowed", "closed", "stalls", "cursor",
                 "ahead", "behind")

    def __init__(self, maxsize: int, wake: Flag | None = None) -> None:
        self.maxsize = maxsize
        self.wake: Flag = wake if wake is not None else threading.Event()
        # (payload, text): text is None for a control command.
        self._items: list[tuple[Any, str | None]] = []
        self.overflowed = False
        self.closed = False
        self.stalls = 0  # router ticks that found this sink overflowed (see on_stall)
        # For the tail check (events/router.py): every per-user cursor up to `cursor` was
        # offered (or known to the consumer); `ahead` holds the ones offered above a gap
        # (publishes reach Redis slightly out of cursor order); `behind` is the log's newest
        # cursor when the router last looked.
        self.cursor = 0
        self.ahead: set[int] | None = None
        self.behind = 0

    def offer(self, message: dict[str, Any], text: str) -> bool:
        """Queue a live event without blocking; False (and overflowed) when full or closed."""
        if self.closed:
            return False
        cursor = message.get("cursor")
        if isinstance(cursor, int) and cursor > self.cursor:
            if cursor == self.cursor + 1 and not self.ahead:
                self.cursor = cursor
            else:
                self.advance(cursor, contiguous=False)
        if len(self._items) >= self.maxsize:
            self.overflowed = True
            self.wake.set()
            return False
        self._items.append((message, text))
        self.wake.set()
        return True

    def advance(self, cursor: int, contiguous: bool = True) -> None:
        """Note `cursor` as offered; with `contiguous`, every cursor up to it too."""
        ahead = self.ahead if self.ahead is not None else set()
        if contiguous:
            self.cursor = max(self.cursor, cursor)
            ahead = {c for c in ahead if c > self.cursor}
        elif cursor > self.cursor:
            ahead.add(cursor)
        while self.cursor + 1 in ahead:
            ahead.discard(self.cursor + 1)
            self.cursor += 1
        self.ahead = ahead or None

    def offer_control(self, command: Any) -> bool:
        """Queue a command in order with the events; never refused while open."""
        if self.closed:
            return False
        self._items.append((command, None))
        self.wake.set()
        return True

    def pop(self) -> Item | None:
        """The oldest item, or None when empty; never waits (the caller owns the wake flag)."""
        try:
            payload, text = self._items.pop(0)
        except IndexError:
            return None
        return ("control", payload, "") if text is None else ("event", payload, text)

    def next(self, timeout: float) -> Item | None:
        """The oldest item, waiting up to `timeout` for one (for a sink with its own flag)."""
        item = self.pop()
        if item is not None or self.overflowed:
            return item
        self.wake.clear()  # cleared before looking again, so an offer after this wakes us
        item = self.pop()
        if item is None and not self.overflowed:
            self.wake.wait(timeout)
            item = self.pop()
        return item

    def on_stall(self) -> None:
        """Called by the router's ticker when the sink stayed overflowed for a whole tick:
        its consumer is stuck (e.g. blocked writing to a client that does not read)."""

    def close(self) -> None:
        self.closed = True
        self.wake.set()

    def pending(self) -> int:
        return len(self._items)
