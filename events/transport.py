"""The write-only side of the event transport, used by workers (and nobody needs more)."""
from __future__ import annotations

import logging

import redis

log = logging.getLogger(__name__)


class RedisPublisher:
    """Publishes encoded events; a failed publish is logged, never fatal (the log has it)."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    @classmethod
    def from_url(cls, url: str) -> "RedisPublisher":
        return cls(redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2,
                                        health_check_interval=30))

    def publish(self, channel: str, data: str) -> bool:
        try:
            self._client.publish(channel, data)
            return True
        except redis.RedisError as exc:
            log.warning("publish on %s failed (%s); the event stays in the log", channel, exc)
            return False

    def close(self) -> None:
        self._client.close()
