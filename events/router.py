"""Per-process socket router: one Redis subscription, refcounted per user, bounded sinks.

A web process holds exactly one pub/sub connection, read by one listener thread (a greenlet
under gevent): redis-py's PubSub must not be shared, so attach/detach only note which users
changed under a lock and the listener applies those changes between reads.

A second process-wide thread ticks every sink once per `tick_interval` (the event socket
sends its keep-alive ping on that tick), so no socket needs a timer of its own. The same
thread checks the log's tail every TAIL_INTERVAL: one batched read of the connected users'
newest cursors; a sink whose consumer has not been offered an event the log held a whole
interval earlier gets TAIL and replays from the log, so an event whose publish was lost
reaches every connected consumer within TAIL_BOUND (docs/websocket.md).
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from events.channels import user_channel, user_of_channel
from events.sink import SocketSink
from events.transport import count_lost
from runlane import metrics

__all__ = ["SocketRouter", "SocketSink", "RESYNC", "TAIL", "TAIL_BOUND", "TICK"]

# The control command a sink receives after the router re-subscribed following a Redis loss:
# pub/sub kept nothing meanwhile, so the socket replays from the event log. Each sink gets
# its own copy with `after`: the per-user cursor up to which it was offered every event.
RESYNC = {"type": "__resync__"}
# Offered to every sink once per tick interval (keep-alive pings); consumers may ignore it.
TICK = {"type": "__tick__"}
# Offered (with `after`, like RESYNC) by the tail check to a sink that missed logged events
# (a publish was lost): its consumer replays from the log after that cursor.
TAIL = {"type": "__tail__"}
TAIL_INTERVAL = 1.0  # seconds between two looks at the connected users' newest cursors
TAIL_BOUND = 2 * TAIL_INTERVAL  # logged to offered-from-the-log, at most (plus one read)
TAIL_BATCH = 500  # users per read
STUCK_AFTER = 5.0  # at least this many seconds overflowed before a sink is told it is stuck
TICK_PERIOD = 0.05  # the ticker's step: each step ticks 1/(interval/period) of the sinks

log = logging.getLogger(__name__)


class SocketRouter:
    """Delivers each published event to the sinks of the user whose channel carried it."""

    def __init__(self, redis_url: str, *, prefix: str, poll_interval: float = 0.01,
                 tick_interval: float | None = None,
                 cursors: Callable[[list[str]], dict[str, int]] | None = None,
                 tail_interval: float = TAIL_INTERVAL) -> None:
        """`cursors` maps user ids to their newest logged cursor (EventLog.last_cursors);
        without it there is no tail check."""
        self._redis_url = redis_url
        self._prefix = prefix
        self._poll = poll_interval
        self._tick = tick_interval
        self._cursors = cursors
        self._tail_interval = tail_interval
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # a subscription was confirmed
        # Per user: a tuple (replaced, never mutated, so a reader may keep it), not a set:
        # most users have one socket, and this table holds an entry per connected user.
        self._sinks: dict[str, tuple[SocketSink, ...]] = {}
        self._pending: dict[str, bool] = {}  # users whose subscription the listener must apply
        self._live: set[str] = set()  # users whose channel Redis has confirmed
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self.connected = threading.Event()

    # -- public API, called from socket handlers -------------------------------------------

    def start(self) -> None:
        """Start the listener (and the ticker) once; later calls are no-ops."""
        with self._lock:
            if self._threads:
                return
            for target, name in ((self._listen_forever, "runlane-router"),
                                 (self._tick_forever, "runlane-ticker")):
                thread = threading.Thread(target=target, name=name, daemon=True)
                thread.start()
                self._threads.append(thread)

    def stop(self, timeout: float = 2.0) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout)

    def attach(self, user_id: str, sink: SocketSink, timeout: float = 5.0) -> bool:
        """Route `user_id`'s events to `sink`; True once the subscription is live in Redis."""
        self.start()
        with self._lock:
            sinks = self._sinks.get(user_id, ())
            self._sinks[user_id] = (*sinks, sink)
            if not sinks:
                self._pending[user_id] = True
            return self._changed.wait_for(lambda: user_id in self._live, timeout)

    def detach(self, user_id: str, sink: SocketSink) -> None:
        """Stop routing to `sink`; the channel is unsubscribed when its last sink leaves."""
        sink.close()
        with self._lock:
            sinks = self._sinks.get(user_id)
            if sinks is None or sink not in sinks:
                return
            rest = tuple(s for s in sinks if s is not sink)
            if rest:
                self._sinks[user_id] = rest
            else:
                del self._sinks[user_id]
                self._pending[user_id] = False

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "users": len(self._sinks),
                "sockets": sum(len(s) for s in self._sinks.values()),
            }

    def _all_sinks(self) -> list[SocketSink]:
        with self._lock:
            return [sink for group in self._sinks.values() for sink in group]

    # -- the listener ------------------------------------------------------------------------

    def _listen_forever(self) -> None:
        backoff = 0.1
        first = True
        while not self._stopping.is_set():
            client = redis.Redis.from_url(
                self._redis_url, socket_connect_timeout=2, socket_keepalive=True,
                health_check_interval=15,
            )
            pubsub = client.pubsub()
            try:
                with self._lock:  # a new connection holds nothing: subscribe every user
                    self._pending = dict.fromkeys(self._sinks, True)
                self._sync(pubsub)
                pubsub.ping()
                self.connected.set()
                if not first:
                    self._request_resync()
                first = False
                backoff = 0.1
                while not self._stopping.is_set():
                    self._sync(pubsub)
                    message = pubsub.get_message(timeout=self._poll)
                    if message is not None:
                        self._handle(message)
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                self.connected.clear()
                with self._lock:
                    self._live.clear()
                log.warning("event router lost Redis (%s); retrying in %.1fs", exc, backoff)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 60.0)
            except Exception:  # a bug here must not silently end delivery for the process
                log.exception("event router failed; restarting listener")
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 60.0)
            finally:
                try:
                    pubsub.close()
                    client.close()
                except Exception:  # noqa: BLE001 - closing a broken connection
                    pass

    def _request_resync(self) -> None:
        sinks = self._all_sinks()
        log.info("event router re-subscribed; %d sockets replay from the log", len(sinks))
        for sink in sinks:
            sink.offer_control({**RESYNC, "after": sink.cursor})

    def _tick_forever(self) -> None:
        """Give each sink one TICK per `tick_interval`, a few at a time every TICK_PERIOD
        (a burst of thousands of pings would hold up event delivery); and once a second
        tell a sink that stayed overflowed, or whose consumer has been blocked in one
        write, for STUCK_AFTER seconds (or a tick interval, if longer) that it is stuck:
        its client, which could not even have seen a ping meanwhile, does not read. The
        second needs no live event: pings and pongs alone fill a non-reading client's
        buffers."""
        interval = self._tick or 0.0
        stuck_after = max(2, round(max(interval, STUCK_AFTER)))
        round_sinks: list[SocketSink] = []
        per_pass: float = 0
        pos = 0
        next_round = next_check = next_tail = time.monotonic()
        while not self._stopping.wait(TICK_PERIOD):
            now = time.monotonic()
            if self._cursors is not None and now >= next_tail:
                next_tail = now + self._tail_interval
                try:
                    self.check_tails()
                except Exception:  # a database hiccup: try next interval
                    log.warning("tail check failed; trying again", exc_info=True)
            if now >= next_check:
                next_check = now + 1.0
                for sink in self._all_sinks():
                    if sink.overflowed:
                        sink.stalls += 1
                        if sink.stalls == stuck_after:
                            sink.on_stall()
                        continue
                    since = sink.blocked_since()
                    if since and now - since >= stuck_after:  # no live event needed
                        sink.on_stall()
            if not interval:
                continue
            if now >= next_round:  # a new round: every sink attached now, spread evenly
                next_round = now + interval
                round_sinks, pos = self._all_sinks(), 0
                per_pass = -(-len(round_sinks) * TICK_PERIOD // interval)
            for sink in round_sinks[pos:pos + int(per_pass)]:
                sink.offer_control(TICK)
            pos += int(per_pass)

    def check_tails(self) -> None:
        """Offer TAIL to each sink that has not been offered a cursor its user's log held at
        the previous check: a whole interval is far longer than a publish takes, so that
        event's publish was lost (or Redis is away)."""
        assert self._cursors is not None
        with self._lock:
            groups = list(self._sinks.items())
        for start in range(0, len(groups), TAIL_BATCH):
            chunk = groups[start:start + TAIL_BATCH]
            newest = self._cursors([user for user, _ in chunk])
            for user, sinks in chunk:
                logged = newest.get(user, 0)
                missed = 0
                for sink in sinks:
                    if sink.behind > sink.cursor:
                        missed = max(missed, sink.missing(sink.behind))
                        sink.offer_control({**TAIL, "after": sink.cursor})
                        sink.advance(sink.behind)  # what its replay covers
                    sink.behind = logged if logged > sink.cursor else 0
                if missed:
                    count_lost("tail_check", missed)

    def _sync(self, pubsub: Any) -> None:
        """Apply the users attach/detach noted since the last call (cheap when none)."""
        with self._lock:
            if not self._pending:
                return
            pending, self._pending = self._pending, {}
            add = [u for u in pending if u in self._sinks]
            drop = [u for u in pending if u not in self._sinks]
            self._live.difference_update(drop)
        if add:
            pubsub.subscribe(*(user_channel(self._prefix, u) for u in add))
        if drop:
            pubsub.unsubscribe(*(user_channel(self._prefix, u) for u in drop))

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind not in ("subscribe", "message"):
            return
        channel = message["channel"]
        channel = channel.decode() if isinstance(channel, bytes) else channel
        user_id = user_of_channel(self._prefix, channel)
        if user_id is None:
            return
        if kind == "subscribe":
            with self._lock:
                if user_id in self._sinks:
                    self._live.add(user_id)
                    self._changed.notify_all()
            return
        raw = message["data"]
        text = raw.decode() if isinstance(raw, bytes) else raw
        try:
            parsed = json.loads(text)
        except ValueError:
            log.warning("skipping undecodable message on %s", channel)
            return
        with self._lock:
            sinks = self._sinks.get(user_id, ())
        accepted = sum(sink.offer(parsed, text) for sink in sinks)
        metrics.delivered(parsed, accepted, len(sinks) - accepted)
