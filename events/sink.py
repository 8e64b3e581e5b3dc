"""SocketSink: one consumer's ordered inbox of live events and control commands.

The router offers events and never blocks: past `maxsize` pending items the sink is marked
overflowed and its socket is cut (the client resumes from the log). Control commands (ticks,
resync requests) are never refused, and at most one of each kind is pending: a second tick
before the first was handled adds nothing, and a pending replay request (TAIL or RESYNC)
already covers a later one (it replays from an earlier cursor up to the log's end), so a
consumer that stopped reading cannot make them pile up.

An idle socket holds one of these for hours, so it is kept small (measured in
docs/benchmarks.md): slots instead of a dict, a plain list (append and pop(0) are atomic
under the GIL, so producers need no lock) and one wake-up flag, which the event socket
shares with its websocket's own reader so one flag wakes the writer for both.

Three threads touch a sink (the router's listener and ticker offer, the consumer pops), so
shared state is only ever replaced, never mutated in place: `ahead` is a frozenset swapped
whole (the ticker may be iterating the old one), and `cursor` only moves forward.
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
                 "ahead", "behind", "_tick_held", "_replay_held")

    def __init__(self, maxsize: int, wake: Flag | None = None, *, cursor: int = 0) -> None:
        """`cursor`: the owner's newest logged cursor when the consumer started (it wants
        nothing older); given before the sink is attached, so the router's tail check never
        sees it at 0 and takes the owner's whole history for lost."""
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
        self.cursor = cursor
        self.ahead: frozenset[int] | None = None
        self.behind = 0
        self._tick_held = False  # a TICK is pending
        self._replay_held = False  # a TAIL or RESYNC is pending

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
        ahead = self.ahead or frozenset()
        position = self.cursor
        if contiguous:
            position = max(position, cursor)
            ahead = frozenset(c for c in ahead if c > position)
        elif cursor > position:
            ahead = ahead | {cursor}
        while position + 1 in ahead:
            position += 1
        if position > self.cursor:
            self.cursor = position
        self.ahead = frozenset(c for c in ahead if c > position) or None

    def missing(self, upto: int) -> int:
        """How many cursors up to `upto` were never offered."""
        return max(0, upto - self.cursor - sum(1 for c in self.ahead or () if c <= upto))

    def blocked_since(self) -> float:
        """When the consumer's current write began (monotonic), 0.0 when it is not writing;
        a consumer that can block on a client reports it, so the router can cut one that
        stays blocked (see on_stall)."""
        return 0.0

    def offer_control(self, command: Any) -> bool:
        """Queue a command in order with the events; never refused while open (a kind
        already pending is not queued twice: the pending one does its work)."""
        if self.closed:
            return False
        kind = command.get("type") if isinstance(command, dict) else None
        if kind == "__tick__":
            if self._tick_held:
                return True
            self._tick_held = True
        elif kind in ("__tail__", "__resync__"):
            if self._replay_held:
                return True
            self._replay_held = True
        self._items.append((command, None))
        self.wake.set()
        return True

    def pop(self) -> Item | None:
        """The oldest item, or None when empty; never waits (the caller owns the wake flag)."""
        try:
            payload, text = self._items.pop(0)
        except IndexError:
            return None
        if text is not None:
            return ("event", payload, text)
        kind = payload.get("type") if isinstance(payload, dict) else None
        if kind == "__tick__":  # released after the pop: a later one is queued anew
            self._tick_held = False
        elif kind in ("__tail__", "__resync__"):
            self._replay_held = False
        return ("control", payload, "")

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
        """Called by the router's ticker when the sink stayed overflowed, or its consumer
        blocked in one write, for STUCK_AFTER seconds: the consumer is stuck (e.g. writing
        to a client that does not read)."""

    def close(self) -> None:
        self.closed = True
        self.wake.set()

    def pending(self) -> int:
        return len(self._items)
