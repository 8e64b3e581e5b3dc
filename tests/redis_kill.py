"""Killing the publishers' Redis connections from a test, the way a Redis restart, an idle
timeout or an operator's CLIENT KILL would."""
from __future__ import annotations

import redis

from events.transport import CLIENT_NAME


def kill_publishers(url: str) -> int:
    """CLIENT KILL every connection named by RedisPublisher; how many were killed. Found by
    name in CLIENT LIST (Redis has no CLIENT KILL by name), killed by id."""
    admin = redis.Redis.from_url(url)
    try:
        victims = [c["id"] for c in admin.client_list() if c.get("name") == CLIENT_NAME]
        for client_id in victims:
            admin.client_kill_filter(_id=client_id)
        return len(victims)
    finally:
        admin.close()


def publishers(url: str) -> int:
    """How many publisher connections Redis holds."""
    admin = redis.Redis.from_url(url)
    try:
        return sum(c.get("name") == CLIENT_NAME for c in admin.client_list())
    finally:
        admin.close()
