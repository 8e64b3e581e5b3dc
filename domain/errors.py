"""One exception tree for everything a caller may need to act on.

It says what went wrong, not how a protocol spells it: the web maps each class to its HTTP
status in one place (webapp/problems.py).
"""
from __future__ import annotations

from typing import Any


class RunlaneError(Exception):
    """Base of every error Runlane raises on purpose."""

    title = "Internal error"

    def __init__(self, detail: str = "", **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra


class ConfigurationError(RunlaneError):
    """The process cannot start as configured (missing key, missing Redis URL)."""

    title = "Configuration error"


class InvalidInput(RunlaneError):
    """A request body or parameter is malformed."""

    title = "Bad request"


class Unauthenticated(RunlaneError):
    """No token, or a token that does not verify."""

    title = "Unauthorized"


class NotFound(RunlaneError):
    """The resource does not exist *for this caller* (another user's answers the same)."""

    title = "Not found"


class Conflict(RunlaneError):
    """The request conflicts with the resource's current state."""

    title = "Conflict"


class PayloadTooLarge(RunlaneError):
    """The request body exceeds the configured limit."""

    title = "Payload too large"


class TooManyRequests(RunlaneError):
    """A per-user limit was reached; retry after `retry_after` seconds."""

    title = "Too many requests"

    def __init__(self, detail: str = "", *, retry_after: int = 1, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.retry_after = retry_after


class UnprocessableInput(RunlaneError):
    """Well-formed input that fails validation: unknown agent, schema errors."""

    title = "Unprocessable input"


class Unavailable(RunlaneError):
    """A service the request needs is down for now (Redis, the database); retrying may work."""

    title = "Service unavailable"


class ContextTampered(RunlaneError):
    """A task's serialized context failed signature verification: never execute it."""

    title = "Context signature invalid"


class MalformedContext(RunlaneError):
    """A serialized context is missing fields or has fields of the wrong type."""

    title = "Malformed context"


class Superseded(RunlaneError):
    """The attempt that tried to write no longer holds its run (reaped, cancelled, finished
    elsewhere): it must stop without writing anything more."""

    title = "Attempt superseded"
