"""Per-user request rate limits, counted in Redis so every web process shares them."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import redis
from flask import current_app, g
from werkzeug.exceptions import HTTPException

from domain.errors import RunlaneError, TooManyRequests
from runlane import metrics
from runlane.redis_wire import ERRORS, Wire
from webapp.auth import current_principal

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])
WINDOW = 60  # seconds: limits are "per minute"
# What reading the count may raise: a Redis or connection error, or a reply that is no count.
_UNREAD: tuple[type[Exception], ...] = (*ERRORS, ValueError, TypeError)


class Hit:
    """One hit, counted in Redis: sent at once, its count read when it is needed.

    A submission counts its hit before anything else, but needs the answer only before its
    first write; in between it parses and validates its body. Sending the count first and
    reading it then lets that work overlap the Redis round trip (docs/benchmarks.md): one
    connection held from the send to the read, through `runlane/redis_wire.py`. Fails open:
    when Redis is unreachable nothing is counted (delivery needs Redis anyway).
    """

    def __init__(self, client: redis.Redis, prefix: str, kind: str, user_id: str,
                 limit: int) -> None:
        self._kind = kind
        self._limit = limit
        self._now = int(time.time())
        self._wire: Wire | None = None
        self._retry_after: int | None = None
        key = f"{prefix}:rl:{kind}:{user_id}:{self._now // WINDOW}"
        try:
            wire = Wire.borrow(client)
        except ERRORS as exc:
            log.warning("rate limit not counted (%s)", exc)
            return
        try:
            # No MULTI/EXEC: INCR counts atomically on its own, the EXPIRE only bounds the
            # key's life.
            wire.send_all([("INCR", key), ("EXPIRE", key, WINDOW + 5)])
        except ERRORS as exc:
            wire.give_back(broken=True)
            log.warning("rate limit not counted (%s)", exc)
            return
        self._wire = wire

    def retry_after(self) -> int | None:
        """Seconds until the window resets when over the limit, else None. Waits for the
        count the first time (if it has not arrived yet)."""
        wire, self._wire = self._wire, None
        if wire is None:
            return self._retry_after
        try:
            count = int(wire.read())
            wire.read()
        except _UNREAD as exc:
            wire.give_back(broken=True)  # a half-read reply must not reach the next user
            log.warning("rate limit not counted (%s)", exc)
            return None
        wire.give_back()
        if count > self._limit:
            metrics.RATE_LIMITED.labels(kind=self._kind).inc()
            self._retry_after = WINDOW - self._now % WINDOW
        return self._retry_after

    def admit(self) -> None:
        """Raises TooManyRequests when over the limit (call before the request writes)."""
        retry = self.retry_after()
        if retry is not None:
            raise TooManyRequests("too many submissions; slow down", retry_after=retry)


def over_limit(client: redis.Redis, prefix: str, kind: str, user_id: str, limit: int) -> int | None:
    """Count one hit and wait for the count: the seconds until the window resets when over
    `limit`, else None."""
    return Hit(client, prefix, kind, user_id, limit).retry_after()


def limit_submissions(view: F) -> F:
    """429 with Retry-After once the caller passed RUNLANE_SUBMIT_RATE_PER_MINUTE.

    The hit is counted as the request arrives; the view must call `admit_submission()`
    before it writes anything (the run services do, through their `admit` argument). A
    request over the limit answers 429 even when the view failed on something else first,
    as when the limit was checked before the view ran.
    """

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        # The app's state, read from the app: importing webapp/extensions.py (the composition
        # root, which imports the views this decorates) would be an import back up.
        st = current_app.extensions["runlane"]
        hit = g.submission_hit = Hit(st.redis, st.settings.channel_prefix, "submit",
                                     current_principal().user_id,
                                     st.settings.submit_rate_per_minute)
        try:
            return view(*args, **kwargs)
        except (RunlaneError, HTTPException) as exc:  # an answer to the client, not a bug
            retry = hit.retry_after()
            if retry is not None and not isinstance(exc, TooManyRequests):
                raise TooManyRequests("too many submissions; slow down",
                                      retry_after=retry) from None
            raise
        finally:
            hit.retry_after()  # read the count (and free the connection) in every case

    return wrapper  # type: ignore[return-value]


def admit_submission() -> None:
    """The submission's rate-limit check (see `limit_submissions`)."""
    g.submission_hit.admit()
