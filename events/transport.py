"""The write-only side of the event transport, used by workers (and nobody needs more).

It holds one connection and does not wait for each reply, which redis-py's client API cannot
do: the connection-level calls it needs are behind `runlane/redis_wire.py`."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

from runlane import metrics
from runlane.redis_wire import BROKEN, ERRORS, Refused, Wire

log = logging.getLogger(__name__)

# What a broken connection raises: the publishes whose replies it lost are sent again.
_FAILURES = BROKEN
# Anything else redis-py raises (a refused handshake command, a garbled reply): never fatal
# to the run whose event is already logged; counted lost.
_ANY_ERROR = ERRORS
CLIENT_NAME = "runlane-publisher"  # how an operator finds these connections in CLIENT LIST
# A connection quiet for this long is checked for a close by the server before it is used;
# within a burst a broken connection shows when the next reply is read, and is re-sent then.
IDLE_CHECK = 0.005
# After a failed connect, publishes give up at once for this long instead of each waiting
# for a connect timeout again (while holding the lock); the web's tail check delivers them.
CONNECT_BACKOFF = 1.0


def count_lost(detected_by: str, count: int) -> None:
    """Count publishes lost (`runlane_events_publish_lost`), by who noticed: the publisher
    (could not send or confirm) or a web process's tail check (logged, never received)."""
    metrics.publish_lost(detected_by, count)


def _lost_by_publisher(count: int) -> None:
    count_lost("publisher", count)


class RedisPublisher:
    """Publishes encoded events, at least once while Redis is reachable; a publish that
    cannot be made is logged and counted, never fatal (the event is in the log, and every
    web process's router finds logged events no publish announced, see events/router.py).

    A publish does not wait for Redis's reply: waiting held a run up for a round trip per
    event. The publisher keeps one connection of its own and, before its next command,
    reads the replies of the publishes sent on it and checks that the server has not closed
    it meanwhile. Publishes whose replies were lost with a broken connection are sent again
    on a new one (a subscriber may then get one twice; sockets and SSE drop a `seq` already
    sent), so a connection the server closed (restart, CLIENT KILL, idle timeout) costs no
    event. `flush` reads the outstanding replies now: at a run's end there is no next
    publish to do it.
    """

    def __init__(self, client: redis.Redis,
                 on_lost: Callable[[int], None] = _lost_by_publisher,
                 name: str | None = None) -> None:
        self._client = client
        self._lock = threading.Lock()  # one command stream; gevent patches it in the web
        self._connection: Wire | None = None  # the publisher's own
        self._unread: list[tuple[str, str]] = []  # sent; Redis's reply not read yet
        self._on_lost = on_lost
        self._used = 0.0  # monotonic time of the last command
        self._retry_at = 0.0  # no connect attempt before this (monotonic), after a failure
        self._name = name  # set by the publisher itself, so an ACL refusing it costs nothing

    @classmethod
    def from_url(cls, url: str) -> RedisPublisher:
        return cls(redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2,
                                        health_check_interval=30), name=CLIENT_NAME)

    def publish(self, channel: str, data: str) -> bool:
        """Send a PUBLISH; False when it could not be sent (Redis down, unreachable, or
        refusing the connection). Never raises a Redis error: the event is logged."""
        with self._lock:
            try:
                return self._publish(channel, data)
            except _ANY_ERROR as exc:
                self._give_up(exc)
                log.warning("publish on %s failed (%s); the event stays in the log",
                            channel, exc)
                self._on_lost(1)
                return False

    def _publish(self, channel: str, data: str) -> bool:
        try:
            connection: Wire | None = self._settled()
        except _FAILURES as exc:
            self._give_up(exc)
            connection = None
        error: BaseException | None = None
        for _attempt in range(2):  # a connection found broken only now: once more
            try:
                if connection is None:
                    connection = self._connect()
                connection.send("PUBLISH", channel, data)
                self._unread.append((channel, data))
                self._used = time.monotonic()
                return True
            except _FAILURES as exc:
                self._drop()
                connection = None
                error = exc
                if self._backing_off():
                    break  # the connect failed: a second one now would fail alike
        raise error if error is not None else redis.ConnectionError("not sent")

    def flush(self) -> bool:
        """Read every outstanding reply now (re-sending what a broken connection lost);
        False when some publish could not be confirmed. Never raises a Redis error."""
        with self._lock:
            if not self._unread:
                return True
            try:
                self._settled()
                return True
            except _ANY_ERROR as exc:
                self._give_up(exc)
                return False

    def _backing_off(self) -> bool:
        return time.monotonic() < self._retry_at

    def _connect(self) -> Wire:
        if self._connection is not None:
            return self._connection
        if self._backing_off():
            raise redis.ConnectionError("Redis was unreachable a moment ago; not retrying yet")
        try:
            connection = self._connection = Wire.borrow(self._client)
            if self._name:
                try:
                    connection.send("CLIENT", "SETNAME", self._name)
                    connection.read()
                except Refused as exc:  # e.g. an ACL without +client
                    log.warning("Redis refused to name the publisher's connection (%s); "
                                "publishing unnamed", exc)
                    self._name = None
        except _FAILURES:
            self._retry_at = time.monotonic() + CONNECT_BACKOFF
            raise
        self._retry_at = 0.0
        return self._connection

    def _settled(self) -> Wire:
        """The connection, with every earlier publish's reply read and the server known not
        to have closed it; publishes whose replies a broken connection lost are re-sent on a
        new connection first. Raises when even that fails (the unread are still noted)."""
        connection = self._connect()
        try:
            self._read_replies(connection)
            if time.monotonic() - self._used > IDLE_CHECK:
                connection.check_open()  # not closed by the server meanwhile
            return connection
        except _FAILURES as exc:
            log.info("publisher connection lost (%s); re-sending %d publishes",
                     exc, len(self._unread))
            self._drop(keep_unread=True)
        connection = self._connect()
        for channel, data in self._unread:
            connection.send("PUBLISH", channel, data)
        self._read_replies(connection)
        return connection

    def _read_replies(self, connection: Wire) -> None:
        while self._unread:
            try:
                connection.read()
            except Refused as exc:  # the reply was read whole: the stream is fine
                log.warning("an earlier publish was refused (%s); its event stays in the log",
                            exc)
            self._unread.pop(0)

    def _give_up(self, exc: BaseException) -> None:
        lost = len(self._unread)
        self._drop()
        if lost:
            log.warning("%d publishes could not be confirmed (%s); their events stay in the log",
                        lost, exc)
            self._on_lost(lost)

    def _drop(self, keep_unread: bool = False) -> None:
        """Forget the connection (after an error, or on close) and, unless kept for a
        re-send, its unread replies."""
        connection, self._connection = self._connection, None
        if not keep_unread:
            self._unread = []
        if connection is not None:
            connection.give_back(broken=True)

    def close(self) -> None:
        with self._lock:
            if self._connection is not None and self._unread:
                try:
                    self._read_replies(self._connection)
                except _ANY_ERROR:
                    pass
            self._drop()
        self._client.close()
