"""Replay: what a socket still has to read from the event log, a page at a time.

A replay (a `subscribe` with `after_seq`, a `resume`, a resync after a Redis loss or a lost
publish, a long gap in a run) is a position in the log, not a list of frames: the socket's
writer reads the next page only when it has sent the previous one, so what one socket holds
is bounded by a page whatever the log stores, and the loop is never held for longer than a
page's read.
"""
from __future__ import annotations

from typing import Literal

from domain.events import Event
from events.eventlog import EventLog

Scope = Literal["run", "thread", "user"]
PAGE = 256  # events per read, at most (the writer may ask for fewer)


class Replay:
    """One pending replay of the user's log: one run's events after a `seq`, or (a thread's,
    or all) events after a per-user cursor. `after_seq` skips each run's older events in a
    thread replay (in the query); `announce` makes the end send `resumed`."""

    __slots__ = ("scope", "key", "position", "after_seq", "announce")

    def __init__(self, scope: Scope, key: str | None, position: int, *, after_seq: int = 0,
                 announce: bool = False) -> None:
        self.scope = scope
        self.key = key
        self.position = position
        self.after_seq = after_seq
        self.announce = announce

    def covers(self, event: dict[str, object]) -> bool:
        """Whether a live event falls in this replay's range, so the replay sends it (it was
        logged before it was published, so a later page reads it)."""
        if self.scope == "user":
            return True
        return event["run_id" if self.scope == "run" else "thread_id"] == self.key

    def page(self, log: EventLog, user_id: str, limit: int) -> tuple[list[Event], bool]:
        """The next events (at most `limit` read), and whether this replay is then done."""
        if self.scope == "run":
            assert self.key is not None
            read = log.read_after(user_id, self.key, self.position, limit=limit)
            if read:
                self.position = read[-1].seq
            return read, len(read) < limit
        read = log.user_after(user_id, self.position, limit=limit, after_seq=self.after_seq,
                              thread_id=self.key if self.scope == "thread" else None)
        if read:
            self.position = read[-1].cursor
        return read, len(read) < limit
