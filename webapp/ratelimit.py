"""Per-user request rate limits, counted in Redis so every web process shares them."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import redis

from runlane import metrics
from runlane.errors import TooManyRequests

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])
WINDOW = 60  # seconds: limits are "per minute"


def over_limit(client: redis.Redis, prefix: str, kind: str, user_id: str, limit: int) -> int | None:
    """Count one hit; the seconds until the window resets when over `limit`, else None.

    Fails open: when Redis is unreachable nothing is counted (delivery needs Redis anyway).
    """
    now = int(time.time())
    key = f"{prefix}:rl:{kind}:{user_id}:{now // WINDOW}"
    try:
        # One round trip; no MULTI/EXEC around it (two more commands to send and parse): the
        # INCR counts atomically on its own, and the EXPIRE only bounds the key's life.
        pipe = client.pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, WINDOW + 5)
        count = int(pipe.execute()[0])
    except redis.RedisError as exc:
        log.warning("rate limit not counted (%s)", exc)
        return None
    if count <= limit:
        return None
    metrics.RATE_LIMITED.labels(kind=kind).inc()
    return WINDOW - now % WINDOW


def limit_submissions(view: F) -> F:
    """429 with Retry-After once the caller passed RUNLANE_SUBMIT_RATE_PER_MINUTE."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from webapp.auth import current_principal  # noqa: PLC0415 - after require_principal
        from webapp.extensions import state  # noqa: PLC0415

        st = state()
        retry = over_limit(st.redis, st.settings.channel_prefix, "submit",
                           current_principal().user_id, st.settings.submit_rate_per_minute)
        if retry is not None:
            raise TooManyRequests("too many submissions; slow down", retry_after=retry)
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
