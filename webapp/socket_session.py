"""SocketSession: what one socket has asked for and been sent; decides every frame it gets.

Driven only by the socket's single writer, so it needs no locks. Delivery is exactly-once per
socket: each run's events are sent in `seq` order, anything at or below the last sent `seq`
of that run is dropped, and a jump forward is filled from the event log first.
"""
from __future__ import annotations

import json
import re
from collections import OrderedDict
from typing import Any

from events.eventlog import EventLog
from events.types import Event
from factories.context import ID_PATTERN
from storage import queries
from storage.db import Database

_ID = re.compile(ID_PATTERN)
# Publishes of one user's concurrent runs may reach Redis slightly out of cursor order;
# a resync re-reads this many cursors below the highest one seen (duplicates are dropped).
REORDER_SLACK = 256
REMEMBERED_RUNS = 4096


def frame(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


def error(code: str, detail: str) -> str:
    return frame({"type": "error", "code": code, "detail": detail})


class SocketSession:
    """Held by every connected socket, mostly idle: slots, and the subscription sets and the
    per-run positions are only made once something needs them."""

    __slots__ = ("user_id", "_log", "_db", "runs", "threads", "_sent", "max_cursor")

    def __init__(self, *, user_id: str, log: EventLog, db: Database) -> None:
        self.user_id = user_id
        self._log = log
        self._db = db
        self.runs: set[str] | None = None
        self.threads: set[str] | None = None
        self._sent: OrderedDict[str, int] | None = None  # run id -> last seq sent
        # Events from before the socket existed are not "missed".
        self.max_cursor = log.last_cursor(user_id)

    # -- what to send -----------------------------------------------------------------------

    def _wanted(self, event: dict[str, Any]) -> bool:
        if not self.runs and not self.threads:
            return True
        return event["run_id"] in (self.runs or ()) or event["thread_id"] in (self.threads or ())

    def _last_sent(self, run_id: str) -> int | None:
        return self._sent.get(run_id) if self._sent is not None else None

    def has_gap(self, event: dict[str, Any]) -> bool:
        """Whether sending this live event first needs the log (a jump past the next seq)."""
        last = self._last_sent(event["run_id"])
        return last is not None and event["seq"] > last + 1

    def _remember(self, run_id: str, seq: int) -> None:
        if self._sent is None:
            self._sent = OrderedDict()
        self._sent[run_id] = seq
        self._sent.move_to_end(run_id)
        if len(self._sent) > REMEMBERED_RUNS:
            self._sent.popitem(last=False)

    def _emit(self, event: dict[str, Any], text: str | None = None) -> list[str]:
        run_id, seq = event["run_id"], event["seq"]
        last = self._last_sent(run_id)
        if last is not None and seq <= last:
            return []
        frames: list[str] = []
        if last is not None and seq > last + 1:  # a gap: the log has what is missing
            for missing in self._log.read_after(self.user_id, run_id, last, limit=seq - last - 1):
                frames += self._emit(missing.to_dict())
        self._remember(run_id, seq)
        self.max_cursor = max(self.max_cursor, event["cursor"])
        frames.append(text if text is not None else frame(event))
        return frames

    def _replay(self, events: list[Event]) -> list[str]:
        frames: list[str] = []
        for event in events:
            data = event.to_dict()
            if self._wanted(data):
                frames += self._emit(data)
        return frames

    def on_live(self, event: dict[str, Any], text: str) -> list[str]:
        """Frames for one event from the router (already known to be this user's)."""
        return self._emit(event, text) if self._wanted(event) else []

    # -- commands from the client (and the router) --------------------------------------------

    def on_command(self, raw: Any) -> list[str]:
        if isinstance(raw, dict) and raw.get("type") == "__resync__":
            return self.resync()
        try:
            message = json.loads(raw) if isinstance(raw, str) else None
        except (ValueError, RecursionError):
            message = None
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            return [error("bad_message", "expected a JSON object with a string `type`")]
        kind = message["type"]
        if kind == "ping":
            return [frame({"type": "pong"})]
        if kind == "subscribe":
            return self.subscribe(message)
        if kind == "unsubscribe":
            return self.unsubscribe(message)
        if kind == "resume":
            return self.resume(message)
        return [error("unknown_type", f"unknown type {kind!r}")]

    def _target(self, message: dict[str, Any]) -> tuple[str, str] | str:
        keys = [k for k in ("run_id", "thread_id") if k in message]
        if len(keys) != 1:
            return error("bad_message", "give exactly one of run_id or thread_id")
        value = message[keys[0]]
        if not isinstance(value, str) or not _ID.match(value):
            return error("bad_message", f"{keys[0]} must match {ID_PATTERN}")
        return keys[0], value

    def _after(self, message: dict[str, Any], key: str) -> int | str:
        value = message.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return error("bad_message", f"{key} must be a non-negative integer")
        return value

    def subscribe(self, message: dict[str, Any]) -> list[str]:
        target = self._target(message)
        if isinstance(target, str):
            return [target]
        key, value = target
        with self._db.session() as session:
            owned = (queries.get_run(session, self.user_id, value) is not None if key == "run_id"
                     else queries.thread_exists(session, self.user_id, value))
        if not owned:  # the same answer for someone else's id and a missing one
            return [error("not_found", f"no {key[:-3]} {value}")]
        after = self._after(message, "after_seq")
        if isinstance(after, str):
            return [after]
        if key == "run_id":
            self.runs = (self.runs or set()) | {value}
        else:
            self.threads = (self.threads or set()) | {value}
        frames = [frame({"type": "subscribed", key: value})]
        if "after_seq" not in message:
            return frames
        if key == "run_id":
            if self._log.replay_gap(self.user_id, after, run_id=value):
                frames.append(frame({"type": "resync_required", "run_id": value}))
            if self._sent is not None:
                self._sent.pop(value, None)
            self._remember(value, after)
            frames += self._replay_run(value, after)
        else:
            for event in self._log.user_after(self.user_id, 0, thread_id=value, limit=100_000):
                if event.seq > after:
                    frames += self._emit(event.to_dict())
        return frames

    def _replay_run(self, run_id: str, after: int) -> list[str]:
        frames: list[str] = []
        while True:
            batch = self._log.read_after(self.user_id, run_id, after, limit=500)
            frames += self._replay(batch)
            if len(batch) < 500:
                return frames
            after = batch[-1].seq

    def unsubscribe(self, message: dict[str, Any]) -> list[str]:
        target = self._target(message)
        if isinstance(target, str):
            return [target]
        key, value = target
        chosen = self.runs if key == "run_id" else self.threads
        if chosen is not None:
            chosen.discard(value)
        return [frame({"type": "unsubscribed", key: value})]

    def resume(self, message: dict[str, Any]) -> list[str]:
        """Every event of the user's runs after its per-user cursor, then live."""
        cursor = self._after(message, "cursor")
        if isinstance(cursor, str):
            return [cursor]
        frames: list[str] = []
        if self._log.replay_gap(self.user_id, cursor):
            frames.append(frame({"type": "resync_required"}))
        frames += self._replay_user(cursor)
        # Tells the client the backlog is done; live events follow.
        frames.append(frame({"type": "resumed", "cursor": self.max_cursor}))
        return frames

    def _replay_user(self, after: int) -> list[str]:
        frames: list[str] = []
        while True:
            batch = self._log.user_after(self.user_id, after, limit=500)
            frames += self._replay(batch)
            if len(batch) < 500:
                return frames
            after = batch[-1].cursor

    def resync(self) -> list[str]:
        """After the router lost Redis: replay what was published while it was away."""
        return self._replay_user(max(0, self.max_cursor - REORDER_SLACK))
