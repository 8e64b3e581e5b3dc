"""SocketSink: one consumer's ordered inbox of live events and control commands.

The router offers events and never blocks: past `maxsize` pending events the sink is marked
overflowed and its socket is cut (the client resumes from the log). Control commands (client
frames, resync requests) are never dropped; their producer waits instead.
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Any, Literal

Kind = Literal["event", "control"]
Item = tuple[Kind, Any, str]


class SocketSink:
    def __init__(self, maxsize: int, control_max: int = 32) -> None:
        self.maxsize = maxsize
        self._control_max = control_max
        self._items: deque[Item] = deque()
        self._events = 0
        self._controls = 0
        self._cond = threading.Condition()
        self.overflowed = False
        self.closed = False

    def offer(self, message: dict[str, Any], text: str) -> bool:
        """Queue a live event without blocking; False (and overflowed) when full."""
        with self._cond:
            if self.closed:
                return False
            if self._events >= self.maxsize:
                self.overflowed = True
                self._cond.notify_all()
                return False
            self._items.append(("event", message, text))
            self._events += 1
            self._cond.notify_all()
            return True

    def offer_control(self, command: Any, *, wait: bool = True) -> bool:
        """Queue a command in order with the events; waits while too many are pending
        (`wait=False`, for the router's own rare commands, appends regardless)."""
        with self._cond:
            while wait and self._controls >= self._control_max and not self.closed:
                self._cond.wait(1.0)
            if self.closed:
                return False
            self._items.append(("control", command, ""))
            self._controls += 1
            self._cond.notify_all()
            return True

    def next(self, timeout: float) -> Item | None:
        with self._cond:
            if not self._items and not self.overflowed:
                self._cond.wait(timeout)
            if not self._items:
                return None
            item = self._items.popleft()
            if item[0] == "event":
                self._events -= 1
            else:
                self._controls -= 1
            self._cond.notify_all()
            return item

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def pending(self) -> int:
        return len(self._items)
