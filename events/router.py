"""Per-process socket router: one Redis subscription, refcounted per user, bounded sinks.

A web process holds exactly one pub/sub connection, read by one listener thread (a greenlet
under gevent): redis-py's PubSub must not be shared, so attach/detach only edit the wanted
set under a lock and the listener applies the difference between reads.
"""
from __future__ import annotations

import json
import logging
import threading
from typing import Any

import redis

from events.channels import user_channel, user_of_channel
from events.sink import SocketSink
from runlane import metrics

__all__ = ["SocketRouter", "SocketSink", "RESYNC"]

# The control command a sink receives after the router re-subscribed following a Redis loss:
# pub/sub kept nothing meanwhile, so the socket replays from the event log.
RESYNC = {"type": "__resync__"}

log = logging.getLogger(__name__)


class SocketRouter:
    """Delivers each published event to the sinks of the user whose channel carried it."""

    def __init__(self, redis_url: str, *, prefix: str, poll_interval: float = 0.01) -> None:
        self._redis_url = redis_url
        self._prefix = prefix
        self._poll = poll_interval
        self._lock = threading.Lock()
        self._sinks: dict[str, set[SocketSink]] = {}
        self._confirmed: dict[str, threading.Event] = {}
        self._live: set[str] = set()  # channels Redis has confirmed and not yet been told to drop
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.connected = threading.Event()

    # -- public API, called from socket handlers -------------------------------------------

    def start(self) -> None:
        """Start the listener once; later calls are no-ops."""
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._listen_forever, name="runlane-router", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def attach(self, user_id: str, sink: SocketSink, timeout: float = 5.0) -> bool:
        """Route `user_id`'s events to `sink`; True once the subscription is live in Redis."""
        self.start()
        channel = user_channel(self._prefix, user_id)
        with self._lock:
            sinks = self._sinks.setdefault(user_id, set())
            sinks.add(sink)
            confirmed = self._confirmed.setdefault(channel, threading.Event())
            if channel in self._live:
                confirmed.set()
        return confirmed.wait(timeout)

    def detach(self, user_id: str, sink: SocketSink) -> None:
        """Stop routing to `sink`; the channel is unsubscribed when its last sink leaves."""
        sink.close()
        with self._lock:
            sinks = self._sinks.get(user_id)
            if sinks is None:
                return
            sinks.discard(sink)
            if not sinks:
                del self._sinks[user_id]
                self._confirmed.pop(user_channel(self._prefix, user_id), None)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "users": len(self._sinks),
                "sockets": sum(len(s) for s in self._sinks.values()),
            }

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
                subscribed: set[str] = set()
                self._sync(pubsub, subscribed)
                pubsub.ping()
                self.connected.set()
                if not first:
                    self._request_resync()
                first = False
                backoff = 0.1
                while not self._stopping.is_set():
                    self._sync(pubsub, subscribed)
                    message = pubsub.get_message(timeout=self._poll)
                    if message is not None:
                        self._handle(message)
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                self.connected.clear()
                with self._lock:
                    self._live.clear()
                    for event in self._confirmed.values():
                        event.clear()
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
        with self._lock:
            sinks = [sink for group in self._sinks.values() for sink in group]
        log.info("event router re-subscribed; %d sockets replay from the log", len(sinks))
        for sink in sinks:
            sink.offer_control(RESYNC, wait=False)

    def _sync(self, pubsub: Any, subscribed: set[str]) -> None:
        with self._lock:
            wanted = set(self._confirmed)
            drop = subscribed - wanted
            self._live -= drop
        add = wanted - subscribed
        if add:
            pubsub.subscribe(*add)
            subscribed |= add
        if drop:
            pubsub.unsubscribe(*drop)
            subscribed -= drop

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        channel = message["channel"]
        channel = channel.decode() if isinstance(channel, bytes) else channel
        if kind == "subscribe":
            with self._lock:
                confirmed = self._confirmed.get(channel)
                if confirmed is not None:
                    self._live.add(channel)
                    confirmed.set()
            return
        if kind != "message":
            return
        user_id = user_of_channel(self._prefix, channel)
        if user_id is None:
            return
        raw = message["data"]
        text = raw.decode() if isinstance(raw, bytes) else raw
        try:
            parsed = json.loads(text)
        except ValueError:
            log.warning("skipping undecodable message on %s", channel)
            return
        with self._lock:
            sinks = list(self._sinks.get(user_id, ()))
        accepted = sum(sink.offer(parsed, text) for sink in sinks)
        metrics.delivered(parsed, accepted, len(sinks) - accepted)
