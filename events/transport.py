"""The write-only side of the event transport, used by workers (and nobody needs more)."""
from __future__ import annotations

import logging
import threading

import redis
from redis.connection import Connection

log = logging.getLogger(__name__)


class RedisPublisher:
    """Publishes encoded events; a failed publish is logged, never fatal (the log has it).

    A publish does not wait for Redis's reply: subscribers get the message when Redis reads
    it, and the count Redis answers (subscribers reached) is of no use here, so waiting for
    it only held the run up for a round trip per event (the `agent_started` publish sat on
    the way to every later event, issue 9). The publisher keeps one connection of its own
    and reads each reply before its next command, by which time it has long arrived. A
    reply that turns out to be an error, or a connection that broke, is logged then; the
    event it belonged to is in the log either way, and clients replay from there.
    """

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._lock = threading.Lock()  # one command stream; gevent patches it in the web
        self._connection: Connection | None = None
        self._unread = 0

    @classmethod
    def from_url(cls, url: str) -> RedisPublisher:
        return cls(redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2,
                                        health_check_interval=30))

    def publish(self, channel: str, data: str) -> bool:
        """Send a PUBLISH; False when it could not be sent (Redis down or unreachable)."""
        with self._lock:
            try:
                connection = self._connection
                if connection is None:
                    connection = self._connection = self._client.connection_pool.get_connection()
                self._read_replies(connection)
                connection.send_command("PUBLISH", channel, data)
                self._unread += 1
                return True
            except (redis.RedisError, OSError) as exc:
                self._drop()
                log.warning("publish on %s failed (%s); the event stays in the log", channel, exc)
                return False

    def _read_replies(self, connection: Connection) -> None:
        while self._unread:
            self._unread -= 1
            try:
                connection.read_response()
            except redis.ResponseError as exc:  # the reply was read whole: the stream is fine
                log.warning("an earlier publish was refused (%s); its event stays in the log",
                            exc)

    def _drop(self) -> None:
        """Forget the connection and its unread replies (after an error, or on close)."""
        connection, self._connection, self._unread = self._connection, None, 0
        if connection is not None:
            connection.disconnect()
            self._client.connection_pool.release(connection)

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                try:
                    self._read_replies(self._connection)
                except (redis.RedisError, OSError):
                    pass
            self._drop()
        self._client.close()
