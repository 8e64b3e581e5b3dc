"""SocketSession: what one socket has asked for and been sent; decides every frame it gets.

Driven only by the socket's single writer, so it needs no locks. Delivery is exactly-once per
socket: each run's events are sent in `seq` order, anything at or below the last sent `seq`
of that run is dropped, and a jump forward is filled from the event log first. Whatever the
log must supply (replays, long gaps) is queued as a `Replay` and read a page at a time by
`replay_step`, so no frame from a client makes the session hold more than a page. A run the
socket has sent nothing of yet is filled from the log too: its events logged while the
socket was connected (above its floor cursor) come first, so a lost publish of a run's early
events is not hidden by its later ones. At most one replay per run, thread or user is queued
(a new one replaces, or for the user's log merges with, the old), and a client may keep at
most MAX_REPLAYS queued.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any, ClassVar

from domain.events import MAX_CURSOR, MAX_SEQ
from domain.ids import ID_PATTERN, is_id
from events.eventlog import EventLog
from storage import queries
from storage.db import Database
from webapp.socket_replay import PAGE, Replay

REMEMBERED_RUNS = 4096
GAP_INLINE = 64  # a run's gap up to this is filled at once; a longer one becomes a Replay
MAX_REPLAYS = 8  # queued replays a client's frames may add (`error` too_many_replays past it)


def frame(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


def error(code: str, detail: str) -> str:
    return frame({"type": "error", "code": code, "detail": detail})


class SocketSession:
    """Held by every connected socket, mostly idle: slots, and the subscription sets and the
    per-run positions are only made once something needs them."""

    __slots__ = ("user_id", "_log", "_db", "runs", "threads", "_sent", "max_cursor", "_floor",
                 "_forgot", "_replays")
    # How many runs' positions a socket keeps (a class attribute: no cost per idle socket);
    # an evicted run's next event is refilled from the log above the highest one forgotten.
    remembered_runs: ClassVar[int] = REMEMBERED_RUNS

    def __init__(self, *, user_id: str, log: EventLog, db: Database,
                 floor: int | None = None) -> None:
        """`floor`: the user's newest cursor when the socket connected (read here without)."""
        self.user_id = user_id
        self._log = log
        self._db = db
        self.runs: set[str] | None = None
        self.threads: set[str] | None = None
        # run id -> (last seq sent, its cursor); the cursor bounds a forgotten run's refill.
        self._sent: OrderedDict[str, tuple[int, int]] | None = None
        # The newest per-user cursor this socket has accounted for (sent, or filtered out).
        # Events up to `_floor` are not owed: from before the socket existed, or covered by
        # the client's `resume`; resyncs and fills start above it.
        self.max_cursor = self._floor = log.last_cursor(user_id) if floor is None else floor
        self._forgot = 0  # the newest cursor sent of a run the LRU evicted
        self._replays: list[Replay] | None = None

    # -- what to send -----------------------------------------------------------------------

    def _wanted(self, event: dict[str, Any]) -> bool:
        if not self.runs and not self.threads:
            return True
        return event["run_id"] in (self.runs or ()) or event["thread_id"] in (self.threads or ())

    def _last_sent(self, run_id: str) -> int | None:
        entry = self._sent.get(run_id) if self._sent is not None else None
        return entry[0] if entry is not None else None

    def _fill_floor(self) -> int:
        """Events of a run this socket knows nothing of are owed above this cursor."""
        return max(self._floor, self._forgot)

    def has_gap(self, event: dict[str, Any]) -> bool:
        """Whether sending this live event may first need the log: a jump past the next seq,
        or a run's first event here that is not its first and was logged since the socket's
        floor (its predecessors may have been too, and their publishes lost)."""
        seq: int = event["seq"]
        cursor: int = event["cursor"]
        last = self._last_sent(event["run_id"])
        if last is None:
            return seq > 1 and cursor > self._fill_floor() + 1
        return seq > last + 1

    def _remember(self, run_id: str, seq: int, cursor: int) -> None:
        if self._sent is None:
            self._sent = OrderedDict()
        self._sent[run_id] = (seq, cursor)
        self._sent.move_to_end(run_id)
        if len(self._sent) > self.remembered_runs:
            _run, (_seq, forgotten) = self._sent.popitem(last=False)
            self._forgot = max(self._forgot, forgotten)

    def _emit(self, event: dict[str, Any], text: str | None = None) -> list[str]:
        run_id, seq = event["run_id"], event["seq"]
        last = self._last_sent(run_id)
        if last is not None and seq <= last:
            return []
        if last is None and self.has_gap(event):
            # Nothing of this run sent yet: its events since the floor are owed first.
            floor = self._fill_floor()
            first = self._log.first_seq_after(self.user_id, run_id, floor)
            if first is not None and first < seq:
                last = first - 1
                self._remember(run_id, last, floor)
        frames: list[str] = []
        if last is not None and seq > last + 1:  # a gap: the log has what is missing
            if seq - last - 1 > GAP_INLINE:  # too long to hold: page it (this event too)
                self._queue(Replay("run", run_id, last))
                return []
            for missing in self._log.read_after(self.user_id, run_id, last, limit=seq - last - 1):
                frames += self._emit(missing.to_dict())
        self._remember(run_id, seq, event["cursor"])
        self.max_cursor = max(self.max_cursor, event["cursor"])
        frames.append(text if text is not None else frame(event))
        return frames

    def on_live(self, event: dict[str, Any], text: str) -> list[str]:
        """Frames for one event from the router (already known to be this user's)."""
        if self._replays is not None and any(r.covers(event) for r in self._replays):
            return []  # a queued replay reads it from the log, in order
        if not self._wanted(event):
            self.max_cursor = max(self.max_cursor, event["cursor"])
            return []
        return self._emit(event, text)

    # -- replays, a page at a time ------------------------------------------------------------

    @property
    def replaying(self) -> bool:
        return bool(self._replays)

    def _queue(self, replay: Replay) -> None:
        """Queue a replay; one per (scope, key): a run's or thread's replaces the pending
        one (it restates the client's position), the user log's merges with it (from the
        earlier cursor, announcing if either did)."""
        if self._replays is None:
            self._replays = []
        for index, queued in enumerate(self._replays):
            if queued.scope == replay.scope and queued.key == replay.key:
                if replay.scope == "user":
                    queued.position = min(queued.position, replay.position)
                    queued.announce = queued.announce or replay.announce
                else:
                    self._replays[index] = replay
                return
        self._replays.append(replay)

    def _room_for(self, scope: str, key: str | None) -> bool:
        """Whether a client's frame may queue a replay of (scope, key)."""
        replays = self._replays or ()
        return len(replays) < MAX_REPLAYS or any(
            r.scope == scope and r.key == key for r in replays)

    def replay_step(self, limit: int = PAGE) -> list[str]:
        """The frames of the next page (at most `limit` events) of the oldest queued replay."""
        if not self._replays:
            return []
        replay = self._replays[0]
        events, done = replay.page(self._log, self.user_id, max(1, min(limit, PAGE)))
        frames: list[str] = []
        for event in events:
            data = event.to_dict()
            if replay.after_seq and (self._last_sent(event.run_id) or 0) < replay.after_seq:
                # The client has this run up to `after_seq`: nothing below it is owed.
                self._remember(event.run_id, replay.after_seq, event.cursor - 1)
            if self._wanted(data):
                frames += self._emit(data)
            elif replay.scope != "run":
                self.max_cursor = max(self.max_cursor, event.cursor)
        if done:
            if replay in self._replays:  # (a replacement queued meanwhile stays)
                self._replays.remove(replay)
            if not self._replays:
                self._replays = None
            if replay.announce:  # tells the client the backlog is done; live events follow
                frames.append(frame({"type": "resumed", "cursor": self.max_cursor}))
        return frames

    # -- commands from the client (and the router) --------------------------------------------

    def on_command(self, raw: Any) -> list[str]:
        if isinstance(raw, dict) and raw.get("type") in ("__resync__", "__tail__"):
            after = raw.get("after")
            return self.resync(after if isinstance(after, int) else 0)
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
        if not is_id(value):
            return error("bad_message", f"{keys[0]} must match {ID_PATTERN}")
        return keys[0], value

    def _after(self, message: dict[str, Any], key: str, high: int) -> int | str:
        """A position from the client, within what the database can hold."""
        value = message.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
            return error("bad_message", f"{key} must be an integer from 0 to {high}")
        return value

    def subscribe(self, message: dict[str, Any]) -> list[str]:
        target = self._target(message)
        if isinstance(target, str):
            return [target]
        key, value = target
        after = self._after(message, "after_seq", MAX_SEQ)
        if isinstance(after, str):
            return [after]
        with self._db.session() as session:
            owned = (queries.get_run(session, self.user_id, value) is not None if key == "run_id"
                     else queries.thread_exists(session, self.user_id, value))
        if not owned:  # the same answer for someone else's id and a missing one
            return [error("not_found", f"no {key[:-3]} {value}")]
        if "after_seq" in message and not self._room_for(key[:-3], value):
            return [error("too_many_replays",
                          f"at most {MAX_REPLAYS} replays may be pending; retry when done")]
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
            self._remember(value, after, self.max_cursor)
            self._queue(Replay("run", value, after))
        else:
            self._queue(Replay("thread", value, 0, after_seq=after))
        return frames

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
        """Every event of the user's runs after its per-user cursor, then `resumed`, then
        live (the events come from `replay_step`)."""
        cursor = self._after(message, "cursor", MAX_CURSOR)
        if isinstance(cursor, str):
            return [cursor]
        if not self._room_for("user", None):
            return [error("too_many_replays",
                          f"at most {MAX_REPLAYS} replays may be pending; retry when done")]
        frames: list[str] = []
        if self._log.replay_gap(self.user_id, cursor):
            frames.append(frame({"type": "resync_required"}))
        # The client has every event up to `cursor`: none of them is owed to it any more
        # (a claim past what this socket has seen is not taken: that would hide lost ones).
        self._floor = max(self._floor, min(cursor, self.max_cursor))
        self._queue(Replay("user", None, cursor, announce=True))
        return frames

    def resync(self, after: int) -> list[str]:
        """After the router lost Redis, or its tail check found logged events this socket
        was never offered: replay the log after `after` (the cursor up to which the router
        offered every event), never from before the socket existed; merged with any replay
        of the user's log already queued."""
        self._queue(Replay("user", None, max(self._floor, after)))
        return []
